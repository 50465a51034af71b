package tunnel

// A reference kcptun peer, assembled in test code the way kcptun assembles
// its client and server (kcp-go + github.com/xtaci/smux + snappy framing +
// PBKDF2 key), independently of this module's crypt/ and mux/ packages, so
// that the wire-compatibility tests compare against kcptun's recipe and not
// against our own reading of it.

import (
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"github.com/smuxtun/smuxtun/internal/refstack"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/crypt"
	kcp "github.com/xtaci/kcp-go/v5"
	"github.com/xtaci/smux"
)

// refCiphers is kcptun's --crypt table: the constructor and the slice of
// the 32-byte PBKDF2 key each one gets.
var refCiphers = []struct {
	name  string
	build func(key []byte) (kcp.BlockCrypt, error)
}{
	{"aes", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewAESBlockCrypt(k) }},
	{"aes-128", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewAESBlockCrypt(k[:16]) }},
	{"aes-192", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewAESBlockCrypt(k[:24]) }},
	{"aes-128-gcm", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewAESGCMCrypt(k[:16]) }},
	{"salsa20", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewSalsa20BlockCrypt(k) }},
	{"blowfish", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewBlowfishBlockCrypt(k) }},
	{"twofish", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewTwofishBlockCrypt(k) }},
	{"cast5", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewCast5BlockCrypt(k[:16]) }},
	{"3des", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewTripleDESBlockCrypt(k[:24]) }},
	{"tea", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewTEABlockCrypt(k[:16]) }},
	{"xtea", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewXTEABlockCrypt(k[:16]) }},
	{"sm4", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewSM4BlockCrypt(k[:16]) }},
	{"xor", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewSimpleXORBlockCrypt(k) }},
	{"none", func(k []byte) (kcp.BlockCrypt, error) { return kcp.NewNoneBlockCrypt(k) }},
	{"null", nil},
}

// refKCP is the set of KCP settings both reference ends apply (kcptun's
// createConn / server loop), with the fast3 profile to keep tests quick.
const (
	refDataShard, refParityShard = 10, 3
	refMTU                       = 1350
	refSockBuf                   = 1 << 20 // what baseCommon gives our side
)

func refBlock(t testing.TB, name string) kcp.BlockCrypt {
	t.Helper()
	key, err := pbkdf2.Key(sha1.New, testKey, []byte("kcp-go"), 4096, 32)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range refCiphers {
		if c.name == name {
			if c.build == nil {
				return nil
			}
			b, err := c.build(key)
			if err != nil {
				t.Fatal(err)
			}
			// kcptun uses gmsm's SM4 unguarded, which races between kcp-go's
			// reader and writer; the lock changes no byte on the wire and
			// keeps the race detector quiet about the reference peer.
			if name == "sm4" {
				b = &lockedCrypt{b: b}
			}
			return b
		}
	}
	t.Fatalf("reference peer has no cipher %q", name)
	return nil
}

func refTune(s *kcp.UDPSession, sndwnd, rcvwnd int) {
	s.SetStreamMode(true)
	s.SetWriteDelay(false)
	s.SetNoDelay(1, 10, 2, 1)
	s.SetWindowSize(sndwnd, rcvwnd)
	s.SetMtu(refMTU)
	s.SetACKNoDelay(false)
}

// kcptun's mux defaults (--smuxbuf, --streambuf, --framesize, --keepalive).
// kcptun leaves smux's KeepAliveTimeout (30 s) as it is.
const (
	kcptunSmuxBuf   = 4 << 20
	kcptunStreamBuf = 2 << 20
	kcptunFrameSize = 8192
	kcptunKeepAlive = 10 * time.Second
)

// refSmuxConfig is the smux configuration kcptun builds from its defaults.
func refSmuxConfig(ver int) *smux.Config {
	c := smux.DefaultConfig()
	c.Version = ver
	c.MaxReceiveBuffer = kcptunSmuxBuf
	c.MaxStreamBuffer = kcptunStreamBuf
	c.MaxFrameSize = kcptunFrameSize
	c.KeepAliveInterval = kcptunKeepAlive
	return c
}

// newRefComp is kcptun's compression wrapper (snappy framing, flushed after
// every write), shared with the benchmark's reference process.
func newRefComp(c net.Conn) *refstack.Comp { return refstack.NewComp(c) }

// refOpt changes how a reference peer is assembled.
type refOpt func(*refSetup)

// refSetup is what the refOpts of one reference peer asked for.
type refSetup struct {
	qppCount int    // kcptun's --QPP with this --QPPCount; 0 = off
	qppKey   string // the passphrase the pads come from, testKey unless set
}

// withQPP turns on kcptun's --QPP with count pads.
func withQPP(count int) refOpt { return func(s *refSetup) { s.qppCount = count } }

// withQPPKey derives the reference peer's pads from key instead of testKey
// (the packet cipher keeps testKey).
func withQPPKey(key string) refOpt { return func(s *refSetup) { s.qppKey = key } }

func newRefSetup(opts []refOpt) refSetup {
	s := refSetup{qppKey: testKey}
	for _, o := range opts {
		o(&s)
	}
	return s
}

// streamSide is what kcptun pipes a stream through: the stream, or with
// --QPP the stream wrapped in its QPPPort (pads built once per process,
// PRNGs seeded afresh for every stream).
type refStreamSide func(st *smux.Stream) io.ReadWriteCloser

func (s refSetup) streamSide() refStreamSide {
	if s.qppCount == 0 {
		return func(st *smux.Stream) io.ReadWriteCloser { return st }
	}
	pad := refstack.NewQPPPad(s.qppKey, s.qppCount)
	return func(st *smux.Stream) io.ReadWriteCloser { return refstack.NewQPPPort(st, pad, s.qppKey) }
}

// startRefServer runs a kcptun-style server forwarding to target.
func startRefServer(t testing.TB, cipher string, nocomp bool, ver int, target string, opts ...refOpt) string {
	t.Helper()
	side := newRefSetup(opts).streamSide()
	lis, err := kcp.ListenWithOptions("127.0.0.1:0", refBlock(t, cipher), refDataShard, refParityShard)
	if err != nil {
		t.Fatal(err)
	}
	lis.SetReadBuffer(refSockBuf)
	lis.SetWriteBuffer(refSockBuf)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		sessions []*smux.Session
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := lis.AcceptKCP()
			if err != nil {
				return
			}
			refTune(conn, 1024, 1024)
			var rwc io.ReadWriteCloser = conn
			if !nocomp {
				rwc = newRefComp(conn)
			}
			sess, err := smux.Server(rwc, refSmuxConfig(ver))
			if err != nil {
				conn.Close()
				continue
			}
			mu.Lock()
			sessions = append(sessions, sess)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					st, err := sess.AcceptStream()
					if err != nil {
						return
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer st.Close()
						tc, err := net.Dial("tcp", target)
						if err != nil {
							return
						}
						defer tc.Close()
						sp := side(st)
						// kcptun: the first direction to end closes both.
						done := make(chan struct{}, 2)
						go func() { io.Copy(tc, sp); done <- struct{}{} }()
						go func() { io.Copy(sp, tc); done <- struct{}{} }()
						<-done
						st.Close()
						tc.Close()
						<-done
					}()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		// Sessions kcp-go created for late packets but nobody accepted
		// would keep their goroutine: take them from the queue and close
		// them. kcp-go's own socket reader cannot be watched here (the
		// tunnel's listener waits for it), so the queue is read until it
		// stayed empty for 200 ms: a reader that late on a loaded machine
		// is rarer than the 20 ms this once waited.
		for misses := 0; misses < 100; {
			if s, err := lis.AcceptKCP(); err == nil {
				s.Close()
				misses = 0
				continue
			}
			misses++
			time.Sleep(2 * time.Millisecond)
		}
		mu.Lock()
		for _, s := range sessions {
			s.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return lis.Addr().String()
}

// refClientRoundTrip dials addr as a kcptun client would, opens one stream,
// sends data and reads the echo back.
// refDial opens a kcptun-style client session to addr.
func refDial(t testing.TB, addr, cipher string, nocomp bool, ver int) (*smux.Session, error) {
	t.Helper()
	conn, err := kcp.DialWithOptions(addr, refBlock(t, cipher), refDataShard, refParityShard)
	if err != nil {
		return nil, err
	}
	refTune(conn, 128, 512)
	conn.SetReadBuffer(refSockBuf)
	conn.SetWriteBuffer(refSockBuf)
	var rwc io.ReadWriteCloser = conn
	if !nocomp {
		rwc = newRefComp(conn)
	}
	sess, err := smux.Client(rwc, refSmuxConfig(ver))
	if err != nil {
		conn.Close()
		return nil, err
	}
	return sess, nil
}

func refClientRoundTrip(t *testing.T, addr, cipher string, nocomp bool, ver int, data []byte, timeout time.Duration, opts ...refOpt) error {
	t.Helper()
	side := newRefSetup(opts).streamSide()
	sess, err := refDial(t, addr, cipher, nocomp, ver)
	if err != nil {
		return err
	}
	defer sess.Close()
	st, err := sess.OpenStream()
	if err != nil {
		return err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(timeout))
	return echoOver(side(st), data)
}

// echoOver writes data to rw while reading len(data) bytes back, and
// compares their SHA-256.
func echoOver(rw io.ReadWriter, data []byte) error {
	werr := make(chan error, 1)
	go func() {
		_, err := rw.Write(data)
		werr <- err
	}()
	h := sha256.New()
	n, rerr := io.CopyN(h, rw, int64(len(data)))
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if rerr != nil {
		return fmt.Errorf("read after %d of %d bytes: %w", n, len(data), rerr)
	}
	want := sha256.Sum256(data)
	if string(h.Sum(nil)) != string(want[:]) {
		return fmt.Errorf("echo of %d bytes differs", len(data))
	}
	return nil
}

// TestRefCiphersCoverCrypt keeps the reference table and crypt.Names in
// step, so no cipher escapes the interop matrix.
func TestRefCiphersCoverCrypt(t *testing.T) {
	var ref []string
	for _, c := range refCiphers {
		ref = append(ref, c.name)
	}
	got := crypt.Names()
	slices.Sort(ref)
	slices.Sort(got)
	if !slices.Equal(ref, got) {
		t.Fatalf("crypt.Names() = %v, reference table = %v", got, ref)
	}
}

type interopCase struct {
	cipher string
	nocomp bool
	ver    int
}

func interopCases() []interopCase {
	var out []interopCase
	for _, c := range refCiphers {
		for _, nocomp := range []bool{false, true} {
			for _, ver := range []int{1, 2} {
				out = append(out, interopCase{c.name, nocomp, ver})
			}
		}
	}
	return out
}

func (c interopCase) String() string {
	comp := "comp"
	if c.nocomp {
		comp = "nocomp"
	}
	return fmt.Sprintf("%s/%s/v%d", c.cipher, comp, c.ver)
}

func (c interopCase) opts() pairOpts {
	return pairOpts{
		transport: config.TransportKCP,
		nocomp:    c.nocomp,
		smuxver:   c.ver,
		tweak: func(cm *config.Common) {
			cm.Crypt = c.cipher
			cm.DataShard, cm.ParityShard = refDataShard, refParityShard
			cm.MTU = refMTU
		},
	}
}

// TestInteropOurClientRefServer: smuxtun-client in front of a kcptun-style
// server, for every cipher, with and without compression, smux v1 and v2.
func TestInteropOurClientRefServer(t *testing.T) {
	target := startEcho(t, "tcp", "127.0.0.1:0")
	for _, c := range interopCases() {
		t.Run(c.String(), func(t *testing.T) {
			o := c.opts()
			o.remote = startRefServer(t, c.cipher, c.nocomp, c.ver, target)
			cli, _ := runClient(t, o)
			conn, err := net.Dial("tcp", cli.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(ioTimeout))
			if err := echoOver(conn, randomBytes(t, 48<<10)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestInteropRefClientOurServer: a kcptun-style client against
// smuxtun-server, over the same matrix.
func TestInteropRefClientOurServer(t *testing.T) {
	target := startEcho(t, "tcp", "127.0.0.1:0")
	for _, c := range interopCases() {
		t.Run(c.String(), func(t *testing.T) {
			o := c.opts()
			o.target = target
			srv, _ := runServer(t, o)
			if err := refClientRoundTrip(t, srv.Addrs()[0].String(), c.cipher, c.nocomp, c.ver, randomBytes(t, 48<<10), ioTimeout); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestInteropWrongCipher: peers that disagree on the cipher exchange
// nothing, which is the behaviour an operator sees with kcptun too.
func TestInteropWrongCipher(t *testing.T) {
	target := startEcho(t, "tcp", "127.0.0.1:0")
	o := interopCase{"aes", false, 2}.opts()
	o.target = target
	srv, _ := runServer(t, o)
	err := refClientRoundTrip(t, srv.Addrs()[0].String(), "salsa20", false, 2, randomBytes(t, 4<<10), time.Second)
	if err == nil {
		t.Fatal("a salsa20 client talked to an aes server")
	}
}

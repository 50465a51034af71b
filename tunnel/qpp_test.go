package tunnel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/internal/refstack"
	"github.com/xtaci/qpp"
)

// memStream stands in for a mux stream in the byte-level tests: writes go
// to out, reads come from in.
type memStream struct {
	net.Conn // nil: only the methods below are called
	in       *bytes.Reader
	out      bytes.Buffer
}

func (m *memStream) Read(p []byte) (int, error)         { return m.in.Read(p) }
func (m *memStream) Write(p []byte) (int, error)        { return m.out.Write(p) }
func (m *memStream) WriteTo(w io.Writer) (int64, error) { return m.in.WriteTo(w) }
func (m *memStream) CloseWrite() error                  { return nil }
func (m *memStream) Close() error                       { return nil }

// nopCloser lets a bytes.Buffer stand in for the stream under kcptun's
// QPPPort.
type nopCloser struct{ io.ReadWriter }

func (nopCloser) Close() error { return nil }

// TestQPPBytesMatchKcptun: the bytes our layer sends are the bytes kcptun's
// QPPPort sends for the same stream, whatever the write sizes, and each side
// restores what the other sent, by Read and by WriteTo.
func TestQPPBytesMatchKcptun(t *testing.T) {
	const key, count = "correct horse battery staple", 61
	data := randomBytes(t, 200<<10)
	sizes := []int{1, 7, 8, 9, 1000, copyBufSize + 3, 64 << 10}

	ours := newQPPLayer(key, count)
	st := &memStream{}
	c := ours.wrap(st)
	theirs := new(bytes.Buffer)
	port := refstack.NewQPPPort(nopCloser{theirs}, refstack.NewQPPPad(key, count), key)
	for off, i := 0, 0; off < len(data); i++ {
		n := min(sizes[i%len(sizes)], len(data)-off)
		chunk := data[off : off+n]
		keep := bytes.Clone(chunk)
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(chunk, keep) {
			t.Fatal("Write changed the caller's bytes")
		}
		if _, err := port.Write(bytes.Clone(chunk)); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if !bytes.Equal(st.out.Bytes(), theirs.Bytes()) {
		t.Fatal("our QPP bytes differ from kcptun's")
	}
	if bytes.Equal(st.out.Bytes(), data) {
		t.Fatal("QPP sent the plaintext")
	}

	// What kcptun sent, restored by our Read (odd sizes) and our WriteTo.
	r := ours.wrap(&memStream{in: bytes.NewReader(theirs.Bytes())})
	got := new(bytes.Buffer)
	buf := make([]byte, 777)
	for {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("Read did not restore kcptun's bytes")
	}
	got.Reset()
	if _, err := ours.wrap(&memStream{in: bytes.NewReader(theirs.Bytes())}).WriteTo(got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("WriteTo did not restore kcptun's bytes")
	}

	// kcptun restores ours.
	back := refstack.NewQPPPort(nopCloser{bytes.NewBuffer(st.out.Bytes())}, refstack.NewQPPPad(key, count), key)
	plain, err := io.ReadAll(back)
	if err != nil || !bytes.Equal(plain, data) {
		t.Fatalf("kcptun's QPPPort did not restore our bytes (err %v)", err)
	}
}

// TestQPPMinimumPads keeps config's advice in step with the qpp package.
func TestQPPMinimumPads(t *testing.T) {
	if got := qpp.QPPMinimumPads(8); got != config.MinSecureQPPCount {
		t.Fatalf("qpp.QPPMinimumPads(8) = %d, config.MinSecureQPPCount = %d", got, config.MinSecureQPPCount)
	}
}

// TestQPPSettingsRefuseCount: a count the pads cannot be built from is an
// error naming the flag, even when config validation was skipped.
func TestQPPSettingsRefuseCount(t *testing.T) {
	for _, n := range []int{0, -1, config.MaxQPPCount + 1} {
		cfg := config.DefaultServer()
		baseCommon(pairOpts{tweak: func(c *config.Common) { c.QPP, c.QPPCount = true, n }}, &cfg.Common)
		_, err := newSettings(cfg.Common, testLogger())
		if err == nil || !strings.Contains(err.Error(), "QPPCount") {
			t.Errorf("count %d: newSettings: %v, want an error naming QPPCount", n, err)
		}
	}
}

// qppTarget reads exactly reqSize bytes from each connection, hands their
// SHA-256 to sums, answers with reply and waits for the client to close.
// Unlike an echo it checks each direction on its own: an echo undoes a
// permutation that differs on the way in, on the way out.
type qppTarget struct {
	addr  string
	sums  chan [32]byte
	reply []byte
}

func startQPPTarget(t testing.TB, reqSize int, reply []byte) *qppTarget {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &qppTarget{addr: l.Addr().String(), sums: make(chan [32]byte, 16), reply: reply}
	serveConns(t, l, func(c net.Conn) {
		h := sha256.New()
		if _, err := io.CopyN(h, c, int64(reqSize)); err != nil {
			return
		}
		var sum [32]byte
		h.Sum(sum[:0])
		tg.sums <- sum
		c.Write(reply)
		io.Copy(io.Discard, c)
	})
	return tg
}

// qppExchange sends req through the tunnel at local and returns the
// SHA-256 of what came back.
func qppExchange(tg *qppTarget, local string, req []byte) (back [32]byte, err error) {
	c, err := net.DialTimeout("tcp", local, ioTimeout)
	if err != nil {
		return back, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(req); err != nil {
		return back, fmt.Errorf("write: %w", err)
	}
	h := sha256.New()
	if n, err := io.CopyN(h, c, int64(len(tg.reply))); err != nil {
		return back, fmt.Errorf("read after %d of %d bytes: %w", n, len(tg.reply), err)
	}
	h.Sum(back[:0])
	return back, nil
}

// received returns the SHA-256 of the next n requests the target read, in
// the order they completed.
func (tg *qppTarget) received(n int) ([][32]byte, error) {
	var out [][32]byte
	for range n {
		select {
		case s := <-tg.sums:
			out = append(out, s)
		case <-time.After(ioTimeout):
			return out, fmt.Errorf("the target got %d requests, want %d", len(out), n)
		}
	}
	return out, nil
}

// qppPairing says how TestQPPTransfer and TestQPPMismatch set up a client
// and a server with QPP (count pads; 0 = off on that end). kind names who
// plays each end: "smuxtun" both, "ref-server" (a kcptun-style server) or
// "ref-client" (a kcptun-style client).
type qppPairing struct {
	kind               string
	cliCount, srvCount int
	nocomp             bool
	ver                int
	cliTweak, srvTweak func(*config.Common) // applied after the QPP settings
	refOpts            []refOpt             // for the reference end, after withQPP
	srvLog, cliLog     *syncBuffer          // our ends' logs, if set
}

func qppTweak(count int, extra func(*config.Common)) func(*config.Common) {
	return func(c *config.Common) {
		c.DataShard, c.ParityShard, c.MTU = refDataShard, refParityShard, refMTU
		c.QPP, c.QPPCount = count > 0, max(count, 1)
		if extra != nil {
			extra(c)
		}
	}
}

// start runs the pair in front of target and returns the address the
// application connects to.
func (p qppPairing) start(t *testing.T, target string) string {
	t.Helper()
	o := pairOpts{transport: config.TransportKCP, nocomp: p.nocomp, smuxver: p.ver, target: target, srvLog: p.srvLog, cliLog: p.cliLog}
	if p.kind != "ref-server" {
		so := o
		so.tweak = qppTweak(p.srvCount, p.srvTweak)
		srv, _ := runServer(t, so)
		o.remote = srv.Addrs()[0].String()
	}
	if p.kind == "ref-client" {
		return startRefClient(t, o.remote, "aes", p.nocomp, p.ver, append([]refOpt{withQPP(p.cliCount)}, p.refOpts...)...)
	}
	if p.kind == "ref-server" {
		o.remote = startRefServer(t, "aes", p.nocomp, p.ver, target, append([]refOpt{withQPP(p.srvCount)}, p.refOpts...)...)
	}
	o.tweak = qppTweak(p.cliCount, p.cliTweak)
	cli, _ := runClient(t, o)
	return cli.Addr().String()
}

// TestQPPTransfer: with --QPP on both ends, smuxtun↔smuxtun and both
// pairings with the kcptun-style reference, 61 and 113 pads, with and
// without compression, smux v1 and v2: each direction arrives intact
// (SHA-256), over two concurrent streams and one opened after them (every
// stream starts its PRNG afresh).
func TestQPPTransfer(t *testing.T) {
	const reqSize, replySize = 192 << 10, 96 << 10
	reply := randomBytes(t, replySize)
	wantBack := sha256.Sum256(reply)
	for _, kind := range []string{"smuxtun", "ref-server", "ref-client"} {
		for _, count := range []int{61, 113} {
			for _, nocomp := range []bool{false, true} {
				for _, ver := range []int{1, 2} {
					p := qppPairing{kind: kind, cliCount: count, srvCount: count, nocomp: nocomp, ver: ver}
					t.Run(fmt.Sprintf("%s/%d/%s/v%d", kind, count, compName(nocomp), ver), func(t *testing.T) {
						tg := startQPPTarget(t, reqSize, reply)
						local := p.start(t, tg.addr)
						// round sends n requests at once and checks both directions.
						round := func(n int) error {
							reqs := make(map[[32]byte]bool)
							errs := make(chan error, n)
							for range n {
								req := randomBytes(t, reqSize)
								reqs[sha256.Sum256(req)] = true
								go func() {
									back, err := qppExchange(tg, local, req)
									if err == nil && back != wantBack {
										err = fmt.Errorf("the client received other bytes than the target sent")
									}
									errs <- err
								}()
							}
							for range n {
								if err := <-errs; err != nil {
									return err
								}
							}
							got, err := tg.received(n)
							if err != nil {
								return err
							}
							for _, sum := range got {
								if !reqs[sum] {
									return fmt.Errorf("the target received other bytes than were sent")
								}
							}
							return nil
						}
						if err := round(2); err != nil {
							t.Fatal(err)
						}
						if err := round(1); err != nil {
							t.Fatal("a later stream: ", err)
						}
					})
				}
			}
		}
	}
}

// TestQPPOverTCPTransport: the pads work on smuxtun's own TCP transport
// too; they sit above the mux, whatever carries it.
func TestQPPOverTCPTransport(t *testing.T) {
	reply := randomBytes(t, 64<<10)
	tg := startQPPTarget(t, 128<<10, reply)
	local := runPair(t, pairOpts{transport: config.TransportTCP, target: tg.addr, tweak: func(c *config.Common) {
		c.QPP, c.QPPCount = true, 61
	}})
	req := randomBytes(t, 128<<10)
	back, err := qppExchange(tg, local, req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tg.received(1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != sha256.Sum256(req) || back != sha256.Sum256(reply) {
		t.Fatal("bytes changed on the way")
	}
}

func compName(nocomp bool) string {
	if nocomp {
		return "nocomp"
	}
	return "comp"
}

// TestQPPMismatch shows what a user sees when the two ends disagree on QPP:
// nothing fails. Streams open, every byte arrives, in both directions, but
// garbled, and neither end logs an error: the pads carry no checksum, so
// the tunnel cannot tell. The application on top is the first to notice
// (an SSH or TLS handshake fails). The echo, the usual smoke test, even
// comes back intact: the server's end undoes on the way out what it got
// wrong on the way in.
func TestQPPMismatch(t *testing.T) {
	const reqSize = 64 << 10
	reply := randomBytes(t, 32<<10)
	wantBack := sha256.Sum256(reply)
	otherKey := func(c *config.Common) { c.Crypt, c.Key = "null", "another key" }
	nullCrypt := func(c *config.Common) { c.Crypt = "null" }
	cases := []struct {
		name string
		p    qppPairing
	}{
		{"count 61 vs 67", qppPairing{kind: "smuxtun", cliCount: 61, srvCount: 67, ver: 2}},
		{"qpp on the client only", qppPairing{kind: "smuxtun", cliCount: 61, ver: 2}},
		{"qpp on the server only", qppPairing{kind: "smuxtun", srvCount: 61, ver: 2}},
		{"kcptun server with 67 pads", qppPairing{kind: "ref-server", cliCount: 61, srvCount: 67, ver: 2}},
		// The key also keys the packet cipher: only with crypt null does a
		// key that differs get as far as the pads.
		{"key differs, crypt null", qppPairing{kind: "smuxtun", cliCount: 61, srvCount: 61, ver: 2, cliTweak: otherKey, srvTweak: nullCrypt}},
		{"kcptun client with another key", qppPairing{kind: "ref-client", cliCount: 61, srvCount: 61, ver: 2, refOpts: []refOpt{withQPPKey("another key")}}},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			tg := startQPPTarget(t, reqSize, reply)
			p := tt.p
			p.srvLog, p.cliLog = new(syncBuffer), new(syncBuffer)
			local := p.start(t, tg.addr)
			req := randomBytes(t, reqSize)
			back, err := qppExchange(tg, local, req)
			if err != nil {
				t.Fatalf("the exchange failed (%v); a QPP mismatch is expected to garble, not to fail", err)
			}
			got, err := tg.received(1)
			if err != nil {
				t.Fatal(err)
			}
			atTarget := got[0]
			if atTarget == sha256.Sum256(req) {
				t.Error("the target received the request intact")
			}
			if back == wantBack {
				t.Error("the client received the reply intact")
			}
			t.Logf("the target received sha256 %s…, the client got back %s…", hex.EncodeToString(atTarget[:4]), hex.EncodeToString(back[:4]))

			// The usual smoke test passes all the same.
			echo := startEcho(t, "tcp", "127.0.0.1:0")
			c, err := net.Dial("tcp", p.start(t, echo))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(ioTimeout))
			if err := echoOver(c, randomBytes(t, reqSize)); err != nil {
				t.Errorf("echo through the mismatched pair: %v", err)
			}

			for who, b := range map[string]*syncBuffer{"server": p.srvLog, "client": p.cliLog} {
				if lines := logLines(b, "level=ERROR"); len(lines) > 0 {
					t.Errorf("%s logged an error: %s", who, lines[0])
				}
				if lines := logLines(b, "level=WARN"); len(lines) > 0 {
					t.Errorf("%s logged a warning: %s", who, lines[0])
				}
			}
		})
	}
}

// discardStream is a stream that takes every write and has nothing to read.
type discardStream struct{ memStream }

func (discardStream) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkQPPLayer is the cost of the pads alone: permuting 32 KiB writes
// of one stream (kcptun's 61 pads).
func BenchmarkQPPLayer(b *testing.B) {
	c := newQPPLayer(testKey, 61).wrap(&discardStream{})
	buf := randomBytes(b, copyBufSize)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		c.Write(buf)
	}
}

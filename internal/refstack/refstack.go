// Package refstack is a kcptun-style tunnel built for benchmarks only: kcp-go,
// github.com/xtaci/smux and snappy framing put together the way kcptun puts
// them together, at kcptun's defaults, without any of this module's own
// packages. It must never be imported by the smuxtun binaries.
package refstack

import (
	"crypto/pbkdf2"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"time"

	"github.com/golang/snappy"
	kcp "github.com/xtaci/kcp-go/v5"
	"github.com/xtaci/qpp"
	"github.com/xtaci/smux"
)

// Options are kcptun's tuning flags that the reference stack honours.
type Options struct {
	Key         string
	Crypt       string // aes, aes-128, aes-192, salsa20, none, null
	Mode        string // normal, fast, fast2, fast3
	SndWnd      int
	RcvWnd      int
	MTU         int
	DataShard   int
	ParityShard int
	SockBuf     int
	NoComp      bool
	SmuxVer     int
	SmuxBuf     int
	StreamBuf   int
	FrameSize   int
	KeepAlive   time.Duration
	QPP         bool // kcptun's --QPP: pads on every stream
	QPPCount    int  // kcptun's --QPPCount
	TCP         bool // kcptun's --tcp: KCP inside tcpraw's TCP emulation (tcp.go)
}

// Defaults returns kcptun's defaults for the client (server=false) or the
// server; only the window sizes differ.
func Defaults(server bool) Options {
	o := Options{
		Crypt: "aes", Mode: "fast", SndWnd: 128, RcvWnd: 512, MTU: 1350,
		DataShard: 10, ParityShard: 3, SockBuf: 4 << 20, SmuxVer: 2,
		SmuxBuf: 4 << 20, StreamBuf: 2 << 20, FrameSize: 8192, KeepAlive: 10 * time.Second,
		QPPCount: 61,
	}
	if server {
		o.SndWnd, o.RcvWnd = 1024, 1024
	}
	return o
}

// block derives the 32-byte key as kcptun does and builds the packet cipher.
func (o Options) block() (kcp.BlockCrypt, error) {
	key, err := pbkdf2.Key(sha1.New, o.Key, []byte("kcp-go"), 4096, 32)
	if err != nil {
		return nil, err
	}
	switch o.Crypt {
	case "aes":
		return kcp.NewAESBlockCrypt(key)
	case "aes-128":
		return kcp.NewAESBlockCrypt(key[:16])
	case "aes-192":
		return kcp.NewAESBlockCrypt(key[:24])
	case "salsa20":
		return kcp.NewSalsa20BlockCrypt(key)
	case "none":
		return kcp.NewNoneBlockCrypt(key)
	case "null":
		return nil, nil
	}
	return nil, fmt.Errorf("refstack: unsupported crypt %q", o.Crypt)
}

// nodelay returns kcptun's (nodelay, interval, resend, nc) for a mode.
func (o Options) nodelay() ([4]int, error) {
	switch o.Mode {
	case "normal":
		return [4]int{0, 40, 2, 1}, nil
	case "fast":
		return [4]int{0, 30, 2, 1}, nil
	case "fast2":
		return [4]int{1, 20, 2, 1}, nil
	case "fast3":
		return [4]int{1, 10, 2, 1}, nil
	}
	return [4]int{}, fmt.Errorf("refstack: unsupported mode %q", o.Mode)
}

func (o Options) tune(s *kcp.UDPSession) {
	nd, _ := o.nodelay()
	s.SetStreamMode(true)
	s.SetWriteDelay(false)
	s.SetNoDelay(nd[0], nd[1], nd[2], nd[3])
	s.SetMtu(o.MTU)
	s.SetWindowSize(o.SndWnd, o.RcvWnd)
	s.SetACKNoDelay(false)
}

func (o Options) smux() *smux.Config {
	c := smux.DefaultConfig()
	c.Version = o.SmuxVer
	c.MaxReceiveBuffer = o.SmuxBuf
	c.MaxStreamBuffer = o.StreamBuf
	c.MaxFrameSize = o.FrameSize
	c.KeepAliveInterval = o.KeepAlive
	return c
}

func (o Options) check() (kcp.BlockCrypt, error) {
	if _, err := o.nodelay(); err != nil {
		return nil, err
	}
	b, err := o.block()
	if err != nil {
		return nil, err
	}
	if err := smux.VerifyConfig(o.smux()); err != nil {
		return nil, fmt.Errorf("refstack: %w", err)
	}
	if o.QPP && (o.QPPCount < 1 || o.QPPCount > 65535) {
		return nil, fmt.Errorf("refstack: QPPCount %d out of range", o.QPPCount)
	}
	return b, nil
}

// Comp is kcptun's compression wrapper: snappy framing over conn, flushed
// after every write. Tests that assemble kcptun's stack in place use it too.
type Comp struct {
	conn io.ReadWriteCloser
	w    *snappy.Writer
	r    *snappy.Reader
}

// NewComp wraps conn as kcptun does unless --nocomp.
func NewComp(conn io.ReadWriteCloser) *Comp {
	return &Comp{conn: conn, w: snappy.NewBufferedWriter(conn), r: snappy.NewReader(conn)}
}

func (c *Comp) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *Comp) Write(p []byte) (int, error) {
	if _, err := c.w.Write(p); err != nil {
		return 0, err
	}
	if err := c.w.Flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}
func (c *Comp) Close() error { return c.conn.Close() }

func (o Options) wrap(c *kcp.UDPSession) io.ReadWriteCloser {
	if o.NoComp {
		return c
	}
	return NewComp(c)
}

// QPPPort is kcptun's --QPP wrapper around one smux stream: a PRNG per
// direction, each seeded with the passphrase as kcptun seeds them for every
// stream; writes are permuted in place before they go to the stream, reads
// restored after. Tests that assemble kcptun's stack in place use it too.
type QPPPort struct {
	rwc          io.ReadWriteCloser
	pad          *qpp.QuantumPermutationPad
	rprng, wprng *qpp.Rand
}

// NewQPPPad builds kcptun's pads: from the passphrase and --QPPCount.
func NewQPPPad(key string, count int) *qpp.QuantumPermutationPad {
	return qpp.NewQPP([]byte(key), uint16(count))
}

// NewQPPPort wraps a stream as kcptun does with --QPP.
func NewQPPPort(rwc io.ReadWriteCloser, pad *qpp.QuantumPermutationPad, key string) *QPPPort {
	return &QPPPort{rwc: rwc, pad: pad, rprng: qpp.CreatePRNG([]byte(key)), wprng: qpp.CreatePRNG([]byte(key))}
}

func (p *QPPPort) Read(b []byte) (int, error) {
	n, err := p.rwc.Read(b)
	p.pad.DecryptWithPRNG(b[:n], p.rprng)
	return n, err
}

// Write permutes b in place, as kcptun does (its copy loop owns b).
func (p *QPPPort) Write(b []byte) (int, error) {
	p.pad.EncryptWithPRNG(b, p.wprng)
	return p.rwc.Write(b)
}

func (p *QPPPort) Close() error { return p.rwc.Close() }

// streamSide is what the local side pipes a stream through: the stream, or
// the stream under QPP.
func (o Options) streamSide(st *smux.Stream, pad *qpp.QuantumPermutationPad) io.ReadWriteCloser {
	if pad == nil {
		return st
	}
	return NewQPPPort(st, pad, o.Key)
}

func (o Options) pad() *qpp.QuantumPermutationPad {
	if !o.QPP {
		return nil
	}
	return NewQPPPad(o.Key, o.QPPCount)
}

// pipe copies both ways; the first direction to end closes both, as kcptun
// does.
func pipe(a, b io.ReadWriteCloser) {
	var once sync.Once
	shut := func() { once.Do(func() { a.Close(); b.Close() }) }
	done := make(chan struct{})
	go func() { io.Copy(a, b); shut(); close(done) }()
	io.Copy(b, a)
	shut()
	<-done
}

// Client accepts TCP connections on local and carries each as a stream of
// one KCP session to remote, redialling when the session dies. It returns
// when the listener fails.
func Client(local, remote string, o Options) error {
	block, err := o.check()
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", local)
	if err != nil {
		return err
	}
	defer l.Close()
	dial := func() (*smux.Session, error) {
		c, err := o.dial(remote, block)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", remote, err)
		}
		o.tune(c)
		c.SetReadBuffer(o.SockBuf)
		c.SetWriteBuffer(o.SockBuf)
		s, err := smux.Client(o.wrap(c), o.smux())
		if err != nil {
			c.Close()
			return nil, err
		}
		return s, nil
	}
	sess, err := dial()
	if err != nil {
		return err
	}
	pad := o.pad()
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		if sess.IsClosed() {
			if sess, err = dial(); err != nil {
				log.Print(err)
				c.Close()
				continue
			}
		}
		st, err := sess.OpenStream()
		if err != nil {
			log.Printf("open stream: %v", err)
			c.Close()
			continue
		}
		go pipe(c, o.streamSide(st, pad))
	}
}

// Server accepts KCP sessions on listen and connects each of their streams
// to target. It returns when the listener fails.
func Server(listen, target string, o Options) error {
	block, err := o.check()
	if err != nil {
		return err
	}
	lis, err := kcp.ListenWithOptions(listen, block, o.DataShard, o.ParityShard)
	if err != nil {
		return err
	}
	defer lis.Close()
	lis.SetReadBuffer(o.SockBuf)
	lis.SetWriteBuffer(o.SockBuf)
	pad := o.pad()
	if o.TCP {
		// kcptun's --tcp server serves tcpraw beside UDP on the same port.
		raw, err := listenRaw(listen, block, o)
		if err != nil {
			return err
		}
		defer raw.Close()
		go o.serve(raw, target, pad)
	}
	return o.serve(lis, target, pad)
}

// serve accepts KCP sessions on lis and connects each of their streams to
// target. It returns when the listener fails.
func (o Options) serve(lis *kcp.Listener, target string, pad *qpp.QuantumPermutationPad) error {
	for {
		c, err := lis.AcceptKCP()
		if err != nil {
			return err
		}
		o.tune(c)
		sess, err := smux.Server(o.wrap(c), o.smux())
		if err != nil {
			c.Close()
			continue
		}
		go func() {
			defer sess.Close()
			for {
				st, err := sess.AcceptStream()
				if err != nil {
					if !errors.Is(err, io.ErrClosedPipe) {
						log.Printf("session %s: %v", c.RemoteAddr(), err)
					}
					return
				}
				go func() {
					tc, err := net.Dial("tcp", target)
					if err != nil {
						log.Printf("dial %s: %v", target, err)
						st.Close()
						return
					}
					pipe(tc, o.streamSide(st, pad))
				}()
			}
		}()
	}
}

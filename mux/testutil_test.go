package mux_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xtaci/smux"

	"github.com/smuxtun/smuxtun/internal/nettest"
	"github.com/smuxtun/smuxtun/mux"
)

// The helpers below let one scenario run against our mux and against
// github.com/xtaci/smux, so a test can show both what we do and what the
// reference does in the same situation.

// halfConn is what a stream is for both implementations: a net.Conn that can
// half-close and has an id.
type halfConn interface {
	net.Conn
	CloseWrite() error
	ID() uint32
}

// session is the part of a session API that both implementations share.
type session interface {
	open() (halfConn, error)
	accept() (halfConn, error)
	Close() error
	IsClosed() bool
	CloseChan() <-chan struct{}
	NumStreams() int
	SetDeadline(time.Time) error
}

type oursSession struct{ *mux.Session }

func (s oursSession) open() (halfConn, error) {
	st, err := s.OpenStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (s oursSession) accept() (halfConn, error) {
	st, err := s.AcceptStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

type xtaciSession struct{ *smux.Session }

func (s xtaciSession) open() (halfConn, error) {
	st, err := s.OpenStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (s xtaciSession) accept() (halfConn, error) {
	st, err := s.AcceptStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

// muxConfig is a configuration that can be turned into either
// implementation's Config.
type muxConfig struct {
	name              string
	version           int
	keepAliveDisabled bool
	keepAliveInterval time.Duration
	keepAliveTimeout  time.Duration
	maxFrameSize      int
	maxReceiveBuffer  int
	maxStreamBuffer   int
}

// defaultConfig is xtaci/smux's DefaultConfig at the given version.
func defaultConfig(version int) muxConfig {
	return muxConfig{
		name:              fmt.Sprintf("v%d-default", version),
		version:           version,
		keepAliveInterval: 10 * time.Second,
		keepAliveTimeout:  30 * time.Second,
		maxFrameSize:      32768,
		maxReceiveBuffer:  4194304,
		maxStreamBuffer:   65536,
	}
}

// kcptunConfig is the configuration kcptun runs smux with by default.
func kcptunConfig(version int) muxConfig {
	c := defaultConfig(version)
	c.name = fmt.Sprintf("v%d-kcptun", version)
	c.maxFrameSize = 8192
	c.maxReceiveBuffer = 4 << 20
	c.maxStreamBuffer = 2 << 20
	return c
}

func (c muxConfig) ours() *mux.Config {
	return &mux.Config{
		Version:           c.version,
		KeepAliveDisabled: c.keepAliveDisabled,
		KeepAliveInterval: c.keepAliveInterval,
		KeepAliveTimeout:  c.keepAliveTimeout,
		MaxFrameSize:      c.maxFrameSize,
		MaxReceiveBuffer:  c.maxReceiveBuffer,
		MaxStreamBuffer:   c.maxStreamBuffer,
	}
}

func (c muxConfig) xtaci() *smux.Config {
	return &smux.Config{
		Version:           c.version,
		KeepAliveDisabled: c.keepAliveDisabled,
		KeepAliveInterval: c.keepAliveInterval,
		KeepAliveTimeout:  c.keepAliveTimeout,
		MaxFrameSize:      c.maxFrameSize,
		MaxReceiveBuffer:  c.maxReceiveBuffer,
		MaxStreamBuffer:   c.maxStreamBuffer,
	}
}

// impl names an implementation and knows how to start its sessions.
type impl struct {
	name   string
	client func(conn net.Conn, c muxConfig) (session, error)
	server func(conn net.Conn, c muxConfig) (session, error)
}

var (
	implOurs = impl{
		name: "ours",
		client: func(conn net.Conn, c muxConfig) (session, error) {
			s, err := mux.Client(conn, c.ours())
			if err != nil {
				return nil, err
			}
			return oursSession{s}, nil
		},
		server: func(conn net.Conn, c muxConfig) (session, error) {
			s, err := mux.Server(conn, c.ours())
			if err != nil {
				return nil, err
			}
			return oursSession{s}, nil
		},
	}
	implXtaci = impl{
		name: "xtaci",
		client: func(conn net.Conn, c muxConfig) (session, error) {
			s, err := smux.Client(conn, c.xtaci())
			if err != nil {
				return nil, err
			}
			return xtaciSession{s}, nil
		},
		server: func(conn net.Conn, c muxConfig) (session, error) {
			s, err := smux.Server(conn, c.xtaci())
			if err != nil {
				return nil, err
			}
			return xtaciSession{s}, nil
		},
	}
)

// sessionPair starts a client session of ci and a server session of si over
// one TCP connection; both are closed when the test ends.
func sessionPair(tb testing.TB, ci, si impl, cc, sc muxConfig) (client, server session) {
	tb.Helper()
	c, s := nettest.TCPPair(tb)
	var err error
	client, err = ci.client(c, cc)
	if err != nil {
		tb.Fatalf("%s client: %v", ci.name, err)
	}
	tb.Cleanup(func() { client.Close() })
	server, err = si.server(s, sc)
	if err != nil {
		tb.Fatalf("%s server: %v", si.name, err)
	}
	tb.Cleanup(func() { server.Close() })
	return client, server
}

// checkGoroutines records the number of goroutines now and, when the test
// ends, waits up to a few seconds for it to come back down. Call it first in a
// test, so its cleanup runs after every other cleanup.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines: %d at the start, %d five seconds after the end\n%s", base, n, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// randomData is one block of pseudo-random bytes shared read-only by every
// transfer; a transfer of n bytes uses a slice of it at some offset.
var randomData = sync.OnceValue(func() []byte {
	b := make([]byte, 11<<20)
	r := rand.NewChaCha8([32]byte{'s', 'm', 'u', 'x', 't', 'u', 'n'})
	_, _ = r.Read(b)
	return b
})

// payload returns n pseudo-random bytes (n <= 11 MiB) chosen by rng.
func payload(rng *rand.Rand, n int) []byte {
	data := randomData()
	off := rng.IntN(len(data) - n + 1)
	return data[off : off+n]
}

// readAll reads r until it returns an error and returns the bytes and that
// error (io.EOF included, unlike io.ReadAll).
func readAll(r io.Reader) ([]byte, error) {
	var out []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}

// hashReader reads r to its end (or error) and returns the SHA-256 of what
// it read, how many bytes, and the error that ended it.
func hashReader(r io.Reader) (sum [32]byte, n int64, err error) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for {
		m, rerr := r.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		if rerr != nil {
			copy(sum[:], h.Sum(nil))
			return sum, n, rerr
		}
	}
}

// waitClosed waits up to d for ch to close.
func waitClosed(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// waitErr waits up to d for one error from ch.
func waitErr(ch <-chan error, d time.Duration) (error, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-ch:
		return err, true
	case <-t.C:
		return nil, false
	}
}

// errorList collects errors from many goroutines.
type errorList struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorList) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Errorf(format, args...))
}

func (l *errorList) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return nil
	}
	var b strings.Builder
	for i, e := range l.errs {
		if i == 10 {
			fmt.Fprintf(&b, "\n... and %d more", len(l.errs)-10)
			break
		}
		fmt.Fprintf(&b, "\n%v", e)
	}
	return errors.New(b.String())
}

// rawFrame encodes one smux frame: version, command, stream id and payload.
func rawFrame(ver, cmd byte, sid uint32, payload []byte) []byte {
	return rawFrameLen(ver, cmd, uint16(len(payload)), sid, payload)
}

// rawFrameLen is rawFrame with a length field that may disagree with the
// payload.
func rawFrameLen(ver, cmd byte, length uint16, sid uint32, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0] = ver
	b[1] = cmd
	b[2] = byte(length)
	b[3] = byte(length >> 8)
	b[4] = byte(sid)
	b[5] = byte(sid >> 8)
	b[6] = byte(sid >> 16)
	b[7] = byte(sid >> 24)
	return append(b, payload...)
}

// updPayload is the 8-byte payload of an UPD frame.
func updPayload(consumed, window uint32) []byte {
	return []byte{
		byte(consumed), byte(consumed >> 8), byte(consumed >> 16), byte(consumed >> 24),
		byte(window), byte(window >> 8), byte(window >> 16), byte(window >> 24),
	}
}

// Wire commands, as DESIGN.md lists them.
const (
	cmdSYN = 0
	cmdFIN = 1
	cmdPSH = 2
	cmdNOP = 3
	cmdUPD = 4
)

// streamPair opens a stream on client, accepts it on server, and closes both
// when the test ends.
func streamPair(t *testing.T, client, server session) (opened, accepted halfConn) {
	t.Helper()
	opened, err := client.open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { opened.Close() })
	accepted, err = server.accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { accepted.Close() })
	return opened, accepted
}

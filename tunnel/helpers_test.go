package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
)

const testKey = "tunnel-test-key"

// ioTimeout bounds a transfer in the tests. Transfers take milliseconds;
// the bound is generous because KCP's retransmission timer grows fast when
// the machine is starved of CPU and drops loopback packets.
const ioTimeout = 30 * time.Second

// testLogger discards logs unless SMUXTUN_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("SMUXTUN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startEcho runs a target that sends back everything it reads and
// half-closes its side when the reader reaches EOF.
func startEcho(t testing.TB, network, addr string) string {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	serveConns(t, l, func(c net.Conn) {
		io.Copy(c, c)
		c.(closeWriter).CloseWrite()
		// Wait for the peer to finish too, so its close is not a reset.
		io.Copy(io.Discard, c)
	})
	return l.Addr().String()
}

// startReplier runs a target that reads the whole request (until EOF), then
// answers with the SHA-256 of the request followed by replySize bytes of
// the request repeated, and closes.
func startReplier(t testing.TB, network, addr string, replySize int) string {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	serveConns(t, l, func(c net.Conn) {
		req, err := io.ReadAll(c)
		if err != nil {
			return
		}
		sum := sha256.Sum256(req)
		c.Write(sum[:])
		c.Write(replyBody(req, replySize))
	})
	return l.Addr().String()
}

func replyBody(req []byte, n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n && len(req) > 0 {
		out = append(out, req[:min(len(req), n-len(out))]...)
	}
	return out
}

// serveConns accepts on l until the test ends and runs h on each connection.
func serveConns(t testing.TB, l net.Listener, h func(net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				h(c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

type pairOpts struct {
	transport string
	nocomp    bool
	smuxver   int
	target    string // defaults to a fresh echo target
	listen    string // server listen address, default 127.0.0.1:0
	remote    string // client remote address, default the server's address
	local     string // client local address, default 127.0.0.1:0
	conn      int
	tweak     func(*config.Common)
	// allow (server), forward and socks (client): client-chosen targets.
	allow   []string
	forward []string
	socks   string
	// socksUser and socksPass (client): SOCKS authentication
	socksUser, socksPass string
	// udpTimeout (seconds) for both ends, 0 = the default
	udpTimeout int
	// resolver, if set, resolves the server's client-chosen targets
	resolver *net.Resolver
	// srvLog and cliLog, if set, keep the server's and the client's logs.
	srvLog, cliLog *syncBuffer
}

// loggerTo logs into b, or as testLogger does if b is nil.
func loggerTo(b *syncBuffer) *slog.Logger {
	if b == nil {
		return testLogger()
	}
	return slog.New(slog.NewTextHandler(b, nil))
}

func baseCommon(o pairOpts, c *config.Common) {
	c.Key = testKey
	c.Mode = "fast3"
	c.Transport = o.transport
	if c.Transport == "" {
		c.Transport = config.TransportKCP
	}
	c.NoComp = o.nocomp
	c.SmuxVer = o.smuxver
	if c.SmuxVer == 0 {
		c.SmuxVer = 2
	}
	c.SockBuf = 1 << 20
	if o.tweak != nil {
		o.tweak(c)
	}
}

// runServer starts a Server and stops it when the test ends (or when the
// returned stop is called).
func runServer(t testing.TB, o pairOpts) (*Server, func()) {
	t.Helper()
	cfg := config.DefaultServer()
	baseCommon(o, &cfg.Common)
	cfg.Listen = o.listen
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.Target = o.target
	cfg.Allow = o.allow
	if o.udpTimeout > 0 {
		cfg.UDPTimeout = o.udpTimeout
	}
	srv, err := NewServer(cfg, loggerTo(o.srvLog))
	if err != nil {
		t.Fatal(err)
	}
	srv.resolver = o.resolver
	return srv, serveInBackground(t, srv.Serve)
}

func runClient(t testing.TB, o pairOpts) (*Client, func()) {
	t.Helper()
	cfg := config.DefaultClient()
	baseCommon(o, &cfg.Common)
	cfg.LocalAddr = o.local
	if cfg.LocalAddr == "" {
		cfg.LocalAddr = "127.0.0.1:0"
	}
	cfg.RemoteAddr = o.remote
	cfg.Forward, cfg.Socks = o.forward, o.socks
	cfg.SocksUser, cfg.SocksPass = o.socksUser, o.socksPass
	if o.udpTimeout > 0 {
		cfg.UDPTimeout = o.udpTimeout
	}
	cfg.LocalAddrSet = o.local != "-"
	if o.conn > 0 {
		cfg.Conn = o.conn
	}
	cli, err := NewClient(cfg, loggerTo(o.cliLog))
	if err != nil {
		t.Fatal(err)
	}
	return cli, serveInBackground(t, cli.Serve)
}

// serveInBackground runs serve until stop is called or the test ends, and
// checks that it returns nil within 5 s.
func serveInBackground(t testing.TB, serve func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve returned %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Serve did not return within 5 s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// runPair starts a target, a server and a client; it returns the client's
// local address.
func runPair(t testing.TB, o pairOpts) string {
	t.Helper()
	if o.target == "" {
		o.target = startEcho(t, "tcp", "127.0.0.1:0")
	}
	srv, _ := runServer(t, o)
	if o.remote == "" {
		o.remote = srv.Addrs()[0].String()
	}
	cli, _ := runClient(t, o)
	return cli.Addr().String()
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// echoRoundTrip sends data through addr, half-closes, reads everything
// back and checks the SHA-256 of what came back.
func echoRoundTrip(network, addr string, data []byte, timeout time.Duration) error {
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(closeWriter).CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	n, rerr := io.Copy(h, c)
	if err := <-werr; err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	want := sha256.Sum256(data)
	if n != int64(len(data)) || string(h.Sum(nil)) != string(want[:]) {
		return errors.New("echo mismatch: got " + itoa(n) + " bytes, sent " + itoa(int64(len(data))))
	}
	return nil
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	if neg {
		b = append([]byte{'-'}, b...)
	}
	return string(b)
}

// goroutineBaseline returns a check that waits (up to 10 s) for the number
// of goroutines to come back to what it is now.
func goroutineBaseline(t *testing.T) func() {
	t.Helper()
	base := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("goroutines: %d, baseline %d\n%s", n, base, buf)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

func shortSocketPath(t *testing.T, name string) string {
	t.Helper()
	// Unix socket paths are limited to ~108 bytes; t.TempDir can be long.
	dir, err := os.MkdirTemp("", "smt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, name)
	if len(p) > 100 || !strings.Contains(p, "/") {
		t.Fatalf("socket path too long: %s", p)
	}
	return p
}

// leakChecked runs body as a subtest (so that everything it started is
// stopped by its cleanups) and then checks that the goroutines it started
// are gone.
func leakChecked(t *testing.T, body func(t *testing.T)) {
	t.Helper()
	check := goroutineBaseline(t)
	if !t.Run("run", body) {
		return
	}
	check()
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }

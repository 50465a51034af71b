package tunnel

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/crypt"
)

// tapRelay forwards TCP connections from a loopback port to target and
// keeps a copy of every byte that crosses it, in both directions.
type tapRelay struct {
	mu   sync.Mutex
	seen bytes.Buffer
}

func startTapRelay(t *testing.T, target string) (*tapRelay, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &tapRelay{}
	serveConns(t, l, func(c net.Conn) {
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		done := make(chan struct{})
		go func() {
			r.copy(up, c)
			up.(closeWriter).CloseWrite()
			close(done)
		}()
		r.copy(c, up)
		c.(closeWriter).CloseWrite()
		<-done
	})
	return r, l.Addr().String()
}

func (r *tapRelay) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			r.seen.Write(buf[:n])
			r.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *tapRelay) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.seen.Bytes())
}

// TestTCPTransportEncrypts looks at the bytes between client and server on
// the TCP transport: the application's data must not be visible in them
// unless the cipher is none or null.
func TestTCPTransportEncrypts(t *testing.T) {
	marker := []byte("smuxtun plaintext marker 0123456789 ")
	data := bytes.Repeat(marker, 2000)
	tests := []struct {
		crypt     string
		wantClear bool
	}{
		{"aes", false},
		{"salsa20", false},
		{"aes-128-gcm", false},
		{"none", true},
		{"null", true},
	}
	for _, tt := range tests {
		t.Run(tt.crypt, func(t *testing.T) {
			leakChecked(t, func(t *testing.T) {
				o := pairOpts{
					transport: config.TransportTCP,
					nocomp:    true, // compression alone would hide the repeated marker
					target:    startEcho(t, "tcp", "127.0.0.1:0"),
					tweak:     func(c *config.Common) { c.Crypt = tt.crypt },
				}
				srv, _ := runServer(t, o)
				tap, relayAddr := startTapRelay(t, srv.Addrs()[0].String())
				o.remote = relayAddr
				cli, _ := runClient(t, o)
				if err := echoRoundTrip("tcp", cli.Addr().String(), data, ioTimeout); err != nil {
					t.Fatal(err)
				}
				seen := tap.bytes()
				if len(seen) < 2*len(data) {
					t.Fatalf("relay saw %d bytes, the echo alone is %d", len(seen), 2*len(data))
				}
				if got := bytes.Contains(seen, marker); got != tt.wantClear {
					t.Errorf("application bytes visible on the wire: %v, want %v", got, tt.wantClear)
				}
			})
		})
	}
}

// syncBuffer is a log destination that tests read while the tunnel writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitLog waits up to 10 s for a log line containing every one of subs.
func waitLog(t *testing.T, who string, b *syncBuffer, subs ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for line := range strings.SplitSeq(b.String(), "\n") {
			ok := true
			for _, s := range subs {
				ok = ok && strings.Contains(line, s)
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never logged a line with %q; log:\n%s", who, subs, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTCPTransportWrongKey: a client whose key differs from the server's
// gets nothing through, and both ends say why.
func TestTCPTransportWrongKey(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		var srvLog, cliLog syncBuffer
		scfg := config.DefaultServer()
		baseCommon(pairOpts{transport: config.TransportTCP}, &scfg.Common)
		scfg.Listen = "127.0.0.1:0"
		scfg.Target = startEcho(t, "tcp", "127.0.0.1:0")
		srv, err := NewServer(scfg, slog.New(slog.NewTextHandler(&srvLog, nil)))
		if err != nil {
			t.Fatal(err)
		}
		serveInBackground(t, srv.Serve)

		ccfg := config.DefaultClient()
		baseCommon(pairOpts{transport: config.TransportTCP}, &ccfg.Common)
		ccfg.Key = "not the server's key"
		ccfg.LocalAddr = "127.0.0.1:0"
		ccfg.RemoteAddr = srv.Addrs()[0].String()
		cli, err := NewClient(ccfg, slog.New(slog.NewTextHandler(&cliLog, nil)))
		if err != nil {
			t.Fatal(err)
		}
		serveInBackground(t, cli.Serve)

		auth := crypt.ErrAuthFailed.Error()
		waitLog(t, "client", &cliLog, "cannot reach server", auth, "from "+ccfg.RemoteAddr)
		waitLog(t, "server", &srvLog, "session closed", auth, "from 127.0.0.1:")
		if err := echoRoundTrip("tcp", cli.Addr().String(), []byte("hello"), time.Second); err == nil {
			t.Fatal("data went through a tunnel whose ends have different keys")
		}
	})
}

// TestTCPTransportWarnsOnlyInClear: the warning about an unencrypted
// tunnel is given for none and null only.
func TestTCPTransportWarnsOnlyInClear(t *testing.T) {
	for _, name := range crypt.Names() {
		t.Run(name, func(t *testing.T) {
			var logs syncBuffer
			cfg := config.DefaultServer()
			baseCommon(pairOpts{transport: config.TransportTCP, tweak: func(c *config.Common) { c.Crypt = name }}, &cfg.Common)
			cfg.Listen = "127.0.0.1:0"
			cfg.Target = "127.0.0.1:9"
			srv, err := NewServer(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range srv.listeners {
				l.Close()
			}
			warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "not encrypted")
			if want := !crypt.EncryptsStream(name); warned != want {
				t.Errorf("warned about a clear tunnel: %v, want %v; log:\n%s", warned, want, logs.String())
			}
		})
	}
}

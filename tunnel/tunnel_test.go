package tunnel

import (
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
)

// transferCases are the transport × compression × smux version matrix.
func transferCases() []pairOpts {
	var out []pairOpts
	for _, tr := range []string{config.TransportKCP, config.TransportTCP} {
		for _, nocomp := range []bool{false, true} {
			for _, ver := range []int{1, 2} {
				out = append(out, pairOpts{transport: tr, nocomp: nocomp, smuxver: ver})
			}
		}
	}
	return out
}

func caseName(o pairOpts) string {
	comp := "comp"
	if o.nocomp {
		comp = "nocomp"
	}
	return fmt.Sprintf("%s/%s/v%d", o.transport, comp, o.smuxver)
}

func TestTransferConcurrent(t *testing.T) {
	for _, o := range transferCases() {
		t.Run(caseName(o), func(t *testing.T) {
			leakChecked(t, func(t *testing.T) {
				local := runPair(t, o)
				const conns = 16
				var wg sync.WaitGroup
				errs := make(chan error, conns)
				for i := range conns {
					size := rand.IntN(256 << 10)
					if i == 0 {
						size = 0 // an empty connection is a connection too
					}
					data := randomBytes(t, size)
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := echoRoundTrip("tcp", local, data, ioTimeout); err != nil {
							errs <- fmt.Errorf("conn %d (%d bytes): %w", i, size, err)
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})
		})
	}
}

// TestHalfClose: a client that sends its request and shuts down its
// sending side still receives the whole reply, which the target only
// starts writing after it has seen the end of the request.
func TestHalfClose(t *testing.T) {
	const replySize = 300 << 10
	for _, o := range transferCases() {
		t.Run(caseName(o), func(t *testing.T) {
			o.target = startReplier(t, "tcp", "127.0.0.1:0", replySize)
			local := runPair(t, o)
			req := randomBytes(t, 100<<10)
			c, err := net.Dial("tcp", local)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write(req); err != nil {
				t.Fatal(err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading the reply after CloseWrite: %v (got %d bytes)", err, len(got))
			}
			sum := sha256.Sum256(req)
			want := append(sum[:], replyBody(req, replySize)...)
			if sha256.Sum256(got) != sha256.Sum256(want) {
				t.Fatalf("reply mismatch: got %d bytes, want %d", len(got), len(want))
			}
		})
	}
}

// TestUnixTarget: the server's target is a unix socket path.
func TestUnixTarget(t *testing.T) {
	for _, tr := range []string{config.TransportKCP, config.TransportTCP} {
		t.Run(tr, func(t *testing.T) {
			path := shortSocketPath(t, "target.sock")
			startEcho(t, "unix", path)
			local := runPair(t, pairOpts{transport: tr, target: path})
			if err := echoRoundTrip("tcp", local, randomBytes(t, 200<<10), ioTimeout); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestUnixLocal: the client listens on a unix socket path, and replaces a
// stale socket file left behind by a dead process.
func TestUnixLocal(t *testing.T) {
	path := shortSocketPath(t, "client.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	// Leave the file behind, as a killed process would.
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	local := runPair(t, pairOpts{transport: config.TransportTCP, local: path})
	if local != path {
		t.Fatalf("client address %q, want %q", local, path)
	}
	if err := echoRoundTrip("unix", path, randomBytes(t, 100<<10), ioTimeout); err != nil {
		t.Fatal(err)
	}
}

// TestMultiport: the server binds every port of a range; the client's
// sessions land on ports chosen at random from it.
func TestMultiport(t *testing.T) {
	for _, tr := range []string{config.TransportKCP, config.TransportTCP} {
		t.Run(tr, func(t *testing.T) {
			const width = 4
			var srv *Server
			var rng string
			for attempt := 0; srv == nil; attempt++ {
				lo := 20000 + rand.IntN(30000)
				rng = fmt.Sprintf("127.0.0.1:%d-%d", lo, lo+width-1)
				cfg := config.DefaultServer()
				baseCommon(pairOpts{transport: tr}, &cfg.Common)
				cfg.Listen = rng
				cfg.Target = startEcho(t, "tcp", "127.0.0.1:0")
				s, err := NewServer(cfg, testLogger())
				if err != nil {
					if attempt > 20 {
						t.Fatal(err)
					}
					continue
				}
				srv = s
			}
			serveInBackground(t, srv.Serve)
			if n := len(srv.Addrs()); n != width {
				t.Fatalf("server bound %d addresses, want %d", n, width)
			}
			// Many single-session clients: each dials one random port. With
			// 12 clients on 4 ports, all on one port has odds of 2e-7.
			ports := map[string]bool{}
			for range 12 {
				cli, stop := runClient(t, pairOpts{transport: tr, remote: rng})
				if err := echoRoundTrip("tcp", cli.Addr().String(), randomBytes(t, 32<<10), ioTimeout); err != nil {
					t.Fatal(err)
				}
				cs := cli.slots[0].get()
				if cs == nil {
					t.Fatal("client has no session after a transfer")
				}
				_, port, _ := net.SplitHostPort(cs.mux.RemoteAddr().String())
				ports[port] = true
				stop()
			}
			if len(ports) < 2 {
				t.Fatalf("12 sessions all went to port(s) %v of %s", ports, rng)
			}
		})
	}
}

// TestQuietDropsStreamEvents: per-stream events carry the session and
// stream ids at Info, and --quiet moves them below Info; session events
// stay.
func TestQuietDropsStreamEvents(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		t.Run(fmt.Sprintf("quiet=%v", quiet), func(t *testing.T) {
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			o := pairOpts{transport: config.TransportTCP, tweak: func(c *config.Common) { c.Quiet = quiet }}
			o.target = startEcho(t, "tcp", "127.0.0.1:0")
			func() {
				srv, stopSrv := runServer(t, o)
				defer stopSrv()
				cfg := config.DefaultClient()
				baseCommon(o, &cfg.Common)
				cfg.LocalAddr, cfg.RemoteAddr = "127.0.0.1:0", srv.Addrs()[0].String()
				cli, err := NewClient(cfg, log)
				if err != nil {
					t.Fatal(err)
				}
				stop := serveInBackground(t, cli.Serve)
				defer stop()
				if err := echoRoundTrip("tcp", cli.Addr().String(), []byte("ping"), ioTimeout); err != nil {
					t.Fatal(err)
				}
			}()
			out := logs.String()
			if !strings.Contains(out, `msg="session opened"`) {
				t.Errorf("no session event in the log:\n%s", out)
			}
			hasStream := regexp.MustCompile(`msg="stream (opened|closed)" session=\d+ stream=\d+`).MatchString(out)
			if hasStream == quiet {
				t.Errorf("quiet=%v but stream events logged: %v\n%s", quiet, hasStream, out)
			}
		})
	}
}

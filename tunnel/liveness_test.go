package tunnel

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
)

// startSlowTarget runs a target that reads a line, stays silent for delay,
// then answers "late\n" and closes.
func startSlowTarget(t *testing.T, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveConns(t, l, func(c net.Conn) {
		buf := make([]byte, 64)
		if _, err := c.Read(buf); err != nil {
			return
		}
		time.Sleep(delay)
		c.Write([]byte("late\n"))
	})
	return l.Addr().String()
}

// askSlow sends a line through the tunnel at local and returns the answer,
// or an error if the connection ended without one.
func askSlow(local string, timeout time.Duration) (string, error) {
	c, err := net.Dial("tcp", local)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestSlowTargetIsNotMistakenForADeadServer: a target that thinks for 6 s
// before answering (longer than the liveness deadline) is answered in full,
// through a smuxtun server (which answers pings meanwhile) and through a
// kcptun-style server (which cannot be pinged: its session is only retired,
// its stream keeps running). Several such connections at once, as a user
// with a few slow requests would have.
func TestSlowTargetIsNotMistakenForADeadServer(t *testing.T) {
	const delay = 6 * time.Second
	for _, peer := range []string{"smuxtun", "kcptun"} {
		t.Run(peer, func(t *testing.T) {
			leakChecked(t, func(t *testing.T) {
				target := startSlowTarget(t, delay)
				var srvLog, cliLog syncBuffer
				o := pairOpts{target: target, srvLog: &srvLog, cliLog: &cliLog}
				if peer == "smuxtun" {
					srv, _ := runServer(t, o)
					o.remote = srv.Addrs()[0].String()
				} else {
					o.tweak = func(c *config.Common) {
						c.Mode, c.Crypt, c.DataShard, c.ParityShard = "fast", "aes", refDataShard, refParityShard
						c.SockBuf = refSockBuf
					}
					o.remote = startRefServer(t, "aes", false, 2, target)
				}
				cli, _ := runClient(t, o)
				const n = 4
				errs := make(chan error, n)
				for range n {
					go func() {
						got, err := askSlow(cli.Addr().String(), delay+20*time.Second)
						if err == nil && got != "late\n" {
							err = io.ErrUnexpectedEOF
						}
						errs <- err
					}()
				}
				for range n {
					if err := <-errs; err != nil {
						t.Errorf("a slow request was cut: %v\nclient log:\n%s\nserver log:\n%s", err, cliLog.String(), srvLog.String())
					}
				}
				for _, bad := range []string{"stopped answering", "does not answer", "stream cut"} {
					if strings.Contains(cliLog.String()+srvLog.String(), bad) {
						t.Errorf("a live session was judged dead (%q):\nclient log:\n%s\nserver log:\n%s", bad, cliLog.String(), srvLog.String())
					}
				}
			})
		})
	}
}

// TestWrongKeyClosesConnectionsAndSaysWhy: the server runs with another key,
// so it drops every packet. A connection through the client is closed
// within 5 s (not left hanging), and the client's log says what to check,
// once, however many connections try.
func TestWrongKeyClosesConnectionsAndSaysWhy(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		o := pairOpts{target: startEcho(t, "tcp", "127.0.0.1:0")}
		srv, _ := runServerLogged(t, o)
		o.remote = srv.Addrs()[0].String()
		o.tweak = func(c *config.Common) { c.Key = "not the server's key" }
		cli, cliLog := runClientLogged(t, o)
		for i := range 5 {
			start := time.Now()
			_, err := askSlow(cli.Addr().String(), 20*time.Second)
			took := time.Since(start)
			if err == nil {
				t.Fatalf("connection %d got an answer through a server with another key", i)
			}
			if took > 5*time.Second {
				t.Fatalf("connection %d hung %v before it was closed (%v)", i, took.Round(time.Millisecond), err)
			}
			t.Logf("connection %d closed after %v: %v", i, took.Round(time.Millisecond), err)
		}
		lines := 0
		for line := range strings.SplitSeq(cliLog.String(), "\n") {
			if strings.Contains(line, `msg="server does not answer"`) {
				lines++
				for _, want := range []string{"level=WARN", "--key", "--crypt", "UDP", "remote=" + o.remote} {
					if !strings.Contains(line, want) {
						t.Errorf("the warning lacks %q: %s", want, line)
					}
				}
			}
		}
		if lines != 1 {
			t.Errorf("%d \"server does not answer\" lines for one server within a minute, want 1:\n%s", lines, cliLog.String())
		}
	})
}

// TestGoneClientReleasesTargets: a smuxtun client vanishes without a word
// (over KCP nothing tells the server); the server notices within 5 s that it
// no longer answers, closes the session and so the connections to its
// target, rather than holding them until the keepalive timeout.
func TestGoneClientReleasesTargets(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := make(chan time.Time, 8)
		serveConns(t, l, func(c net.Conn) {
			io.Copy(io.Discard, c) // ends when the server closes its side
			closed <- time.Now()
		})
		var srvLog syncBuffer
		o := pairOpts{target: l.Addr().String(), srvLog: &srvLog}
		srv, _ := runServer(t, o)
		o.remote = srv.Addrs()[0].String()
		cli, stopClient := runClient(t, o)
		const n = 3
		for range n {
			c, err := net.Dial("tcp", cli.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		waitLog(t, "server", &srvLog, "stream opened")
		time.Sleep(500 * time.Millisecond)
		// The client's process dies: its sessions close without a frame
		// (KCP has no close), as with kill -9.
		gone := time.Now()
		stopClient()
		for i := range n {
			select {
			case at := <-closed:
				if d := at.Sub(gone); d > 5*time.Second {
					t.Fatalf("target connection %d released %v after the client went, want within 5 s", i, d)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("target connection %d still open 10 s after the client went\nserver log:\n%s", i, srvLog.String())
			}
		}
		waitLog(t, "server", &srvLog, "level=WARN", "client stopped answering", "remote=")
	})
}

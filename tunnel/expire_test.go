package tunnel

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
)

// openEcho opens a connection through the client and checks one echo on it.
func openEcho(t *testing.T, local string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	checkEcho(t, c, "hello")
	return c
}

func checkEcho(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %q, %v", buf, err)
	}
}

func currentSession(t *testing.T, cli *Client) *clientSession {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if cs := cli.slots[0].get(); cs != nil {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatal("no session in the pool")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitClosed(t *testing.T, cs *clientSession, within time.Duration) {
	t.Helper()
	select {
	case <-cs.mux.CloseChan():
	case <-time.After(within):
		t.Fatalf("session %d still open after %v", cs.id, within)
	}
}

// TestAutoExpire: after autoexpire a session takes no new streams, its
// streams keep working, and it is closed once its last stream ends.
func TestAutoExpire(t *testing.T) {
	for _, tr := range []string{config.TransportKCP, config.TransportTCP} {
		t.Run(tr, func(t *testing.T) {
			o := pairOpts{transport: tr}
			o.target = startEcho(t, "tcp", "127.0.0.1:0")
			srv, _ := runServer(t, o)
			o.remote = srv.Addrs()[0].String()
			cfg := config.DefaultClient()
			baseCommon(o, &cfg.Common)
			cfg.LocalAddr, cfg.RemoteAddr = "127.0.0.1:0", o.remote
			cfg.AutoExpire, cfg.ScavengeTTL = 1, 600
			cli, err := NewClient(cfg, testLogger())
			if err != nil {
				t.Fatal(err)
			}
			serveInBackground(t, cli.Serve)
			local := cli.Addr().String()

			old := currentSession(t, cli)
			long := openEcho(t, local)
			time.Sleep(1500 * time.Millisecond)

			openEcho(t, local).Close()
			if cur := currentSession(t, cli); cur == old {
				t.Fatal("the pool still hands out the expired session")
			}
			checkEcho(t, long, "still here") // the old stream lives on
			select {
			case <-old.mux.CloseChan():
				t.Fatal("expired session closed while a stream was still on it")
			default:
			}
			long.Close()
			waitClosed(t, old, 5*time.Second)
		})
	}
}

// TestScavengeTTL: an expired session still carrying streams is closed
// scavengettl seconds after it expired.
func TestScavengeTTL(t *testing.T) {
	o := pairOpts{transport: config.TransportTCP}
	o.target = startEcho(t, "tcp", "127.0.0.1:0")
	srv, _ := runServer(t, o)
	cfg := config.DefaultClient()
	baseCommon(o, &cfg.Common)
	cfg.LocalAddr, cfg.RemoteAddr = "127.0.0.1:0", srv.Addrs()[0].String()
	cfg.AutoExpire, cfg.ScavengeTTL = 1, 1
	cli, err := NewClient(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	serveInBackground(t, cli.Serve)

	old := currentSession(t, cli)
	long := openEcho(t, cli.Addr().String())
	waitClosed(t, old, 5*time.Second)
	long.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := long.Read(make([]byte, 1)); err == nil {
		t.Fatal("a stream of a scavenged session stayed open")
	}
	// New connections work on the replacement.
	openEcho(t, cli.Addr().String())
}

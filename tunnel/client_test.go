package tunnel

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
)

// TestRoundRobin: with conn=3, connections are spread evenly over the
// three sessions of the pool.
func TestRoundRobin(t *testing.T) {
	for _, tr := range []string{config.TransportKCP, config.TransportTCP} {
		t.Run(tr, func(t *testing.T) {
			o := pairOpts{transport: tr, conn: 3}
			o.target = startEcho(t, "tcp", "127.0.0.1:0")
			srv, _ := runServer(t, o)
			o.remote = srv.Addrs()[0].String()
			cli, _ := runClient(t, o)
			for i := range cli.slots {
				waitSlot(t, cli, i)
			}
			for range 6 {
				openEcho(t, cli.Addr().String())
			}
			for i := range cli.slots {
				if n := cli.slots[i].get().mux.NumStreams(); n != 2 {
					t.Errorf("session %d carries %d streams, want 2", i, n)
				}
			}
		})
	}
}

func waitSlot(t *testing.T, cli *Client, i int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for cli.slots[i].get() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("slot %d has no session", i)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClientLocalAddrInUse: NewClient fails at once, naming the address.
func TestClientLocalAddrInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := config.DefaultClient()
	baseCommon(pairOpts{}, &cfg.Common)
	cfg.LocalAddr = busy.Addr().String()
	cfg.RemoteAddr = "127.0.0.1:9"
	_, err = NewClient(cfg, testLogger())
	if err == nil || !strings.Contains(err.Error(), "localaddr "+busy.Addr().String()) {
		t.Fatalf("NewClient on a busy port: %v", err)
	}
}

// TestClientNoServer: with nothing listening, a connection through the
// client is closed (not left hanging forever), and Serve still stops
// cleanly.
func TestClientNoServer(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		// A TCP port with nothing behind it.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := l.Addr().String()
		l.Close()
		cfg := config.DefaultClient()
		baseCommon(pairOpts{transport: config.TransportTCP}, &cfg.Common)
		cfg.LocalAddr, cfg.RemoteAddr = "127.0.0.1:0", dead
		cli, err := NewClient(cfg, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		cli.sessionWait = time.Second
		serveInBackground(t, cli.Serve)
		c, err := net.Dial("tcp", cli.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(cli.sessionWait + 5*time.Second))
		start := time.Now()
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read data through a tunnel with no server")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection still open after %v", time.Since(start))
		}
	})
}

package tunnel

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
)

// TestMaxStreamsRefusesAtOnce: past the server's --maxstreams, a new
// connection is closed at once (never left hanging), the server says so in
// one warning per interval, and the connections already open keep working.
func TestMaxStreamsRefusesAtOnce(t *testing.T) {
	old := refusedReportInterval
	refusedReportInterval = 200 * time.Millisecond
	t.Cleanup(func() { refusedReportInterval = old })
	leakChecked(t, func(t *testing.T) {
		var srvLog syncBuffer
		o := pairOpts{transport: config.TransportTCP}
		scfg := config.DefaultServer()
		baseCommon(o, &scfg.Common)
		scfg.MaxStreams = 2
		scfg.Listen = "127.0.0.1:0"
		scfg.Target = startEcho(t, "tcp", "127.0.0.1:0")
		srv, err := NewServer(scfg, slog.New(slog.NewTextHandler(&srvLog, nil)))
		if err != nil {
			t.Fatal(err)
		}
		serveInBackground(t, srv.Serve)
		o.remote = srv.Addrs()[0].String()
		cli, _ := runClient(t, o)
		addr := cli.Addr().String()

		var open []net.Conn
		t.Cleanup(func() {
			for _, c := range open {
				c.Close()
			}
		})
		for i := range 2 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, c)
			roundTrip(t, c, i)
		}
		for i := range 3 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("anyone?"))
			n, err := c.Read(make([]byte, 16))
			c.Close()
			if err != io.EOF || n != 0 {
				t.Fatalf("connection %d past --maxstreams 2: read %d bytes, %v; want io.EOF at once", i+3, n, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("connection %d past the cap took %v to be closed", i+3, d)
			}
		}
		waitLog(t, "server", &srvLog, "level=WARN", "streams refused", "refused=3", "maxstreams=2")
		if n := strings.Count(srvLog.String(), "streams refused"); n != 1 {
			t.Errorf("the server warned %d times about 3 refusals in one interval; want once:\n%s", n, srvLog.String())
		}
		for i, c := range open {
			roundTrip(t, c, i)
		}
	})
}

func roundTrip(t *testing.T, c net.Conn, i int) {
	t.Helper()
	msg := []byte("hello " + itoa(int64(i)))
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("connection %d: write: %v", i, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
		t.Fatalf("connection %d: echo %q, %v", i, got, err)
	}
}

package tunnel

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
)

// mismatchWithin is how soon both ends must name a setting that differs.
const mismatchWithin = 5 * time.Second

// runServerLogged is runServer with the server's log kept in a buffer.
func runServerLogged(t testing.TB, o pairOpts) (*Server, *syncBuffer) {
	t.Helper()
	o.srvLog = new(syncBuffer)
	srv, _ := runServer(t, o)
	return srv, o.srvLog
}

// runClientLogged is runClient with the client's log kept in a buffer.
func runClientLogged(t testing.TB, o pairOpts) (*Client, *syncBuffer) {
	t.Helper()
	o.cliLog = new(syncBuffer)
	cli, _ := runClient(t, o)
	return cli, o.cliLog
}

// logLines returns the lines of b that contain every one of subs.
func logLines(b *syncBuffer, subs ...string) []string {
	var out []string
	for line := range strings.SplitSeq(b.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// waitLogWithin waits up to d for a line of b containing every one of subs
// and returns it.
func waitLogWithin(t *testing.T, d time.Duration, who string, b *syncBuffer, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if lines := logLines(b, subs...); len(lines) > 0 {
			return lines[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s logged no line with %q within %v; log:\n%s", who, subs, d, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// keepServing runs echo round trips of 256 KiB through the good client at
// addr until the returned stop is called, which fails the test if one of
// them failed or none completed.
func keepServing(t *testing.T, addr string) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	ok := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		data := randomBytes(t, 256<<10)
		for {
			select {
			case <-done:
				return
			default:
			}
			err := echoRoundTrip("tcp", addr, data, ioTimeout)
			mu.Lock()
			if err != nil {
				errs = append(errs, err)
			} else {
				ok++
			}
			mu.Unlock()
		}
	}()
	return func() {
		t.Helper()
		close(done)
		wg.Wait()
		for _, err := range errs {
			t.Errorf("good client: %v", err)
		}
		if ok == 0 {
			t.Error("the good client completed no transfer meanwhile")
		}
	}
}

// TestMismatchNamedByBothEnds: a client whose --nocomp or --smuxver differs
// from the server's is named at Warn by both ends within 5 s, while a
// client with the server's settings keeps working.
func TestMismatchNamedByBothEnds(t *testing.T) {
	cases := []struct {
		name        string
		server, bad pairOpts
		srvSays     string
		cliSays     string
		srvAttr     string
		cliAttr     string
	}{
		{"client-nocomp", pairOpts{}, pairOpts{nocomp: true},
			"the peer does not compress: --nocomp differs", "the peer compresses: --nocomp differs", "nocomp=false", "nocomp=true"},
		{"server-nocomp", pairOpts{nocomp: true}, pairOpts{},
			"the peer compresses: --nocomp differs", "the peer does not compress: --nocomp differs", "nocomp=true", "nocomp=false"},
		{"client-smuxver-1", pairOpts{}, pairOpts{smuxver: 1},
			"the peer speaks smux version 1: --smuxver differs", "the peer speaks smux version 2: --smuxver differs", "smuxver=2", "smuxver=1"},
		{"server-smuxver-1", pairOpts{smuxver: 1}, pairOpts{},
			"the peer speaks smux version 2: --smuxver differs", "the peer speaks smux version 1: --smuxver differs", "smuxver=1", "smuxver=2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			leakChecked(t, func(t *testing.T) {
				so := c.server
				so.target = startEcho(t, "tcp", "127.0.0.1:0")
				srv, srvLog := runServerLogged(t, so)
				good := so
				good.remote = srv.Addrs()[0].String()
				goodCli, _ := runClient(t, good)
				stop := keepServing(t, goodCli.Addr().String())

				bo := c.bad
				bo.remote = good.remote
				badCli, badLog := runClientLogged(t, bo)
				start := time.Now()
				knock(t, badCli.Addr().String())
				line := waitLogWithin(t, mismatchWithin, "server", srvLog, "level=WARN", `msg="session failed: `+c.srvSays+`"`, c.srvAttr, "remote=127.0.0.1:")
				t.Logf("server after %v: %s", time.Since(start).Round(time.Millisecond), line)
				line = waitLogWithin(t, mismatchWithin-time.Since(start), "client", badLog, "level=WARN", `msg="session lost, redialling: `+c.cliSays+`"`, c.cliAttr)
				t.Logf("client after %v: %s", time.Since(start).Round(time.Millisecond), line)
				stop()
			})
		})
	}
}

// knock opens a short connection through the client at addr every 300 ms
// until the test ends, as users do when the tunnel does not work. Each one
// makes the client send: the first frames of a session do not always get a
// reply, because a server whose session fails on them at once may close it
// before its own first frame is out.
func knock(t *testing.T, addr string) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			wg.Add(1)
			go func() {
				defer wg.Done()
				echoRoundTrip("tcp", addr, []byte("x"), time.Second)
			}()
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		wg.Wait()
	})
}

// TestMismatchRateLimited: a client that keeps redialling with the wrong
// --nocomp gets one Warn line a minute from each end, not one per session.
func TestMismatchRateLimited(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		srv, srvLog := runServerLogged(t, pairOpts{target: "127.0.0.1:9"})
		badCli, badLog := runClientLogged(t, pairOpts{nocomp: true, remote: srv.Addrs()[0].String()})
		knock(t, badCli.Addr().String())
		// The client redials after 0.1, 0.2, 0.4, 0.8, 1.6 s: five sessions
		// or more fail within 4 s.
		deadline := time.Now().Add(4 * time.Second)
		for time.Now().Before(deadline) && len(logLines(srvLog, "session opened")) < 5 {
			time.Sleep(50 * time.Millisecond)
		}
		if n := len(logLines(srvLog, "session opened")); n < 3 {
			t.Fatalf("only %d sessions in 4 s; log:\n%s\nclient:\n%s", n, srvLog.String(), badLog.String())
		}
		if n := len(logLines(srvLog, "level=WARN", "--nocomp differs")); n != 1 {
			t.Errorf("server: %d warnings, want 1; log:\n%s", n, srvLog.String())
		}
		if n := len(logLines(badLog, "level=WARN", "--nocomp differs")); n != 1 {
			t.Errorf("client: %d warnings, want 1; log:\n%s", n, badLog.String())
		}
	})
}

// TestFECMismatchCarries: kcp-go v5.6.72 takes packets with and without
// FEC headers whatever its own shards, and tunes its decoder to the
// peer's, so ends whose --datashard/--parityshard differ still carry every
// byte.
func TestFECMismatchCarries(t *testing.T) {
	cases := []struct{ sd, sp, cd, cp int }{
		{10, 3, 0, 0},
		{0, 0, 10, 3},
		{10, 3, 5, 2},
		{5, 2, 10, 3},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("server-%d-%d-client-%d-%d", c.sd, c.sp, c.cd, c.cp), func(t *testing.T) {
			leakChecked(t, func(t *testing.T) {
				shards := func(d, p int) func(*config.Common) {
					return func(cc *config.Common) { cc.DataShard, cc.ParityShard = d, p }
				}
				so := pairOpts{target: startEcho(t, "tcp", "127.0.0.1:0"), tweak: shards(c.sd, c.sp)}
				srv, srvLog := runServerLogged(t, so)
				cli, _ := runClient(t, pairOpts{remote: srv.Addrs()[0].String(), tweak: shards(c.cd, c.cp)})
				for _, size := range []int{1, 100 << 10, 2 << 20} {
					if err := echoRoundTrip("tcp", cli.Addr().String(), randomBytes(t, size), ioTimeout); err != nil {
						t.Fatalf("%d bytes: %v", size, err)
					}
				}
				if l := logLines(srvLog, "level=WARN"); len(l) > 0 {
					t.Errorf("server warned: %q", l)
				}
			})
		})
	}
}

// TestMismatchFromKcptunClient: a kcptun client (the reference stack) whose
// settings differ from our server's is named too, although it says nothing
// until it opens a stream.
func TestMismatchFromKcptunClient(t *testing.T) {
	cases := []struct {
		name   string
		cipher string
		nocomp bool
		ver    int
		want   string
	}{
		{"nocomp", "aes", true, 2, "the peer does not compress: --nocomp differs"},
		{"smuxver-1", "aes", false, 1, "the peer speaks smux version 1: --smuxver differs"},
		{"crypt", "salsa20", false, 2, "packets failed the cipher check"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv, srvLog := runServerLogged(t, pairOpts{target: startEcho(t, "tcp", "127.0.0.1:0")})
			sess, err := refDial(t, srv.Addrs()[0].String(), c.cipher, c.nocomp, c.ver)
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			if st, err := sess.OpenStream(); err == nil {
				st.Write([]byte("hello"))
				defer st.Close()
			}
			line := waitLogWithin(t, mismatchWithin, "server", srvLog, "level=WARN", c.want, "remote=127.0.0.1:")
			t.Log(line)
		})
	}
}

// TestServerLogsFailuresAtWarn: a session or stream that fails is logged at
// Warn with its session id and the peer's address; a session the peer
// closed stays at Info.
func TestServerLogsFailuresAtWarn(t *testing.T) {
	// A target that resets every connection once it has read something.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveConns(t, l, func(c net.Conn) {
		c.Read(make([]byte, 1))
		c.(*net.TCPConn).SetLinger(0)
	})
	plain := func(cc *config.Common) { cc.Crypt = "null" }
	srv, srvLog := runServerLogged(t, pairOpts{transport: config.TransportTCP, nocomp: true, target: l.Addr().String(), tweak: plain})
	addr := srv.Addrs()[0].String()

	t.Run("clean", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(frame(2, 3, 0, nil))
		// Read the server's announcement and hello first: closing with
		// unread bytes resets.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 16)); err != nil {
			t.Fatal(err)
		}
		local := c.LocalAddr().String()
		c.Close()
		line := waitLogWithin(t, 5*time.Second, "server", srvLog, `msg="session closed"`, "remote="+local)
		if !strings.Contains(line, "level=INFO") || !strings.Contains(line, "session=") {
			t.Errorf("a session the client closed: %s", line)
		}
	})
	t.Run("protocol-error", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(frame(2, 9, 0, nil)) // no such command
		waitLogWithin(t, 5*time.Second, "server", srvLog, "level=WARN", `msg="session closed"`, "session=", "remote="+c.LocalAddr().String(), "invalid protocol")
	})
	t.Run("stream-reset-by-target", func(t *testing.T) {
		cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, nocomp: true, remote: addr, tweak: plain})
		c, err := net.Dial("tcp", cli.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("hello"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1))
		waitLogWithin(t, 5*time.Second, "server", srvLog, "level=WARN", `msg="stream closed"`, "session=", "remote=127.0.0.1:", "reset")
	})
}

package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// mismatchWithin is how soon both ends must say that a setting differs.
const mismatchWithin = 5 * time.Second

// TestMismatchLogged: a client whose --key, --crypt, --nocomp or --smuxver
// differs from the server's is named at WARN by both ends within 5 s of its
// start, and a correctly configured client of the same server completes
// transfers meanwhile.
func TestMismatchLogged(t *testing.T) {
	const cipherLine = `level=WARN msg="packets failed the cipher check: the client's --key or --crypt differs from this server's"`
	noAnswer := []string{`level=WARN msg="server does not answer"`, "--key", "--crypt"}
	cases := []struct {
		name    string
		nocomp  bool     // on the server and the good client
		both    []string // more flags for the server and the good client
		bad     []string // the mismatched client's flags
		badKey  string   // the mismatched client's key, the tunnel's if empty
		srvWant []string // one server line holds all of these
		cliWant []string // one line of the mismatched client holds all of these
	}{
		{name: "wrong-key", badKey: "not the server's key",
			srvWant: []string{cipherLine, "remote=127.0.0.1:", "crypt=aes"}, cliWant: noAnswer},
		{name: "wrong-crypt", bad: []string{"--crypt", "salsa20"},
			srvWant: []string{cipherLine, "remote=127.0.0.1:", "crypt=aes"}, cliWant: noAnswer},
		{name: "client-nocomp", bad: []string{"--nocomp"},
			srvWant: []string{`level=WARN msg="session failed: the peer does not compress: --nocomp differs"`, "remote=127.0.0.1:", "nocomp=false"},
			cliWant: []string{`level=WARN msg="session lost, redialling: the peer compresses: --nocomp differs"`, "nocomp=true"}},
		{name: "server-nocomp", nocomp: true,
			srvWant: []string{`level=WARN msg="session failed: the peer compresses: --nocomp differs"`, "remote=127.0.0.1:", "nocomp=true"},
			cliWant: []string{`level=WARN msg="session lost, redialling: the peer does not compress: --nocomp differs"`, "nocomp=false"}},
		{name: "client-smuxver-1", bad: []string{"--smuxver", "1"},
			srvWant: []string{`level=WARN msg="session failed: the peer speaks smux version 1: --smuxver differs"`, "remote=127.0.0.1:", "smuxver=2"},
			cliWant: []string{`level=WARN msg="session lost, redialling: the peer speaks smux version 2: --smuxver differs"`, "smuxver=1"}},
		{name: "server-smuxver-1", both: []string{"--smuxver", "1"},
			srvWant: []string{`level=WARN msg="session failed: the peer speaks smux version 2: --smuxver differs"`, "remote=127.0.0.1:", "smuxver=1"},
			cliWant: []string{`level=WARN msg="session lost, redialling: the peer speaks smux version 1: --smuxver differs"`, "smuxver=2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tg := startTarget(t, false)
			tun := startTunnel(t, demo.Options{Target: tg.Addr(), NoComp: c.nocomp, ServerArgs: c.both, ClientArgs: c.both})
			key := c.badKey
			if key == "" {
				key = tun.Key
			}
			srvBefore := len(tun.Server.Output())
			count, served := keepTransferring(t, tun)
			base := count()
			start := time.Now()
			bad := startBadClient(t, tun, key, c.bad...)
			// Connections through it, as a user would try, make it speak and
			// wait for an answer.
			knocked, seen := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(knocked)
				for time.Since(start) < mismatchWithin {
					select {
					case <-seen:
						return
					default:
					}
					if conn, err := dialRetry(bad.addr, time.Second); err == nil {
						conn.SetDeadline(time.Now().Add(time.Second))
						conn.Write([]byte{demo.OpEcho})
						conn.Read(make([]byte, 1))
						conn.Close()
					}
				}
			}()
			defer func() { close(seen); <-knocked }()

			var wg sync.WaitGroup
			for _, w := range []struct {
				who  string
				p    *demo.Proc
				from int
				want []string
			}{{"server", tun.Server, srvBefore, c.srvWant}, {"mismatched client", bad.Proc, 0, c.cliWant}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					line, ok := waitOutput(w.p, w.from, start.Add(mismatchWithin), w.want...)
					if !ok {
						t.Errorf("%s: no line with %q within %v of the mismatched client's start:\n%s", w.who, w.want, mismatchWithin, w.p.Describe())
						return
					}
					t.Logf("%s: %s", w.who, line)
				}()
			}
			wg.Wait()
			if n := served(); n <= base {
				t.Error("the good client completed no transfer while the mismatched one ran")
			}
		})
	}
}

// TestShardMismatchServed: kcp-go takes packets with and without FEC headers
// whatever its own shards (and tunes its decoder to the peer's), so ends
// whose --datashard/--parityshard differ carry every byte, and the server has
// nothing to warn about.
func TestShardMismatchServed(t *testing.T) {
	for _, c := range []struct{ server, client []string }{
		{nil, []string{"--datashard", "0", "--parityshard", "0"}},
		{[]string{"--datashard", "0", "--parityshard", "0"}, nil},
		{nil, []string{"--datashard", "5", "--parityshard", "2"}},
	} {
		t.Run(fmt.Sprintf("server%v-client%v", c.server, c.client), func(t *testing.T) {
			tg := startTarget(t, false)
			tun := startTunnel(t, demo.Options{Target: tg.Addr(), ServerArgs: c.server, ClientArgs: c.client})
			for _, op := range operations {
				if err := through(tun, op, 4<<20, 30*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			if strings.Contains(tun.Server.Output(), "level=WARN") || strings.Contains(tun.Client.Output(), "level=WARN") {
				t.Errorf("a warning:\n%s\n%s", tun.Server.Describe(), tun.Client.Describe())
			}
		})
	}
}

// TestJunkFlood: 10,000 datagrams of junk from one UDP socket make the server
// write at most a few lines, while a good client keeps working.
func TestJunkFlood(t *testing.T) {
	tg := startTarget(t, false)
	// --quiet keeps the good client's streams out of the server's log.
	tun := startTunnel(t, demo.Options{Target: tg.Addr(), ServerArgs: []string{"--quiet"}})
	before := len(tun.Server.Output())
	count, served := keepTransferring(t, tun)
	base := count()

	c, err := net.Dial("udp", tun.ServerAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1400)
	const total = 10000
	for i := range total {
		size := 1200 + i%200 // what a KCP client sends at the default MTU
		rand.Read(buf[:size])
		c.Write(buf[:size])
		if i%200 == 199 {
			time.Sleep(time.Millisecond) // a fast sender, not a socket-buffer overflow test
		}
	}
	time.Sleep(time.Second)
	if n := served(); n <= base {
		t.Error("the good client completed no transfer during the flood")
	}
	out := tun.Server.Output()[before:]
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if out == "" {
		lines = nil
	}
	warned := strings.Count(out, `msg="packets failed the cipher check`)
	if warned != 1 || len(lines) > 3 {
		t.Fatalf("%d junk datagrams: %d cipher warnings (want 1), %d lines in all (want at most 3):\n%s", total, warned, len(lines), out)
	}
	t.Logf("server wrote, for %d junk datagrams:\n%s", total, out)

	// The datagrams did reach the server's cipher check: its counter says so.
	if err := tun.Server.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	csum := regexp.MustCompile(`msg=statistics .* InCsumErrors=(\d+) `)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m := csum.FindStringSubmatch(tun.Server.Output()); m != nil {
			if n, _ := strconv.Atoi(m[1]); n < total*9/10 {
				t.Fatalf("the server counted %d packets failing the cipher check of %d sent", n, total)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no statistics 5 s after SIGUSR1:\n%s", tun.Server.Describe())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// badClient is a smuxtun-client whose settings differ from the server's.
type badClient struct {
	*demo.Proc
	addr string
}

func startBadClient(t *testing.T, tun *demo.Tunnel, key string, flags ...string) badClient {
	t.Helper()
	port, err := demo.FreePort("tcp")
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"--localaddr", addr, "--remoteaddr", tun.ServerAddr, "--key", key}, flags...)
	p, err := demo.StartProc("mismatched smuxtun-client", demo.BinaryPath(binDir, demo.ClientBinary), args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if hasPanic(p.Output()) {
			t.Errorf("the mismatched client panicked:\n%s", p.Describe())
		}
	})
	return badClient{Proc: p, addr: addr}
}

// keepTransferring runs 256 KiB echoes (SHA-256 checked) through the tunnel
// until the test ends or stop is called; count and stop return how many
// completed so far. A failed one fails the test.
func keepTransferring(t *testing.T, tun *demo.Tunnel) (count, stop func() int) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := through(tun, operation{"echo", demo.Echo}, 256<<10, 20*time.Second); err != nil {
				t.Errorf("good client: %v", err)
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
		}
	}()
	count = func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
	var once sync.Once
	stop = func() int {
		once.Do(func() { close(done); wg.Wait() })
		mu.Lock()
		defer mu.Unlock()
		return n
	}
	t.Cleanup(func() { stop() })
	return count, stop
}

// waitOutput waits until deadline for a line of p's output, from byte from
// on, that holds every one of subs.
func waitOutput(p *demo.Proc, from int, deadline time.Time, subs ...string) (string, bool) {
	for {
		out := p.Output()
		for line := range strings.SplitSeq(out[min(from, len(out)):], "\n") {
			ok := true
			for _, s := range subs {
				ok = ok && strings.Contains(line, s)
			}
			if ok {
				return line, true
			}
		}
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialRetry connects to addr, retrying while the process behind it starts.
func dialRetry(addr string, within time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		c, err := demo.Dial(ctx, addr)
		if err == nil || ctx.Err() != nil {
			return c, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

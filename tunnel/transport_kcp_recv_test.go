package tunnel

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
	kcp "github.com/xtaci/kcp-go/v5"
	"golang.org/x/net/ipv4"
)

// TestBadCipherWarns: packets from a client with another key or cipher are
// named at the server, with the client's address and the server's cipher,
// within 5 s, while a good client keeps working.
func TestBadCipherWarns(t *testing.T) {
	const failed = `msg="packets failed the cipher check: the client's --key or --crypt differs from this server's"`
	const notKCP = `msg="packets are not KCP: the client's --crypt differs from this server's"`
	cases := []struct {
		name           string
		server, client string // crypt
		key            string // the client's
		want           string
	}{
		{"wrong-key", "aes", "aes", "another key", failed},
		{"wrong-crypt", "aes", "salsa20", testKey, failed},
		{"wrong-key-aead", "aes-128-gcm", "aes-128-gcm", "another key", failed},
		{"aead-vs-crc", "aes-128-gcm", "aes-128", testKey, failed},
		{"wrong-key-locked-sm4", "sm4", "sm4", "another key", failed},
		{"client-null", "aes", "null", testKey, failed},
		{"server-null", "null", "aes", testKey, notKCP},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			leakChecked(t, func(t *testing.T) {
				withCrypt := func(name, key string) func(*config.Common) {
					return func(cc *config.Common) { cc.Crypt, cc.Key = name, key }
				}
				so := pairOpts{target: startEcho(t, "tcp", "127.0.0.1:0"), tweak: withCrypt(c.server, testKey)}
				srv, srvLog := runServerLogged(t, so)
				good := so
				good.remote = srv.Addrs()[0].String()
				goodCli, goodLog := runClientLogged(t, good)
				stop := keepServing(t, goodCli.Addr().String())

				start := time.Now()
				_, badLog := runClientLogged(t, pairOpts{remote: good.remote, tweak: withCrypt(c.client, c.key)})
				opened := waitLogWithin(t, mismatchWithin, "client", badLog, "session opened")
				port := regexp.MustCompile(`local=[^ ]*:(\d+)`).FindStringSubmatch(opened)[1]
				line := waitLogWithin(t, mismatchWithin, "server", srvLog, "level=WARN", c.want,
					"remote=127.0.0.1:"+port+" ", "crypt="+c.server)
				t.Logf("after %v: %s", time.Since(start).Round(time.Millisecond), line)
				stop()
				// The good client is never blamed.
				gp := regexp.MustCompile(`local=[^ ]*:(\d+)`).FindStringSubmatch(waitLogWithin(t, time.Second, "good client", goodLog, "session opened"))[1]
				if l := logLines(srvLog, "level=WARN", "remote=127.0.0.1:"+gp+" "); len(l) > 0 {
					t.Errorf("the good client was named: %q", l)
				}
			})
		})
	}
}

// TestBadPacketFlood: 10,000 junk datagrams from one socket write one
// warning, and the good client keeps working meanwhile.
func TestBadPacketFlood(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		srv, srvLog := runServerLogged(t, pairOpts{target: startEcho(t, "tcp", "127.0.0.1:0")})
		srvAddr := srv.Addrs()[0].String()
		goodCli, _ := runClient(t, pairOpts{remote: srvAddr})
		stop := keepServing(t, goodCli.Addr().String())
		sent := floodJunk(t, srvAddr, 10000)
		time.Sleep(200 * time.Millisecond)
		stop()
		lines := logLines(srvLog, "level=WARN")
		if len(lines) != 1 || !strings.Contains(lines[0], "packets failed the cipher check") {
			t.Fatalf("%d junk packets gave %d warnings, want 1:\n%s", sent, len(lines), strings.Join(lines, "\n"))
		}
	})
}

// floodJunk sends n random datagrams of 200 to 1400 bytes to addr from one
// socket, as fast as the socket takes them, and returns how many it sent.
func floodJunk(t *testing.T, addr string, n int) int {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1400)
	sent := 0
	for i := range n {
		size := 200 + i*37%1200
		rand.Read(buf[:size])
		if _, err := c.Write(buf[:size]); err == nil {
			sent++
		}
		if i%256 == 255 {
			time.Sleep(time.Millisecond) // let the server's socket drain
		}
	}
	return sent
}

// TestCipherBlameIsExact: with every failed packet logged, only the
// sources that sent failing packets are named, although kcp-go counts
// failures process-wide and two listeners (one with a good client, one
// with a flood of junk, one with a client with the wrong key) run at once.
func TestCipherBlameIsExact(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		var logs syncBuffer
		cfg := config.DefaultServer()
		baseCommon(pairOpts{}, &cfg.Common)
		set, err := newSettings(cfg.Common, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		tr := set.tr.(*kcpTransport)
		tr.cipherWarn = newWarnLimiter(0) // log every failed packet
		l1, err := tr.listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l1.Close()
		l2, err := tr.listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l2.Close()

		// An echo over raw KCP sessions on l1.
		serveConns(t, l1, func(c net.Conn) { io.Copy(c, c) })
		good, err := tr.dial(context.Background(), l1.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer good.Close()
		ccfg := config.DefaultClient()
		baseCommon(pairOpts{tweak: func(c *config.Common) { c.Key = "another key" }}, &ccfg.Common)
		badSet, err := newSettings(ccfg.Common, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		bad, err := badSet.tr.dial(context.Background(), l1.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer bad.Close()

		floodDone := make(chan int)
		go func() { floodDone <- floodJunk(t, l2.Addr().String(), 5000) }()
		go func() {
			for range 50 {
				bad.Write([]byte("knock knock"))
				time.Sleep(10 * time.Millisecond)
			}
		}()
		data := randomBytes(t, 4<<20)
		good.SetDeadline(time.Now().Add(ioTimeout))
		go good.Write(data)
		if _, err := io.ReadFull(good, make([]byte, len(data))); err != nil {
			t.Fatalf("good session: %v", err)
		}
		sent := <-floodDone
		time.Sleep(200 * time.Millisecond)

		goodPort := portOf(good.LocalAddr())
		badPort := portOf(bad.LocalAddr())
		named := map[string]int{}
		re := regexp.MustCompile(`remote=127\.0\.0\.1:(\d+) `)
		for _, line := range logLines(&logs, "level=WARN") {
			m := re.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("a warning without a remote: %s", line)
			}
			named[m[1]]++
		}
		if named[goodPort] > 0 {
			t.Fatalf("the good session (port %s) was blamed %d times; named: %v", goodPort, named[goodPort], named)
		}
		if named[badPort] == 0 {
			t.Errorf("the client with the wrong key (port %s) was never named: %v", badPort, named)
		}
		junk := 0
		for p, n := range named {
			if p != badPort {
				junk += n
			}
		}
		if junk == 0 || junk > sent || len(named) > 2 {
			t.Errorf("named %v for %d junk packets from one socket and one bad client", named, sent)
		}
		t.Logf("junk packets sent %d, blamed %d; bad client blamed %d", sent, junk, named[badPort])
	})
}

func portOf(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

// TestKCPListenerSocketOptions: dscp and sockbuf reach the server's UDP
// socket, which kcp-go no longer opens itself.
func TestKCPListenerSocketOptions(t *testing.T) {
	cfg := config.DefaultServer()
	baseCommon(pairOpts{}, &cfg.Common)
	cfg.DSCP = 46
	cfg.SockBuf = 512 << 10
	set, err := newSettings(cfg.Common, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	l, err := set.tr.listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pc := l.(*kcpListener).conn.pc.(*net.UDPConn)
	tos, err := ipv4.NewPacketConn(pc).TOS()
	if err != nil {
		t.Fatal(err)
	}
	if tos != 46<<2 {
		t.Errorf("TOS = %#x, want dscp 46 (%#x)", tos, 46<<2)
	}
	for _, opt := range []int{syscall.SO_RCVBUF, syscall.SO_SNDBUF} {
		// Linux doubles the requested size for its bookkeeping.
		if got := sockopt(t, pc, syscall.SOL_SOCKET, opt); got < 512<<10 {
			t.Errorf("socket option %d = %d, want at least %d", opt, got, 512<<10)
		}
	}
}

// TestRecvConnCheckers: the checks recvConn runs on a packet agree with
// kcp-go: a packet sealed by a session with the same cipher and key
// passes, one with another key fails, and nothing is modified.
func TestRecvConnCheckers(t *testing.T) {
	for _, c := range refCiphers {
		t.Run(c.name, func(t *testing.T) {
			block := refBlock(t, c.name)
			pass, minLen, _ := cipherCheck(block)
			pkt := sealLikeKCP(t, block)
			orig := append([]byte(nil), pkt...)
			if !pass(pkt) {
				t.Fatal("a packet sealed with the same cipher and key fails")
			}
			if len(pkt) < minLen {
				t.Fatalf("a real packet is shorter (%d) than the minimum (%d)", len(pkt), minLen)
			}
			if string(pkt) != string(orig) {
				t.Fatal("the check modified the packet")
			}
			junk := randomBytes(t, len(pkt))
			junk[4] = 0 // not a KCP command nor an FEC type, for "null"
			if pass(junk) {
				t.Error("random bytes pass")
			}
		})
	}
}

// sealLikeKCP captures one datagram a kcp-go session with block sends.
func sealLikeKCP(t *testing.T, block kcp.BlockCrypt) []byte {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s, err := kcp.DialWithOptions(pc.LocalAddr().String(), block, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Write([]byte("hello"))
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestKCPListenerAddressFamilies: the listener's own reads (batched, with
// IPv4 or IPv6 message parsing picked from its address) serve clients over
// IPv4, IPv6 and a dual-stack socket, and name a bad client's address in
// each family.
func TestKCPListenerAddressFamilies(t *testing.T) {
	if pc, err := net.ListenPacket("udp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback:", err)
	} else {
		pc.Close()
	}
	cases := []struct{ listen, host string }{
		{"127.0.0.1:0", "127.0.0.1"},
		{"[::1]:0", "::1"},
		{":0", "127.0.0.1"}, // dual stack: an IPv4 client of an IPv6 socket
		{":0", "::1"},
	}
	for _, c := range cases {
		t.Run(c.listen+"-from-"+c.host, func(t *testing.T) {
			leakChecked(t, func(t *testing.T) {
				srv, srvLog := runServerLogged(t, pairOpts{listen: c.listen, target: startEcho(t, "tcp", "127.0.0.1:0")})
				_, port, _ := net.SplitHostPort(srv.Addrs()[0].String())
				remote := net.JoinHostPort(c.host, port)
				cli, _ := runClient(t, pairOpts{remote: remote})
				if err := echoRoundTrip("tcp", cli.Addr().String(), randomBytes(t, 1<<20), ioTimeout); err != nil {
					t.Fatal(err)
				}
				runClientLogged(t, pairOpts{remote: remote, tweak: func(cc *config.Common) { cc.Key = "another key" }})
				waitLogWithin(t, mismatchWithin, "server", srvLog, "level=WARN", "packets failed the cipher check", "remote=")
				if l := logLines(srvLog, "level=WARN"); len(l) != 1 || !strings.Contains(l[0], c.host) {
					t.Errorf("warnings: %q, want one naming %s", l, c.host)
				}
			})
		})
	}
}

// lateReader is a UDP socket whose reader, after each packet it reads,
// loses the processor for a while before it hands the packet on, as a
// goroutine does on a loaded machine.
type lateReader struct {
	*net.UDPConn
	arrived chan struct{} // one send per packet read
	late    time.Duration
}

func (r *lateReader) ReadFrom(p []byte) (int, net.Addr, error) {
	n, from, err := r.UDPConn.ReadFrom(p)
	if err == nil {
		select {
		case r.arrived <- struct{}{}:
		default:
		}
		time.Sleep(r.late)
	}
	return n, from, err
}

// A peer's first packet that kcp-go's reader turns into a session only
// after the listener was closed (the reader ran late) is still closed by
// the listener's Close: no session and no goroutine is left behind.
func TestListenerCloseTakesLateSession(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		cfg := config.DefaultServer()
		baseCommon(pairOpts{}, &cfg.Common)
		set, err := newSettings(cfg.Common, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		tr := set.tr.(*kcpTransport)
		uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		slow := &lateReader{UDPConn: uc, arrived: make(chan struct{}, 1), late: 300 * time.Millisecond}
		l, err := tr.serve(slow)
		if err != nil {
			uc.Close()
			t.Fatal(err)
		}
		c, err := tr.dial(context.Background(), uc.LocalAddr().String())
		if err != nil {
			l.Close()
			t.Fatal(err)
		}
		c.Write([]byte("hello"))
		select {
		case <-slow.arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("the listener read no packet in 5 s")
		}
		c.Close()
		start := time.Now()
		l.Close() // while the reader still holds the first packet
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Close took %v", took)
		}
	})
}

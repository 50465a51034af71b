package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/internal/netem"
	"github.com/smuxtun/smuxtun/internal/nettest"
	"github.com/smuxtun/smuxtun/tunnel/socks"
)

// freePort returns a port on 127.0.0.1 that was free a moment ago for
// network ("tcp" or "udp").
func freePort(t testing.TB, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// udpPairs sends n numbered requests from one socket to addr, one at a
// time, and checks each answer; a lost datagram is sent again (UDP), up to
// a bounded number of times.
func udpPairs(addr string, n, size int) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 70000)
	for i := range n {
		req := bytes.Repeat([]byte{byte(i)}, size)
		binary.BigEndian.PutUint32(req, uint32(i))
		want := append([]byte("echo:"), req...)
		ok := false
		for try := 0; try < 20 && !ok; try++ {
			if _, err := c.Write(req); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			for {
				m, err := c.Read(buf)
				if err != nil {
					break // resend
				}
				if bytes.Equal(buf[:m], want) {
					ok = true
					break
				}
				// an answer to an earlier resend: keep reading
			}
		}
		if !ok {
			return fmt.Errorf("request %d: no matching answer after 20 tries", i)
		}
	}
	return nil
}

// socks5Connect asks the SOCKS5 server at proxy to connect to host:port
// and returns the connection and the reply code.
func socks5Connect(proxy, host string, port int) (net.Conn, byte, error) {
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		return nil, 0, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	req := []byte{5, 1, 0, 5, 1, 0}
	a, err := socks.AppendAddr(nil, socks.Addr{Host: host, Port: uint16(port)})
	if err != nil {
		c.Close()
		return nil, 0, err
	}
	c.Write(append(req, a...))
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr != [2]byte{5, 0} {
		c.Close()
		return nil, 0, fmt.Errorf("method reply %v: %v", hdr, err)
	}
	var rep [3]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("reply: %w", err)
	}
	if _, err := socks.ReadAddr(c); err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("reply address: %w", err)
	}
	c.SetDeadline(time.Time{})
	return c, rep[1], nil
}

// echoThrough writes data on c, half-closes and checks the echo.
func echoThrough(c net.Conn, data []byte) error {
	c.SetDeadline(time.Now().Add(ioTimeout))
	go func() {
		c.Write(data)
		c.(closeWriter).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("echo: got %d bytes, sent %d (or different)", len(got), len(data))
	}
	return nil
}

// Three TCP forwards and one UDP forward to four targets through one
// session; concurrent transfers per TCP forward; request/response pairs
// through the UDP forward; a plain --localaddr connection beside them still
// reaches --target.
func TestForwards(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		for _, tr := range []string{config.TransportKCP, config.TransportTCP} {
			t.Run(tr, func(t *testing.T) {
				def := startEcho(t, "tcp", "127.0.0.1:0")
				a := startEcho(t, "tcp", "127.0.0.1:0")
				b := startEcho(t, "tcp", "127.0.0.1:0")
				cc := startEcho(t, "tcp", "127.0.0.1:0")
				u := nettest.UDPEcho(t, "127.0.0.1:0")
				srv, _ := runServer(t, pairOpts{transport: tr, target: def, allow: []string{a, b, cc, u}})
				fwd := []string{
					"127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")) + "=" + a,
					"127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")) + "=" + b,
					"127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")) + "=" + cc,
					"127.0.0.1:" + strconv.Itoa(freePort(t, "udp")) + "/udp=" + u,
				}
				cli, _ := runClient(t, pairOpts{transport: tr, remote: srv.Addrs()[0].String(), forward: fwd})
				addrs := cli.ForwardAddrs()
				var wg sync.WaitGroup
				errc := make(chan error, 64)
				for i := range 3 {
					for j := range 8 {
						wg.Add(1)
						go func() {
							defer wg.Done()
							if err := echoRoundTrip("tcp", addrs[i].String(), randomBytes(t, 64<<10+j*4096), ioTimeout); err != nil {
								errc <- fmt.Errorf("forward %d transfer %d: %w", i, j, err)
							}
						}()
					}
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := udpPairs(addrs[3].String(), 200, 100); err != nil {
						errc <- fmt.Errorf("udp forward: %w", err)
					}
				}()
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := echoRoundTrip("tcp", cli.Addr().String(), randomBytes(t, 100<<10), ioTimeout); err != nil {
						errc <- fmt.Errorf("localaddr: %w", err)
					}
				}()
				wg.Wait()
				close(errc)
				for err := range errc {
					t.Error(err)
				}
			})
		}
	})
}

// The largest datagram there is crosses a UDP forward both ways.
func TestUDPForwardLargestDatagram(t *testing.T) {
	u := nettest.UDPEcho(t, "127.0.0.1:0")
	srv, _ := runServer(t, pairOpts{transport: config.TransportTCP, target: u, allow: []string{u}})
	fwd := "127.0.0.1:" + strconv.Itoa(freePort(t, "udp")) + "/udp=" + u
	cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, remote: srv.Addrs()[0].String(), forward: []string{fwd}, local: "-"})
	// The echo adds 5 bytes: ask for the largest answer that fits.
	if err := udpPairs(cli.ForwardAddrs()[0].String(), 3, MaxDatagram-5); err != nil {
		t.Fatal(err)
	}
}

// A target outside the allow-list: the application's connection is reset
// within a second, the server logs a WARN naming the client and the target,
// and the target sees nothing.
func TestForwardRefused(t *testing.T) {
	var srvLog, cliLog syncBuffer
	def := startEcho(t, "tcp", "127.0.0.1:0")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	touched := make(chan struct{}, 1)
	serveConns(t, l, func(c net.Conn) { touched <- struct{}{} })
	srv, _ := runServer(t, pairOpts{target: def, srvLog: &srvLog})
	fwd := "127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")) + "=" + l.Addr().String()
	cli, _ := runClient(t, pairOpts{remote: srv.Addrs()[0].String(), forward: []string{fwd}, cliLog: &cliLog})
	start := time.Now()
	c, err := net.Dial("tcp", cli.ForwardAddrs()[0].String())
	// The refusal can come back before the dialling goroutine has run
	// again (on a loaded machine): the reset then ends the connect itself.
	if err == nil {
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n")) // sent before the answer: dropped by the server
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	took := time.Since(start)
	if !errors.Is(err, syscall.ECONNRESET) || took > time.Second {
		t.Fatalf("connection to a refused target: read %v after %v, want a reset within 1 s", err, took)
	}
	line := waitLogWithin(t, 2*time.Second, "server", &srvLog, "level=WARN", `msg="target refused"`, "target="+l.Addr().String(), "client=127.0.0.1:")
	t.Log(line)
	waitLogWithin(t, 2*time.Second, "client", &cliLog, "level=WARN", `msg="forward failed"`, "refused")
	select {
	case <-touched:
		t.Fatal("the refused target was connected to")
	case <-time.After(100 * time.Millisecond):
	}
	// A plain connection still reaches --target: the default is allowed.
	if err := echoRoundTrip("tcp", cli.Addr().String(), []byte("still works"), ioTimeout); err != nil {
		t.Fatal(err)
	}
}

// SOCKS5 CONNECT by name and by IPv6 address to allowed targets, a refused
// one answered with "not allowed" within a second, and a UDP ASSOCIATE
// carrying 100 datagrams.
func TestSocks(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		var srvLog syncBuffer
		def := startEcho(t, "tcp", "127.0.0.1:0")
		byName := startEcho(t, "tcp", "127.0.0.1:0")
		_, namePort, _ := net.SplitHostPort(byName)
		allow := []string{"localhost:" + namePort}
		var v6 string
		if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
			l.Close()
			v6 = startEcho(t, "tcp", "[::1]:0")
			allow = append(allow, v6)
		}
		u := nettest.UDPEcho(t, "127.0.0.1:0")
		allow = append(allow, u)
		srv, _ := runServer(t, pairOpts{target: def, allow: allow, srvLog: &srvLog})
		cli, _ := runClient(t, pairOpts{remote: srv.Addrs()[0].String(), socks: "127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")), local: "-"})
		proxy := cli.SocksAddr().String()

		p, _ := strconv.Atoi(namePort)
		c, rep, err := socks5Connect(proxy, "localhost", p)
		if err != nil || rep != 0 {
			t.Fatalf("CONNECT localhost:%d: reply %d, %v", p, rep, err)
		}
		if err := echoThrough(c, randomBytes(t, 256<<10)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if v6 != "" {
			ap := netip.MustParseAddrPort(v6)
			c, rep, err := socks5Connect(proxy, "::1", int(ap.Port()))
			if err != nil || rep != 0 {
				t.Fatalf("CONNECT [::1]: reply %d, %v", rep, err)
			}
			if err := echoThrough(c, randomBytes(t, 64<<10)); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		start := time.Now()
		c, rep, err = socks5Connect(proxy, "127.0.0.1", freePort(t, "tcp"))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if rep != byte(socks.ReplyNotAllowed) || time.Since(start) > time.Second {
			t.Fatalf("refused target: reply %d after %v, want %d within 1 s", rep, time.Since(start), socks.ReplyNotAllowed)
		}
		waitLogWithin(t, 2*time.Second, "server", &srvLog, "level=WARN", `msg="target refused"`)

		if err := socksUDPExchange(proxy, u, 100); err != nil {
			t.Fatal(err)
		}
	})
}

// socksUDPExchange opens a UDP ASSOCIATE at proxy and sends n datagrams to
// target through it, checking each answer.
func socksUDPExchange(proxy, target string, n int) error {
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:2]); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, hdr[:3]); err != nil || hdr[1] != 0 {
		return fmt.Errorf("UDP ASSOCIATE reply %d: %v", hdr[1], err)
	}
	bound, err := socks.ReadAddr(c)
	if err != nil {
		return err
	}
	uc, err := net.Dial("udp", bound.String())
	if err != nil {
		return err
	}
	defer uc.Close()
	ap := netip.MustParseAddrPort(target)
	dst := socks.AddrFromAddrPort(ap)
	buf := make([]byte, 70000)
	for i := range n {
		data := []byte("datagram " + strconv.Itoa(i))
		pkt, _ := socks.AppendUDPDatagram(nil, dst, data)
		ok := false
		for try := 0; try < 20 && !ok; try++ {
			uc.Write(pkt)
			uc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			for {
				m, err := uc.Read(buf)
				if err != nil {
					break
				}
				from, got, err := socks.ParseUDPDatagram(buf[:m])
				if err == nil && from == dst && string(got) == "echo:"+string(data) {
					ok = true
					break
				}
			}
		}
		if !ok {
			return fmt.Errorf("datagram %d: no answer", i)
		}
	}
	return nil
}

// A smuxtun client with a forward against a kcptun-style server: the
// application's connection is closed within 5 s, the client says why, and
// nothing reaches the kcptun server's target.
func TestForwardAgainstKcptunServer(t *testing.T) {
	var cliLog syncBuffer
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	touched := make(chan struct{}, 16)
	serveConns(t, l, func(c net.Conn) { touched <- struct{}{} })
	ref := startRefServer(t, "aes", false, 2, l.Addr().String())
	fwd := "127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")) + "=10.0.0.5:22"
	cli, _ := runClient(t, pairOpts{remote: ref, forward: []string{fwd}, cliLog: &cliLog, tweak: func(c *config.Common) { c.Crypt = "aes" }})
	c, err := net.Dial("tcp", cli.ForwardAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("SSH-2.0-test\r\n"))
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("read %v after %v, want the connection closed within 5 s", err, time.Since(start))
	}
	line := waitLogWithin(t, time.Second, "client", &cliLog, "does not take client-chosen targets", "kcptun")
	t.Log(line)
	select {
	case <-touched:
		t.Fatal("the kcptun server's target was reached")
	case <-time.After(200 * time.Millisecond):
	}
	// The same client's --localaddr still works with kcptun's server.
	if err := echoRoundTripVia(cli.Addr().String(), touched); err != nil {
		t.Fatal(err)
	}
}

// echoRoundTripVia connects through addr and waits for the target to see
// the connection.
func echoRoundTripVia(addr string, touched <-chan struct{}) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.Write([]byte("x"))
	select {
	case <-touched:
		return nil
	case <-time.After(ioTimeout):
		return errors.New("--localaddr did not reach the kcptun server's target")
	}
}

// A kcptun-style client against a server with an allow-list still reaches
// --target.
func TestKcptunClientWithAllowList(t *testing.T) {
	def := startEcho(t, "tcp", "127.0.0.1:0")
	srv, _ := runServer(t, pairOpts{target: def, allow: []string{"10.0.0.0/8:22", "*.example.com:443"}, tweak: func(c *config.Common) { c.Crypt = "aes" }})
	if err := refClientRoundTrip(t, srv.Addrs()[0].String(), "aes", false, 2, randomBytes(t, 200<<10), ioTimeout); err != nil {
		t.Fatal(err)
	}
}

// A UDP flow idle for --udptimeout is closed at both ends; the next
// datagram from the same source opens a new flow that works.
func TestUDPFlowIdleTimeout(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		var srvLog syncBuffer
		u := nettest.UDPEcho(t, "127.0.0.1:0")
		srv, _ := runServer(t, pairOpts{transport: config.TransportTCP, target: u, allow: []string{u}, udpTimeout: 1, srvLog: &srvLog})
		fwd := "127.0.0.1:" + strconv.Itoa(freePort(t, "udp")) + "/udp=" + u
		cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, remote: srv.Addrs()[0].String(), forward: []string{fwd}, local: "-", udpTimeout: 1})
		c, err := net.Dial("udp", cli.ForwardAddrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		exchange := func() {
			t.Helper()
			buf := make([]byte, 100)
			for try := 0; ; try++ {
				c.Write([]byte("hi"))
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				if n, err := c.Read(buf); err == nil && string(buf[:n]) == "echo:hi" {
					return
				}
				if try == 10 {
					t.Fatal("no answer")
				}
			}
		}
		exchange()
		fl := cli.forwards[0]
		flows := func() int {
			fl.mu.Lock()
			defer fl.mu.Unlock()
			return len(fl.flows)
		}
		if flows() != 1 {
			t.Fatalf("%d flows, want 1", flows())
		}
		deadline := time.Now().Add(5 * time.Second)
		for flows() != 0 || len(logLines(&srvLog, `msg="udp flow closed"`)) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("after 5 s with --udptimeout 1: %d flows at the client; server log:\n%s", flows(), srvLog.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		exchange()
	})
}

// With QPP on both ends, forwarded TCP and UDP carry their bytes unchanged
// (the request and the status are not permuted, everything after is).
func TestForwardsWithQPP(t *testing.T) {
	qpp := func(c *config.Common) { c.QPP = true; c.QPPCount = 61 }
	a := startEcho(t, "tcp", "127.0.0.1:0")
	u := nettest.UDPEcho(t, "127.0.0.1:0")
	srv, _ := runServer(t, pairOpts{transport: config.TransportTCP, target: a, allow: []string{u}, tweak: qpp})
	fwd := []string{
		"127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")) + "=" + a,
		"127.0.0.1:" + strconv.Itoa(freePort(t, "udp")) + "/udp=" + u,
	}
	cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, remote: srv.Addrs()[0].String(), forward: fwd, tweak: qpp})
	if err := echoRoundTrip("tcp", cli.ForwardAddrs()[0].String(), randomBytes(t, 300<<10), ioTimeout); err != nil {
		t.Fatal(err)
	}
	if err := udpPairs(cli.ForwardAddrs()[1].String(), 50, 300); err != nil {
		t.Fatal(err)
	}
	if err := echoRoundTrip("tcp", cli.Addr().String(), randomBytes(t, 100<<10), ioTimeout); err != nil {
		t.Fatal(err)
	}
}

// forwardOverDelay starts a server that allows one echo target, a relay
// with oneWay delay each way in front of it, and a client (with o's
// options) whose one forward reaches that echo through the relay.
func forwardOverDelay(t *testing.T, oneWay time.Duration, o pairOpts) *Client {
	t.Helper()
	a := startEcho(t, "tcp", "127.0.0.1:0")
	srv, _ := runServer(t, pairOpts{target: startEcho(t, "tcp", "127.0.0.1:0"), allow: []string{a}})
	relay, err := netem.Start(netem.Config{Listen: "127.0.0.1:0", Upstream: srv.Addrs()[0].String(),
		Up: netem.Link{Delay: oneWay}, Down: netem.Link{Delay: oneWay}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	o.remote = relay.Addr().String()
	o.forward = []string{"127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")) + "=" + a}
	cli, _ := runClient(t, o)
	return cli
}

// A server whose hello comes after the 3 s wait (a 2 s one-way path here)
// is reported at ERROR, then, once the hello arrives, at INFO; forwards
// work from then on.
func TestLateHelloReported(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a 4 s round trip")
	}
	var cliLog syncBuffer
	cli := forwardOverDelay(t, 2*time.Second, pairOpts{local: "-", cliLog: &cliLog})
	waitLogWithin(t, 6*time.Second, "client", &cliLog, "level=ERROR", `msg="forwards and SOCKS will not work"`)
	waitLogWithin(t, 10*time.Second, "client", &cliLog, "level=INFO", "takes forwards and SOCKS after all")
	if err := echoRoundTrip("tcp", cli.ForwardAddrs()[0].String(), []byte("slow but there"), 60*time.Second); err != nil {
		t.Fatal(err)
	}
}

// With --socksuser and --sockspass, a SOCKS5 client must authenticate:
// the right password connects, a wrong one gets the RFC 1929 failure, and
// one that offers no authentication gets "no acceptable method".
func TestSocksAuth(t *testing.T) {
	def := startEcho(t, "tcp", "127.0.0.1:0")
	srv, _ := runServer(t, pairOpts{transport: config.TransportTCP, target: def})
	cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, remote: srv.Addrs()[0].String(), local: "-",
		socks: "127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")), socksUser: "alice", socksPass: "s3cret"})
	ap := netip.MustParseAddrPort(def)
	dst, _ := socks.AppendAddr(nil, socks.AddrFromAddrPort(ap))
	try := func(methods []byte, user, pass string) (method, status, rep byte) {
		t.Helper()
		c, err := net.Dial("tcp", cli.SocksAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(append([]byte{5, byte(len(methods))}, methods...))
		var b [2]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			t.Fatal(err)
		}
		if b[1] != 2 {
			return b[1], 0, 0
		}
		c.Write(append(append(append([]byte{1, byte(len(user))}, user...), byte(len(pass))), pass...))
		if _, err := io.ReadFull(c, b[:]); err != nil {
			t.Fatal(err)
		}
		if b[1] != 0 {
			return 2, b[1], 0
		}
		c.Write(append([]byte{5, 1, 0}, dst...))
		var r [3]byte
		if _, err := io.ReadFull(c, r[:]); err != nil {
			t.Fatal(err)
		}
		return 2, 0, r[1]
	}
	if m, st, rep := try([]byte{0, 2}, "alice", "s3cret"); m != 2 || st != 0 || rep != 0 {
		t.Fatalf("right password: method %d, auth status %d, reply %d", m, st, rep)
	}
	if m, st, _ := try([]byte{2}, "alice", "wrong"); m != 2 || st == 0 {
		t.Fatalf("wrong password: method %d, auth status %d; want a failure status", m, st)
	}
	if m, _, _ := try([]byte{0}, "", ""); m != 0xff {
		t.Fatalf("no authentication offered: method %d, want 0xff", m)
	}
}

// A forwarded connection's first bytes go up with its request, not after
// the server's answer: on a 1 s round trip, a request/response exchange
// through a forward takes about as long as through --localaddr (one round
// trip), not one round trip more.
func TestForwardSendsBeforeTheAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("round trips of 1 s")
	}
	cli := forwardOverDelay(t, 500*time.Millisecond, pairOpts{})
	// First, let the session and the server's hello arrive.
	if err := echoRoundTrip("tcp", cli.ForwardAddrs()[0].String(), []byte("warm"), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	exchange := func(addr string) time.Duration {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		start := time.Now()
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		if _, err := io.ReadFull(c, make([]byte, 18)); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	for range 3 {
		plain := exchange(cli.Addr().String())
		forward := exchange(cli.ForwardAddrs()[0].String())
		t.Logf("first answer: --localaddr %v, --forward %v", plain.Round(time.Millisecond), forward.Round(time.Millisecond))
		if forward < plain+500*time.Millisecond {
			return
		}
	}
	t.Fatal("through the forward the answer took half a round trip or more longer than through --localaddr, three times")
}

// Bad SOCKS requests through the client: a BIND gets "command not
// supported", a request cut off inside its address gets a failure reply;
// each connection is closed and the client logs it once; the proxy keeps
// serving.
func TestSocksBadRequests(t *testing.T) {
	var cliLog syncBuffer
	def := startEcho(t, "tcp", "127.0.0.1:0")
	srv, _ := runServer(t, pairOpts{transport: config.TransportTCP, target: def})
	cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, remote: srv.Addrs()[0].String(), local: "-",
		socks: "127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")), cliLog: &cliLog})
	proxy := cli.SocksAddr().String()
	send := func(b []byte, halfClose bool) []byte {
		t.Helper()
		c, err := net.Dial("tcp", proxy)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(b)
		if halfClose {
			c.(*net.TCPConn).CloseWrite()
		}
		got, err := io.ReadAll(c)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read: %v (want the proxy to answer and close)", err)
		}
		return got
	}
	// greeting, chosen no-auth; then the reply: VER REP ...
	if got := send([]byte{5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80}, false); len(got) < 4 || got[3] != byte(socks.ReplyCommandNotSupported) {
		t.Fatalf("BIND: got %v, want reply %d", got, socks.ReplyCommandNotSupported)
	}
	if got := send([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0}, true); len(got) < 4 || got[3] != byte(socks.ReplyGeneralFailure) {
		t.Fatalf("truncated address: got %v, want reply %d", got, socks.ReplyGeneralFailure)
	}
	waitLogWithin(t, 2*time.Second, "client", &cliLog, "level=WARN", `msg="socks request refused"`)
	c, rep, err := socks5Connect(proxy, "127.0.0.1", int(netip.MustParseAddrPort(def).Port()))
	if err != nil || rep != 0 {
		t.Fatalf("a good request after the bad ones: reply %d, %v", rep, err)
	}
	c.Close()
}

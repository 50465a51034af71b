package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/internal/nettest"
	"github.com/smuxtun/smuxtun/tunnel/socks"
)

// fakeDNS answers every A question with ip and every other question with
// no record: a DNS server whose names under a wildcard lead wherever its
// owner likes.
func fakeDNS(t *testing.T, ip [4]byte) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			end := 12
			for end < len(q) && q[end] != 0 {
				end += int(q[end]) + 1
			}
			end += 5 // the root label, QTYPE, QCLASS
			if end > len(q) {
				continue
			}
			qtype := binary.BigEndian.Uint16(q[end-4:])
			resp := append([]byte(nil), q[:end]...)
			resp[2], resp[3] = 0x81, 0x80           // a response, recursion available
			binary.BigEndian.PutUint16(resp[6:], 0) // no answers yet
			binary.BigEndian.PutUint16(resp[8:], 0)
			binary.BigEndian.PutUint16(resp[10:], 0)
			if qtype == 1 {
				binary.BigEndian.PutUint16(resp[6:], 1)
				resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
				resp = append(resp, ip[:]...)
			}
			pc.WriteTo(resp, from)
		}
	}()
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// A name admitted by a wildcard pattern that resolves to the server's own
// loopback is refused when it is dialled (TCP and UDP) and when a UDP
// association sends to it; the same name allowed exactly is reached.
func TestWildcardNameToLoopbackRefused(t *testing.T) {
	defer func(w time.Duration) { refusedWarnEvery = w }(refusedWarnEvery)
	refusedWarnEvery = 0 // one WARN per refusal
	echo := startEcho(t, "tcp", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(echo)
	u := nettest.UDPEcho(t, "127.0.0.1:"+port) // the same port number for UDP, if free
	_, uport, _ := net.SplitHostPort(u)
	var srvLog syncBuffer
	o := pairOpts{transport: config.TransportTCP, target: startEcho(t, "tcp", "127.0.0.1:0"),
		allow: []string{"*.example.test:" + port, "*.example.test:" + uport, "exact.example.org:" + port}, srvLog: &srvLog}
	o.resolver = fakeDNS(t, [4]byte{127, 0, 0, 1})
	srv, _ := runServer(t, o)
	cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, remote: srv.Addrs()[0].String(), local: "-",
		socks:   "127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")),
		forward: []string{"127.0.0.1:" + strconv.Itoa(freePort(t, "udp")) + "/udp=evil.example.test:" + uport}})
	proxy := cli.SocksAddr().String()
	p, _ := strconv.Atoi(port)

	c, rep, err := socks5Connect(proxy, "evil.example.test", p)
	if err == nil {
		c.Close()
	}
	if err != nil || rep != byte(socks.ReplyNotAllowed) {
		t.Fatalf("CONNECT to a wildcard name that resolves to loopback: reply %d, %v; want %d", rep, err, socks.ReplyNotAllowed)
	}
	waitLogWithin(t, 2*time.Second, "server", &srvLog, `msg="target refused"`, "evil.example.test", "loopback")

	// The UDP forward's flow is refused the same way: no answer comes back.
	uc, err := net.Dial("udp", cli.ForwardAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.Write([]byte("hello"))
	uc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := uc.Read(make([]byte, 100)); err == nil {
		t.Fatalf("a UDP flow to a wildcard name resolving to loopback got an answer (%d bytes)", n)
	}
	waitLogWithin(t, 2*time.Second, "server", &srvLog, `msg="target refused"`, "kind=udp", "loopback")

	// A UDP association's datagram to that name is dropped, with a WARN.
	ac := socksAssociate(t, proxy)
	pkt, _ := socks.AppendUDPDatagram(nil, socks.Addr{Host: "evil.example.test", Port: uint16(p)}, []byte("hello"))
	ac.Write(pkt)
	waitLogWithin(t, 2*time.Second, "server", &srvLog, `msg="target refused"`, "kind=udp-associate", "loopback")

	// An exact name is the operator's choice: it reaches loopback.
	c, rep, err = socks5Connect(proxy, "exact.example.org", p)
	if err != nil || rep != 0 {
		t.Fatalf("CONNECT to an exactly allowed name: reply %d, %v", rep, err)
	}
	if err := echoThrough(c, []byte("exact names may")); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// hangingDNS is a resolver that never answers.
func hangingDNS() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
}

// A forwarded connection that sends its request and ends its side before
// the server has answered (here: the target's name never resolves) is
// reset when --closewait gives up, not ended cleanly: an empty clean end
// would look like an empty answer.
func TestUnansweredForwardIsReset(t *testing.T) {
	cw := func(c *config.Common) { c.CloseWait = 1 }
	o := pairOpts{transport: config.TransportTCP, target: startEcho(t, "tcp", "127.0.0.1:0"), allow: []string{"slow.example.test:80"}, tweak: cw}
	o.resolver = hangingDNS()
	srv, _ := runServer(t, o)
	var cliLog syncBuffer
	fwd := "127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")) + "=slow.example.test:80"
	cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, remote: srv.Addrs()[0].String(), forward: []string{fwd}, local: "-", tweak: cw, cliLog: &cliLog})
	c, err := net.Dial("tcp", cli.ForwardAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(8 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read %v, want a reset", err)
	}
	waitLogWithin(t, 2*time.Second, "client", &cliLog, "level=WARN", `msg="stream failed"`, "before the server answered")
}

// An ICMP port unreachable pending on a connected UDP socket is returned
// at once (it is what the peek finds), not waited through with a large
// buffer borrowed.
func TestUDPReceiverReportsPendingError(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the length peek is Linux's")
	}
	closed := freePort(t, "udp")
	c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: closed})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("anyone?"))
	time.Sleep(50 * time.Millisecond) // the ICMP answer arrives
	u := newUDPReceiver(c)
	defer u.release()
	done := make(chan error, 1)
	go func() {
		_, _, err := u.read()
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("read: %v, want ECONNREFUSED", err)
		}
	case <-time.After(2 * time.Second):
		c.Close()
		<-done
		t.Fatal("read waited for a datagram instead of reporting the pending error")
	}
	if u.large != nil {
		t.Fatal("a 64 KiB buffer is held after the error")
	}
}

// A UDP association whose client keeps sending to a name that does not
// resolve: after one failed lookup that name's datagrams are dropped at
// once for a while, so datagrams to other destinations behind them still
// get through (without that, each would wait out its own 5 s lookup).
func TestAssociationFailedLookupCached(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out one 5 s lookup")
	}
	u := nettest.UDPEcho(t, "127.0.0.1:0")
	o := pairOpts{transport: config.TransportTCP, target: startEcho(t, "tcp", "127.0.0.1:0"), allow: []string{"*.example.test:53", u}}
	o.resolver = hangingDNS()
	srv, _ := runServer(t, o)
	cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, remote: srv.Addrs()[0].String(), local: "-",
		socks: "127.0.0.1:" + strconv.Itoa(freePort(t, "tcp"))})
	ac := socksAssociate(t, cli.SocksAddr().String())
	start := time.Now()
	dead, _ := socks.AppendUDPDatagram(nil, socks.Addr{Host: "nowhere.example.test", Port: 53}, []byte("q"))
	for range 10 {
		ac.Write(dead)
		time.Sleep(10 * time.Millisecond)
	}
	good, _ := socks.AppendUDPDatagram(nil, socks.AddrFromAddrPort(netip.MustParseAddrPort(u)), []byte("ping"))
	buf := make([]byte, 1000)
	for {
		ac.Write(good)
		ac.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := ac.Read(buf)
		if err == nil {
			if _, data, err := socks.ParseUDPDatagram(buf[:n]); err == nil && string(data) == "echo:ping" {
				break
			}
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("no answer from the good destination %v after the first failed lookup", time.Since(start))
		}
	}
	t.Logf("good destination answered after %v (one lookup of 5 s ahead of it)", time.Since(start).Round(time.Millisecond))
}

// socksAssociate opens a SOCKS5 UDP ASSOCIATE at proxy and returns a UDP
// socket connected to the relay; both close when the test ends.
func socksAssociate(t *testing.T, proxy string) net.Conn {
	t.Helper()
	sc, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	sc.SetDeadline(time.Now().Add(30 * time.Second))
	sc.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	var hdr [5]byte
	if _, err := io.ReadFull(sc, hdr[:]); err != nil || hdr[3] != 0 {
		t.Fatalf("UDP ASSOCIATE: %v %v", hdr, err)
	}
	bound, err := socks.ReadAddr(sc)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := net.Dial("udp", bound.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ac.Close() })
	return ac
}

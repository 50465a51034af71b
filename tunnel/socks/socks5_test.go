package socks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/nettest"
)

// The client side of these tests is written out byte by byte from RFC 1928
// and RFC 1929, independently of the package's encoder.

func dstIPv4(s string, port uint16) []byte {
	ip := netip.MustParseAddr(s).As4()
	return binary.BigEndian.AppendUint16(append([]byte{0x01}, ip[:]...), port)
}

func dstIPv6(s string, port uint16) []byte {
	ip := netip.MustParseAddr(s).As16()
	return binary.BigEndian.AppendUint16(append([]byte{0x04}, ip[:]...), port)
}

func dstName(name string, port uint16) []byte {
	return binary.BigEndian.AppendUint16(append([]byte{0x03, byte(len(name))}, name...), port)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var (
	greetNoAuth   = []byte{5, 1, 0}
	chosenNoAuth  = []byte{5, 0}
	greetUserPass = []byte{5, 1, 2}
	chosenUser    = []byte{5, 2}
	noAcceptable  = []byte{5, 0xFF}
	authOK        = []byte{1, 0}
	authFailed    = []byte{1, 1}
)

func userPass(user, pass string) []byte {
	b := append([]byte{1, byte(len(user))}, user...)
	return append(append(b, byte(len(pass))), pass...)
}

func request(cmd byte, dst []byte) []byte { return append([]byte{5, cmd, 0}, dst...) }

// failReply is a SOCKS5 reply with code and BND 0.0.0.0:0.
func failReply(code byte) []byte { return []byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0} }

// readReply reads a SOCKS5 reply and returns its code and bound address.
func readReply(t *testing.T, r io.Reader) (byte, netip.AddrPort) {
	t.Helper()
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if h[0] != 5 || h[2] != 0 {
		t.Fatalf("reply header %x", h)
	}
	var ip []byte
	switch h[3] {
	case 1:
		ip = make([]byte, 4)
	case 4:
		ip = make([]byte, 16)
	default:
		t.Fatalf("reply ATYP %d", h[3])
	}
	port := make([]byte, 2)
	if _, err := io.ReadFull(r, ip); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if _, err := io.ReadFull(r, port); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	a, _ := netip.AddrFromSlice(ip)
	return h[1], netip.AddrPortFrom(a, binary.BigEndian.Uint16(port))
}

func dialProxy(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	return c.(*net.TCPConn)
}

func listenIPv6(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
}

// TestConnect: CONNECT through the test proxy to an echo server by IPv4,
// IPv6 and name, greeting and request sent separately and in one write;
// the echoed bytes are checked by SHA-256.
func TestConnect(t *testing.T) {
	checkGoroutines(t)
	echo4 := startEcho(t, "127.0.0.1:0")
	port4 := uint16(echo4.ln.Addr().(*net.TCPAddr).Port)
	proxy := startProxy(t, Config{}, nil)

	type tc struct {
		name      string
		dst       func(t *testing.T) []byte
		wantBound netip.Addr
	}
	cases := []tc{
		{"ipv4", func(*testing.T) []byte { return dstIPv4("127.0.0.1", port4) }, netip.MustParseAddr("127.0.0.1")},
		{"ipv6", func(t *testing.T) []byte {
			listenIPv6(t)
			echo6 := startEcho(t, "[::1]:0")
			return dstIPv6("::1", uint16(echo6.ln.Addr().(*net.TCPAddr).Port))
		}, netip.MustParseAddr("::1")},
		{"domain", func(*testing.T) []byte { return dstName("localhost", port4) }, netip.Addr{}},
	}
	for _, c := range cases {
		for _, oneWrite := range []bool{false, true} {
			name := c.name
			if oneWrite {
				name += "/one-write"
			}
			t.Run(name, func(t *testing.T) {
				dst := c.dst(t)
				conn := dialProxy(t, proxy.Addr())
				if oneWrite {
					mustWrite(t, conn, cat(greetNoAuth, request(1, dst)))
					readExactly(t, conn, chosenNoAuth)
				} else {
					mustWrite(t, conn, greetNoAuth)
					readExactly(t, conn, chosenNoAuth)
					mustWrite(t, conn, request(1, dst))
				}
				code, bound := readReply(t, conn)
				if code != 0 {
					t.Fatalf("reply code 0x%02x, want success", code)
				}
				if bound.Port() == 0 || c.wantBound.IsValid() && bound.Addr() != c.wantBound {
					t.Fatalf("bound address %v, want %v and a port", bound, c.wantBound)
				}
				echoRoundTrip(t, conn, randomBytes(t, 256<<10))
			})
		}
	}
}

// TestRequestParsing: what Accept makes of each form of request.
func TestRequestParsing(t *testing.T) {
	checkGoroutines(t)
	cases := []struct {
		name string
		req  []byte
		want Request
	}{
		{"ipv4", request(1, dstIPv4("192.0.2.7", 443)), Request{Cmd: CmdConnect, Dst: Addr{"192.0.2.7", 443}}},
		{"ipv6", request(1, dstIPv6("2001:db8::1", 22)), Request{Cmd: CmdConnect, Dst: Addr{"2001:db8::1", 22}}},
		{"ipv4-mapped", request(1, dstIPv6("::ffff:192.0.2.1", 80)), Request{Cmd: CmdConnect, Dst: Addr{"192.0.2.1", 80}}},
		{"domain", request(1, dstName("example.com", 80)), Request{Cmd: CmdConnect, Dst: Addr{"example.com", 80}}},
		{"domain-255", request(1, dstName(strings.Repeat("a", 255), 80)), Request{Cmd: CmdConnect, Dst: Addr{strings.Repeat("a", 255), 80}}},
		{"domain-is-ip", request(1, dstName("2001:DB8:0::2", 80)), Request{Cmd: CmdConnect, Dst: Addr{"2001:db8::2", 80}}},
		{"udp-unknown-source", request(3, dstIPv4("0.0.0.0", 0)), Request{Cmd: CmdUDPAssociate, Dst: Addr{"0.0.0.0", 0}}},
		{"udp-known-source", request(3, dstIPv6("::1", 5353)), Request{Cmd: CmdUDPAssociate, Dst: Addr{"::1", 5353}}},
		{"rsv-ignored", []byte{5, 1, 0xAA, 1, 10, 0, 0, 1, 0, 80}, Request{Cmd: CmdConnect, Dst: Addr{"10.0.0.1", 80}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, res := acceptPair(t, Config{})
			mustWrite(t, conn, cat(greetNoAuth, c.req))
			readExactly(t, conn, chosenNoAuth)
			r := result(t, res)
			if r.err != nil {
				t.Fatalf("Accept: %v", r.err)
			}
			if r.req.Proto != ProtoSOCKS5 || r.req.Cmd != c.want.Cmd || r.req.Dst != c.want.Dst || r.req.User != "" {
				t.Fatalf("request %v %v %+v user %q, want %v %+v", r.req.Proto, r.req.Cmd, r.req.Dst, r.req.User, c.want.Cmd, c.want.Dst)
			}
			if r.req.Conn() != r.req.conn {
				t.Fatal("Conn is not the accepted connection")
			}
		})
	}
}

// TestReplyEncoding: the bytes Reply writes for each kind of bound address,
// and that a request is answered once.
func TestReplyEncoding(t *testing.T) {
	checkGoroutines(t)
	cases := []struct {
		name  string
		code  Reply
		bound net.Addr
		want  []byte
	}{
		{"nil", ReplySucceeded, nil, []byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"tcp4", ReplySucceeded, &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 0x1234}, []byte{5, 0, 0, 1, 10, 1, 2, 3, 0x12, 0x34}},
		{"udp6", ReplySucceeded, &net.UDPAddr{IP: net.ParseIP("2001:db8::5"), Port: 53},
			cat([]byte{5, 0, 0, 4}, netip.MustParseAddr("2001:db8::5").AsSlice(), []byte{0, 53})},
		{"refused", ReplyConnectionRefused, nil, failReply(5)},
		{"not-allowed", ReplyNotAllowed, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, []byte{5, 2, 0, 1, 127, 0, 0, 1, 0, 1}},
		{"other-addr", ReplySucceeded, fakeAddr("192.0.2.9:8080"), []byte{5, 0, 0, 1, 192, 0, 2, 9, 0x1f, 0x90}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, res := acceptPair(t, Config{})
			mustWrite(t, conn, cat(greetNoAuth, request(1, dstIPv4("127.0.0.1", 9))))
			readExactly(t, conn, chosenNoAuth)
			r := result(t, res)
			if r.err != nil {
				t.Fatalf("Accept: %v", r.err)
			}
			if c.code != ReplySucceeded {
				// A refusal waits for the client's end of stream.
				_ = conn.CloseWrite()
			}
			if err := r.req.Reply(c.code, c.bound); err != nil {
				t.Fatalf("Reply: %v", err)
			}
			readExactly(t, conn, c.want)
			if err := r.req.Reply(c.code, c.bound); !errors.Is(err, ErrReplied) {
				t.Fatalf("second Reply: %v, want ErrReplied", err)
			}
		})
	}
	t.Run("bad-bound", func(t *testing.T) {
		conn, res := acceptPair(t, Config{})
		mustWrite(t, conn, cat(greetNoAuth, request(1, dstIPv4("127.0.0.1", 9))))
		readExactly(t, conn, chosenNoAuth)
		r := result(t, res)
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		if err := r.req.Reply(ReplySucceeded, fakeAddr("not an address")); !errors.Is(err, ErrBadAddress) {
			t.Fatalf("Reply with a bad bound address: %v, want ErrBadAddress", err)
		}
	})
}

type fakeAddr string

func (a fakeAddr) Network() string { return "fake" }
func (a fakeAddr) String() string  { return string(a) }

// TestAuth: RFC 1929 with configured credentials, and method negotiation
// with and without them.
func TestAuth(t *testing.T) {
	checkGoroutines(t)
	creds := Config{Username: "alice", Password: "s3cret"}
	req := request(1, dstIPv4("127.0.0.1", 80))
	cases := []struct {
		name    string
		cfg     Config
		in      []byte
		want    []byte // everything the server sends, if it refuses
		wantErr error  // nil: Accept succeeds
	}{
		{"ok", creds, cat([]byte{5, 2, 0, 2}, userPass("alice", "s3cret"), req), cat(chosenUser, authOK), nil},
		{"ok-password-only", Config{Password: "pw"}, cat(greetUserPass, userPass("", "pw"), req), cat(chosenUser, authOK), nil},
		{"wrong-password", creds, cat(greetUserPass, userPass("alice", "s3creT")), cat(chosenUser, authFailed), ErrAuth},
		{"wrong-user", creds, cat(greetUserPass, userPass("bob", "s3cret")), cat(chosenUser, authFailed), ErrAuth},
		{"empty-fields", creds, cat(greetUserPass, []byte{1, 0, 0}), cat(chosenUser, authFailed), ErrAuth},
		{"no-auth-offered", creds, greetNoAuth, noAcceptable, ErrNoAcceptableMethod},
		{"gssapi-only", creds, []byte{5, 1, 1}, noAcceptable, ErrNoAcceptableMethod},
		{"subnegotiation-version", creds, cat(greetUserPass, []byte{5, 5}, []byte("alice")), cat(chosenUser, authFailed), ErrVersion},
		{"subnegotiation-truncated", creds, cat(greetUserPass, []byte{1, 5, 'a', 'l'}), cat(chosenUser, authFailed), io.ErrUnexpectedEOF},
		{"userpass-without-config", Config{}, greetUserPass, noAcceptable, ErrNoAcceptableMethod},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, res := acceptPair(t, c.cfg)
			mustWrite(t, conn, c.in)
			// Complete or not, the input ends here; a refusal waits for that.
			_ = conn.CloseWrite()
			if c.wantErr == nil {
				readExactly(t, conn, c.want)
				r := result(t, res)
				if r.err != nil {
					t.Fatalf("Accept: %v", r.err)
				}
				if r.req.User != c.cfg.Username {
					t.Fatalf("User %q, want %q", r.req.User, c.cfg.Username)
				}
				return
			}
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("read until the server closes: %v (after %x)", err, got)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("server sent %x, want %x", got, c.want)
			}
			r := result(t, res)
			if !errors.Is(r.err, c.wantErr) {
				t.Fatalf("Accept: %v, want %v", r.err, c.wantErr)
			}
		})
	}
}

// TestMalformed: every malformed greeting or request gets the reply the
// protocol has for it, then the server closes; Accept names the cause.
func TestMalformed(t *testing.T) {
	checkGoroutines(t)
	okReq := func(dst []byte) []byte { return cat(greetNoAuth, request(1, dst)) }
	cases := []struct {
		name    string
		in      []byte
		want    []byte
		wantErr error
	}{
		{"empty", nil, nil, io.EOF},
		{"unknown-version", []byte{6, 1, 0}, nil, ErrVersion},
		{"binary-first-byte", []byte{0x16, 3, 1, 0, 0xa5}, nil, ErrVersion},
		{"socks4", []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, []byte{0, 0x5B, 0, 0, 0, 0, 0, 0}, ErrVersion},
		{"zero-methods", []byte{5, 0}, noAcceptable, ErrNoAcceptableMethod},
		{"truncated-greeting", []byte{5, 3, 0}, nil, io.ErrUnexpectedEOF},
		{"request-version", cat(greetNoAuth, []byte{4, 1, 0}, dstIPv4("127.0.0.1", 80)), cat(chosenNoAuth, failReply(1)), ErrVersion},
		{"bind", cat(greetNoAuth, request(2, dstIPv4("127.0.0.1", 80))), cat(chosenNoAuth, failReply(7)), ErrCommand},
		{"unknown-command", cat(greetNoAuth, request(9, dstIPv4("127.0.0.1", 80))), cat(chosenNoAuth, failReply(7)), ErrCommand},
		{"command-zero", cat(greetNoAuth, request(0, dstIPv4("127.0.0.1", 80))), cat(chosenNoAuth, failReply(7)), ErrCommand},
		{"atyp-2", okReq([]byte{2, 1, 2, 3, 4, 0, 80}), cat(chosenNoAuth, failReply(8)), ErrAddrType},
		{"atyp-0", okReq([]byte{0}), cat(chosenNoAuth, failReply(8)), ErrAddrType},
		{"domain-length-0", okReq([]byte{3, 0, 0, 80}), cat(chosenNoAuth, failReply(1)), ErrBadAddress},
		{"domain-control-char", okReq(dstName("exa\x00mple.com", 80)), cat(chosenNoAuth, failReply(1)), ErrBadAddress},
		{"domain-space", okReq(dstName("a b", 80)), cat(chosenNoAuth, failReply(1)), ErrBadAddress},
		{"domain-zoned-ip", okReq(dstName("fe80::1%eth0", 80)), cat(chosenNoAuth, failReply(1)), ErrBadAddress},
		{"domain-non-ascii", okReq(dstName("b\xc3\xa4r.example", 80)), cat(chosenNoAuth, failReply(1)), ErrBadAddress},
		{"connect-port-0", okReq(dstIPv4("127.0.0.1", 0)), cat(chosenNoAuth, failReply(1)), ErrBadAddress},
		{"truncated-ipv4", okReq([]byte{1, 127, 0}), cat(chosenNoAuth, failReply(1)), io.ErrUnexpectedEOF},
		{"truncated-ipv6", okReq([]byte{4, 0x20, 1, 0xd, 0xb8}), cat(chosenNoAuth, failReply(1)), io.ErrUnexpectedEOF},
		{"truncated-domain", okReq([]byte{3, 11, 'e', 'x', 'a'}), cat(chosenNoAuth, failReply(1)), io.ErrUnexpectedEOF},
		{"truncated-port", okReq([]byte{1, 127, 0, 0, 1, 0}), cat(chosenNoAuth, failReply(1)), io.ErrUnexpectedEOF},
		{"no-atyp", cat(greetNoAuth, []byte{5, 1, 0}), cat(chosenNoAuth, failReply(1)), io.EOF},
		{"truncated-header", cat(greetNoAuth, []byte{5, 1}), cat(chosenNoAuth, failReply(1)), io.ErrUnexpectedEOF},
		{"no-request", greetNoAuth, cat(chosenNoAuth, failReply(1)), io.EOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, res := acceptPair(t, Config{})
			mustWrite(t, conn, c.in)
			// Complete or not, the input ends here; a refusal waits for that.
			_ = conn.CloseWrite()
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("read until the server closes: %v (after %x)", err, got)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("server sent %x, want %x", got, c.want)
			}
			r := result(t, res)
			if !errors.Is(r.err, c.wantErr) {
				t.Fatalf("Accept: %v, want %v", r.err, c.wantErr)
			}
			t.Logf("Accept: %v", r.err)
		})
	}
}

// TestDeadline: a client that stops half way through is answered (where it
// got far enough for a reply) and let go when Config.Timeout runs out.
func TestDeadline(t *testing.T) {
	checkGoroutines(t)
	const timeout = 200 * time.Millisecond
	cases := []struct {
		name string
		in   []byte
		want []byte
	}{
		{"silent", nil, nil},
		{"greeting", []byte{5, 2, 0}, nil},
		{"request", cat(greetNoAuth, []byte{5, 1, 0, 3, 20, 'e'}), cat(chosenNoAuth, failReply(1))},
		{"http-header", []byte("CONNECT example.com:443 HTTP/1.1\r\nHost: exa"), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			conn, res := acceptPair(t, Config{Timeout: timeout})
			mustWrite(t, conn, c.in)
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("read until the server closes: %v", err)
			}
			r := result(t, res)
			if !isTimeout(r.err) {
				t.Fatalf("Accept: %v, want a timeout", r.err)
			}
			if el := time.Since(start); el > timeout+2*lingerMax {
				t.Fatalf("Accept took %v with a %v timeout", el, timeout)
			}
			if c.want != nil && !bytes.Equal(got, c.want) {
				t.Fatalf("server sent %x, want %x", got, c.want)
			}
			if c.name == "http-header" && !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) {
				t.Fatalf("server sent %q, want a 400", got)
			}
		})
	}
}

// TestReplyFor: dial errors map to reply codes.
func TestReplyFor(t *testing.T) {
	checkGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().String()
	ln.Close()
	_, refused := net.DialTimeout("tcp", closedPort, ioTimeout)
	cases := []struct {
		name string
		err  error
		want Reply
	}{
		{"nil", nil, ReplySucceeded},
		{"refused", refused, ReplyConnectionRefused},
		{"dns", &net.DNSError{Err: "no such host", Name: "nowhere.invalid", IsNotFound: true}, ReplyHostUnreachable},
		{"timeout", &net.OpError{Op: "dial", Err: timeoutErr{}}, ReplyHostUnreachable},
		{"other", errors.New("boom"), ReplyGeneralFailure},
	}
	for _, c := range cases {
		if got := ReplyFor(c.err); got != c.want {
			t.Errorf("%s: ReplyFor(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestUDPAssociate: the ASSOCIATE request through the test proxy, then 100
// datagrams to a UDP echo server and back, each with RFC 1928's header;
// closing the TCP connection ends the association.
func TestUDPAssociate(t *testing.T) {
	checkGoroutines(t)
	echoAddr := netip.MustParseAddrPort(nettest.UDPEcho(t, "127.0.0.1:0"))

	client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	clientPort := uint16(client.LocalAddr().(*net.UDPAddr).Port)

	proxy := startProxy(t, Config{}, nil)
	conn := dialProxy(t, proxy.Addr())
	mustWrite(t, conn, cat(greetNoAuth, request(3, dstIPv4("127.0.0.1", clientPort))))
	readExactly(t, conn, chosenNoAuth)
	code, relay := readReply(t, conn)
	if code != 0 || !relay.Addr().IsLoopback() || relay.Port() == 0 {
		t.Fatalf("reply 0x%02x bound %v, want success and a loopback relay", code, relay)
	}

	_ = client.SetDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 2048)
	for i := range 100 {
		data := randomBytes(t, 1+i*10)
		dg := cat([]byte{0, 0, 0}, dstIPv4("127.0.0.1", echoAddr.Port()), data)
		if _, err := client.WriteToUDPAddrPort(dg, relay); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		n, _, err := client.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d back: %v", i, err)
		}
		want := cat([]byte{0, 0, 0}, dstIPv4("127.0.0.1", echoAddr.Port()), []byte("echo:"), data)
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d back: %x, want %x", i, buf[:n], want)
		}
	}
	conn.Close()
	proxy.Close()
}

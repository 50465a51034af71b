package tunnel

import (
	"context"
	"net"
	"syscall"
	"testing"

	"github.com/smuxtun/smuxtun/config"
	"golang.org/x/net/ipv4"
)

// sockopt reads an integer socket option from a packet connection.
func sockopt(t *testing.T, pc net.PacketConn, level, opt int) int {
	t.Helper()
	sc, ok := pc.(syscall.Conn)
	if !ok {
		t.Fatalf("%T has no raw socket", pc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// TestKCPSocketOptions: dscp and sockbuf reach the client's UDP socket.
func TestKCPSocketOptions(t *testing.T) {
	cfg := config.DefaultClient()
	baseCommon(pairOpts{}, &cfg.Common)
	cfg.DSCP = 46
	cfg.SockBuf = 512 << 10
	set, err := newSettings(cfg.Common, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	c, err := set.tr.dial(context.Background(), "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := c.(*pacedConn).kcpSession() // sessions are paced by default
	err = s.Control(func(pc net.PacketConn) error {
		tos, err := ipv4.NewPacketConn(pc).TOS()
		if err != nil {
			return err
		}
		if tos != 46<<2 {
			t.Errorf("TOS = %#x, want dscp 46 (%#x)", tos, 46<<2)
		}
		// Linux doubles the requested size for its bookkeeping.
		if got := sockopt(t, pc, syscall.SOL_SOCKET, syscall.SO_RCVBUF); got < 512<<10 {
			t.Errorf("SO_RCVBUF = %d, want at least %d", got, 512<<10)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSettingsRefuse: settings the tunnel cannot honour fail with an error
// that names them.
func TestSettingsRefuse(t *testing.T) {
	cases := []struct {
		name  string
		tweak func(*config.Common)
		want  error
	}{
		{"transport", func(c *config.Common) { c.Transport = "quic" }, ErrTransport},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := config.DefaultServer()
			baseCommon(pairOpts{tweak: c.tweak}, &cfg.Common)
			_, err := newSettings(cfg.Common, testLogger())
			if err == nil || !errorsIs(err, c.want) {
				t.Fatalf("newSettings: %v, want %v", err, c.want)
			}
		})
	}
}

// TestNewServerPortInUse: a port already taken is an error naming it, and
// no listener of the range is left bound.
func TestNewServerPortInUse(t *testing.T) {
	for _, tr := range []string{config.TransportKCP, config.TransportTCP} {
		t.Run(tr, func(t *testing.T) {
			var busy interface{ Close() error }
			var port int
			if tr == config.TransportKCP {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				busy, port = pc, pc.LocalAddr().(*net.UDPAddr).Port
			} else {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				busy, port = l, l.Addr().(*net.TCPAddr).Port
			}
			defer busy.Close()
			cfg := config.DefaultServer()
			baseCommon(pairOpts{transport: tr}, &cfg.Common)
			// The busy port is the last of a two-port range.
			cfg.Listen = "127.0.0.1:" + itoa(int64(port-1)) + "-" + itoa(int64(port))
			cfg.Target = "127.0.0.1:9"
			if !portFree(tr, port-1) {
				t.Skipf("port %d is taken by someone else", port-1)
			}
			_, err := NewServer(cfg, testLogger())
			if err == nil {
				t.Fatal("NewServer bound a port in use")
			}
			if want := "127.0.0.1:" + itoa(int64(port)); !contains(err.Error(), want) {
				t.Fatalf("error %q does not name %s", err, want)
			}
			if !portFree(tr, port-1) {
				t.Fatalf("port %d of the range was left bound after the failure", port-1)
			}
		})
	}
}

func portFree(transport string, port int) bool {
	addr := "127.0.0.1:" + itoa(int64(port))
	if transport == config.TransportKCP {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		pc.Close()
		return true
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// TestTCPSocketOptions: dscp reaches the TCP transport's socket.
func TestTCPSocketOptions(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	cfg := config.DefaultClient()
	baseCommon(pairOpts{transport: config.TransportTCP}, &cfg.Common)
	cfg.Crypt = "null"
	cfg.DSCP = 46
	set, err := newSettings(cfg.Common, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	c, err := set.tr.dial(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc, ok := c.(*net.TCPConn)
	if !ok {
		t.Fatalf("dial returned %T", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var tos int
	var gerr error
	rc.Control(func(fd uintptr) { tos, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TOS) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	if tos != 46<<2 {
		t.Fatalf("TOS = %#x, want dscp 46 (%#x)", tos, 46<<2)
	}
}

func TestResolveUDP(t *testing.T) {
	cases := []struct{ in, want string }{
		{"127.0.0.1:29900", "127.0.0.1:29900"},
		{"[::1]:29900", "[::1]:29900"},
		{"localhost:29900", "127.0.0.1:29900"},
	}
	for _, c := range cases {
		got, err := resolveUDP(context.Background(), c.in)
		if err != nil || got != c.want {
			t.Errorf("resolveUDP(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := resolveUDP(ctx, "no-such-host.invalid:1"); err == nil {
		t.Error("a cancelled lookup succeeded")
	}
}

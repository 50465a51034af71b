package tunnel

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/smuxtun/smuxtun/crypt"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// handshakeTimeout bounds the client's side of the stream-cipher handshake,
// so that a server that accepts but never answers costs a redial, not a
// stuck pool slot.
const handshakeTimeout = 10 * time.Second

// tcpTransport carries the mux over a single TCP connection, for networks
// that drop UDP. It has no FEC: TCP already retransmits. kcptun has no such
// transport, so it does not use kcptun's per-packet cipher either: unless
// the cipher is "none" or "null", every connection is a crypt.Stream
// (AES-256-GCM keyed from --key) whatever cipher name was chosen.
type tcpTransport struct {
	key       []byte // crypt.DeriveKey of --key; nil sends the mux in clear
	rateLimit int    // outgoing bytes per second per connection, 0 = unlimited
	dscp      int
	log       *slog.Logger
}

func (tcpTransport) name() string { return "tcp" }

func (t tcpTransport) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err // the net package already names the address
	}
	c = t.tune(c)
	if t.key == nil {
		return c, nil
	}
	s := crypt.Client(c, t.key)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := s.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	return s, nil
}

func (t tcpTransport) listen(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err // "listen tcp ADDR: reason" already
	}
	return tcpListener{l, t}, nil
}

// tcpListener sets TCP_NODELAY on every accepted connection and wraps it
// in a crypt.Stream when there is a key. The stream's handshake runs on its
// first read, in the session's goroutine, so a slow client never holds up
// Accept.
type tcpListener struct {
	net.Listener
	t tcpTransport
}

func (l tcpListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c = l.t.tune(c)
	if l.t.key == nil {
		return c, nil
	}
	return crypt.Server(c, l.t.key), nil
}

// tune turns Nagle's algorithm off (the mux already batches frames, and a
// small frame held back by Nagle would stall every stream behind it), marks
// the packets with the DSCP, and paces writes to --ratelimit. The socket
// buffers are left to the kernel's autotuning: --sockbuf sizes KCP's UDP
// socket, and a fixed TCP buffer would only cap the window.
func (t tcpTransport) tune(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	_ = tc.SetNoDelay(true)
	if t.dscp != 0 {
		if err := setTOS(tc, t.dscp<<2); err != nil && t.log != nil {
			t.log.Warn("cannot set dscp", "dscp", t.dscp, "err", err)
		}
	}
	if t.rateLimit > 0 {
		return &rateConn{Conn: tc, l: newRateLimiter(t.rateLimit)}
	}
	return tc
}

// setTOS sets the IPv4 TOS byte, or the IPv6 traffic class, of a socket,
// through golang.org/x/net so that it builds for every release platform.
func setTOS(c *net.TCPConn, tos int) error {
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok && a.IP.To4() == nil {
		return ipv6.NewConn(c).SetTrafficClass(tos)
	}
	return ipv4.NewConn(c).SetTOS(tos)
}

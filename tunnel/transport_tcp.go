package tunnel

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/smuxtun/smuxtun/crypt"
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
	key []byte // crypt.DeriveKey of --key; nil sends the mux in clear
}

func (tcpTransport) name() string { return "tcp" }

func (t tcpTransport) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial tcp %s: %w", addr, err)
	}
	tuneTCP(c)
	if t.key == nil {
		return c, nil
	}
	s := crypt.Client(c, t.key)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := s.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("dial tcp %s: %w", addr, err)
	}
	return s, nil
}

func (t tcpTransport) listen(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return tcpListener{l, t.key}, nil
}

// tcpListener sets TCP_NODELAY on every accepted connection and wraps it
// in a crypt.Stream when there is a key. The stream's handshake runs on its
// first read, in the session's goroutine, so a slow client never holds up
// Accept.
type tcpListener struct {
	net.Listener
	key []byte
}

func (l tcpListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tuneTCP(c)
	if l.key == nil {
		return c, nil
	}
	return crypt.Server(c, l.key), nil
}

// tuneTCP turns Nagle's algorithm off: the mux already batches frames, and a
// small frame held back by Nagle would stall every stream behind it.
func tuneTCP(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
}

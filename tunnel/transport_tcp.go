package tunnel

import (
	"context"
	"fmt"
	"net"
)

// tcpTransport carries the mux over a single TCP connection, for networks
// that drop UDP. It has no FEC and no packet cipher: TCP already retransmits,
// and the --crypt setting applies to KCP packets only.
type tcpTransport struct{}

func (tcpTransport) name() string { return "tcp" }

func (tcpTransport) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial tcp %s: %w", addr, err)
	}
	tuneTCP(c)
	return c, nil
}

func (tcpTransport) listen(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return tcpListener{l}, nil
}

// tcpListener sets TCP_NODELAY on every accepted connection.
type tcpListener struct{ net.Listener }

func (l tcpListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tuneTCP(c)
	return c, nil
}

// tuneTCP turns Nagle's algorithm off: the mux already batches frames, and a
// small frame held back by Nagle would stall every stream behind it.
func tuneTCP(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
}

package tunnel

import (
	"context"
	"net"
)

// transport is how the two ends of a tunnel reach each other: KCP over UDP
// (kcptun's wire format) or one plain TCP connection. Either way each
// connection carries one mux session.
type transport interface {
	// dial opens one connection to the server at addr.
	dial(ctx context.Context, addr string) (net.Conn, error)
	// listen binds addr; Accept returns connections ready for a mux.
	listen(addr string) (net.Listener, error)
	// name is "kcp" or "tcp", for logs.
	name() string
}

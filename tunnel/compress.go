package tunnel

import (
	"net"
	"sync"

	"github.com/golang/snappy"
)

// compConn carries a connection's bytes in the snappy framing format (a
// stream identifier chunk, then chunks with a masked CRC-32C), the encoding
// kcptun puts between its mux and its transport unless --nocomp is given.
//
// Every Write is flushed before it returns: the mux hands over whole frames
// and expects them on the wire, so nothing may sit in the compressor's buffer
// waiting for more. Writes are serialised by a mutex because the snappy
// writer keeps state between calls; the mux already writes from one place at
// a time, so the lock is uncontended. Reads come from the mux's single reader
// and need no lock.
type compConn struct {
	net.Conn
	r *snappy.Reader

	wmu sync.Mutex
	w   *snappy.Writer
}

func newCompConn(c net.Conn) *compConn {
	return &compConn{Conn: c, r: snappy.NewReader(c), w: snappy.NewBufferedWriter(c)}
}

// Read returns decompressed bytes; a corrupt chunk is an error that ends the
// session.
func (c *compConn) Read(p []byte) (int, error) {
	return c.r.Read(p)
}

// SendBudget passes the pacer's answer through to the mux (see
// meteredConn.SendBudget); the budget counts bytes before compression.
func (c *compConn) SendBudget() int {
	if b, ok := c.Conn.(interface{ SendBudget() int }); ok {
		return b.SendBudget()
	}
	return -1
}

// Write compresses p and flushes it to the underlying connection.
func (c *compConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.w.Write(p); err != nil {
		return 0, err
	}
	if err := c.w.Flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

package tunnel

import (
	"net"
	"net/netip"
	"syscall"
)

// Buffers of UDP flows. Most datagrams are small (DNS, QUIC, WireGuard stay
// under the path MTU), but a flow must take one of 65,507 bytes too. A flow
// keeps a small buffer and borrows a large one from datagramPool only for a
// datagram that needs it, so a thousand idle flows hold a few MiB, not
// 64 MiB.

// smallDatagram is the buffer a flow keeps for itself.
const smallDatagram = 2048

// udpReceiver reads datagrams from a socket.
type udpReceiver struct {
	c     *net.UDPConn
	rc    syscall.RawConn
	small []byte
	large *[]byte // borrowed for the last datagram, given back at the next read
}

func newUDPReceiver(c *net.UDPConn) *udpReceiver {
	u := &udpReceiver{c: c, small: make([]byte, smallDatagram)}
	if rc, err := c.SyscallConn(); err == nil {
		u.rc = rc
	}
	return u
}

// read returns the next datagram, valid until the next call, and its
// source. A datagram longer than MaxDatagram comes back as nil data with no
// error, for the caller to drop.
func (u *udpReceiver) read() (data []byte, from netip.AddrPort, err error) {
	u.release()
	size := -1
	if u.rc != nil {
		// The peek reports (and clears) an error pending on the socket,
		// such as an ICMP port unreachable: the caller decides.
		if size, err = peekSize(u.rc); err != nil {
			return nil, from, err
		}
	}
	buf := u.small
	if size < 0 || size > len(buf) {
		u.large = datagramPool.Get().(*[]byte)
		buf = *u.large
	}
	n, from, err := u.c.ReadFromUDPAddrPort(buf)
	if err != nil || size > MaxDatagram || n > MaxDatagram {
		return nil, from, err
	}
	return buf[:n], from, nil
}

// release gives back a borrowed buffer.
func (u *udpReceiver) release() {
	if u.large != nil {
		datagramPool.Put(u.large)
		u.large = nil
	}
}

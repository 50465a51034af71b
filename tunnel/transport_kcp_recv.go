package tunnel

import (
	"encoding/binary"
	"hash/crc32"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// A KCP listener's packets that fail the packet cipher are dropped by
// kcp-go, which only adds one to the process-wide
// kcp.DefaultSnmp.InCsumErrors: the operator of a server whose client has
// the wrong --key or --crypt sees nothing. recvConn is the net.PacketConn
// the listener reads through instead of the bare socket, so that a failed
// packet can be pinned on its source.
//
// kcp-go's listener reads with one goroutine and runs each packet through
// its cipher before it reads the next one, so if InCsumErrors moved between
// two reads, the packet handed out by the first may be the one that failed.
// It may also have been another listener of the process (a port range, a
// second server), so the packet is then checked again, from a copy taken
// before kcp-go decrypted it in place: decrypted and CRC-checked at the
// offsets kcp-go uses, or opened for aes-128-gcm. Only a packet that fails
// that check is blamed, so good clients are never named, and the cost of
// the second check is paid only while something fails.
//
// kcp-go batches its reads with recvmmsg only when it is given a
// *net.UDPConn (and batches the server sessions' writes with sendmmsg the
// same way). recvConn keeps the batched reads: it reads up to recvBatch
// packets with one system call into a ring and hands them out one at a
// time, which also keeps the copy the check needs. The writes of server
// sessions go out one system call per packet.

const (
	// recvBatch is how many packets one system call may read.
	recvBatch = 64
	// maxPacket is kcp-go's receive buffer size (its mtuLimit): larger
	// datagrams are cut there, by kcp-go as by us.
	maxPacket = 1500
	// Offsets of kcp-go's packet header for the CRC ciphers: a 16-byte
	// nonce, then the CRC-32 (IEEE, little endian) of what follows it.
	kcpNonceSize = 16
	kcpCRCSize   = 4
	// kcpMinPlain is the shortest packet kcp-go's listener looks at after
	// the cipher header, and kcpCmdMin..kcpCmdMax are KCP's commands.
	kcpMinPlain          = 12
	kcpCmdMin, kcpCmdMax = 81, 84
	// FEC and out-of-band packets carry one of these at offset 4.
	fecTypeData, fecTypeParity, fecTypeOOB = 0xf1, 0xf2, 0xf3
)

// batchReader reads many datagrams with one system call (recvmmsg on
// Linux); ipv4.PacketConn and ipv6.PacketConn are both one.
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

// aeadOpener is what kcp-go's aes-128-gcm BlockCrypt offers besides the
// BlockCrypt methods, which it does not implement.
type aeadOpener interface {
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
	NonceSize() int
	Overhead() int
}

// recvConn is a UDP socket (or tcpraw's packet connection, for --tcp) as a
// KCP listener reads it; see above. ReadFrom must be called from one
// goroutine at a time (kcp-go's listener has one).
type recvConn struct {
	pc    net.PacketConn
	batch batchReader // nil: one datagram per system call
	msgs  []ipv4.Message
	n     int // msgs[:n] hold the last batch read
	next  int // msgs[next] is the next packet to hand out

	// pass reports whether a packet gets through the listener's cipher;
	// kcp-go drops a packet shorter than minLen without counting it.
	pass   func(pkt []byte) bool
	minLen int
	// cheap: pass costs no more than a look at the header, so it runs on
	// every packet instead of only when kcp-go counted a failure.
	cheap bool
	// bad is called with the source of each packet that failed.
	bad func(from net.Addr)

	last     []byte   // the packet handed out last, as it arrived
	lastFrom net.Addr // and its source
	mark     uint64   // InCsumErrors when it was handed out

	// readerDone is closed when ReadFrom first returns an error. kcp-go's
	// listener stops reading at its first error, and it has finished with
	// every packet handed out before (see kcpListener.Close).
	readerDone chan struct{}
	doneOnce   sync.Once
}

func newRecvConn(pc net.PacketConn, block kcp.BlockCrypt, bad func(from net.Addr)) *recvConn {
	c := &recvConn{pc: pc, bad: bad, msgs: make([]ipv4.Message, recvBatch), readerDone: make(chan struct{})}
	buf := make([]byte, recvBatch*maxPacket)
	for i := range c.msgs {
		c.msgs[i].Buffers = [][]byte{buf[i*maxPacket : (i+1)*maxPacket : (i+1)*maxPacket]}
	}
	// x/net reads batches on Linux only; elsewhere ReadBatch reads one
	// message with recvmsg, which some systems do not have. tcpraw hands
	// out one packet per call whatever it is given.
	if uc, ok := pc.(*net.UDPConn); ok && runtime.GOOS == "linux" {
		if a, ok := uc.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
			c.batch = ipv4.NewPacketConn(uc)
		} else {
			c.batch = ipv6.NewPacketConn(uc)
		}
	}
	c.pass, c.minLen, c.cheap = cipherCheck(block)
	return c
}

// cipherCheck returns a function that reports whether a packet passes
// kcp-go's receive checks for block, without modifying it; the length below
// which kcp-go drops a packet without counting it; and whether the check is
// cheap. The function keeps a buffer between calls: one goroutine at a time.
func cipherCheck(block kcp.BlockCrypt) (pass func([]byte) bool, minLen int, cheap bool) {
	scratch := make([]byte, maxPacket)
	switch b := block.(type) {
	case nil:
		// No cipher: nothing fails in kcp-go, but a packet that is not KCP
		// at all (an encrypting client's) is plain to see.
		return isKCPPacket, kcpMinPlain, true
	case aeadOpener:
		ns := b.NonceSize()
		return func(pkt []byte) bool {
			if len(pkt) < ns+b.Overhead() {
				return false
			}
			cp := append(scratch[:0], pkt...)
			_, err := b.Open(cp[ns:ns], cp[:ns], cp[ns:], nil)
			return err == nil
		}, ns + b.Overhead(), false
	default:
		return func(pkt []byte) bool {
			if len(pkt) < kcpNonceSize+kcpCRCSize {
				return false
			}
			cp := append(scratch[:0], pkt...)
			b.Decrypt(cp, cp)
			body := cp[kcpNonceSize:]
			return crc32.ChecksumIEEE(body[kcpCRCSize:]) == binary.LittleEndian.Uint32(body)
		}, kcpNonceSize + kcpCRCSize, false
	}
}

// isKCPPacket reports whether an unencrypted packet starts like one kcp-go
// sends: a KCP segment (conversation id, then a command) or an FEC or
// out-of-band packet (sequence number, then the type, little endian).
func isKCPPacket(pkt []byte) bool {
	if len(pkt) < kcpMinPlain {
		return false
	}
	switch t := pkt[4]; {
	case t >= kcpCmdMin && t <= kcpCmdMax:
		return true
	case t == fecTypeData || t == fecTypeParity || t == fecTypeOOB:
		return pkt[5] == 0
	}
	return false
}

// ReadFrom hands out the next packet. Before it does, it judges the one
// handed out last, which kcp-go has finished with by now.
func (c *recvConn) ReadFrom(p []byte) (int, net.Addr, error) {
	c.judge()
	if c.next == c.n {
		if err := c.fill(); err != nil {
			c.doneOnce.Do(func() { close(c.readerDone) })
			return 0, nil, err
		}
	}
	m := &c.msgs[c.next]
	c.next++
	pkt := m.Buffers[0][:m.N]
	switch {
	case len(pkt) < c.minLen, c.cheap && !c.pass(pkt):
		c.bad(m.Addr)
	case !c.cheap:
		c.last, c.lastFrom = pkt, m.Addr
		c.mark = atomic.LoadUint64(&kcp.DefaultSnmp.InCsumErrors)
	}
	return copy(p, pkt), m.Addr, nil
}

// judge blames the packet handed out last if kcp-go counted a cipher
// failure since and the packet fails the check on its own.
func (c *recvConn) judge() {
	if c.last == nil {
		return
	}
	pkt := c.last
	c.last = nil
	if atomic.LoadUint64(&kcp.DefaultSnmp.InCsumErrors) != c.mark && !c.pass(pkt) {
		c.bad(c.lastFrom)
	}
}

// fill reads the next batch, one packet at least.
func (c *recvConn) fill() error {
	c.n, c.next = 0, 0
	for c.n == 0 {
		if c.batch != nil {
			n, err := c.batch.ReadBatch(c.msgs, 0)
			if err != nil {
				return err
			}
			c.n = n
			continue
		}
		m := &c.msgs[0]
		n, from, err := c.pc.ReadFrom(m.Buffers[0])
		if err != nil {
			return err
		}
		m.N, m.Addr, c.n = n, from, 1
	}
	return nil
}

func (c *recvConn) WriteTo(p []byte, addr net.Addr) (int, error) { return c.pc.WriteTo(p, addr) }
func (c *recvConn) Close() error                                 { return c.pc.Close() }
func (c *recvConn) LocalAddr() net.Addr                          { return c.pc.LocalAddr() }
func (c *recvConn) SetDeadline(t time.Time) error                { return c.pc.SetDeadline(t) }
func (c *recvConn) SetReadDeadline(t time.Time) error            { return c.pc.SetReadDeadline(t) }
func (c *recvConn) SetWriteDeadline(t time.Time) error           { return c.pc.SetWriteDeadline(t) }

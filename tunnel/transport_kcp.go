package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ErrMTU is returned when kcp-go refuses the configured MTU.
var ErrMTU = errors.New("mtu rejected by kcp")

// kcpTransport carries the mux over kcp-go sessions set up the way kcptun
// sets them up, so that either end can be a kcptun binary: FEC with the
// configured shards, the packet cipher, stream mode on, write delay off, and
// the nodelay profile, window, MTU, ack and rate settings applied to every
// session on both sides.
type kcpTransport struct {
	block       kcp.BlockCrypt // nil for crypt "null"
	dataShard   int
	parityShard int
	noDelay     int
	interval    int
	resend      int
	noCongest   int
	mtu         int
	sndWnd      int
	rcvWnd      int
	ackNoDelay  bool
	dscp        int
	sockBuf     int
	rateLimit   int // bytes per second per session, 0 = unlimited
	log         *slog.Logger
	crypt       string // the cipher's name, for warnings
	// cipherWarn spaces the warnings about packets that fail the cipher,
	// per source host, across all the listeners of a port range.
	cipherWarn *warnLimiter
	// rawTCP is kcptun's --tcp: the client sends its KCP packets as TCP
	// segments through raw sockets (tcpraw), and the server accepts them
	// besides UDP on each port (transport_rawtcp.go).
	rawTCP bool
	// pacing: every session gets a pacer (pacing.go) unless --nopacing;
	// sndCap and rcvCap are the windows the user set (0 = automatic).
	pacing         bool
	sndCap, rcvCap int
}

// session finishes a tuned KCP session for the mux: paced unless the user
// asked for kcptun's behaviour.
func (t *kcpTransport) session(s *kcp.UDPSession) net.Conn {
	if !t.pacing {
		return s
	}
	mtu := t.mtu
	if mtu <= 0 {
		mtu = 1400
	}
	return newPacedConn(s, pacerConfig{
		mss: max(mtu-60, 64), sndCap: t.sndCap, rcvCap: t.rcvCap,
		sndFloor: t.sndWnd, rcvFloor: t.rcvWnd,
		ackDelay: time.Duration(t.interval) * time.Millisecond,
	})
}

func (t *kcpTransport) name() string { return "kcp" }

func (t *kcpTransport) dial(ctx context.Context, addr string) (net.Conn, error) {
	// Dialling UDP sends nothing; only the name lookup can block, so do it
	// here where shutdown can cancel it.
	addr, err := resolveUDP(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial kcp %s: %w", addr, err)
	}
	var s *kcp.UDPSession
	if t.rawTCP {
		s, err = t.dialRaw(ctx, addr)
	} else {
		s, err = kcp.DialWithOptions(addr, t.block, t.dataShard, t.parityShard)
	}
	if err != nil {
		return nil, fmt.Errorf("dial kcp %s: %w", addr, err)
	}
	if err := t.tune(s); err != nil {
		s.Close()
		return nil, err
	}
	// The client owns its UDP socket, so the socket options go on the session.
	if t.dscp != 0 {
		if err := s.SetDSCP(t.dscp); err != nil {
			t.log.Warn("cannot set dscp", "dscp", t.dscp, "err", err)
		}
	}
	if t.sockBuf > 0 {
		if err := s.SetReadBuffer(t.sockBuf); err != nil {
			t.log.Warn("cannot set socket read buffer", "sockbuf", t.sockBuf, "err", err)
		}
		if err := s.SetWriteBuffer(t.sockBuf); err != nil {
			t.log.Warn("cannot set socket write buffer", "sockbuf", t.sockBuf, "err", err)
		}
	}
	return t.session(s), nil
}

func (t *kcpTransport) listen(addr string) (net.Listener, error) {
	if t.rawTCP {
		return t.listenRaw(addr)
	}
	return t.listenUDP(addr)
}

// listenUDP serves KCP on a UDP socket bound to addr.
func (t *kcpTransport) listenUDP(addr string) (*kcpListener, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err // "listen udp ADDR: reason" already
	}
	// Server sessions share the listener's socket, so the socket options go
	// on it.
	if t.dscp != 0 {
		if err := setDSCP(pc, t.dscp); err != nil {
			t.log.Warn("cannot set dscp", "listen", addr, "dscp", t.dscp, "err", err)
		}
	}
	if t.sockBuf > 0 {
		if err := pc.SetReadBuffer(t.sockBuf); err != nil {
			t.log.Warn("cannot set socket read buffer", "listen", addr, "sockbuf", t.sockBuf, "err", err)
		}
		if err := pc.SetWriteBuffer(t.sockBuf); err != nil {
			t.log.Warn("cannot set socket write buffer", "listen", addr, "sockbuf", t.sockBuf, "err", err)
		}
	}
	l, err := t.serve(pc)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	return l, nil
}

// serve runs a KCP listener over pc, read through a recvConn so that
// packets failing the cipher are pinned on their source.
func (t *kcpTransport) serve(pc net.PacketConn) (*kcpListener, error) {
	local := pc.LocalAddr().String()
	rc := newRecvConn(pc, t.block, func(from net.Addr) { t.badPacket(from, local) })
	l, err := kcp.ServeConn(t.block, t.dataShard, t.parityShard, rc)
	if err != nil {
		return nil, err
	}
	return &kcpListener{l: l, t: t, conn: rc}, nil
}

// setDSCP sets the DSCP bits of the packets sent from pc, over IPv4 and
// IPv6 (a dual-stack socket has both); one of them taking it is enough.
func setDSCP(pc *net.UDPConn, dscp int) error {
	err4 := ipv4.NewConn(pc).SetTOS(dscp << 2)
	err6 := ipv6.NewConn(pc).SetTrafficClass(dscp << 2)
	if err4 != nil && err6 != nil {
		return err4
	}
	return nil
}

// badPacket warns about a packet from from that failed the listener's
// cipher: most likely a client with another --key or --crypt, which gets
// no answer and no clue. One line per source host per warnEvery.
func (t *kcpTransport) badPacket(from net.Addr, listen string) {
	msg := "packets failed the cipher check: the client's --key or --crypt differs from this server's"
	if t.block == nil {
		msg = "packets are not KCP: the client's --crypt differs from this server's"
	}
	t.cipherWarn.warn(t.log, hostOf(from.String()), msg, "remote", from.String(), "listen", listen, "crypt", t.crypt)
}

// resolveUDP turns host:port into ip:port, honouring ctx.
func resolveUDP(ctx context.Context, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, err
	}
	if host == "" || net.ParseIP(host) != nil {
		return addr, nil
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return addr, err
	}
	// kcp-go would take the first address too; prefer IPv4 as it does for
	// its socket.
	ip := ips[0].IP
	for _, a := range ips {
		if a.IP.To4() != nil {
			ip = a.IP
			break
		}
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// tune applies the per-session settings. kcptun applies the same ones on
// both sides; the peers never negotiate them.
func (t *kcpTransport) tune(s *kcp.UDPSession) error {
	s.SetStreamMode(true)
	s.SetWriteDelay(false)
	s.SetNoDelay(t.noDelay, t.interval, t.resend, t.noCongest)
	s.SetWindowSize(t.sndWnd, t.rcvWnd)
	if t.mtu > 0 && !s.SetMtu(t.mtu) {
		return fmt.Errorf("mtu %d: %w", t.mtu, ErrMTU)
	}
	s.SetACKNoDelay(t.ackNoDelay)
	if t.rateLimit > 0 {
		s.SetRateLimit(uint32(t.rateLimit))
	}
	return nil
}

// kcpListener hands out tuned KCP sessions.
type kcpListener struct {
	l      *kcp.Listener
	t      *kcpTransport
	conn   *recvConn // the socket, which kcp-go does not close
	closed atomic.Bool
}

func (l *kcpListener) Accept() (net.Conn, error) {
	for {
		s, err := l.l.AcceptKCP()
		if l.closed.Load() {
			if err == nil {
				s.Close()
			}
			return nil, net.ErrClosed
		}
		if err != nil {
			return nil, err
		}
		if err := l.t.tune(s); err != nil {
			// The MTU was checked when the listener was set up, so this
			// cannot repeat for every session; drop the one that failed.
			l.t.log.Warn("dropping kcp session", "remote", s.RemoteAddr().String(), "err", err)
			s.Close()
			continue
		}
		return l.t.session(s), nil
	}
}

// Close stops the listener. kcp-go's Listener.Close leaves running the
// sessions it created for new peers but nobody accepted yet (each holds a
// goroutine), so Close takes them from the accept queue and closes them.
// It first waits for kcp-go's reading goroutine to stop (at the closed
// socket's error): a packet it read just before is turned into a session
// before it reads again, however late the goroutine runs on a loaded
// machine, so after that the queue holds every such session.
func (l *kcpListener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return net.ErrClosed
	}
	err := l.l.Close()
	// Given a connection, kcp-go leaves it open; closing it ends kcp-go's
	// reading goroutine.
	if cerr := l.conn.Close(); err == nil {
		err = cerr
	}
	select {
	case <-l.conn.readerDone:
	case <-time.After(readerStopWait):
	}
	// With the listener closed, AcceptKCP picks at random among its ready
	// cases (a queued session, the closed listener, the read error): a
	// session left in the queue is missed drainMisses times in a row with
	// odds of (2/3)^64, about 5e-12.
	const drainMisses = 64
	for misses := 0; misses < drainMisses; {
		if s, aerr := l.l.AcceptKCP(); aerr == nil {
			s.Close()
			misses = 0
			continue
		}
		misses++
	}
	return err
}

// readerStopWait bounds how long Close waits for kcp-go's reading
// goroutine to see the closed socket.
const readerStopWait = 5 * time.Second

func (l *kcpListener) Addr() net.Addr { return l.l.Addr() }

// lockedCrypt serialises a BlockCrypt whose cipher keeps scratch state
// between calls. kcp-go encrypts on a session's writer goroutine and
// decrypts on the socket reader goroutine with the same BlockCrypt, and the
// SM4 implementation kcp-go uses (github.com/tjfoc/gmsm) keeps its working
// block inside the cipher value, so unguarded it corrupts packets whenever
// both run at once (the race detector shows it; kcptun has the same flaw).
// The bytes on the wire are unchanged.
type lockedCrypt struct {
	mu sync.Mutex
	b  kcp.BlockCrypt
}

func (c *lockedCrypt) Encrypt(dst, src []byte) {
	c.mu.Lock()
	c.b.Encrypt(dst, src)
	c.mu.Unlock()
}

func (c *lockedCrypt) Decrypt(dst, src []byte) {
	c.mu.Lock()
	c.b.Decrypt(dst, src)
	c.mu.Unlock()
}

// statefulCiphers are the cipher names whose BlockCrypt is not safe for
// concurrent use.
var statefulCiphers = map[string]bool{"sm4": true}

// guardCrypt wraps block in a lock if the named cipher needs one.
func guardCrypt(name string, block kcp.BlockCrypt) kcp.BlockCrypt {
	if block == nil || !statefulCiphers[name] {
		return block
	}
	return &lockedCrypt{b: block}
}

package tunnel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/crypt"
	"github.com/smuxtun/smuxtun/mux"
)

// Errors for settings the tunnel refuses.
var (
	// ErrTransport is returned for a transport name other than kcp or tcp.
	ErrTransport = errors.New("unknown transport")
)

// settings is what both ends derive from config.Common.
type settings struct {
	tr        transport
	muxConfig *mux.Config
	noComp    bool
	closeWait time.Duration
	quiet     bool
	// mismatchWarn spaces the warnings about a peer whose --nocomp or
	// --smuxver differs (diagnose.go).
	mismatchWarn *warnLimiter
	// qpp permutes every stream's bytes (--QPP); nil when off.
	qpp *qppLayer
}

// newSettings builds the transport and mux configuration. It works on a copy
// of c, so the caller's struct is left as given.
func newSettings(c config.Common, log *slog.Logger) (*settings, error) {
	if c.TCP {
		// Before anything else: without the privilege nothing can start.
		if err := checkRawTCP(); err != nil {
			return nil, err
		}
		if why := rawTCPRuleProblem(); why != "" {
			log.Warn("--tcp: cannot add tcpraw's iptables rule; the kernel's own packets of the emulated connection leave with TTL 1", "reason", why)
		}
	}
	if err := c.ApplyMode(); err != nil {
		return nil, err
	}
	s := &settings{
		noComp:       c.NoComp,
		closeWait:    time.Duration(c.CloseWait) * time.Second,
		quiet:        c.Quiet,
		mismatchWarn: newWarnLimiter(warnEvery),
	}
	switch c.Transport {
	case "", config.TransportKCP:
		block, err := crypt.New(c.Crypt, c.Key)
		if err != nil {
			return nil, err
		}
		s.tr = &kcpTransport{
			block:       guardCrypt(c.Crypt, block),
			crypt:       c.Crypt,
			dataShard:   c.DataShard,
			parityShard: c.ParityShard,
			noDelay:     c.NoDelay,
			interval:    c.Interval,
			resend:      c.Resend,
			noCongest:   c.NoCongestion,
			mtu:         c.MTU,
			sndWnd:      c.SndWnd,
			rcvWnd:      c.RcvWnd,
			pacing:      !c.NoPacing,
			sndCap:      capIf(c.SndWndSet, c.SndWnd),
			rcvCap:      capIf(c.RcvWndSet, c.RcvWnd),
			ackNoDelay:  c.AckNodelay,
			dscp:        c.DSCP,
			sockBuf:     c.SockBuf,
			rateLimit:   c.RateLimit,
			rawTCP:      c.TCP,
			log:         log,
			cipherWarn:  newWarnLimiter(warnEvery),
		}
	case config.TransportTCP:
		if !crypt.Valid(c.Crypt) {
			_, err := crypt.New(c.Crypt, c.Key) // the same error as on KCP
			return nil, err
		}
		t := tcpTransport{rateLimit: c.RateLimit, dscp: c.DSCP, log: log}
		if crypt.EncryptsStream(c.Crypt) {
			t.key = crypt.DeriveKey(c.Key)
		}
		s.tr = t
	default:
		return nil, fmt.Errorf("transport %q: %w (valid: kcp, tcp)", c.Transport, ErrTransport)
	}

	mc := mux.DefaultConfig()
	mc.Version = c.SmuxVer
	if c.SmuxBuf > 0 {
		mc.MaxReceiveBuffer = c.SmuxBuf
	}
	if c.StreamBuf > 0 {
		mc.MaxStreamBuffer = c.StreamBuf
	}
	if c.FrameSize > 0 {
		mc.MaxFrameSize = c.FrameSize
	}
	mc.MaxStreams = c.MaxStreams
	if c.KeepAlive > 0 {
		mc.KeepAliveInterval = time.Duration(c.KeepAlive) * time.Second
		// As kcptun does: the timeout stays smux's 30 s unless the interval
		// reaches it, so a peer keeping kcptun's 10 s interval never looks dead.
		if mc.KeepAliveInterval >= mc.KeepAliveTimeout {
			mc.KeepAliveTimeout = 3 * mc.KeepAliveInterval
		}
	} else {
		mc.KeepAliveDisabled = true
	}
	if err := mux.VerifyConfig(mc); err != nil {
		return nil, fmt.Errorf("mux settings: %w", err)
	}
	s.muxConfig = mc
	if c.QPP {
		if c.QPPCount < 1 || c.QPPCount > config.MaxQPPCount {
			return nil, fmt.Errorf("QPPCount %d: out of range: must be 1..%d", c.QPPCount, config.MaxQPPCount)
		}
		s.qpp = newQPPLayer(c.Key, c.QPPCount)
	}
	return s, nil
}

// streamConn is what the pipe moves a stream's bytes through: the stream
// itself, or the stream under QPP.
func (s *settings) streamConn(st *mux.Stream) net.Conn {
	if s.qpp == nil {
		return st
	}
	return s.qpp.wrap(st)
}

// capIf is a window the user set, or 0 (automatic).
func capIf(set bool, wnd int) int {
	if set {
		return wnd
	}
	return 0
}

// wrap prepares a transport connection for the mux: a byte meter (the
// client's liveness probe reads it), then snappy framing unless nocomp.
func (s *settings) wrap(c net.Conn) (io.ReadWriteCloser, *meteredConn) {
	m := &meteredConn{Conn: c}
	if pc, ok := c.(*pacedConn); ok {
		pc.p.countReceived(m.read.Load) // one count of the bytes read, not two
	}
	if s.noComp {
		return m, m
	}
	return newCompConn(m), m
}

// inClear reports whether the mux crosses the network unencrypted on the
// TCP transport (crypt none or null), which deserves a warning.
func (s *settings) inClear() bool {
	t, ok := s.tr.(tcpTransport)
	return ok && t.key == nil
}

// streamLevel is the level of per-stream events: Info, or Debug with
// --quiet so that the default handler drops them.
func (s *settings) streamLevel() slog.Level {
	if s.quiet {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// meteredConn counts the bytes read from a transport connection and keeps
// the first of them, to explain a session that fails at once (diagnose.go).
type meteredConn struct {
	net.Conn
	read atomic.Uint64
	head head
}

// SendBudget passes the pacer's answer through to the mux; -1 when the
// connection is not paced.
func (m *meteredConn) SendBudget() int {
	if p, ok := m.Conn.(*pacedConn); ok {
		return p.SendBudget()
	}
	return -1
}

func (m *meteredConn) Read(p []byte) (int, error) {
	n, err := m.Conn.Read(p)
	if n > 0 {
		if off := m.read.Add(uint64(n)) - uint64(n); off < headLen {
			m.head.record(off, p[:n])
		}
	}
	return n, err
}

// addrRange is a host with an inclusive port range (kcptun's host:min-max).
type addrRange struct {
	host     string
	min, max int
}

func parseAddrRange(what, s string) (addrRange, error) {
	// Port 0 (any free port) is fine for a listener; config.ParseAddrRange
	// only knows ranges of real ports.
	if host, port, err := net.SplitHostPort(s); err == nil && port == "0" {
		return addrRange{host: host}, nil
	}
	host, lo, hi, err := config.ParseAddrRange(s)
	if err != nil {
		return addrRange{}, fmt.Errorf("%s %q: %w", what, s, err)
	}
	return addrRange{host: host, min: lo, max: hi}, nil
}

func (a addrRange) addr(port int) string {
	return net.JoinHostPort(a.host, strconv.Itoa(port))
}

// sessionIDs numbers transport sessions for logs.
var sessionIDs atomic.Uint64

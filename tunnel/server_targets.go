package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/mux"
	"github.com/smuxtun/smuxtun/tunnel/socks"
)

// The server's side of client-chosen targets (target.go): marked streams
// name their target, which the allow-list must admit.

// requestTimeout bounds the wait for a marked stream's request (a
// variable for the tests).
var requestTimeout = 10 * time.Second

// maxFlowsPerSession caps the UDP flows one session may have open at the
// server: each holds a socket and about 6 KiB of buffers, plus a 64 KiB one
// while it moves a datagram larger than 2 KiB (a variable for the tests).
var maxFlowsPerSession int32 = 1024

// refusedWarnEvery spaces the WARN lines about one client's refused
// targets and bad requests (a variable for the tests).
var refusedWarnEvery = time.Second

// assocCacheMax bounds the destinations a UDP association remembers (the
// allow-list's verdicts, resolved names, and where it sent to, which are
// the only sources whose answers it passes back).
const assocCacheMax = 256

// buildAllowList compiles --allow plus the server's --target, which is
// always allowed (unless it is a unix socket path).
func buildAllowList(cfg *config.Server) (*config.AllowList, error) {
	patterns := append([]string(nil), cfg.Allow...)
	if targetNetwork(cfg.Target) == "tcp" {
		if _, err := config.ParseAllowList([]string{cfg.Target}); err == nil {
			patterns = append(patterns, cfg.Target)
		}
	}
	return config.ParseAllowList(patterns)
}

// notAllowedError is a dial refused by the allow-list after resolving.
type notAllowedError struct{ reason string }

func (e *notAllowedError) Error() string { return e.reason }

// replyOf returns the status code for a dial error.
func replyOf(err error) socks.Reply {
	if _, ok := errors.AsType[*notAllowedError](err); ok {
		return socks.ReplyNotAllowed
	}
	return socks.ReplyFor(err)
}

// dialTarget connects to dst over network ("tcp" or "udp") if the
// allow-list admits it; a name is checked again on each address it
// resolves to, at the moment it is dialled.
func (s *Server) dialTarget(ctx context.Context, network string, dst socks.Addr) (net.Conn, error) {
	if ok, reason := s.allow.Allowed(dst.Host, dst.Port); !ok {
		return nil, &notAllowedError{reason}
	}
	d := net.Dialer{Timeout: dialTargetTimeout, Resolver: s.resolver}
	if _, err := netip.ParseAddr(dst.Host); err != nil {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			if ok, reason := s.allow.AllowedResolved(dst.Host, dst.Port, ap.Addr()); !ok {
				return &notAllowedError{reason}
			}
			return nil
		}
	}
	c, err := d.DialContext(ctx, network, dst.String())
	if err != nil {
		if na, ok := errors.AsType[*notAllowedError](err); ok {
			return nil, na
		}
		return nil, err
	}
	return c, nil
}

// refuse answers a request with a failure and logs it once per client and
// target per warnEvery.
func (s *Server) refuse(sid uint64, m *mux.Session, st *mux.Stream, kind streamKind, dst socks.Addr, err error) {
	code := replyOf(err)
	msg := err.Error()
	if code != socks.ReplyNotAllowed {
		msg = fmt.Sprintf("%s: %v", dst, err)
	}
	_ = st.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = st.Write(appendStatus(nil, code, msg))
	st.Close()
	stats.streamErrors.Add(1)
	what := "target refused"
	if code != socks.ReplyNotAllowed {
		what = "cannot reach target"
		stats.targetDialFailures.Add(1)
	} else {
		stats.targetsRefused.Add(1)
	}
	target := dst.String()
	if kind == kindAssoc {
		target = "" // each datagram names its own
	}
	remote := remoteOf(m)
	s.refusedWarn.warn(s.log, remote+" "+target, what,
		"session", sid, "stream", st.ID(), "client", remote, "kind", kind.String(), "target", target, "err", msg)
}

// serveMarked serves a stream whose client named its target.
func (s *Server) serveMarked(ctx context.Context, sid uint64, m *mux.Session, st *mux.Stream, flows *atomic.Int32) {
	_ = st.SetReadDeadline(time.Now().Add(requestTimeout))
	kind, dst, err := readRequest(st)
	_ = st.SetReadDeadline(time.Time{})
	if err != nil {
		st.Close()
		stats.streamErrors.Add(1)
		remote := remoteOf(m)
		s.refusedWarn.warn(s.log, remote+" bad request", "bad stream request", "session", sid, "stream", st.ID(), "client", remote, "err", err)
		return
	}
	switch kind {
	case kindTCP:
		target, err := s.dialTarget(ctx, "tcp", dst)
		if err != nil {
			s.refuse(sid, m, st, kind, dst, err)
			return
		}
		if _, err := st.Write(appendStatus(nil, socks.ReplySucceeded, "")); err != nil {
			target.Close()
			st.Close()
			return
		}
		s.pipeStream(ctx, sid, m, st, target, kind)
	case kindUDP, kindAssoc:
		if flows.Add(1) > maxFlowsPerSession {
			flows.Add(-1)
			s.refuse(sid, m, st, kind, dst, fmt.Errorf("too many UDP flows in this session (the most is %d)", maxFlowsPerSession))
			return
		}
		defer flows.Add(-1)
		s.serveUDP(ctx, sid, m, st, kind, dst)
	}
}

// pipeStream carries a stream's bytes to and from its target until both
// are done, and logs the end. kind is 0 for a stream to --target.
func (s *Server) pipeStream(ctx context.Context, sid uint64, m *mux.Session, st *mux.Stream, target net.Conn, kind streamKind) {
	lvl := s.set.streamLevel()
	stats.streamsOpened.Add(1)
	stats.streamsActive.Add(1)
	defer stats.streamsActive.Add(-1)
	args := []any{"session", sid, "stream", st.ID(), "target", target.RemoteAddr().String()}
	if kind != 0 {
		args = append(args, "kind", kind.String())
	}
	s.log.Log(ctx, lvl, "stream opened", args...)
	res := pipe(s.set.streamConn(st), target, s.set.closeWait, ctx.Done(), m.CloseChan())
	args = []any{"session", sid, "stream", st.ID(), "up", res.aToB, "down", res.bToA}
	if res.err != nil {
		lvl = slog.LevelWarn
		args = s.set.qppHint(append(args, "remote", remoteOf(m), "err", res.err), res.err)
	}
	s.log.Log(context.Background(), lvl, "stream closed", args...)
}

// serveUDP relays one UDP flow: kindUDP to its one target through a
// connected socket, kindAssoc to the destination each datagram names
// through an unconnected one. The flow ends when the client closes the
// stream, when it sends a malformed frame, or after --udptimeout without
// a datagram either way.
func (s *Server) serveUDP(ctx context.Context, sid uint64, m *mux.Session, st *mux.Stream, kind streamKind, dst socks.Addr) {
	var (
		conn  *net.UDPConn
		assoc *assocState
	)
	if kind == kindUDP {
		c, err := s.dialTarget(ctx, "udp", dst)
		if err != nil {
			s.refuse(sid, m, st, kind, dst, err)
			return
		}
		conn = c.(*net.UDPConn)
	} else {
		c, err := net.ListenUDP("udp", nil)
		if err != nil {
			s.refuse(sid, m, st, kind, dst, err)
			return
		}
		conn = c
		assoc = &assocState{srv: s, verdict: make(map[socks.Addr]netip.AddrPort), failed: make(map[socks.Addr]time.Time),
			sent: make(map[netip.AddrPort]bool)}
	}
	defer conn.Close()
	if _, err := st.Write(appendStatus(nil, socks.ReplySucceeded, "")); err != nil {
		st.Close()
		return
	}
	defer countUDPFlow()()
	remote := remoteOf(m)
	lvl := s.set.streamLevel()
	s.log.Log(ctx, lvl, "udp flow opened", "session", sid, "stream", st.ID(), "client", remote, "kind", kind.String(), "target", dst.String())

	var last atomic.Int64
	touch := func() { last.Store(time.Now().UnixNano()) }
	touch()
	var up, down atomic.Int64
	stream := s.set.streamConn(st)
	toTarget := func() error {
		r := newDatagramReader(stream, kind == kindAssoc)
		defer r.release()
		for {
			addr, data, err := r.read()
			if err != nil {
				if errors.Is(err, errBadRequest) {
					return err
				}
				return nil
			}
			touch()
			up.Add(int64(len(data)))
			if kind == kindUDP {
				if _, err := conn.Write(data); err != nil && !isTransientUDP(err) {
					return err
				}
				continue
			}
			// An association's datagrams each go their own way: one that is
			// refused, does not resolve or cannot be sent is dropped (and
			// logged), the others carry on.
			to, err := assoc.destination(ctx, sid, remote, addr)
			if err != nil {
				continue
			}
			if _, err := conn.WriteToUDPAddrPort(data, to); err != nil && !isTransientUDP(err) {
				assoc.warn(sid, remote, "udp datagram dropped", addr, err)
			}
		}
	}
	toClient := func() error {
		w := &datagramWriter{w: stream}
		rcv := newUDPReceiver(conn)
		defer rcv.release()
		for {
			data, from, err := rcv.read()
			if err != nil {
				if isTransientUDP(err) {
					continue
				}
				return nil
			}
			if data == nil {
				continue // longer than a flow carries
			}
			var src *socks.Addr
			if assoc != nil {
				if !assoc.sentTo(from) {
					continue // only answers from where the client sent to
				}
				a := socks.AddrFromAddrPort(from)
				src = &a
			}
			touch()
			down.Add(int64(len(data)))
			if err := w.write(src, data); err != nil {
				return nil
			}
		}
	}
	idle := func(now time.Time) bool { return now.Sub(time.Unix(0, last.Load())) >= s.udpTimeout }
	flowErr := relayUntil(ctx, m.CloseChan(), func() { st.Close(); conn.Close() }, idle,
		min(s.udpTimeout/4+time.Millisecond, time.Second), toTarget, toClient)
	args := []any{"session", sid, "stream", st.ID(), "up", up.Load(), "down", down.Load()}
	if flowErr != nil {
		stats.streamErrors.Add(1)
		s.refusedWarn.warn(s.log, remote+" bad request", "udp flow closed", append(args, "client", remote, "err", flowErr)...)
		return
	}
	s.log.Log(context.Background(), lvl, "udp flow closed", args...)
}

// isTransientUDP reports a UDP send or receive error that concerns one
// datagram (an ICMP port unreachable from an earlier one, a full buffer),
// not the socket.
func isTransientUDP(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EMSGSIZE)
}

// assocState is a UDP association's memory of its destinations.
type assocState struct {
	srv     *Server
	mu      sync.Mutex
	verdict map[socks.Addr]netip.AddrPort // admitted destinations, resolved; invalid = refused
	failed  map[socks.Addr]time.Time      // names whose lookup failed, and when
	sent    map[netip.AddrPort]bool
}

// lookupRetry is how long a name whose lookup failed is not looked up
// again: its datagrams are dropped meanwhile, so that a name that does not
// resolve cannot hold up the association's other datagrams one lookup each.
const lookupRetry = 5 * time.Second

// destination returns where a datagram for addr goes, or an error if the
// allow-list refuses it or the name does not resolve (logged, limited).
func (a *assocState) destination(ctx context.Context, sid uint64, remote string, addr socks.Addr) (netip.AddrPort, error) {
	a.mu.Lock()
	to, seen := a.verdict[addr]
	failedAt, failed := a.failed[addr]
	a.mu.Unlock()
	if failed && time.Since(failedAt) < lookupRetry {
		return netip.AddrPort{}, errors.New("the name did not resolve a moment ago")
	}
	if seen {
		if !to.IsValid() {
			return to, errors.New("refused")
		}
		a.markSent(to)
		return to, nil
	}
	to, err := a.resolve(ctx, addr)
	_, refused := errors.AsType[*notAllowedError](err)
	a.mu.Lock()
	if err == nil || refused {
		// Verdicts are kept; a failed lookup is tried again later.
		if len(a.verdict) >= assocCacheMax {
			clear(a.verdict)
		}
		a.verdict[addr] = to
		delete(a.failed, addr)
	} else {
		if len(a.failed) >= assocCacheMax {
			clear(a.failed)
		}
		a.failed[addr] = time.Now()
	}
	a.mu.Unlock()
	if err != nil {
		msg := "target refused"
		if !refused {
			msg = "cannot reach target"
		} else {
			stats.targetsRefused.Add(1)
		}
		a.warn(sid, remote, msg, addr, err)
		return netip.AddrPort{}, err
	}
	a.markSent(to)
	return to, nil
}

// warn logs a datagram of the association that was not sent, at most once
// per second per client and destination.
func (a *assocState) warn(sid uint64, remote, msg string, addr socks.Addr, err error) {
	stats.streamErrors.Add(1)
	a.srv.refusedWarn.warn(a.srv.log, remote+" "+addr.String(), msg,
		"session", sid, "client", remote, "kind", kindAssoc.String(), "target", addr.String(), "err", err.Error())
}

func (a *assocState) resolve(ctx context.Context, addr socks.Addr) (netip.AddrPort, error) {
	allow := a.srv.allow
	if ok, reason := allow.Allowed(addr.Host, addr.Port); !ok {
		return netip.AddrPort{}, &notAllowedError{reason}
	}
	if ap, ok := addr.AddrPort(); ok {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r := a.srv.resolver
	if r == nil {
		r = net.DefaultResolver
	}
	ips, err := r.LookupNetIP(ctx, "ip", addr.Host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var why string
	for _, ip := range ips {
		ok, reason := allow.AllowedResolved(addr.Host, addr.Port, ip)
		if ok {
			return netip.AddrPortFrom(ip.Unmap(), addr.Port), nil
		}
		why = reason
	}
	return netip.AddrPort{}, &notAllowedError{why}
}

func (a *assocState) markSent(to netip.AddrPort) {
	a.mu.Lock()
	if !a.sent[to] {
		if len(a.sent) >= assocCacheMax {
			clear(a.sent)
		}
		a.sent[to] = true
	}
	a.mu.Unlock()
}

func (a *assocState) sentTo(from netip.AddrPort) bool {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sent[from]
}

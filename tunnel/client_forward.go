package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/mux"
	"github.com/smuxtun/smuxtun/tunnel/socks"
)

// The client's side of client-chosen targets (target.go): --forward
// listeners (TCP and UDP) and the --socks server.

const (
	// helloWait is how long after a session starts the client waits for
	// the server to say whether it takes client-chosen targets. A smuxtun
	// server says so in its first frames; kcptun's server never does.
	helloWait = 3 * time.Second
	// statusWait bounds the wait for the server's answer to a request: the
	// server gives up dialling after dialTargetTimeout.
	statusWait = dialTargetTimeout + 5*time.Second
	// maxClientFlows is the most UDP flows (source addresses) one UDP
	// forward keeps; a new source past it replaces the one idle longest.
	maxClientFlows = 1024
	// flowQueue is how many datagrams may wait for a flow's stream, and
	// queueBudget how many bytes all flows of one forward may hold waiting;
	// past either, datagrams are dropped (as a full network queue would).
	flowQueue   = 128
	queueBudget = 8 << 20
)

// ErrNoTargets is returned when a forward or SOCKS connection reaches a
// server that does not take client-chosen targets.
var ErrNoTargets = errors.New("the server does not take client-chosen targets")

// forwardListener is one --forward.
type forwardListener struct {
	f   config.Forward
	dst socks.Addr
	tcp net.Listener
	udp *net.UDPConn

	mu     sync.Mutex
	flows  map[netip.AddrPort]*udpFlow
	queued atomic.Int64 // bytes waiting in all flows' queues
}

// ForwardAddrs returns the bound address of each forward, in order.
func (c *Client) ForwardAddrs() []net.Addr {
	out := make([]net.Addr, len(c.forwards))
	for i, fl := range c.forwards {
		out[i] = fl.addr()
	}
	return out
}

// addr is where the forward listens.
func (fl *forwardListener) addr() net.Addr {
	if fl.udp != nil {
		return fl.udp.LocalAddr()
	}
	return fl.tcp.Addr()
}

// SocksAddr returns the SOCKS listener's address, nil without --socks.
func (c *Client) SocksAddr() net.Addr {
	if c.socksLn == nil {
		return nil
	}
	return c.socksLn.Addr()
}

// listenForwards binds every --forward and --socks.
func (c *Client) listenForwards() error {
	fs, err := config.ParseForwards(c.cfg.Forward)
	if err != nil {
		return err
	}
	for _, f := range fs {
		dst, err := addrOf(f.Target)
		if err != nil {
			return fmt.Errorf("forward %s: %w", f, err)
		}
		fl := &forwardListener{f: f, dst: dst, flows: make(map[netip.AddrPort]*udpFlow)}
		c.forwards = append(c.forwards, fl)
		if f.UDP {
			ua, err := net.ResolveUDPAddr("udp", f.Listen)
			if err == nil {
				fl.udp, err = net.ListenUDP("udp", ua)
			}
			if err != nil {
				return fmt.Errorf("forward %s: %w", f, unwrapOp(err))
			}
		} else if fl.tcp, err = net.Listen("tcp", f.Listen); err != nil {
			return fmt.Errorf("forward %s: %w", f, unwrapOp(err))
		}
	}
	if c.cfg.Socks != "" {
		if c.socksLn, err = net.Listen("tcp", c.cfg.Socks); err != nil {
			return fmt.Errorf("socks %s: %w", c.cfg.Socks, unwrapOp(err))
		}
	}
	return nil
}

// unwrapOp drops a *net.OpError's wrapping, whose message would repeat the
// address the caller names already.
func unwrapOp(err error) error {
	if op, ok := errors.AsType[*net.OpError](err); ok {
		return op.Err
	}
	return err
}

// closeListeners closes every listener of the client.
func (c *Client) closeListeners() {
	if c.ln != nil {
		c.ln.Close()
	}
	for _, fl := range c.forwards {
		if fl.tcp != nil {
			fl.tcp.Close()
		}
		if fl.udp != nil {
			fl.udp.Close()
		}
	}
	if c.socksLn != nil {
		c.socksLn.Close()
	}
}

// wantsTargets reports whether the client has forwards or SOCKS.
func (c *Client) wantsTargets() bool { return len(c.forwards) > 0 || c.socksLn != nil }

// serveForwards starts the accept loops of the forwards and SOCKS.
func (c *Client) serveForwards(ctx context.Context, run func(func() error)) {
	for _, fl := range c.forwards {
		proto := "tcp"
		if fl.f.UDP {
			proto = "udp"
		}
		c.log.Info("forwarding", "listen", fl.addr().String(), "proto", proto, "target", fl.f.Target)
		if fl.udp != nil {
			run(func() error { return c.serveUDPForward(ctx, fl) })
			continue
		}
		run(func() error {
			return c.acceptLoop(ctx, fl.tcp, "forward", func(conn net.Conn) { c.handleForward(ctx, conn, fl) })
		})
	}
	if c.socksLn != nil {
		c.log.Info("serving SOCKS5 and HTTP CONNECT", "listen", c.socksLn.Addr().String(), "auth", c.cfg.SocksUser != "" || c.cfg.SocksPass != "")
		run(func() error {
			return c.acceptLoop(ctx, c.socksLn, "socks", func(conn net.Conn) { c.handleSocks(ctx, conn) })
		})
	}
}

// checkTargets waits for a new session's hello when the client needs
// client-chosen targets, and says at once if the server does not take them.
func (c *Client) checkTargets(ctx context.Context, cs *clientSession) {
	defer c.wg.Done()
	err := c.awaitTargets(ctx, cs)
	if err == nil || ctx.Err() != nil || cs.mux.IsClosed() {
		return
	}
	c.log.Error("forwards and SOCKS will not work", "session", cs.id, "remote", c.cfg.RemoteAddr, "err", err)
	// A slow path or a server still starting may say hello late: say so,
	// since the connections from then on work.
	select {
	case <-cs.mux.PeerHello():
		if cs.mux.PeerAcceptsMarked() {
			c.log.Info("the server answered late and takes forwards and SOCKS after all", "session", cs.id, "remote", c.cfg.RemoteAddr)
		}
	case <-cs.mux.CloseChan():
	case <-ctx.Done():
	}
}

// awaitTargets waits until the session's server has said whether it takes
// client-chosen targets (helloWait after the session started at most).
func (c *Client) awaitTargets(ctx context.Context, cs *clientSession) error {
	if !cs.mux.PeerAcceptsMarked() {
		t := time.NewTimer(max(helloWait-time.Since(cs.born), 0))
		defer t.Stop()
		select {
		case <-cs.mux.PeerHello():
		case <-t.C:
		case <-cs.mux.CloseChan():
			return cs.mux.CloseErr()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if cs.mux.PeerAcceptsMarked() {
		return nil
	}
	select {
	case <-cs.mux.PeerHello():
		return fmt.Errorf("%w: it is a smuxtun-server too old for forwards and SOCKS", ErrNoTargets)
	default:
		return fmt.Errorf("%w: it said nothing within %v of the session's start, as kcptun's server does (or it does not answer); forwards and --socks need smuxtun-server, --localaddr works with both", ErrNoTargets, helloWait)
	}
}

// openTarget opens a marked stream for kind and dst, sends the request and
// waits for the server's answer: on success the stream is ready for the
// connection's bytes or datagrams. A refusal is a *refusedError.
func (c *Client) openTarget(ctx context.Context, kind streamKind, dst socks.Addr) (*clientSession, *mux.Stream, error) {
	return c.openRequest(ctx, kind, dst, true)
}

// openRequest opens a marked stream for kind and dst and sends the request;
// with wait, it also waits for the server's answer (see openTarget), else
// the answer is the first thing the stream reads (statusConn).
func (c *Client) openRequest(ctx context.Context, kind streamKind, dst socks.Addr, wait bool) (*clientSession, *mux.Stream, error) {
	req, err := appendRequest(nil, kind, dst)
	if err != nil {
		return nil, nil, &refusedError{code: socks.ReplyAddrTypeNotSupported, msg: err.Error()}
	}
	var lastErr error
	for range openAttempts {
		cs, err := c.pick(ctx)
		if err != nil {
			return nil, nil, err
		}
		if err := c.awaitTargets(ctx, cs); err != nil {
			if errors.Is(err, ErrNoTargets) {
				return nil, nil, err
			}
			lastErr = err
			continue
		}
		cs.expect(time.Now())
		st, err := cs.mux.OpenMarkedStream()
		if err != nil {
			lastErr = err
			cs.suspectNow()
			continue
		}
		_ = st.SetDeadline(time.Now().Add(statusWait))
		// A caller that gives up (shutdown, an evicted flow) ends the wait.
		stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(time.Now()) })
		if _, err := st.Write(req); err != nil {
			stop()
			st.Close()
			lastErr = err
			continue
		}
		if !wait {
			if !stop() {
				st.Close()
				return nil, nil, ctx.Err()
			}
			_ = st.SetDeadline(time.Time{})
			return cs, st, nil
		}
		err = readAnswer(st)
		if !stop() {
			st.Close()
			return nil, nil, ctx.Err()
		}
		_ = st.SetDeadline(time.Time{})
		if _, refused := err.(*refusedError); refused {
			st.Close()
			return nil, nil, err
		}
		if err != nil {
			st.Close()
			lastErr = err
			continue
		}
		return cs, st, nil
	}
	return nil, nil, lastErr
}

// statusConn is the stream of a forwarded TCP connection whose bytes go up
// before the server has answered the request, which saves a round trip
// before a client-speaks-first protocol (HTTP, TLS) gets its answer. The
// first read takes the answer (within statusWait); until a success arrives
// the connection counts as unanswered, and an unanswered connection that
// ends (refused, closed first, session lost) is reset, never ended cleanly.
type statusConn struct {
	qppStream // the stream, under QPP if on
	raw       *mux.Stream
	once      sync.Once
	err       error // the answer's, read by the reading goroutine only
	answered  atomic.Bool
	refusal   atomic.Pointer[refusedError]
}

func newStatusConn(sc net.Conn, st *mux.Stream) *statusConn {
	_ = st.SetReadDeadline(time.Now().Add(statusWait))
	return &statusConn{qppStream: sc.(qppStream), raw: st}
}

func (s *statusConn) check() error {
	s.once.Do(func() {
		s.err = readAnswer(s.raw)
		if s.err == nil {
			_ = s.raw.SetReadDeadline(time.Time{})
			s.answered.Store(true)
		} else if re, ok := s.err.(*refusedError); ok {
			s.refusal.Store(re)
		}
	})
	return s.err
}

// readAnswer reads the server's status for a request: nil for success, a
// *refusedError when the server refused it (or closed the stream without
// an answer, as it does past --maxstreams), another error when no answer
// came (the session ended, the wait timed out).
func readAnswer(st *mux.Stream) error {
	code, msg, err := readStatus(st)
	switch {
	case err == nil && code == socks.ReplySucceeded:
		return nil
	case err == nil:
		return &refusedError{code: code, msg: msg}
	case errors.Is(err, io.EOF) && !errors.Is(err, mux.ErrSessionClosed):
		return &refusedError{code: socks.ReplyGeneralFailure, msg: "the server closed the stream without an answer"}
	}
	return fmt.Errorf("no answer from the server: %w", err)
}

// unanswered reports whether the server has not (yet) accepted the request.
func (s *statusConn) unanswered() bool { return !s.answered.Load() }

func (s *statusConn) Read(p []byte) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	return s.qppStream.Read(p)
}

func (s *statusConn) WriteTo(w io.Writer) (int64, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	return s.qppStream.WriteTo(w)
}

// replyFor is the SOCKS reply code for an openTarget error.
func replyFor(err error) socks.Reply {
	if re, ok := errors.AsType[*refusedError](err); ok {
		return re.code
	}
	if errors.Is(err, ErrNoTargets) {
		return socks.ReplyNotAllowed
	}
	return socks.ReplyGeneralFailure
}

// warnTarget logs a forward or SOCKS connection that could not be carried,
// at most once per warnEvery per listener and target.
func (c *Client) warnTarget(msg, listen string, dst string, err error, args ...any) {
	stats.streamErrors.Add(1)
	c.targetsWarn.warn(c.log, msg+listen+" "+dst, msg, append(args, "listen", listen, "target", dst, "err", err)...)
}

// resetConn closes a TCP connection with a reset, which tells the
// application at once that nothing was carried.
func resetConn(conn net.Conn) error {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return conn.Close()
}

// handleForward carries one connection of a TCP forward. Its bytes go up
// at once; the server's answer comes first on the way back (statusConn).
func (c *Client) handleForward(ctx context.Context, conn net.Conn, fl *forwardListener) {
	cs, st, err := c.openRequest(ctx, kindTCP, fl.dst, false)
	if err != nil {
		resetConn(conn)
		if ctx.Err() == nil {
			c.warnTarget("forward failed", fl.addr().String(), fl.f.Target, err, "client", conn.RemoteAddr().String())
		}
		return
	}
	sc := newStatusConn(c.set.streamConn(st), st)
	c.carry(ctx, cs, conn, st, sc, sc)
	if re := sc.refusal.Load(); re != nil {
		c.warnTarget("forward failed", fl.addr().String(), fl.f.Target, re, "client", conn.RemoteAddr().String())
	}
}

// handleSocks serves one SOCKS5 or HTTP CONNECT client.
func (c *Client) handleSocks(ctx context.Context, conn net.Conn) {
	req, err := socks.Accept(conn, socks.Config{Username: c.cfg.SocksUser, Password: c.cfg.SocksPass})
	if err != nil {
		conn.Close()
		if ctx.Err() == nil {
			c.warnTarget("socks request refused", c.socksLn.Addr().String(), "", err, "client", conn.RemoteAddr().String())
		}
		return
	}
	switch req.Cmd {
	case socks.CmdConnect:
		cs, st, err := c.openTarget(ctx, kindTCP, req.Dst)
		if err != nil {
			_ = req.Reply(replyFor(err), nil)
			conn.Close()
			if ctx.Err() == nil {
				c.warnTarget("socks connect failed", c.socksLn.Addr().String(), req.Dst.String(), err, "client", conn.RemoteAddr().String())
			}
			return
		}
		if err := req.Reply(socks.ReplySucceeded, nil); err != nil {
			st.Close()
			conn.Close()
			return
		}
		c.serveStream(ctx, cs, req.Conn(), st)
	case socks.CmdUDPAssociate:
		c.socksUDP(ctx, req, conn)
	default:
		_ = req.Reply(socks.ReplyCommandNotSupported, nil)
		conn.Close()
	}
}

// socksUDP serves a UDP ASSOCIATE: a UDP socket on the address the client
// reached us at relays the client's datagrams over one stream, each to the
// destination its header names, until the TCP connection closes.
func (c *Client) socksUDP(ctx context.Context, req *socks.Request, conn net.Conn) {
	defer conn.Close()
	local, _ := netip.ParseAddrPort(conn.LocalAddr().String())
	remote, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Addr(), 0)))
	if err != nil {
		_ = req.Reply(socks.ReplyGeneralFailure, nil)
		c.warnTarget("socks udp associate failed", c.socksLn.Addr().String(), "", err, "client", remote.String())
		return
	}
	defer uc.Close()
	cs, st, err := c.openTarget(ctx, kindAssoc, socks.Addr{})
	if err != nil {
		_ = req.Reply(replyFor(err), nil)
		if ctx.Err() == nil {
			c.warnTarget("socks udp associate failed", c.socksLn.Addr().String(), "", err, "client", remote.String())
		}
		return
	}
	defer st.Close()
	if err := req.Reply(socks.ReplySucceeded, uc.LocalAddr()); err != nil {
		return
	}
	defer countUDPFlow()()
	lvl := c.set.streamLevel()
	c.log.Log(ctx, lvl, "udp association opened", "session", cs.id, "stream", st.ID(), "client", remote.String(), "udp", uc.LocalAddr().String())

	// The client sends from its own address; the port it announced, if
	// any, or else the first one it sends from.
	clientIP := remote.Addr().Unmap()
	var peer atomic.Pointer[netip.AddrPort]
	if req.Dst.Port != 0 {
		p := netip.AddrPortFrom(clientIP, req.Dst.Port)
		peer.Store(&p)
	}
	stream := c.set.streamConn(st)
	var up, down atomic.Int64
	fromApp := func() error {
		w := &datagramWriter{w: stream}
		rcv := newUDPReceiver(uc)
		defer rcv.release()
		for {
			pkt, from, err := rcv.read()
			if err != nil {
				if isTransientUDP(err) {
					continue
				}
				return nil
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			if from.Addr() != clientIP {
				continue // RFC 1928: only the client that asked
			}
			if p := peer.Load(); p == nil {
				peer.Store(&from)
			} else if *p != from {
				continue
			}
			if pkt == nil {
				continue // too long to be a datagram with its header
			}
			dst, data, err := socks.ParseUDPDatagram(pkt)
			if err != nil || len(data) > MaxDatagram {
				continue // no error reply exists for a bad datagram
			}
			up.Add(int64(len(data)))
			if err := w.write(&dst, data); err != nil {
				return nil
			}
		}
	}
	toApp := func() error {
		r := newDatagramReader(stream, true)
		defer r.release()
		out := make([]byte, 0, 512)
		for {
			src, data, err := r.read()
			if err != nil {
				return nil
			}
			p := peer.Load()
			if p == nil {
				continue
			}
			out, err = socks.AppendUDPDatagram(out[:0], src, data)
			if err != nil {
				continue
			}
			down.Add(int64(len(data)))
			_, _ = uc.WriteToUDPAddrPort(out, *p)
			if cap(out) > 4096 {
				out = make([]byte, 0, 512)
			}
		}
	}
	// The association lasts as long as the TCP connection.
	control := func() error {
		_, _ = io.Copy(io.Discard, conn)
		return nil
	}
	_ = relayUntil(ctx, cs.mux.CloseChan(), func() { st.Close(); uc.Close(); conn.Close() }, nil, 0, fromApp, toApp, control)
	c.log.Log(context.Background(), lvl, "udp association closed", "session", cs.id, "stream", st.ID(), "client", remote.String(),
		"up", up.Load(), "down", down.Load())
}

// udpFlow is one source address of a UDP forward, carried by one stream.
type udpFlow struct {
	src  netip.AddrPort
	q    chan []byte
	last atomic.Int64 // UnixNano of the last datagram either way
	// ctx ends when the flow is closed (idle, evicted, its stream ended)
	// or the client stops.
	ctx   context.Context
	close context.CancelFunc
}

// serveUDPForward reads the datagrams of a UDP forward and hands each to
// the flow of its source address, until ctx ends.
func (c *Client) serveUDPForward(ctx context.Context, fl *forwardListener) error {
	c.wg.Add(1)
	go c.expireFlows(ctx, fl)
	buf := make([]byte, MaxDatagram+1)
	for {
		n, src, err := fl.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if isTransientUDP(err) {
				continue
			}
			return fmt.Errorf("forward %s: %w", fl.f, err)
		}
		if n > MaxDatagram {
			continue
		}
		// Under the lock, so that a flow that has left the map (and drained
		// its queue) gets nothing more.
		fl.mu.Lock()
		f := fl.flows[src]
		if f == nil {
			if len(fl.flows) >= maxClientFlows {
				fl.evictOldestLocked()
			}
			f = &udpFlow{src: src, q: make(chan []byte, flowQueue)}
			f.ctx, f.close = context.WithCancel(ctx)
			f.last.Store(time.Now().UnixNano())
			fl.flows[src] = f
			c.wg.Add(1)
			go c.runFlow(ctx, fl, f)
		}
		if fl.queued.Load()+int64(n) <= queueBudget {
			select {
			case f.q <- append([]byte(nil), buf[:n]...):
				fl.queued.Add(int64(n))
			default: // the flow's queue is full: dropped
			}
		}
		fl.mu.Unlock()
	}
}

// evictOldestLocked closes the flow idle longest.
func (fl *forwardListener) evictOldestLocked() {
	var oldest *udpFlow
	for _, f := range fl.flows {
		if oldest == nil || f.last.Load() < oldest.last.Load() {
			oldest = f
		}
	}
	if oldest != nil {
		delete(fl.flows, oldest.src)
		oldest.close()
	}
}

// expireFlows closes the flows of a UDP forward that were idle for
// --udptimeout.
func (c *Client) expireFlows(ctx context.Context, fl *forwardListener) {
	defer c.wg.Done()
	t := time.NewTicker(min(c.udpTimeout/4+time.Millisecond, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return // each flow's context ends with ctx; its runFlow removes it
		case now := <-t.C:
			limit := now.Add(-c.udpTimeout).UnixNano()
			fl.mu.Lock()
			for src, f := range fl.flows {
				if f.last.Load() <= limit {
					delete(fl.flows, src)
					f.close()
				}
			}
			fl.mu.Unlock()
		}
	}
}

// runFlow carries one UDP flow: it opens the flow's stream, sends the
// queued datagrams and returns the answers to the flow's source, until the
// flow is closed (idle, evicted) or its stream ends.
func (c *Client) runFlow(ctx context.Context, fl *forwardListener, f *udpFlow) {
	defer c.wg.Done()
	defer func() {
		fl.mu.Lock()
		if fl.flows[f.src] == f {
			delete(fl.flows, f.src)
		}
		fl.mu.Unlock()
		// Out of the map, the flow gets no more datagrams (they are
		// queued under fl.mu): give back what it still holds.
		f.close()
		for {
			select {
			case d := <-f.q:
				fl.queued.Add(-int64(len(d)))
			default:
				return
			}
		}
	}()
	listen := fl.addr().String()
	// A flow evicted or expired while its stream opens stops waiting.
	cs, st, err := c.openTarget(f.ctx, kindUDP, fl.dst)
	if err != nil {
		if ctx.Err() == nil {
			c.warnTarget("udp forward failed", listen, fl.f.Target, err, "client", f.src.String())
		}
		return
	}
	defer countUDPFlow()()
	lvl := c.set.streamLevel()
	c.log.Log(ctx, lvl, "udp flow opened", "session", cs.id, "stream", st.ID(), "client", f.src.String(), "target", fl.f.Target)
	stream := c.set.streamConn(st)
	var up, down atomic.Int64
	// A write waiting for credit ends with the flow.
	context.AfterFunc(f.ctx, func() { st.Close() })
	readDone := make(chan struct{})
	go func() { // server → application
		defer close(readDone)
		r := newDatagramReader(stream, false)
		defer r.release()
		for {
			_, data, err := r.read()
			if err != nil {
				f.close()
				return
			}
			f.last.Store(time.Now().UnixNano())
			down.Add(int64(len(data)))
			_, _ = fl.udp.WriteToUDPAddrPort(data, f.src)
		}
	}()
	w := &datagramWriter{w: stream}
loop:
	for {
		select {
		case d := <-f.q:
			fl.queued.Add(-int64(len(d)))
			f.last.Store(time.Now().UnixNano())
			up.Add(int64(len(d)))
			if err := w.write(nil, d); err != nil {
				break loop
			}
		case <-f.ctx.Done():
			break loop
		case <-cs.mux.CloseChan():
			break loop
		}
	}
	f.close()
	<-readDone
	c.log.Log(context.Background(), lvl, "udp flow closed", "session", cs.id, "stream", st.ID(), "client", f.src.String(),
		"up", up.Load(), "down", down.Load())
}

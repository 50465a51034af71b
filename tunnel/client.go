package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/mux"
)

const (
	// probeTimeout is how long a kcptun server may stay silent after a
	// stream was opened on its session before the client stops trusting
	// the session (liveness.go). Such a session is retired, not killed: its
	// streams keep running, so a merely slow target costs one extra dial and
	// nothing else.
	probeTimeout = 3 * time.Second
	// checkEvery is how often a session's timers and liveness are looked at.
	checkEvery = 250 * time.Millisecond
	// defaultSessionWait bounds how long a new connection waits for a
	// usable session while the pool is (re)dialling or the sessions it has
	// owe an answer; the connection is then closed, so that nothing hangs.
	defaultSessionWait = 4 * time.Second
	// openAttempts is how many sessions a new connection tries.
	openAttempts = 3
	// Redial back-off: doubling from backoffMin to backoffMax, with jitter.
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
	// stableAfter is how long a session must live before the back-off
	// starts again from backoffMin.
	stableAfter = 10 * time.Second
)

// ErrNoSession is returned to a connection that found no usable session in
// time.
var ErrNoSession = errors.New("no transport session to the server")

// Client accepts local connections and carries each one as a mux stream to
// the server over a pool of transport sessions.
type Client struct {
	cfg    config.Client
	log    *slog.Logger
	set    *settings
	remote addrRange
	ln     net.Listener

	autoExpire  time.Duration // 0 = never
	scavengeTTL time.Duration // < 0 = retired sessions wait for their streams
	sessionWait time.Duration

	slots   []*slot
	rr      atomic.Uint32
	retired chan retiredSession
	wg      sync.WaitGroup
	served  atomic.Bool

	goneWarn *warnLimiter // "server does not answer" and the like

	// forwards and SOCKS (client_forward.go)
	forwards    []*forwardListener
	socksLn     net.Listener
	udpTimeout  time.Duration
	targetsWarn *warnLimiter
}

// NewClient checks cfg, builds the transport and binds the local listener
// (TCP, or a unix socket when LocalAddr contains a '/').
func NewClient(cfg *config.Client, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	set, err := newSettings(cfg.Common, log)
	if err != nil {
		return nil, err
	}
	remote, err := parseAddrRange("remoteaddr", cfg.RemoteAddr)
	if err != nil {
		return nil, err
	}
	n := cfg.Conn
	if n < 1 {
		n = 1
	}
	c := &Client{
		cfg:         *cfg,
		log:         log,
		set:         set,
		remote:      remote,
		autoExpire:  time.Duration(cfg.AutoExpire) * time.Second,
		scavengeTTL: time.Duration(cfg.ScavengeTTL) * time.Second,
		sessionWait: defaultSessionWait,
		slots:       make([]*slot, n),
		retired:     make(chan retiredSession),
		goneWarn:    newWarnLimiter(warnEvery),
		udpTimeout:  time.Duration(cfg.UDPTimeout) * time.Second,
		targetsWarn: newWarnLimiter(warnEvery),
	}
	if c.udpTimeout <= 0 {
		c.udpTimeout = config.DefaultUDPTimeout * time.Second
	}
	for i := range c.slots {
		c.slots[i] = newSlot()
	}
	if local := cfg.LocalListen(); local != "" {
		if c.ln, err = listenLocal(local); err != nil {
			return nil, err
		}
	}
	if err := c.listenForwards(); err != nil {
		c.closeListeners()
		return nil, err
	}
	if set.inClear() {
		log.Warn("transport tcp with crypt none or null: the tunnel is not encrypted", "crypt", cfg.Crypt)
	}
	return c, nil
}

// listenLocal binds addr as TCP, or as a unix socket if it contains a '/'.
// A socket file left behind by a process that died is replaced.
func listenLocal(addr string) (net.Listener, error) {
	network := "tcp"
	if strings.Contains(addr, "/") {
		network = "unix"
	}
	l, err := net.Listen(network, addr)
	if err != nil && network == "unix" && errors.Is(err, syscall.EADDRINUSE) && staleSocket(addr) {
		os.Remove(addr)
		l, err = net.Listen("unix", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("localaddr %s: %w", addr, unwrapOp(err))
	}
	return l, nil
}

// staleSocket reports whether path is a unix socket nobody listens on.
func staleSocket(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return false
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// Addr returns the local listener's address (nil without --localaddr).
func (c *Client) Addr() net.Addr {
	if c.ln == nil {
		return nil
	}
	return c.ln.Addr()
}

// acceptLoop accepts connections on ln and hands each to handle in a
// goroutine of its own, until ctx ends (nil) or ln fails (an error naming
// what, the flag it came from).
func (c *Client) acceptLoop(ctx context.Context, ln net.Listener, what string, handle func(net.Conn)) error {
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("%s %s: %w", what, ln.Addr(), err)
			}
			// Out of file descriptors and the like: back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			c.log.Warn("accept failed", "listen", ln.Addr().String(), "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			continue
		}
		delay = 0
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			handle(conn)
		}()
	}
}

// Serve accepts local connections until ctx is cancelled, then closes the
// listener and every session, waits for every goroutine it started and
// returns nil. It returns an error if the listener fails for another reason.
// Serve may be called once.
func (c *Client) Serve(ctx context.Context) error {
	if !c.served.CompareAndSwap(false, true) {
		return errors.New("tunnel: Client.Serve called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopListeners := context.AfterFunc(ctx, c.closeListeners)
	defer stopListeners()

	local := ""
	if c.ln != nil {
		local = c.ln.Addr().String()
	}
	c.log.Info("client listening", "local", local, "remote", c.cfg.RemoteAddr,
		"transport", c.set.tr.name(), "conn", len(c.slots), "smuxver", c.set.muxConfig.Version, "comp", !c.set.noComp)
	for _, sl := range c.slots {
		c.wg.Add(1)
		go c.keep(ctx, sl)
	}
	c.wg.Add(1)
	go c.scavenge(ctx)

	errc := make(chan error, 1+len(c.forwards)+1)
	var serving sync.WaitGroup
	run := func(f func() error) {
		serving.Add(1)
		go func() {
			defer serving.Done()
			if err := f(); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	if c.ln != nil {
		run(func() error {
			return c.acceptLoop(ctx, c.ln, "localaddr", func(conn net.Conn) { c.handle(ctx, conn) })
		})
	}
	c.serveForwards(ctx, run)
	serving.Wait()
	var serveErr error
	select {
	case serveErr = <-errc:
	default:
	}
	cancel()
	c.closeListeners()
	c.wg.Wait()
	c.log.Info("client stopped")
	return serveErr
}

// handle carries one local connection to the server.
func (c *Client) handle(ctx context.Context, conn net.Conn) {
	var lastErr error
	for range openAttempts {
		cs, err := c.pick(ctx)
		if err != nil {
			lastErr = err
			break
		}
		cs.expect(time.Now())
		st, err := cs.mux.OpenStream()
		if err != nil {
			// The session died under us; its keeper replaces it.
			lastErr = err
			cs.suspectNow()
			continue
		}
		c.serveStream(ctx, cs, conn, st)
		return
	}
	conn.Close()
	if ctx.Err() != nil {
		return // shutting down: not the connection's fault
	}
	stats.streamErrors.Add(1)
	c.log.Warn("cannot open stream", "client", conn.RemoteAddr().String(), "remote", c.cfg.RemoteAddr, "err", lastErr)
}

func (c *Client) serveStream(ctx context.Context, cs *clientSession, conn net.Conn, st *mux.Stream) {
	c.carry(ctx, cs, conn, st, c.set.streamConn(st), nil)
}

// carry pipes a local connection and its stream (sc: st as the pipe sees
// it) and logs the stream. status, for a forward that sent its bytes before
// the server's answer, is that answer: a connection the server never
// accepted is reset, and a refusal is left to the caller to report.
func (c *Client) carry(ctx context.Context, cs *clientSession, conn net.Conn, st *mux.Stream, sc net.Conn, status *statusConn) {
	stats.streamsOpened.Add(1)
	stats.streamsActive.Add(1)
	defer stats.streamsActive.Add(-1)
	lvl := c.set.streamLevel()
	client := conn.RemoteAddr().String()
	c.log.Log(ctx, lvl, "stream opened", "session", cs.id, "stream", st.ID(), "client", client)
	// If the session dies, the application sees its connection reset, not
	// a clean end of stream it could take for a complete reply; so it does
	// when the server did not accept the request.
	local := &resetOnDeath{Conn: conn, died: func() bool {
		return cs.mux.IsClosed() && ctx.Err() == nil || status != nil && status.unanswered()
	}}
	res := pipe(local, sc, c.set.closeWait, ctx.Done(), cs.mux.CloseChan())
	args := []any{"session", cs.id, "stream", st.ID(), "client", client, "remote", cs.mux.RemoteAddr().String(),
		"up", res.aToB, "down", res.bToA}
	switch {
	case status != nil && status.refusal.Load() != nil:
		// reported by the caller
	case local.reset.Load() && cs.mux.IsClosed():
		stats.streamErrors.Add(1)
		c.log.Warn("stream cut: its session ended", append(args, "err", cs.mux.CloseErr())...)
	case local.reset.Load():
		stats.streamErrors.Add(1)
		err := res.err
		if err == nil {
			err = errors.New("closed before the server answered")
		}
		c.log.Warn("stream failed", append(args, "err", err)...)
	case res.err != nil:
		stats.streamErrors.Add(1)
		c.log.Warn("stream failed", append(args, "err", res.err)...)
	default:
		c.log.Log(context.Background(), lvl, "stream closed", args...)
	}
}

// resetOnDeath closes a local connection with a reset instead of a FIN when
// died reports true at the time of closing.
type resetOnDeath struct {
	net.Conn
	died  func() bool
	reset atomic.Bool
}

func (r *resetOnDeath) Close() error {
	if r.died() {
		r.reset.Store(true)
		return resetConn(r.Conn)
	}
	return r.Conn.Close()
}

func (r *resetOnDeath) CloseWrite() error {
	// The stream reads as ended when its session dies: that is no end of
	// the reply, so the application must not see one.
	if r.died() {
		return r.Close()
	}
	if cw, ok := r.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return r.Conn.Close()
}

// pick returns a live session, round-robin over the pool, waiting up to
// sessionWait while every slot is dialling or holds a session that owes an
// answer (liveness.go). A connection that waits has sent nothing anywhere:
// its bytes stay in the local socket until a session is usable.
func (c *Client) pick(ctx context.Context) (*clientSession, error) {
	n := uint32(len(c.slots))
	start := c.rr.Add(1)
	scan := func() *clientSession {
		now := time.Now()
		for i := range n {
			if cs := c.slots[(start+i)%n].get(); cs != nil && !cs.held(now) {
				return cs
			}
		}
		return nil
	}
	if cs := scan(); cs != nil {
		return cs, nil
	}
	// Wait for this connection's slot to publish a session, and look at
	// all of them now and then in case one is usable first.
	deadline := time.NewTimer(c.sessionWait)
	defer deadline.Stop()
	rescan := time.NewTicker(25 * time.Millisecond)
	defer rescan.Stop()
	sl := c.slots[start%n]
	for {
		_, ready := sl.wait()
		if ready == nil {
			ready = neverReady
		}
		select {
		case <-ready:
			if cs := scan(); cs != nil {
				return cs, nil
			}
		case <-rescan.C:
			if cs := scan(); cs != nil {
				return cs, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, fmt.Errorf("after %v: %w", c.sessionWait, ErrNoSession)
		}
	}
}

// neverReady is a channel that is never closed.
var neverReady = make(chan struct{})

// keep owns one pool slot: it dials a session, publishes it, watches it and
// replaces it when it dies, expires or falls under suspicion, until ctx ends.
func (c *Client) keep(ctx context.Context, sl *slot) {
	defer c.wg.Done()
	b := backoff{}
	for {
		cs, err := c.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			stats.sessionErrors.Add(1)
			d := b.next()
			c.log.Warn("cannot reach server", "remote", c.cfg.RemoteAddr, "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleepCtx(ctx, d) {
				return
			}
			continue
		}
		sl.publish(cs)
		if c.wantsTargets() {
			c.wg.Add(1)
			go c.checkTargets(ctx, cs)
		}
		why := c.watch(ctx, cs)
		sl.unpublish(cs)
		if time.Since(cs.born) >= stableAfter {
			b.reset()
		}
		switch why {
		case endShutdown:
			cs.close()
			return
		case endClosed:
			cs.close()
			stats.sessionsLost.Add(1)
			remote := cs.mux.RemoteAddr().String()
			// A setting that differs from the server's shows in the first bytes
			// the session read (diagnose.go).
			if !c.set.reportMismatch(c.log, "session lost, redialling", remote, cs.meter, cs.mux.CloseErr(), "session", cs.id, "remote", remote) {
				c.log.Warn("session lost, redialling", "session", cs.id, "remote", remote)
			}
			if !sleepCtx(ctx, b.next()) {
				return
			}
		case endExpired:
			c.log.Info("session expired, replacing it", "session", cs.id)
			c.retire(ctx, cs, true)
		case endSuspect:
			c.log.Warn("session silent after a new stream, replacing it", "session", cs.id,
				"remote", cs.mux.RemoteAddr().String(), "silent_for", probeTimeout)
			c.retire(ctx, cs, false)
		case endDead, endUnheard:
			n := cs.mux.NumStreams()
			cs.mux.CloseWithError(errPeerGone(why))
			cs.close()
			stats.sessionsLost.Add(1)
			c.reportGone(cs, why, n)
			if !sleepCtx(ctx, b.next()) {
				return
			}
		}
	}
}

// dial opens one transport session to a random port of the remote range.
func (c *Client) dial(ctx context.Context) (*clientSession, error) {
	port := c.remote.min
	if c.remote.max > c.remote.min {
		port += rand.IntN(c.remote.max - c.remote.min + 1)
	}
	addr := c.remote.addr(port)
	conn, err := c.set.tr.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	rwc, meter := c.set.wrap(conn)
	m, err := mux.Client(rwc, c.set.muxConfig)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("mux session to %s: %w", addr, err)
	}
	cs := &clientSession{id: sessionIDs.Add(1), mux: m, meter: meter, born: time.Now(), liveness: newLiveness(m, meter, conn)}
	stats.sessionsOpened.Add(1)
	stats.sessionsActive.Add(1)
	c.log.Info("session opened", "session", cs.id, "transport", c.set.tr.name(),
		"local", conn.LocalAddr().String(), "remote", addr)
	return cs, nil
}

// watch blocks until the session should leave its slot.
func (c *Client) watch(ctx context.Context, cs *clientSession) endReason {
	var expire <-chan time.Time
	if c.autoExpire > 0 {
		t := time.NewTimer(c.autoExpire)
		defer t.Stop()
		expire = t.C
	}
	tick := time.NewTicker(checkEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return endShutdown
		case <-cs.mux.CloseChan():
			return endClosed
		case <-expire:
			return endExpired
		case now := <-tick.C:
			switch cs.check(now, probeTimeout) {
			case verdictSilent:
				return endSuspect
			case verdictDead:
				return endDead
			case verdictUnheard:
				return endUnheard
			}
		}
	}
}

// retiredSession is a session that takes no new streams and is closed once
// its streams are done (or, for an expired one, after scavengettl).
type retiredSession struct {
	cs      *clientSession
	since   time.Time
	expired bool
}

func (c *Client) retire(ctx context.Context, cs *clientSession, expired bool) {
	select {
	case c.retired <- retiredSession{cs: cs, since: time.Now(), expired: expired}:
	case <-ctx.Done():
		cs.close()
	}
}

// scavenge closes retired sessions: at once when they have no stream left
// or are already dead; expired ones also when scavengettl has passed (a
// negative scavengettl lets them wait for their last stream, as in kcptun).
func (c *Client) scavenge(ctx context.Context) {
	defer c.wg.Done()
	var list []retiredSession
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, r := range list {
				r.cs.close()
			}
			return
		case r := <-c.retired:
			list = append(list, r)
		case now := <-tick.C:
			kept := list[:0]
			for _, r := range list {
				switch {
				case r.cs.mux.IsClosed() || r.cs.mux.NumStreams() == 0:
					r.cs.close()
				case r.expired && c.scavengeTTL >= 0 && now.Sub(r.since) >= c.scavengeTTL:
					c.log.Info("retired session reached scavengettl", "session", r.cs.id, "streams", r.cs.mux.NumStreams())
					r.cs.close()
				default:
					kept = append(kept, r)
				}
			}
			clear(list[len(kept):])
			list = kept
		}
	}
}

package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/mux"
)

// dialTargetTimeout bounds one connection attempt to the target.
const dialTargetTimeout = 10 * time.Second

// Server accepts transport sessions on every port of its listen range,
// accepts their streams and connects each stream to the target.
type Server struct {
	cfg       config.Server
	log       *slog.Logger
	set       *settings
	listeners []net.Listener
	targetNet string // "tcp" or "unix"

	allow       *config.AllowList // targets clients may choose (server_targets.go)
	udpTimeout  time.Duration
	refusedWarn *warnLimiter
	resolver    *net.Resolver // nil = the system's; tests set their own

	wg     sync.WaitGroup
	served atomic.Bool
}

// NewServer checks cfg, builds the transport and binds one listener per
// port of Listen ("host:port" or "host:min-max"). If any port cannot be
// bound, the ones already bound are released and the error names the
// address.
func NewServer(cfg *config.Server, log *slog.Logger) (*Server, error) {
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
	r, err := parseAddrRange("listen", cfg.Listen)
	if err != nil {
		return nil, err
	}
	allow, err := buildAllowList(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:         *cfg,
		log:         log,
		set:         set,
		targetNet:   targetNetwork(cfg.Target),
		allow:       allow,
		udpTimeout:  time.Duration(cfg.UDPTimeout) * time.Second,
		refusedWarn: newWarnLimiter(refusedWarnEvery),
	}
	if s.udpTimeout <= 0 {
		s.udpTimeout = config.DefaultUDPTimeout * time.Second
	}
	// Streams whose client names the target (forwards, SOCKS): the server
	// says it takes them; the allow-list decides.
	mc := *set.muxConfig
	mc.AcceptMarked = true
	set.muxConfig = &mc
	for p := r.min; p <= r.max; p++ {
		l, err := set.tr.listen(r.addr(p))
		if err != nil {
			for _, l := range s.listeners {
				l.Close()
			}
			return nil, err
		}
		s.listeners = append(s.listeners, l)
	}
	if set.inClear() {
		log.Warn("transport tcp with crypt none or null: the tunnel is not encrypted", "crypt", cfg.Crypt)
	}
	return s, nil
}

// targetNetwork tells a unix socket path from a TCP host:port the way
// kcptun does: whatever does not split as host:port is a path.
func targetNetwork(target string) string {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return "unix"
	}
	return "tcp"
}

// Addrs returns the bound addresses, one per port of the listen range.
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Serve accepts sessions until ctx is cancelled, then closes the listeners
// and every session, waits for every goroutine it started and returns nil.
// It returns an error if a listener fails for another reason (after the same
// clean-up). Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.served.CompareAndSwap(false, true) {
		return errors.New("tunnel: Server.Serve called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, s.closeListeners)
	defer stop()

	addrs := make([]string, len(s.listeners))
	for i, l := range s.listeners {
		addrs[i] = l.Addr().String()
	}
	s.log.Info("server listening", "listen", addrs, "target", s.cfg.Target, "transport", s.set.tr.name(),
		"smuxver", s.set.muxConfig.Version, "comp", !s.set.noComp)
	if len(s.cfg.Allow) > 0 {
		s.log.Info("clients may also choose these targets", "allow", s.cfg.Allow)
	}

	errc := make(chan error, len(s.listeners))
	var accepting sync.WaitGroup
	for _, l := range s.listeners {
		accepting.Add(1)
		go func() {
			defer accepting.Done()
			if err := s.acceptLoop(ctx, l); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	accepting.Wait()
	cancel()
	s.closeListeners()
	s.wg.Wait()
	s.log.Info("server stopped")
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// closeListeners closes every listener, all at once: closing a KCP
// listener takes a few milliseconds, which adds up over a wide port range.
func (s *Server) closeListeners() {
	var wg sync.WaitGroup
	for _, l := range s.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Close()
		}()
	}
	wg.Wait()
}

func (s *Server) acceptLoop(ctx context.Context, l net.Listener) error {
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("listen %s: %w", l.Addr(), err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "listen", l.Addr().String(), "err", err, "retry_in", delay)
			if !sleepCtx(ctx, delay) {
				return nil
			}
			continue
		}
		delay = 0
		s.wg.Add(1)
		go s.serveSession(ctx, conn)
	}
}

// serveSession runs one transport session: it accepts streams until the
// session ends or ctx is cancelled.
func (s *Server) serveSession(ctx context.Context, conn net.Conn) {
	defer s.wg.Done()
	id := sessionIDs.Add(1)
	rwc, meter := s.set.wrap(conn)
	m, err := mux.Server(rwc, s.set.muxConfig)
	if err != nil {
		conn.Close()
		stats.sessionErrors.Add(1)
		s.log.Warn("cannot start mux session", "session", id, "remote", conn.RemoteAddr().String(), "err", err)
		return
	}
	stats.sessionsOpened.Add(1)
	stats.sessionsActive.Add(1)
	s.log.Info("session opened", "session", id, "transport", s.set.tr.name(),
		"local", conn.LocalAddr().String(), "remote", conn.RemoteAddr().String())
	stop := context.AfterFunc(ctx, func() { m.Close() })
	defer func() {
		stop()
		m.Close()
		stats.sessionsActive.Add(-1)
	}()
	go reportRefused(m, s.log, id, conn.RemoteAddr().String(), s.set.muxConfig.MaxStreams)
	go watchClient(newLiveness(m, meter, conn), s.log, id, conn.RemoteAddr().String())
	var flows atomic.Int32 // UDP flows open in this session
	for {
		st, err := m.AcceptStream()
		if err != nil {
			if ctx.Err() == nil {
				s.sessionEnded(id, conn.RemoteAddr().String(), meter, err)
			}
			return
		}
		s.wg.Add(1)
		if st.Marked() {
			go func() {
				defer s.wg.Done()
				s.serveMarked(ctx, id, m, st, &flows)
			}()
			continue
		}
		go s.serveStream(ctx, id, m, st)
	}
}

// sessionEnded logs the end of a session that was not shut down by us: at
// Warn with the setting that differs if the peer's first bytes name one
// (diagnose.go), at Info if it ended the way sessions end, at Warn if it
// failed.
func (s *Server) sessionEnded(id uint64, remote string, meter *meteredConn, err error) {
	if s.set.reportMismatch(s.log, "session failed", remote, meter, err, "session", id, "remote", remote) {
		return
	}
	lvl := slog.LevelWarn
	// A client that stopped answering was reported at Warn already
	// (watchClient).
	if cleanEnd(err) || errors.Is(err, errStoppedAnswering) {
		lvl = slog.LevelInfo
	}
	s.log.Log(context.Background(), lvl, "session closed", "session", id, "remote", remote, "err", err)
}

// cleanEnd reports whether a session ended the way sessions end: the peer
// closed the connection (TCP), or went quiet for the keepalive timeout (KCP
// has no close, so that is how every KCP session ends once its client has
// gone).
func cleanEnd(err error) bool {
	var t interface{ Timeout() bool }
	return errors.Is(err, io.EOF) || (errors.As(err, &t) && t.Timeout())
}

// serveStream connects one stream to the target and pipes between them.
func (s *Server) serveStream(ctx context.Context, sid uint64, m *mux.Session, st *mux.Stream) {
	defer s.wg.Done()
	d := net.Dialer{Timeout: dialTargetTimeout}
	target, err := d.DialContext(ctx, s.targetNet, s.cfg.Target)
	if err != nil {
		st.Close()
		stats.streamErrors.Add(1)
		stats.targetDialFailures.Add(1)
		s.log.Warn("cannot reach target", "session", sid, "stream", st.ID(), "remote", remoteOf(m), "target", s.cfg.Target, "err", err)
		return
	}
	s.pipeStream(ctx, sid, m, st, target, 0)
}

// remoteOf is the peer address of a session, for logs.
func remoteOf(m *mux.Session) string {
	if a := m.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// refusedReportInterval spaces the warnings about streams refused past
// --maxstreams, so that a peer opening streams in a loop cannot flood the log.
var refusedReportInterval = 10 * time.Second

// reportRefused logs, at most once per interval, how many streams the peer
// opened past the session's cap, until the session closes.
func reportRefused(m *mux.Session, log *slog.Logger, sid uint64, remote string, limit int) {
	if limit <= 0 {
		return
	}
	t := time.NewTicker(refusedReportInterval)
	defer t.Stop()
	var seen uint64
	for {
		select {
		case <-m.CloseChan():
			return
		case <-t.C:
		}
		if n := m.RefusedStreams(); n > seen {
			log.Warn("streams refused: the peer has --maxstreams open already", "session", sid, "remote", remote,
				"refused", n-seen, "maxstreams", limit)
			seen = n
		}
	}
}

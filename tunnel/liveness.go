package tunnel

import (
	"errors"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/smuxtun/smuxtun/mux"
	kcp "github.com/xtaci/kcp-go/v5"
)

// How a session finds out that its peer is gone.
//
// Over KCP nothing says so: a server that restarted never heard of the
// client's session, and a dead one says nothing at all. What the tunnel can
// see is whether bytes arrive when some should. Some should when a stream was
// just opened (a smuxtun peer is pinged at the same time, and answers within
// a round trip) and when data stopped flowing while streams are open (a
// smuxtun peer is pinged then too, after one second, then at growing
// intervals while the streams stay idle). If nothing at all arrives for
// deadAfter after that, the peer is gone: the session is closed at once and
// its streams end with an error, instead of waiting for the keepalive
// timeout (30 s or more).
//
// A kcptun peer cannot be pinged, and may legitimately stay silent for its
// 10 s keepalive interval while a slow target thinks. For it, silence after
// a new stream only retires the session (it takes no new streams, its
// streams keep running), unless its KCP layer never acknowledged a single
// packet: then nothing ever reached a process with our key, and the session
// is closed like a dead one.
const (
	// deadAfter is how long an expected answer may be missing before the
	// peer counts as gone.
	deadAfter = 2500 * time.Millisecond
	// deadMax bounds how far a slow path's retransmission timeout may push
	// the verdict back.
	deadMax = 10 * time.Second
	// firstPingGap is how long data may stop flowing on a session with open
	// streams before a smuxtun peer is pinged; the gap doubles while the
	// session stays idle, up to maxPingGap.
	firstPingGap = time.Second
	maxPingGap   = 8 * time.Second
	// holdMin and holdMax bound how long a new stream may wait for an
	// expected answer before new connections stop being put on the session
	// and wait for the verdict instead (2 RTO between the bounds).
	holdMin = 300 * time.Millisecond
	holdMax = time.Second
)

// verdict is what a liveness check concluded.
type verdict int

const (
	verdictAlive   verdict = iota
	verdictSilent          // a plain smux peer stayed silent after a new stream
	verdictDead            // a smuxtun peer stopped answering
	verdictUnheard         // the transport never heard the peer acknowledge anything
)

// liveness watches one session for a peer that has gone away.
type liveness struct {
	m     *mux.Session
	meter *meteredConn
	kcp   *kcp.UDPSession // nil on the TCP transport

	mu         sync.Mutex
	probeSince time.Time // zero: no answer expected
	probeMark  uint64    // transport bytes read when the probe started
	suspected  bool
	gap        time.Duration // current idle ping interval
	nextPing   time.Time     // zero until data has been seen or a ping sent
}

func newLiveness(m *mux.Session, meter *meteredConn, conn any) *liveness {
	l := &liveness{m: m, meter: meter, gap: firstPingGap}
	l.kcp, _ = conn.(*kcp.UDPSession)
	if pc, ok := conn.(interface{ kcpSession() *kcp.UDPSession }); ok {
		l.kcp = pc.kcpSession()
	}
	return l
}

// kcpInitialRTO is kcp-go's retransmission timeout before the first
// acknowledgement (IKCP_RTO_DEF).
const kcpInitialRTO = 200

// acked reports whether the transport has proof that the peer decrypted our
// packets: any KCP acknowledgement sets the smoothed RTT, or at least moves
// the retransmission timeout off its initial value (on loopback the RTT
// rounds to 0 ms). A TCP session was authenticated when it was dialled.
func (l *liveness) acked() bool {
	if l.kcp == nil {
		return true
	}
	return l.kcp.GetSRTT() > 0 || l.kcp.GetRTO() != kcpInitialRTO
}

// expect notes that an answer is due (a stream was just opened): the probe
// runs from the oldest expectation since the session last heard from the
// peer, so that a stream of new connections to a dead server cannot keep
// pushing the verdict back. A smuxtun peer is pinged, so that the answer
// comes within a round trip even if the target is slow.
func (l *liveness) expect(now time.Time) {
	l.mu.Lock()
	started := l.startLocked(now)
	l.mu.Unlock()
	if started {
		l.m.Ping()
	}
}

// startLocked starts a probe unless one is pending since the last byte read.
func (l *liveness) startLocked(now time.Time) bool {
	cur := l.meter.read.Load()
	if !l.probeSince.IsZero() && cur == l.probeMark {
		return false
	}
	l.probeSince = now
	l.probeMark = cur
	return true
}

// waitingLocked returns how long an expected answer has been missing (0 if
// none is expected), clearing the probe if bytes arrived since.
func (l *liveness) waitingLocked(now time.Time) time.Duration {
	if l.probeSince.IsZero() {
		return 0
	}
	if l.meter.read.Load() != l.probeMark {
		l.probeSince = time.Time{}
		return 0
	}
	return now.Sub(l.probeSince)
}

// held reports whether new streams should wait for this session's verdict
// rather than be opened on it: an answer is overdue from a peer that would
// have given one (a smuxtun peer, or one whose KCP never acknowledged).
func (l *liveness) held(now time.Time) bool {
	l.mu.Lock()
	w := l.waitingLocked(now)
	suspected := l.suspected
	l.mu.Unlock()
	if suspected {
		return true
	}
	if w == 0 || w < l.holdAfter() {
		return false
	}
	return l.m.PeerAnswersPing() || !l.acked()
}

// holdAfter is how long an answer may take before new streams are held:
// twice the retransmission timeout, between holdMin and holdMax.
func (l *liveness) holdAfter() time.Duration {
	if l.kcp == nil {
		return holdMax
	}
	d := 2 * time.Duration(l.kcp.GetRTO()) * time.Millisecond
	return min(max(d, holdMin), holdMax)
}

// deadline is how long an expected answer may be missing: deadAfter, or
// four retransmission timeouts on a path slow enough to need more (up to
// deadMax), so that a ping queued behind a lossy, slow link is not taken
// for silence.
func (l *liveness) deadline() time.Duration {
	if l.kcp == nil {
		return deadAfter
	}
	d := 4 * time.Duration(l.kcp.GetRTO()) * time.Millisecond
	return min(max(d, deadAfter), deadMax)
}

// suspectNow marks the session unusable at its next check.
func (l *liveness) suspectNow() {
	l.mu.Lock()
	l.suspected = true
	l.mu.Unlock()
}

// check runs every checkEvery: it pings a smuxtun peer when data stopped
// flowing on open streams, and judges the session. retire is how long a
// plain smux peer may stay silent after a new stream before the session
// is retired.
func (l *liveness) check(now time.Time, retire time.Duration) verdict {
	dataSeen := l.m.TakeDataSeen()
	pingable := l.m.PeerAnswersPing()
	l.mu.Lock()
	if l.suspected {
		l.mu.Unlock()
		return verdictSilent
	}
	if dataSeen || l.nextPing.IsZero() {
		l.gap = firstPingGap
		l.nextPing = now.Add(l.gap)
	}
	ping := false
	w := l.waitingLocked(now)
	if pingable && w == 0 && !now.Before(l.nextPing) && l.m.NumStreams() > 0 {
		ping = l.startLocked(now)
		l.gap = min(2*l.gap, maxPingGap)
		l.nextPing = now.Add(l.gap)
	}
	l.mu.Unlock()
	if ping {
		l.m.Ping()
	}
	switch {
	case w < l.deadline():
		return verdictAlive
	case !l.acked():
		return verdictUnheard
	case pingable:
		return verdictDead
	case w >= retire:
		return verdictSilent
	}
	return verdictAlive
}

// errPeerGone is the error the streams of a session found dead end with.
func errPeerGone(why endReason) error {
	if why == endUnheard {
		return errUnheard
	}
	return errStoppedAnswering
}

var (
	errStoppedAnswering = errors.New("the peer stopped answering (restarted, or the path is down)")
	errUnheard          = errors.New("the server acknowledged nothing")
)

// unheardHint tells the operator what to check when a server never
// acknowledges anything.
const unheardHint = "check that smuxtun-server (or kcptun's server) runs there, that its port is reachable (UDP; TCP with --tcp) " +
	"from here, and that --key and --crypt match the server's"

// reportGone logs, at most once a minute per server address, that a session
// was closed because its peer is gone.
func (c *Client) reportGone(cs *clientSession, why endReason, streams int) {
	remote := cs.mux.RemoteAddr().String()
	ok, held := c.goneWarn.allow(remote+"/"+strconv.Itoa(int(why)), time.Now())
	if !ok {
		return
	}
	args := []any{"session", cs.id, "remote", remote, "streams_cut", streams}
	if held > 0 {
		args = append(args, "similar_since_last", held)
	}
	if why == endUnheard {
		c.log.Warn("server does not answer", append(args, "silent_for", cs.deadline(), "hint", unheardHint)...)
		return
	}
	c.log.Warn("server stopped answering, closing the session", append(args, "silent_for", cs.deadline(),
		"hint", "the server restarted or the path is down; new connections go to a new session")...)
}

// watchClient closes a server session whose client (a smuxtun client, which
// answers pings) stopped answering while it had streams open, so that the
// streams' targets are released within seconds rather than at the keepalive
// timeout. It returns when the session closes.
func watchClient(l *liveness, log *slog.Logger, sid uint64, remote string) {
	t := time.NewTicker(checkEvery)
	defer t.Stop()
	for {
		select {
		case <-l.m.CloseChan():
			return
		case now := <-t.C:
			// A client is never retired here; silence matters only from a
			// client that answers pings.
			switch l.check(now, time.Duration(math.MaxInt64)) {
			case verdictDead, verdictUnheard:
				n := l.m.NumStreams()
				l.m.CloseWithError(errStoppedAnswering)
				log.Warn("client stopped answering, closing the session", "session", sid, "remote", remote,
					"streams_cut", n, "silent_for", l.deadline())
				return
			}
		}
	}
}

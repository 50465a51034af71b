package tunnel

import (
	"math"
	"net"
	"sync"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"
)

// Pacing: the sending side of every KCP session spreads its data over time
// at a rate found from the path's queueing delay, instead of letting kcp-go
// push a whole window at once.
//
// kcp-go runs without congestion control in every kcptun mode (nc=1), so
// what goes on the wire is bounded only by the windows: small ones starve
// a long path, big ones fill the router's queue until it drops packets.
// The pacer finds the rate the path takes by watching the smoothed RTT that
// kcp-go measures: the RTT above the lowest one seen is time spent in a
// queue. While that queue stays short the pacer probes for more; when it
// stays past its target the rate shrinks (see control). Random loss
// does not move the RTT, so it does not slow the pacer down (kcp-go's
// retransmissions and FEC repair it).
//
// The pacer works with the mux: before each batch of frames the mux asks
// how many bytes the link takes now (SendBudget) and waits for it, so data
// waits in the mux, where every stream gets its turn, not in kcp-go's send
// queue behind bulk data. It needs nothing from the peer: a kcptun peer
// only acknowledges, as always.
//
// Windows: unless the user gave --sndwnd/--rcvwnd, they follow the rate
// (applyWindows); given windows cap the automatic ones.

const (
	// queueTarget is the queueing delay the pacer lets build up before it
	// slows down; below it, the rate grows.
	queueTarget = 15 * time.Millisecond
	// minRound is the shortest control round; a round is one smoothed RTT.
	minRound = 50 * time.Millisecond
	// minRTTWindow is how long the lowest RTT is trusted; after it, the
	// pacer drains the queue for a round to measure it again.
	minRTTWindow = 10 * time.Second

	minPaceRate  = 64 << 10 // bytes per second
	maxPaceRate  = 4 << 30
	initPaceRate = 1 << 20

	// Automatic windows, in packets.
	autoSndMin  = 128
	autoSndMax  = 16384
	autoRcvMin  = 1024
	autoRcvMax  = 8192
	initAutoSnd = 1024
)

// pacedLink is what the pacer needs from a KCP session; a test gives it a
// simulated path instead.
type pacedLink interface {
	// SRTT is kcp-go's smoothed round-trip time; 0 until measured.
	SRTT() time.Duration
	// RTO is kcp-go's retransmission timeout.
	RTO() time.Duration
	// SetWindows applies send and receive windows in packets.
	SetWindows(snd, rcv int)
}

// pacerConfig is the part of the settings the pacer uses.
type pacerConfig struct {
	mss int // payload bytes per KCP packet
	// sndFloor and rcvFloor are the windows kcptun would use (its
	// defaults): the automatic windows never go below them.
	sndFloor, rcvFloor int
	// ackDelay is how long a KCP receiver may sit on an acknowledgement
	// (its flush interval): RTT samples carry up to that much noise.
	ackDelay       time.Duration
	sndCap, rcvCap int // windows the user set, 0 = automatic
}

// pacer is the rate controller of one session.
type pacer struct {
	link pacedLink
	cfg  pacerConfig
	now  func() time.Time

	mu     sync.Mutex
	rate   float64 // bytes per second
	tokens float64 // may go negative: a debt the next batch waits off
	last   time.Time

	startup     bool
	phase       int     // index into gains
	bw          float64 // the highest confirmed delivery rate
	wins        int     // probes in a row the path took
	prevSent    float64 // the sending rate of the previous round
	prevLimited bool
	busyRounds  int // rounds of startup the session sent in
	roundStart  time.Time
	roundLen    time.Duration
	limited     bool  // a batch waited for the pacer during this round
	sentRound   int64 // bytes charged during this round

	minRTT      time.Duration
	minRTTAt    time.Time
	drainUntil  time.Time // while before it, the pacer sends at half rate
	recvRate    float64   // bytes per second read from the peer (smoothed)
	recvMark    uint64
	recvCounter func() uint64 // bytes read from the session so far; nil: none yet

	snd, rcv int // windows last applied
}

func newPacer(link pacedLink, cfg pacerConfig, now func() time.Time) *pacer {
	t := now()
	p := &pacer{
		link: link, cfg: cfg, now: now,
		rate: initPaceRate, last: t, startup: true,
		roundStart: t, roundLen: minRound, minRTTAt: t,
	}
	p.tokens = p.burst()
	p.applyWindows()
	return p
}

// countReceived tells the pacer where to read the bytes received so far
// (the byte meter the session already has), for the receive window.
func (p *pacer) countReceived(n func() uint64) {
	p.mu.Lock()
	p.recvCounter, p.recvMark = n, n()
	p.mu.Unlock()
}

// burst is how far the sender may run ahead of the rate: about 2 ms of
// data, so that batches stay small enough for the mux to interleave streams.
func (p *pacer) burst() float64 {
	return min(max(p.rate*0.002, 16<<10), 256<<10)
}

// currentRate is the pacing rate, halved while draining for a new RTT
// measurement.
func (p *pacer) currentRate(now time.Time) float64 {
	if now.Before(p.drainUntil) {
		return p.rate / 2
	}
	return p.rate
}

func (p *pacer) refill(now time.Time) {
	if d := now.Sub(p.last); d > 0 {
		p.tokens = min(p.tokens+d.Seconds()*p.currentRate(now), p.burst())
		p.last = now
	}
}

// lanRTT is the round trip below which a path has no queue worth pacing
// for (a LAN, or loopback): there the pacer only sizes the windows.
const lanRTT = 5 * time.Millisecond

// SendBudget waits until the link may take more data and returns how many
// bytes the next batch may carry; 0 when the pacer does not limit.
func (p *pacer) SendBudget() int {
	p.mu.Lock()
	if p.minRTT > 0 && p.minRTT < lanRTT {
		p.mu.Unlock()
		return 0
	}
	now := p.now()
	p.refill(now)
	if p.tokens < 0 {
		wait := time.Duration(-p.tokens / p.currentRate(now) * float64(time.Second))
		p.limited = true
		p.mu.Unlock()
		time.Sleep(wait)
		p.mu.Lock()
		now = p.now()
		p.refill(now)
	}
	b := int(max(p.tokens, 0))
	if b < 2*p.cfg.mss {
		p.limited = true
		b = 2 * p.cfg.mss
	}
	p.mu.Unlock()
	return b
}

// sent charges n bytes written to the session.
func (p *pacer) sent(n int) {
	p.mu.Lock()
	p.refill(p.now())
	// The debt is bounded: bytes sent while the pacer did not limit
	// (a LAN) must not hold up the next batch for long.
	p.tokens = max(p.tokens-float64(n), -p.burst())
	p.sentRound += int64(n)
	p.mu.Unlock()
}

// tick runs the controller when a round is over; the session calls it
// every few milliseconds whether or not it sends.
func (p *pacer) tick() {
	p.mu.Lock()
	now := p.now()
	p.refill(now)
	p.maybeRoundLocked(now)
	p.mu.Unlock()
}

// maybeRoundLocked runs the controller once per round.
func (p *pacer) maybeRoundLocked(now time.Time) {
	elapsed := now.Sub(p.roundStart)
	if elapsed < p.roundLen {
		return
	}
	if p.recvCounter != nil {
		n := p.recvCounter()
		r := float64(n-p.recvMark) / elapsed.Seconds()
		p.recvMark = n
		p.recvRate = max(r, p.recvRate*0.75) // quick up, slow down
	}
	srtt := p.link.SRTT()
	if srtt > 0 {
		if p.minRTT == 0 || srtt <= p.minRTT {
			p.minRTT, p.minRTTAt = srtt, now
		} else if now.Sub(p.minRTTAt) > minRTTWindow && !now.Before(p.drainUntil) {
			if p.drainUntil.IsZero() || now.Sub(p.drainUntil) > minRTTWindow/2 {
				// Drain for a round to see the path without our queue,
				// then take the RTT of the next round as the new floor.
				p.drainUntil = now.Add(max(srtt, 4*minRound))
			} else {
				p.minRTT, p.minRTTAt = srtt, now
			}
		}
		sentRate := float64(p.sentRound) / elapsed.Seconds()
		// The pacer limited this round if the session sent about as
		// much as the rate allowed; otherwise the application or a
		// window did.
		p.limited = p.limited && sentRate >= 0.7*p.currentRate(now)
		p.control(srtt-p.minRTT, sentRate)
	}
	p.roundStart = now
	p.roundLen = max(srtt, minRound)
	p.limited = false
	p.sentRound = 0
	p.applyWindows()
}

// target is the queueing delay the pacer accepts: queueTarget plus half
// the peer's acknowledgement delay, which inflates the smoothed RTT above
// the lowest sample on average.
func (p *pacer) target() time.Duration {
	return queueTarget + p.cfg.ackDelay/2
}

// gains is the pacing gain of each round while cruising: one round probes
// for more bandwidth (a fixed step, not a gain: see control), the next
// drains what the probe queued, then four rounds at the estimate.
var gains = [...]float64{0, 0.9, 1, 1, 1, 1}

// probeStep is the increase one probe tries, in bytes per second.
const probeStep = 384 << 10

// control runs once per round with the queueing delay seen at its end and
// the rate the session sent at during it.
//
// What a session sent in one round shows in the RTT a round later: if the
// queue is still short then, the path delivered it, and that sending rate
// is a sample of the path's delivery rate. The pacer keeps the highest
// confirmed sample (bw) and sends at it times a gain, probing a step above
// it every six rounds, as BBR does with its delivery-rate samples; two
// probes in a row that the path takes send it back to doubling. A queue
// above the target while the session sends at its estimate means the
// estimate is too high (the path slowed down, or another session joined):
// it shrinks by up to a tenth per round until the queue is short. A
// session that sends little did not build the queue and ignores it.
func (p *pacer) control(queue time.Duration, sentRate float64) {
	short := queue <= p.target()
	ref := p.bw
	if ref == 0 {
		ref = p.rate
	}
	// A session sending well below its estimate did not build the queue:
	// it neither slows down nor leaves startup because of it.
	material := sentRate >= 0.5*ref
	old := p.bw
	// Only a round the pacer limited starts an estimate: the rate of the
	// acknowledgements and window updates a download sends back says
	// nothing about the path. Later rounds may raise it either way.
	if short && p.prevSent > p.bw && (p.prevLimited || p.bw > 0) {
		p.bw = p.prevSent
	}
	grew := p.bw >= 1.15*old && p.prevLimited
	p.prevSent, p.prevLimited = sentRate, p.limited
	if !short && material {
		// A tenth per round, less when the queue is only a little
		// above the target (RTT samples are noisy).
		excess := min(float64(queue-p.target())/float64(p.target()), 1)
		p.bw *= 1 - 0.1*max(excess, 0.3)
		p.wins = 0
	}
	if p.startup {
		// The doubling ends when the queue grows, from the second
		// round the session sends in on (its first burst looks like a
		// queue too).
		if material {
			p.busyRounds++
		}
		if short || !material || p.busyRounds < 2 {
			if p.limited {
				p.rate = min(max(2*p.rate, 2*p.bw), maxPaceRate)
			}
			return
		}
		p.startup = false
		p.phase = 0 // the next round drains
		// This round sent at about twice what the path took before the
		// queue grew: half of it is a better start than the last
		// confirmed rate, which may be from a round or two earlier.
		p.bw = max(p.bw, sentRate/2)
	}
	if p.bw == 0 {
		return
	}
	if grew && p.phase == 1 {
		// The probe of the last round was delivered in full.
		p.wins++
		if p.wins >= 2 {
			p.wins = 0
			p.startup = true
			p.rate = min(2*p.bw, maxPaceRate)
			return
		}
	}
	p.phase = (p.phase + 1) % len(gains)
	g := gains[p.phase]
	if !short && material {
		p.phase = 1
		g = gains[1]
	}
	r := g * p.bw
	if p.phase == 0 {
		// The probe adds a fixed step, the same for every session
		// (a quarter of the estimate on a slow path), so that sessions
		// sharing a path drift towards equal rates: the decreases take
		// the same fraction from each, the increases the same amount.
		r = p.bw + min(probeStep, p.bw/4)
	}
	p.rate = min(max(r, minPaceRate), maxPaceRate)
}

// applyWindows sizes the windows from the rate. A lost packet holds the
// window's start until its retransmission arrives, a round trip or more
// later (a timeout if the retransmission is lost too), so the send window
// holds what the rate sends in three rounds plus two timeouts, and the
// receive window what arrives in four rounds plus two timeouts; then a
// loss never stops the flow. A window the user set is the most it may be.
func (p *pacer) applyWindows() {
	rtt := max(p.roundLen, 50*time.Millisecond)
	rto := p.link.RTO()
	snd := int(math.Ceil(p.rate * (3*rtt + 2*rto).Seconds() / float64(p.cfg.mss)))
	snd = min(max(snd, autoSndMin, p.cfg.sndFloor), autoSndMax)
	if p.snd == 0 {
		snd = max(snd, initAutoSnd)
	}
	rcv := int(math.Ceil(p.recvRate * (4*rtt + 2*rto).Seconds() / float64(p.cfg.mss)))
	rcv = min(max(rcv, autoRcvMin, p.cfg.rcvFloor, p.rcv), autoRcvMax) // never shrinks: the peer may have data in flight for it
	if p.cfg.sndCap > 0 {
		snd = min(snd, p.cfg.sndCap)
	}
	if p.cfg.rcvCap > 0 {
		rcv = p.cfg.rcvCap
	}
	if snd != p.snd || rcv != p.rcv {
		p.snd, p.rcv = snd, rcv
		p.link.SetWindows(snd, rcv)
	}
}

// kcpLink is a live kcp-go session seen by the pacer.
type kcpLink struct{ s *kcp.UDPSession }

func (l kcpLink) SRTT() time.Duration     { return time.Duration(l.s.GetSRTT()) * time.Millisecond }
func (l kcpLink) RTO() time.Duration      { return time.Duration(l.s.GetRTO()) * time.Millisecond }
func (l kcpLink) SetWindows(snd, rcv int) { l.s.SetWindowSize(snd, rcv) }

// tickEvery is how often a paced session looks whether a round is over.
const tickEvery = 10 * time.Millisecond

// pacedConn is a KCP session with a pacer: writes are charged to it, and
// the mux asks it for a budget before each batch.
type pacedConn struct {
	*kcp.UDPSession
	p         *pacer
	done      chan struct{}
	closeOnce sync.Once
}

func newPacedConn(s *kcp.UDPSession, cfg pacerConfig) *pacedConn {
	c := &pacedConn{UDPSession: s, done: make(chan struct{})}
	c.p = newPacer(kcpLink{s}, cfg, time.Now)
	go c.run()
	return c
}

func (c *pacedConn) run() {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			c.p.tick()
		}
	}
}

func (c *pacedConn) Write(b []byte) (int, error) {
	c.p.sent(len(b))
	return c.UDPSession.Write(b)
}

func (c *pacedConn) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	return c.UDPSession.Close()
}

// SendBudget is the mux's hook (see mux: a connection that paces).
func (c *pacedConn) SendBudget() int { return c.p.SendBudget() }

// kcpSession lets the liveness watcher read kcp-go's RTT and RTO.
func (c *pacedConn) kcpSession() *kcp.UDPSession { return c.UDPSession }

var _ net.Conn = (*pacedConn)(nil)

package tunnel

import (
	"context"
	"math/rand/v2"
	"net"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
	kcp "github.com/xtaci/kcp-go/v5"
)

// simPath is a bottleneck shared by simulated sessions: a rate in bytes
// per second with a drop-tail queue bounded in time, a fixed base RTT, and
// RTT samples that carry up to ackDelay of receiver delay, smoothed the way
// kcp-go smooths them (1/8 per sample). It is the test double for the link
// that DESIGN.md asks the pacer to have; the clock is simulated too.
type simPath struct {
	rate     float64 // bytes per second
	base     time.Duration
	buffer   time.Duration
	ackDelay time.Duration
	queue    float64 // bytes
	dropped  float64
	rng      *rand.Rand
	el       time.Duration   // simulated time so far
	history  []time.Duration // queueing delay of every step
}

func (s *simPath) delay() time.Duration {
	return time.Duration(s.queue / s.rate * float64(time.Second))
}

// simFlow is one session on the path: its pacer, and the link it sees.
type simFlow struct {
	p         *pacer
	path      *simPath
	srtt      time.Duration
	snd, rcv  int
	offered   float64 // bytes per second the application has; 0 = unlimited
	delivered float64 // bytes through the bottleneck in the measured span
}

func (f *simFlow) SRTT() time.Duration {
	return f.srtt.Round(time.Millisecond)
}
func (f *simFlow) RTO() time.Duration      { return f.srtt + 4*f.path.ackDelay + 100*time.Millisecond }
func (f *simFlow) SetWindows(snd, rcv int) { f.snd, f.rcv = snd, rcv }

// runSim runs flows over the path for d in 1 ms steps. start[i] is when
// flow i begins; the figures count from measureFrom.
// A flow that already has a pacer carries on with it.
func runSim(path *simPath, flows []*simFlow, start []time.Duration, d, measureFrom time.Duration) (queueDelays []time.Duration) {
	t0 := time.Unix(1000, 0)
	now := t0.Add(path.el)
	clock := func() time.Time { return now }
	const dt = time.Millisecond
	for _, f := range flows {
		f.path = path
		if f.p == nil {
			f.p = newPacer(f, pacerConfig{mss: 1300, ackDelay: path.ackDelay}, clock)
		} else {
			f.p.now = clock
		}
		f.delivered = 0
	}
	begin := path.el
	start = slices.Clone(start)
	for i := range start {
		start[i] += begin
	}
	for el := begin; el < begin+d; el += dt {
		path.el = el + dt
		now = t0.Add(el)
		total := 0.0
		sends := make([]float64, len(flows))
		for i, f := range flows {
			if el < start[i] {
				continue
			}
			f.p.mu.Lock()
			r := f.p.currentRate(now)
			if f.offered > 0 && f.offered < r {
				r = f.offered
			} else {
				f.p.limited = true
			}
			n := r * dt.Seconds()
			f.p.tokens -= n
			f.p.sentRound += int64(n)
			f.p.mu.Unlock()
			sends[i] = n
			total += n
		}
		// The bottleneck serves rate*dt; what does not fit in the buffer
		// is dropped, from every flow in proportion.
		path.queue += total - path.rate*dt.Seconds()
		if path.queue < 0 {
			path.queue = 0
		}
		limit := path.rate * path.buffer.Seconds()
		over := 0.0
		if path.queue > limit {
			over = path.queue - limit
			path.queue = limit
			path.dropped += over
		}
		if el >= begin+measureFrom && total > 0 {
			served := total - over
			for i, f := range flows {
				f.delivered += served * sends[i] / total
			}
			queueDelays = append(queueDelays, path.delay())
		}
		path.history = append(path.history, path.delay())
		lag := int(path.base / dt)
		seen := time.Duration(0)
		if len(path.history) > lag {
			seen = path.history[len(path.history)-1-lag]
		}
		for i, f := range flows {
			if el < start[i] {
				continue
			}
			sample := path.base + seen + time.Duration(path.rng.Float64()*float64(path.ackDelay))
			if f.srtt == 0 {
				f.srtt = sample
			} else {
				f.srtt += (sample - f.srtt) / 8
			}
			f.p.tick()
		}
	}
	return queueDelays
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// The path of an intercontinental link: 100 Mbit/s, 90 ms each way, a
// 60 ms router buffer; about 9 MB/s of it is tunnel payload.
func interPath(seed uint64) *simPath {
	return &simPath{rate: 9e6, base: 180 * time.Millisecond, buffer: 60 * time.Millisecond,
		ackDelay: 30 * time.Millisecond, rng: rand.New(rand.NewPCG(seed, 1))}
}

// One bulk session fills the path and keeps the router's queue short: this
// is what makes a download fast without making every other request slow.
func TestPacerFillsPathWithoutFillingQueue(t *testing.T) {
	for _, tc := range []struct {
		name string
		path *simPath
	}{
		{"intercontinental", interPath(1)},
		{"near", &simPath{rate: 18e6, base: 10 * time.Millisecond, buffer: 60 * time.Millisecond,
			ackDelay: 30 * time.Millisecond, rng: rand.New(rand.NewPCG(2, 1))}},
		{"slow and long", &simPath{rate: 1.5e6, base: 300 * time.Millisecond, buffer: 60 * time.Millisecond,
			ackDelay: 30 * time.Millisecond, rng: rand.New(rand.NewPCG(3, 1))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &simFlow{}
			const span, from = 40 * time.Second, 10 * time.Second
			q := runSim(tc.path, []*simFlow{f}, []time.Duration{0}, span, from)
			use := f.delivered / (tc.path.rate * (span - from).Seconds())
			med := median(q)
			t.Logf("utilisation %.2f, median queue %v, dropped %.1f%% of capacity, rate %.0f B/s, windows %d/%d",
				use, med, 100*tc.path.dropped/(tc.path.rate*span.Seconds()), f.p.rate, f.snd, f.rcv)
			if use < 0.85 {
				t.Errorf("utilisation %.2f, want at least 0.85", use)
			}
			if med > 40*time.Millisecond {
				t.Errorf("median queueing delay %v, want at most 40ms", med)
			}
		})
	}
}

// Two sessions on one path end up with about equal shares, whichever came
// first.
func TestPacersShareAPath(t *testing.T) {
	a, b := &simFlow{}, &simFlow{}
	path := interPath(4)
	const span, from = 60 * time.Second, 30 * time.Second
	runSim(path, []*simFlow{a, b}, []time.Duration{0, 5 * time.Second}, span, from)
	total := a.delivered + b.delivered
	share := a.delivered / total
	t.Logf("shares %.2f / %.2f, utilisation %.2f", share, 1-share, total/(path.rate*(span-from).Seconds()))
	if share < 0.4 || share > 0.6 {
		t.Errorf("first session's share %.2f, want 0.4..0.6", share)
	}
}

// A session whose application sends little keeps a rate near what it
// sends: when the application speeds up it does not dump a huge burst.
func TestPacerFollowsAnApplicationLimitedSession(t *testing.T) {
	f := &simFlow{offered: 500e3}
	path := interPath(5)
	runSim(path, []*simFlow{f}, []time.Duration{0}, 20*time.Second, 10*time.Second)
	if f.p.rate > 4*f.offered {
		t.Errorf("pacing rate %.0f B/s for an application sending %.0f B/s", f.p.rate, f.offered)
	}
}

// When the path slows down, the queue goes back to short.
func TestPacerFollowsAPathThatSlowsDown(t *testing.T) {
	f := &simFlow{}
	path := interPath(6)
	runSim(path, []*simFlow{f}, []time.Duration{0}, 20*time.Second, 20*time.Second)
	path.rate /= 3
	q := runSim(path, []*simFlow{f}, []time.Duration{0}, 20*time.Second, 10*time.Second)
	if med := median(q); med > 40*time.Millisecond {
		t.Errorf("median queueing delay %v after the path slowed down, want at most 40ms", med)
	}
}

// Windows: unset, they follow the rate and stay within their bounds; set,
// they are the most the pacer uses.
func TestPacerWindows(t *testing.T) {
	f := &simFlow{}
	path := interPath(7)
	runSim(path, []*simFlow{f}, []time.Duration{0}, 20*time.Second, 10*time.Second)
	bdp := int(path.rate * path.base.Seconds() / 1300)
	if f.snd < bdp || f.snd > autoSndMax {
		t.Errorf("send window %d, want one path BDP (%d) or more, at most %d", f.snd, bdp, autoSndMax)
	}
	g := &simFlow{}
	now := time.Unix(0, 0)
	g.path = path
	g.srtt = 200 * time.Millisecond
	g.p = newPacer(g, pacerConfig{mss: 1300, sndCap: 256, rcvCap: 300}, func() time.Time { return now })
	g.p.rate = 50e6
	g.p.applyWindows()
	if g.snd != 256 || g.rcv != 300 {
		t.Errorf("windows %d/%d with --sndwnd 256 --rcvwnd 300", g.snd, g.rcv)
	}
}

// A session that only sent acknowledgements and window updates while a
// download kept the path's queue up (an upload right after a download)
// must not have learnt a tiny rate from that time: once it has bulk data
// it ramps up to its share within seconds, and does not crowd out the
// session that was there first.
func TestPacerAfterAnApplicationLimitedSpell(t *testing.T) {
	bulk, quiet := &simFlow{}, &simFlow{offered: 2e3}
	path := interPath(8)
	runSim(path, []*simFlow{bulk, quiet}, []time.Duration{0, 0}, 10*time.Second, 10*time.Second)
	quiet.offered = 0
	runSim(path, []*simFlow{bulk, quiet}, []time.Duration{0, 0}, 20*time.Second, 10*time.Second)
	share := quiet.delivered / (quiet.delivered + bulk.delivered)
	t.Logf("share of the session that was quiet: %.2f", share)
	if share < 0.3 || share > 0.7 {
		t.Errorf("the session that was quiet got %.2f of the path 10 to 20 s after it started sending, want 0.3..0.7", share)
	}
}

// --nopacing hands kcp-go's session to the mux as it is, with the windows
// given; without it the session is paced, and windows the user set are the
// pacer's ceilings.
func TestNoPacingIsKcptunBehaviour(t *testing.T) {
	dial := func(tweak func(*config.Common)) net.Conn {
		t.Helper()
		cfg := config.DefaultClient()
		baseCommon(pairOpts{}, &cfg.Common)
		tweak(&cfg.Common)
		set, err := newSettings(cfg.Common, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		c, err := set.tr.dial(context.Background(), "127.0.0.1:9")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	if c := dial(func(c *config.Common) { c.NoPacing = true }); reflect.TypeOf(c) != reflect.TypeFor[*kcp.UDPSession]() {
		t.Errorf("--nopacing: the mux gets a %T, want kcp-go's *kcp.UDPSession", c)
	}
	c := dial(func(c *config.Common) { c.SndWnd, c.SndWndSet, c.RcvWnd, c.RcvWndSet = 300, true, 700, true })
	pc, ok := c.(*pacedConn)
	if !ok {
		t.Fatalf("default: the mux gets a %T, want a paced session", c)
	}
	if pc.p.cfg.sndCap != 300 || pc.p.cfg.rcvCap != 700 {
		t.Errorf("--sndwnd 300 --rcvwnd 700: pacer ceilings %d/%d", pc.p.cfg.sndCap, pc.p.cfg.rcvCap)
	}
	if pc.p.snd > 300 || pc.p.rcv != 700 {
		t.Errorf("--sndwnd 300 --rcvwnd 700: windows applied %d/%d", pc.p.snd, pc.p.rcv)
	}
	pc = dial(func(*config.Common) {}).(*pacedConn)
	if pc.p.cfg.sndCap != 0 || pc.p.cfg.rcvCap != 0 || pc.p.cfg.sndFloor != 128 || pc.p.cfg.rcvFloor != 512 {
		t.Errorf("no windows given: ceilings %d/%d, floors %d/%d; want none and kcptun's client defaults 128/512",
			pc.p.cfg.sndCap, pc.p.cfg.rcvCap, pc.p.cfg.sndFloor, pc.p.cfg.rcvFloor)
	}
}

// Below 5 ms of round trip (a LAN, loopback) the pacer does not limit: the
// mux gets no budget and never waits, however much was just sent.
func TestPacerStandsAsideOnALAN(t *testing.T) {
	f := &simFlow{srtt: 2 * time.Millisecond}
	f.path = interPath(9)
	now := time.Unix(0, 0)
	f.p = newPacer(f, pacerConfig{mss: 1300}, func() time.Time { return now })
	now = now.Add(time.Second)
	f.p.tick()
	f.p.sent(64 << 20)
	start := time.Now()
	if b := f.p.SendBudget(); b != 0 {
		t.Errorf("budget %d on a 2 ms path, want 0 (no limit)", b)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("SendBudget waited %v on a 2 ms path", d)
	}
	f.srtt = 20 * time.Millisecond
	g := &simFlow{srtt: 20 * time.Millisecond, path: f.path}
	g.p = newPacer(g, pacerConfig{mss: 1300}, func() time.Time { return now })
	now = now.Add(time.Second)
	g.p.tick()
	if b := g.p.SendBudget(); b <= 0 {
		t.Errorf("budget %d on a 20 ms path, want a limit", b)
	}
}

package netem

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Link describes one direction of an emulated path.
type Link struct {
	// Rate is the bottleneck rate in bits per second of UDP payload; 0 means
	// no rate limit (and no queue).
	Rate int64
	// QueueDelay bounds the bottleneck queue in time: a packet that would
	// wait longer than this before its first bit leaves is dropped, like a
	// drop-tail router buffer sized for QueueDelay at Rate. 0 means
	// DefaultQueueDelay.
	QueueDelay time.Duration
	// Delay is the one-way propagation delay, added after the queue.
	Delay time.Duration
	// Loss is the probability in [0, 1) that a packet is lost on the wire,
	// drawn independently per packet from the relay's seeded generator.
	Loss float64
}

// DefaultQueueDelay is the queue bound used when Link.QueueDelay is zero.
const DefaultQueueDelay = 60 * time.Millisecond

// Stats counts what one direction of a relay did with its packets.
type Stats struct {
	PacketsIn    uint64 // packets offered to the link
	DroppedQueue uint64 // dropped because the queue was full (in time)
	DroppedLoss  uint64 // dropped by random loss
	Delivered    uint64 // packets handed to the socket on the far side
	BytesIn      uint64 // payload bytes offered
	BytesOut     uint64 // payload bytes delivered
}

type counters struct {
	packetsIn, droppedQueue, droppedLoss, delivered, bytesIn, bytesOut atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		PacketsIn:    c.packetsIn.Load(),
		DroppedQueue: c.droppedQueue.Load(),
		DroppedLoss:  c.droppedLoss.Load(),
		Delivered:    c.delivered.Load(),
		BytesIn:      c.bytesIn.Load(),
		BytesOut:     c.bytesOut.Load(),
	}
}

// packet is a datagram in flight on a link.
type packet struct {
	buf     []byte
	n       int
	release time.Time    // when it leaves the far end of the link
	conn    *net.UDPConn // the socket it leaves by
	to      *net.UDPAddr // its destination, or nil on a connected socket
}

func (p *packet) send() {
	if p.to == nil {
		p.conn.Write(p.buf[:p.n])
	} else {
		p.conn.WriteToUDP(p.buf[:p.n], p.to)
	}
}

// link is one direction: a time-bounded FIFO bottleneck, then a fixed delay.
// Admission works out analytically when a packet will finish serialization
// (busyUntil), so no goroutine waits per packet; since every packet gets the
// same propagation delay, release times grow monotonically and the in-flight
// list is a FIFO that one goroutine drains with a single timer.
type link struct {
	cfg   Link
	stats counters

	mu        sync.Mutex
	rng       *rand.Rand
	busyUntil time.Time
	queue     []*packet // in release order, from head on
	head      int
	wake      chan struct{}
	now       func() time.Time
}

func newLink(cfg Link, seed uint64) *link {
	if cfg.QueueDelay == 0 {
		cfg.QueueDelay = DefaultQueueDelay
	}
	return &link{
		cfg:  cfg,
		rng:  rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		wake: make(chan struct{}, 1),
		now:  time.Now,
	}
}

// admit decides the fate of a packet of n bytes arriving now. It returns the
// release time and whether the packet goes on; the counters are updated.
func (l *link) admit(n int, now time.Time) (time.Time, bool) {
	l.stats.packetsIn.Add(1)
	l.stats.bytesIn.Add(uint64(n))
	finish := now
	if l.cfg.Rate > 0 {
		start := now
		if l.busyUntil.After(start) {
			start = l.busyUntil
		}
		if start.Sub(now) > l.cfg.QueueDelay {
			l.stats.droppedQueue.Add(1)
			return time.Time{}, false
		}
		finish = start.Add(time.Duration(int64(n) * 8 * int64(time.Second) / l.cfg.Rate))
		l.busyUntil = finish
	}
	// The packet used the bottleneck; loss happens on the wire after it.
	if l.cfg.Loss > 0 && l.rng.Float64() < l.cfg.Loss {
		l.stats.droppedLoss.Add(1)
		return time.Time{}, false
	}
	return finish.Add(l.cfg.Delay), true
}

// enqueue offers p; it takes ownership of p.buf either way.
func (l *link) enqueue(p *packet) {
	l.mu.Lock()
	rel, ok := l.admit(p.n, l.now())
	if !ok {
		l.mu.Unlock()
		putBuf(p.buf)
		return
	}
	// Release times are monotonic except when the clock is read in a
	// different order than the lock is taken; clamp so order is kept.
	if k := len(l.queue); k > l.head && rel.Before(l.queue[k-1].release) {
		rel = l.queue[k-1].release
	}
	p.release = rel
	l.queue = append(l.queue, p)
	first := len(l.queue)-l.head == 1
	l.mu.Unlock()
	if first {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// run delivers packets at their release time until done closes.
func (l *link) run(done <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []*packet
	for {
		l.mu.Lock()
		now := l.now()
		i := l.head
		for i < len(l.queue) && !l.queue[i].release.After(now) {
			i++
		}
		due = append(due[:0], l.queue[l.head:i]...)
		clear(l.queue[l.head:i])
		l.head = i
		// Compact once the delivered prefix dominates, so the backing
		// array stays about as large as the packets in flight.
		if l.head > len(l.queue)/2 {
			k := copy(l.queue, l.queue[l.head:])
			clear(l.queue[k:])
			l.queue = l.queue[:k]
			l.head = 0
		}
		var wait time.Duration = -1
		if len(l.queue) > l.head {
			wait = l.queue[l.head].release.Sub(now)
		}
		l.mu.Unlock()

		for _, p := range due {
			p.send()
			l.stats.delivered.Add(1)
			l.stats.bytesOut.Add(uint64(p.n))
			putBuf(p.buf)
		}
		clear(due)

		if wait < 0 {
			select {
			case <-done:
				l.drop()
				return
			case <-l.wake:
			}
			continue
		}
		timer.Reset(wait)
		select {
		case <-done:
			l.drop()
			return
		case <-timer.C:
		case <-l.wake:
		}
	}
}

func (l *link) drop() {
	l.mu.Lock()
	for _, p := range l.queue[l.head:] {
		putBuf(p.buf)
	}
	l.queue, l.head = nil, 0
	l.mu.Unlock()
}

// maxDatagram is the largest datagram the relay carries.
const maxDatagram = 65535

// poolSize covers every datagram KCP sends at the usual MTUs; larger ones get
// their own allocation, so packets in flight cost about their size.
const poolSize = 2048

var bufPool = sync.Pool{New: func() any { b := make([]byte, poolSize); return &b }}

// copyBuf returns a buffer holding p, from the pool when it fits.
func copyBuf(p []byte) []byte {
	var b []byte
	if len(p) <= poolSize {
		b = *bufPool.Get().(*[]byte)
	} else {
		b = make([]byte, len(p))
	}
	copy(b, p)
	return b
}

func putBuf(b []byte) {
	if cap(b) == poolSize {
		b = b[:poolSize]
		bufPool.Put(&b)
	}
}

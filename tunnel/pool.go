package tunnel

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smuxtun/smuxtun/mux"
)

// endReason says why a session left its pool slot.
type endReason int

const (
	endShutdown endReason = iota
	endClosed
	endExpired
	endSuspect // a plain smux peer stayed silent after a new stream
	endDead    // a smuxtun peer stopped answering
	endUnheard // the server never acknowledged a packet
)

// clientSession is one transport session of the pool.
type clientSession struct {
	*liveness
	id     uint64
	mux    *mux.Session
	meter  *meteredConn
	born   time.Time
	closed atomic.Bool
}

func (cs *clientSession) close() {
	if cs.closed.CompareAndSwap(false, true) {
		cs.mux.Close()
		stats.sessionsActive.Add(-1)
	}
}

// slot holds the current session of one pool position.
type slot struct {
	mu    sync.Mutex
	cur   *clientSession
	ready chan struct{} // closed once cur is set
}

func newSlot() *slot { return &slot{ready: make(chan struct{})} }

// get returns the slot's session if it is usable.
func (s *slot) get() *clientSession {
	s.mu.Lock()
	cs := s.cur
	s.mu.Unlock()
	if cs == nil || cs.mux.IsClosed() {
		return nil
	}
	return cs
}

// wait returns the session, or a channel closed when one is published.
func (s *slot) wait() (*clientSession, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && !s.cur.mux.IsClosed() {
		return s.cur, nil
	}
	return nil, s.ready
}

func (s *slot) publish(cs *clientSession) {
	s.mu.Lock()
	s.cur = cs
	close(s.ready)
	s.mu.Unlock()
}

func (s *slot) unpublish(cs *clientSession) {
	s.mu.Lock()
	if s.cur == cs {
		s.cur = nil
		s.ready = make(chan struct{})
	}
	s.mu.Unlock()
}

// backoff yields redial delays: doubling from backoffMin to backoffMax,
// each with up to 25 % random jitter so that many clients do not redial in
// step.
type backoff struct{ d time.Duration }

func (b *backoff) next() time.Duration {
	if b.d == 0 {
		b.d = backoffMin
	} else {
		b.d = min(2*b.d, backoffMax)
	}
	return b.d - time.Duration(rand.Int64N(int64(b.d)/4+1))
}

func (b *backoff) reset() { b.d = 0 }

// sleepCtx waits d; it returns false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

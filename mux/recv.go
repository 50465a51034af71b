package mux

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"
)

const (
	readBufferMin = 16 << 10  // an idle session's read buffer
	readBufferMax = 256 << 10 // grown to under bulk traffic
	// minShared is the payload size from which queued data stays in the
	// read slab instead of being copied out of it.
	minShared = 1024
)

// receiver is the state of the session's reading goroutine.
type receiver struct {
	fr *frameReader
	// wake lists streams with new data whose readers are signalled just
	// before the goroutine next blocks, so a burst of frames costs each
	// reader one wake-up.
	wake  []*Stream
	slabs atomic.Int32
	upd   [updSize]byte
	mark  uint32 // the stream id of the last mark NOP (marked.go), 0 = none
}

func (s *Session) flushWakeups() {
	for i, st := range s.recv.wake {
		st.wakeQueued = false
		st.signalR()
		s.recv.wake[i] = nil
	}
	s.recv.wake = s.recv.wake[:0]
}

func (s *Session) wakeLater(st *Stream) {
	if !st.wakeQueued {
		st.wakeQueued = true
		s.recv.wake = append(s.recv.wake, st)
	}
}

// pollingReader returns what the reading goroutine reads from: the
// connection itself, or a poller over it (poll_unix.go) when the session
// sits straight on a kernel socket and its flow is not stop-and-wait; the
// poller polls only while the session has few streams open. A v2 stream
// window of under four frames lets the peer send about one write per window
// update, so the next data is a whole round trip away and polling for it
// only takes the processor from the goroutines that must answer.
func (s *Session) pollingReader() io.Reader {
	if !s.sender.kernelConn {
		return s.conn
	}
	if s.ver == 2 && s.config.MaxStreamBuffer < 4*s.config.MaxFrameSize {
		return s.conn
	}
	return newPollReader(s.conn, func() bool { return s.NumStreams() <= pollMaxStreams })
}

// pollMaxStreams: a session with more streams open does not poll. With many
// streams there is usually other work for the processor, and polling took
// about a seventh off 64 streams' aggregate throughput (docs/PERFORMANCE.md).
const pollMaxStreams = 8

// recvLoop reads frames until the connection fails or a frame breaks the
// protocol; either closes the session.
func (s *Session) recvLoop() {
	// Slabs pinned by unread data are bounded to about twice the receive
	// buffer; past that, payloads are copied out so slabs can be reused.
	maxSlabs := int32(max(4, 2*s.config.MaxReceiveBuffer/readBufferMax))
	fr := newFrameReader(s.pollingReader(), &s.recv.slabs, maxSlabs)
	fr.beforeBlock = s.flushWakeups
	s.recv.fr = fr
	defer fr.close()
	defer s.flushWakeups()
	for {
		// Only version 1 pauses for unread data: it has no other way to
		// bound it. Version 2 bounds it with the windows it grants.
		if s.ver == 1 && s.bucket.Load() <= 0 {
			s.flushWakeups()
			for s.bucket.Load() <= 0 {
				select {
				case <-s.bucketSig:
				case <-s.die:
					return
				}
			}
		}
		h, err := fr.readHeader()
		if err != nil {
			s.closeWith(fmt.Errorf("read from %s: %w", peerName(s), err))
			return
		}
		if !s.heard.Load() {
			s.heard.Store(true)
		}
		if err := h.check(s.ver); err != nil {
			s.closeWith(fmt.Errorf("%w (from %s)", err, peerName(s)))
			return
		}
		if h.cmd() != cmdNOP && !s.dataSeen.Load() {
			s.dataSeen.Store(true)
		}
		switch h.cmd() {
		case cmdPSH:
			err = s.recvData(fr, &h)
		case cmdSYN:
			err = s.recvSYN(h.sid())
		case cmdFIN:
			s.recvFIN(h.sid())
		case cmdUPD:
			err = s.recvUPD(fr, h.sid())
		case cmdNOP:
			switch h.sid() {
			case helloID:
				if !s.peerKnown.Swap(true) {
					if s.ver == 2 {
						s.peerAllotsCredit()
					}
					close(s.helloCh)
				}
			case pingID:
				s.answerPing()
			case pongID:
			default:
				s.recvMarkNOP(h.sid())
			}
		}
		if err != nil {
			s.closeWith(err)
			return
		}
	}
}

func (s *Session) recvSYN(id uint32) error {
	wantOdd := !s.client // the client opens odd ids, the server even ones
	mark := s.recv.mark
	s.recv.mark = 0 // a mark applies only to the SYN right behind it
	if id == 0 || (id%2 == 1) != wantOdd {
		return fmt.Errorf("%w: %s opened stream %d, which is not its to open", ErrInvalidProtocol, peerName(s), id)
	}
	s.smu.Lock()
	if _, dup := s.streams[id]; dup {
		s.smu.Unlock()
		return nil
	}
	if s.config.MaxStreams > 0 && s.peerOpen >= s.config.MaxStreams {
		// Refused at once: the peer reads EOF on the stream and whatever
		// it sends there is dropped as data for an unknown stream.
		s.smu.Unlock()
		s.refused.Add(1)
		s.queueControl(cmdFIN, id, 0, 0)
		s.finAgainLater(id)
		return nil
	}
	st := newStream(id, s)
	st.byPeer = true
	st.marked = mark == id
	s.peerOpen++
	s.streams[id] = st
	s.smu.Unlock()
	if s.ver == 2 {
		// The peer may already be sending on the window it assumes; if the
		// budget cannot afford that, say so before it sends much more.
		if w, announce := s.openStreamCredit(st); announce {
			s.queueControl(cmdUPD, id, 0, w)
		}
	}
	select {
	case s.accepts <- st:
		return nil
	default:
	}
	s.flushWakeups()
	select {
	case s.accepts <- st:
	case <-s.die:
	}
	return nil
}

func (s *Session) recvFIN(id uint32) {
	st := s.lookup(id)
	if st == nil {
		return
	}
	// Nothing more will arrive: in version 2 the stream is owed only what
	// it holds.
	st.rmu.Lock()
	st.moveCreditLocked(func() { st.edge = st.recvd })
	st.finRecv.Store(true)
	st.rmu.Unlock()
	s.wakeLater(st)
	if st.wclosed.Load() {
		s.removeStream(st)
	}
}

func (s *Session) recvUPD(fr *frameReader, id uint32) error {
	b := s.recv.upd[:]
	if err := fr.readFull(b); err != nil {
		return fmt.Errorf("read from %s: %w", peerName(s), err)
	}
	st := s.lookup(id)
	if st == nil {
		return nil
	}
	sd := &s.sender
	sd.mu.Lock()
	st.peerConsumed = binary.LittleEndian.Uint32(b[:4])
	st.peerWindow = binary.LittleEndian.Uint32(b[4:])
	if !st.queued && sd.sendable(st) {
		sd.pushBack(st)
		sd.kickLocked()
	}
	sd.mu.Unlock()
	return nil
}

// recvData moves a data frame's payload to its stream: straight into the
// buffer of a reader that is waiting in Read, and into the stream's queue
// otherwise.
func (s *Session) recvData(fr *frameReader, h *header) error {
	n := h.length()
	st := s.lookup(h.sid())
	if st == nil || st.shutdown.Load() || st.finRecv.Load() {
		if err := fr.discard(n); err != nil {
			return fmt.Errorf("read from %s: %w", peerName(s), err)
		}
		return nil
	}
	if n == 0 {
		return nil
	}
	st.rmu.Lock()
	if err := st.admitLocked(n); err != nil {
		st.rmu.Unlock()
		return fmt.Errorf("%w (from %s, stream %d)", err, peerName(s), st.id)
	}
	if st.rq.size == 0 && st.rwait != nil && !st.shutdown.Load() {
		p := st.rwait[st.rgot:]
		k := min(len(p), n)
		st.rfilling = true
		st.rmu.Unlock()
		err := fr.readFull(p[:k])
		st.rmu.Lock()
		st.rfilling = false
		if err != nil {
			st.rmu.Unlock()
			st.signalR()
			return fmt.Errorf("read from %s: %w", peerName(s), err)
		}
		st.rgot += k
		if st.rgot == len(st.rwait) {
			st.rwait = nil
		}
		n -= k
		if n == 0 {
			now := s.updateDue(st)
			st.rmu.Unlock()
			s.wake(st, now)
			return nil
		}
	}
	if p, ok := fr.peek(n); ok {
		if !st.shutdown.Load() {
			if n >= minShared && fr.shareable {
				st.rq.pushSlab(fr.sl, fr.start, fr.start+n)
			} else {
				st.rq.appendSmall(p)
			}
			s.bucket.Add(-int64(n))
		}
		now := s.updateDue(st)
		st.rmu.Unlock()
		fr.skip(n)
		s.wake(st, now)
		return nil
	}
	st.rmu.Unlock()
	b := getBuf(n)
	if err := fr.readFull((*b)[:n]); err != nil {
		putBuf(b)
		return fmt.Errorf("read from %s: %w", peerName(s), err)
	}
	st.rmu.Lock()
	if !st.shutdown.Load() {
		st.rq.push(chunk{b: *b, pb: b, end: n})
		s.bucket.Add(-int64(n))
		b = nil
	}
	now := s.updateDue(st)
	st.rmu.Unlock()
	if b != nil {
		putBuf(b)
	}
	s.wake(st, now)
	return nil
}

// updateDue reports, in version 2, whether st holds enough unread data that
// reading it will send a window update: its reader is woken at once then,
// so that the update reaches a sender waiting on the window while the rest
// of the burst is still being read. Otherwise wake-ups wait for the burst.
func (s *Session) updateDue(st *Stream) bool {
	return s.ver == 2 && st.rgot+st.rq.size >= int(st.win/4)
}

func (s *Session) wake(st *Stream, now bool) {
	if now {
		st.signalR()
	} else {
		s.wakeLater(st)
	}
}

// admitLocked checks, in version 2, that the peer stays within the window
// it could have been given: the 256 KiB a sender assumes before its first
// update or MaxStreamBuffer, twice over for writers racing on one stream
// (xtaci/smux checks the window per Write call, not per stream).
func (st *Stream) admitLocked(n int) error {
	if st.sess.ver != 2 {
		return nil
	}
	st.moveCreditLocked(func() { st.recvd += uint32(n) })
	allowed := 2 * max(uint32(st.sess.config.MaxStreamBuffer), initialPeerWindow)
	if st.recvd-st.consumed > allowed {
		return fmt.Errorf("%w: %w", ErrInvalidProtocol, ErrWindowViolated)
	}
	return nil
}

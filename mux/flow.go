package mux

// Flow control, version 2 (the rules in words are in PROTOCOL.md).
//
// Receiving: the session never stops reading the connection because data is
// unread. Instead every stream's window is allotted from the session budget
// (MaxReceiveBuffer): a stream is owed what it holds unread plus the credit
// it was granted and has not received yet, and the sum over all streams
// stays within the budget plus at most minGrant per stream. Credit is only
// granted when a stream is opened and when its reader consumes, so a stream
// whose reader stops keeps what it holds and gets nothing more, while
// streams that are read keep getting credit.
//
// Sending: a peer speaking plain smux (kcptun, xtaci/smux) still stops
// reading its connection once its budget is full of unread data, which
// freezes every stream of the session. Until the peer has announced that it
// allots credit as above (helloID), the sender keeps the data the peer may
// hold unread for each stream within half the peer's window, the least that
// still makes the peer send its next window update.

import (
	"math"
	"time"
)

// helloID is the stream id of the NOP frame a session sends when it starts:
// it tells the peer that this side allots stream windows from its session
// budget and never stops reading, so the peer need not shield it. Peers that
// do not know it ignore it, as they ignore every NOP's stream id.
const helloID uint32 = 0x736d7478 // "xtms" little endian

// helloFirstWindow is the window a sender assumes for a new stream, until
// the first update, when the peer has said hello: such a peer announces
// every stream's window right behind its SYN, so the sender need not assume
// smux's 256 KiB, and the peer need not buffer that much for a stream its
// application may never read.
const helloFirstWindow = 64 << 10

// minGrantCap bounds minGrant: the credit a stream whose reader consumes
// gets even when the budget is spoken for.
const minGrantCap = 64 << 10

// minGrant is the least window a stream is granted; it keeps streams moving
// when stalled ones hold the budget, at the price of up to this much per
// stream beyond MaxReceiveBuffer.
func (s *Session) minGrant() int64 {
	return int64(min(s.config.MaxStreamBuffer, max(s.config.MaxFrameSize, minGrantCap)))
}

// owedLocked is what st may hold at most without new credit: everything up
// to the edge of its window that it has not consumed, or what it holds if
// the peer sent past the edge before a smaller window reached it. rmu held.
func (st *Stream) owedLocked() int64 {
	top := st.edge
	if int32(st.recvd-st.edge) > 0 {
		top = st.recvd
	}
	return int64(int32(top - st.consumed))
}

// grantLocked picks st's next window, at most want, moves the window's edge
// to consumed+window and returns the window to put in the UPD frame. A
// stream alone in the budget gets want; otherwise it gets half of what the
// other streams leave free, but never less than minGrant. rmu held.
func (s *Session) grantLocked(st *Stream, want int64) uint32 {
	s.grantMu.Lock()
	defer s.grantMu.Unlock()
	before := st.owedLocked()
	w := want
	// Every stream may have minGrant beyond the budget; what the others are
	// owed past that is what they take from the budget.
	if others := s.excess.Load() - s.excessOf(before); others > 0 {
		share := (int64(s.config.MaxReceiveBuffer) - others) / 2
		if share < w {
			// Idle streams may sit on credit they do not use.
			s.wantReclaim()
		}
		w = min(w, max(s.minGrant(), share))
	}
	w = max(1, min(w, math.MaxInt32))
	st.win = uint32(w)
	st.edge = st.consumed + st.win
	st.reported = st.consumed
	s.addCredit(before, st.owedLocked())
	return st.win
}

// excessOf is the part of a stream's owed credit that counts against the
// budget: what is past the minGrant every stream may have.
func (s *Session) excessOf(owed int64) int64 {
	return max(0, owed-s.minGrant())
}

// addCredit records that a stream's owed credit went from before to after.
func (s *Session) addCredit(before, after int64) {
	if before == after {
		return
	}
	s.credit.Add(after - before)
	if d := s.excessOf(after) - s.excessOf(before); d != 0 {
		s.excess.Add(d)
	}
}

// openCreditLocked registers a new stream's credit: the window the peer
// assumes before any update. It returns the window to announce at once
// (true) when the budget cannot afford that much. rmu held or st unshared.
func (s *Session) openCreditLocked(st *Stream) (uint32, bool) {
	st.edge = initialPeerWindow
	st.win = initialPeerWindow
	st.credited = true
	s.addCredit(0, initialPeerWindow)
	want := min(int64(s.config.MaxStreamBuffer), initialPeerWindow)
	w := s.grantLocked(st, want)
	return w, w != initialPeerWindow
}

// moveCreditLocked applies a change of st's owed credit made by f. rmu held.
func (st *Stream) moveCreditLocked(f func()) {
	if !st.credited {
		f()
		return
	}
	before := st.owedLocked()
	f()
	st.sess.addCredit(before, st.owedLocked())
}

// dropCreditLocked removes st from the session's credit for good. rmu held.
func (st *Stream) dropCreditLocked() {
	if st.credited {
		st.sess.addCredit(st.owedLocked(), 0)
		st.credited = false
	}
}

// shielding reports whether the sender holds back data for a peer that may
// stop reading its connection (version 2 only: version 1 has no window
// updates to learn from). sd.mu held.
func (sd *sender) shielding() bool {
	return sd.sess.ver == 2 && !sd.peerCredit
}

// shieldRoomLocked is how much more st may send before the data a plain
// smux peer may hold unread for it reaches half of its window: exactly what
// the peer must consume before it reports again, so the stream always
// reaches that report. A cap on the session's total would not: the peer's
// reads below its reporting point are invisible to the sender, and with a
// few streams each under it both ends would wait for ever. sd.mu held.
func (sd *sender) shieldRoomLocked(st *Stream) int64 {
	own := int64(int32(st.sent - st.peerConsumed))
	return int64(st.peerWindow/2) - own
}

// peerSaidHello reports whether the peer allots credit (it sent helloID).
func (s *Session) peerSaidHello() bool {
	sd := &s.sender
	sd.mu.Lock()
	defer sd.mu.Unlock()
	return sd.peerCredit
}

// openStreamCredit sets up a new stream's flow control in both directions
// and returns the window to announce for it, if one must be announced.
func (s *Session) openStreamCredit(st *Stream) (uint32, bool) {
	hello := s.peerSaidHello()
	st.rmu.Lock()
	w, shrink := s.openCreditLocked(st)
	st.rmu.Unlock()
	if hello {
		s.sender.mu.Lock()
		if int32(st.sent) == 0 && st.peerWindow == initialPeerWindow {
			st.peerWindow = helloFirstWindow
		}
		s.sender.mu.Unlock()
	}
	return w, shrink || hello
}

// peerAllotsCredit records the peer's hello: from now on it never stops
// reading, so nothing is held back for it, and streams the shield held wait
// no longer.
func (s *Session) peerAllotsCredit() {
	s.smu.Lock()
	streams := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.smu.Unlock()
	sd := &s.sender
	sd.mu.Lock()
	sd.peerCredit = true
	for _, st := range streams {
		if !st.queued && sd.sendable(st) {
			sd.pushBack(st)
		}
	}
	sd.kickLocked()
	sd.mu.Unlock()
}

// reclaimPeriod spaces the passes that take unused credit back from idle
// streams while some stream wants more than the budget leaves it.
const reclaimPeriod = 100 * time.Millisecond

// wantReclaim schedules a reclaim pass unless one is scheduled already.
func (s *Session) wantReclaim() {
	if s.reclaiming.CompareAndSwap(false, true) {
		time.AfterFunc(reclaimPeriod, s.reclaimPass)
	}
}

// reclaimPass shrinks the window of every stream that received nothing
// since the previous pass and has more than minGrant of credit left: such
// credit only keeps busy streams from growing. The peer learns the smaller
// window from an UPD; what it sent before that is still accepted.
func (s *Session) reclaimPass() {
	defer s.reclaiming.Store(false)
	if s.closed.Load() {
		return
	}
	s.smu.Lock()
	streams := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.smu.Unlock()
	floor := s.minGrant()
	for _, st := range streams {
		var upd bool
		var consumed, window uint32
		st.rmu.Lock()
		if st.credited && !st.finRecv.Load() && !st.shutdown.Load() {
			spare := int64(int32(st.edge - st.recvd))
			if spare > floor && st.recvd == st.recvdAtPass {
				held := int64(int32(st.recvd - st.consumed))
				if held < 0 {
					held = 0
				}
				st.moveCreditLocked(func() {
					st.win = uint32(floor)
					st.edge = st.consumed + uint32(held+floor)
					st.reported = st.consumed
				})
				upd, consumed, window = true, st.consumed, uint32(held+floor)
			}
			st.recvdAtPass = st.recvd
		}
		st.rmu.Unlock()
		if upd {
			s.queueControl(cmdUPD, st.id, consumed, window)
		}
	}
}

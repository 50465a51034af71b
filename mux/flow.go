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
// hold unread within an estimate of the peer's budget, and each stream
// within half the peer's window, the least that still makes the peer send
// its next window update.

import "math"

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
	if others := s.credit.Load() - before; others > 0 {
		share := (int64(s.config.MaxReceiveBuffer) - others) / 2
		w = min(w, max(s.minGrant(), share))
	}
	w = max(1, min(w, math.MaxInt32))
	st.win = uint32(w)
	st.edge = st.consumed + st.win
	st.reported = st.consumed
	s.credit.Add(st.owedLocked() - before)
	return st.win
}

// openCreditLocked registers a new stream's credit: the window the peer
// assumes before any update. It returns the window to announce at once
// (true) when the budget cannot afford that much. rmu held or st unshared.
func (s *Session) openCreditLocked(st *Stream) (uint32, bool) {
	st.edge = initialPeerWindow
	st.win = initialPeerWindow
	st.credited = true
	s.credit.Add(initialPeerWindow)
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
	st.sess.credit.Add(st.owedLocked() - before)
}

// dropCreditLocked removes st from the session's credit for good. rmu held.
func (st *Stream) dropCreditLocked() {
	if st.credited {
		st.sess.credit.Add(-st.owedLocked())
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
// smux peer may hold unread reaches half of st's window, or the estimate of
// the peer's budget for the whole session. sd.mu held.
func (sd *sender) shieldRoomLocked(st *Stream) int64 {
	own := int64(int32(st.sent - st.peerConsumed))
	per := int64(st.peerWindow/2) - own
	return min(per, sd.peerBudget-sd.unacked)
}

// noteSentLocked accounts for n bytes of st handed to the connection.
func (sd *sender) noteSentLocked(st *Stream, n int) {
	st.sent += uint32(n)
	sd.unacked += int64(n)
}

// noteUpdateLocked applies a window update from the peer to st.
func (sd *sender) noteUpdateLocked(st *Stream, consumed, window uint32) {
	if st.sendCounted {
		before := int64(int32(st.sent - st.peerConsumed))
		after := int64(int32(st.sent - consumed))
		sd.unacked += after - before
	}
	st.peerConsumed = consumed
	st.peerWindow = window
}

// forgetSendLocked stops counting st's unacknowledged data: the stream is
// gone and no update for it will come.
func (sd *sender) forgetSendLocked(st *Stream) {
	if st.sendCounted {
		sd.unacked -= int64(int32(st.sent - st.peerConsumed))
		st.sendCounted = false
	}
}

// holdLocked remembers a stream that has data but no room under the shield,
// so that it is queued again when room opens anywhere in the session.
func (sd *sender) holdLocked(st *Stream) {
	if !st.held && len(st.wbuf) > 0 && sd.shielding() {
		st.held = true
		sd.heldStreams = append(sd.heldStreams, st)
	}
}

// releaseLocked queues the held streams that may send again and forgets
// those that no longer wait.
func (sd *sender) releaseLocked() {
	if len(sd.heldStreams) == 0 {
		return
	}
	keep := sd.heldStreams[:0]
	for _, st := range sd.heldStreams {
		switch {
		case len(st.wbuf) == 0:
			st.held = false
		case sd.sendable(st):
			st.held = false
			if !st.queued {
				sd.pushBack(st)
			}
		default:
			keep = append(keep, st)
		}
	}
	clear(sd.heldStreams[len(keep):])
	sd.heldStreams = keep
	sd.kickLocked()
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
// reading, so nothing is held back for it.
func (s *Session) peerAllotsCredit() {
	sd := &s.sender
	sd.mu.Lock()
	if !sd.peerCredit {
		sd.peerCredit = true
		sd.releaseLocked()
	}
	sd.mu.Unlock()
}

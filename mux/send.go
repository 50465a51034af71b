package mux

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of one batch handed to the connection in a single write.
const (
	maxBatchFrames = 128
	maxBatchBytes  = 512 << 10
)

type writeMode int

const (
	writeVectored writeMode = iota // net.Buffers: writev on TCP and unix sockets
	writeBuffers                   // the conn has WriteBuffers (kcp-go)
	writeFlat                      // anything else: one contiguous Write per batch
)

// sender schedules frames onto the connection. There is no sending
// goroutine: whoever has something to send and finds nobody flushing becomes
// the flusher, writes batches (control frames first, then one data frame per
// ready stream in turn) and hands the job to a waiting writer when its own
// data is out. All fields are guarded by mu; the scratch fields at the end
// belong to the current flusher.
type sender struct {
	sess     *Session
	mu       sync.Mutex
	flushing bool
	ctrl     []byte // encoded control frames waiting to be written
	spare    []byte
	// carry holds the unwritten rest of a batch whose write hit a
	// deadline; it goes out before anything else.
	carry []byte
	// connDL is the write deadline last set on the connection (UnixNano).
	connDL int64
	// ctrlDL bounds the batches written by a caller that only came to send
	// a control frame (UnixNano, 0 = none); ctrlBound is the last such bound.
	ctrlDL, ctrlBound int64
	dlConn            interface{ SetWriteDeadline(time.Time) error }

	head, tail *Stream // streams with data they may send now, in turn

	// Version 2 shield for a plain smux peer (flow.go).
	peerCredit bool // the peer said hello: it never stops reading

	pongQueued bool // an answer to a ping waits in ctrl (liveness.go)
	pingQueued bool // a ping waits in ctrl (liveness.go)

	batchDL int64 // earliest write deadline among the batch's streams
	mode    writeMode
	// kernelConn: the session sits straight on a TCP or unix socket, so
	// its waiters may spin (see Session.spin).
	kernelConn bool
	bw         interface{ WriteBuffers([][]byte) (int, error) }
	// budget, when the connection paces what it sends, is asked before
	// each batch of data how many bytes the link takes now; it blocks
	// until the link takes some. Data then waits here, where every stream
	// gets its turn, rather than in the connection behind bulk data.
	budget    interface{ SendBudget() int }
	vec       [][]byte
	wv        net.Buffers
	hdrs      []byte
	batch     []*Stream
	flat      []byte
	nopQueued atomic.Bool
}

func (sd *sender) init(s *Session) {
	sd.sess = s
	sd.hdrs = make([]byte, 0, maxBatchFrames*headerSize)
	sd.vec = make([][]byte, 0, 2*maxBatchFrames+1)
	sd.batch = make([]*Stream, 0, maxBatchFrames)
	switch c := s.conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		sd.mode = writeVectored
		sd.kernelConn = true
	case interface{ WriteBuffers([][]byte) (int, error) }:
		sd.mode = writeBuffers
		sd.bw = c
	default:
		sd.mode = writeFlat
	}
	sd.dlConn, _ = s.conn.(interface{ SetWriteDeadline(time.Time) error })
	if b, ok := s.conn.(interface{ SendBudget() int }); ok && b.SendBudget() >= 0 { // negative: this one does not pace
		sd.budget = b
	}
}

func (sd *sender) pushBack(st *Stream) {
	st.queued = true
	st.prev = sd.tail
	st.next = nil
	if sd.tail != nil {
		sd.tail.next = st
	} else {
		sd.head = st
	}
	sd.tail = st
}

func (sd *sender) unlink(st *Stream) {
	if st.prev != nil {
		st.prev.next = st.next
	} else {
		sd.head = st.next
	}
	if st.next != nil {
		st.next.prev = st.prev
	} else {
		sd.tail = st.prev
	}
	st.next, st.prev, st.queued = nil, nil, false
}

// sendable reports whether st has data it may send now.
func (sd *sender) sendable(st *Stream) bool {
	if len(st.wbuf) == 0 {
		return false
	}
	if sd.sess.ver == 1 {
		return true
	}
	return st.window() > 0 && (!sd.shielding() || sd.shieldRoomLocked(st) > 0)
}

// kickLocked wakes the writer at the front of the queue when nobody is
// flushing, so queued data never waits for an unrelated event.
func (sd *sender) kickLocked() {
	if !sd.flushing && sd.head != nil {
		sd.head.signalW()
	}
}

// flushLocked writes batches until the caller's own work is out, then hands
// over to the next waiting writer or finishes the remaining control frames.
// self is the calling stream, or nil for a control frame. mu is held on
// entry and on return; flushing is true on entry.
func (sd *sender) flushLocked(self *Stream) {
	for {
		if sd.sess.closed.Load() {
			sd.flushing = false
			return
		}
		limit := maxBatchBytes
		if sd.budget != nil && sd.head != nil && len(sd.carry) == 0 {
			sd.mu.Unlock()
			b := sd.budget.SendBudget()
			sd.mu.Lock()
			if b > 0 {
				limit = min(limit, b)
			}
		}
		ctrl, ok := sd.buildLocked(limit)
		if !ok {
			sd.flushing = false
			return
		}
		sd.mu.Unlock()
		err := sd.write()
		sd.mu.Lock()
		if ctrl != nil {
			sd.spare = ctrl[:0]
		}
		for _, st := range sd.batch {
			st.inflight--
			if st.inflight == 0 && st != self {
				st.signalW()
			}
		}
		clear(sd.batch)
		if isTimeout(err) {
			// A writer's deadline passed while the connection was
			// stuck: what was not written is now in carry, so every
			// writer in the batch is free to give up. Stop here and
			// let the writers look at their deadlines.
			sd.flushing = false
			sd.kickLocked()
			return
		}
		if err != nil {
			sd.flushing = false
			sd.mu.Unlock()
			sd.sess.closeWith(fmt.Errorf("write to %s: %w", peerName(sd.sess), err))
			sd.mu.Lock()
			return
		}
		if (self == nil || !self.queued) && sd.head != nil {
			sd.flushing = false
			sd.head.signalW()
			return
		}
	}
}

// buildLocked fills the scratch vector with the next batch. It returns the
// control buffer taken into the batch and whether there is anything to write.
// The batch carries at least one data frame and stops at limit bytes.
func (sd *sender) buildLocked(limit int) ([]byte, bool) {
	vec := sd.vec[:0]
	hdrs := sd.hdrs[:0]
	batch := sd.batch[:0]
	sd.batchDL = 0
	if len(sd.carry) > 0 {
		vec = append(vec, sd.carry)
	}
	var ctrl []byte
	if len(sd.ctrl) > 0 {
		ctrl = sd.ctrl
		vec = append(vec, ctrl)
		sd.ctrl = sd.spare
		sd.spare = nil
		sd.pongQueued, sd.pingQueued = false, false
	}
	frameSize := sd.sess.config.MaxFrameSize
	v2 := sd.sess.ver == 2
	bytes := 0
	for sd.head != nil && len(batch) < maxBatchFrames && bytes < limit {
		st := sd.head
		sd.unlink(st)
		n := min(len(st.wbuf), frameSize)
		if v2 {
			// The peer may have shrunk the window since st was queued.
			w := int64(st.window())
			if sd.shielding() {
				w = min(w, sd.shieldRoomLocked(st))
			}
			if w <= 0 {
				continue
			}
			n = min(n, int(w))
		}
		if dl := st.wdl.Load(); dl != 0 && (sd.batchDL == 0 || dl < sd.batchDL) {
			sd.batchDL = dl
		}
		h := hdrs[len(hdrs) : len(hdrs)+headerSize]
		hdrs = hdrs[:len(hdrs)+headerSize]
		putHeader(h, sd.sess.ver, cmdPSH, n, st.id)
		vec = append(vec, h, st.wbuf[:n])
		st.wbuf = st.wbuf[n:]
		st.sent += uint32(n)
		st.inflight++
		batch = append(batch, st)
		bytes += n
		if sd.sendable(st) {
			sd.pushBack(st)
		}
	}
	if sd.ctrlDL != 0 && (sd.batchDL == 0 || sd.ctrlDL < sd.batchDL) {
		sd.batchDL = sd.ctrlDL
	}
	sd.vec, sd.hdrs, sd.batch = vec, hdrs, batch
	return ctrl, len(vec) > 0
}

// write hands the current batch to the connection. When a writer in the
// batch has a deadline, the connection gets it too; if it passes mid-batch,
// the unwritten rest is copied into carry so that the frames stay whole on
// the wire and the writers' buffers are free again.
func (sd *sender) write() error {
	hadCarry := len(sd.carry) > 0
	if sd.dlConn != nil && sd.batchDL != sd.connDL {
		var t time.Time
		if sd.batchDL != 0 {
			t = time.Unix(0, sd.batchDL)
		}
		if err := sd.dlConn.SetWriteDeadline(t); err == nil {
			sd.connDL = sd.batchDL
		}
	}
	var n int
	var err error
	switch sd.mode {
	case writeVectored:
		sd.wv = sd.vec
		var n64 int64
		n64, err = sd.wv.WriteTo(sd.sess.conn)
		n = int(n64)
		if err != nil {
			// WriteTo consumed sd.vec's entries as it went; what is
			// left of the batch is in sd.wv.
			sd.vec = sd.vec[:copy(sd.vec[:cap(sd.vec)], sd.wv)]
			n = 0
		}
	case writeBuffers:
		n, err = sd.bw.WriteBuffers(sd.vec)
	default:
		if len(sd.vec) == 1 {
			n, err = sd.sess.conn.Write(sd.vec[0])
			break
		}
		flat := sd.flat[:0]
		for _, b := range sd.vec {
			flat = append(flat, b...)
		}
		sd.flat = flat
		n, err = sd.sess.conn.Write(flat)
	}
	if isTimeout(err) {
		rest := make([]byte, 0, 64<<10)
		for _, b := range sd.vec {
			if n >= len(b) {
				n -= len(b)
				continue
			}
			rest = append(rest, b[n:]...)
			n = 0
		}
		sd.carry = rest
	} else if hadCarry && err == nil {
		sd.carry = nil
	}
	clear(sd.vec)
	return err
}

func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// ctrlFrame is a control frame to send: SYN, FIN, NOP or UPD.
type ctrlFrame struct {
	cmd              byte
	sid              uint32
	consumed, window uint32
}

// sendControl queues a control frame and makes sure it gets written: the
// caller flushes it itself unless a flush is under way, which will take it.
func (s *Session) sendControl(cmd byte, sid uint32, consumed, window uint32) error {
	return s.sendControls(ctrlFrame{cmd: cmd, sid: sid, consumed: consumed, window: window})
}

// sendControls is sendControl for frames that must go out together.
func (s *Session) sendControls(frames ...ctrlFrame) error {
	sd := &s.sender
	sd.mu.Lock()
	if s.closed.Load() {
		sd.mu.Unlock()
		return s.closeErr
	}
	for _, f := range frames {
		sd.appendControl(f.cmd, f.sid, f.consumed, f.window)
	}
	if !sd.flushing {
		// Bound the wait on a connection the peer no longer drains, as
		// xtaci/smux does: what is left then waits in carry.
		sd.flushing = true
		// Reuse the last bound while it is at least half a timeout
		// away, so the connection's deadline is not reset per frame.
		if now := time.Now().UnixNano(); sd.ctrlBound-now < int64(controlWriteTimeout/2) {
			sd.ctrlBound = now + int64(controlWriteTimeout)
		}
		sd.ctrlDL = sd.ctrlBound
		sd.flushLocked(nil)
		sd.ctrlDL = 0
	}
	sd.mu.Unlock()
	if s.closed.Load() {
		return s.closeErr
	}
	return nil
}

// queueControl queues a control frame without blocking the caller, which
// is the reading goroutine or the session's start: a flush under way takes
// the frame, or a goroutine is started to write it.
func (s *Session) queueControl(cmd byte, sid uint32, consumed, window uint32) {
	sd := &s.sender
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if s.closed.Load() {
		return
	}
	sd.appendControl(cmd, sid, consumed, window)
	if sd.flushing {
		return
	}
	sd.flushing = true
	go func() {
		sd.mu.Lock()
		sd.flushLocked(nil)
		sd.mu.Unlock()
	}()
}

// controlWriteTimeout bounds how long Close, CloseWrite, OpenStream and a
// window update wait for a connection that takes no bytes.
var controlWriteTimeout = 30 * time.Second

// sendControlAsync queues a keepalive frame without blocking the caller on
// the connection; at most one is outstanding.
func (s *Session) sendControlAsync(cmd byte) {
	sd := &s.sender
	if !sd.nopQueued.CompareAndSwap(false, true) {
		return
	}
	sd.mu.Lock()
	if s.closed.Load() {
		sd.mu.Unlock()
		return
	}
	sd.appendControl(cmd, 0, 0, 0)
	if sd.flushing {
		sd.nopQueued.Store(false)
		sd.mu.Unlock()
		return
	}
	sd.flushing = true
	sd.mu.Unlock()
	go func() {
		defer sd.nopQueued.Store(false)
		sd.mu.Lock()
		sd.flushLocked(nil)
		sd.mu.Unlock()
	}()
}

func (sd *sender) appendControl(cmd byte, sid uint32, consumed, window uint32) {
	n := len(sd.ctrl)
	size := headerSize
	if cmd == cmdUPD {
		size += updSize
	}
	sd.ctrl = append(sd.ctrl, make([]byte, size)...)
	b := sd.ctrl[n:]
	if cmd == cmdUPD {
		putHeader(b, sd.sess.ver, cmd, updSize, sid)
		putUint32(b[headerSize:], consumed)
		putUint32(b[headerSize+4:], window)
	} else {
		putHeader(b, sd.sess.ver, cmd, 0, sid)
	}
}

func putUint32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func peerName(s *Session) string {
	if a := s.RemoteAddr(); a != nil {
		return "peer " + a.String()
	}
	return "peer"
}

package mux

import (
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Stream is one bidirectional byte stream of a Session. It implements
// net.Conn; CloseWrite half-closes it.
type Stream struct {
	id   uint32
	sess *Session

	// receive side, guarded by rmu
	rmu      sync.Mutex
	rq       chunkQueue
	recvd    uint32 // v2: bytes received in total
	consumed uint32 // v2: bytes read by the application in total
	reported uint32 // v2: consumed value last sent in an UPD
	edge     uint32 // v2: the peer may send up to here (flow.go)
	win      uint32 // v2: the window last granted
	credited bool   // v2: owed credit is counted in the session's
	// v2: recvd at the last reclaim pass; equal at the next pass means idle
	recvdAtPass uint32
	rwait       []byte // the buffer of a reader waiting in Read, filled directly
	rgot        int    // bytes of rwait already filled
	rfilling    bool   // the session is copying into rwait right now
	busy        bool   // the last read found data: the next wait spins first
	dieCh       chan struct{}
	dieShut     bool
	rsig        chan struct{}
	rdl         atomic.Int64 // read deadline, UnixNano, 0 = none

	// send side, guarded by sess.sender.mu
	wlock        sync.Mutex // one Write at a time
	wbuf         []byte     // the part of the current Write not yet taken by a flusher
	inflight     int        // frames of wbuf in the batch being written
	queued       bool
	next, prev   *Stream
	sent         uint32 // v2: bytes sent in total
	peerConsumed uint32 // v2: from the peer's last UPD
	peerWindow   uint32
	wclosedL     bool // FIN sent or queued
	wsig         chan struct{}
	wdl          atomic.Int64

	wakeQueued bool // owned by the session's reading goroutine

	byPeer   bool        // the peer opened the stream
	marked   bool        // the peer opened it with OpenMarkedStream (marked.go)
	finRecv  atomic.Bool // the peer will send no more data
	wclosed  atomic.Bool // mirror of wclosedL for lock-free checks
	shutdown atomic.Bool // Close was called
}

func newStream(id uint32, s *Session) *Stream {
	return &Stream{
		id:         id,
		sess:       s,
		rsig:       make(chan struct{}, 1),
		wsig:       make(chan struct{}, 1),
		peerWindow: initialPeerWindow,
	}
}

// ID returns the stream identifier: odd for streams the client opened,
// even for the server's.
func (st *Stream) ID() uint32 { return st.id }

func (st *Stream) signalR() {
	select {
	case st.rsig <- struct{}{}:
	default:
	}
}

func (st *Stream) signalW() {
	select {
	case st.wsig <- struct{}{}:
	default:
	}
}

// window is how many more bytes the peer allows (version 2).
func (st *Stream) window() int32 {
	return int32(st.peerWindow) - int32(st.sent-st.peerConsumed)
}

// Read reads data sent by the peer. Data received before the peer's FIN is
// always delivered, then io.EOF, even after CloseWrite or a session failure.
func (st *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var timer *time.Timer
	defer func() { stopTimer(timer) }()
	st.rmu.Lock()
	for {
		if st.rfilling {
			// The session is copying into p; it signals when done.
			st.rmu.Unlock()
			<-st.rsig
			st.rmu.Lock()
			continue
		}
		if st.rgot > 0 {
			n := st.rgot
			st.rgot, st.rwait = 0, nil
			st.consumedLocked(n, false)
			return n, nil
		}
		st.rwait = nil
		if st.rq.size > 0 {
			n := st.rq.read(p)
			st.consumedLocked(n, true)
			return n, nil
		}
		if err := st.readErrLocked(); err != nil {
			st.rmu.Unlock()
			return 0, err
		}
		st.rwait = p
		timer = st.waitLocked(timer)
	}
}

// WriteTo writes everything the peer sends to w until the peer's FIN, then
// returns nil. It avoids the copy that Read makes.
func (st *Stream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	var timer *time.Timer
	defer func() { stopTimer(timer) }()
	st.rmu.Lock()
	for {
		if c, ok := st.rq.front(); ok {
			n := c.end - c.off
			st.consumedLocked(n, true)
			_, err := w.Write(c.data())
			c.free()
			total += int64(n)
			if err != nil {
				return total, err
			}
			st.rmu.Lock()
			continue
		}
		if err := st.readErrLocked(); err != nil {
			st.rmu.Unlock()
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		timer = st.waitLocked(timer)
	}
}

// spinRounds bounds how often a waiter yields the processor, watching ch,
// before it parks. Parking and waking an idle thread costs tens of
// microseconds on a quiet machine, which in a window-limited transfer is
// paid on every round trip of a window update; a waiter that yields instead
// keeps its thread running, and the scheduler polls the network meanwhile.
const spinRounds = 10

// spin yields up to spinRounds times and reports whether ch fired meanwhile.
// Only one waiter of a session spins at a time: with many streams waiting,
// spinning would only take the processor from the ones with work. Only a
// session straight on a kernel socket spins: over KCP, or a wrapper that does
// work of its own, the processor is better left to those goroutines (through
// the tunnel over KCP, spinning cost about a third of the throughput).
func (s *Session) spin(ch chan struct{}) bool {
	if !s.sender.kernelConn || s.spinners.Add(1) > 1 {
		s.spinners.Add(-1)
		return false
	}
	defer s.spinners.Add(-1)
	for range spinRounds {
		runtime.Gosched()
		select {
		case <-ch:
			return true
		default:
		}
	}
	return false
}

// waitLocked waits, with rmu released, until data or an event may have
// arrived or the read deadline passes. It reuses and returns timer.
func (st *Stream) waitLocked(timer *time.Timer) *time.Timer {
	busy := st.busy
	st.busy = false
	st.rmu.Unlock()
	if busy && st.sess.spin(st.rsig) {
		st.rmu.Lock()
		return timer
	}
	var timeout <-chan time.Time
	timer, timeout = armTimer(timer, st.rdl.Load())
	select {
	case <-st.rsig:
	case <-st.sess.die:
	case <-timeout:
	}
	st.rmu.Lock()
	return timer
}

// consumedLocked accounts for n bytes taken by the application, unlocks
// rmu, returns the version 1 budget to the session if the bytes were charged
// to it (queued rather than handed straight to a reader) and, in version 2,
// grants the stream new credit once it has consumed a quarter of its window.
func (st *Stream) consumedLocked(n int, charged bool) {
	s := st.sess
	st.busy = true
	var upd bool
	var window uint32
	if s.ver == 2 {
		st.moveCreditLocked(func() { st.consumed += uint32(n) })
		if !st.finRecv.Load() && st.credited && st.consumed-st.reported >= max(st.win/4, 1) {
			window = s.grantLocked(st, min(int64(s.config.MaxStreamBuffer), 2*int64(st.win)))
			upd = true
		}
	}
	consumed := st.consumed
	st.rmu.Unlock()
	if charged {
		s.returnTokens(n)
	}
	if upd {
		// A failure here means the session is gone; the data already
		// read is still good, so the reader learns of it on its next call.
		_ = s.sendControl(cmdUPD, st.id, consumed, window)
	}
}

func (st *Stream) readErrLocked() error {
	switch {
	case st.shutdown.Load():
		return io.ErrClosedPipe
	case st.finRecv.Load():
		return io.EOF
	case st.sess.closed.Load():
		return st.sess.closeErr
	}
	if dl := st.rdl.Load(); dl != 0 && time.Now().UnixNano() >= dl {
		return ErrTimeout
	}
	return nil
}

// Write sends b to the peer, split into frames. It returns once every byte
// has been handed to the connection, or with the error that stopped it.
func (st *Stream) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	st.wlock.Lock()
	defer st.wlock.Unlock()
	sd := &st.sess.sender
	var timer *time.Timer
	defer func() { stopTimer(timer) }()

	sd.mu.Lock()
	if err := st.writeErrLocked(); err != nil {
		sd.mu.Unlock()
		return 0, err
	}
	st.wbuf = b
	if sd.sendable(st) {
		sd.pushBack(st)
	}
	var err error
	unsent := 0
	for {
		if err == nil {
			if len(st.wbuf) == 0 && st.inflight == 0 {
				break
			}
			err = st.writeErrLocked()
			if err != nil {
				// Give up what no flusher has taken yet; what is in
				// flight still uses b, so wait for it below.
				if st.queued {
					sd.unlink(st)
					sd.kickLocked()
				}
				unsent = len(st.wbuf)
				st.wbuf = nil
			}
		}
		if err != nil && st.inflight == 0 {
			break
		}
		if err == nil && st.queued && !sd.flushing {
			sd.flushing = true
			sd.flushLocked(st)
			continue
		}
		windowShut := err == nil && !st.queued && len(st.wbuf) > 0
		sd.mu.Unlock()
		if err != nil {
			<-st.wsig // the flusher signals when our frames are out
		} else if windowShut && st.sess.spin(st.wsig) {
			// The window reopened while we stayed on the CPU.
		} else {
			var timeout <-chan time.Time
			timer, timeout = armTimer(timer, st.wdl.Load())
			select {
			case <-st.wsig:
			case <-st.sess.die:
			case <-timeout:
			}
		}
		sd.mu.Lock()
	}
	sd.mu.Unlock()
	return len(b) - unsent, err
}

func (st *Stream) writeErrLocked() error {
	switch {
	case st.wclosedL:
		return io.ErrClosedPipe
	case st.sess.closed.Load():
		return st.sess.closeErr
	}
	if dl := st.wdl.Load(); dl != 0 && time.Now().UnixNano() >= dl {
		return ErrTimeout
	}
	return nil
}

// CloseWrite sends FIN: the peer reads io.EOF after the data already sent,
// while this side keeps reading until the peer's own FIN.
func (st *Stream) CloseWrite() error {
	if !st.closeSend() {
		return io.ErrClosedPipe
	}
	err := st.sess.sendControl(cmdFIN, st.id, 0, 0)
	if st.finRecv.Load() {
		st.sess.removeStream(st)
	}
	return err
}

// closeSend marks the write side closed, dropping any write that waits.
// It reports whether the side was open.
func (st *Stream) closeSend() bool {
	sd := &st.sess.sender
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if st.wclosedL {
		return false
	}
	st.wclosedL = true
	st.wclosed.Store(true)
	if st.queued {
		sd.unlink(st)
		sd.kickLocked()
	}
	st.signalW()
	return true
}

// Close closes both directions; unread data is dropped. Calling it again
// does nothing.
func (st *Stream) Close() error {
	if !st.shutdown.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	if st.closeSend() && !st.sess.closed.Load() {
		err = st.sess.sendControl(cmdFIN, st.id, 0, 0)
	}
	st.rmu.Lock()
	n := st.rq.release()
	st.dropCreditLocked()
	st.rmu.Unlock()
	st.sess.returnTokens(n)
	st.signalR()
	st.closeDie()
	st.sess.removeStream(st)
	if st.sess.closed.Load() {
		return nil
	}
	return err
}

// GetDieCh returns a channel that is closed when the stream or its session
// closes.
func (st *Stream) GetDieCh() <-chan struct{} {
	st.rmu.Lock()
	defer st.rmu.Unlock()
	if st.dieCh == nil {
		st.dieCh = make(chan struct{})
		if st.dieShut || st.shutdown.Load() || st.sess.closed.Load() {
			close(st.dieCh)
			st.dieShut = true
		}
	}
	return st.dieCh
}

func (st *Stream) closeDie() {
	st.rmu.Lock()
	if st.dieCh != nil && !st.dieShut {
		close(st.dieCh)
	}
	st.dieShut = true
	st.rmu.Unlock()
}

// SetReadDeadline sets the deadline for Read and WriteTo.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.rdl.Store(unixNano(t))
	st.signalR()
	return nil
}

// SetWriteDeadline sets the deadline for Write.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.wdl.Store(unixNano(t))
	st.signalW()
	return nil
}

// SetDeadline sets both deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	st.SetReadDeadline(t)
	return st.SetWriteDeadline(t)
}

// LocalAddr returns the local address of the session's connection.
func (st *Stream) LocalAddr() net.Addr { return st.sess.LocalAddr() }

// RemoteAddr returns the remote address of the session's connection.
func (st *Stream) RemoteAddr() net.Addr { return st.sess.RemoteAddr() }

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// armTimer returns a channel that fires at the deadline dl (UnixNano), or
// nil when there is none, reusing t.
func armTimer(t *time.Timer, dl int64) (*time.Timer, <-chan time.Time) {
	if dl == 0 {
		return t, nil
	}
	d := time.Until(time.Unix(0, dl))
	if t == nil {
		t = time.NewTimer(d)
	} else {
		t.Reset(d)
	}
	return t, t.C
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

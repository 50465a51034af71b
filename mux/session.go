package mux

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const acceptBacklog = 1024

// Session multiplexes streams over one connection. It is safe for
// concurrent use.
type Session struct {
	conn   io.ReadWriteCloser
	config Config
	ver    byte
	client bool

	// streams by id, guarded by smu (never held while taking another lock)
	smu      sync.Mutex
	streams  map[uint32]*Stream
	nextID   uint32
	goAway   bool
	peerOpen int // streams the peer opened that are still open
	accepts  chan *Stream
	acceptDL atomic.Int64 // UnixNano, 0 = none

	// version 1 receive accounting: bytes that may still be buffered for
	// the application before the reader pauses
	bucket    atomic.Int64
	bucketSig chan struct{}
	heard     atomic.Bool   // a frame arrived since the last keepalive check
	peerKnown atomic.Bool   // the peer said hello (liveness.go)
	helloCh   chan struct{} // closed when the peer's hello arrives
	peerMarks atomic.Bool   // the peer accepts marked streams (marked.go)
	dataSeen  atomic.Bool   // a frame other than NOP arrived since TakeDataSeen
	spinners  atomic.Int32

	// version 2 receive accounting (flow.go): credit owed to all streams
	credit  atomic.Int64
	excess  atomic.Int64 // the part of credit past minGrant per stream
	grantMu sync.Mutex
	refused atomic.Uint64 // streams refused past MaxStreams
	// refused streams whose FIN is sent a second time (finAgainLater)
	againMu    sync.Mutex
	againIDs   []uint32
	againTimer *time.Timer
	// a reclaim pass is scheduled (flow.go)
	reclaiming atomic.Bool

	sender
	recv receiver

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	die       chan struct{}
}

// Client starts the client side of a session over conn.
func Client(conn io.ReadWriteCloser, config *Config) (*Session, error) {
	return newSession(conn, config, true)
}

// Server starts the server side of a session over conn.
func Server(conn io.ReadWriteCloser, config *Config) (*Session, error) {
	return newSession(conn, config, false)
}

func newSession(conn io.ReadWriteCloser, config *Config, client bool) (*Session, error) {
	if config == nil {
		config = DefaultConfig()
	}
	if err := VerifyConfig(config); err != nil {
		return nil, err
	}
	s := &Session{
		conn:      conn,
		config:    *config,
		ver:       byte(config.Version),
		client:    client,
		streams:   make(map[uint32]*Stream),
		accepts:   make(chan *Stream, acceptBacklog),
		bucketSig: make(chan struct{}, 1),
		die:       make(chan struct{}),
		helloCh:   make(chan struct{}),
	}
	if client {
		s.nextID = 1
	}
	s.bucket.Store(int64(config.MaxReceiveBuffer))
	s.sender.init(s)
	if config.AcceptMarked {
		// Before the hello, so that a peer that has the hello knows.
		s.queueControl(cmdNOP, markID, 0, 0)
	}
	s.queueControl(cmdNOP, helloID, 0, 0)
	go s.recvLoop()
	if !config.KeepAliveDisabled {
		go s.keepalive()
	}
	return s, nil
}

// OpenStream opens a new stream to the peer.
func (s *Session) OpenStream() (*Stream, error) { return s.openStream(false) }

func (s *Session) openStream(marked bool) (*Stream, error) {
	if s.closed.Load() {
		return nil, s.closeErr
	}
	s.smu.Lock()
	if s.goAway || s.nextID+2 < s.nextID {
		s.goAway = true
		s.smu.Unlock()
		return nil, ErrGoAway
	}
	s.nextID += 2
	st := newStream(s.nextID, s)
	s.streams[st.id] = st
	s.smu.Unlock()

	frames := make([]ctrlFrame, 0, 3)
	if marked {
		frames = append(frames, ctrlFrame{cmd: cmdNOP, sid: st.id})
	}
	frames = append(frames, ctrlFrame{cmd: cmdSYN, sid: st.id})
	if s.ver == 2 {
		// The window update right behind the SYN reaches the peer before
		// it can send anything, so the stream never gets more credit than
		// the budget affords.
		if w, announce := s.openStreamCredit(st); announce {
			frames = append(frames, ctrlFrame{cmd: cmdUPD, sid: st.id, window: w})
		}
	}
	if err := s.sendControls(frames...); err != nil {
		st.rmu.Lock()
		st.dropCreditLocked()
		st.rmu.Unlock()
		s.removeStream(st)
		return nil, err
	}
	return st, nil
}

// Open is OpenStream returning an io.ReadWriteCloser.
func (s *Session) Open() (io.ReadWriteCloser, error) { return s.OpenStream() }

// AcceptStream waits for the peer to open a stream. It honours the deadline
// set with SetDeadline.
func (s *Session) AcceptStream() (*Stream, error) {
	var timeout <-chan time.Time
	if dl := s.acceptDL.Load(); dl != 0 {
		d := time.Until(time.Unix(0, dl))
		if d <= 0 {
			return nil, ErrTimeout
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case st := <-s.accepts:
		return st, nil
	case <-s.die:
		return nil, s.closeErr
	case <-timeout:
		return nil, ErrTimeout
	}
}

// Accept is AcceptStream returning an io.ReadWriteCloser.
func (s *Session) Accept() (io.ReadWriteCloser, error) { return s.AcceptStream() }

// Close closes the session, its connection and all its streams. Calling it
// again does nothing.
func (s *Session) Close() error {
	return s.closeWith(nil)
}

// CloseWithError closes the session like Close, and its streams' pending and
// later calls fail with an error that wraps cause (nil behaves as Close).
func (s *Session) CloseWithError(cause error) error {
	return s.closeWith(cause)
}

// CloseErr returns why the session closed, or nil while it is open.
func (s *Session) CloseErr() error {
	if !s.closed.Load() {
		return nil
	}
	return s.closeErr
}

// closeWith closes the session for the given cause; the first cause wins.
func (s *Session) closeWith(cause error) error {
	var err error
	s.closeOnce.Do(func() {
		s.closeErr = &closedError{cause: cause}
		s.closed.Store(true)
		close(s.die)
		err = s.conn.Close()
		s.smu.Lock()
		streams := make([]*Stream, 0, len(s.streams))
		for _, st := range s.streams {
			streams = append(streams, st)
		}
		s.smu.Unlock()
		for _, st := range streams {
			st.closeDie()
		}
	})
	return err
}

// IsClosed reports whether the session has closed, whether by Close, a
// failed connection, a protocol error or a keepalive timeout.
func (s *Session) IsClosed() bool { return s.closed.Load() }

// CloseChan is closed when the session closes.
func (s *Session) CloseChan() <-chan struct{} { return s.die }

// NumStreams returns the number of streams that are not yet closed.
func (s *Session) NumStreams() int {
	if s.closed.Load() {
		return 0
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	return len(s.streams)
}

// SetDeadline sets the deadline for AcceptStream; the zero time clears it.
func (s *Session) SetDeadline(t time.Time) error {
	if t.IsZero() {
		s.acceptDL.Store(0)
	} else {
		s.acceptDL.Store(t.UnixNano())
	}
	return nil
}

// LocalAddr returns the local address of the connection, if it has one.
func (s *Session) LocalAddr() net.Addr {
	if c, ok := s.conn.(interface{ LocalAddr() net.Addr }); ok {
		return c.LocalAddr()
	}
	return nil
}

// RemoteAddr returns the remote address of the connection, if it has one.
func (s *Session) RemoteAddr() net.Addr {
	if c, ok := s.conn.(interface{ RemoteAddr() net.Addr }); ok {
		return c.RemoteAddr()
	}
	return nil
}

func (s *Session) lookup(id uint32) *Stream {
	s.smu.Lock()
	st := s.streams[id]
	s.smu.Unlock()
	return st
}

func (s *Session) removeStream(st *Stream) {
	s.smu.Lock()
	if s.streams[st.id] == st {
		delete(s.streams, st.id)
		if st.byPeer {
			s.peerOpen--
		}
	}
	s.smu.Unlock()
}

// RefusedStreams returns how many streams the peer tried to open past
// MaxStreams; each was closed at once.
func (s *Session) RefusedStreams() uint64 { return s.refused.Load() }

// finAgainDelay and finAgainMax: see finAgainLater.
const (
	finAgainDelay = 100 * time.Millisecond
	finAgainMax   = 1024
)

// finAgainLater sends the FIN of a refused stream once more, a moment
// later. xtaci/smux writes a stream's SYN before it records the stream, so
// a FIN that answers the SYN at once can arrive in between and be dropped:
// the peer's stream would then never end. The repeat reaches a stream that
// exists; a second FIN is harmless to both implementations. At most
// finAgainMax ids wait at a time (a peer opening streams in a loop gets
// the first FIN only for the others).
func (s *Session) finAgainLater(id uint32) {
	s.againMu.Lock()
	defer s.againMu.Unlock()
	if len(s.againIDs) >= finAgainMax {
		return
	}
	s.againIDs = append(s.againIDs, id)
	if s.againTimer != nil {
		return
	}
	s.againTimer = time.AfterFunc(finAgainDelay, func() {
		s.againMu.Lock()
		ids := s.againIDs
		s.againIDs, s.againTimer = nil, nil
		s.againMu.Unlock()
		if s.closed.Load() {
			return
		}
		for _, id := range ids {
			s.queueControl(cmdFIN, id, 0, 0)
		}
	})
}

// returnTokens gives back receive budget once the application has read or
// dropped n bytes, and wakes the reader if it was waiting for budget.
func (s *Session) returnTokens(n int) {
	if n == 0 {
		return
	}
	if after := s.bucket.Add(int64(n)); after > 0 && after-int64(n) <= 0 {
		select {
		case s.bucketSig <- struct{}{}:
		default:
		}
	}
}

// keepalive sends a NOP every interval and closes the session when nothing
// has arrived for the timeout while the reader was free to read.
func (s *Session) keepalive() {
	ping := time.NewTicker(s.config.KeepAliveInterval)
	check := time.NewTicker(s.config.KeepAliveTimeout)
	defer ping.Stop()
	defer check.Stop()
	s.heard.Store(true)
	for {
		select {
		case <-ping.C:
			s.sendControlAsync(cmdNOP)
		case <-check.C:
			// A version 1 session that stopped reading for unread data
			// hears nothing through no fault of the peer's.
			if !s.heard.Swap(false) && (s.ver == 2 || s.bucket.Load() > 0) {
				s.closeWith(errKeepAliveTimeout)
				return
			}
		case <-s.die:
			return
		}
	}
}

var errKeepAliveTimeout error = keepAliveError{}

type keepAliveError struct{}

func (keepAliveError) Error() string {
	return "mux: nothing heard from the peer within KeepAliveTimeout"
}
func (keepAliveError) Timeout() bool   { return true }
func (keepAliveError) Temporary() bool { return false }

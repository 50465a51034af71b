package mux

import (
	"encoding/binary"
	"fmt"
)

const (
	readBufferSize = 64 << 10
	// bulkFrame is the payload size from which the reader stops reading
	// ahead, so that big payloads go straight from the socket into their
	// chunk instead of through the read buffer.
	bulkFrame = 4096
)

// recvLoop reads frames until the connection fails or a frame breaks the
// protocol; either closes the session.
func (s *Session) recvLoop() {
	fr := newFrameReader(s.conn, readBufferSize)
	bulk := false
	for {
		for s.bucket.Load() <= 0 {
			select {
			case <-s.bucketSig:
			case <-s.die:
				return
			}
		}
		var limit int
		if bulk {
			limit = headerSize
		}
		h, err := fr.readHeader(limit)
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
		switch h.cmd() {
		case cmdPSH:
			bulk = h.length() >= bulkFrame
			err = s.recvData(fr, &h)
		case cmdSYN:
			err = s.recvSYN(h.sid())
		case cmdFIN:
			s.recvFIN(h.sid())
		case cmdUPD:
			err = s.recvUPD(fr, h.sid())
		}
		if err != nil {
			s.closeWith(err)
			return
		}
	}
}

func (s *Session) recvSYN(id uint32) error {
	wantOdd := !s.client // the client opens odd ids, the server even ones
	if id == 0 || (id%2 == 1) != wantOdd {
		return fmt.Errorf("%w: %s opened stream %d, which is not its to open", ErrInvalidProtocol, peerName(s), id)
	}
	s.smu.Lock()
	if _, dup := s.streams[id]; dup {
		s.smu.Unlock()
		return nil
	}
	st := newStream(id, s)
	s.streams[id] = st
	s.smu.Unlock()
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
	st.finRecv.Store(true)
	st.signalR()
	if st.wclosed.Load() {
		s.removeStream(st)
	}
}

func (s *Session) recvUPD(fr *frameReader, id uint32) error {
	var b [updSize]byte
	if err := fr.readFull(b[:]); err != nil {
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

// recvData moves a data frame's payload into its stream's buffer.
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
	var err error
	if p, ok := fr.peek(n); ok {
		st.rmu.Lock()
		if err = st.admitLocked(n); err == nil && !st.shutdown.Load() {
			st.rq.appendSmall(p)
			s.bucket.Add(-int64(n))
		}
		st.rmu.Unlock()
		fr.skip(n)
	} else {
		b := getBuf(n)
		if err := fr.readFull((*b)[:n]); err != nil {
			putBuf(b)
			return fmt.Errorf("read from %s: %w", peerName(s), err)
		}
		st.rmu.Lock()
		if err = st.admitLocked(n); err == nil && !st.shutdown.Load() {
			st.rq.push(chunk{buf: b, end: n})
			s.bucket.Add(-int64(n))
			b = nil
		}
		st.rmu.Unlock()
		if b != nil {
			putBuf(b)
		}
	}
	if err != nil {
		return fmt.Errorf("%w (from %s, stream %d)", err, peerName(s), st.id)
	}
	st.signalR()
	return nil
}

// admitLocked checks, in version 2, that the peer stays within the window
// it was given. The allowance covers the 256 KiB a sender assumes before
// its first update and, twice over, writers racing on one stream.
func (st *Stream) admitLocked(n int) error {
	if st.sess.ver != 2 {
		return nil
	}
	st.recvd += uint32(n)
	allowed := 2 * max(uint32(st.sess.config.MaxStreamBuffer), initialPeerWindow)
	if st.recvd-st.consumed > allowed {
		return fmt.Errorf("%w: %w", ErrInvalidProtocol, ErrWindowViolated)
	}
	return nil
}

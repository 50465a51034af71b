package mux

import "errors"

// Marked streams.
//
// An application on top of a session sometimes needs to tell the peer
// something about a stream before its data: smuxtun's client names the
// target of a stream this way. Putting that in the stream's data is only
// safe if the peer expects it, and a plain smux peer (kcptun) would hand
// it to its target as data. So the two sessions agree on it with frames a
// plain smux peer ignores, as it ignores every NOP's stream id:
//
//   - A session whose Config.AcceptMarked is set sends, before its hello, a
//     NOP whose stream id is markID. The peer knows, once it has the hello,
//     whether marked streams are welcome: it has seen that NOP before.
//   - OpenMarkedStream sends a NOP whose stream id is the new stream's id
//     immediately before the stream's SYN, in the same write. Stream ids a
//     client opens are odd and every reserved NOP id is even, so the two
//     never collide.
//   - The accepting session marks the stream whose SYN directly follows
//     such a NOP. Stream.Marked tells the application, which then reads
//     whatever the two applications agreed on from the stream's data.

// markID is the stream id of the NOP frame that says "marked streams are
// welcome here"; it is even, like every reserved NOP id.
const markID uint32 = 0x73746774 // "tgts" little endian

// ErrNotMarkable is returned by OpenMarkedStream when the peer has not
// said that it accepts marked streams.
var ErrNotMarkable = errors.New("mux: the peer does not accept marked streams")

// PeerHello is closed once the peer's hello has arrived. A plain smux peer
// never says hello, so callers wait for it with a timeout of their own.
func (s *Session) PeerHello() <-chan struct{} { return s.helloCh }

// PeerAcceptsMarked reports whether the peer said that it accepts marked
// streams. It is final once PeerHello is closed.
func (s *Session) PeerAcceptsMarked() bool { return s.peerMarks.Load() }

// OpenMarkedStream opens a stream that the peer sees as marked. It fails
// with ErrNotMarkable, without sending anything, unless the peer said it
// accepts marked streams.
func (s *Session) OpenMarkedStream() (*Stream, error) {
	if !s.peerMarks.Load() {
		return nil, ErrNotMarkable
	}
	return s.openStream(true)
}

// Marked reports whether the peer opened the stream with OpenMarkedStream
// (always false for streams this side opened, and on a session without
// Config.AcceptMarked).
func (st *Stream) Marked() bool { return st.marked }

// recvMarkNOP handles a NOP whose stream id is not one of the reserved ids.
func (s *Session) recvMarkNOP(id uint32) {
	switch {
	case s.config.AcceptMarked && !s.client && id%2 == 1:
		s.recv.mark = id // a client's stream id, whatever its value
	case id == markID && s.client:
		s.peerMarks.Store(true)
	}
}

package mux

// Liveness between two sessions of this package.
//
// Over KCP nothing tells a client that the server's process restarted: the
// new process never saw the session, and the old one is gone without a
// word. smux's keepalive finds out only after KeepAliveTimeout (30 s by
// default), and smux has no frame that a peer must answer. Two sessions of
// this package therefore agree on one: a NOP whose stream id is pingID is
// answered at once with a NOP whose stream id is pongID. Plain smux peers
// ignore both, as they ignore every NOP's stream id, so a session pings only
// a peer that said hello (it sends helloID when it starts, in both protocol
// versions).

// pingID and pongID are the stream ids of the NOP frames that ask for and
// give an answer.
const (
	pingID uint32 = 0x676e6970 // "ping" little endian
	pongID uint32 = 0x676e6f70 // "pong" little endian
)

// PeerAnswersPing reports whether the peer said it answers Ping: it is a
// session of this package that has sent its hello. A peer that never
// answers pings (plain smux, kcptun) is not one, and neither is a peer not
// heard from yet.
func (s *Session) PeerAnswersPing() bool { return s.peerKnown.Load() }

// Ping asks the peer for an immediate answer, if it answers pings, and
// reports whether it asked. The answer is an ordinary frame: it shows up as
// bytes read from the connection, which is all a liveness check needs.
// Ping never blocks.
func (s *Session) Ping() bool {
	if !s.peerKnown.Load() || s.closed.Load() {
		return false
	}
	sd := &s.sender
	sd.mu.Lock()
	queued := sd.pingQueued
	sd.pingQueued = true
	sd.mu.Unlock()
	if !queued { // one waiting ping asks as well as many
		s.queueControl(cmdNOP, pingID, 0, 0)
	}
	return true
}

// TakeDataSeen reports whether a frame other than a keepalive, hello, ping
// or its answer (data, a stream opened or closed, a window update) arrived
// since the previous call, and starts a new period. It is meant for one
// watcher per session.
func (s *Session) TakeDataSeen() bool { return s.dataSeen.Swap(false) }

// answerPing queues the answer to a ping. At most one answer waits to be
// written at any time, so a peer that pings without reading cannot make
// the queue grow.
func (s *Session) answerPing() {
	sd := &s.sender
	sd.mu.Lock()
	if sd.pongQueued || s.closed.Load() {
		sd.mu.Unlock()
		return
	}
	sd.pongQueued = true
	sd.mu.Unlock()
	s.queueControl(cmdNOP, pongID, 0, 0)
}

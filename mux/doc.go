// Package mux multiplexes many reliable byte streams over one connection using
// the smux wire protocol (versions 1 and 2), and is a drop-in replacement for
// github.com/xtaci/smux: the same Config, Client, Server, Session and Stream.
//
// PROTOCOL.md beside this file describes the wire format and flow control.
// The send path is in send.go (no sending goroutine: writers take turns at
// flushing batches), the receive path in recv.go and frame.go (one reading
// goroutine per session, payloads handed straight to waiting readers; on a
// kernel socket under bulk traffic it polls briefly before parking, see
// poll_unix.go), and the per-stream state in stream.go.
//
// In version 2 no stream holds up another: the session keeps reading whatever
// its streams' readers do, and allots each stream's window from the session
// budget, so a stream whose reader stops gets no more credit while the others
// keep theirs (flow.go). Toward a peer that still speaks plain smux, the sender
// keeps what stalled streams pile up at the peer below the peer's budget.
package mux

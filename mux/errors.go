package mux

import (
	"errors"
	"io"
)

var (
	// ErrInvalidProtocol means the peer sent a frame that breaks the
	// protocol; the session closes with it.
	ErrInvalidProtocol = errors.New("mux: invalid protocol")

	// ErrGoAway means this side has used up its stream identifiers; open
	// a new session.
	ErrGoAway = errors.New("mux: stream ids exhausted")

	// ErrTimeout is returned when a deadline passes. It is a net.Error
	// whose Timeout method reports true.
	ErrTimeout error = timeoutError{}

	// ErrSessionClosed is returned by operations on a closed session and
	// its streams. errors.Is(ErrSessionClosed, io.ErrClosedPipe) is true,
	// so code written for xtaci/smux keeps working.
	ErrSessionClosed error = &closedError{}

	// ErrWindowViolated is the cause when a version 2 peer sends more
	// data on a stream than the window it was given.
	ErrWindowViolated = errors.New("mux: peer overran the stream window")
)

type timeoutError struct{}

func (timeoutError) Error() string   { return "mux: i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// closedError is what a closed session reports; cause says why it closed
// (nil when the application closed it).
type closedError struct{ cause error }

func (e *closedError) Error() string {
	if e.cause == nil {
		return "mux: session closed"
	}
	return "mux: session closed: " + e.cause.Error()
}

func (e *closedError) Unwrap() error { return e.cause }

func (e *closedError) Is(target error) bool {
	return target == io.ErrClosedPipe || target == ErrSessionClosed
}

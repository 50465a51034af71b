package mux

import (
	"fmt"
	"math"
	"time"
)

// Config tunes a Session. The field names and defaults match
// github.com/xtaci/smux so that existing configurations carry over.
type Config struct {
	// Version is the protocol version, 1 or 2. Version 2 adds per-stream
	// flow control; both ends must use the same version.
	Version int

	// KeepAliveDisabled turns off both the periodic NOP frames and the
	// idle timeout.
	KeepAliveDisabled bool

	// KeepAliveInterval is how often a NOP frame is sent to the peer.
	KeepAliveInterval time.Duration

	// KeepAliveTimeout closes the session when nothing has been received
	// from the peer for this long.
	KeepAliveTimeout time.Duration

	// MaxFrameSize is the largest payload of a data frame this side sends.
	MaxFrameSize int

	// MaxReceiveBuffer bounds the bytes buffered for all streams of the
	// session that the application has not read yet.
	MaxReceiveBuffer int

	// MaxStreamBuffer is the largest per-stream receive window advertised
	// to the peer in version 2. A stream gets all of it while the session
	// budget (MaxReceiveBuffer) allows; see PROTOCOL.md.
	MaxStreamBuffer int

	// MaxStreams caps the streams the peer may have open at once; a stream
	// opened past it is closed at once (RefusedStreams counts them). Zero
	// means no cap.
	MaxStreams int

	// AcceptMarked tells the peer that this side takes marked streams
	// (OpenMarkedStream, Stream.Marked; see marked.go). Only a server
	// session accepts them.
	AcceptMarked bool
}

// DefaultConfig returns the configuration xtaci/smux uses by default.
func DefaultConfig() *Config {
	return &Config{
		Version:           1,
		KeepAliveInterval: 10 * time.Second,
		KeepAliveTimeout:  30 * time.Second,
		MaxFrameSize:      32768,
		MaxReceiveBuffer:  4194304,
		MaxStreamBuffer:   65536,
	}
}

// VerifyConfig reports the first field of c that is out of range. The error
// names the field, its value and the range it must be in.
func VerifyConfig(c *Config) error {
	if c == nil {
		return fmt.Errorf("mux: config is nil")
	}
	if c.Version != 1 && c.Version != 2 {
		return fmt.Errorf("mux: Version is %d, must be 1 or 2", c.Version)
	}
	if !c.KeepAliveDisabled {
		if c.KeepAliveInterval <= 0 {
			return fmt.Errorf("mux: KeepAliveInterval is %v, must be positive", c.KeepAliveInterval)
		}
		if c.KeepAliveTimeout < c.KeepAliveInterval {
			return fmt.Errorf("mux: KeepAliveTimeout is %v, must be at least KeepAliveInterval (%v)",
				c.KeepAliveTimeout, c.KeepAliveInterval)
		}
	}
	if c.MaxFrameSize <= 0 || c.MaxFrameSize > maxPayload {
		return fmt.Errorf("mux: MaxFrameSize is %d, must be in 1..%d", c.MaxFrameSize, maxPayload)
	}
	if c.MaxReceiveBuffer <= 0 || c.MaxReceiveBuffer > math.MaxInt32 {
		return fmt.Errorf("mux: MaxReceiveBuffer is %d, must be in 1..%d", c.MaxReceiveBuffer, math.MaxInt32)
	}
	if c.MaxStreamBuffer <= 0 || c.MaxStreamBuffer > c.MaxReceiveBuffer {
		return fmt.Errorf("mux: MaxStreamBuffer is %d, must be in 1..MaxReceiveBuffer (%d)",
			c.MaxStreamBuffer, c.MaxReceiveBuffer)
	}
	if c.MaxStreams < 0 {
		return fmt.Errorf("mux: MaxStreams is %d, must be 0 (no cap) or more", c.MaxStreams)
	}
	return nil
}

//go:build !linux

package tunnel

import "syscall"

// peekSize cannot tell a datagram's length here: the reader takes a buffer
// for the largest.
func peekSize(rc syscall.RawConn) (int, error) { return -1, nil }

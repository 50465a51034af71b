//go:build !unix

package mux

import "io"

// newPollReader: polling before parking (poll_unix.go) is for Unix sockets
// only; elsewhere the session reads the connection as it is.
func newPollReader(c io.Reader, allow func() bool) io.Reader { return c }

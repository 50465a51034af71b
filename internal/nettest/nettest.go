// Package nettest holds network helpers shared by the tests of several
// packages. It uses the standard library only, so the mux's tests may use it.
package nettest

import (
	"net"
	"testing"
	"time"
)

// TCPPair returns both ends of a fresh TCP connection on 127.0.0.1: the
// dialled one and the accepted one. Both are closed when the test ends.
func TCPPair(tb testing.TB) (dialed, accepted *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		ch <- result{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatalf("dial %s: %v", ln.Addr(), err)
	}
	r := <-ch
	if r.err != nil {
		c.Close()
		tb.Fatalf("accept: %v", r.err)
	}
	tb.Cleanup(func() {
		c.Close()
		r.c.Close()
	})
	return c.(*net.TCPConn), r.c.(*net.TCPConn)
}

// Eventually polls cond every millisecond and fails the test if it does not
// hold within 5 s; what names the awaited event in the failure.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("no %s within 5 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Package nettest holds network helpers shared by the tests of several
// packages. It uses the standard library only, so the mux's tests may use it.
package nettest

import (
	"bytes"
	"net"
	"os"
	"strconv"
	"strings"
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

// ProcessCPU returns the CPU time (user and system, all threads) this
// process has used so far, read from /proc/self/stat; false where there is no
// such file. Its resolution is a clock tick (10 ms).
func ProcessCPU() (time.Duration, bool) {
	raw, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	// The fields after the command name, which is in parentheses: state is
	// the first, utime the 12th and stime the 13th.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick, true
}

// UDPEcho runs a UDP target on addr (e.g. "127.0.0.1:0") that answers each
// datagram, from the same socket, with "echo:" and the datagram; it stops
// when the test ends. It returns the target's address.
func UDPEcho(tb testing.TB, addr string) string {
	tb.Helper()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 70000)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	tb.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().String()
}

package main

import (
	"crypto/rand"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// The target's first byte on each connection picks its service.
const (
	svcDownload = 'D' // the target sends bytes until the connection ends
	svcUpload   = 'U' // the target reads and counts bytes
	svcEcho     = 'E' // the target echoes
)

// target is the TCP server at the far end of both tunnels.
type target struct {
	l        net.Listener
	payload  []byte        // incompressible, so snappy does not help either stack
	uploaded atomic.Uint64 // bytes received by upload connections
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startTarget() (*target, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &target{l: l, payload: make([]byte, 1<<20), conns: make(map[net.Conn]struct{})}
	rand.Read(t.payload)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.mu.Lock()
			t.conns[c] = struct{}{}
			t.mu.Unlock()
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				t.serve(c)
				t.mu.Lock()
				delete(t.conns, c)
				t.mu.Unlock()
				c.Close()
			}()
		}
	}()
	return t, nil
}

func (t *target) addr() string { return t.l.Addr().String() }

func (t *target) serve(c net.Conn) {
	var svc [1]byte
	if _, err := io.ReadFull(c, svc[:]); err != nil {
		return
	}
	switch svc[0] {
	case svcDownload:
		for {
			if _, err := c.Write(t.payload); err != nil {
				return
			}
		}
	case svcUpload:
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			t.uploaded.Add(uint64(n))
			if err != nil {
				return
			}
		}
	case svcEcho:
		io.Copy(c, c)
	}
}

// close stops the listener and every connection.
func (t *target) close() {
	t.l.Close()
	t.mu.Lock()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

package proctest

import (
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Echo starts a TCP echo server on 127.0.0.1 that returns every byte and
// closes its write side when the peer closes its own; it stops when the test
// ends. It returns the server's address.
func Echo(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}

// RoundTrip sends n random bytes through addr, half-closes, reads the answer
// and fails the test unless it has the same SHA-256. It gives up after limit.
func RoundTrip(t *testing.T, addr string, n int, limit time.Duration) {
	t.Helper()
	payload := make([]byte, n)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", addr, limit)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(limit))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		t.Fatalf("write through %s: %v", addr, werr)
	}
	if err != nil {
		t.Fatalf("read through %s: %v (got %d of %d bytes)", addr, err, len(got), n)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("through %s: sent %d bytes, got %d bytes with a different SHA-256", addr, n, len(got))
	}
}

package socks

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/nettest"
)

// ioTimeout bounds every read and write a test makes.
const ioTimeout = 5 * time.Second

// checkGoroutines records the number of goroutines now and, when the test
// ends, waits up to five seconds for it to come back down. Call it first in
// a test, so its cleanup runs after every other cleanup.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines: %d at the start, %d five seconds after the end\n%s", base, n, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

type acceptResult struct {
	req *Request
	err error
}

// acceptPair returns the client end of a loopback TCP connection whose
// server end runs Accept(cfg); the result arrives on the channel. The
// server end is closed when Accept fails, else when the test ends.
func acceptPair(t *testing.T, cfg Config) (*net.TCPConn, <-chan acceptResult) {
	t.Helper()
	client, server := nettest.TCPPair(t)
	_ = client.SetDeadline(time.Now().Add(ioTimeout))
	ch := make(chan acceptResult, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, err := Accept(server, cfg)
		if err != nil {
			server.Close() // as a caller does
		}
		ch <- acceptResult{req, err}
	}()
	t.Cleanup(func() {
		server.Close()
		<-done
	})
	return client, ch
}

// result waits for Accept's result.
func result(t *testing.T, ch <-chan acceptResult) acceptResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(ioTimeout):
		t.Fatal("Accept did not return")
		return acceptResult{}
	}
}

func mustWrite(t *testing.T, w io.Writer, b []byte) {
	t.Helper()
	if _, err := w.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readExactly reads n bytes and fails the test if they are not want.
func readExactly(t *testing.T, r io.Reader, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if n, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("read %d bytes: got %x, %v", len(want), got[:n], err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %x, want %x", got, want)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// echoRoundTrip sends data through c, reads as many bytes back and compares
// their SHA-256, then half-closes and expects EOF.
func echoRoundTrip(t *testing.T, c net.Conn, data []byte) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("echo: %d bytes back for %d sent, SHA-256 differs", len(got), len(data))
	}
}

// server is a set of goroutines serving connections from one listener, each
// with handle; Close stops them all and waits.
type server struct {
	ln     net.Listener
	handle func(net.Conn)
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func startServer(t *testing.T, network, addr string, handle func(net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	s := &server{ln: ln, handle: handle, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.loop()
	t.Cleanup(s.Close)
	return s
}

func (s *server) Addr() string { return s.ln.Addr().String() }

func (s *server) loop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if !s.track(c) {
			c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.handle(c)
		}()
	}
}

// track registers c so that Close can end its handler; it refuses once the
// server is closed.
func (s *server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

// startEcho starts a TCP echo server that half-closes after the client does.
func startEcho(t *testing.T, addr string) *server {
	t.Helper()
	return startServer(t, "tcp", addr, func(c net.Conn) {
		_, _ = io.Copy(c, c)
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
}

// startProxy starts the proxy the tests and curl go through: this package's
// Accept, then a direct dial (CONNECT) or a UDP relay on 127.0.0.1 (UDP
// ASSOCIATE). Accept errors go to errs, if not nil, without blocking.
func startProxy(t *testing.T, cfg Config, errs chan<- error) *server {
	t.Helper()
	return startServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		req, err := Accept(c, cfg)
		if err != nil {
			if errs != nil {
				select {
				case errs <- err:
				default:
				}
			}
			return
		}
		switch req.Cmd {
		case CmdConnect:
			proxyConnect(req)
		case CmdUDPAssociate:
			proxyUDP(req)
		}
	})
}

func proxyConnect(req *Request) {
	d := net.Dialer{Timeout: ioTimeout}
	target, err := d.Dial("tcp", req.Dst.String())
	if err != nil {
		_ = req.Reply(ReplyFor(err), nil)
		return
	}
	defer target.Close()
	if err := req.Reply(ReplySucceeded, target.LocalAddr()); err != nil {
		return
	}
	conn := req.Conn()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(target, conn)
		_ = target.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(conn, target)
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	<-done
}

// proxyUDP relays datagrams between the client and their destinations
// until the client's TCP connection closes.
func proxyUDP(req *Request) {
	relay, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		_ = req.Reply(ReplyGeneralFailure, nil)
		return
	}
	defer relay.Close()
	if err := req.Reply(ReplySucceeded, relay.LocalAddr()); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var client *net.UDPAddr
		buf := make([]byte, 65535)
		for {
			n, from, err := relay.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if isClient(req, client, from) {
				dst, data, err := ParseUDPDatagram(buf[:n])
				if err != nil {
					continue
				}
				to, err := net.ResolveUDPAddr("udp4", dst.String())
				if err != nil {
					continue
				}
				client = from
				_, _ = relay.WriteToUDP(data, to)
				continue
			}
			if client == nil {
				continue
			}
			out, err := AppendUDPDatagram(nil, AddrFromAddrPort(from.AddrPort()), buf[:n])
			if err == nil {
				_, _ = relay.WriteToUDP(out, client)
			}
		}
	}()
	// The association lasts as long as the TCP connection.
	_, _ = io.Copy(io.Discard, req.Conn())
	relay.Close()
	<-done
}

// isClient tells whether a datagram comes from the client: the address of
// its first datagram once known, before that the port it announced in its
// request, or any port if it announced 0.
func isClient(req *Request, client, from *net.UDPAddr) bool {
	if client != nil {
		return from.Port == client.Port && from.IP.Equal(client.IP)
	}
	return req.Dst.Port == 0 || int(req.Dst.Port) == from.Port
}

// isTimeout tells whether err is a deadline's.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

//go:build unix

package mux

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/nettest"
)

// TestPollReaderBulk: under bulk traffic the reader answers reads by
// polling, and every byte arrives intact and in order.
func TestPollReaderBulk(t *testing.T) {
	a, b := nettest.TCPPair(t)
	p, ok := newPollReader(b, nil).(*pollReader)
	if !ok {
		t.Fatal("a TCP connection did not get a polling reader")
	}
	data := make([]byte, 32<<20)
	rand.Read(data)
	go func() {
		for off := 0; off < len(data); off += 64 << 10 {
			if _, err := a.Write(data[off : off+64<<10]); err != nil {
				return
			}
		}
		a.CloseWrite()
	}()
	got, err := io.ReadAll(p)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(data))
	}
	if p.polls == 0 {
		t.Error("32 MiB in 64 KiB writes were all read by parking; polling never engaged")
	}
	// The end of the stream comes back as io.EOF, again and again.
	buf := make([]byte, 10)
	for range 3 {
		if n, err := p.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("read after the end: %d, %v; want 0, io.EOF", n, err)
		}
	}
}

// TestPollReaderSparse: small messages with gaps between them never make
// the reader poll, so an idle or chatty session costs no processor time.
func TestPollReaderSparse(t *testing.T) {
	a, b := nettest.TCPPair(t)
	p := newPollReader(b, nil).(*pollReader)
	msg := bytes.Repeat([]byte("x"), 100)
	buf := make([]byte, 4096)
	for range 50 {
		if _, err := a.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	if p.polls != 0 || p.hot {
		t.Errorf("after 100-byte messages: %d reads answered by polling, hot=%v; want none", p.polls, p.hot)
	}
}

// TestPollReaderClosed: a reader polling a connection that closes under it
// returns the connection's error rather than hanging or panicking.
func TestPollReaderClosed(t *testing.T) {
	a, b := nettest.TCPPair(t)
	p := newPollReader(b, nil).(*pollReader)
	p.hot, p.avg = true, 1<<20 // as after bulk traffic
	errc := make(chan error, 1)
	go func() {
		_, err := p.Read(make([]byte, 1024))
		errc <- err
	}()
	time.Sleep(5 * time.Millisecond)
	b.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read still blocked 5 s after the connection closed")
	}
	// A read that starts hot on a closed connection fails at once too.
	p.hot = true
	if _, err := p.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v; want net.ErrClosed", err)
	}
	_ = a
}

// TestPollReaderNoAllocs: polling is on the data path, so it must not
// allocate.
func TestPollReaderNoAllocs(t *testing.T) {
	a, b := nettest.TCPPair(t)
	p := newPollReader(b, nil).(*pollReader)
	buf := make([]byte, 8192)
	allocs := testing.AllocsPerRun(200, func() {
		p.hot, p.avg = true, 1<<20
		if _, err := a.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per read, want 0", allocs)
	}
}

// TestPollingReaderChoice: sessions poll only straight on a kernel socket,
// and not in a v2 flow whose stream window holds under four frames.
func TestPollingReaderChoice(t *testing.T) {
	kcptun := DefaultConfig()
	kcptun.MaxFrameSize, kcptun.MaxReceiveBuffer, kcptun.MaxStreamBuffer = 8192, 4<<20, 2<<20
	v1 := DefaultConfig()
	v1.Version = 1
	v2 := DefaultConfig()
	v2.Version = 2
	kcptun.Version = 2
	for _, c := range []struct {
		name string
		cfg  *Config
		poll bool
	}{{"v1 default", v1, true}, {"v2 default", v2, false}, {"v2 kcptun", kcptun, true}} {
		a, _ := nettest.TCPPair(t)
		s, err := Client(a, c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, polls := s.pollingReader().(*pollReader)
		s.Close()
		if polls != c.poll {
			t.Errorf("%s over TCP: polling %v, want %v", c.name, polls, c.poll)
		}
	}
	x, _ := net.Pipe()
	s, err := Client(x, v1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, polls := s.pollingReader().(*pollReader); polls {
		t.Error("a session over net.Pipe polls; only kernel sockets should")
	}
}

// TestPollingSessionBadFrame: a session whose reading goroutine is polling
// under bulk data still closes at once, with ErrInvalidProtocol, when the
// peer sends a frame that breaks the protocol. Whether polling engages
// depends on the machine's load (the reads must come back within hotWait,
// and at most GOMAXPROCS readers poll at once in the process), so a session
// that never polled is tried again, a few times, before the test gives up.
func TestPollingSessionBadFrame(t *testing.T) {
	const attempts = 5
	for i := range attempts {
		if polls := pollingSessionBadFrame(t); polls > 0 {
			if i > 0 {
				t.Logf("polling engaged in attempt %d", i+1)
			}
			return
		}
		if t.Failed() {
			return
		}
	}
	t.Errorf("in %d sessions, 8 MiB of 32 KiB frames never engaged polling; the test did not cover the polling path", attempts)
}

// pollingSessionBadFrame runs one session through bulk data and a bad frame
// and returns how many reads polling answered.
func pollingSessionBadFrame(t *testing.T) int {
	t.Helper()
	raw, conn := nettest.TCPPair(t)
	cfg := DefaultConfig()
	cfg.Version = 1
	cfg.KeepAliveDisabled = true
	s, err := Server(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const frames = 256
	payload := make([]byte, 32<<10)
	rand.Read(payload)
	got := make(chan []byte, 1)
	go func() {
		st, err := s.AcceptStream()
		if err != nil {
			got <- nil
			return
		}
		buf := make([]byte, frames*len(payload))
		n, _ := io.ReadFull(st, buf)
		got <- buf[:n]
	}()
	frame := make([]byte, headerSize+len(payload))
	putHeader(frame, 1, cmdSYN, 0, 1)
	if _, err := raw.Write(frame[:headerSize]); err != nil {
		t.Fatal(err)
	}
	putHeader(frame, 1, cmdPSH, len(payload), 1)
	copy(frame[headerSize:], payload)
	for range frames {
		if _, err := raw.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	data := <-got
	if len(data) != frames*len(payload) || !bytes.Equal(data[:len(payload)], payload) {
		t.Fatalf("read %d bytes of %d, or they differ", len(data), frames*len(payload))
	}
	bad := make([]byte, headerSize)
	putHeader(bad, 1, 9, 0, 1) // no such command
	if _, err := raw.Write(bad); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.CloseChan():
	case <-time.After(time.Second):
		t.Fatal("the session did not close within 1 s of a frame with an unknown command")
	}
	if !errors.Is(s.closeErr, ErrInvalidProtocol) {
		t.Errorf("session closed with %v, want ErrInvalidProtocol", s.closeErr)
	}
	p, ok := s.recv.fr.r.(*pollReader)
	if !ok {
		t.Fatal("a v1 session on TCP reads without polling")
	}
	return p.polls
}

// TestPollingStopsWithManyStreams: a session with more than pollMaxStreams
// streams open does not poll, and a reader whose allow says no never polls.
func TestPollingStopsWithManyStreams(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Version = 1
	cs, _ := sessionPair(t, cfg)
	pr, ok := cs.pollingReader().(*pollReader)
	if !ok {
		t.Fatal("a v1 session on TCP reads without polling")
	}
	for i := range pollMaxStreams + 1 {
		if !pr.allow() {
			t.Fatalf("polling refused with %d streams open, the limit is %d", i, pollMaxStreams)
		}
		if _, err := cs.OpenStream(); err != nil {
			t.Fatal(err)
		}
	}
	if pr.allow() {
		t.Fatalf("polling allowed with %d streams open, the limit is %d", cs.NumStreams(), pollMaxStreams)
	}

	a, b := nettest.TCPPair(t)
	p := newPollReader(b, func() bool { return false }).(*pollReader)
	p.hot, p.avg = true, 1<<20 // as after bulk traffic, so only allow stops it
	go func() {
		chunk := make([]byte, 64<<10)
		for range 64 {
			if _, err := a.Write(chunk); err != nil {
				return
			}
		}
		a.CloseWrite()
	}()
	if n, err := io.Copy(io.Discard, p); err != nil || n != 64*64<<10 {
		t.Fatalf("read %d bytes, %v; want %d", n, err, 64*64<<10)
	}
	if p.polls != 0 {
		t.Errorf("%d reads answered by polling although allow said no", p.polls)
	}
}

package mux_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/nettest"
	"github.com/smuxtun/smuxtun/mux"
)

// What a malformed input must end the session with.
const (
	wantProto  = "protocol"    // errors.Is(err, mux.ErrInvalidProtocol)
	wantClosed = "closed"      // a read error: errors.Is(err, io.ErrClosedPipe)
	wantEither = "either"      // random input may be a protocol error or truncated
	wantAlive  = "stays alive" // valid input: the session must not close
)

type malformedCase struct {
	name     string
	versions []int                                 // nil: both
	before   func(v byte) []byte                   // written first; then the test waits for a stream to be accepted
	input    func(v byte) []byte                   // bytes the raw peer writes
	eof      bool                                  // then the raw peer shuts down its sending side
	want     string                                // one of the want* constants
	check    func(t *testing.T, got streamOutcome) // optional, for the stream opened before the bad frame
}

// streamOutcome is what a reader of an accepted stream saw.
type streamOutcome struct {
	data []byte
	err  error
}

func malformedCases() []malformedCase {
	hello := func(v byte) []byte {
		return append(rawFrame(v, cmdSYN, 1, nil), rawFrame(v, cmdPSH, 1, []byte("hello"))...)
	}
	helloCheck := func(t *testing.T, got streamOutcome) {
		t.Helper()
		if string(got.data) != "hello" {
			t.Errorf("the stream opened before the bad frame read %q, want %q", got.data, "hello")
		}
		if !errors.Is(got.err, mux.ErrInvalidProtocol) {
			t.Errorf("the stream opened before the bad frame ended with %v, want errors.Is(err, mux.ErrInvalidProtocol)", got.err)
		}
	}
	return []malformedCase{
		{name: "wrong version (the other one)", input: func(v byte) []byte { return rawFrame(3-v, cmdNOP, 0, nil) }, want: wantProto},
		{name: "wrong version 0", input: func(v byte) []byte { return rawFrame(0, cmdSYN, 1, nil) }, want: wantProto},
		{name: "wrong version 255", input: func(v byte) []byte { return rawFrame(255, cmdPSH, 1, []byte("x")) }, want: wantProto},
		{name: "unknown command 5", input: func(v byte) []byte { return rawFrame(v, 5, 1, nil) }, want: wantProto},
		{name: "unknown command 255", input: func(v byte) []byte { return rawFrame(v, 255, 0, nil) }, want: wantProto},
		{name: "SYN with payload", input: func(v byte) []byte { return rawFrame(v, cmdSYN, 1, []byte("abcd")) }, want: wantProto},
		{name: "FIN with payload", input: func(v byte) []byte {
			return append(rawFrame(v, cmdSYN, 1, nil), rawFrame(v, cmdFIN, 1, []byte("abcd"))...)
		}, want: wantProto},
		{name: "NOP with payload", input: func(v byte) []byte { return rawFrame(v, cmdNOP, 0, []byte{0}) }, want: wantProto},
		{name: "UPD with length 4", versions: []int{2}, input: func(v byte) []byte {
			return rawFrame(v, cmdUPD, 1, []byte{1, 2, 3, 4})
		}, want: wantProto},
		{name: "UPD with length 0", versions: []int{2}, input: func(v byte) []byte { return rawFrame(v, cmdUPD, 1, nil) }, want: wantProto},
		{name: "UPD with length 16", versions: []int{2}, input: func(v byte) []byte {
			return rawFrame(v, cmdUPD, 1, append(updPayload(0, 65536), updPayload(0, 65536)...))
		}, want: wantProto},
		{name: "UPD on v1", versions: []int{1}, input: func(v byte) []byte {
			return rawFrame(v, cmdUPD, 1, updPayload(0, 65536))
		}, want: wantProto},
		{name: "HTTP request", input: func(v byte) []byte { return []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n") }, want: wantProto},
		{name: "bad frame after data on an open stream", before: hello, input: func(v byte) []byte {
			return rawFrame(v, 9, 1, nil)
		}, want: wantProto, check: helloCheck},
		{name: "wrong version after data on an open stream", before: hello, input: func(v byte) []byte {
			return rawFrame(3-v, cmdPSH, 1, []byte("more"))
		}, want: wantProto, check: helloCheck},
		{name: "truncated header", input: func(v byte) []byte { return rawFrame(v, cmdPSH, 1, nil)[:5] }, eof: true, want: wantClosed},
		{name: "header then close", input: func(v byte) []byte {
			return rawFrameLen(v, cmdPSH, 100, 1, nil)
		}, eof: true, want: wantClosed},
		{name: "truncated payload", input: func(v byte) []byte {
			return append(rawFrame(v, cmdSYN, 1, nil), rawFrameLen(v, cmdPSH, 100, 1, make([]byte, 10))...)
		}, eof: true, want: wantClosed},
		{name: "truncated UPD", versions: []int{2}, input: func(v byte) []byte {
			return rawFrameLen(v, cmdUPD, 8, 1, []byte{1, 2, 3})
		}, eof: true, want: wantClosed},
		{name: "random bytes", input: func(v byte) []byte {
			b := make([]byte, 4096)
			r := rand.NewChaCha8([32]byte{v, 'r', 'a', 'n', 'd'})
			r.Read(b)
			return b
		}, eof: true, want: wantEither},
		{name: "valid frames", input: func(v byte) []byte {
			var b []byte
			b = append(b, rawFrame(v, cmdNOP, 0, nil)...)
			b = append(b, rawFrame(v, cmdPSH, 77, []byte("to a stream nobody opened"))...)
			b = append(b, rawFrame(v, cmdFIN, 79, nil)...)
			b = append(b, rawFrame(v, cmdSYN, 1, nil)...)
			b = append(b, rawFrame(v, cmdPSH, 1, nil)...) // empty data frame
			b = append(b, rawFrame(v, cmdPSH, 1, []byte("hello"))...)
			if v == 2 {
				b = append(b, rawFrame(v, cmdUPD, 1, updPayload(0, 1<<20))...)
				b = append(b, rawFrame(v, cmdUPD, 81, updPayload(5, 1<<20))...)
			}
			b = append(b, rawFrame(v, cmdFIN, 1, nil)...)
			return append(b, rawFrame(v, cmdNOP, 0, nil)...)
		}, want: wantAlive, check: func(t *testing.T, got streamOutcome) {
			t.Helper()
			if string(got.data) != "hello" || !errors.Is(got.err, io.EOF) {
				t.Errorf("stream 1 read %q then %v; want %q then io.EOF", got.data, got.err, "hello")
			}
		}},
	}
}

func TestMalformedInput(t *testing.T) {
	for _, version := range []int{1, 2} {
		for _, tc := range malformedCases() {
			if tc.versions != nil && !slices.Contains(tc.versions, version) {
				continue
			}
			t.Run(fmt.Sprintf("v%d/%s", version, tc.name), func(t *testing.T) {
				checkGoroutines(t)
				runMalformed(t, version, tc)
			})
		}
	}
}

func runMalformed(t *testing.T, version int, tc malformedCase) {
	t.Helper()
	raw, conn := nettest.TCPPair(t)
	cfg := defaultConfig(version)
	cfg.keepAliveDisabled = true // nothing but the input may close the session
	s, err := mux.Server(conn, cfg.ours())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	// Accept every stream and read each to its end.
	var mu sync.Mutex
	var outcomes []streamOutcome
	var readers sync.WaitGroup
	acceptErr := make(chan error, 1)
	accepted := make(chan struct{}, 100)
	go func() {
		for {
			st, err := s.AcceptStream()
			if err != nil {
				acceptErr <- err
				return
			}
			select {
			case accepted <- struct{}{}:
			default:
			}
			readers.Add(1)
			go func() {
				defer readers.Done()
				defer st.Close()
				data, err := readAll(st)
				mu.Lock()
				outcomes = append(outcomes, streamOutcome{data, err})
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		s.Close()
		readers.Wait()
	})

	if tc.before != nil {
		if _, err := raw.Write(tc.before(byte(version))); err != nil {
			t.Fatalf("raw peer write: %v", err)
		}
		if !waitClosed(accepted, 5*time.Second) {
			t.Fatalf("the stream opened by the valid frames was not accepted")
		}
		time.Sleep(50 * time.Millisecond) // and its data arrived
	}
	if _, err := raw.Write(tc.input(byte(version))); err != nil {
		t.Fatalf("raw peer write: %v", err)
	}
	if tc.eof {
		raw.CloseWrite()
	}

	if tc.want == wantAlive {
		time.Sleep(300 * time.Millisecond)
		if s.IsClosed() {
			t.Fatalf("valid input closed the session")
		}
		select {
		case err := <-acceptErr:
			t.Fatalf("AcceptStream failed on valid input: %v", err)
		default:
		}
		raw.CloseWrite() // now end it, and let the readers finish
		if !waitClosed(s.CloseChan(), time.Second) {
			t.Fatalf("session did not close within 1 s of its connection's EOF")
		}
		readers.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(outcomes) != 1 {
			t.Fatalf("accepted %d streams, want 1", len(outcomes))
		}
		tc.check(t, outcomes[0])
		return
	}

	if !waitClosed(s.CloseChan(), time.Second) {
		t.Fatalf("session still open 1 s after the input")
	}
	if !s.IsClosed() {
		t.Errorf("CloseChan closed but IsClosed() is false")
	}
	err, ok := waitErr(acceptErr, time.Second)
	if !ok {
		t.Fatalf("AcceptStream still blocked 1 s after the session closed")
	}
	isProto := errors.Is(err, mux.ErrInvalidProtocol)
	isClosed := errors.Is(err, io.ErrClosedPipe)
	switch tc.want {
	case wantProto:
		if !isProto {
			t.Errorf("AcceptStream returned %v; want errors.Is(err, mux.ErrInvalidProtocol)", err)
		}
	case wantClosed:
		if !isClosed {
			t.Errorf("AcceptStream returned %v; want errors.Is(err, io.ErrClosedPipe)", err)
		}
		if isProto {
			t.Errorf("AcceptStream returned %v: a truncated frame is a read error, not mux.ErrInvalidProtocol", err)
		}
	case wantEither:
		if !isProto && !isClosed {
			t.Errorf("AcceptStream returned %v; want mux.ErrInvalidProtocol or io.ErrClosedPipe", err)
		}
	}
	t.Logf("AcceptStream: %v", err)

	// The session closed its side of the connection: the raw peer sees it.
	raw.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.Copy(io.Discard, raw); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the connection is still open 1 s after the session closed")
	}

	done := make(chan struct{})
	go func() { readers.Wait(); close(done) }()
	if !waitClosed(done, time.Second) {
		t.Fatalf("a stream reader still blocked 1 s after the session closed")
	}
	if tc.check != nil {
		mu.Lock()
		defer mu.Unlock()
		if len(outcomes) != 1 {
			t.Fatalf("accepted %d streams, want 1", len(outcomes))
		}
		tc.check(t, outcomes[0])
	}
}

// TestWindowShrinkWhileQueued: a v2 peer may advertise a window smaller than
// what is already in flight (the receiver's first UPD does this whenever its
// MaxStreamBuffer is below the 256 KiB a sender assumes at first). The sender
// must then hold back, not panic, and it must still end cleanly.
func TestWindowShrinkWhileQueued(t *testing.T) {
	checkGoroutines(t)
	raw, conn := nettest.TCPPair(t)
	cfg := defaultConfig(2)
	cfg.keepAliveDisabled = true
	s, err := mux.Server(conn, cfg.ours())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	if _, err := raw.Write(rawFrame(2, cmdSYN, 1, nil)); err != nil {
		t.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(5 * time.Second))
	st, err := s.AcceptStream()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	// A huge window: our side sends until the socket buffers are full (the
	// raw peer does not read yet), so the stream stays queued with data.
	if _, err := raw.Write(rawFrame(2, cmdUPD, 1, updPayload(0, 1<<30))); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := st.Write(make([]byte, 64<<20))
		wrote <- err
	}()
	time.Sleep(300 * time.Millisecond)
	// Now the window closes below what is in flight, then the peer drains.
	if _, err := raw.Write(rawFrame(2, cmdUPD, 1, updPayload(0, 0))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	go io.Copy(io.Discard, raw)
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-wrote:
		t.Fatalf("Write returned (%v) although the peer's window is closed", err)
	default:
	}
	if s.IsClosed() {
		t.Errorf("a window update that shrinks the window closed the session")
	}
	s.Close()
	if err, ok := waitErr(wrote, time.Second); !ok {
		t.Fatalf("Write still blocked 1 s after the session closed")
	} else if !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("Write on a closed session: %v; want io.ErrClosedPipe", err)
	}
}

// TestPeerIgnoringBuffersCannotGrowMemory: a peer that keeps sending data on
// a stream nobody reads, ignoring the receive buffer (v1) or the stream
// window (v2), must not make the session hold more than about
// MaxReceiveBuffer: the session either stops reading from it or closes.
func TestPeerIgnoringBuffersCannotGrowMemory(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			checkGoroutines(t)
			raw, conn := nettest.TCPPair(t)
			cfg := defaultConfig(version)
			cfg.keepAliveDisabled = true
			before := memSnapshot()
			s, err := mux.Server(conn, cfg.ours())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			go io.Copy(io.Discard, raw) // the peer reads whatever we send

			if _, err := raw.Write(rawFrame(byte(version), cmdSYN, 1, nil)); err != nil {
				t.Fatal(err)
			}
			flood := bytes.Repeat(rawFrame(byte(version), cmdPSH, 1, make([]byte, 32768)), 64) // 2 MiB
			const limit = 128 << 20
			sent := 0
			raw.SetWriteDeadline(time.Now().Add(1500 * time.Millisecond))
			for sent < limit {
				n, err := raw.Write(flood)
				sent += n
				if err != nil {
					break
				}
			}
			after := memSnapshot()
			grew := int64(after.heap) - int64(before.heap)
			t.Logf("peer sent %d MiB; heap grew by %d MiB; session closed: %v", sent>>20, grew>>20, s.IsClosed())
			if max := int64(cfg.maxReceiveBuffer) + 16<<20; grew > max {
				t.Errorf("heap grew by %d MiB while a peer flooded an unread stream; want at most MaxReceiveBuffer + 16 MiB (%d MiB)",
					grew>>20, max>>20)
			}
		})
	}
}

package mux

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/smuxtun/smuxtun/internal/nettest"
)

func sessionPair(t testing.TB, cfg *Config) (*Session, *Session) {
	t.Helper()
	a, b := nettest.TCPPair(t)
	cs, err := Client(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := Server(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close(); ss.Close() })
	return cs, ss
}

func TestEchoManyStreams(t *testing.T) {
	for _, ver := range []int{1, 2} {
		cfg := DefaultConfig()
		cfg.Version = ver
		cs, ss := sessionPair(t, cfg)
		go func() {
			for {
				st, err := ss.AcceptStream()
				if err != nil {
					return
				}
				go func() {
					io.Copy(st, st)
					st.CloseWrite()
				}()
			}
		}()
		var wg sync.WaitGroup
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				st, err := cs.OpenStream()
				if err != nil {
					t.Error(err)
					return
				}
				defer st.Close()
				data := make([]byte, 1<<uint(10+i%11))
				rand.Read(data)
				go func() {
					st.Write(data)
					st.CloseWrite()
				}()
				got, err := io.ReadAll(st)
				if err != nil {
					t.Errorf("v%d stream %d: %v", ver, st.ID(), err)
					return
				}
				if sha256.Sum256(got) != sha256.Sum256(data) {
					t.Errorf("v%d stream %d: %d bytes back, want %d", ver, st.ID(), len(got), len(data))
				}
			}(i)
		}
		wg.Wait()
	}
}

func TestProtocolErrorClosesSession(t *testing.T) {
	a, b := nettest.TCPPair(t)
	ss, err := Server(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	a.Write([]byte{1, 9, 0, 0, 1, 0, 0, 0})
	select {
	case <-ss.CloseChan():
	case <-time.After(time.Second):
		t.Fatal("session still open after an unknown command")
	}
	_, err = ss.AcceptStream()
	if !errors.Is(err, ErrInvalidProtocol) || !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("AcceptStream error %v, want ErrInvalidProtocol and io.ErrClosedPipe", err)
	}
}

func FuzzFrameReader(f *testing.F) {
	var seed bytes.Buffer
	h := make([]byte, headerSize)
	putHeader(h, 2, cmdSYN, 0, 1)
	seed.Write(h)
	putHeader(h, 2, cmdPSH, 3, 1)
	seed.Write(h)
	seed.WriteString("abc")
	putHeader(h, 2, cmdUPD, 8, 1)
	seed.Write(h)
	seed.Write(make([]byte, 8))
	f.Add(seed.Bytes(), uint8(2), uint8(16))
	f.Fuzz(func(t *testing.T, in []byte, ver uint8, bufShift uint8) {
		var live atomic.Int32
		var r io.Reader = bytes.NewReader(in)
		if bufShift%2 == 0 {
			r = iotest.OneByteReader(r)
		}
		fr := newFrameReader(r, &live, int32(bufShift%4))
		var held []chunk
		defer func() {
			for _, c := range held {
				c.free()
			}
			fr.close()
			if n := live.Load(); n != 0 {
				t.Fatalf("%d slabs still counted live after close", n)
			}
		}()
		consumed := 0
		for i := 0; i < len(in); i++ {
			h, err := fr.readHeader()
			if err != nil {
				return
			}
			consumed += headerSize
			if err := h.check(ver); err != nil {
				return
			}
			if i%3 == 0 {
				if err := fr.discard(h.length()); err != nil {
					return
				}
			} else {
				dst := make([]byte, h.length())
				if err := fr.readFull(dst); err != nil {
					return
				}
				if !bytes.Equal(dst, in[consumed:consumed+len(dst)]) {
					t.Fatalf("payload at %d differs from the input", consumed)
				}
			}
			if p, ok := fr.peek(headerSize); ok && fr.shareable && i%5 == 0 {
				var cq chunkQueue
				cq.pushSlab(fr.sl, fr.start, fr.start+len(p))
				c, _ := cq.front()
				held = append(held, c)
			}
			for _, c := range held {
				if len(c.data()) != headerSize {
					t.Fatal("a held chunk changed size")
				}
			}
			consumed += h.length()
		}
	})
}

// TestCloseBoundedOnStuckConnection: with keepalive off and a peer that
// stopped reading, Close still returns once controlWriteTimeout has passed.
func TestCloseBoundedOnStuckConnection(t *testing.T) {
	saved := controlWriteTimeout
	controlWriteTimeout = 300 * time.Millisecond
	t.Cleanup(func() { controlWriteTimeout = saved })

	a, _ := nettest.TCPPair(t) // the far end never reads
	cfg := DefaultConfig()
	cfg.KeepAliveDisabled = true
	s, err := Client(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	st, err := s.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	// Fill the socket buffers; the write deadline frees the writer and
	// leaves the unwritten rest of its batch to the session.
	st.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	chunk := make([]byte, 1<<20)
	for i := 0; i < 256; i++ {
		if _, err := st.Write(chunk); err != nil {
			break
		}
	}
	done := make(chan error, 1)
	go func() { done <- st.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close still blocked 5 s after the peer stopped reading")
	}
	if s.IsClosed() {
		t.Fatal("a slow peer closed the session")
	}
}

package mux_test

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/mux"
)

// fuzzConn is a connection whose incoming bytes are a fixed input and which
// discards what the session writes. Once the input is used up, Read reports
// io.EOF, as a peer that closed its connection would.
type fuzzConn struct {
	in     *bytes.Reader
	chunk  int // largest read, so frames arrive cut at odd places
	mu     sync.Mutex
	closed bool
}

func (c *fuzzConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, io.ErrClosedPipe
	}
	if c.in.Len() == 0 {
		return 0, io.EOF
	}
	if len(p) > c.chunk {
		p = p[:c.chunk]
	}
	return c.in.Read(p)
}

func (c *fuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, io.ErrClosedPipe
	}
	return len(p), nil
}

func (c *fuzzConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

// fuzzSeeds are valid (and a few invalid) frame sequences; the first byte of
// a fuzz input selects the version, the role and how the input is cut.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	for _, v := range []byte{1, 2} {
		sel := v - 1
		var b []byte
		b = append(b, rawFrame(v, cmdSYN, 1, nil)...)
		b = append(b, rawFrame(v, cmdPSH, 1, []byte("hello, stream one"))...)
		b = append(b, rawFrame(v, cmdNOP, 0, nil)...)
		b = append(b, rawFrame(v, cmdSYN, 3, nil)...)
		b = append(b, rawFrame(v, cmdPSH, 3, bytes.Repeat([]byte{0xab}, 3000))...)
		if v == 2 {
			b = append(b, rawFrame(v, cmdUPD, 1, updPayload(0, 65536))...)
			b = append(b, rawFrame(v, cmdUPD, 3, updPayload(1, 262144))...)
		}
		b = append(b, rawFrame(v, cmdFIN, 1, nil)...)
		b = append(b, rawFrame(v, cmdPSH, 3, []byte("tail"))...)
		b = append(b, rawFrame(v, cmdFIN, 3, nil)...)
		seeds = append(seeds, append([]byte{sel}, b...))
		seeds = append(seeds, append([]byte{sel | 2 | 0x10}, b...)) // client role, small reads
		seeds = append(seeds, append([]byte{sel}, rawFrame(v, cmdNOP, 0, nil)...))
		seeds = append(seeds, append([]byte{sel}, append(rawFrame(v, cmdSYN, 2, nil), rawFrame(v, cmdFIN, 2, nil)...)...))
		seeds = append(seeds, append([]byte{sel}, rawFrameLen(v, cmdPSH, 500, 1, []byte("short"))...))
		seeds = append(seeds, append([]byte{sel}, rawFrame(v, cmdUPD, 1, updPayload(0, 0))...))
		seeds = append(seeds, append([]byte{sel}, rawFrame(v, 7, 1, []byte("junk"))...))
	}
	return seeds
}

// FuzzSession feeds arbitrary bytes to a session as if a peer had sent them.
// Whatever they are, the session must not panic, and it must end once the
// input ends, releasing everyone blocked on it.
func FuzzSession(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(fuzzSessionOnce)
}

// fuzzSessionOnce is one run of FuzzSession.
func fuzzSessionOnce(t *testing.T, data []byte) {
	if len(data) == 0 {
		return
	}
	const maxInput = 64 << 10
	if len(data) > maxInput+1 {
		data = data[:maxInput+1]
	}
	sel, input := data[0], data[1:]
	version := int(sel&1) + 1
	cfg := defaultConfig(version)
	cfg.keepAliveDisabled = true
	if sel&4 != 0 {
		cfg = kcptunConfig(version)
		cfg.keepAliveDisabled = true
	}
	if sel&8 != 0 {
		cfg.maxReceiveBuffer = 4096 // small buffers: exercise the limits
		cfg.maxStreamBuffer = 4096
	}
	chunk := 1 << 16
	if sel&0x10 != 0 {
		chunk = 1 + int(sel>>5)
	}
	conn := &fuzzConn{in: bytes.NewReader(input), chunk: chunk}
	var s *mux.Session
	var err error
	if sel&2 != 0 {
		s, err = mux.Client(conn, cfg.ours())
	} else {
		mc := cfg.ours()
		mc.AcceptMarked = true // marks are read only by a server that takes them
		s, err = mux.Server(conn, mc)
	}
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	defer s.Close()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := s.AcceptStream()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer st.Close()
				st.Write([]byte("reply"))
				io.Copy(st, st) // echo until the stream or the session ends
			}()
		}
	}()
	// A stream of our own too, so the send path meets the input.
	if st, err := s.OpenStream(); err == nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.Close()
			st.Write(bytes.Repeat([]byte{1}, 100000))
			io.Copy(io.Discard, st)
		}()
	}

	if !waitClosed(s.CloseChan(), 5*time.Second) {
		t.Fatalf("session still open 5 s after its input (%d bytes) ended", len(input))
	}
	if !s.IsClosed() {
		t.Fatalf("CloseChan closed but IsClosed() is false")
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	if !waitClosed(done, 5*time.Second) {
		t.Fatalf("a stream call still blocked 5 s after the session closed")
	}
}

package mux_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/nettest"
	"github.com/smuxtun/smuxtun/mux"
)

// rawFrameIn is one frame a raw test peer read from our session.
type rawFrameIn struct {
	cmd     byte
	sid     uint32
	payload []byte
}

// rawPeer is the far end of a connection to one of our sessions, driven
// frame by frame by the test. A goroutine reads and records every frame our
// session sends (so our session's writes never block on it).
type rawPeer struct {
	conn *net.TCPConn
	ver  byte

	mu      sync.Mutex
	fins    map[uint32]bool
	data    map[uint32][]byte
	syns    []uint32
	changed chan struct{} // closed and replaced whenever a frame arrives
	readErr error
	done    chan struct{}
}

// newRawPeer starts reading conn; the reader ends when the test closes conn.
func newRawPeer(t *testing.T, conn *net.TCPConn, ver byte) *rawPeer {
	t.Helper()
	p := &rawPeer{
		conn:    conn,
		ver:     ver,
		fins:    map[uint32]bool{},
		data:    map[uint32][]byte{},
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go p.read()
	t.Cleanup(func() {
		conn.Close()
		<-p.done
	})
	return p
}

func (p *rawPeer) read() {
	defer close(p.done)
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(p.conn, hdr[:]); err != nil {
			p.record(func() { p.readErr = err })
			return
		}
		f := rawFrameIn{cmd: hdr[1], sid: binary.LittleEndian.Uint32(hdr[4:])}
		f.payload = make([]byte, binary.LittleEndian.Uint16(hdr[2:]))
		if _, err := io.ReadFull(p.conn, f.payload); err != nil {
			p.record(func() { p.readErr = err })
			return
		}
		p.record(func() {
			switch f.cmd {
			case cmdFIN:
				p.fins[f.sid] = true
			case cmdPSH:
				p.data[f.sid] = append(p.data[f.sid], f.payload...)
			case cmdSYN:
				p.syns = append(p.syns, f.sid)
			}
		})
	}
}

func (p *rawPeer) record(f func()) {
	p.mu.Lock()
	f()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// waitUntil waits up to d for cond (called with p.mu held) to hold.
func (p *rawPeer) waitUntil(d time.Duration, cond func() bool) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		p.mu.Lock()
		ok, ch := cond(), p.changed
		p.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			p.mu.Lock()
			defer p.mu.Unlock()
			return cond()
		}
	}
}

// write sends raw frames, bounded in time so a stuck session fails the test
// instead of hanging it.
func (p *rawPeer) write(t *testing.T, b []byte) {
	t.Helper()
	p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.conn.Write(b); err != nil {
		t.Fatalf("raw peer write: %v", err)
	}
}

// Flood parameters of TestFloodOfTinyFramesIsBounded.
const (
	floodMaxStreams = 1000
	floodRefused    = 10
	floodRounds     = 64 // 1-byte frames per stream
)

// floodBound is the most the session may add to the heap while holding
// floodRounds unread 1-byte frames on each of maxStreams streams:
//
//	maxStreams × 1 KiB + 512 KiB
//
// Per stream it holds the Stream itself with its two signal channels and
// its entry in the session's map (about 550 bytes: TestIdleStreamMemory
// measures about 1,100 for a pair with both ends in one process), plus the
// bytes: small payloads are appended into one buffer sized to them (64
// bytes for 64 one-byte frames) behind one queue entry, so a flood of tiny
// frames costs about what its bytes cost, not a buffer or a record per
// frame. Measured, that comes to about 700 bytes per stream; the rest of
// the 1 KiB is margin for the allocator's size classes and the race
// detector. The constant is the session's own buffers (the read slab grows
// to 256 KiB under bulk traffic, the accept queue), the test's bookkeeping
// and the runtime's noise; measured, about 300 KiB. At 1,000 streams the
// heap grew by about 1.0 MB against a bound of 1.5 MiB, with and without
// -race (250 streams: 0.47 MB; 4,000 streams: 3.0 to 3.2 MB).
func floodBound(maxStreams int) int64 {
	return int64(maxStreams)<<10 + 512<<10
}

// TestFloodOfTinyFramesIsBounded: a peer that opens streams up to the
// server's MaxStreams, then sends 1-byte data frames round-robin to every
// one of them (64 each) while nobody reads, cannot make the session hold
// more than floodBound. Streams past the cap are refused at once: the peer
// reads a FIN for each within 1 s, and RefusedStreams counts them; whatever
// the peer sends on them is dropped. The session stays usable: once a few
// streams are closed, the peer may open a new one and it carries data both
// ways.
func TestFloodOfTinyFramesIsBounded(t *testing.T) {
	checkGoroutines(t)
	const ver = 2
	raw, conn := nettest.TCPPair(t)
	cfg := kcptunConfig(ver)
	cfg.keepAliveDisabled = true // only the test's frames arrive
	mc := cfg.ours()
	mc.MaxStreams = floodMaxStreams

	before := memSnapshot()
	s, err := mux.Server(conn, mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	peer := newRawPeer(t, raw, ver)

	// Accept every stream that gets in, and read none.
	accepted := make(chan *mux.Stream, floodMaxStreams+1)
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			st, err := s.AcceptStream()
			if err != nil {
				return
			}
			accepted <- st
		}
	}()
	var held []*mux.Stream
	t.Cleanup(func() {
		s.Close()
		<-acceptDone
		for _, st := range held {
			st.Close()
		}
	})

	// Client ids are odd: stream i (from 0) is 2i+1.
	id := func(i int) uint32 { return uint32(2*i + 1) }
	total := floodMaxStreams + floodRefused
	var syns bytes.Buffer
	for i := range total {
		syns.Write(rawFrame(ver, cmdSYN, id(i), nil))
	}
	start := time.Now()
	peer.write(t, syns.Bytes())

	// The last floodRefused streams are past the cap: FIN comes back at once.
	refusedIn := peer.waitUntil(time.Second, func() bool {
		for i := floodMaxStreams; i < total; i++ {
			if !peer.fins[id(i)] {
				return false
			}
		}
		return true
	})
	finAfter := time.Since(start)
	if !refusedIn {
		peer.mu.Lock()
		t.Fatalf("FIN for %d of the %d streams past MaxStreams within 1 s", countFINs(peer.fins, id, floodMaxStreams, total), floodRefused)
	}
	t.Logf("FIN for the %d refused streams after %v", floodRefused, finAfter.Round(time.Millisecond))
	for len(held) < floodMaxStreams {
		select {
		case st := <-accepted:
			held = append(held, st)
		case <-time.After(5 * time.Second):
			t.Fatalf("accepted %d of the %d streams within the cap", len(held), floodMaxStreams)
		}
	}
	if n := s.RefusedStreams(); n != floodRefused {
		t.Errorf("RefusedStreams() = %d, want %d", n, floodRefused)
	}
	peer.mu.Lock()
	if n := countFINs(peer.fins, id, 0, floodMaxStreams); n != 0 {
		t.Errorf("%d streams within the cap were closed", n)
	}
	peer.mu.Unlock()

	// The flood: round-robin 1-byte frames to every stream, the refused ones
	// too. Stream i carries byte(i+round).
	var flood bytes.Buffer
	for round := range floodRounds {
		for i := range total {
			flood.Write(rawFrame(ver, cmdPSH, id(i), []byte{byte(i + round)}))
		}
	}
	peer.write(t, flood.Bytes())
	flood = bytes.Buffer{} // not to be counted below
	// A marker: one more SYN past the cap. Its FIN comes back only after
	// the session has read every frame before it.
	marker := id(total)
	peer.write(t, rawFrame(ver, cmdSYN, marker, nil))
	if !peer.waitUntil(10*time.Second, func() bool { return peer.fins[marker] }) {
		t.Fatalf("no FIN for the marker stream within 10 s: the session did not get through the flood")
	}
	if s.IsClosed() {
		t.Fatalf("the flood closed the session")
	}
	after := memSnapshot()
	grew := int64(after.heap) - int64(before.heap)
	bound := floodBound(floodMaxStreams)
	t.Logf("%d streams × %d one-byte frames (+%d refused streams): heap grew by %d bytes (%.0f per stream), bound %d (%d streams × 1 KiB + 512 KiB)",
		floodMaxStreams, floodRounds, floodRefused, grew, float64(grew)/floodMaxStreams, bound, floodMaxStreams)
	if grew > bound {
		t.Errorf("the session holds %d bytes more heap after the flood, over the bound of %d", grew, bound)
	}

	// Nothing was dropped from the streams within the cap.
	for _, i := range []int{0, floodMaxStreams / 2, floodMaxStreams - 1} {
		st := held[i]
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, floodRounds)
		if _, err := io.ReadFull(st, got); err != nil {
			t.Fatalf("stream %d: read its %d bytes: %v", st.ID(), floodRounds, err)
		}
		for round, b := range got {
			if want := byte(int(st.ID()/2) + round); b != want {
				t.Fatalf("stream %d: byte %d is %d, want %d", st.ID(), round, b, want)
			}
		}
	}

	// Still usable: close a few, and a new stream gets in and carries data.
	for _, st := range held[:5] {
		st.Close()
	}
	fresh := id(total + 1)
	peer.write(t, append(rawFrame(ver, cmdSYN, fresh, nil), rawFrame(ver, cmdPSH, fresh, []byte("ping"))...))
	var st *mux.Stream
	select {
	case st = <-accepted:
		held = append(held, st)
	case <-time.After(5 * time.Second):
		t.Fatalf("a new stream was not accepted within 5 s after 5 were closed (refused %d)", s.RefusedStreams())
	}
	if st.ID() != fresh {
		t.Fatalf("accepted stream %d, want %d", st.ID(), fresh)
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(st, got); err != nil || string(got) != "ping" {
		t.Fatalf("the new stream read %q, %v; want \"ping\"", got, err)
	}
	if _, err := st.Write([]byte("pong")); err != nil {
		t.Fatalf("the new stream's write: %v", err)
	}
	if !peer.waitUntil(5*time.Second, func() bool { return string(peer.data[fresh]) == "pong" }) {
		t.Fatalf("the peer did not receive \"pong\" on the new stream")
	}
	if n := s.RefusedStreams(); n != floodRefused+1 {
		t.Errorf("RefusedStreams() = %d, want %d (the refused ones and the marker)", n, floodRefused+1)
	}
	peer.mu.Lock()
	for i := floodMaxStreams; i < total; i++ {
		if len(peer.data[id(i)]) > 0 {
			t.Errorf("the session sent data on refused stream %d", id(i))
		}
	}
	peer.mu.Unlock()
}

// countFINs counts the streams i in [from, to) whose FIN arrived.
func countFINs(fins map[uint32]bool, id func(int) uint32, from, to int) int {
	n := 0
	for i := from; i < to; i++ {
		if fins[id(i)] {
			n++
		}
	}
	return n
}

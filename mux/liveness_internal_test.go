package mux

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/nettest"
)

// TestPingFloodStaysBounded: a peer that sends a hundred thousand pings and
// never reads gets at most a couple of answers queued, not one per ping.
func TestPingFloodStaysBounded(t *testing.T) {
	a, b := nettest.TCPPair(t)
	// Small socket buffers, so that the answers cannot all hide in the
	// kernel.
	if err := a.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if err := b.SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Version = 2
	cfg.KeepAliveDisabled = true
	s, err := Server(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 100000
	buf := make([]byte, 0, (n+1)*headerSize)
	frame := func(sid uint32) {
		var h [headerSize]byte
		h[0], h[1] = 2, cmdNOP
		binary.LittleEndian.PutUint32(h[4:], sid)
		buf = append(buf, h[:]...)
	}
	frame(helloID)
	for range n {
		frame(pingID)
	}
	go a.Write(buf) // returns when the test closes a

	// The answers pile up on the server if anywhere: a's receive side is
	// never read. Watch the queue while the pings arrive.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		s.sender.mu.Lock()
		ctrl := len(s.sender.ctrl) + len(s.sender.carry)
		s.sender.mu.Unlock()
		if ctrl > 4*headerSize {
			t.Fatalf("%d bytes of control frames queued for a peer that pings and never reads", ctrl)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !s.PeerAnswersPing() {
		t.Fatalf("the hello was not seen (closed %v: %v)", s.IsClosed(), s.closeErr)
	}
}

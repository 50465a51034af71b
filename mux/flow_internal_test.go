package mux

import (
	"io"
	"testing"
	"time"
)

func kcptunTestConfig() *Config {
	c := DefaultConfig()
	c.Version = 2
	c.MaxFrameSize = 8192
	c.MaxReceiveBuffer = 4 << 20
	c.MaxStreamBuffer = 2 << 20
	return c
}

// TestIdleStreamsGiveBackCredit: streams that are open but idle (kept-alive
// connections) hold credit they do not use; once a busy stream wants more
// than the budget leaves, the idle ones are shrunk to minGrant and the busy
// one grows to its full MaxStreamBuffer, and the credit owed stays within
// the budget plus minGrant per stream.
func TestIdleStreamsGiveBackCredit(t *testing.T) {
	cfg := kcptunTestConfig()
	cs, ss := sessionPair(t, cfg)
	const idle = 40
	var accepted []*Stream
	for range idle {
		if _, err := cs.OpenStream(); err != nil {
			t.Fatal(err)
		}
		st, err := ss.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		accepted = append(accepted, st)
	}
	if got, limit := ss.credit.Load(), int64(cfg.MaxReceiveBuffer)+idle*ss.minGrant(); got > limit {
		t.Fatalf("%d idle streams are owed %d bytes, more than the budget plus minGrant each (%d)", idle, got, limit)
	}

	w, err := cs.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ss.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		chunk := make([]byte, 64<<10)
		for range 256 { // 16 MiB, over at least a few reclaim periods
			if _, err := w.Write(chunk); err != nil {
				done <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
		done <- w.CloseWrite()
	}()
	r.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r.rmu.Lock()
	win := r.win
	r.rmu.Unlock()
	if win != uint32(cfg.MaxStreamBuffer) {
		t.Errorf("the busy stream's window ended at %d beside %d idle streams; want MaxStreamBuffer %d", win, idle, cfg.MaxStreamBuffer)
	}
	for i, st := range accepted {
		st.rmu.Lock()
		spare := int64(int32(st.edge - st.recvd))
		st.rmu.Unlock()
		if spare > ss.minGrant() {
			t.Errorf("idle stream %d still holds %d bytes of credit; want at most minGrant %d", i, spare, ss.minGrant())
			break
		}
	}
}

package mux_test

import (
	"io"
	"os"
	"runtime"
	"testing"
	"time"
)

// idleStreams is how many stream pairs TestIdleStreamMemory holds open.
const idleStreams = 10000

// memoryCost is what holding n idle stream pairs cost, per pair.
type memoryCost struct {
	heap       float64 // bytes of live heap
	stack      float64 // bytes of goroutine stacks
	goroutines float64
}

// idleUse is what idleStreamCost does with each stream pair before it
// measures.
type idleUse int

const (
	idleOpened     idleUse = iota // nothing: freshly opened
	idleReadByte                  // one byte each way, read at once
	idleUnreadByte                // one byte each way, left unread at both ends
)

// idleStreamCost opens n streams from a client session of im, accepts them
// on the server session (both in this process), optionally passes one byte
// each way on every stream, and measures live heap and stacks before and
// after, with a full GC before each reading.
func idleStreamCost(t *testing.T, im impl, cfg muxConfig, n int, used bool) memoryCost {
	t.Helper()
	use := idleOpened
	if used {
		use = idleReadByte
	}
	return streamCost(t, im, cfg, n, use)
}

// streamCost is idleStreamCost with the choice of what each pair carries.
func streamCost(t *testing.T, im impl, cfg muxConfig, n int, use idleUse) memoryCost {
	t.Helper()
	client, server := sessionPair(t, im, im, cfg, cfg)
	opened := make([]halfConn, 0, n)
	accepted := make([]halfConn, 0, n)

	before := memSnapshot()
	acceptErr := make(chan error, 1)
	go func() {
		for range n {
			st, err := server.accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted = append(accepted, st)
		}
		acceptErr <- nil
	}()
	for range n {
		st, err := client.open()
		if err != nil {
			t.Fatalf("open stream %d: %v", len(opened)+1, err)
		}
		opened = append(opened, st)
	}
	if err, ok := waitErr(acceptErr, 60*time.Second); !ok || err != nil {
		t.Fatalf("accept: %v (finished %v)", err, ok)
	}
	switch use {
	case idleUnreadByte:
		writeUnread(t, client, server, opened, accepted)
	case idleReadByte:
		one := []byte{1}
		for i := range opened {
			for _, p := range [][2]halfConn{{opened[i], accepted[i]}, {accepted[i], opened[i]}} {
				if _, err := p[0].Write(one); err != nil {
					t.Fatal(err)
				}
				if _, err := p[1].Read(one); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	after := memSnapshot()
	if use == idleUnreadByte {
		// The bytes were held, not dropped: the first and the last pair
		// still give theirs.
		for _, i := range []int{0, n - 1} {
			for _, st := range []halfConn{opened[i], accepted[i]} {
				st.SetReadDeadline(time.Now().Add(5 * time.Second))
				b := make([]byte, 2)
				if k, err := st.Read(b); k != 1 || err != nil {
					t.Fatalf("stream %d held %d unread bytes (%v), want 1", st.ID(), k, err)
				}
			}
		}
	}
	runtime.KeepAlive(opened)
	runtime.KeepAlive(accepted)
	t.Cleanup(func() {
		for i := range opened {
			opened[i].Close()
			accepted[i].Close()
		}
	})
	return memoryCost{
		heap:       float64(int64(after.heap)-int64(before.heap)) / float64(n),
		stack:      float64(int64(after.stack)-int64(before.stack)) / float64(n),
		goroutines: float64(after.goroutines-before.goroutines) / float64(n),
	}
}

type snapshot struct {
	heap, stack uint64
	goroutines  int
}

func memSnapshot() snapshot {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return snapshot{m.HeapAlloc, m.StackInuse, runtime.NumGoroutine()}
}

// TestIdleStreamMemory measures the memory an idle open stream pair costs
// (both ends in this process, 10,000 pairs), for ours and for xtaci/smux,
// and fails if ours costs more heap than xtaci/smux's. By default it measures
// freshly opened streams at kcptun's configuration; MUX_MEMORY_ALL=1 adds the
// default configurations and streams that have carried a byte each way:
//
//	MUX_MEMORY_ALL=1 go test -run TestIdleStreamMemory -v ./mux/
func TestIdleStreamMemory(t *testing.T) {
	configs := []muxConfig{kcptunConfig(2)}
	uses := []bool{false}
	if os.Getenv("MUX_MEMORY_ALL") != "" {
		configs = []muxConfig{defaultConfig(1), defaultConfig(2), kcptunConfig(2)}
		uses = []bool{false, true}
	}
	for _, cfg := range configs {
		for _, used := range uses {
			name := cfg.name + "/opened"
			if used {
				name = cfg.name + "/after-one-byte-each-way"
			}
			t.Run(name, func(t *testing.T) {
				costs := map[string]memoryCost{}
				for _, im := range []impl{implXtaci, implOurs} {
					costs[im.name] = idleStreamCost(t, im, cfg, idleStreams, used)
				}
				for _, name := range []string{"ours", "xtaci"} {
					c := costs[name]
					t.Logf("%-5s %s: %7.0f heap bytes, %6.0f stack bytes, %.2f goroutines per idle stream pair",
						name, cfg.name, c.heap, c.stack, c.goroutines)
				}
				ours, xt := costs["ours"], costs["xtaci"]
				if ours.heap > xt.heap {
					t.Errorf("an idle stream pair costs %.0f heap bytes in ours, %.0f in xtaci/smux", ours.heap, xt.heap)
				}
				if ours.goroutines > 0.01 {
					t.Errorf("ours keeps %.2f goroutines per idle stream pair", ours.goroutines)
				}
			})
		}
	}
}

// writeUnread writes one byte each way on every stream pair and reads none
// of them, then waits until both sessions have received every one: a marker
// stream carries one byte each way after them, and frames arrive in the
// order they were written, so once the marker's byte has been read at an
// end, all the single bytes written toward that end are held there.
func writeUnread(t *testing.T, client, server session, opened, accepted []halfConn) {
	t.Helper()
	one := []byte{1}
	for i := range opened {
		if _, err := opened[i].Write(one); err != nil {
			t.Fatalf("write to stream %d: %v", i, err)
		}
		if _, err := accepted[i].Write(one); err != nil {
			t.Fatalf("write back on stream %d: %v", i, err)
		}
	}
	marker, err := client.open()
	if err != nil {
		t.Fatalf("open the marker stream: %v", err)
	}
	defer marker.Close()
	marker.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := marker.Write([]byte{'m'}); err != nil {
		t.Fatalf("marker write: %v", err)
	}
	server.SetDeadline(time.Now().Add(30 * time.Second))
	defer server.SetDeadline(time.Time{})
	peer, err := server.accept()
	if err != nil {
		t.Fatalf("accept the marker stream: %v", err)
	}
	defer peer.Close()
	peer.SetDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 1)
	if _, err := io.ReadFull(peer, b); err != nil {
		t.Fatalf("marker read at the server: %v", err)
	}
	if _, err := peer.Write(b); err != nil {
		t.Fatalf("marker write back: %v", err)
	}
	if _, err := io.ReadFull(marker, b); err != nil {
		t.Fatalf("marker read at the client: %v", err)
	}
}

// TestUnreadByteStreamMemory measures what 10,000 stream pairs cost when
// each holds one unread byte at each end (one byte written each way, never
// read), for ours and for xtaci/smux, and fails if ours costs more heap per
// pair. This is the shape of many idle kept-alive connections whose last
// small message nobody has read yet. It runs at kcptun's configuration and
// xtaci/smux's default one in version 2; MUX_MEMORY_ALL=1 adds version 1:
//
//	MUX_MEMORY_ALL=1 go test -run TestUnreadByteStreamMemory -v ./mux/
func TestUnreadByteStreamMemory(t *testing.T) {
	configs := []muxConfig{kcptunConfig(2), defaultConfig(2)}
	if os.Getenv("MUX_MEMORY_ALL") != "" {
		configs = append(configs, defaultConfig(1))
	}
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			costs := map[string]memoryCost{}
			for _, im := range []impl{implXtaci, implOurs} {
				costs[im.name] = streamCost(t, im, cfg, idleStreams, idleUnreadByte)
			}
			ours, xt := costs["ours"], costs["xtaci"]
			for _, name := range []string{"ours", "xtaci"} {
				c := costs[name]
				t.Logf("%-5s %s: %7.0f heap bytes, %6.0f stack bytes, %.2f goroutines per stream pair holding one unread byte at each end",
					name, cfg.name, c.heap, c.stack, c.goroutines)
			}
			if ours.heap > xt.heap {
				t.Errorf("a stream pair holding one unread byte at each end costs %.0f heap bytes in ours, %.0f in xtaci/smux",
					ours.heap, xt.heap)
			}
			if ours.goroutines > 0.01 {
				t.Errorf("ours keeps %.2f goroutines per stream pair", ours.goroutines)
			}
		})
	}
}

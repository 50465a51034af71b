package mux_test

import (
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

// idleStreamCost opens n streams from a client session of im, accepts them
// on the server session (both in this process), optionally passes one byte
// each way on every stream, and measures live heap and stacks before and
// after, with a full GC before each reading.
func idleStreamCost(t *testing.T, im impl, cfg muxConfig, n int, used bool) memoryCost {
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
	if used {
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

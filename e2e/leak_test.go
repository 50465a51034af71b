//go:build linux

package e2e

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// TestNoLeaks runs 2000 short connections through the tunnel and checks in
// /proc that the server and the client give back their file descriptors and do
// not keep the threads or memory those connections used.
func TestNoLeaks(t *testing.T) {
	const (
		warmup      = 200
		connections = 2000
		workers     = 8
	)
	for _, v := range []struct {
		name string
		opts demo.Options
	}{tunnelVariants[0], tunnelVariants[2]} {
		t.Run(v.name, func(t *testing.T) {
			tg := startTarget(t, false)
			o := v.opts
			o.Target = tg.Addr()
			tun := startTunnel(t, o)
			procs := []*demo.Proc{tun.Server, tun.Client}

			// The warm-up grows the pools and the thread count to what this load needs.
			shortConnections(t, tun, warmup, workers)
			base := settledUsage(t, procs, nil)
			for i, p := range procs {
				t.Logf("%s after %d warm-up connections: %v", p.Name, warmup, base[i])
			}

			shortConnections(t, tun, connections, workers)
			after := settledUsage(t, procs, base)
			for i, p := range procs {
				t.Logf("%s after %d more connections: %v", p.Name, connections, after[i])
				if err := withinBounds(base[i], after[i]); err != nil {
					t.Errorf("%s: %v", p.Name, err)
				}
			}
		})
	}
}

// Slack over the warm-up baseline: a few descriptors may be in flight (a
// keepalive, a redial), the Go runtime may start a couple of threads, and the
// heap may grow a little; a leak of a descriptor, a goroutine with its buffers,
// or a buffer per connection over 2000 connections is well above these.
const (
	fdSlack     = 4
	threadSlack = 4
	rssSlack    = 48 << 20
)

func withinBounds(base, now demo.Usage) error {
	switch {
	case now.FDs > base.FDs+fdSlack:
		return fmt.Errorf("%d open fds, %d before the connections", now.FDs, base.FDs)
	case now.Threads > base.Threads+threadSlack:
		return fmt.Errorf("%d threads, %d before the connections", now.Threads, base.Threads)
	case now.RSSBytes > base.RSSBytes+rssSlack:
		return fmt.Errorf("%.1f MiB resident, %.1f MiB before the connections",
			float64(now.RSSBytes)/(1<<20), float64(base.RSSBytes)/(1<<20))
	}
	return nil
}

// shortConnections runs n downloads of 1 KiB through the tunnel, workers at a time.
func shortConnections(t *testing.T, tun *demo.Tunnel, n, workers int) {
	t.Helper()
	var next atomic.Int64
	var failed atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && failed.Load() == 0 {
				if err := through(tun, operations[1], 1024, 10*time.Second); err != nil {
					failed.Add(1)
					once.Do(func() { first = err })
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		t.Fatalf("short connection failed: %v", first)
	}
}

// settledUsage reads each process's usage once its fd count has stopped
// falling (connections are torn down asynchronously) or is back within the
// slack of base, for at most 10 s.
func settledUsage(t *testing.T, procs []*demo.Proc, base []demo.Usage) []demo.Usage {
	t.Helper()
	out := make([]demo.Usage, len(procs))
	deadline := time.Now().Add(10 * time.Second)
	for i, p := range procs {
		prev := -1
		stable := 0
		for {
			u, err := demo.ReadUsage(p.Pid())
			if err != nil {
				t.Fatalf("%s: %v\n%s", p.Name, err, p.Describe())
			}
			out[i] = u
			if base != nil && withinBounds(base[i], u) == nil {
				break
			}
			if u.FDs == prev {
				stable++
			} else {
				stable = 0
			}
			prev = u.FDs
			if (base == nil && stable >= 5) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return out
}

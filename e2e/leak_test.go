//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
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
			// --pprof shows each process's goroutine count.
			pprof := []string{freeAddr(t), freeAddr(t)}
			o.ServerArgs = []string{"--pprof", "--pprofaddr", pprof[0]}
			o.ClientArgs = []string{"--pprof", "--pprofaddr", pprof[1]}
			tun := startTunnel(t, o)
			procs := []*demo.Proc{tun.Server, tun.Client}

			// The warm-up grows the pools and the thread count to what this load needs.
			shortConnections(t, tun, warmup, workers)
			base := settledUsage(t, procs, pprof, nil)
			for i, p := range procs {
				t.Logf("%s after %d warm-up connections: %v", p.Name, warmup, base[i])
			}

			shortConnections(t, tun, connections, workers)
			after := settledUsage(t, procs, pprof, base)
			for i, p := range procs {
				t.Logf("%s after %d more connections: %v", p.Name, connections, after[i])
				if err := withinBounds(base[i], after[i]); err != nil {
					t.Errorf("%s: %v", p.Name, err)
				}
			}
		})
	}
}

// usage is what /proc and pprof show of one process.
type usage struct {
	demo.Usage
	Goroutines int
}

func (u usage) String() string { return fmt.Sprintf("%v, %d goroutines", u.Usage, u.Goroutines) }

// Slack over the warm-up baseline: a few descriptors or goroutines may be in
// flight (a keepalive, a pprof request), the Go runtime keeps the threads a
// burst of blocking system calls started, and the heap may grow a little; a
// leak of a descriptor, a goroutine with its buffers, or a buffer per
// connection over 2000 connections is well above these.
const (
	fdSlack        = 4
	goroutineSlack = 6
	threadSlack    = 8
	rssSlack       = 48 << 20
)

func withinBounds(base, now usage) error {
	switch {
	case now.Goroutines > base.Goroutines+goroutineSlack:
		return fmt.Errorf("%d goroutines, %d before the connections", now.Goroutines, base.Goroutines)
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

// settledUsage reads each process's usage once its fd and goroutine counts have stopped
// falling (connections are torn down asynchronously) or is back within the
// slack of base, for at most 10 s.
func settledUsage(t *testing.T, procs []*demo.Proc, pprof []string, base []usage) []usage {
	t.Helper()
	out := make([]usage, len(procs))
	deadline := time.Now().Add(10 * time.Second)
	for i, p := range procs {
		prev := -1
		stable := 0
		for {
			pu, err := demo.ReadUsage(p.Pid())
			if err != nil {
				t.Fatalf("%s: %v\n%s", p.Name, err, p.Describe())
			}
			g, err := goroutines(pprof[i])
			if err != nil {
				t.Fatalf("%s: %v\n%s", p.Name, err, p.Describe())
			}
			u := usage{pu, g}
			out[i] = u
			if base != nil && withinBounds(base[i], u) == nil {
				break
			}
			if u.FDs+u.Goroutines == prev {
				stable++
			} else {
				stable = 0
			}
			prev = u.FDs + u.Goroutines
			if (base == nil && stable >= 5) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return out
}

// goroutines reads the goroutine count from the net/http/pprof endpoint at addr.
func goroutines(addr string) (int, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, fmt.Errorf("pprof: %w", err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("pprof: read goroutine profile: %w", err)
	}
	// The first line reads "goroutine profile: total N".
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total ")))
	if err != nil {
		return 0, fmt.Errorf("pprof: unexpected first line %q", line)
	}
	return n, nil
}

// freeAddr is a free TCP address on 127.0.0.1.
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := demo.FreePort("tcp")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

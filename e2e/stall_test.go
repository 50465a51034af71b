package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// Bounds of the stall test. Every blocking read and write below has a
// deadline derived from these, so a frozen tunnel fails the test instead of
// hanging it.
const (
	stallEchoSize    = 1 << 20
	stallEchoRounds  = 10
	stallEchoTimeout = 15 * time.Second
	// The stall has taken hold when what the stalled side accepted has not
	// grown for stallQuiet; stallSettleMax bounds the wait if it keeps creeping.
	stallQuiet     = time.Second
	stallSettleMax = 10 * time.Second
	// The stalled transfers get releaseBase plus their volume at releaseRate
	// to finish once the applications read (or the target reads) again.
	releaseBase = 60 * time.Second
	releaseRate = 10 << 20 // bytes per second, far below loopback speed
)

type stallCase struct {
	k    int   // stalled connections
	size int64 // bytes each of them asks to move
}

// stallCases are the k values and sizes to run: 64 MiB per connection up to
// k = 8 and 16 MiB for k = 64, so that `make test` stays quick;
// SMUXTUN_STALL_FULL=1 gives k = 64 the full 64 MiB too, and
// SMUXTUN_STALL_SIZE=<MiB> sets the size of every case.
func stallCases(t *testing.T) []stallCase {
	t.Helper()
	const mib = 1 << 20
	cases := []stallCase{{1, 64 * mib}, {3, 64 * mib}, {8, 64 * mib}, {64, 16 * mib}}
	if os.Getenv("SMUXTUN_STALL_FULL") == "1" {
		cases[3].size = 64 * mib
	}
	if s := os.Getenv("SMUXTUN_STALL_SIZE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("SMUXTUN_STALL_SIZE=%q: want a positive number of MiB", s)
		}
		for i := range cases {
			cases[i].size = int64(n) * mib
		}
	}
	return cases
}

// TestStalledConnectionsDoNotFreezeOthers opens k connections through the
// tunnel whose transfer stalls at one end — the application stops reading a
// download, or the target stops reading an upload — and checks that new
// connections beside them still carry a 1 MiB echo, ten times in a row, and
// that the stalled transfers complete intact once reading resumes. Both
// binaries run with kcptun's default tuning (no tuning flags): a stream that
// nobody reads must not take the whole session's buffer or window with it.
func TestStalledConnectionsDoNotFreezeOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("moves hundreds of MiB through the tunnel")
	}
	cases := stallCases(t)
	for _, dir := range []string{"download", "upload"} {
		t.Run(dir, func(t *testing.T) {
			for _, c := range cases {
				t.Run(fmt.Sprintf("k=%d", c.k), func(t *testing.T) {
					// A fresh target and tunnel per case: a freeze left behind
					// by one case must not be blamed on the next.
					tg := startTarget(t, false)
					tun := startTunnel(t, demo.Options{Target: tg.Addr()})
					runStall(t, tg, tun, dir, c)
				})
			}
		})
	}
}

func runStall(t *testing.T, tg *demo.Target, tun *demo.Tunnel, dir string, sc stallCase) {
	k, size := sc.k, sc.size
	name := fmt.Sprintf("k=%d %s", k, dir)
	releaseBudget := releaseBase + time.Duration(int64(k)*size/releaseRate)*time.Second
	// Covers the whole life of a stalled connection; tightened at the release.
	lifetime := stallSettleMax + stallEchoRounds*stallEchoTimeout + releaseBudget + 30*time.Second

	conns := make([]net.Conn, k)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	for i := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := demo.Dial(ctx, tun.ClientAddr)
		cancel()
		if err != nil {
			t.Fatalf("%s: stalled connection %d: %v", name, i, err)
		}
		c.SetDeadline(time.Now().Add(lifetime))
		conns[i] = c
	}

	// Start the k transfers and stall them.
	var wg sync.WaitGroup
	results := make([]error, k)
	// accepted is what the stalled side has taken in so far; blocked counts
	// the connections whose source still holds bytes the tunnel would not
	// take, the proof that the stall reached back through the tunnel.
	var accepted func() int64
	var blocked func() int
	switch dir {
	case "download":
		// The applications ask and then do not read: the target's bytes pile
		// up in the tunnel until the flow stops.
		base := tg.Sent()
		for i, c := range conns {
			if err := demo.AskDownload(c, size); err != nil {
				t.Fatalf("%s: stalled connection %d: %v", name, i, err)
			}
		}
		accepted = func() int64 { return tg.Sent() - base }
		blocked = tg.Active // the downloads still sending
	case "upload":
		// The applications push; the target does not read until released, so
		// their writes block once the tunnel's buffers are full.
		sent := make([]atomic.Int64, k)
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = demo.PausedUpload(c, size, func(n int64) { sent[i].Store(n) })
			}()
		}
		accepted = func() int64 {
			var sum int64
			for i := range sent {
				sum += sent[i].Load()
			}
			return sum
		}
		blocked = func() int {
			n := 0
			for i := range sent {
				if sent[i].Load() < size {
					n++
				}
			}
			return n
		}
	}
	// Whatever happens below, the goroutines end (their deadlines bound
	// them) before the subtest does.
	defer wg.Wait()

	n, waited := settle(accepted)
	nb := blocked()
	t.Logf("%s: stalled after %v with %.1f of %d MiB accepted, %d of %d sources blocked",
		name, waited.Round(time.Millisecond), float64(n)/(1<<20), int64(k)*size>>20, nb, k)
	if nb == 0 {
		// Buffers outside the tunnel took everything: nothing to test.
		t.Errorf("%s: no connection is held back after %.1f MiB: no stall to test; raise SMUXTUN_STALL_SIZE", name, float64(n)/(1<<20))
	}

	// New connections beside the stalled ones. The first echo that does not
	// complete fails the case; the rounds after it would only wait out the
	// same freeze, so they are skipped.
	var times []string
	for round := 1; round <= stallEchoRounds; round++ {
		d, err := echoThrough(tun, stallEchoSize, stallEchoTimeout)
		if err != nil {
			times = append(times, "FAIL")
			t.Errorf("%s: echo round %d of %d beside %d stalled connections did not complete within %v: %v",
				name, round, stallEchoRounds, k, stallEchoTimeout, err)
			break
		}
		times = append(times, d.Round(time.Millisecond).String())
	}
	t.Logf("%s: echo 1 MiB x%d: %s", name, stallEchoRounds, strings.Join(times, " "))

	// Release the stall; every stalled transfer must now complete intact.
	start := time.Now()
	for _, c := range conns {
		c.SetDeadline(start.Add(releaseBudget))
	}
	switch dir {
	case "download":
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = demo.ReceiveDownload(c, size, nil)
			}()
		}
	case "upload":
		tg.ReleasePaused()
	}
	wg.Wait()
	var failed []string
	for i, err := range results {
		if err != nil {
			failed = append(failed, fmt.Sprintf("connection %d: %v", i, err))
		}
	}
	if nf := len(failed); nf > 0 {
		if nf > 3 {
			failed = append(failed[:3], fmt.Sprintf("... and %d more", nf-3))
		}
		t.Errorf("%s: %d of %d stalled transfers of %d MiB did not complete intact within %v of the release:\n%s",
			name, nf, k, size>>20, releaseBudget, strings.Join(failed, "\n"))
	}
	t.Logf("%s: released, %d x %d MiB finished in %v", name, k, size>>20, time.Since(start).Round(time.Millisecond))
}

// settle waits until accepted stops growing for stallQuiet, at most
// stallSettleMax, and returns its last value and the time waited.
func settle(accepted func() int64) (int64, time.Duration) {
	start := time.Now()
	last, since := accepted(), start
	for {
		time.Sleep(100 * time.Millisecond)
		now := time.Now()
		if n := accepted(); n != last {
			last, since = n, now
		}
		if now.Sub(since) >= stallQuiet || now.Sub(start) >= stallSettleMax {
			return last, now.Sub(start)
		}
	}
}

// echoThrough opens a new connection through the tunnel's client and echoes
// size bytes on it within timeout, and returns how long that took.
func echoThrough(tun *demo.Tunnel, size int64, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := demo.Dial(ctx, tun.ClientAddr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(start.Add(timeout))
	if err := demo.Echo(c, size, nil); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

package tunnel

import (
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
)

// TestRateLimiterPaces: after the burst, writes average out at the rate.
// Only the lower bound is checked: a slow machine can only add time.
func TestRateLimiterPaces(t *testing.T) {
	const rate = 1 << 20 // 1 MiB/s
	l := newRateLimiter(rate)
	start := time.Now()
	total := rateBurst + rate/2 // the burst, then half a second's worth
	for sent := 0; sent < total; sent += 8 << 10 {
		l.wait(8 << 10)
	}
	l.wait(0) // wait off the debt of the last write
	if d := time.Since(start); d < 450*time.Millisecond {
		t.Fatalf("%d bytes at %d B/s took %v, want at least 0.5 s after the burst", total, rate, d)
	}
}

func TestRateLimiterConcurrent(t *testing.T) {
	l := newRateLimiter(1 << 30)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				l.wait(1 << 10)
			}
		}()
	}
	wg.Wait()
}

// TestRateLimitEndToEnd: --ratelimit slows a transfer down on both
// transports (kcp-go's limiter on KCP, ours on TCP), and every byte still
// arrives.
func TestRateLimitEndToEnd(t *testing.T) {
	const rate = 512 << 10 // bytes per second, each direction
	const size = 768 << 10
	for _, tr := range []string{config.TransportKCP, config.TransportTCP} {
		t.Run(tr, func(t *testing.T) {
			local := runPair(t, pairOpts{transport: tr, nocomp: true, tweak: func(c *config.Common) { c.RateLimit = rate }})
			start := time.Now()
			if err := echoRoundTrip("tcp", local, randomBytes(t, size), ioTimeout); err != nil {
				t.Fatal(err)
			}
			// Each direction carries size bytes at rate; bursts of about
			// 100 KB are allowed up front.
			if d, min := time.Since(start), time.Duration(float64(size-200<<10)/rate*float64(time.Second)); d < min {
				t.Fatalf("%d bytes each way at %d B/s took %v, want at least %v", size, rate, d, min)
			}
		})
	}
}

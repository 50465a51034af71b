package tunnel

import (
	"context"
	"sync"
	"time"
)

// relayUntil runs each part in a goroutine of its own (the directions of a
// UDP flow or association) until one returns, ctx ends or die is closed,
// or, if idle is not nil, idle reports true at one of its checks every
// period. Then it calls stop, once, which must make every part return, and
// returns the first error a part returned.
func relayUntil(ctx context.Context, die <-chan struct{}, stop func(), idle func(now time.Time) bool, period time.Duration,
	parts ...func() error) error {
	var (
		once  sync.Once
		done  = make(chan struct{})
		first error
		wg    sync.WaitGroup
	)
	end := func(err error) {
		once.Do(func() {
			first = err
			close(done)
			stop()
		})
	}
	for _, part := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			end(part())
		}()
	}
	var tick <-chan time.Time
	if idle != nil {
		t := time.NewTicker(period)
		defer t.Stop()
		tick = t.C
	}
wait:
	for {
		select {
		case <-done:
			break wait
		case <-ctx.Done():
			end(nil)
		case <-die:
			end(nil)
		case now := <-tick:
			if idle(now) {
				end(nil)
			}
		}
	}
	wg.Wait()
	return first
}

package tunnel

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
)

// TestNoLeaks: thousands of short connections, then the goroutine count
// comes back to its baseline, the open file descriptors come back near
// theirs, and the heap does not keep what the connections used.
func TestNoLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("thousands of connections")
	}
	for _, tr := range []string{config.TransportKCP, config.TransportTCP} {
		t.Run(tr, func(t *testing.T) {
			fdBase := countFDs(t)
			heapBase := heapInUse()
			leakChecked(t, func(t *testing.T) {
				local := runPair(t, pairOpts{transport: tr, conn: 2})
				const total, parallel = 2000, 16
				jobs := make(chan int)
				errs := make(chan error, total)
				var wg sync.WaitGroup
				for range parallel {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range jobs {
							data := randomBytes(t, 1+i%4096)
							if err := echoRoundTrip("tcp", local, data, ioTimeout); err != nil {
								errs <- fmt.Errorf("conn %d: %w", i, err)
							}
						}
					}()
				}
				for i := range total {
					jobs <- i
				}
				close(jobs)
				wg.Wait()
				close(errs)
				n := 0
				for err := range errs {
					if n++; n <= 5 {
						t.Error(err)
					}
				}
				if n > 0 {
					t.Fatalf("%d of %d connections failed", n, total)
				}
				if a := stats.streamsActive.Load(); a != 0 {
					// The pairs close asynchronously; give them a moment.
					deadline := time.Now().Add(5 * time.Second)
					for stats.streamsActive.Load() != 0 && time.Now().Before(deadline) {
						time.Sleep(20 * time.Millisecond)
					}
					if a := stats.streamsActive.Load(); a != 0 {
						t.Fatalf("%d streams still active after every connection ended", a)
					}
				}
			})
			// Sockets in TIME_WAIT hold no descriptor; allow a little slack for
			// the runtime's own (netpoll, timers). The runtime keeps a pool of
			// pipes for splice (used by the echo target's io.Copy); a GC
			// releases them.
			deadline := time.Now().Add(5 * time.Second)
			for {
				runtime.GC()
				fds := countFDs(t)
				if fds <= fdBase+3 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("open fds: %d, baseline %d\n%s", fds, fdBase, listFDs())
				}
				time.Sleep(50 * time.Millisecond)
			}
			if heap := heapInUse(); heap > heapBase+32<<20 {
				t.Errorf("heap in use grew from %d to %d bytes", heapBase, heap)
			}
		})
	}
}

func listFDs() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&b, "%s -> %s\n", e.Name(), l)
	}
	return b.String()
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

package tunnel

// Concurrent connections through one session, with the process's CPU time.

import (
	"encoding/binary"
	"fmt"
	"github.com/smuxtun/smuxtun/internal/nettest"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/smuxtun/smuxtun/config"
)

func sinkOne(addr string, payload []byte) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	var h [8]byte
	binary.LittleEndian.PutUint64(h[:], uint64(len(payload)))
	if _, err := c.Write(h[:]); err != nil {
		return err
	}
	if _, err := c.Write(payload); err != nil {
		return err
	}
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack != h {
		return fmt.Errorf("ack %v, %v", ack, err)
	}
	return nil
}

func benchConns(b *testing.B, tweak func(*config.Common)) {
	payload := randomBytes(b, benchSize)
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("smuxtun-kcp/conns=%d", n), func(b *testing.B) {
			addr := runPair(b, pairOpts{transport: config.TransportKCP, target: startSink(b), tweak: tweak})
			sinkTransfer(b, addr, payload[:1024]) // warm up the session
			b.SetBytes(int64(n) * benchSize)
			cpu0, _ := nettest.ProcessCPU()
			b.ResetTimer()
			for b.Loop() {
				var wg sync.WaitGroup
				errs := make([]error, n)
				for i := range n {
					wg.Add(1)
					go func() { defer wg.Done(); errs[i] = sinkOne(addr, payload) }()
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			cpu1, _ := nettest.ProcessCPU()
			b.ReportMetric((cpu1-cpu0).Seconds()/(float64(b.N)*float64(n)*benchSize/1e9), "cpu-s/GB")
		})
	}
}

// BenchmarkConnections moves 4 MiB on each of 1 or 8 connections at once
// through smuxtun over KCP on loopback, and reports the CPU time of the
// whole process per GB carried; /nopacing is the same with --nopacing.
func BenchmarkConnections(b *testing.B) {
	benchConns(b, nil)
	b.Run("nopacing", func(b *testing.B) { benchConns(b, func(c *config.Common) { c.NoPacing = true }) })
}

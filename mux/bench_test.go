package mux_test

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/smuxtun/smuxtun/internal/nettest"
)

// The benchmarks compare, in one run, raw TCP on loopback with our mux,
// xtaci/smux and hashicorp/yamux. Every anchor moves data the same way:
// fixed-size Writes on one end, Reads into a fixed 128 KiB buffer on the
// other, so only the transport under test differs.
//
//	go test -run '^$' -bench 'Throughput|Aggregate64|Messages64' -benchmem -count 5 ./mux/

const (
	benchChunk   = 64 << 10  // bytes per Write in the bulk benchmarks
	benchReadBuf = 128 << 10 // bytes per Read everywhere
	benchMsg     = 64        // bytes per message in BenchmarkMessages64
	benchStreams = 64
)

// benchAnchor is one transport under comparison: it returns n connected
// (writer, reader) pairs.
type benchAnchor struct {
	name  string
	pairs func(b *testing.B, n int) (w, r []io.ReadWriteCloser)
}

func tcpAnchor() benchAnchor {
	return benchAnchor{"tcp", func(b *testing.B, n int) (w, r []io.ReadWriteCloser) {
		for range n {
			c, s := nettest.TCPPair(b)
			w = append(w, c)
			r = append(r, s)
		}
		return w, r
	}}
}

// muxAnchor opens n streams from the client session of im and accepts them
// on the server session.
func muxAnchor(name string, im impl, cfg muxConfig) benchAnchor {
	return benchAnchor{name, func(b *testing.B, n int) (w, r []io.ReadWriteCloser) {
		client, server := sessionPair(b, im, im, cfg, cfg)
		for range n {
			st, err := client.open()
			if err != nil {
				b.Fatalf("open: %v", err)
			}
			b.Cleanup(func() { st.Close() })
			w = append(w, st)
		}
		for range n {
			st, err := server.accept()
			if err != nil {
				b.Fatalf("accept: %v", err)
			}
			b.Cleanup(func() { st.Close() })
			r = append(r, st)
		}
		return w, r
	}}
}

func yamuxAnchor() benchAnchor {
	return benchAnchor{"yamux", func(b *testing.B, n int) (w, r []io.ReadWriteCloser) {
		c, s := nettest.TCPPair(b)
		cfg := yamux.DefaultConfig()
		cfg.LogOutput = io.Discard
		client, err := yamux.Client(c, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { client.Close() })
		server, err := yamux.Server(s, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { server.Close() })
		for range n {
			st, err := client.OpenStream()
			if err != nil {
				b.Fatalf("open: %v", err)
			}
			b.Cleanup(func() { st.Close() })
			w = append(w, st)
		}
		for range n {
			st, err := server.AcceptStream()
			if err != nil {
				b.Fatalf("accept: %v", err)
			}
			b.Cleanup(func() { st.Close() })
			r = append(r, st)
		}
		return w, r
	}}
}

// tcpWindowAnchor is raw TCP made to move data the way a 64 KiB smux v2
// stream window does with 64 KiB writes: the writer sends a window, then
// waits for the reader to say it has read it (a 16-byte message, like an
// UPD frame). It is the ceiling for any window-limited mux at that window
// on this machine, without the mux.
func tcpWindowAnchor() benchAnchor {
	return benchAnchor{"tcp-window64k", func(b *testing.B, n int) (w, r []io.ReadWriteCloser) {
		for range n {
			c, s := nettest.TCPPair(b)
			w = append(w, &windowWriter{TCPConn: c, ack: make([]byte, 16)})
			r = append(r, &windowReader{TCPConn: s, ack: make([]byte, 16)})
		}
		return w, r
	}}
}

const benchWindow = 64 << 10

type windowWriter struct {
	*net.TCPConn
	ack []byte
}

// Write sends b a window at a time, waiting for the reader's word after
// each.
func (ww *windowWriter) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := ww.TCPConn.Write(b[done:min(len(b), done+benchWindow)])
		done += n
		if err != nil {
			return done, err
		}
		if _, err := io.ReadFull(ww.TCPConn, ww.ack); err != nil {
			return done, err
		}
	}
	return done, nil
}

type windowReader struct {
	*net.TCPConn
	ack  []byte
	read int
}

// Read answers every full window read with a 16-byte message.
func (wr *windowReader) Read(b []byte) (int, error) {
	n, err := wr.TCPConn.Read(b[:min(len(b), benchWindow-wr.read)])
	wr.read += n
	if wr.read == benchWindow {
		wr.read = 0
		if _, werr := wr.TCPConn.Write(wr.ack); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

// defaultAnchors are the transports at their default configuration.
func defaultAnchors() []benchAnchor {
	return []benchAnchor{
		tcpAnchor(),
		muxAnchor("mux-v1", implOurs, defaultConfig(1)),
		muxAnchor("mux-v2", implOurs, defaultConfig(2)),
		muxAnchor("xtaci-smux-v1", implXtaci, defaultConfig(1)),
		muxAnchor("xtaci-smux-v2", implXtaci, defaultConfig(2)),
		yamuxAnchor(),
	}
}

// kcptunAnchors are the smux implementations at kcptun's configuration.
func kcptunAnchors() []benchAnchor {
	return []benchAnchor{
		muxAnchor("mux-v1-kcptun", implOurs, kcptunConfig(1)),
		muxAnchor("mux-v2-kcptun", implOurs, kcptunConfig(2)),
		muxAnchor("xtaci-smux-v1-kcptun", implXtaci, kcptunConfig(1)),
		muxAnchor("xtaci-smux-v2-kcptun", implXtaci, kcptunConfig(2)),
	}
}

// readExactly reads until want bytes have arrived, into buf.
func readExactly(r io.Reader, buf []byte, want int64) error {
	var got int64
	for got < want {
		n, err := r.Read(buf)
		got += int64(n)
		if err != nil && got < want {
			return fmt.Errorf("read after %d of %d bytes: %w", got, want, err)
		}
	}
	if got != want {
		return fmt.Errorf("read %d bytes, want %d", got, want)
	}
	return nil
}

// reportCPU adds the CPU time the process used since start, per unit, as a
// metric: on a machine shared with other work it is steadier than MB/s.
func reportCPU(b *testing.B, start time.Duration, ok bool, units float64, unit string) {
	end, ok2 := nettest.ProcessCPU()
	if ok && ok2 && units > 0 {
		b.ReportMetric(float64(end-start)/units, "cpu-ns/"+unit)
	}
}

// runStreams moves, on each of the pairs, counts[i] writes of msg; it
// returns once every reader has everything, and reports the CPU time spent
// per byte (or per message, for msg shorter than benchChunk).
func runStreams(b *testing.B, w, r []io.ReadWriteCloser, counts []int, msg []byte, bufs [][]byte) {
	b.Helper()
	cpu0, cpuOK := nettest.ProcessCPU()
	defer func() {
		total := 0
		for _, c := range counts {
			total += c
		}
		if len(msg) < benchChunk {
			reportCPU(b, cpu0, cpuOK, float64(total), "msg")
		} else {
			reportCPU(b, cpu0, cpuOK, float64(total)*float64(len(msg)), "B")
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(w))
	for i := range w {
		if counts[i] == 0 {
			continue
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- readExactly(r[i], bufs[i], int64(counts[i])*int64(len(msg)))
		}()
		go func() {
			defer wg.Done()
			for range counts[i] {
				if _, err := w[i].Write(msg); err != nil {
					errs <- fmt.Errorf("write: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
}

// split spreads total writes over n streams.
func split(total, n int) []int {
	counts := make([]int, n)
	for i := range counts {
		counts[i] = total / n
		if i < total%n {
			counts[i]++
		}
	}
	return counts
}

func readBufs(n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, benchReadBuf)
	}
	return bufs
}

// BenchmarkThroughput: one stream, bulk data in 64 KiB writes.
func BenchmarkThroughput(b *testing.B) {
	anchors := append(defaultAnchors(), tcpWindowAnchor())
	for _, a := range append(anchors, kcptunAnchors()...) {
		b.Run(a.name, func(b *testing.B) {
			w, r := a.pairs(b, 1)
			msg := make([]byte, benchChunk)
			bufs := readBufs(1)
			b.SetBytes(benchChunk)
			b.ReportAllocs()
			b.ResetTimer()
			runStreams(b, w, r, []int{b.N}, msg, bufs)
		})
	}
}

// BenchmarkAggregate64: 64 streams at once, bulk data in 64 KiB writes;
// the figure is the total over all streams.
func BenchmarkAggregate64(b *testing.B) {
	for _, a := range defaultAnchors() {
		b.Run(a.name, func(b *testing.B) {
			w, r := a.pairs(b, benchStreams)
			msg := make([]byte, benchChunk)
			bufs := readBufs(benchStreams)
			counts := split(b.N, benchStreams)
			b.SetBytes(benchChunk)
			b.ReportAllocs()
			b.ResetTimer()
			runStreams(b, w, r, counts, msg, bufs)
		})
	}
}

// BenchmarkMessages64: 64 streams at once, each writing 64-byte messages
// that the other end reads; reports messages per second over all streams.
func BenchmarkMessages64(b *testing.B) {
	for _, a := range defaultAnchors() {
		b.Run(a.name, func(b *testing.B) {
			w, r := a.pairs(b, benchStreams)
			msg := make([]byte, benchMsg)
			bufs := readBufs(benchStreams)
			counts := split(b.N, benchStreams)
			b.SetBytes(benchMsg)
			b.ReportAllocs()
			b.ResetTimer()
			runStreams(b, w, r, counts, msg, bufs)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

package tunnel

import (
	"encoding/binary"
	"github.com/smuxtun/smuxtun/internal/nettest"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/smuxtun/smuxtun/config"
)

// benchSize is what one benchmark operation carries through the tunnel.
const benchSize = 4 << 20

// startSink runs a target that reads an 8-byte length, then that many
// bytes, and answers with the same 8 bytes. The transfer needs no
// half-close, so kcptun-style peers (which tear a pair down when one
// direction ends) can carry it too.
func startSink(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	serveConns(tb, l, func(c net.Conn) {
		var h [8]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, c, int64(binary.LittleEndian.Uint64(h[:]))); err != nil {
			return
		}
		c.Write(h[:])
	})
	return l.Addr().String()
}

func sinkTransfer(tb testing.TB, addr string, payload []byte) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	var h [8]byte
	binary.LittleEndian.PutUint64(h[:], uint64(len(payload)))
	if _, err := c.Write(h[:]); err != nil {
		tb.Fatal(err)
	}
	if _, err := c.Write(payload); err != nil {
		tb.Fatal(err)
	}
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack != h {
		tb.Fatalf("ack %v, %v", ack, err)
	}
}

// startRefClient runs a kcptun-style client: a TCP listener whose
// connections ride streams of one reference KCP session.
func startRefClient(tb testing.TB, remote, cipher string, nocomp bool, ver int, opts ...refOpt) string {
	tb.Helper()
	side := newRefSetup(opts).streamSide()
	sess, err := refDial(tb, remote, cipher, nocomp, ver)
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	serveConns(tb, l, func(c net.Conn) {
		st, err := sess.OpenStream()
		if err != nil {
			return
		}
		defer st.Close()
		refCopyPair(c, side(st))
	})
	tb.Cleanup(func() { sess.Close() })
	return l.Addr().String()
}

// refCopyPair copies both ways; the first direction to end closes both,
// as kcptun does.
func refCopyPair(c net.Conn, st io.ReadWriteCloser) {
	var once sync.Once
	shut := func() { once.Do(func() { c.Close(); st.Close() }) }
	done := make(chan struct{})
	go func() { io.Copy(st, c); shut(); close(done) }()
	io.Copy(c, st)
	shut()
	<-done
}

// BenchmarkThroughput moves benchSize bytes per operation through each
// path, so one run prints them side by side: the target directly over TCP,
// smuxtun over KCP and over TCP, and the kcptun-style reference stack over
// KCP, each KCP stack also with --QPP. All KCP paths use aes, snappy
// compression, smux v2 and fast3.
func BenchmarkThroughput(b *testing.B) {
	payload := randomBytes(b, benchSize)
	paths := []struct {
		name  string
		setup func(b *testing.B, target string) string
	}{
		{"tcp-direct", func(b *testing.B, target string) string { return target }},
		{"smuxtun-kcp", func(b *testing.B, target string) string {
			return runPair(b, pairOpts{transport: config.TransportKCP, target: target})
		}},
		{"smuxtun-tcp", func(b *testing.B, target string) string {
			return runPair(b, pairOpts{transport: config.TransportTCP, target: target})
		}},
		{"reference-kcp", func(b *testing.B, target string) string {
			srv := startRefServer(b, "aes", false, 2, target)
			return startRefClient(b, srv, "aes", false, 2)
		}},
		// kcptun's --QPP with its default 61 pads, on both stacks.
		{"smuxtun-kcp-qpp", func(b *testing.B, target string) string {
			return runPair(b, pairOpts{transport: config.TransportKCP, target: target, tweak: func(c *config.Common) {
				c.QPP, c.QPPCount = true, 61
			}})
		}},
		{"reference-kcp-qpp", func(b *testing.B, target string) string {
			srv := startRefServer(b, "aes", false, 2, target, withQPP(61))
			return startRefClient(b, srv, "aes", false, 2, withQPP(61))
		}},
	}
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			addr := p.setup(b, startSink(b))
			sinkTransfer(b, addr, payload[:1024]) // warm up the session
			b.SetBytes(benchSize)
			cpu0, cpuOK := nettest.ProcessCPU()
			b.ResetTimer()
			for b.Loop() {
				sinkTransfer(b, addr, payload)
			}
			b.StopTimer()
			// CPU time of the whole process (both ends of the tunnel and the
			// sink) per GB carried: steadier than MB/s on a shared machine.
			if cpu1, ok := nettest.ProcessCPU(); cpuOK && ok {
				b.ReportMetric((cpu1-cpu0).Seconds()/(float64(b.N)*benchSize/1e9), "cpu-s/GB")
			}
		})
	}
}

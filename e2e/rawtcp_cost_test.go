//go:build linux

package e2e

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// TestRawTCPCost measures what --tcp costs beside the plain UDP tunnel: the
// same download through smuxtun-client and smuxtun-server between two
// network namespaces, once over UDP and once with --tcp, repeated with the
// order alternating, so that both see the same machine. It reports the
// throughput and the CPU seconds both processes spent per GB moved, as
// medians and --tcp/UDP ratios. It is slow and only runs when asked:
//
//	make bench-rawtcp
//	SMUXTUN_BENCH_RAWTCP=1 [RAWTCP_REPS=3] [RAWTCP_MIB=256] go test -count=1 -run TestRawTCPCost -v ./e2e/
func TestRawTCPCost(t *testing.T) {
	if os.Getenv("SMUXTUN_BENCH_RAWTCP") == "" {
		t.Skip("a measurement, not a test: set SMUXTUN_BENCH_RAWTCP=1 (make bench-rawtcp)")
	}
	reps := envInt(t, "RAWTCP_REPS", 3)
	size := int64(envInt(t, "RAWTCP_MIB", 256)) << 20
	n := newRawNet(t)
	var tg *demo.Target
	if err := in(n.server, func() error { tg = startTarget(t, false); return nil }); err != nil {
		t.Fatal(err)
	}

	type sample struct{ mbps, cpuPerGB float64 }
	results := map[string][]sample{}
	modes := []string{"udp", "tcp"}
	for r := range reps {
		order := modes
		if r%2 == 1 {
			order = []string{"tcp", "udp"}
		}
		for _, mode := range order {
			port := 30000 + 10*r
			if mode == "tcp" {
				port += 5
			}
			remote := net.JoinHostPort(n.serverIP, strconv.Itoa(port))
			local := fmt.Sprintf("127.0.0.1:%d", 13000+port%1000)
			var extra []string
			if mode == "tcp" {
				extra = []string{"--tcp"}
			}
			srv := startIn(t, n.server, "smuxtun-server", demo.BinaryPath(binDir, demo.ServerBinary),
				append([]string{"-l", remote, "-t", tg.Addr(), "--key", "cost", "--quiet"}, extra...)...)
			waitLog(t, srv, "server listening")
			cli := startIn(t, n.client, "smuxtun-client", demo.BinaryPath(binDir, demo.ClientBinary),
				append([]string{"-l", local, "-r", remote, "--key", "cost", "--quiet"}, extra...)...)
			c := dialIn(t, n.client, local)
			cpu0 := cpuSeconds(t, srv) + cpuSeconds(t, cli)
			start := time.Now()
			c.SetDeadline(time.Now().Add(5 * time.Minute))
			if err := demo.Download(c, size, nil); err != nil {
				t.Fatalf("%s: %v", mode, err)
			}
			wall := time.Since(start).Seconds()
			cpu := cpuSeconds(t, srv) + cpuSeconds(t, cli) - cpu0
			c.Close()
			for _, p := range []*demo.Proc{cli, srv} {
				if err := p.Stop(10 * time.Second); err != nil {
					t.Errorf("%v", err)
				}
			}
			s := sample{mbps: float64(size) / wall / 1e6, cpuPerGB: cpu / (float64(size) / 1e9)}
			t.Logf("rep %d %-3s: %.1f MB/s, %.2f CPU s/GB (%.2f s wall, %.2f s CPU)", r+1, mode, s.mbps, s.cpuPerGB, wall, cpu)
			results[mode] = append(results[mode], s)
		}
	}

	med := func(mode string, f func(sample) float64) float64 {
		var v []float64
		for _, s := range results[mode] {
			v = append(v, f(s))
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	mbps := func(s sample) float64 { return s.mbps }
	cpu := func(s sample) float64 { return s.cpuPerGB }
	var b strings.Builder
	fmt.Fprintf(&b, "\n%d MiB download, %d interleaved runs each, medians (client + server CPU):\n\n", size>>20, reps)
	fmt.Fprintf(&b, "| link | MB/s | CPU s/GB |\n| --- | ---: | ---: |\n")
	fmt.Fprintf(&b, "| UDP (default) | %.1f | %.2f |\n", med("udp", mbps), med("udp", cpu))
	fmt.Fprintf(&b, "| --tcp | %.1f | %.2f |\n", med("tcp", mbps), med("tcp", cpu))
	fmt.Fprintf(&b, "| --tcp / UDP | %.2f | %.2f |\n", med("tcp", mbps)/med("udp", mbps), med("tcp", cpu)/med("udp", cpu))
	t.Log(b.String())
}

// envInt reads a positive integer from the environment, or returns def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// cpuSeconds is the user and system time p has used so far.
func cpuSeconds(t *testing.T, p *demo.Proc) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// utime and stime, fields 14 and 15 of stat(5), in clock ticks of
	// 1/100 s on Linux.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return float64(ut+st) / 100
}

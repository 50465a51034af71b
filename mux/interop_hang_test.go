package mux_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// soakRuns is how many interop runs in a row TestInteropNoHang makes per
// pairing: 2 by default, 20 with MUX_SOAK=1 (or the number MUX_SOAK gives).
func soakRuns() int {
	v := os.Getenv("MUX_SOAK")
	if v == "" {
		return 2
	}
	if n, err := strconv.Atoi(v); err == nil && n > 1 {
		return n
	}
	return 20
}

// soakSeed is the seed of the first run; the next runs add 1 each. It is
// the time, or MUX_SOAK_SEED to repeat the runs of a logged seed.
func soakSeed() uint64 {
	if n, err := strconv.ParseUint(os.Getenv("MUX_SOAK_SEED"), 10, 64); err == nil {
		return n
	}
	return uint64(time.Now().UnixNano())
}

// noHangPairings are the client/server pairings TestInteropNoHang asserts on:
// every pairing that has our mux on at least one end.
var noHangPairings = []struct {
	name           string
	client, server impl
}{
	{"ours-ours", implOurs, implOurs},
	{"ours-client-xtaci-server", implOurs, implXtaci},
	{"xtaci-client-ours-server", implXtaci, implOurs},
}

// TestInteropNoHang runs runInterop (48 concurrent streams of up to 8 MiB,
// both sides opening, ours half-closing, every byte checked, stream deadlines
// of 60 s) several times in a row at kcptun's configuration in version 2, for
// every pairing with ours on at least one end. A run that hangs fails on its
// deadlines; each run also checks that no goroutine outlives it. The seeds are
// logged, so a failing run can be repeated:
//
//	MUX_SOAK_SEED=<seed> go test -run 'TestInteropNoHang/v2-kcptun/<pairing>/run01$' -v ./mux/
//
// By default it makes 2 runs per pairing. The soak makes 20, and also reports
// (logs, never asserts) xtaci/smux against itself for comparison:
//
//	MUX_SOAK=1 go test -run TestInteropNoHang -v -timeout 60m ./mux/
func TestInteropNoHang(t *testing.T) {
	cfg := kcptunConfig(2)
	runs := soakRuns()
	for _, p := range noHangPairings {
		t.Run(cfg.name+"/"+p.name, func(t *testing.T) {
			start := time.Now()
			base := soakSeed()
			var failed []string
			for i := range runs {
				seed := base + uint64(i)
				if !t.Run(fmt.Sprintf("run%02d", i+1), func(t *testing.T) {
					checkGoroutines(t)
					t.Logf("seed %d", seed)
					runInterop(t, p.client, p.server, cfg, seed)
				}) {
					failed = append(failed, fmt.Sprintf("run%02d (seed %d)", i+1, seed))
				}
			}
			// Every run is made even after a failure, so the soak tells how
			// often it fails.
			t.Logf("%d runs in %v, %d failed %v", runs, time.Since(start).Round(time.Millisecond), len(failed), failed)
		})
	}
	if os.Getenv("MUX_SOAK") != "" {
		t.Run(cfg.name+"/xtaci-xtaci-reference", func(t *testing.T) {
			reportXtaciInterop(t, runs)
		})
	}
}

// reportXtaciInterop runs TestInteropXtaciReference, the same soak with
// xtaci/smux on both ends, in a child process of this test binary and logs
// its outcome: a failure or a hang of the reference is information, not a
// failure of this package, and a child process keeps its goroutines and its
// failures out of this test.
func reportXtaciInterop(t *testing.T, runs int) {
	t.Helper()
	// Each run ends within about 90 s even if it hangs (runInterop's own
	// bound), so this is a ceiling for a reference that hangs every time.
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(runs)*100*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestInteropXtaciReference$", "-test.v", "-test.count=1",
		fmt.Sprintf("-test.timeout=%v", time.Duration(runs)*100*time.Second))
	cmd.Env = append(os.Environ(), "MUX_XTACI_REFERENCE="+strconv.Itoa(runs))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	var summary []string
	for line := range strings.SplitSeq(string(out), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--- FAIL") || strings.Contains(line, "xtaci-xtaci:") ||
			strings.Contains(line, "interop_test.go") || strings.HasPrefix(trimmed, "panic") {
			summary = append(summary, trimmed)
		}
	}
	if len(summary) > 60 {
		summary = append(summary[:60], fmt.Sprintf("... %d more lines", len(summary)-60))
	}
	t.Logf("xtaci/smux against itself, %d runs, took %v, exit: %v (reported only, not asserted)\n%s",
		runs, time.Since(start).Round(time.Millisecond), err, strings.Join(summary, "\n"))
}

// TestInteropXtaciReference is the soak of TestInteropNoHang with xtaci/smux
// on both ends. It runs only in the child process that TestInteropNoHang
// starts with MUX_SOAK set, or by hand:
//
//	MUX_XTACI_REFERENCE=20 go test -run TestInteropXtaciReference -v ./mux/
func TestInteropXtaciReference(t *testing.T) {
	runs, err := strconv.Atoi(os.Getenv("MUX_XTACI_REFERENCE"))
	if err != nil || runs < 1 {
		t.Skip("reference only: set MUX_XTACI_REFERENCE to a number of runs")
	}
	cfg := kcptunConfig(2)
	failed := 0
	base := uint64(time.Now().UnixNano())
	start := time.Now()
	for i := range runs {
		seed := base + uint64(i)
		if !t.Run(fmt.Sprintf("run%02d", i+1), func(t *testing.T) {
			t.Logf("seed %d", seed)
			runInterop(t, implXtaci, implXtaci, cfg, seed)
		}) {
			failed++
		}
	}
	t.Logf("xtaci-xtaci: %d of %d runs failed, %v", failed, runs, time.Since(start).Round(time.Millisecond))
}

// TestShieldNeverStallsAReadingPeer: when our session sends to a plain smux
// peer (xtaci/smux, kcptun) in version 2, several streams that each carry
// less than half a window, all read by the peer at once, must all arrive.
//
// xtaci/smux reports what a stream consumed only on its first read and then
// after each MaxStreamBuffer/2 (1 MiB at kcptun's settings) consumed. Six
// streams of 960 KiB, each below the 1 MiB that makes the peer report, add
// up to 5.6 MiB, more than the peer's 4 MiB budget: a sender that capped the
// session's unreported data at the peer's budget would stop the fifth stream
// while the peer waits for data that never comes (an earlier shield did).
func TestShieldNeverStallsAReadingPeer(t *testing.T) {
	cfg := kcptunConfig(2)
	const streams, size = 6, 960 << 10
	for _, oursClient := range []bool{true, false} {
		name := "ours-client-xtaci-server"
		if !oursClient {
			name = "xtaci-client-ours-server"
		}
		t.Run(cfg.name+"/"+name, func(t *testing.T) {
			checkGoroutines(t)
			var ours, xt session
			if oursClient {
				ours, xt = sessionPair(t, implOurs, implXtaci, cfg, cfg)
			} else {
				xt, ours = sessionPair(t, implXtaci, implOurs, cfg, cfg)
			}
			data := payload(rand.New(rand.NewPCG(streams, size)), size)
			for i := range streams {
				// Streams stay open, so what they sent keeps counting as
				// unacknowledged until the peer reports it.
				src, dst := streamPair(t, ours, xt)
				src.SetWriteDeadline(time.Now().Add(10 * time.Second))
				wrote := make(chan error, 1)
				go func() {
					_, err := src.Write(data)
					wrote <- err
				}()
				dst.SetReadDeadline(time.Now().Add(5 * time.Second))
				got := make([]byte, size)
				n, err := io.ReadFull(dst, got)
				if err != nil {
					t.Fatalf("stream %d of %d: the peer read %d of %d bytes, then %v; "+
						"the peer read everything it got, so our sender held the rest back for good",
						i+1, streams, n, size, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("stream %d: the peer read other bytes than were sent", i+1)
				}
				if err, ok := waitErr(wrote, 5*time.Second); !ok || err != nil {
					t.Fatalf("stream %d: Write: %v (returned %v)", i+1, err, ok)
				}
			}
		})
	}
}

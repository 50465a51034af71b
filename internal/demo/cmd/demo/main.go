// Command demo runs the whole smuxtun tunnel on 127.0.0.1 and shows it working:
// it starts a target, smuxtun-server and smuxtun-client (from -bin) with a key
// generated for the run, sends -size random bytes up and down through the
// tunnel with a progress bar, checks every byte with SHA-256, prints the
// throughput beside a direct TCP copy of the same data, and stops everything it
// started, also on failure or Ctrl-C.
//
//	go run ./internal/demo/cmd/demo -bin bin -size 256MiB
//	go run ./internal/demo/cmd/demo -- --sndwnd 1024 --rcvwnd 1024
//
// Arguments after the flags are passed to both smuxtun-server and smuxtun-client.
//
// `make demo` builds the binaries and runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

type transfer struct {
	name string
	run  func(net.Conn, int64, func(int64)) error
}

func run() error {
	bin := flag.String("bin", "bin", "folder holding smuxtun-server and smuxtun-client")
	sizeFlag := flag.String("size", "256MiB", "bytes to send each way (suffixes KiB, MiB, GiB)")
	transport := flag.String("transport", "kcp", "transport between client and server: kcp or tcp")
	nocomp := flag.Bool("nocomp", false, "run the tunnel with --nocomp")
	timeout := flag.Duration("timeout", 100*time.Second, "give up after this long")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags] [-- smuxtun flags for both ends]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	extra := flag.Args()

	size, err := parseSize(*sizeFlag)
	if err != nil {
		return fmt.Errorf("-size: %w", err)
	}
	if *transport != "kcp" && *transport != "tcp" {
		return fmt.Errorf("-transport %q: want kcp or tcp", *transport)
	}
	for _, name := range []string{demo.ServerBinary, demo.ClientBinary} {
		if _, err := os.Stat(demo.BinaryPath(*bin, name)); err != nil {
			return fmt.Errorf("%w (run `make build` first, or `make demo`)", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	target, err := demo.NewTarget(nil)
	if err != nil {
		return err
	}
	defer target.Close()

	fmt.Printf("smuxtun demo: %s each way through the tunnel on 127.0.0.1, every byte checked with SHA-256\n\n", formatBytes(size))
	fmt.Printf("  target          %s  (checks what it receives, sends random data with its SHA-256)\n", target.Addr())

	transfers := []transfer{{"upload", demo.Upload}, {"download", demo.Download}}

	opts := demo.Options{Bin: *bin, Target: target.Addr(), Transport: *transport, NoComp: *nocomp,
		ServerArgs: extra, ClientArgs: extra}
	tun, err := demo.StartTunnel(ctx, opts)
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			// SIGTERM, and SIGKILL for whatever has not exited 2 s later.
			tun.Stop(2 * time.Second)
			fmt.Println("  stopped smuxtun-client, smuxtun-server and the target.")
		}
	}()
	fmt.Printf("  smuxtun-server  %s/%s -> target  (pid %d)\n", tun.ServerAddr, map[string]string{"kcp": "udp", "tcp": "tcp"}[*transport], tun.Server.Pid())
	settings := "kcptun's defaults"
	if len(extra) > 0 {
		settings = strings.Join(extra, " ")
	}
	fmt.Printf("  smuxtun-client  %s -> server  (pid %d, key generated for this run, transport %s%s)\n",
		tun.ClientAddr, tun.Client.Pid(), *transport, map[bool]string{true: ", --nocomp"}[*nocomp])
	fmt.Printf("  settings        %s\n\n", settings)

	// The same transfers straight to the target first, as the baseline.
	direct := make([]time.Duration, len(transfers))
	for i, tr := range transfers {
		d, err := timed(ctx, target.Addr(), "direct TCP  "+tr.name, size, tr.run)
		if err != nil && ctx.Err() != nil {
			return err
		}
		if err != nil {
			return fmt.Errorf("direct %s: %w", tr.name, err)
		}
		direct[i] = d
	}

	tunneled := make([]time.Duration, len(transfers))
	for i, tr := range transfers {
		d, err := timed(ctx, tun.ClientAddr, "smuxtun     "+tr.name, size, tr.run)
		if err != nil && ctx.Err() != nil {
			return err
		}
		if err != nil {
			return fmt.Errorf("%s through the tunnel: %w\n%s\n%s", tr.name, err, tun.Server.Describe(), tun.Client.Describe())
		}
		tunneled[i] = d
	}

	fmt.Printf("\n  %-22s %14s %14s\n", "", "upload", "download")
	fmt.Printf("  %-22s %14s %14s\n", "direct TCP", rate(size, direct[0]), rate(size, direct[1]))
	fmt.Printf("  %-22s %14s %14s\n", "through smuxtun ("+*transport+")", rate(size, tunneled[0]), rate(size, tunneled[1]))
	fmt.Printf("  %-22s %13.0f%% %13.0f%%\n", "smuxtun / direct", 100*ratio(direct[0], tunneled[0]), 100*ratio(direct[1], tunneled[1]))
	fmt.Printf("\n  SHA-256 verified for all %s in each direction.\n", formatBytes(size))
	fmt.Println("  (Loopback, one machine: both rates include generating and hashing the data.)")

	stopped = true
	start := time.Now()
	if err := tun.Stop(5 * time.Second); err != nil {
		return fmt.Errorf("stopping the tunnel with SIGTERM: %w\n%s\n%s", err, tun.Server.Describe(), tun.Client.Describe())
	}
	fmt.Printf("  smuxtun-client and smuxtun-server exited 0 after SIGTERM (%s).\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// timed runs one transfer on a new connection to addr, draws its progress bar,
// and returns how long it took.
func timed(ctx context.Context, addr, label string, size int64, op func(net.Conn, int64, func(int64)) error) (time.Duration, error) {
	c, err := demo.Dial(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	// Ctrl-C or the timeout closes the connection, which ends the transfer.
	unhook := context.AfterFunc(ctx, func() { c.Close() })
	defer unhook()

	var done atomic.Int64
	bar := newBar(os.Stdout, label, size, &done)
	start := time.Now()
	err = op(c, size, func(n int64) { done.Store(n) })
	elapsed := time.Since(start)
	bar.finish(err == nil, elapsed)
	if err != nil && ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return 0, fmt.Errorf("%s: gave up at the -timeout: %w", label, err)
		}
		return 0, fmt.Errorf("%s: interrupted", label)
	}
	return elapsed, err
}

// bar draws a progress bar: redrawn in place on a terminal, a line every
// quarter otherwise (for logs and CI).
type bar struct {
	w     io.Writer
	label string
	size  int64
	done  *atomic.Int64
	tty   bool
	start time.Time
	quit  chan struct{}
	exit  chan struct{}
}

func newBar(w *os.File, label string, size int64, done *atomic.Int64) *bar {
	fi, err := w.Stat()
	b := &bar{w: w, label: label, size: size, done: done, tty: err == nil && fi.Mode()&os.ModeCharDevice != 0,
		start: time.Now(), quit: make(chan struct{}), exit: make(chan struct{})}
	go b.loop()
	return b
}

func (b *bar) loop() {
	defer close(b.exit)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	nextQuarter := int64(1)
	for {
		select {
		case <-b.quit:
			return
		case <-tick.C:
		}
		n := b.done.Load()
		if b.tty {
			fmt.Fprintf(b.w, "\r%s", b.line(n, time.Since(b.start)))
		} else if b.size > 0 && nextQuarter < 4 && n*4 >= nextQuarter*b.size {
			fmt.Fprintln(b.w, b.line(n, time.Since(b.start)))
			nextQuarter = n*4/b.size + 1
		}
	}
}

func (b *bar) line(n int64, elapsed time.Duration) string {
	const width = 30
	frac := 1.0
	if b.size > 0 {
		frac = float64(n) / float64(b.size)
	}
	fill := int(frac * width)
	return fmt.Sprintf("  %-22s [%s%s] %3.0f%%  %9s / %-9s %12s ",
		b.label, strings.Repeat("#", fill), strings.Repeat(".", width-fill), 100*frac,
		formatBytes(n), formatBytes(b.size), rate(n, elapsed))
}

func (b *bar) finish(ok bool, elapsed time.Duration) {
	close(b.quit)
	<-b.exit
	status := "ok"
	if !ok {
		status = "FAILED"
	}
	prefix := ""
	if b.tty {
		prefix = "\r"
	}
	fmt.Fprintf(b.w, "%s%s %s\n", prefix, b.line(b.done.Load(), elapsed), status)
}

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB/s", float64(n)/(1<<20)/d.Seconds())
}

// ratio is how fast the tunnel was relative to the direct copy.
func ratio(direct, tunneled time.Duration) float64 {
	if tunneled <= 0 {
		return 0
	}
	return direct.Seconds() / tunneled.Seconds()
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

var errSize = errors.New("want a number of bytes, optionally with KiB, MiB or GiB")

func parseSize(in string) (int64, error) {
	s, mult := in, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q: %w", in, errSize)
	}
	return n * mult, nil
}

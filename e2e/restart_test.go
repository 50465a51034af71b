package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// Bounds of the restart tests. Every connection below has a deadline of
// restartWatch, so a hang fails the test instead of stalling it.
const (
	// restartLimit is the promise under test: a connection opened at any
	// moment around a server restart completes or is closed within this
	// time of being opened, and the streams of a session found dead end
	// within this time of the kill.
	restartLimit = 5 * time.Second
	// restartWatch is how long a connection is watched before it is called
	// HUNG and closed by the test. Longer than restartLimit only so that the
	// report can tell "late" from "hung for good".
	restartWatch = 12 * time.Second
	// New connections are opened every restartProbeEvery, from the restart
	// (or the kill, if the server stays down) until restartProbeSpan after
	// the restart, each echoing restartProbeSize bytes.
	restartProbeEvery = 250 * time.Millisecond
	restartProbeSpan  = 3 * time.Second
	restartProbeSize  = 64 << 10
	// restartRecoverAt is when, after the restart, the connection that shows
	// that the tunnel recovered is opened (or once every probe has its
	// outcome, if that is later).
	restartRecoverAt = 6 * time.Second
	// The transfer running at the kill: an echo of restartTransferSize,
	// killed once restartTransferKillAt bytes have come back.
	restartTransferSize   = 64 << 20
	restartTransferKillAt = 4 << 20
	// restartDownFor is how long the server stays down in the last case.
	restartDownFor = 1500 * time.Millisecond
)

// TestServerRestart kills smuxtun-server with SIGKILL (it says nothing to the
// client: KCP has no reset) and starts a new one on the same UDP port, with
// kcptun's default settings on both sides, and checks what a user of the
// client sees: a connection opened at any moment around the restart either
// works or is closed within restartLimit, never left hanging; a transfer
// running at the kill ends with an error within restartLimit of it; and a
// connection opened afterwards works (the client found a live session).
//
// Each case logs a table of every connection it opened: when (relative to
// the restart), its outcome and how long that took.
func TestServerRestart(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		tun := startRestartTunnel(t)
		r := restartServer(t, tun)
		res := probeAround(tun, r.started, r.started.Add(restartProbeSpan))
		checkProbes(t, tun, "restart while idle", r, res)
	})

	t.Run("mid-transfer", func(t *testing.T) {
		tun := startRestartTunnel(t)
		tr := startTransfer(t, tun)
		r := restartServer(t, tun)
		tr.watchFrom(r.killed)
		res := probeAround(tun, r.started, r.started.Add(restartProbeSpan))
		tr.check(t)
		checkProbes(t, tun, "restart during a transfer", r, res)
	})

	t.Run("down-1.5s", func(t *testing.T) {
		tun := startRestartTunnel(t)
		var r restart
		r.killed = killServer(t, tun)
		// The probes start at the kill, so that connections opened while the
		// server is away are watched too, and go on until restartProbeSpan
		// after the planned restart.
		var res []connOutcome
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Add(1)
		go func() {
			defer wg.Done()
			res = probeAround(tun, r.killed, r.killed.Add(restartDownFor+restartProbeSpan))
		}()
		time.Sleep(restartDownFor)
		r.started = startServerAgain(t, tun)
		wg.Wait()
		checkProbes(t, tun, fmt.Sprintf("restart after %v down", restartDownFor), r, res)
	})
}

// startRestartTunnel starts a tunnel at kcptun's defaults in front of a
// target that expects cut connections, and moves one echo through it, so
// that the client holds a live session when the server is killed.
func startRestartTunnel(t *testing.T) *demo.Tunnel {
	t.Helper()
	tg := startTarget(t, true)
	tun := startTunnel(t, demo.Options{Target: tg.Addr()})
	if err := through(tun, operation{"echo", demo.Echo}, restartProbeSize, 10*time.Second); err != nil {
		t.Fatalf("echo before the restart: %v", err)
	}
	return tun
}

// restart records when the server was killed and when its successor was
// started.
type restart struct {
	killed, started time.Time
}

// restartServer kills the server with SIGKILL and at once starts a new one
// with the same flags on the same port.
func restartServer(t *testing.T, tun *demo.Tunnel) restart {
	t.Helper()
	var r restart
	r.killed = killServer(t, tun)
	r.started = startServerAgain(t, tun)
	return r
}

// killServer kills the server with SIGKILL, so that it says nothing to the
// client, and returns when it is gone.
func killServer(t *testing.T, tun *demo.Tunnel) time.Time {
	t.Helper()
	if tun.Server.Exited() {
		t.Fatalf("server exited before the kill: %s", tun.Server.Describe())
	}
	tun.Server.Kill() // SIGKILL, and waits until it is reaped
	return time.Now()
}

// startServerAgain starts a new server with the same flags on the same port.
func startServerAgain(t *testing.T, tun *demo.Tunnel) time.Time {
	t.Helper()
	if err := tun.StartServer(); err != nil {
		t.Fatalf("restart the server: %v", err)
	}
	return time.Now()
}

// connOutcome is what became of one connection through the tunnel.
type connOutcome struct {
	opened time.Time
	took   time.Duration // from open to the outcome
	err    error         // nil: the echo came back complete and intact
}

func (o connOutcome) timedOut() bool { return errors.Is(o.err, os.ErrDeadlineExceeded) }

// ok reports whether the connection kept the promise: completed or closed
// within restartLimit, with no corrupt data.
func (o connOutcome) ok() bool {
	return !o.timedOut() && !errors.Is(o.err, demo.ErrMismatch) && o.took <= restartLimit
}

func (o connOutcome) verdict() string {
	switch {
	case o.timedOut():
		return "HUNG"
	case errors.Is(o.err, demo.ErrMismatch):
		return "CORRUPT"
	case o.err == nil && o.took > restartLimit:
		return "completed LATE"
	case o.err == nil:
		return "completed"
	case o.took > restartLimit:
		return "closed LATE"
	default:
		return "closed"
	}
}

func (o connOutcome) detail() string {
	switch {
	case o.timedOut():
		return fmt.Sprintf("still open after %v, closed by the test", restartWatch)
	case o.err != nil:
		return o.err.Error()
	}
	return ""
}

// echoOnce opens a connection through the tunnel and echoes size bytes on
// it, watching it for at most restartWatch.
func echoOnce(tun *demo.Tunnel, size int64) connOutcome {
	o := connOutcome{opened: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), restartWatch)
	defer cancel()
	c, err := demo.Dial(ctx, tun.ClientAddr)
	if err == nil {
		c.SetDeadline(o.opened.Add(restartWatch))
		err = demo.Echo(c, size, nil)
		c.Close()
	}
	o.took, o.err = time.Since(o.opened), err
	return o
}

// probeAround opens a connection every restartProbeEvery from from until
// until, each in its own goroutine, and returns their outcomes once every
// one has one.
func probeAround(tun *demo.Tunnel, from, until time.Time) []connOutcome {
	n := int(until.Sub(from)/restartProbeEvery) + 1
	res := make([]connOutcome, n)
	var wg sync.WaitGroup
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(from.Add(time.Duration(i) * restartProbeEvery)))
			res[i] = echoOnce(tun, restartProbeSize)
		}()
	}
	wg.Wait()
	return res
}

// checkProbes logs the table of outcomes, fails the test for every
// connection that broke the promise, then opens one more connection once
// the tunnel has had time to recover and requires it to work.
func checkProbes(t *testing.T, tun *demo.Tunnel, name string, r restart, res []connOutcome) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s: server killed, new one started %.1f ms later; %d connections, %d KiB echo each:\n",
		name, float64(r.started.Sub(r.killed).Microseconds())/1000, len(res), restartProbeSize>>10)
	fmt.Fprintf(&b, "  %3s  %8s  %-14s  %8s  %s\n", "#", "opened", "outcome", "after", "detail")
	var bad []string
	for i, o := range res {
		opened := o.opened.Sub(r.started).Seconds()
		fmt.Fprintf(&b, "  %3d  %+7.2fs  %-14s  %7.3fs  %s\n", i+1, opened, o.verdict(), o.took.Seconds(), o.detail())
		if !o.ok() {
			bad = append(bad, fmt.Sprintf("#%d (%+.2fs) %s", i+1, opened, o.verdict()))
		}
	}
	t.Log(b.String())
	if len(bad) > 0 {
		t.Errorf("%s: %d of %d connections neither completed nor were closed within %v of being opened (see the table; times relative to the restart): %s",
			name, len(bad), len(res), restartLimit, strings.Join(bad, ", "))
	}
	if tun.Client.Exited() {
		t.Fatalf("client exited: %s", tun.Client.Describe())
	}
	if tun.Server.Exited() {
		t.Fatalf("restarted server exited: %s", tun.Server.Describe())
	}

	// The tunnel recovered: a connection opened after all that works.
	time.Sleep(time.Until(r.started.Add(restartRecoverAt)))
	o := echoOnce(tun, restartProbeSize)
	t.Logf("%s: connection opened %+.2fs after the restart: %s in %.3fs %s",
		name, o.opened.Sub(r.started).Seconds(), o.verdict(), o.took.Seconds(), o.detail())
	if o.err != nil || !o.ok() {
		t.Errorf("%s: the tunnel did not recover: a connection opened %.2fs after the restart, once every earlier one had its outcome, did not complete within %v: %s %s",
			name, o.opened.Sub(r.started).Seconds(), restartLimit, o.verdict(), o.detail())
	}
}

// liveTransfer is a long echo through the tunnel that runs while the server is
// killed.
type liveTransfer struct {
	c      net.Conn
	back   atomic.Int64 // bytes echoed back so far
	done   chan error   // the echo's result; put back by whoever takes it
	killed time.Time
	atKill int64        // bytes echoed back by the kill
	ended  atomic.Int64 // UnixNano when the echo returned
}

// startTransfer starts an echo of restartTransferSize and returns once
// restartTransferKillAt bytes of it have come back.
func startTransfer(t *testing.T, tun *demo.Tunnel) *liveTransfer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := demo.Dial(ctx, tun.ClientAddr)
	if err != nil {
		t.Fatal(err)
	}
	// Until the kill; watchFrom tightens it.
	c.SetDeadline(time.Now().Add(60 * time.Second))
	tr := &liveTransfer{c: c, done: make(chan error, 1)}
	go func() {
		err := demo.Echo(c, restartTransferSize, func(n int64) { tr.back.Store(n) })
		tr.ended.Store(time.Now().UnixNano())
		tr.done <- err
	}()
	t.Cleanup(func() {
		c.Close()
		<-tr.done // refilled by check if it took the result
	})
	deadline := time.Now().Add(20 * time.Second)
	for tr.back.Load() < restartTransferKillAt {
		select {
		case err := <-tr.done:
			tr.done <- err
			t.Fatalf("transfer ended before the kill, after %d bytes: %v", tr.back.Load(), err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("transfer moved only %d bytes in 20 s before the kill", tr.back.Load())
		}
	}
	return tr
}

// watchFrom gives the transfer restartWatch from the kill to end.
func (tr *liveTransfer) watchFrom(killed time.Time) {
	tr.killed = killed
	tr.atKill = tr.back.Load()
	tr.c.SetDeadline(killed.Add(restartWatch))
}

// check waits for the transfer's end and requires an error (the stream of
// a dead session) within restartLimit of the kill.
func (tr *liveTransfer) check(t *testing.T) {
	t.Helper()
	err := <-tr.done
	tr.done <- err // for the cleanup
	o := connOutcome{opened: tr.killed, took: time.Unix(0, tr.ended.Load()).Sub(tr.killed), err: err}
	t.Logf("transfer running at the kill (%d MiB echo, %.1f MiB back by the kill): %s %.2fs after the kill, %.1f MiB back; %s",
		restartTransferSize>>20, float64(tr.atKill)/(1<<20), o.verdict(), o.took.Seconds(), float64(tr.back.Load())/(1<<20), o.detail())
	switch {
	case err == nil:
		t.Errorf("the %d MiB echo completed although the server was killed in its middle", restartTransferSize>>20)
	case !errors.Is(err, syscall.ECONNRESET):
		// A clean end of stream would pass a cut reply off as complete.
		t.Errorf("the transfer running at the kill ended with %v, want the connection reset", err)
	case !o.ok():
		t.Errorf("the transfer running at the kill did not end within %v of it: %s after %.2fs: %s",
			restartLimit, o.verdict(), o.took.Seconds(), o.detail())
	}
}

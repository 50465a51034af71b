package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// TestRedialAfterServerRestart kills the server outright, starts a new one on
// the same port, and expects a new connection through the same client process
// to work within 10 s of the restart.
func TestRedialAfterServerRestart(t *testing.T) {
	for _, v := range tunnelVariants {
		if v.opts.NoComp {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			// Connections cut by the kill end in errors at the target: expected here.
			tg := startTarget(t, true)
			o := v.opts
			o.Target = tg.Addr()
			tun := startTunnel(t, o)
			if err := through(tun, operations[2], 256<<10, 10*time.Second); err != nil {
				t.Fatal(err)
			}

			tun.Server.Kill()
			if err := tun.StartServer(); err != nil {
				t.Fatal(err)
			}
			restarted := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var last error
			for attempt := 1; ; attempt++ {
				if tun.Server.Exited() {
					t.Fatalf("restarted server exited: %s", tun.Server.Describe())
				}
				if tun.Client.Exited() {
					t.Fatalf("client exited while the server was away: %s", tun.Client.Describe())
				}
				last = tun.Probe(ctx, 2*time.Second)
				if last == nil {
					t.Logf("first working connection %s after the restart (attempt %d)", time.Since(restarted).Round(time.Millisecond), attempt)
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("no working connection within 10 s of the server restart; last error: %v", last)
				}
				time.Sleep(100 * time.Millisecond)
			}
			// And the tunnel carries real traffic again.
			if err := through(tun, operations[2], 1<<20, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestGracefulExit: SIGTERM and SIGINT make either binary exit 0 within 5 s,
// also with a connection open through it in the middle of a transfer.
func TestGracefulExit(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		for _, v := range tunnelVariants[:3] {
			t.Run(sig.String()+"/"+v.name, func(t *testing.T) {
				tg := startTarget(t, true)
				o := v.opts
				o.Target = tg.Addr()
				tun := startTunnel(t, o)

				// A connection through the tunnel, established end to end (an echo
				// came back) and still open while the signals arrive.
				c := openEcho(t, tun)
				defer c.Close()

				for _, p := range []*demo.Proc{tun.Client, tun.Server} {
					start := time.Now()
					if err := p.Signal(sig); err != nil {
						t.Fatal(err)
					}
					select {
					case <-p.Done():
					case <-time.After(5 * time.Second):
						t.Fatalf("%s still running 5 s after %s", p.Name, sig)
					}
					if code := p.ExitCode(); code != 0 {
						t.Fatalf("%s exited with status %d after %s, want 0:\n%s", p.Name, code, sig, p.Describe())
					}
					t.Logf("%s exited 0 %s after %s", p.Name, time.Since(start).Round(time.Millisecond), sig)
				}
			})
		}
	}
}

// openEcho starts an echo of 1 MiB through the tunnel, sends the first KiB and
// reads it back, and leaves the connection open mid-transfer.
func openEcho(t *testing.T, tun *demo.Tunnel) net.Conn {
	t.Helper()
	c, err := demo.Dial(context.Background(), tun.ClientAddr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 9)
	hdr[0] = demo.OpEcho
	binary.BigEndian.PutUint64(hdr[1:], 1<<20)
	data := make([]byte, 1024)
	rand.Read(data)
	if _, err := c.Write(append(hdr, data...)); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(data))
	if _, err := io.ReadFull(c, back); err != nil || !bytes.Equal(back, data) {
		t.Fatalf("echo through the tunnel: %v (equal %v)", err, bytes.Equal(back, data))
	}
	return c
}

// TestVersion: both binaries report the version stamped at build time.
func TestVersion(t *testing.T) {
	for _, name := range []string{demo.ServerBinary, demo.ClientBinary} {
		p, err := demo.StartProc(name, demo.BinaryPath(binDir, name), "--version")
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
			p.Kill()
			t.Fatalf("%s --version did not exit", name)
		}
		want := testVersion
		if prebuilt {
			want = "" // whatever version they were stamped with
		}
		if p.ExitCode() != 0 || strings.TrimSpace(p.Output()) == "" || !strings.Contains(p.Output(), want) {
			t.Errorf("%s --version: want exit 0 and %q in the output, got:\n%s", name, want, p.Describe())
		}
	}
}

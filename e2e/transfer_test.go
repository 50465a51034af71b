package e2e

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// tunnelVariants are the combinations of transport and compression a user can pick.
var tunnelVariants = []struct {
	name string
	opts demo.Options
}{
	{"kcp", demo.Options{}},
	{"kcp-nocomp", demo.Options{NoComp: true}},
	{"tcp", demo.Options{Transport: "tcp"}},
	{"tcp-nocomp", demo.Options{Transport: "tcp", NoComp: true}},
}

type operation struct {
	name string
	run  func(net.Conn, int64, func(int64)) error
}

var operations = []operation{
	{"upload", demo.Upload},
	{"download", demo.Download},
	{"echo", demo.Echo},
}

// through opens a connection through the tunnel's client and runs op on it,
// with a deadline so that a stuck tunnel fails the test instead of hanging it.
func through(tun *demo.Tunnel, op operation, size int64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := demo.Dial(ctx, tun.ClientAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if err := op.run(c, size, nil); err != nil {
		return fmt.Errorf("%s of %d bytes: %w", op.name, size, err)
	}
	return nil
}

func TestTransfers(t *testing.T) {
	for _, v := range tunnelVariants {
		t.Run(v.name, func(t *testing.T) {
			tg := startTarget(t, false)
			o := v.opts
			o.Target = tg.Addr()
			tun := startTunnel(t, o)
			rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 1))

			t.Run("32-concurrent-up-to-2MiB", func(t *testing.T) {
				var wg sync.WaitGroup
				errs := make(chan error, 32)
				for i := 0; i < 32; i++ {
					op := operations[i%len(operations)]
					size := rng.Int64N(2<<20 + 1)
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := through(tun, op, size, 60*time.Second); err != nil {
							errs <- err
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})

			t.Run("one-32MiB", func(t *testing.T) {
				if err := through(tun, operation{"echo", demo.Echo}, 32<<20, 90*time.Second); err != nil {
					t.Fatal(err)
				}
			})

			t.Run("200-short-in-a-row", func(t *testing.T) {
				for i := 0; i < 200; i++ {
					op := operations[i%len(operations)]
					if err := through(tun, op, rng.Int64N(4097), 10*time.Second); err != nil {
						t.Fatalf("connection %d: %v", i, err)
					}
				}
			})
		})
	}
}

// TestHalfClose: the application shuts down its sending side after the request
// and still receives the whole reply, which the target only starts to send when
// it has seen that end of the request.
func TestHalfClose(t *testing.T) {
	for _, v := range tunnelVariants[:3] {
		t.Run(v.name, func(t *testing.T) {
			tg := startTarget(t, false)
			o := v.opts
			o.Target = tg.Addr()
			tun := startTunnel(t, o)
			for _, size := range []int64{0, 1, 3 << 20} {
				if err := through(tun, operation{"request then half-close", demo.Request}, size, 30*time.Second); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

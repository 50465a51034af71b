//go:build unix

package app

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/smuxtun/smuxtun/tunnel"
)

// dumpOnSignal logs the counters, one record at Info, on every SIGUSR1 until
// the returned function is called.
func dumpOnSignal(log *slog.Logger) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-quit:
				return
			case <-ch:
				tunnel.DumpStats(log)
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(quit)
		<-finished
	}
}

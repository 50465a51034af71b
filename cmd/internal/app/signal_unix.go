//go:build unix

package app

import (
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/smuxtun/smuxtun/tunnel"
)

// dumpOnSignal writes the counters to w on every SIGUSR1 until the returned
// function is called.
func dumpOnSignal(w io.Writer, log *slog.Logger) (stop func()) {
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
				log.Info("statistics (SIGUSR1)")
				if err := tunnel.DumpStats(w); err != nil {
					log.Warn("cannot write statistics", "err", err)
				}
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(quit)
		<-finished
	}
}

package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/smuxtun/smuxtun/tunnel"
)

// shutdownGrace bounds a graceful exit: after SIGINT or SIGTERM the tunnel
// has this long to close its sessions before the process gives up on it.
const shutdownGrace = 4 * time.Second

// run starts the tunnel described by b and serves until SIGINT or SIGTERM.
// stderr receives the log unless --log names a file.
func run(parent context.Context, b *binary, version string, stderr io.Writer) error {
	cfg := b.common
	// A missing privilege (--tcp's raw sockets) is the whole story: one
	// line, before any log line could suggest the tunnel was starting.
	if err := tunnel.CheckPrivileges(*cfg); err != nil {
		return err
	}
	logOut := stderr
	if cfg.Log != "" {
		f, err := os.OpenFile(cfg.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return usagef("log: %w", err)
		}
		defer f.Close()
		logOut = f
	}
	log := slog.New(slog.NewTextHandler(logOut, nil))
	if cfg.SnmpLog != "" {
		// Fail now rather than at the first tick, a minute later. An empty
		// file is fine: the logger writes the CSV header into it.
		f, err := os.OpenFile(tunnel.SnmpLogPath(cfg.SnmpLog, time.Now()), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return usagef("snmplog: %w", err)
		}
		f.Close()
	}

	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The first line says what starts and with which settings; whatever
	// follows (warnings, listeners, errors) reads in that light.
	startArgs := []any{"program", b.kind.Name(), "version", version, "crypt", cfg.Crypt, "mode", cfg.Mode,
		"transport", cfg.Transport, "mtu", cfg.MTU, "sndwnd", window(cfg.SndWnd, cfg.SndWndSet, cfg.NoPacing),
		"rcvwnd", window(cfg.RcvWnd, cfg.RcvWndSet, cfg.NoPacing), "pacing", !cfg.NoPacing,
		"datashard", cfg.DataShard, "parityshard", cfg.ParityShard, "smuxver", cfg.SmuxVer, "nocomp", cfg.NoComp}
	if cfg.QPP {
		// A peer with other pads garbles every stream without an error
		// anywhere; comparing this line on both ends is how to find out.
		startArgs = append(startArgs, "qpp", true, "qppcount", cfg.QPPCount)
	}
	if cfg.TCP {
		// kcptun's --tcp: KCP inside raw TCP packets, not transport tcp.
		startArgs = append(startArgs, "tcp", true)
	}
	log.Info("starting", startArgs...)
	b.logPluginMode(log)
	for _, w := range b.warnings {
		log.Warn(w.msg, w.args...)
	}

	if cfg.Pprof {
		stopPprof, err := servePprof(cfg.PprofAddr, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	if cfg.Metrics != "" {
		stopMetrics, err := serveMetrics(cfg.Metrics, b.kind, version, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}

	d, err := b.start(log)
	if err != nil {
		if cfg.Log != "" {
			// stderr gets the error too; the log file must not end at
			// "starting" as if all were well.
			log.Error("cannot start", "err", err)
		}
		return err
	}

	stopDump := dumpOnSignal(log)
	defer stopDump()

	done := make(chan struct{})
	defer close(done)
	go func() {
		_ = tunnel.RunSnmpLogger(ctx, cfg.SnmpLog, time.Duration(cfg.SnmpPeriod)*time.Second, log)
	}()
	// Once a signal has arrived, give Serve shutdownGrace, then leave anyway.
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		log.Info("shutting down")
		select {
		case <-done:
		case <-time.After(shutdownGrace):
			log.Error("shutdown took too long, exiting", "grace", shutdownGrace)
			fmt.Fprintf(os.Stderr, "%s: shutdown took longer than %s\n", b.kind.Name(), shutdownGrace)
			os.Exit(exitFailure)
		}
	}()

	if err := d.Serve(ctx); err != nil {
		return err
	}
	// The reason goes on the last line: "shutting down" may lose the race
	// with a Serve that returns at once.
	log.Info("stopped", shutdownReason(ctx)...)
	return nil
}

// servePprof serves net/http/pprof on addr (validated to be loopback) and
// returns a function that stops it.
func servePprof(addr string, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprofaddr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server stopped", "addr", addr, "err", err)
		}
	}()
	log.Info("pprof listening", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}

// window is how the starting line shows a KCP window: the number when it is
// fixed, "auto" when the pacer sizes it, "auto<=N" when the user capped it.
func window(n int, set, noPacing bool) string {
	switch {
	case noPacing:
		return strconv.Itoa(n)
	case set:
		return "auto<=" + strconv.Itoa(n)
	}
	return "auto"
}

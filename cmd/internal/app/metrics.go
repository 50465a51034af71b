package app

import (
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/tunnel"
)

// serveMetrics serves Prometheus metrics as --metrics asks (already
// validated) and returns a function that stops the server. version is the
// full --version text.
func serveMetrics(setting string, kind Kind, version string, log *slog.Logger) (func(), error) {
	addr, err := config.MetricsListenAddr(setting)
	if err != nil {
		return nil, usagef("metrics %q: %w", setting, err)
	}
	side := tunnel.SideClient
	if kind == Server {
		side = tunnel.SideServer
	}
	// "v1.2.0 (commit 1a2b3c4d5e6f, go1.26.8)": the label wants the version only.
	v, _, _ := strings.Cut(version, " (")
	m, err := tunnel.ListenMetrics(addr, tunnel.BuildInfo{Version: v, Side: side}, log)
	if err != nil {
		return nil, fmt.Errorf("metrics %s: %w", addr, err)
	}
	bound := m.Addr().String()
	log.Info("metrics listening", "addr", bound, "path", tunnel.MetricsPath)
	if ip := m.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		log.Warn("metrics are reachable from other machines; restrict access with a firewall or bind a loopback address",
			"addr", bound)
	}
	return func() { m.Close() }, nil
}

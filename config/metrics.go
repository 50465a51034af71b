package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// metricsDefaultHost is where the metrics endpoint binds when only a port is
// given: the counters stay on the machine unless the operator names an
// address that faces a network.
const metricsDefaultHost = "127.0.0.1"

// errMetricsForm says which forms the metrics setting takes.
var errMetricsForm = errors.New("want a port, :port or IP:port")

// MetricsListenAddr turns the metrics setting into the host:port to bind:
// "" is "" (off), "9100" and ":9100" bind 127.0.0.1:9100, and "IP:9100" or
// "localhost:9100" bind there as given (0.0.0.0 or [::] bind every
// interface). Port 0 asks the kernel for a free port. Host names other than
// localhost are refused, so that what is exposed never depends on DNS.
func MetricsListenAddr(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if !strings.Contains(s, ":") {
		if strings.Trim(s, "0123456789") != "" {
			return "", errMetricsForm
		}
		if _, err := parsePort(s, true); err != nil {
			return "", err
		}
		return net.JoinHostPort(metricsDefaultHost, s), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", errMetricsForm
	}
	if _, err := parsePort(port, true); err != nil {
		return "", err
	}
	switch host {
	case "":
		host = metricsDefaultHost
	case "localhost":
	default:
		if _, err := netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("host %q is not an IP address (give an IP, or only a port for 127.0.0.1)", host)
		}
	}
	return net.JoinHostPort(host, port), nil
}

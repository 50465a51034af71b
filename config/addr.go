package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ErrBadAddress is wrapped by every address parsing error.
var ErrBadAddress = errors.New("bad address")

// ParseAddrRange splits "host:port" or "host:min-max" into the host and the
// inclusive port range (min == max for a single port). Ports are 1..65535 and
// min must not exceed max. IPv6 hosts are written in brackets and returned
// without them; an empty host means every local address.
func ParseAddrRange(s string) (host string, min, max int, err error) {
	host, min, max, err = splitAddrRange(s, false)
	if err != nil {
		return "", 0, 0, fmt.Errorf("%w %q: %w", ErrBadAddress, s, err)
	}
	return host, min, max, nil
}

// splitAddrRange is ParseAddrRange with an option to accept port 0 on its own,
// which asks the kernel for any free port (useful for listeners in tests).
// Its errors describe the problem without repeating the address.
func splitAddrRange(s string, allowZero bool) (string, int, int, error) {
	host, ports, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, 0, errors.New("want host:port or host:min-max")
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	if isRange && (lo == "" || hi == "") {
		return "", 0, 0, fmt.Errorf("port %q: want a number or a range min-max", ports)
	}
	min, err := parsePort(lo, allowZero && !isRange)
	if err != nil {
		return "", 0, 0, err
	}
	max := min
	if isRange {
		if max, err = parsePort(hi, false); err != nil {
			return "", 0, 0, err
		}
		if min > max {
			return "", 0, 0, fmt.Errorf("port range %d-%d is reversed (min must be <= max)", min, max)
		}
	}
	return host, min, max, nil
}

// parsePort accepts decimal digits only, so "+80", " 80" and "0x50" fail.
func parsePort(s string, allowZero bool) (int, error) {
	if s == "" {
		return 0, errors.New("missing port")
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("port %q is not a number", s)
		}
	}
	p, err := strconv.Atoi(s)
	low := 1
	if allowZero {
		low = 0
	}
	if err != nil || p < low || p > 65535 {
		return 0, fmt.Errorf("port %s out of range %d..65535", s, low)
	}
	return p, nil
}

// isUnixPath reports whether an endpoint that is not host:port names a unix
// socket. A slash is required so that a mistyped "12948" is an error rather
// than a socket file in the working directory.
func isUnixPath(s string) bool {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return false
	}
	return strings.Contains(s, "/")
}

// checkHostPort checks a single host:port endpoint.
func checkHostPort(s string, needHost, allowZero bool) error {
	host, min, max, err := splitAddrRange(s, allowZero)
	if err != nil {
		return err
	}
	if min != max {
		return errors.New("a port range is not allowed here")
	}
	if needHost && host == "" {
		return errors.New("missing host")
	}
	return nil
}

// checkEndpoint accepts host:port or a unix socket path.
func checkEndpoint(s string, needHost, allowZero bool) error {
	if isUnixPath(s) {
		return nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return errors.New("want host:port or a unix socket path containing '/'")
	}
	return checkHostPort(s, needHost, allowZero)
}

// isLoopback reports whether host is a loopback IP or "localhost".
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

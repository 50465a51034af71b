package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Forward is one client forward, --forward LISTEN=TARGET as in ssh -L:
// every connection (or, with UDP, every datagram flow) accepted on Listen
// travels through the tunnel to Target, which the server connects to once
// its allow-list lets it.
//
// Listen is host:port with IPv6 hosts in brackets; an empty host, 0.0.0.0
// or [::] takes the port on every local address. Target is host:port with
// a host, resolved at the server's end. Both are kept as written.
type Forward struct {
	Listen string
	Target string
	UDP    bool
}

// String returns the forward in the form ParseForward reads:
// LISTEN[/udp]=TARGET.
func (f Forward) String() string {
	if f.UDP {
		return f.Listen + "/udp=" + f.Target
	}
	return f.Listen + "=" + f.Target
}

// protocol names the forward's protocol in messages.
func (f Forward) protocol() string {
	if f.UDP {
		return "UDP"
	}
	return "TCP"
}

// forwardKey is the JSON key and flag name of a forward.
const forwardKey = "forward"

// forwardForm shows the accepted form in errors.
const forwardForm = "want LISTEN=TARGET, e.g. 127.0.0.1:2222=10.0.0.5:22 or 127.0.0.1:5353/udp=10.0.0.2:53"

// ParseForward reads one --forward value: LISTEN=TARGET, with /udp (or
// /tcp, the default) after LISTEN. Examples:
//
//	127.0.0.1:2222=10.0.0.5:22
//	127.0.0.1:5353/udp=10.0.0.2:53
//	[::1]:8080=example.com:80
//	:2222=host:22
//
// The listen port must be fixed (1..65535: a forward the user cannot find
// is of no use); the target needs a host and a port 1..65535. Hosts are IP
// addresses (IPv6 in brackets) or DNS names; names are not resolved here.
// An error is a *FieldError for the key "forward" that wraps ErrBadAddress.
func ParseForward(s string) (Forward, error) {
	f, err := parseForward(s)
	if err != nil {
		e := fieldErr(forwardKey, s, "%v", err)
		e.err = ErrBadAddress
		return Forward{}, e
	}
	return f, nil
}

func parseForward(s string) (Forward, error) {
	listen, target, ok := strings.Cut(s, "=")
	if !ok || listen == "" || target == "" {
		return Forward{}, errors.New(forwardForm)
	}
	var f Forward
	if i := strings.LastIndexByte(listen, '/'); i >= 0 {
		switch proto := listen[i+1:]; {
		case strings.EqualFold(proto, "udp"):
			f.UDP = true
		case strings.EqualFold(proto, "tcp"):
		default:
			return Forward{}, fmt.Errorf("unknown protocol %q after the listen address (want /tcp or /udp)", proto)
		}
		listen = listen[:i]
	}
	if i := strings.LastIndexByte(target, '/'); i >= 0 {
		if p := target[i+1:]; strings.EqualFold(p, "udp") || strings.EqualFold(p, "tcp") {
			return Forward{}, fmt.Errorf("/%s belongs after the listen address, not the target (e.g. 127.0.0.1:5353/udp=10.0.0.2:53)", p)
		}
	}
	if err := checkForwardAddr(listen, false); err != nil {
		return Forward{}, fmt.Errorf("listen address %q: %w", listen, err)
	}
	if err := checkForwardAddr(target, true); err != nil {
		return Forward{}, fmt.Errorf("target %q: %w", target, err)
	}
	f.Listen, f.Target = listen, target
	return f, nil
}

// checkForwardAddr checks a forward's listen address or target: host:port,
// one port 1..65535, a well-formed host (required for a target).
func checkForwardAddr(s string, isTarget bool) error {
	host, ports, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "[") {
			return errors.New("want host:port; write an IPv6 address in brackets, e.g. [::1]:8080")
		}
		return errors.New("want host:port")
	}
	if lo, hi, ok := strings.Cut(ports, "-"); ok && lo != "" && hi != "" {
		return errors.New("a port range is not allowed here")
	}
	if _, err := parsePort(ports, false); err != nil {
		if ports == "0" && !isTarget {
			return errors.New("port 0 is not allowed: a forward listens on a fixed port")
		}
		return err
	}
	if host == "" {
		if isTarget {
			return errors.New("missing host")
		}
		return nil
	}
	return checkHost(host, strings.HasPrefix(s, "["), !isTarget)
}

// checkHost checks the host part of a host:port: an IP address or a DNS
// name. bracketed says it was written in brackets, which only an IPv6
// address may be; allowZone accepts an IPv6 zone (fe80::1%eth0), which
// only means something on the machine that has that interface.
func checkHost(host string, bracketed, allowZone bool) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		if bracketed != ip.Is6() {
			if bracketed {
				return fmt.Errorf("only an IPv6 address goes in brackets, not %q", host)
			}
			return fmt.Errorf("write the IPv6 address %s in brackets", host)
		}
		if z := ip.Zone(); z != "" {
			if !allowZone {
				return fmt.Errorf("an IPv6 zone (%%%s) is not allowed here", z)
			}
			if !validZone(z) {
				return fmt.Errorf("IPv6 zone %q is not an interface name or number", z)
			}
		}
		return nil
	}
	if bracketed {
		return fmt.Errorf("%q is not an IPv6 address", host)
	}
	return checkHostName(host)
}

// validZone accepts an interface name or index as an IPv6 zone: at most
// 64 letters, digits, '-', '_' and '.', so that a zone cannot carry
// separators into a forward's text.
func validZone(z string) bool {
	if len(z) > 64 {
		return false
	}
	for i := 0; i < len(z); i++ {
		if !isNameByte(z[i]) && z[i] != '.' {
			return false
		}
	}
	return true
}

// maxHostName is the longest DNS name (RFC 1035), without the final dot.
const maxHostName = 253

// checkHostName accepts a DNS name: dot-separated labels of 1..63 letters,
// digits, '-' and '_', at most 253 characters, one final dot allowed. A name
// whose last label is a number is refused: resolvers built on inet_aton
// read "127.1" or "0x7f000001" as an IPv4 address, and such a name must
// not get past an allow-list as if it were a name.
func checkHostName(name string) error {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return errors.New("missing host")
	}
	if len(name) > maxHostName {
		return fmt.Errorf("host name longer than %d characters", maxHostName)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("host %q is not a valid host name (empty label or one over 63 characters)", name)
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isNameByte(c) {
				return fmt.Errorf("host %q is not a valid host name (character %q)", name, rune(c))
			}
		}
	}
	if numericLabel(labels[len(labels)-1]) {
		return fmt.Errorf("host %q is neither a DNS name nor an IP address in standard form", name)
	}
	return nil
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// numericLabel reports whether a label reads as a number (decimal, or hex
// with 0x) the way the WHATWG URL standard and inet_aton read IPv4 parts.
func numericLabel(l string) bool {
	digits := "0123456789"
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		l, digits = l[2:], "0123456789abcdefABCDEF"
	}
	for i := 0; i < len(l); i++ {
		if !strings.ContainsRune(digits, rune(l[i])) {
			return false
		}
	}
	return true
}

// ParseForwards parses every --forward value and checks them together with
// CheckForwards. The first problem is returned.
func ParseForwards(specs []string) ([]Forward, error) {
	out := make([]Forward, 0, len(specs))
	for _, s := range specs {
		f, err := ParseForward(s)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	if err := CheckForwards(out); err != nil {
		return nil, err
	}
	return out, nil
}

// CheckForwards refuses two forwards that cannot both listen: the same
// protocol and port on the same address, or on an address and a wildcard
// (an empty host, 0.0.0.0 or [::]), because Go listens on a wildcard with
// a dual-stack socket that takes the port on every address. Addresses are
// compared as written (IP addresses in canonical form, names without case),
// so two names for one address are left to the operating system to refuse.
// Two forwards to the same target are fine.
func CheckForwards(fs []Forward) error {
	for j := range fs {
		for i := range j {
			if fs[i].UDP == fs[j].UDP && listenOverlap(fs[i].Listen, fs[j].Listen) {
				e := fieldErr(forwardKey, fs[j].String(), "listens on the same %s address as %s", fs[j].protocol(), fs[i].String())
				e.err = ErrBadAddress
				return e
			}
		}
	}
	return nil
}

// listenOverlap reports whether two listen addresses would take the same
// port on some address.
func listenOverlap(a, b string) bool {
	ha, pa, erra := net.SplitHostPort(a)
	hb, pb, errb := net.SplitHostPort(b)
	if erra != nil || errb != nil {
		return a == b
	}
	if strings.TrimLeft(pa, "0") != strings.TrimLeft(pb, "0") {
		return false
	}
	ka, wa := listenHostKey(ha)
	kb, wb := listenHostKey(hb)
	return wa || wb || ka == kb
}

// listenHostKey returns a listen host in a form to compare, and whether it
// is a wildcard.
func listenHostKey(h string) (key string, wildcard bool) {
	if h == "" {
		return "", true
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		ip = ip.Unmap()
		return ip.String(), ip.IsUnspecified()
	}
	return strings.ToLower(strings.TrimSuffix(h, ".")), false
}

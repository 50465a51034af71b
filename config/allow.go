package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// allowKey is the JSON key and flag name of an allow-list pattern.
const allowKey = "allow"

// AllowList is the server's --allow list: the targets a client may ask for
// per stream (forwards, SOCKS). A pattern is HOST:PORTS, where PORTS is one
// port, a range lo-hi, or * for 1-65535 (as in OpenSSH's PermitOpen), and
// HOST is one of
//
//	example.com        that name exactly (no case, a final dot ignored)
//	*.example.com      any name under example.com, however deep, but not
//	                   example.com itself: add a pattern for it
//	192.0.2.7, [2001:db8::7]        that address
//	10.0.0.0/8, [2001:db8::/32]     any address in that CIDR block
//
// for example 10.0.0.0/8:22, [2001:db8::/32]:443, *.example.com:80-443.
//
// Names are matched as names, never resolved here: an IP pattern does not
// admit a name that resolves into it, and a name pattern does not admit
// its addresses written as IPs. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d)
// are IPv4 addresses on both sides; an IPv6 CIDR shorter than /96, such
// as [::/0], covers IPv6 addresses only.
//
// Danger: every pattern widens what anyone holding the key can reach from
// the server's network position, and a wide one makes the server an open
// proxy for them, into the server's own LAN, its cloud provider's metadata
// service and everything on the internet, with the server's address as the
// source. Allow only the targets the clients need. There is no pattern
// for "anything": a lone *, *:* or "any" is refused; every IP address is
// 0.0.0.0/0:1-65535 plus [::/0]:1-65535 written out, and no pattern admits
// every name.
//
// Even a wide pattern does not reach the server's own loopback (127.0.0.0/8,
// ::1), link-local (169.254.0.0/16, which holds cloud metadata services,
// fe80::/10), unspecified (0.0.0.0/8, ::, which reach the server itself),
// broadcast (255.255.255.255) or multicast (224.0.0.0/4, ff00::/8)
// addresses: they are admitted only by a pattern whose address or CIDR
// lies inside such a range, e.g. 127.0.0.1:8080 or 169.254.169.254:80.
//
// The server's --target is always allowed: the caller adds it as one more
// pattern. The zero AllowList and a nil *AllowList allow nothing.
type AllowList struct {
	rules []allowRule
}

// allowRule is one compiled pattern.
type allowRule struct {
	pattern string
	// Exactly one of name and prefix is set. name is lower case without a
	// final dot; for a wildcard pattern it is the suffix ".example.com".
	name     string
	wildcard bool
	prefix   netip.Prefix
	// special is the kind of address (loopback, ...) that prefix lies
	// entirely inside, "" if none: such a rule names those addresses
	// explicitly and may admit them.
	special string
	lo, hi  uint16
}

// ParseAllowList compiles --allow patterns. An error is a *FieldError for
// the key "allow" naming the first bad pattern; it wraps ErrBadAddress.
func ParseAllowList(patterns []string) (*AllowList, error) {
	a := &AllowList{rules: make([]allowRule, 0, len(patterns))}
	for _, p := range patterns {
		r, err := parseAllowRule(p)
		if err != nil {
			e := fieldErr(allowKey, p, "%v", err)
			e.err = ErrBadAddress
			return nil, e
		}
		a.rules = append(a.rules, r)
	}
	return a, nil
}

// Patterns returns the patterns as given, for logging.
func (a *AllowList) Patterns() []string {
	if a == nil {
		return nil
	}
	out := make([]string, len(a.rules))
	for i, r := range a.rules {
		out[i] = r.pattern
	}
	return out
}

// openProxyHint explains why there is no "allow everything" pattern.
const openProxyHint = "there is no pattern for any target: it would make the server an open proxy for whoever has the key; allow the targets the clients need (to allow every IP address anyway, write 0.0.0.0/0:1-65535 and [::/0]:1-65535)"

func parseAllowRule(p string) (allowRule, error) {
	switch strings.ToLower(p) {
	case "*", "*:*", "any", "all":
		return allowRule{}, errors.New(openProxyHint)
	}
	host, ports, err := net.SplitHostPort(p)
	if err != nil {
		if strings.Count(p, ":") > 1 && !strings.HasPrefix(p, "[") {
			return allowRule{}, errors.New("want HOST:PORTS; write an IPv6 address or CIDR in brackets, e.g. [2001:db8::/32]:443")
		}
		return allowRule{}, errors.New("want HOST:PORTS, e.g. example.com:443, 10.0.0.0/8:22, *.example.com:80-443")
	}
	r := allowRule{pattern: p}
	if r.lo, r.hi, err = parseAllowPorts(ports); err != nil {
		return allowRule{}, err
	}
	bracketed := strings.HasPrefix(p, "[")
	switch {
	case host == "":
		return allowRule{}, errors.New("missing host")
	case host == "*":
		return allowRule{}, errors.New(openProxyHint)
	case strings.Contains(host, "/"):
		err = r.setPrefix(host, bracketed)
	case strings.HasPrefix(host, "*."):
		if bracketed {
			return allowRule{}, errors.New("only an IPv6 address or CIDR goes in brackets")
		}
		if strings.Contains(host[2:], "*") {
			return allowRule{}, errors.New("a wildcard may only be the whole first label, as in *.example.com")
		}
		if err = checkHostName(host[2:]); err == nil {
			r.name, r.wildcard = "."+canonicalName(host[2:]), true
		}
	case strings.Contains(host, "*"):
		return allowRule{}, errors.New("a wildcard may only be the whole first label, as in *.example.com (which does not match example.com itself)")
	default:
		if err = checkHost(host, bracketed, false); err == nil {
			if ip, perr := netip.ParseAddr(host); perr == nil {
				ip = ip.Unmap()
				r.prefix = netip.PrefixFrom(ip, ip.BitLen())
				r.special = specialPrefix(r.prefix)
			} else {
				r.name = canonicalName(host)
			}
		}
	}
	if err != nil {
		return allowRule{}, err
	}
	return r, nil
}

// setPrefix reads a CIDR block.
func (r *allowRule) setPrefix(s string, bracketed bool) error {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("%q is not a CIDR block (want e.g. 10.0.0.0/8 or [2001:db8::/32])", s)
	}
	if bracketed != pfx.Addr().Is6() {
		if bracketed {
			return fmt.Errorf("only an IPv6 CIDR goes in brackets, not %s", s)
		}
		return fmt.Errorf("write the IPv6 CIDR %s in brackets", s)
	}
	if m := pfx.Masked(); m != pfx {
		// A typo here widens the list silently: 10.1.2.3/8 is all of 10/8.
		return fmt.Errorf("%s has bits set after the prefix length: write %s, or %s for the single address",
			s, m, netip.PrefixFrom(pfx.Addr(), pfx.Addr().BitLen()))
	}
	if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
		pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
	}
	r.prefix = pfx
	r.special = specialPrefix(pfx)
	return nil
}

// parseAllowPorts reads PORTS: a port, lo-hi, or * for every port.
func parseAllowPorts(ports string) (lo, hi uint16, err error) {
	if ports == "*" {
		return 1, 65535, nil
	}
	first, last, isRange := strings.Cut(ports, "-")
	if isRange && (first == "" || last == "") {
		return 0, 0, fmt.Errorf("port %q: want a port, a range lo-hi, or *", ports)
	}
	l, err := parsePort(first, false)
	if err != nil {
		return 0, 0, err
	}
	h := l
	if isRange {
		if h, err = parsePort(last, false); err != nil {
			return 0, 0, err
		}
		if l > h {
			return 0, 0, fmt.Errorf("port range %d-%d is reversed (lo must be <= hi)", l, h)
		}
	}
	return uint16(l), uint16(h), nil
}

func canonicalName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// specialRanges are the addresses no wide pattern reaches; see AllowList.
var specialRanges = []struct {
	prefix netip.Prefix
	kind   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "an unspecified (this-host) address"},
	{netip.MustParsePrefix("127.0.0.0/8"), "a loopback address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "a link-local address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "a multicast address"},
	{netip.MustParsePrefix("255.255.255.255/32"), "the broadcast address"},
	{netip.MustParsePrefix("::/128"), "the unspecified address"},
	{netip.MustParsePrefix("::1/128"), "a loopback address"},
	{netip.MustParsePrefix("fe80::/10"), "a link-local address"},
	{netip.MustParsePrefix("ff00::/8"), "a multicast address"},
}

// specialAddr returns the kind of special address ip is, "" if none. ip is
// already unmapped.
func specialAddr(ip netip.Addr) string {
	for _, s := range specialRanges {
		if s.prefix.Contains(ip) {
			return s.kind
		}
	}
	return ""
}

// specialPrefix returns the kind of special range p lies entirely inside,
// "" if none.
func specialPrefix(p netip.Prefix) string {
	for _, s := range specialRanges {
		if s.prefix.Bits() <= p.Bits() && s.prefix.Contains(p.Addr()) {
			return s.kind
		}
	}
	return ""
}

// Allowed reports whether a client may have the server connect to
// host:port, and why: the pattern that admits it, or the reason it is
// refused (for the server's WARN line). host is an IP address (IPv6 with
// or without brackets) or a DNS name, which is matched as written, without
// case and without resolving it.
func (a *AllowList) Allowed(host string, port uint16) (ok bool, reason string) {
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	target := showTarget(host, port)
	if port == 0 {
		return false, target + ": port 0 is not a port one can connect to"
	}
	if a == nil || len(a.rules) == 0 {
		return false, target + " is not allowed: the allow-list is empty"
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return a.allowedIP(ip, port, target)
	}
	if err := checkHostName(host); err != nil {
		return false, target + " refused: " + err.Error()
	}
	name := canonicalName(host)
	for _, r := range a.rules {
		if r.prefix.IsValid() || port < r.lo || port > r.hi {
			continue
		}
		if name == r.name || r.wildcard && strings.HasSuffix(name, r.name) {
			return true, fmt.Sprintf("%s allowed by %q", target, r.pattern)
		}
	}
	for _, r := range a.rules {
		if r.wildcard && r.name == "."+name && port >= r.lo && port <= r.hi {
			return false, fmt.Sprintf("%s matches no allow pattern (%q covers names under %s, not %s itself)", target, r.pattern, name, name)
		}
	}
	return false, target + " matches no allow pattern"
}

func (a *AllowList) allowedIP(ip netip.Addr, port uint16, target string) (bool, string) {
	if ip.Zone() != "" {
		return false, target + " refused: an IPv6 zone names an interface of the client's machine, not the server's"
	}
	ip = ip.Unmap()
	special := specialAddr(ip)
	wide := ""
	for _, r := range a.rules {
		if !r.prefix.IsValid() || port < r.lo || port > r.hi || !r.prefix.Contains(ip) {
			continue
		}
		if special == "" || r.special != "" {
			return true, fmt.Sprintf("%s allowed by %q", target, r.pattern)
		}
		if wide == "" {
			wide = r.pattern
		}
	}
	if special != "" {
		msg := fmt.Sprintf("%s refused: %s is %s, allowed only by a pattern that names it (e.g. %s)",
			target, ip, special, net.JoinHostPort(ip.String(), strconv.Itoa(int(port))))
		if wide != "" {
			msg += fmt.Sprintf("; %q is not enough", wide)
		}
		return false, msg
	}
	return false, target + " matches no allow pattern"
}

// AllowedResolved is the second check for a target that Allowed admitted
// by name, made on each address the name resolves to (best in a
// net.Dialer's Control function, so that the address checked is the one
// dialled, whatever DNS answers in between). A name admitted by a wildcard
// pattern may not lead to a special address (loopback, link-local, ...,
// see AllowList): otherwise whoever controls DNS under *.example.com
// reaches the server's own services. Such an address is admitted only if
// the pattern names the name exactly (localhost:6379: the operator chose
// it) or an IP pattern inside the special range covers it. It does not
// repeat Allowed's check of the name.
func (a *AllowList) AllowedResolved(name string, port uint16, ip netip.Addr) (ok bool, reason string) {
	target := showTarget(name, port)
	ip = ip.WithZone("").Unmap()
	special := specialAddr(ip)
	if special == "" {
		return true, fmt.Sprintf("%s resolved to %s", target, ip)
	}
	if a != nil {
		canon := canonicalName(name)
		for _, r := range a.rules {
			if port < r.lo || port > r.hi {
				continue
			}
			if !r.wildcard && r.name != "" && r.name == canon || r.special != "" && r.prefix.Contains(ip) {
				return true, fmt.Sprintf("%s resolved to %s, allowed by %q", target, ip, r.pattern)
			}
		}
	}
	return false, fmt.Sprintf("%s refused: it resolved to %s, which is %s; allow the name exactly (%s) or the address (%s)",
		target, ip, special, target, net.JoinHostPort(ip.String(), strconv.Itoa(int(port))))
}

// showTarget formats host:port for a log line. The host comes from the
// network: one that is neither an IP address nor a DNS name is quoted, so
// that it cannot break or forge the line.
func showTarget(host string, port uint16) string {
	t := net.JoinHostPort(host, strconv.Itoa(int(port)))
	if ip, err := netip.ParseAddr(host); err == nil && validZone(ip.Zone()) || err != nil && checkHostName(host) == nil {
		return t
	}
	return strconv.Quote(t)
}

package config

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseAllowListBad(t *testing.T) {
	bad := []struct{ in, reason string }{
		{"", "want HOST:PORTS"},
		{"example.com", "want HOST:PORTS"},
		{"*", "open proxy"},
		{"*:*", "open proxy"},
		{"ANY", "open proxy"},
		{"all", "open proxy"},
		{"*:443", "open proxy"},
		{":443", "missing host"},
		{"example.com:0", "out of range"},
		{"example.com:65536", "out of range"},
		{"example.com:x", "not a number"},
		{"example.com:-443", "want a port, a range lo-hi, or *"},
		{"example.com:80-", "want a port, a range lo-hi, or *"},
		{"example.com:443-80", "reversed"},
		{"example.com:0-80", "out of range"},
		{"example.com:**", "not a number"},
		{"*example.com:443", "wildcard"},
		{"a*.example.com:443", "wildcard"},
		{"www.*.com:443", "wildcard"},
		{"*.*.example.com:443", "wildcard"},
		{"*.:443", "missing host"},
		{"*.bad host:443", "not a valid host name"},
		{"[*.example.com]:443", "brackets"},
		{"bad_host!:443", "not a valid host name"},
		{"127.1:80", "standard form"},
		{"10.0.0.0/33:22", "not a CIDR block"},
		{"10.0.0.0/:22", "not a CIDR block"},
		{"example.com/8:22", "not a CIDR block"},
		{"10.1.2.3/8:22", "write 10.0.0.0/8, or 10.1.2.3/32"},
		{"[2001:db8::1/32]:443", "write 2001:db8::/32"},
		{"2001:db8::/32:443", "in brackets"},
		{"[10.0.0.0/8]:22", "only an IPv6 CIDR goes in brackets"},
		{"[10.0.0.1]:22", "only an IPv6 address goes in brackets"},
		{"2001:db8::1:443", "in brackets"},
		{"[example.com]:443", "not an IPv6 address"},
		{"[fe80::1%eth0]:22", "zone"},
		{"[fe80::%eth0/64]:22", "not a CIDR block"},
	}
	for _, tt := range bad {
		_, err := ParseAllowList([]string{"example.org:1", tt.in})
		checkField(t, "ParseAllowList("+tt.in+")", err, "allow", tt.reason)
		if err != nil && !errors.Is(err, ErrBadAddress) {
			t.Errorf("%q: %v does not wrap ErrBadAddress", tt.in, err)
		}
	}
}

func TestAllowed(t *testing.T) {
	patterns := []string{
		"example.com:443",
		"*.Example.NET.:80-81",
		"192.0.2.7:22",
		"10.0.0.0/8:1000-2000",
		"[2001:db8::/32]:443",
		"[2001:db8:ffff::7]:*",
		"198.51.100.0/24:*",
		"[::ffff:203.0.113.0/120]:53",
		"0.0.0.0/0:9",
		"[::/0]:9",
		"127.0.0.1:8080",
		"169.254.169.254:80",
		"[fe80::/64]:7",
		"localhost:6379",
		"svc_a.internal:5000",
	}
	a, err := ParseAllowList(patterns)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Patterns(), patterns) {
		t.Errorf("Patterns() = %q", a.Patterns())
	}
	tests := []struct {
		host   string
		port   uint16
		ok     bool
		reason string
	}{
		// Names: exact, without case, final dot ignored, never resolved.
		{"example.com", 443, true, `allowed by "example.com:443"`},
		{"EXAMPLE.com.", 443, true, "example.com:443"},
		{"example.com", 80, false, "matches no allow pattern"},
		{"www.example.com", 443, false, "matches no allow pattern"},
		{"example.com.evil.org", 443, false, "no allow pattern"},
		{"a.example.net", 80, true, `allowed by "*.Example.NET.:80-81"`},
		{"A.B.EXAMPLE.NET", 81, true, "*.Example.NET."},
		{"a.example.net.", 81, true, "*.Example.NET."},
		{"example.net", 80, false, `example.net:80 matches no allow pattern ("*.Example.NET.:80-81" covers names under example.net, not example.net itself)`},
		{"example.net", 82, false, "example.net:82 matches no allow pattern"},
		{"aexample.net", 80, false, "no allow pattern"},
		{"a.example.net", 82, false, "no allow pattern"},
		{"localhost", 6379, true, "localhost:6379"},
		{"LOCALHOST", 6379, true, "localhost:6379"},
		{"localhost", 6380, false, "no allow pattern"},
		{"svc_a.internal", 5000, true, "svc_a.internal"},
		// A name is not an address and an address is not a name.
		{"7.2.0.192.in-addr.arpa", 22, false, "no allow pattern"},
		{"0xc0000207", 22, false, "standard form"},
		{"192.0.2.07", 22, false, "standard form"},
		{"bad host", 443, false, `"bad host:443" refused: host "bad host" is not a valid host name`},
		{"\n", 7, false, `"\n:7" refused`},
		{"fe80::1%a\nb", 7, false, `"[fe80::1%a\nb]:7" refused: an IPv6 zone`},
		{"a\nb", 0, false, `"a\nb:0": port 0`},
		{"", 443, false, "missing host"},
		// IPv4.
		{"192.0.2.7", 22, true, "192.0.2.7:22"},
		{"192.0.2.7", 23, false, "no allow pattern"},
		{"192.0.2.8", 22, false, "no allow pattern"},
		{"10.255.255.255", 1000, true, "10.0.0.0/8"},
		{"10.1.2.3", 2000, true, "10.0.0.0/8"},
		{"10.1.2.3", 2001, false, "no allow pattern"},
		{"11.0.0.0", 1500, false, "no allow pattern"},
		{"198.51.100.200", 1, true, "198.51.100.0/24:*"},
		{"198.51.100.200", 65535, true, "198.51.100.0/24:*"},
		{"203.0.113.9", 53, true, "::ffff:203.0.113.0/120"},
		// IPv4-mapped IPv6 is IPv4, in targets and in patterns.
		{"::ffff:192.0.2.7", 22, true, "192.0.2.7:22"},
		{"[::ffff:10.0.0.1]", 1000, true, "10.0.0.0/8"},
		{"::ffff:127.0.0.1", 8080, true, "127.0.0.1:8080"},
		{"::ffff:127.0.0.2", 9, false, "loopback"},
		{"8.8.8.8", 9, true, "0.0.0.0/0:9"},
		{"::ffff:8.8.8.8", 9, true, "0.0.0.0/0:9"},
		// IPv6.
		{"2001:db8:1::1", 443, true, "[2001:db8::/32]:443"},
		{"[2001:DB8::1]", 443, true, "[2001:db8::/32]:443"},
		{"2001:db9::1", 443, false, "no allow pattern"},
		{"2001:db8:ffff::7", 12345, true, "[2001:db8:ffff::7]:*"},
		{"2001:db8:ffff::8", 12345, false, "no allow pattern"},
		{"2606:4700::1111", 9, true, "[::/0]:9"},
		{"fe80::1%eth0", 7, false, "zone"},
		// Special addresses: only a pattern inside their range admits them.
		{"127.0.0.1", 8080, true, "127.0.0.1:8080"},
		{"127.0.0.1", 9, false, `is a loopback address, allowed only by a pattern that names it (e.g. 127.0.0.1:9); "0.0.0.0/0:9" is not enough`},
		{"127.0.0.2", 8080, false, "loopback"},
		{"::1", 9, false, `loopback address, allowed only by a pattern that names it (e.g. [::1]:9); "[::/0]:9" is not enough`},
		{"0.0.0.0", 9, false, "unspecified"},
		{"0.1.2.3", 9, false, "unspecified"},
		{"::", 9, false, "unspecified"},
		{"169.254.169.254", 80, true, "169.254.169.254:80"},
		{"169.254.169.254", 9, false, "link-local"},
		{"169.254.1.1", 80, false, "link-local"},
		{"fe80::1", 7, true, "[fe80::/64]:7"},
		{"fe80:0:0:1::1", 7, false, "link-local"},
		{"fe80::1", 9, false, "link-local"},
		{"224.0.0.1", 9, false, "multicast"},
		{"ff02::1", 9, false, "multicast"},
		{"255.255.255.255", 9, false, "broadcast"},
		// Ports.
		{"example.com", 0, false, "port 0"},
	}
	for _, tt := range tests {
		ok, reason := a.Allowed(tt.host, tt.port)
		if ok != tt.ok || !strings.Contains(reason, tt.reason) {
			t.Errorf("Allowed(%q, %d) = %v, %q; want %v and %q", tt.host, tt.port, ok, reason, tt.ok, tt.reason)
		}
		if strings.Contains(reason, "\n") {
			t.Errorf("Allowed(%q, %d): multi-line reason %q", tt.host, tt.port, reason)
		}
	}
}

func TestAllowedSpecialRangesNeedAnExplicitPattern(t *testing.T) {
	tests := []struct {
		pattern, host string
		ok            bool
	}{
		{"127.0.0.0/8:80", "127.9.9.9", true},
		{"126.0.0.0/7:80", "127.9.9.9", false},
		{"0.0.0.0/1:80", "127.0.0.1", false},
		{"[::1]:80", "::1", true},
		{"[::/127]:80", "::1", false},
		{"[::]:80", "::", true},
		{"0.0.0.0:80", "0.0.0.0", true},
		{"169.254.0.0/16:80", "169.254.3.4", true},
		{"169.0.0.0/8:80", "169.254.3.4", false},
		{"[fe80::/10]:80", "fe80::9", true},
		{"[fe00::/7]:80", "fe80::9", false},
		{"239.1.2.3:80", "239.1.2.3", true},
		{"224.0.0.0/4:80", "239.1.2.3", true},
		{"224.0.0.0/3:80", "239.1.2.3", false},
		{"[ff00::/8]:80", "ff05::2", true},
		{"255.255.255.255:80", "255.255.255.255", true},
		{"255.255.255.0/24:80", "255.255.255.255", false},
		{"[::ffff:127.0.0.1]:80", "127.0.0.1", true},
		{"[::ffff:0:0/96]:80", "127.0.0.1", false},
		{"[::ffff:0:0/96]:80", "8.8.8.8", true},
		{"[::/0]:80", "8.8.8.8", false},
	}
	for _, tt := range tests {
		a, err := ParseAllowList([]string{tt.pattern})
		if err != nil {
			t.Errorf("%q: %v", tt.pattern, err)
			continue
		}
		if ok, reason := a.Allowed(tt.host, 80); ok != tt.ok {
			t.Errorf("pattern %q: Allowed(%q, 80) = %v, %q; want %v", tt.pattern, tt.host, ok, reason, tt.ok)
		}
	}
}

func TestAllowedEmpty(t *testing.T) {
	var nilList *AllowList
	empty, err := ParseAllowList(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []*AllowList{nilList, empty, {}} {
		if ok, reason := a.Allowed("example.com", 443); ok || !strings.Contains(reason, "allow-list is empty") {
			t.Errorf("Allowed on an empty list = %v, %q", ok, reason)
		}
	}
	if nilList.Patterns() != nil {
		t.Errorf("nil Patterns() = %q", nilList.Patterns())
	}
}

// TestAllowedServerTarget shows the caller's way to keep --target allowed.
func TestAllowedServerTarget(t *testing.T) {
	for _, target := range []string{"127.0.0.1:12948", "[::1]:8388", "localhost:8080", "10.0.0.1:22"} {
		a, err := ParseAllowList([]string{"example.com:443", target})
		if err != nil {
			t.Fatalf("target %q: %v", target, err)
		}
		host, port, _, _ := ParseAddrRange(target)
		if ok, reason := a.Allowed(host, uint16(port)); !ok {
			t.Errorf("target %q refused: %s", target, reason)
		}
	}
}

func FuzzParseAllow(f *testing.F) {
	for _, s := range []struct {
		pattern, host string
		port          uint16
	}{
		{"example.com:443", "EXAMPLE.com", 443},
		{"*.example.com:80-443", "a.example.com", 80},
		{"10.0.0.0/8:22", "10.1.2.3", 22},
		{"[2001:db8::/32]:443", "2001:db8::1", 443},
		{"0.0.0.0/0:1-65535", "127.0.0.1", 1},
		{"[::ffff:0:0/96]:*", "::ffff:127.0.0.1", 65535},
		{"127.0.0.1:8080", "[::ffff:7f00:1]", 8080},
		{"*", "", 0},
	} {
		f.Add(s.pattern, s.host, s.port)
	}
	f.Fuzz(func(t *testing.T, pattern, host string, port uint16) {
		a, err := ParseAllowList([]string{pattern})
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Key != "allow" || fe.Value != pattern || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q does not name --allow %q on one line", err, pattern)
			}
			return
		}
		ok, reason := a.Allowed(host, port)
		if reason == "" || strings.Contains(reason, "\n") {
			t.Fatalf("Allowed(%q, %d) gave reason %q", host, port, reason)
		}
		upper := asciiUpper(host)
		if up, _ := a.Allowed(upper, port); up != ok {
			t.Fatalf("pattern %q: Allowed(%q) = %v but Allowed(%q) = %v", pattern, host, ok, upper, up)
		}
		if !ok {
			return
		}
		if port == 0 {
			t.Fatalf("pattern %q allowed port 0", pattern)
		}
		h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		ip, err := netip.ParseAddr(h)
		if err != nil {
			if checkHostName(h) != nil {
				t.Fatalf("pattern %q allowed the malformed host %q", pattern, host)
			}
			return
		}
		if ip.Zone() != "" {
			t.Fatalf("pattern %q allowed %q with a zone", pattern, host)
		}
		// An allowed special address is one the pattern names explicitly.
		if specialAddr(ip.Unmap()) != "" && specialPrefix(a.rules[0].prefix) == "" {
			t.Fatalf("pattern %q allowed the special address %q", pattern, host)
		}
	})
}

// asciiUpper upper-cases ASCII letters only: strings.ToUpper turns some
// non-ASCII letters (ı, ſ) into ASCII ones, which is not a change of case
// a DNS name can have.
func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func TestAllowedResolved(t *testing.T) {
	a, err := ParseAllowList([]string{"*.example.com:443", "localhost:6379", "db.example.com:5432", "[fe80::/64]:5432"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		port   uint16
		ip     string
		ok     bool
		reason string
	}{
		{"www.example.com", 443, "93.184.215.14", true, "resolved to 93.184.215.14"},
		{"www.example.com", 443, "127.0.0.1", false, "which is a loopback address; allow the name exactly (www.example.com:443) or the address (127.0.0.1:443)"},
		{"www.example.com", 443, "::ffff:169.254.169.254", false, "169.254.169.254, which is a link-local address"},
		{"LocalHost.", 6379, "127.0.0.1", true, `allowed by "localhost:6379"`},
		{"localhost", 6379, "::1", true, "localhost:6379"},
		{"db.example.com", 5432, "fe80::5%eth0", true, `allowed by "db.example.com:5432"`},
		{"other.example.com", 5432, "fe80::5", true, `allowed by "[fe80::/64]:5432"`},
		{"other.example.com", 5432, "fe80:1::5", false, "link-local"},
	}
	for _, tt := range tests {
		ok, reason := a.AllowedResolved(tt.name, tt.port, netip.MustParseAddr(tt.ip))
		if ok != tt.ok || !strings.Contains(reason, tt.reason) {
			t.Errorf("AllowedResolved(%q, %d, %s) = %v, %q; want %v and %q", tt.name, tt.port, tt.ip, ok, reason, tt.ok, tt.reason)
		}
	}
	var none *AllowList
	if ok, _ := none.AllowedResolved("x.example", 1, netip.MustParseAddr("127.0.0.1")); ok {
		t.Errorf("nil list admitted a loopback address")
	}
}

package config

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestParseForward(t *testing.T) {
	good := []struct {
		in   string
		want Forward
	}{
		{"127.0.0.1:2222=10.0.0.5:22", Forward{Listen: "127.0.0.1:2222", Target: "10.0.0.5:22"}},
		{"127.0.0.1:5353/udp=10.0.0.2:53", Forward{Listen: "127.0.0.1:5353", Target: "10.0.0.2:53", UDP: true}},
		{"127.0.0.1:5353/UDP=10.0.0.2:53", Forward{Listen: "127.0.0.1:5353", Target: "10.0.0.2:53", UDP: true}},
		{"127.0.0.1:2222/tcp=10.0.0.5:22", Forward{Listen: "127.0.0.1:2222", Target: "10.0.0.5:22"}},
		{"[::1]:8080=example.com:80", Forward{Listen: "[::1]:8080", Target: "example.com:80"}},
		{":2222=host:22", Forward{Listen: ":2222", Target: "host:22"}},
		{"localhost:1=[2001:db8::1]:65535", Forward{Listen: "localhost:1", Target: "[2001:db8::1]:65535"}},
		{"[fe80::1%eth0]:22=a.b-c_d.example.:22", Forward{Listen: "[fe80::1%eth0]:22", Target: "a.b-c_d.example.:22"}},
		{"0.0.0.0:53/udp=[::ffff:10.0.0.2]:53", Forward{Listen: "0.0.0.0:53", Target: "[::ffff:10.0.0.2]:53", UDP: true}},
		{"[::]:443=xn--bcher-kva.example:443", Forward{Listen: "[::]:443", Target: "xn--bcher-kva.example:443"}},
		{"127.0.0.1:0080=h:08", Forward{Listen: "127.0.0.1:0080", Target: "h:08"}},
	}
	for _, tt := range good {
		got, err := ParseForward(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseForward(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		if back, err := ParseForward(got.String()); err != nil || back != got {
			t.Errorf("ParseForward(%q.String() = %q) = %+v, %v", tt.in, got.String(), back, err)
		}
	}

	bad := []struct{ in, reason string }{
		{"", "want LISTEN=TARGET"},
		{"127.0.0.1:2222", "want LISTEN=TARGET"},
		{"=10.0.0.5:22", "want LISTEN=TARGET"},
		{"127.0.0.1:2222=", "want LISTEN=TARGET"},
		{"127.0.0.1:0=10.0.0.5:22", `listen address "127.0.0.1:0": port 0 is not allowed`},
		{"127.0.0.1:65536=10.0.0.5:22", "out of range"},
		{"127.0.0.1:2222=10.0.0.5:0", "out of range"},
		{"127.0.0.1:2222=10.0.0.5:99999", "out of range"},
		{"127.0.0.1:2222=10.0.0.5", "want host:port"},
		{"127.0.0.1=10.0.0.5:22", "want host:port"},
		{"127.0.0.1:2222=:22", "missing host"},
		{"127.0.0.1:-1=h:22", "not a number"},
		{"127.0.0.1:+22=h:22", "not a number"},
		{"127.0.0.1:22 =h:22", "not a number"},
		{"127.0.0.1:2000-2010=h:22", "port range"},
		{"127.0.0.1:22=h:20-30", "port range"},
		{"127.0.0.1:22/sctp=h:22", "unknown protocol"},
		{"127.0.0.1:22/=h:22", "unknown protocol"},
		{"127.0.0.1:5353=10.0.0.2:53/udp", "belongs after the listen address"},
		{"::1:8080=h:80", "in brackets"},
		{"127.0.0.1:8080=2001:db8::1:80", "in brackets"},
		{"[127.0.0.1]:8080=h:80", "only an IPv6 address goes in brackets"},
		{"[example.com]:8080=h:80", "not an IPv6 address"},
		{"127.0.0.1:8080=[fe80::1%eth0]:80", "zone"},
		{"[fe80::1%a b]:8080=h:80", "zone"},
		{"127.0.0.1:8080=bad host:80", "not a valid host name"},
		{"127.0.0.1:8080=a..b:80", "not a valid host name"},
		{"127.0.0.1:8080=a/b:80", "not a valid host name"},
		{"127.0.0.1:8080=127.1:80", "standard form"},
		{"127.0.0.1:8080=0x7f000001:80", "standard form"},
		{"127.0.0.1:8080=010.0.0.1:80", "standard form"},
		{"127.0.0.1:8080=" + strings.Repeat("a", 64) + ".com:80", "63"},
		{"127.0.0.1:8080=" + strings.Repeat("abcdefghi.", 26) + "com:80", "longer than 253"},
		{"127.0.0.1:8080=h:80=x", "not a number"},
	}
	for _, tt := range bad {
		_, err := ParseForward(tt.in)
		checkField(t, "ParseForward("+tt.in+")", err, "forward", tt.reason)
		if err != nil && !errors.Is(err, ErrBadAddress) {
			t.Errorf("ParseForward(%q): %v does not wrap ErrBadAddress", tt.in, err)
		}
		if err != nil && !strings.Contains(err.Error(), tt.in) {
			t.Errorf("ParseForward(%q): %q does not name the value", tt.in, err)
		}
	}
}

func TestParseForwards(t *testing.T) {
	good := [][]string{
		nil,
		{"127.0.0.1:2222=10.0.0.5:22", "127.0.0.1:2223=10.0.0.5:22"},
		{"127.0.0.1:53=10.0.0.2:53", "127.0.0.1:53/udp=10.0.0.2:53"},
		{"127.0.0.1:80=a:80", "127.0.0.2:80=a:80", "[::1]:80=a:80"},
		{":80=a:80", ":81=a:80", "0.0.0.0:53/udp=b:53"},
	}
	for _, specs := range good {
		fs, err := ParseForwards(specs)
		if err != nil || len(fs) != len(specs) {
			t.Errorf("ParseForwards(%q) = %v, %v", specs, fs, err)
		}
	}

	bad := []struct {
		specs  []string
		value  string
		reason string
	}{
		{[]string{"127.0.0.1:2222=a:22", "127.0.0.1:2222=b:22"}, "127.0.0.1:2222=b:22", "same TCP address as 127.0.0.1:2222=a:22"},
		{[]string{"127.0.0.1:53/udp=a:53", "x:1=y:1", "127.0.0.1:53/udp=b:53"}, "127.0.0.1:53/udp=b:53", "same UDP address"},
		{[]string{":80=a:80", "127.0.0.1:80=b:80"}, "127.0.0.1:80=b:80", "same TCP address as :80=a:80"},
		{[]string{"127.0.0.1:80=a:80", "0.0.0.0:80=b:80"}, "0.0.0.0:80=b:80", "same TCP"},
		{[]string{"[::1]:80=a:80", "[::]:80=b:80"}, "[::]:80=b:80", "same TCP"},
		{[]string{"[::ffff:127.0.0.1]:80=a:80", "127.0.0.1:80=b:80"}, "127.0.0.1:80=b:80", "same TCP"},
		{[]string{"[2001:db8::1]:80=a:80", "[2001:DB8:0::1]:80=b:80"}, "[2001:DB8:0::1]:80=b:80", "same TCP"},
		{[]string{"LocalHost:80=a:80", "localhost.:080=b:80"}, "localhost.:080=b:80", "same TCP"},
		{[]string{"127.0.0.1:80=a:80", "bad"}, "bad", "want LISTEN=TARGET"},
	}
	for _, tt := range bad {
		_, err := ParseForwards(tt.specs)
		checkField(t, strings.Join(tt.specs, " "), err, "forward", tt.reason)
		var fe *FieldError
		if errors.As(err, &fe) && fe.Value != tt.value {
			t.Errorf("ParseForwards(%q): error names %v, want %q", tt.specs, fe.Value, tt.value)
		}
	}
}

func TestCheckForwardsUnixListen(t *testing.T) {
	// A front end may add --localaddr, which can be a unix socket path.
	fs := []Forward{{Listen: "/run/a.sock"}, {Listen: "127.0.0.1:80", Target: "a:80"}}
	if err := CheckForwards(fs); err != nil {
		t.Errorf("CheckForwards: %v", err)
	}
	if err := CheckForwards(append(fs, Forward{Listen: "/run/a.sock"})); err == nil {
		t.Errorf("CheckForwards accepted one socket path twice")
	}
}

func FuzzParseForward(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1:2222=10.0.0.5:22", "127.0.0.1:5353/udp=10.0.0.2:53", "[::1]:8080=example.com:80",
		":2222=host:22", "[fe80::1%eth0]:22=h:1", "a:1/tcp=b:2/udp", "[::ffff:1.2.3.4]:1=0x7f.1:2", "=", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fw, err := ParseForward(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Key != "forward" || fe.Value != s {
				t.Fatalf("error %v does not name --forward %q", err, s)
			}
			return
		}
		for _, a := range []string{fw.Listen, fw.Target} {
			host, port, err := net.SplitHostPort(a)
			if err != nil {
				t.Fatalf("%q: accepted address %q: %v", s, a, err)
			}
			if p, err := parsePort(port, false); err != nil || p == 0 {
				t.Fatalf("%q: accepted port %q", s, port)
			}
			if strings.ContainsAny(host, " \t\r\n/=") {
				t.Fatalf("%q: accepted host %q", s, host)
			}
		}
		if host, _, _ := net.SplitHostPort(fw.Target); host == "" {
			t.Fatalf("%q: accepted a target without a host", s)
		}
		back, err := ParseForward(fw.String())
		if err != nil || back != fw {
			t.Fatalf("%q: String %q parses to %+v, %v; want %+v", s, fw.String(), back, err, fw)
		}
		if err := CheckForwards([]Forward{fw, fw}); err == nil {
			t.Fatalf("%q: the same forward twice accepted", s)
		}
	})
}

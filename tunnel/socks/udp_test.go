package socks

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestUDPDatagram: RFC 1928 §7's header, both ways, against bytes written
// out by hand.
func TestUDPDatagram(t *testing.T) {
	cases := []struct {
		name string
		dst  Addr
		wire []byte // header only
		back Addr   // what parsing the wire gives, if not dst
	}{
		{"ipv4", Addr{"192.0.2.1", 53}, cat([]byte{0, 0, 0}, dstIPv4("192.0.2.1", 53)), Addr{}},
		{"ipv6", Addr{"2001:db8::1", 443}, cat([]byte{0, 0, 0}, dstIPv6("2001:db8::1", 443)), Addr{}},
		{"ipv4-mapped", Addr{"::ffff:10.0.0.1", 9}, cat([]byte{0, 0, 0}, dstIPv4("10.0.0.1", 9)), Addr{"10.0.0.1", 9}},
		{"ipv6-zone", Addr{"fe80::1%eth0", 9}, cat([]byte{0, 0, 0}, dstIPv6("fe80::1", 9)), Addr{"fe80::1", 9}},
		{"domain", Addr{"dns.example", 53}, cat([]byte{0, 0, 0}, dstName("dns.example", 53)), Addr{}},
		{"domain-255", Addr{strings.Repeat("x", 255), 1}, cat([]byte{0, 0, 0}, dstName(strings.Repeat("x", 255), 1)), Addr{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, data := range [][]byte{nil, []byte("payload"), bytes.Repeat([]byte{0xAB}, 65507)} {
				prefix := []byte("keep")
				got, err := AppendUDPDatagram(prefix, c.dst, data)
				if err != nil {
					t.Fatalf("AppendUDPDatagram: %v", err)
				}
				if want := cat(prefix, c.wire, data); !bytes.Equal(got, want) {
					t.Fatalf("AppendUDPDatagram = %x..., want %x...", got[:min(len(got), 40)], want[:min(len(want), 40)])
				}
				dst, back, err := ParseUDPDatagram(got[len(prefix):])
				if err != nil {
					t.Fatalf("ParseUDPDatagram: %v", err)
				}
				want := c.back
				if want == (Addr{}) {
					want = c.dst
				}
				if dst != want || !bytes.Equal(back, data) {
					t.Fatalf("ParseUDPDatagram = %+v, %d bytes; want %+v, %d bytes", dst, len(back), want, len(data))
				}
			}
		})
	}
	if MaxUDPHeader != len(cat([]byte{0, 0, 0}, dstName(strings.Repeat("x", 255), 1))) {
		t.Errorf("MaxUDPHeader = %d", MaxUDPHeader)
	}
}

// TestUDPDatagramErrors: every malformed datagram is refused with its
// cause; every unencodable destination too, leaving the buffer as it was.
func TestUDPDatagramErrors(t *testing.T) {
	parse := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"short", []byte{0, 0}, ErrTruncated},
		{"no-atyp", []byte{0, 0, 0}, ErrTruncated},
		{"frag-1", cat([]byte{0, 0, 1}, dstIPv4("192.0.2.1", 53), []byte("x")), ErrFragmented},
		{"frag-last", cat([]byte{0, 0, 0x81}, dstIPv4("192.0.2.1", 53)), ErrFragmented},
		{"atyp-2", []byte{0, 0, 0, 2, 1, 2, 3, 4, 0, 53}, ErrAddrType},
		{"truncated-ipv4", []byte{0, 0, 0, 1, 192, 0, 2}, ErrTruncated},
		{"truncated-ipv6", cat([]byte{0, 0, 0}, dstIPv6("::1", 53)[:18]), ErrTruncated},
		{"truncated-domain", []byte{0, 0, 0, 3, 10, 'a', 'b'}, ErrTruncated},
		{"domain-no-length", []byte{0, 0, 0, 3}, ErrTruncated},
		{"domain-length-0", []byte{0, 0, 0, 3, 0, 0, 53}, ErrBadAddress},
		{"domain-control", cat([]byte{0, 0, 0}, dstName("a\nb", 53)), ErrBadAddress},
		{"domain-zoned-ip", cat([]byte{0, 0, 0}, dstName("000::0%00", 53)), ErrBadAddress},
	}
	for _, c := range parse {
		if _, _, err := ParseUDPDatagram(c.in); !errors.Is(err, c.want) {
			t.Errorf("ParseUDPDatagram(%s) = %v, want %v", c.name, err, c.want)
		}
	}
	encode := []struct {
		name string
		dst  Addr
	}{
		{"empty-host", Addr{"", 53}},
		{"long-host", Addr{strings.Repeat("x", 256), 53}},
		{"space", Addr{"a b", 53}},
	}
	for _, c := range encode {
		b := []byte("keep")
		got, err := AppendUDPDatagram(b, c.dst, []byte("data"))
		if !errors.Is(err, ErrBadAddress) || string(got) != "keep" {
			t.Errorf("AppendUDPDatagram(%s) = %q, %v; want ErrBadAddress and the buffer unchanged", c.name, got, err)
		}
	}
}

// TestAddr: the conversions around Addr.
func TestAddr(t *testing.T) {
	if s := (Addr{"2001:db8::1", 80}).String(); s != "[2001:db8::1]:80" {
		t.Errorf("String = %q", s)
	}
	if s := (Addr{"example.com", 443}).String(); s != "example.com:443" {
		t.Errorf("String = %q", s)
	}
	if ap, ok := (Addr{"192.0.2.1", 53}).AddrPort(); !ok || ap != netip.MustParseAddrPort("192.0.2.1:53") {
		t.Errorf("AddrPort = %v, %v", ap, ok)
	}
	if _, ok := (Addr{"example.com", 53}).AddrPort(); ok {
		t.Error("AddrPort of a name is ok")
	}
	if a := AddrFromAddrPort(netip.MustParseAddrPort("[::ffff:192.0.2.1]:7")); a != (Addr{"192.0.2.1", 7}) {
		t.Errorf("AddrFromAddrPort = %+v", a)
	}
}

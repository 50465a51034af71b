package socks

import "fmt"

// MaxUDPHeader is the longest UDP request header: RSV, FRAG and a 255-byte
// domain name with its port.
const MaxUDPHeader = 2 + 1 + maxAddrLen

// ParseUDPDatagram splits a datagram of a UDP association (RFC 1928 §7:
// RSV(2) | FRAG | ATYP | DST.ADDR | DST.PORT | DATA) into its destination
// and its data, which aliases p. RSV is not checked. A datagram with FRAG
// != 0 (ErrFragmented), a short one (ErrTruncated), an unknown ATYP or a
// malformed name is to be dropped: the protocol has no error reply for it.
func ParseUDPDatagram(p []byte) (dst Addr, data []byte, err error) {
	if len(p) < 3 {
		return Addr{}, nil, fmt.Errorf("udp header: %w", ErrTruncated)
	}
	if p[2] != 0 {
		return Addr{}, nil, fmt.Errorf("udp header: FRAG %d: %w", p[2], ErrFragmented)
	}
	dst, n, err := parseAddr(p[3:])
	if err != nil {
		return Addr{}, nil, fmt.Errorf("udp header: %w", err)
	}
	return dst, p[3+n:], nil
}

// AppendUDPDatagram appends to b the header for a datagram from or to dst
// (RSV 0, FRAG 0), then data; on error it returns b unchanged. dst.Host is written as an IPv4 or IPv6
// address when it is one, else as a domain name (1..255 printable bytes).
func AppendUDPDatagram(b []byte, dst Addr, data []byte) ([]byte, error) {
	out, err := appendAddr(append(b, 0, 0, 0), dst)
	if err != nil {
		return b, fmt.Errorf("udp header: %w", err)
	}
	return append(out, data...), nil
}

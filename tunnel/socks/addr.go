package socks

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// maxAddrLen is the longest ATYP|ADDR|PORT: a 255-byte domain name.
const maxAddrLen = 1 + 1 + 255 + 2

// Addr is a SOCKS address: DST.ADDR/DST.PORT of a request, BND.ADDR/BND.PORT
// of a reply, or the destination in a UDP datagram's header.
type Addr struct {
	// Host is an IP address in its canonical text form (no brackets, no
	// zone; an IPv4-mapped IPv6 address is written as IPv4) or a host name, kept as a name: the tunnel resolves it at the
	// server's end. A name is 1..255 bytes of printable ASCII.
	Host string
	Port uint16
}

// String returns host:port, with brackets around an IPv6 address.
func (a Addr) String() string {
	return net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port)))
}

// AddrPort returns the address as a netip.AddrPort when Host is an IP
// address, and false when it is a name.
func (a Addr) AddrPort() (netip.AddrPort, bool) {
	ip, err := netip.ParseAddr(a.Host)
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip, a.Port), true
}

// AddrFromAddrPort returns ap as an Addr; an IPv4-mapped IPv6 address
// becomes IPv4, a zone is dropped.
func AddrFromAddrPort(ap netip.AddrPort) Addr {
	return Addr{Host: ap.Addr().Unmap().WithZone("").String(), Port: ap.Port()}
}

// addrFromNet converts a net.Addr (nil, *net.TCPAddr, *net.UDPAddr or
// anything whose String is ip:port) for a reply's BND field; nil is
// 0.0.0.0:0, which tells a SOCKS client that the address is not known.
func addrFromNet(a net.Addr) (Addr, error) {
	switch a := a.(type) {
	case nil:
		return Addr{Host: "0.0.0.0"}, nil
	case *net.TCPAddr:
		return AddrFromAddrPort(a.AddrPort()), nil
	case *net.UDPAddr:
		return AddrFromAddrPort(a.AddrPort()), nil
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return Addr{}, fmt.Errorf("bound address %q: %w", a.String(), ErrBadAddress)
	}
	return AddrFromAddrPort(ap), nil
}

// hostFromName turns a DOMAINNAME field (or an HTTP authority's host) into
// Addr.Host: an IP literal becomes its canonical form (one with a zone is
// refused), anything else must be 1..255 bytes of printable ASCII.
func hostFromName(name []byte) (string, error) {
	if len(name) == 0 || len(name) > 255 {
		return "", fmt.Errorf("host name of %d bytes: %w", len(name), ErrBadAddress)
	}
	if ip, err := netip.ParseAddr(string(name)); err == nil {
		if ip.Zone() != "" {
			// A zone names an interface of the client's machine: meaningless
			// at the far end of a tunnel.
			return "", fmt.Errorf("host %q: IPv6 zone: %w", name, ErrBadAddress)
		}
		return ip.String(), nil
	}
	for _, c := range name {
		if c <= ' ' || c >= 0x7f {
			return "", fmt.Errorf("host name %q: %w", name, ErrBadAddress)
		}
	}
	return string(name), nil
}

// appendAddr appends a's ATYP|ADDR|PORT to b.
func appendAddr(b []byte, a Addr) ([]byte, error) {
	if ip, err := netip.ParseAddr(a.Host); err == nil {
		ip = ip.Unmap().WithZone("")
		if ip.Is4() {
			b = append(b, atypIPv4)
		} else {
			b = append(b, atypIPv6)
		}
		b = append(b, ip.AsSlice()...)
	} else {
		host, err := hostFromName([]byte(a.Host))
		if err != nil {
			return b, err
		}
		b = append(b, atypDomain, byte(len(host)))
		b = append(b, host...)
	}
	return binary.BigEndian.AppendUint16(b, a.Port), nil
}

// addrLen returns the length of the ATYP|ADDR|PORT that starts with b, or
// 0 when b is too short to tell; the error reports an unknown ATYP.
func addrLen(b []byte) (int, error) {
	if len(b) < 1 {
		return 0, nil
	}
	switch b[0] {
	case atypIPv4:
		return 1 + 4 + 2, nil
	case atypIPv6:
		return 1 + 16 + 2, nil
	case atypDomain:
		if len(b) < 2 {
			return 0, nil
		}
		return 1 + 1 + int(b[1]) + 2, nil
	}
	return 0, fmt.Errorf("ATYP 0x%02x: %w", b[0], ErrAddrType)
}

// parseAddr parses the ATYP|ADDR|PORT at the start of b and returns it with
// the number of bytes it took.
func parseAddr(b []byte) (Addr, int, error) {
	n, err := addrLen(b)
	if err != nil {
		return Addr{}, 0, err
	}
	if n == 0 || len(b) < n {
		return Addr{}, 0, fmt.Errorf("address: %w", ErrTruncated)
	}
	var a Addr
	switch b[0] {
	case atypIPv4:
		a.Host = netip.AddrFrom4([4]byte(b[1:5])).String()
	case atypIPv6:
		// An IPv4-mapped address is the IPv4 address, as everywhere in
		// Addr: it encodes back as IPv4.
		a.Host = netip.AddrFrom16([16]byte(b[1:17])).Unmap().String()
	case atypDomain:
		if a.Host, err = hostFromName(b[2 : n-2]); err != nil {
			return Addr{}, 0, err
		}
	}
	a.Port = binary.BigEndian.Uint16(b[n-2 : n])
	return a, n, nil
}

// readAddr reads ATYP|ADDR|PORT from r; buf is scratch space of at least
// maxAddrLen bytes. An unknown ATYP is reported before anything else is read.
func readAddr(r io.Reader, buf []byte) (Addr, error) {
	buf = buf[:maxAddrLen]
	have := 0
	for {
		n, err := addrLen(buf[:have])
		if err != nil {
			return Addr{}, err
		}
		if n > 0 {
			if _, err := io.ReadFull(r, buf[have:n]); err != nil {
				return Addr{}, err
			}
			a, _, err := parseAddr(buf[:n])
			return a, err
		}
		if _, err := io.ReadFull(r, buf[have:have+1]); err != nil {
			return Addr{}, err
		}
		have++
	}
}

// MaxAddrLen is the longest encoded address (ATYP, a 255-byte name, port).
const MaxAddrLen = maxAddrLen

// AppendAddr appends a in SOCKS form (ATYP|ADDR|PORT) to b; smuxtun's
// per-stream targets travel in this form too. On error b is returned
// unchanged.
func AppendAddr(b []byte, a Addr) ([]byte, error) { return appendAddr(b, a) }

// ReadAddr reads one address in SOCKS form from r, reading no byte past it.
func ReadAddr(r io.Reader) (Addr, error) {
	var buf [maxAddrLen]byte
	return readAddr(r, buf[:])
}

// ParseAddr parses the address in SOCKS form at the start of b and returns
// it with the number of bytes it took.
func ParseAddr(b []byte) (Addr, int, error) { return parseAddr(b) }

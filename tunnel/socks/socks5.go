package socks

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
)

// acceptSOCKS5 runs RFC 1928's method negotiation, RFC 1929's
// username/password sub-negotiation when cfg asks for it, and reads the
// request; the version byte of the greeting has been read.
func acceptSOCKS5(conn net.Conn, cfg *Config) (*Request, error) {
	t := cfg.timeout()
	var buf [maxAddrLen]byte

	// Greeting: VER | NMETHODS | METHODS.
	if _, err := io.ReadFull(conn, buf[:1]); err != nil {
		return nil, fmt.Errorf("socks5 greeting: %w", err)
	}
	methods := buf[:buf[0]]
	if _, err := io.ReadFull(conn, methods); err != nil {
		return nil, fmt.Errorf("socks5 greeting: %w", err)
	}
	want := byte(methodNoAuth)
	if cfg.auth() {
		want = methodUserPass
	}
	if bytes.IndexByte(methods, want) < 0 {
		_ = failWrite(conn, t, []byte{version5, methodNoAcceptable})
		return nil, fmt.Errorf("socks5 greeting offers methods %v, not 0x%02x: %w",
			methods, want, ErrNoAcceptableMethod)
	}
	if _, err := conn.Write([]byte{version5, want}); err != nil {
		return nil, fmt.Errorf("socks5 method selection: %w", err)
	}
	var user string
	if want == methodUserPass {
		var err error
		if user, err = authUserPass(conn, cfg, buf[:]); err != nil {
			return nil, err
		}
	}

	// Request: VER | CMD | RSV | ATYP | DST.ADDR | DST.PORT. RSV is not
	// checked: RFC 1928 gives it no meaning.
	refuse := func(code Reply, err error) (*Request, error) {
		if b, rerr := socks5Reply(code, nil); rerr == nil {
			_ = failWrite(conn, t, b)
		}
		return nil, fmt.Errorf("socks5 request: %w", err)
	}
	// From here on a truncated request (EOF, or the deadline) is answered
	// too: a client that half-closed still reads the reply.
	if _, err := io.ReadFull(conn, buf[:3]); err != nil {
		return refuse(ReplyGeneralFailure, err)
	}
	if buf[0] != version5 {
		return refuse(ReplyGeneralFailure, fmt.Errorf("version 0x%02x: %w", buf[0], ErrVersion))
	}
	cmd := Command(buf[1])
	if cmd != CmdConnect && cmd != CmdUDPAssociate {
		return refuse(ReplyCommandNotSupported, fmt.Errorf("%v: %w", cmd, ErrCommand))
	}
	dst, err := readAddr(conn, buf[:])
	switch {
	case errors.Is(err, ErrAddrType):
		return refuse(ReplyAddrTypeNotSupported, err)
	case err != nil:
		return refuse(ReplyGeneralFailure, err)
	case cmd == CmdConnect && dst.Port == 0:
		return refuse(ReplyGeneralFailure, fmt.Errorf("CONNECT to port 0: %w", ErrBadAddress))
	}
	return &Request{Proto: ProtoSOCKS5, Cmd: cmd, Dst: dst, User: user}, nil
}

// authUserPass runs RFC 1929: VER 0x01 | ULEN | UNAME | PLEN | PASSWD, answered
// with VER 0x01 | STATUS; buf is scratch space of at least 256 bytes.
func authUserPass(conn net.Conn, cfg *Config, buf []byte) (string, error) {
	t := cfg.timeout()
	fail := func(err error) (string, error) {
		_ = failWrite(conn, t, []byte{authVersion, authFailure})
		return "", fmt.Errorf("socks5 authentication: %w", err)
	}
	readField := func() ([]byte, error) {
		if _, err := io.ReadFull(conn, buf[:1]); err != nil {
			return nil, err
		}
		f := buf[:buf[0]]
		_, err := io.ReadFull(conn, f)
		return f, err
	}
	if _, err := io.ReadFull(conn, buf[:1]); err != nil {
		return fail(err)
	}
	if buf[0] != authVersion {
		return fail(fmt.Errorf("sub-negotiation version 0x%02x: %w", buf[0], ErrVersion))
	}
	u, err := readField()
	if err != nil {
		return fail(err)
	}
	user := string(u)
	p, err := readField()
	if err != nil {
		return fail(err)
	}
	if !credentialsMatch(cfg, user, string(p)) {
		return fail(fmt.Errorf("user %q: %w", user, ErrAuth))
	}
	if _, err := conn.Write([]byte{authVersion, authSuccess}); err != nil {
		return "", fmt.Errorf("socks5 authentication: %w", err)
	}
	return user, nil
}

// credentialsMatch compares in constant time (for a given length), both
// fields always, so that the time taken does not tell which one was wrong.
func credentialsMatch(cfg *Config, user, pass string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(cfg.Username))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(cfg.Password))
	return u&p == 1
}

// socks5Reply encodes VER | REP | RSV | ATYP | BND.ADDR | BND.PORT.
func socks5Reply(code Reply, bound net.Addr) ([]byte, error) {
	a, err := addrFromNet(bound)
	if err != nil {
		return nil, err
	}
	return appendAddr([]byte{version5, byte(code), 0}, a)
}

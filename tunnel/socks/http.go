package socks

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// MaxHTTPHeader bounds an HTTP CONNECT request: its request line and
// headers, up to and including the blank line.
const MaxHTTPHeader = 8 << 10

// acceptHTTP reads an HTTP CONNECT request whose first byte is first.
func acceptHTTP(conn net.Conn, cfg *Config, first byte) (*Request, error) {
	t := cfg.timeout()
	refuse := func(status int, extra string, err error) (*Request, error) {
		_ = failWrite(conn, t, httpStatus(status, extra, err.Error()))
		return nil, fmt.Errorf("http connect: %w", err)
	}

	buf := make([]byte, 1, MaxHTTPHeader)
	buf[0] = first
	end := -1
	for end < 0 {
		if len(buf) == cap(buf) {
			return refuse(431, "", fmt.Errorf("over %d bytes: %w", MaxHTTPHeader, ErrHeaderTooLarge))
		}
		n, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if end = headerEnd(buf); end < 0 && err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return refuse(400, "", fmt.Errorf("header: %w", err))
		}
	}

	lines := strings.Split(string(buf[:end]), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	// The request line, then the headers, then the blank line (the last
	// two elements are the blank line and what follows its "\n").
	method, target, proto, ok := parseRequestLine(lines[0])
	switch {
	case !ok:
		return refuse(400, "", fmt.Errorf("request line %q: %w", clip(lines[0]), ErrMalformed))
	case proto != "HTTP/1.1" && proto != "HTTP/1.0":
		if strings.HasPrefix(proto, "HTTP/") {
			return refuse(505, "", fmt.Errorf("version %q: %w", clip(proto), ErrVersion))
		}
		return refuse(400, "", fmt.Errorf("request line %q: %w", clip(lines[0]), ErrMalformed))
	case method != "CONNECT":
		return refuse(405, "Allow: CONNECT\r\n", fmt.Errorf("method %q: %w", clip(method), ErrCommand))
	}
	var authz string
	for _, l := range lines[1 : len(lines)-2] {
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return refuse(400, "", fmt.Errorf("header line %q: %w", clip(l), ErrMalformed))
		}
		if strings.EqualFold(name, "Proxy-Authorization") {
			authz = strings.TrimSpace(value)
		}
	}
	dst, err := parseAuthority(target)
	if err != nil {
		return refuse(400, "", err)
	}
	var user string
	if cfg.auth() {
		var err error
		if user, err = basicAuth(cfg, authz); err != nil {
			return refuse(407, "Proxy-Authenticate: Basic realm=\"smuxtun\"\r\n", err)
		}
	}
	req := &Request{Proto: ProtoHTTP, Cmd: CmdConnect, Dst: dst, User: user}
	if end < len(buf) {
		req.rest = bytes.Clone(buf[end:])
	}
	return req, nil
}

// headerEnd returns the length of the header in b, up to and including its
// blank line ("\r\n" or a bare "\n"), or -1 if b does not hold it all.
func headerEnd(b []byte) int {
	pos := 0
	for {
		i := bytes.IndexByte(b[pos:], '\n')
		if i < 0 {
			return -1
		}
		line := b[pos : pos+i]
		pos += i + 1
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			return pos
		}
	}
}

// parseRequestLine splits "METHOD target HTTP/1.1".
func parseRequestLine(l string) (method, target, proto string, ok bool) {
	f := strings.Split(l, " ")
	if len(f) != 3 || f[0] == "" || f[1] == "" || f[2] == "" {
		return "", "", "", false
	}
	return f[0], f[1], f[2], true
}

// parseAuthority parses CONNECT's host:port (RFC 9110 §9.3.6).
func parseAuthority(s string) (Addr, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Addr{}, fmt.Errorf("target %q: %w", clip(s), ErrBadAddress)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return Addr{}, fmt.Errorf("target %q: port: %w", clip(s), ErrBadAddress)
	}
	h, err := hostFromName([]byte(host))
	if err != nil {
		return Addr{}, fmt.Errorf("target %q: %w", clip(s), err)
	}
	return Addr{Host: h, Port: uint16(p)}, nil
}

// basicAuth checks "Basic base64(user:password)" and returns the user.
func basicAuth(cfg *Config, authz string) (string, error) {
	if authz == "" {
		return "", fmt.Errorf("no Proxy-Authorization: %w", ErrAuth)
	}
	scheme, cred, _ := strings.Cut(authz, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return "", fmt.Errorf("Proxy-Authorization scheme %q: %w", clip(scheme), ErrAuth)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", fmt.Errorf("Proxy-Authorization: bad base64: %w", ErrAuth)
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok || !credentialsMatch(cfg, user, pass) {
		return "", fmt.Errorf("user %q: %w", clip(user), ErrAuth)
	}
	return user, nil
}

// httpReply is the status line (and headers) for a reply code.
func httpReply(code Reply) []byte {
	if code == ReplySucceeded {
		return []byte("HTTP/1.1 200 Connection established\r\n\r\n")
	}
	status := 502
	switch code {
	case ReplyNotAllowed:
		status = 403
	case ReplyCommandNotSupported:
		status = 405
	case ReplyAddrTypeNotSupported:
		status = 400
	case ReplyTTLExpired:
		status = 504
	}
	return httpStatus(status, "", code.String())
}

var statusText = map[int]string{
	400: "Bad Request",
	403: "Forbidden",
	405: "Method Not Allowed",
	407: "Proxy Authentication Required",
	431: "Request Header Fields Too Large",
	502: "Bad Gateway",
	504: "Gateway Timeout",
	505: "HTTP Version Not Supported",
}

// httpStatus is an error response that closes the connection, with a
// one-line plain-text body saying why; extra is more header lines, each
// ending in "\r\n".
func httpStatus(status int, extra, why string) []byte {
	body := why + "\n"
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\n"+
		"Content-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, statusText[status], extra, len(body), body)
}

// clip shortens a client-supplied string for an error message.
func clip(s string) string {
	const maxLen = 64
	if len(s) > maxLen {
		return s[:maxLen] + "..."
	}
	return s
}

package socks

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

const established = "HTTP/1.1 200 Connection established\r\n\r\n"

// TestHTTPConnect: HTTP CONNECT through the test proxy by IPv4, IPv6 and
// name, with CRLF or bare LF line ends, HTTP/1.0 or 1.1, and bytes sent
// right behind the header, which must reach the target first.
func TestHTTPConnect(t *testing.T) {
	checkGoroutines(t)
	echo4 := startEcho(t, "127.0.0.1:0")
	port4 := echo4.ln.Addr().(*net.TCPAddr).Port
	proxy := startProxy(t, Config{}, nil)
	cases := []struct {
		name   string
		target func(t *testing.T) string
		header string // %s is the target
		early  string
	}{
		{"ipv4", func(*testing.T) string { return fmt.Sprintf("127.0.0.1:%d", port4) },
			"CONNECT %s HTTP/1.1\r\nHost: %[1]s\r\nUser-Agent: test\r\n\r\n", ""},
		{"ipv6", func(t *testing.T) string {
			listenIPv6(t)
			return startEcho(t, "[::1]:0").Addr()
		}, "CONNECT %s HTTP/1.1\r\nHost: %[1]s\r\n\r\n", ""},
		{"domain", func(*testing.T) string { return fmt.Sprintf("localhost:%d", port4) },
			"CONNECT %s HTTP/1.1\r\n\r\n", ""},
		{"bare-lf", func(*testing.T) string { return fmt.Sprintf("127.0.0.1:%d", port4) },
			"CONNECT %s HTTP/1.0\nHost: %[1]s\n\n", ""},
		{"early-data", func(*testing.T) string { return fmt.Sprintf("127.0.0.1:%d", port4) },
			"CONNECT %s HTTP/1.1\r\nHost: %[1]s\r\n\r\n", "\x16\x03\x01 a TLS ClientHello, say"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn := dialProxy(t, proxy.Addr())
			mustWrite(t, conn, []byte(fmt.Sprintf(c.header, c.target(t))+c.early))
			readExactly(t, conn, []byte(established))
			rest := randomBytes(t, 64<<10)
			go func() {
				_, _ = conn.Write(rest)
				_ = conn.CloseWrite()
			}()
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			want := append([]byte(c.early), rest...)
			if sha256.Sum256(got) != sha256.Sum256(want) {
				t.Fatalf("echo: %d bytes back for %d sent, SHA-256 differs", len(got), len(want))
			}
		})
	}
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// TestHTTPAuth: Proxy-Authorization Basic with the configured credentials.
func TestHTTPAuth(t *testing.T) {
	checkGoroutines(t)
	creds := Config{Username: "alice", Password: "s3:cret"}
	cases := []struct {
		name  string
		authz string // "" sends no header
		ok    bool
	}{
		{"ok", basic("alice", "s3:cret"), true},
		{"scheme-case", strings.Replace(basic("alice", "s3:cret"), "Basic", "bAsIc", 1), true},
		{"wrong-password", basic("alice", "s3:creT"), false},
		{"wrong-user", basic("mallory", "s3:cret"), false},
		{"missing", "", false},
		{"bearer", "Bearer abc", false},
		{"bad-base64", "Basic !!!", false},
		{"no-colon", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice")), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, res := acceptPair(t, creds)
			h := "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
			if c.authz != "" {
				h += "Proxy-Authorization: " + c.authz + "\r\n"
			}
			mustWrite(t, conn, []byte(h+"\r\n"))
			_ = conn.CloseWrite() // a refusal waits for the end of the input
			if c.ok {
				r := result(t, res)
				if r.err != nil {
					t.Fatalf("Accept: %v", r.err)
				}
				if r.req.User != "alice" || r.req.Dst != (Addr{"example.com", 443}) || r.req.Proto != ProtoHTTP {
					t.Fatalf("request %+v", r.req)
				}
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != 407 || !strings.HasPrefix(resp.Header.Get("Proxy-Authenticate"), "Basic ") {
				t.Fatalf("status %d, Proxy-Authenticate %q; want 407 and a Basic challenge",
					resp.StatusCode, resp.Header.Get("Proxy-Authenticate"))
			}
			if r := result(t, res); !errors.Is(r.err, ErrAuth) {
				t.Fatalf("Accept: %v, want ErrAuth", r.err)
			}
		})
	}
}

// TestHTTPMalformed: each malformed or refused request gets its status,
// then the server closes.
func TestHTTPMalformed(t *testing.T) {
	checkGoroutines(t)
	cases := []struct {
		name    string
		cfg     Config
		in      string
		status  int // 0: no response at all
		wantErr error
	}{
		{"get", Config{}, "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", 405, ErrCommand},
		{"lowercase-method", Config{}, "connect example.com:443 HTTP/1.1\r\n\r\n", 405, ErrCommand},
		{"two-fields", Config{}, "CONNECT example.com:443\r\n\r\n", 400, ErrMalformed},
		{"double-space", Config{}, "CONNECT  example.com:443 HTTP/1.1\r\n\r\n", 400, ErrMalformed},
		{"http2", Config{}, "CONNECT example.com:443 HTTP/2.0\r\n\r\n", 505, ErrVersion},
		{"not-http", Config{}, "CONNECT example.com:443 FTP/1.1\r\n\r\n", 400, ErrMalformed},
		{"no-port", Config{}, "CONNECT example.com HTTP/1.1\r\n\r\n", 400, ErrBadAddress},
		{"port-0", Config{}, "CONNECT example.com:0 HTTP/1.1\r\n\r\n", 400, ErrBadAddress},
		{"port-65536", Config{}, "CONNECT example.com:65536 HTTP/1.1\r\n\r\n", 400, ErrBadAddress},
		{"port-name", Config{}, "CONNECT example.com:https HTTP/1.1\r\n\r\n", 400, ErrBadAddress},
		{"empty-host", Config{}, "CONNECT :443 HTTP/1.1\r\n\r\n", 400, ErrBadAddress},
		{"unbracketed-ipv6", Config{}, "CONNECT ::1:443 HTTP/1.1\r\n\r\n", 400, ErrBadAddress},
		{"zoned-ipv6", Config{}, "CONNECT [fe80::1%eth0]:443 HTTP/1.1\r\n\r\n", 400, ErrBadAddress},
		{"path", Config{}, "CONNECT http://example.com:443/ HTTP/1.1\r\n\r\n", 400, ErrBadAddress},
		{"header-no-colon", Config{}, "CONNECT example.com:443 HTTP/1.1\r\nHost example.com\r\n\r\n", 400, ErrMalformed},
		{"header-folded", Config{}, "CONNECT example.com:443 HTTP/1.1\r\nX-A: 1\r\n  2\r\n\r\n", 400, ErrMalformed},
		{"header-space-in-name", Config{}, "CONNECT example.com:443 HTTP/1.1\r\nX A: 1\r\n\r\n", 400, ErrMalformed},
		{"oversized", Config{}, "CONNECT example.com:443 HTTP/1.1\r\nX-Pad: " + strings.Repeat("a", 2*MaxHTTPHeader) + "\r\n\r\n", 431, ErrHeaderTooLarge},
		{"oversized-no-newline", Config{}, "CONNECT " + strings.Repeat("a", MaxHTTPHeader), 431, ErrHeaderTooLarge},
		{"truncated", Config{}, "CONNECT example.com:443 HTTP/1.1\r\nHost: exa", 400, io.ErrUnexpectedEOF},
		{"disabled", Config{DisableHTTP: true}, "CONNECT example.com:443 HTTP/1.1\r\n\r\n", 0, ErrVersion},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, res := acceptPair(t, c.cfg)
			mustWrite(t, conn, []byte(c.in))
			// Complete or not, the input ends here; a refusal waits for that.
			_ = conn.CloseWrite()
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("read until the server closes: %v (after %q)", err, got)
			}
			if c.status == 0 {
				if len(got) != 0 {
					t.Fatalf("server sent %q, want nothing", got)
				}
			} else {
				resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
				if err != nil {
					t.Fatalf("response %q: %v", got, err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != c.status || !resp.Close {
					t.Fatalf("status %d close %v, want %d and close (%q)", resp.StatusCode, resp.Close, c.status, got)
				}
				t.Logf("%s: %s", resp.Status, bytes.TrimSpace(body))
			}
			r := result(t, res)
			if !errors.Is(r.err, c.wantErr) {
				t.Fatalf("Accept: %v, want %v", r.err, c.wantErr)
			}
		})
	}
}

// TestHTTPReply: each reply code becomes its HTTP status.
func TestHTTPReply(t *testing.T) {
	checkGoroutines(t)
	cases := []struct {
		code   Reply
		status int
	}{
		{ReplySucceeded, 200},
		{ReplyNotAllowed, 403},
		{ReplyCommandNotSupported, 405},
		{ReplyAddrTypeNotSupported, 400},
		{ReplyTTLExpired, 504},
		{ReplyConnectionRefused, 502},
		{ReplyHostUnreachable, 502},
		{ReplyNetworkUnreachable, 502},
		{ReplyGeneralFailure, 502},
	}
	for _, c := range cases {
		t.Run(c.code.String(), func(t *testing.T) {
			conn, res := acceptPair(t, Config{})
			mustWrite(t, conn, []byte("CONNECT example.com:443 HTTP/1.1\r\n\r\n"))
			r := result(t, res)
			if r.err != nil {
				t.Fatalf("Accept: %v", r.err)
			}
			if c.code != ReplySucceeded {
				// A refusal waits for the client's end of stream.
				_ = conn.CloseWrite()
			}
			if err := r.req.Reply(c.code, nil); err != nil {
				t.Fatalf("Reply: %v", err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
		})
	}
}

// TestHTTPDialFailure: a refused CONNECT through the test proxy is a 502.
func TestHTTPDialFailure(t *testing.T) {
	checkGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	proxy := startProxy(t, Config{}, nil)
	conn := dialProxy(t, proxy.Addr())
	mustWrite(t, conn, []byte("CONNECT "+closed+" HTTP/1.1\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 502 || !strings.Contains(string(body), "refused") {
		t.Fatalf("status %d body %q, want 502 connection refused", resp.StatusCode, body)
	}
}

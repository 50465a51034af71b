package socks

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// DefaultTimeout bounds a handshake when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Config is the server side's settings.
type Config struct {
	// Username and Password, when either is set, are required from every
	// client: SOCKS5 username/password authentication (RFC 1929), or HTTP
	// "Proxy-Authorization: Basic". A SOCKS5 client that offers only no-auth
	// is then refused (method 0xFF). Both empty: no authentication.
	Username, Password string

	// Timeout bounds the handshake, from the first byte read to the
	// request, and then the writing of the reply. Zero means
	// DefaultTimeout; a negative value leaves the connection's deadlines to
	// the caller (but for the second-long wait after a refusal).
	Timeout time.Duration

	// DisableHTTP refuses HTTP CONNECT: only SOCKS5 is spoken.
	DisableHTTP bool
}

func (c *Config) auth() bool { return c.Username != "" || c.Password != "" }

func (c *Config) timeout() time.Duration {
	if c.Timeout == 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Request is a client's request, read by Accept and not yet answered.
type Request struct {
	Proto Proto
	Cmd   Command // CmdConnect or CmdUDPAssociate (SOCKS5 only)
	// Dst is the target of a CONNECT. For a UDP ASSOCIATE it is the address
	// the client expects to send its datagrams from, often 0.0.0.0:0 or
	// [::]:0 (unknown).
	Dst Addr
	// User is the authenticated username, "" without authentication.
	User string

	conn    net.Conn
	timeout time.Duration
	rest    []byte // HTTP: what the client sent after its header
	replied bool
}

// Accept reads a client's greeting, authenticates it and reads its request,
// the first byte telling the protocol: 0x05 is SOCKS5, an ASCII letter an
// HTTP request line. It answers every malformed or refused exchange itself
// (with the reply code or HTTP status the protocol has for it, if any) and
// returns an error; the caller then closes conn. After a refusal Accept
// half-closes conn and reads what the client still sends for up to a
// second, so that the refusal is not lost to a reset. On success the caller
// answers with Request.Reply.
//
// Accept sets conn's deadline to Timeout from now and clears it before
// returning a request.
func Accept(conn net.Conn, cfg Config) (*Request, error) {
	t := cfg.timeout()
	if t > 0 {
		if err := conn.SetDeadline(time.Now().Add(t)); err != nil {
			return nil, fmt.Errorf("set deadline: %w", err)
		}
	}
	var first [1]byte
	if _, err := io.ReadFull(conn, first[:]); err != nil {
		return nil, fmt.Errorf("read greeting: %w", err)
	}
	var (
		req *Request
		err error
	)
	switch b := first[0]; {
	case b == version5:
		req, err = acceptSOCKS5(conn, &cfg)
	case isLetter(b) && !cfg.DisableHTTP:
		req, err = acceptHTTP(conn, &cfg, b)
	case b == version4:
		// VN 0, CD rejected, then DSTPORT and DSTIP, ignored by clients.
		_ = failWrite(conn, t, []byte{0, socks4Rejected, 0, 0, 0, 0, 0, 0})
		err = fmt.Errorf("socks4 client: %w", ErrVersion)
	default:
		// No answer: the client speaks a protocol we do not know.
		_ = failWrite(conn, t, nil)
		err = fmt.Errorf("first byte 0x%02x: %w", b, ErrVersion)
	}
	if err != nil {
		return nil, err
	}
	req.conn, req.timeout = conn, t
	if t > 0 {
		if err := conn.SetDeadline(time.Time{}); err != nil {
			return nil, fmt.Errorf("clear deadline: %w", err)
		}
	}
	return req, nil
}

func isLetter(b byte) bool { return 'A' <= b && b <= 'Z' || 'a' <= b && b <= 'z' }

// Reply answers the request, once. For SOCKS5, bound is BND.ADDR/BND.PORT:
// nil (0.0.0.0:0) for a CONNECT through the tunnel, whose bound address is
// at the server's end; for a UDP ASSOCIATE, the address of the UDP socket
// the client is to send its datagrams to. For HTTP, bound is ignored and
// the code becomes a status: ReplySucceeded "200 Connection established",
// ReplyNotAllowed 403, ReplyCommandNotSupported 405,
// ReplyAddrTypeNotSupported 400, ReplyTTLExpired 504, any other 502.
//
// A failure reply half-closes conn and reads what the client still sends
// for up to a second (as Accept does after a refusal); the caller then
// closes conn. After success the caller carries the client's bytes through
// Request.Conn (for a UDP ASSOCIATE, the association lasts until the TCP
// connection closes). A bound address that does not encode is an error and
// leaves the request unanswered.
func (r *Request) Reply(code Reply, bound net.Addr) error {
	if r.replied {
		return ErrReplied
	}
	var b []byte
	switch r.Proto {
	case ProtoHTTP:
		b = httpReply(code)
	default:
		var err error
		if b, err = socks5Reply(code, bound); err != nil {
			return fmt.Errorf("socks5 reply: %w", err)
		}
	}
	r.replied = true
	if code != ReplySucceeded {
		if err := failWrite(r.conn, r.timeout, b); err != nil {
			return fmt.Errorf("%s reply: %w", r.Proto, err)
		}
		return nil
	}
	if r.timeout > 0 {
		if err := r.conn.SetWriteDeadline(time.Now().Add(r.timeout)); err != nil {
			return fmt.Errorf("set deadline: %w", err)
		}
	}
	if _, err := r.conn.Write(b); err != nil {
		return fmt.Errorf("%s reply: %w", r.Proto, err)
	}
	if r.timeout > 0 {
		if err := r.conn.SetWriteDeadline(time.Time{}); err != nil {
			return fmt.Errorf("clear deadline: %w", err)
		}
	}
	return nil
}

// Conn returns the connection that carries the client's bytes after a
// successful Reply: the one given to Accept, or, when an HTTP client sent
// bytes right after its request header, a wrapper that reads those first.
func (r *Request) Conn() net.Conn {
	if len(r.rest) == 0 {
		return r.conn
	}
	return &prefixConn{Conn: r.conn, prefix: r.rest}
}

// prefixConn reads prefix before the connection's own bytes.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the underlying connection when it can, so that a
// pipe passes the end of the stream on.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// ReplyFor returns the reply code that describes a dial error: refused,
// network or host unreachable (a failed name lookup and a timeout count as
// host unreachable), else a general failure; nil is success.
func ReplyFor(err error) Reply {
	var (
		dnsErr *net.DNSError
		netErr net.Error
	)
	switch {
	case err == nil:
		return ReplySucceeded
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReplyConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return ReplyNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ETIMEDOUT),
		errors.As(err, &dnsErr),
		errors.As(err, &netErr) && netErr.Timeout():
		return ReplyHostUnreachable
	}
	return ReplyGeneralFailure
}

// lingerMax bounds how long and how much a refused client is read from
// after its refusal.
const (
	lingerMax   = time.Second
	lingerBytes = 64 << 10
)

// failWrite writes a refusal, then half-closes and reads (and drops) what
// the client still sends, for a moment: closing a socket with unread input
// makes the kernel send a reset, which can destroy the refusal before the
// client reads it. A handshake's deadline may have passed, so the write
// gets a fresh one. It returns the write's error; in a failed handshake
// that is of no use, the handshake's own error says what went wrong.
func failWrite(conn net.Conn, t time.Duration, b []byte) error {
	wt := t
	if wt <= 0 || wt > lingerMax {
		wt = lingerMax
	}
	_ = conn.SetWriteDeadline(time.Now().Add(wt))
	if _, err := conn.Write(b); err != nil {
		return err
	}
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return nil
	}
	_ = conn.SetReadDeadline(time.Now().Add(wt))
	_, _ = io.CopyN(io.Discard, conn, lingerBytes)
	return nil
}

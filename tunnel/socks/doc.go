// Package socks is the server side of SOCKS5 (RFC 1928, with RFC 1929
// username/password authentication) and of HTTP CONNECT, both on one
// listener, for smuxtun-client's --socks. It speaks the handshake only: the
// caller connects the target (through the tunnel) and carries the bytes.
//
// # Use
//
//	req, err := socks.Accept(conn, cfg) // handshake, up to the request
//	if err != nil { conn.Close(); return } // already answered if it could be
//	switch req.Cmd {
//	case socks.CmdConnect: // req.Dst is the target, a name kept as a name
//		target, err := dial(req.Dst.String())
//		if err != nil {
//			req.Reply(socks.ReplyFor(err), nil) // or ReplyNotAllowed, ...
//			conn.Close(); return
//		}
//		req.Reply(socks.ReplySucceeded, nil)
//		pipe(req.Conn(), target)
//	case socks.CmdUDPAssociate: // SOCKS5 only
//		req.Reply(socks.ReplySucceeded, udpConn.LocalAddr())
//		// relay with ParseUDPDatagram / AppendUDPDatagram until conn closes
//	}
//
// # Protocol
//
// The first byte tells the protocol: 0x05 is SOCKS5, an ASCII letter starts
// an HTTP request line (unless Config.DisableHTTP), 0x04 (SOCKS4) gets
// SOCKS4's "rejected" reply, anything else is closed without an answer.
//
// SOCKS5: the server picks no-auth (0x00), or username/password (0x02) when
// Config has credentials; a greeting that does not offer the one it needs,
// zero methods included, gets 0xFF. A failed RFC 1929 sub-negotiation gets
// status 0x01. Requests: CONNECT and UDP ASSOCIATE; BIND and unknown
// commands get 0x07, an unknown address type 0x08, a request with the wrong
// version, an empty or non-printable domain name, a CONNECT to port 0 or a
// truncated address 0x01. A domain name that is an IP literal is taken as
// the IP address (one with an IPv6 zone is refused). The reply's own codes are the caller's (Request.Reply,
// ReplyFor).
//
// HTTP: "CONNECT host:port HTTP/1.1" (or 1.0) and headers, at most
// MaxHTTPHeader bytes in all (431 beyond), lines ending in CRLF or LF. With
// credentials, "Proxy-Authorization: Basic" must carry them (407
// otherwise). A method other than CONNECT gets 405, a malformed request or
// target 400, another HTTP version 505; each error response closes the
// connection. Bytes the client sends after its header are kept for
// Request.Conn.
//
// A refusal, by Accept or by a failure Reply, half-closes the connection
// and reads what the client still sends for up to a second before the
// caller closes it, so that a reset does not destroy the refusal.
//
// UDP: each datagram between the client and its relay carries RFC 1928
// §7's header (ParseUDPDatagram, AppendUDPDatagram). Fragments (FRAG != 0)
// are not reassembled; they are dropped.
//
// # Bounds
//
// Every handshake runs under a deadline (Config.Timeout) and reads at most
// MaxHTTPHeader bytes (HTTP) or a few hundred (SOCKS5); nothing from the
// network panics. Errors wrap the package's sentinel errors (ErrAuth,
// ErrCommand, ...) or the connection's own (io.ErrUnexpectedEOF, a
// net.Error timeout).
package socks

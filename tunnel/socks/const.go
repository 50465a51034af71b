package socks

import (
	"errors"
	"fmt"
)

// Wire constants of RFC 1928 (SOCKS5) and RFC 1929 (username/password).
const (
	version5    = 0x05 // SOCKS5, in the greeting, the request and every reply
	version4    = 0x04 // SOCKS4, refused with a SOCKS4 "rejected" reply
	authVersion = 0x01 // the username/password sub-negotiation

	methodNoAuth       = 0x00
	methodUserPass     = 0x02
	methodNoAcceptable = 0xFF

	authSuccess = 0x00
	authFailure = 0x01

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04

	// socks4Rejected is SOCKS4's "request rejected or failed" (0x5B).
	socks4Rejected = 0x5B
)

// Command is the CMD field of a SOCKS5 request.
type Command byte

// The commands of RFC 1928 §4. An HTTP CONNECT request is a CmdConnect.
const (
	CmdConnect      Command = 0x01
	CmdBind         Command = 0x02 // always refused with ReplyCommandNotSupported
	CmdUDPAssociate Command = 0x03
)

func (c Command) String() string {
	switch c {
	case CmdConnect:
		return "CONNECT"
	case CmdBind:
		return "BIND"
	case CmdUDPAssociate:
		return "UDP ASSOCIATE"
	}
	return fmt.Sprintf("command 0x%02x", byte(c))
}

// Reply is the REP field of a SOCKS5 reply (RFC 1928 §6). For an HTTP
// CONNECT request it is translated to a status code (see Request.Reply).
type Reply byte

// The reply codes of RFC 1928 §6.
const (
	ReplySucceeded            Reply = 0x00
	ReplyGeneralFailure       Reply = 0x01
	ReplyNotAllowed           Reply = 0x02 // connection not allowed by ruleset
	ReplyNetworkUnreachable   Reply = 0x03
	ReplyHostUnreachable      Reply = 0x04
	ReplyConnectionRefused    Reply = 0x05
	ReplyTTLExpired           Reply = 0x06
	ReplyCommandNotSupported  Reply = 0x07
	ReplyAddrTypeNotSupported Reply = 0x08
)

func (r Reply) String() string {
	switch r {
	case ReplySucceeded:
		return "succeeded"
	case ReplyGeneralFailure:
		return "general SOCKS server failure"
	case ReplyNotAllowed:
		return "connection not allowed by ruleset"
	case ReplyNetworkUnreachable:
		return "network unreachable"
	case ReplyHostUnreachable:
		return "host unreachable"
	case ReplyConnectionRefused:
		return "connection refused"
	case ReplyTTLExpired:
		return "TTL expired"
	case ReplyCommandNotSupported:
		return "command not supported"
	case ReplyAddrTypeNotSupported:
		return "address type not supported"
	}
	return fmt.Sprintf("reply 0x%02x", byte(r))
}

// Proto says which protocol a client spoke.
type Proto uint8

// The protocols Accept understands.
const (
	ProtoSOCKS5 Proto = iota + 1
	ProtoHTTP
)

func (p Proto) String() string {
	switch p {
	case ProtoSOCKS5:
		return "socks5"
	case ProtoHTTP:
		return "http"
	}
	return fmt.Sprintf("proto %d", uint8(p))
}

// Errors returned by Accept, Request.Reply and the UDP codec; they come
// wrapped with context, so test for them with errors.Is.
var (
	// ErrVersion: the client spoke neither SOCKS5 nor HTTP (or SOCKS4, or a
	// SOCKS5 message carried the wrong version number).
	ErrVersion = errors.New("unsupported protocol version")
	// ErrNoAcceptableMethod: the client offered no authentication method the
	// server accepts (none at all, or no-auth when a password is required).
	ErrNoAcceptableMethod = errors.New("no acceptable authentication method")
	// ErrAuth: wrong username or password.
	ErrAuth = errors.New("authentication failed")
	// ErrCommand: a command other than CONNECT or UDP ASSOCIATE (over HTTP: a
	// method other than CONNECT).
	ErrCommand = errors.New("command not supported")
	// ErrAddrType: an address type other than IPv4, IPv6 or domain name.
	ErrAddrType = errors.New("address type not supported")
	// ErrBadAddress: an empty, oversized or otherwise malformed host name,
	// or port 0 as a CONNECT target.
	ErrBadAddress = errors.New("malformed address")
	// ErrMalformed: an HTTP request that does not parse.
	ErrMalformed = errors.New("malformed request")
	// ErrHeaderTooLarge: an HTTP request header over MaxHTTPHeader bytes.
	ErrHeaderTooLarge = errors.New("request header too large")
	// ErrReplied: Reply was called a second time.
	ErrReplied = errors.New("request already answered")
	// ErrTruncated: a UDP datagram shorter than its header.
	ErrTruncated = errors.New("truncated datagram")
	// ErrFragmented: a UDP datagram with FRAG != 0; fragments are not
	// reassembled, the caller drops the datagram (RFC 1928 §7 allows it).
	ErrFragmented = errors.New("fragmented datagram")
)

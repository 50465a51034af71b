package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
)

// ErrInvalid is wrapped by every *FieldError.
var ErrInvalid = errors.New("invalid setting")

// ErrUnsupported is wrapped by the *FieldError for a kcptun feature smuxtun
// does not implement yet.
var ErrUnsupported = errors.New("not supported yet")

// FieldError reports one bad setting: the JSON key (which is also the flag
// name), the offending value and what would have been accepted.
type FieldError struct {
	Key    string
	Value  any
	Reason string
	err    error
}

func (e *FieldError) Error() string {
	if e.Value == nil {
		return e.Key + ": " + e.Reason
	}
	v := e.Value
	if s, ok := v.(string); ok {
		v = fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%s %v: %s", e.Key, v, e.Reason)
}

// Unwrap lets callers test for ErrInvalid, ErrUnsupported, ErrBadAddress or
// ErrUnknownMode with errors.Is.
func (e *FieldError) Unwrap() []error {
	if e.err != nil {
		return []error{ErrInvalid, e.err}
	}
	return []error{ErrInvalid}
}

func fieldErr(key string, value any, format string, args ...any) *FieldError {
	return &FieldError{Key: key, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// Limits of the numeric settings. They come from the layers below: kcp-go
// (MTU, windows carried in a 16-bit header field, Reed-Solomon shard count),
// the smux frame header (16-bit length) and time.Duration's range.
const (
	MinMTU       = 64
	MaxMTU       = 1500
	MaxWindow    = 65535
	MaxShards    = 256
	MaxDSCP      = 63
	MaxBuffer    = 1 << 30
	MaxFrameSize = 65535
	MaxConn      = 65535
	MaxSeconds   = 365 * 24 * 3600
	MinInterval  = 10
	MaxInterval  = 5000
	MaxRateLimit = math.MaxInt32
	MaxKeepAlive = 3600
	MaxQPPCount  = 65535
)

// listSep separates the valid names listed in an error.
const listSep = ", "

// cipherNames must match crypt.Names; config stays free of that import and a
// test keeps the two lists in step.
var cipherNames = []string{
	"aes", "aes-128", "aes-192", "aes-128-gcm", "salsa20", "blowfish", "twofish",
	"cast5", "3des", "tea", "xtea", "sm4", "xor", "none", "null",
}

// Ciphers returns the cipher names Validate accepts.
func Ciphers() []string { return slices.Clone(cipherNames) }

// checker collects the first error; later checks are skipped so exactly one
// line reaches the operator.
type checker struct{ err error }

func (c *checker) fail(e *FieldError) {
	if c.err == nil {
		c.err = e
	}
}

func (c *checker) intRange(key string, v, min, max int, hint string) {
	if c.err == nil && (v < min || v > max) {
		c.fail(fieldErr(key, v, "out of range: must be %d..%d%s", min, max, hint))
	}
}

func (c *checker) oneOf(key, v string, valid []string, sentinel error) {
	if c.err == nil && !slices.Contains(valid, v) {
		e := fieldErr(key, v, "unknown %s (valid: %s)", key, strings.Join(valid, listSep))
		e.err = sentinel
		c.fail(e)
	}
}

func (c *checker) addr(key, v string, check func(string) error) {
	if c.err != nil {
		return
	}
	if err := check(v); err != nil {
		e := fieldErr(key, v, "%v", err)
		e.err = ErrBadAddress
		c.fail(e)
	}
}

// ErrUnknownCipher is wrapped by the *FieldError for an unknown crypt name.
var ErrUnknownCipher = errors.New("unknown cipher")

// validate checks the settings both ends share.
func (s *Common) validate(c *checker) {
	if c.err == nil && s.Key == "" {
		c.fail(fieldErr("key", nil, "missing: give a pre-shared key (--key, $SMUXTUN_KEY or $KCPTUN_KEY); there is no built-in default"))
	}
	c.oneOf("crypt", s.Crypt, cipherNames, ErrUnknownCipher)
	c.oneOf("mode", s.Mode, Modes(), ErrUnknownMode)
	c.oneOf("transport", s.Transport, []string{TransportKCP, TransportTCP}, nil)
	if c.err == nil && s.TCP && s.Transport == TransportTCP {
		// --tcp dresses KCP's packets as TCP segments; transport "tcp" has no
		// KCP packets to dress.
		c.fail(fieldErr("tcp", nil, "kcptun's --tcp carries KCP inside raw TCP packets and cannot be combined with transport \"tcp\"; use one or the other"))
	}
	c.intRange("mtu", s.MTU, MinMTU, MaxMTU, " (kcp-go's packet limit)")
	c.intRange("sndwnd", s.SndWnd, 1, MaxWindow, " packets")
	c.intRange("rcvwnd", s.RcvWnd, 1, MaxWindow, " packets")
	c.intRange("datashard", s.DataShard, 0, MaxShards, " (0 disables FEC)")
	c.intRange("parityshard", s.ParityShard, 0, MaxShards, " (0 disables FEC)")
	if c.err == nil && s.DataShard+s.ParityShard > MaxShards {
		c.fail(fieldErr("parityshard", s.ParityShard, "datashard + parityshard = %d exceeds %d", s.DataShard+s.ParityShard, MaxShards))
	}
	c.intRange("dscp", s.DSCP, 0, MaxDSCP, "")
	if s.Mode == ModeManual {
		c.intRange("nodelay", s.NoDelay, 0, 1, "")
		c.intRange("interval", s.Interval, MinInterval, MaxInterval, " milliseconds")
		c.intRange("resend", s.Resend, 0, math.MaxInt32, " (0 disables fast resend)")
		c.intRange("nc", s.NoCongestion, 0, 1, "")
	}
	c.intRange("ratelimit", s.RateLimit, 0, MaxRateLimit, " bytes per second (0 = unlimited)")
	c.intRange("sockbuf", s.SockBuf, 1, MaxBuffer, " bytes")
	c.intRange("smuxver", s.SmuxVer, 1, 2, "")
	c.intRange("smuxbuf", s.SmuxBuf, 1, MaxBuffer, " bytes")
	c.intRange("framesize", s.FrameSize, 1, MaxFrameSize, " bytes")
	c.intRange("streambuf", s.StreamBuf, 1, MaxBuffer, " bytes")
	if c.err == nil && s.StreamBuf > s.SmuxBuf {
		c.fail(fieldErr("streambuf", s.StreamBuf, "must not exceed smuxbuf (%d)", s.SmuxBuf))
	}
	c.intRange("maxstreams", s.MaxStreams, 0, math.MaxInt32, " (0 = no cap)")
	c.intRange("keepalive", s.KeepAlive, 1, MaxKeepAlive, " seconds")
	c.intRange("closewait", s.CloseWait, 0, MaxSeconds, " seconds")
	c.intRange("snmpperiod", s.SnmpPeriod, 0, MaxSeconds, " seconds")
	if c.err == nil && s.SnmpLog != "" && s.SnmpPeriod == 0 {
		c.fail(fieldErr("snmpperiod", s.SnmpPeriod, "must be at least 1 second when snmplog is set"))
	}
	if s.QPP {
		c.intRange("qpp-count", s.QPPCount, 1, MaxQPPCount, qppCountHint)
	} else {
		c.intRange("qpp-count", s.QPPCount, 0, MaxQPPCount, "")
	}
	c.addr("pprofaddr", s.PprofAddr, func(a string) error {
		if err := checkHostPort(a, true, false); err != nil {
			return err
		}
		if host, _, _ := net.SplitHostPort(a); !isLoopback(host) {
			return fmt.Errorf("host %q is not a loopback address (profiling data must not leave the machine)", host)
		}
		return nil
	})
	c.addr("metrics", s.Metrics, func(a string) error { _, err := MetricsListenAddr(a); return err })
}

// Validate checks every field and returns the first problem as a *FieldError
// naming the key, the value and the allowed range.
func (c *Client) Validate() error {
	var ch checker
	if c.LocalListen() != "" || !c.Listens() {
		ch.addr("localaddr", c.LocalAddr, func(a string) error { return checkEndpoint(a, false, true) })
	}
	if _, err := ParseForwards(c.Forward); err != nil {
		ch.fail(err.(*FieldError))
	}
	if c.Socks != "" {
		ch.addr("socks", c.Socks, func(a string) error { return checkForwardAddr(a, false) })
	}
	ch.intRange("udptimeout", c.UDPTimeout, 1, MaxSeconds, " seconds")
	ch.addr("remoteaddr", c.RemoteAddr, func(a string) error {
		host, _, _, err := splitAddrRange(a, false)
		if err == nil && host == "" {
			err = errors.New("missing host")
		}
		return err
	})
	c.Common.validate(&ch)
	ch.intRange("conn", c.Conn, 1, MaxConn, "")
	ch.intRange("autoexpire", c.AutoExpire, 0, MaxSeconds, " seconds (0 = never)")
	// kcptun documents -1 as "never close an expired session by force".
	ch.intRange("scavengettl", c.ScavengeTTL, -1, MaxSeconds, " seconds (-1 = wait for the streams)")
	return ch.err
}

// Validate checks every field and returns the first problem as a *FieldError
// naming the key, the value and the allowed range.
func (s *Server) Validate() error {
	var ch checker
	ch.addr("listen", s.Listen, func(a string) error {
		_, _, _, err := splitAddrRange(a, true)
		return err
	})
	ch.addr("target", s.Target, func(a string) error { return checkEndpoint(a, true, false) })
	if _, err := ParseAllowList(s.Allow); err != nil {
		ch.fail(err.(*FieldError))
	}
	ch.intRange("udptimeout", s.UDPTimeout, 1, MaxSeconds, " seconds")
	s.Common.validate(&ch)
	return ch.err
}

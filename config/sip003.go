package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// SIP003 (https://shadowsocks.org/doc/sip003.html) lets a shadowsocks
// client or server start smuxtun as its plugin: the plugin is told where
// to listen and where to connect by four environment variables, and gets
// its options in a fifth. The shadowsocks client (ss-local) talks to the
// plugin client on SS_LOCAL, which carries the bytes to SS_REMOTE, where
// the plugin server listens and hands them to the shadowsocks server
// (ss-server) on its SS_LOCAL.

// The SIP003 environment variables.
const (
	EnvRemoteHost    = "SS_REMOTE_HOST"
	EnvRemotePort    = "SS_REMOTE_PORT"
	EnvLocalHost     = "SS_LOCAL_HOST"
	EnvLocalPort     = "SS_LOCAL_PORT"
	EnvPluginOptions = "SS_PLUGIN_OPTIONS"
)

// ErrPlugin is wrapped by every error about the SIP003 variables.
var ErrPlugin = errors.New("SIP003 plugin mode")

// Plugin holds what SIP003 plugin mode tells a binary.
type Plugin struct {
	// Remote is SS_REMOTE_HOST:SS_REMOTE_PORT: the client dials it, the
	// server listens on it. An IPv6 host is in brackets.
	Remote string
	// Local is SS_LOCAL_HOST:SS_LOCAL_PORT: the client listens on it, the
	// server's target.
	Local string
	// Options come from SS_PLUGIN_OPTIONS, in their order.
	Options []PluginOption
}

// PluginOption is one key=value of SS_PLUGIN_OPTIONS. Name is a flag name
// without dashes (crypt, mode, nocomp, ...); a key without a value is a
// boolean flag set to "true".
type PluginOption struct {
	Name  string
	Value string
}

// Arg returns the option as a command-line argument, --name=value, which
// works for boolean flags too.
func (o PluginOption) Arg() string { return "--" + o.Name + "=" + o.Value }

// PluginFromEnv reads the SIP003 variables through getenv (os.Getenv in
// the binaries; an empty variable counts as unset). It returns nil and no
// error when none of them is set: the binary is not running as a plugin.
// When some are set but not all four addresses, or a port is not 1..65535,
// or SS_PLUGIN_OPTIONS does not parse, the error wraps ErrPlugin and names
// the variable.
func PluginFromEnv(getenv func(string) string) (*Plugin, error) {
	vars := []string{EnvRemoteHost, EnvRemotePort, EnvLocalHost, EnvLocalPort}
	var set, missing []string
	for _, v := range vars {
		if getenv(v) == "" {
			missing = append(missing, v)
		} else {
			set = append(set, v)
		}
	}
	opts := getenv(EnvPluginOptions)
	if len(set) == 0 && opts == "" {
		return nil, nil
	}
	if len(missing) > 0 {
		if len(set) == 0 {
			set = []string{EnvPluginOptions}
		}
		return nil, fmt.Errorf("%w: %s not set, but %s %s; a shadowsocks plugin gets all four of %s",
			ErrPlugin, strings.Join(missing, ", "), strings.Join(set, ", "), isAre(len(set)), strings.Join(vars, ", "))
	}
	remote, err := pluginAddr(getenv, EnvRemoteHost, EnvRemotePort)
	if err != nil {
		return nil, err
	}
	local, err := pluginAddr(getenv, EnvLocalHost, EnvLocalPort)
	if err != nil {
		return nil, err
	}
	options, err := ParsePluginOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %q: %w", ErrPlugin, EnvPluginOptions, opts, err)
	}
	return &Plugin{Remote: remote, Local: local, Options: options}, nil
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// pluginAddr joins a host and a port variable into host:port.
func pluginAddr(getenv func(string) string, hostVar, portVar string) (string, error) {
	host, port := getenv(hostVar), getenv(portVar)
	if _, err := parsePort(port, false); err != nil {
		return "", fmt.Errorf("%w: %s %q: %w", ErrPlugin, portVar, port, err)
	}
	bracketed := len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']'
	if bracketed {
		host = host[1 : len(host)-1]
	}
	// An IPv6 host may come with or without brackets; anything else in
	// brackets is refused by checkHost.
	if err := checkHost(host, bracketed || strings.Contains(host, ":"), true); err != nil {
		return "", fmt.Errorf("%w: %s %q: %w", ErrPlugin, hostVar, getenv(hostVar), err)
	}
	return net.JoinHostPort(host, port), nil
}

// ClientArgs returns the client's command line in plugin mode:
// --localaddr=Local, --remoteaddr=Remote, then the options. An option may
// not set those two itself.
func (p *Plugin) ClientArgs() ([]string, error) {
	return p.args([]string{"localaddr", "l", "remoteaddr", "r"}, "--localaddr="+p.Local, "--remoteaddr="+p.Remote)
}

// ServerArgs returns the server's command line in plugin mode:
// --listen=Remote, --target=Local, then the options. An option may not
// set those two itself.
func (p *Plugin) ServerArgs() ([]string, error) {
	return p.args([]string{"listen", "l", "target", "t"}, "--listen="+p.Remote, "--target="+p.Local)
}

func (p *Plugin) args(owned []string, addrs ...string) ([]string, error) {
	out := addrs
	for _, o := range p.Options {
		for _, name := range owned {
			if o.Name == name {
				return nil, fmt.Errorf("%w: %s: option %q cannot be set in plugin mode: the SS_* addresses set it", ErrPlugin, EnvPluginOptions, o.Name)
			}
		}
		out = append(out, o.Arg())
	}
	return out, nil
}

// ParsePluginOptions reads SS_PLUGIN_OPTIONS: options separated by ';',
// each key=value or a bare key (value "true"). A backslash escapes the
// next character, which must be ';', '=' or '\'; any other escape, or a
// backslash at the end, is an error rather than a guess, so that a
// Windows path is not silently mangled. The value runs to the next
// unescaped ';' and may hold '='. A key is a flag name: a letter or digit,
// then letters, digits, '-' and '_'. One ';' at the very end is ignored;
// any other empty key is an error. Repeated keys are kept in order (a
// repeatable flag such as forward takes each).
func ParsePluginOptions(s string) ([]PluginOption, error) {
	var out []PluginOption
	for i := 0; i < len(s); {
		start := i
		key, n, stop, err := unescapeUntil(s[i:], "=;")
		if err != nil {
			return nil, fmt.Errorf("at byte %d: %w", i+n, err)
		}
		i += n
		value := "true"
		if stop == '=' {
			i++
			var vn int
			value, vn, _, err = unescapeUntil(s[i:], ";")
			if err != nil {
				return nil, fmt.Errorf("at byte %d: %w", i+vn, err)
			}
			i += vn
		}
		if err := checkOptionName(key); err != nil {
			return nil, fmt.Errorf("option %q (at byte %d): %w", s[start:i], start, err)
		}
		out = append(out, PluginOption{Name: key, Value: value})
		i++ // the ';', or past the end
	}
	return out, nil
}

// unescapeUntil reads s up to the first unescaped byte in stops and
// returns the unescaped text, how many bytes of s it took, and the stop
// byte found (0 at the end of s). On error n is where the bad escape is.
func unescapeUntil(s, stops string) (text string, n int, stop byte, err error) {
	var b strings.Builder
	for n < len(s) {
		c := s[n]
		switch {
		case c == '\\':
			if n+1 == len(s) {
				return "", n, 0, errors.New(`unterminated escape: a backslash at the end (write \\ for a backslash)`)
			}
			next := s[n+1]
			if next != ';' && next != '=' && next != '\\' {
				return "", n, 0, fmt.Errorf(`unknown escape: a backslash before %q; only \;, \= and \\ are escapes (write \\ for a backslash)`, rune(next))
			}
			b.WriteByte(next)
			n += 2
		case strings.IndexByte(stops, c) >= 0:
			return b.String(), n, c, nil
		default:
			b.WriteByte(c)
			n++
		}
	}
	return b.String(), n, 0, nil
}

// checkOptionName accepts a flag name without dashes.
func checkOptionName(k string) error {
	if k == "" {
		return errors.New("empty option name")
	}
	// shadowsocks-android adds __android_vpn in VPN mode and expects the
	// plugin to hand every socket it opens to the VPN service to be
	// protected; a plugin that ignores it sends its own packets back into
	// the VPN. smuxtun cannot do that, so it says so instead.
	if k == "__android_vpn" {
		return errors.New("set by shadowsocks-android for its VPN mode, which smuxtun does not support (it cannot protect its sockets from the VPN); use proxy-only mode")
	}
	if c := k[0]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
		return fmt.Errorf("option name %q must start with a letter or digit (flag names go without dashes, e.g. crypt=aes-128)", k)
	}
	for i := 1; i < len(k); i++ {
		if !isNameByte(k[i]) {
			return fmt.Errorf("option name %q has the character %q; want a flag name such as crypt or nocomp", k, rune(k[i]))
		}
	}
	return nil
}

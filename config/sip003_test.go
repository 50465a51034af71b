package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// env returns a getenv over a map.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func pluginEnv(remoteHost, remotePort, localHost, localPort, options string) map[string]string {
	return map[string]string{
		EnvRemoteHost: remoteHost, EnvRemotePort: remotePort,
		EnvLocalHost: localHost, EnvLocalPort: localPort,
		EnvPluginOptions: options,
	}
}

func TestPluginFromEnvNotAPlugin(t *testing.T) {
	p, err := PluginFromEnv(env(nil))
	if p != nil || err != nil {
		t.Errorf("PluginFromEnv(no variables) = %+v, %v; want nil, nil", p, err)
	}
	p, err = PluginFromEnv(env(pluginEnv("", "", "", "", "")))
	if p != nil || err != nil {
		t.Errorf("PluginFromEnv(empty variables) = %+v, %v; want nil, nil", p, err)
	}
}

func TestPluginFromEnv(t *testing.T) {
	tests := []struct {
		name                 string
		vars                 map[string]string
		remote, local        string
		clientArgs, servArgs []string
	}{
		{
			name:       "ss-local",
			vars:       pluginEnv("vps.example.com", "8388", "127.0.0.1", "41234", "key=it's a secret;crypt=aes-128;mode=fast2;nocomp"),
			remote:     "vps.example.com:8388",
			local:      "127.0.0.1:41234",
			clientArgs: []string{"--localaddr=127.0.0.1:41234", "--remoteaddr=vps.example.com:8388", "--key=it's a secret", "--crypt=aes-128", "--mode=fast2", "--nocomp=true"},
			servArgs:   []string{"--listen=vps.example.com:8388", "--target=127.0.0.1:41234", "--key=it's a secret", "--crypt=aes-128", "--mode=fast2", "--nocomp=true"},
		},
		{
			name:       "IPv6 hosts, no options",
			vars:       pluginEnv("::", "8388", "[::1]", "41234", ""),
			remote:     "[::]:8388",
			local:      "[::1]:41234",
			clientArgs: []string{"--localaddr=[::1]:41234", "--remoteaddr=[::]:8388"},
			servArgs:   []string{"--listen=[::]:8388", "--target=[::1]:41234"},
		},
		{
			name:       "escapes",
			vars:       pluginEnv("0.0.0.0", "1", "127.0.0.1", "65535", `key=a\;b\=c\\d;forward=127.0.0.1:1=h:1;forward=127.0.0.1:2=h:2`),
			remote:     "0.0.0.0:1",
			local:      "127.0.0.1:65535",
			clientArgs: []string{"--localaddr=127.0.0.1:65535", "--remoteaddr=0.0.0.0:1", `--key=a;b=c\d`, "--forward=127.0.0.1:1=h:1", "--forward=127.0.0.1:2=h:2"},
			servArgs:   []string{"--listen=0.0.0.0:1", "--target=127.0.0.1:65535", `--key=a;b=c\d`, "--forward=127.0.0.1:1=h:1", "--forward=127.0.0.1:2=h:2"},
		},
	}
	for _, tt := range tests {
		p, err := PluginFromEnv(env(tt.vars))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if p.Remote != tt.remote || p.Local != tt.local {
			t.Errorf("%s: remote %q local %q; want %q %q", tt.name, p.Remote, p.Local, tt.remote, tt.local)
		}
		if args, err := p.ClientArgs(); err != nil || !slices.Equal(args, tt.clientArgs) {
			t.Errorf("%s: ClientArgs() = %q, %v; want %q", tt.name, args, err, tt.clientArgs)
		}
		if args, err := p.ServerArgs(); err != nil || !slices.Equal(args, tt.servArgs) {
			t.Errorf("%s: ServerArgs() = %q, %v; want %q", tt.name, args, err, tt.servArgs)
		}
	}
}

func TestPluginFromEnvErrors(t *testing.T) {
	const opts = "key=x"
	tests := []struct {
		name   string
		vars   map[string]string
		reason string
	}{
		{"local missing", pluginEnv("vps", "8388", "", "", opts),
			"SS_LOCAL_HOST, SS_LOCAL_PORT not set, but SS_REMOTE_HOST, SS_REMOTE_PORT are"},
		{"one missing", pluginEnv("vps", "8388", "127.0.0.1", "", ""),
			"SS_LOCAL_PORT not set, but SS_REMOTE_HOST, SS_REMOTE_PORT, SS_LOCAL_HOST are"},
		{"only one set", pluginEnv("", "8388", "", "", ""),
			"SS_REMOTE_HOST, SS_LOCAL_HOST, SS_LOCAL_PORT not set, but SS_REMOTE_PORT is"},
		{"only options", pluginEnv("", "", "", "", opts),
			"SS_REMOTE_HOST, SS_REMOTE_PORT, SS_LOCAL_HOST, SS_LOCAL_PORT not set, but SS_PLUGIN_OPTIONS is"},
		{"port not a number", pluginEnv("vps", "http", "127.0.0.1", "1", opts), `SS_REMOTE_PORT "http": port "http" is not a number`},
		{"port 0", pluginEnv("vps", "8388", "127.0.0.1", "0", opts), `SS_LOCAL_PORT "0": port 0 out of range`},
		{"port too big", pluginEnv("vps", "65536", "127.0.0.1", "1", opts), `SS_REMOTE_PORT "65536"`},
		{"port with space", pluginEnv("vps", " 8388", "127.0.0.1", "1", opts), `SS_REMOTE_PORT " 8388"`},
		{"bad host", pluginEnv("bad host", "8388", "127.0.0.1", "1", opts), `SS_REMOTE_HOST "bad host": host "bad host" is not a valid host name`},
		{"bad IPv6", pluginEnv("vps", "8388", "::1::2", "1", opts), `SS_LOCAL_HOST "::1::2"`},
		{"IPv4 in brackets", pluginEnv("vps", "8388", "[127.0.0.1]", "1", opts), `SS_LOCAL_HOST "[127.0.0.1]"`},
		{"options", pluginEnv("vps", "8388", "127.0.0.1", "1", "key=x;;mode=fast"), `SS_PLUGIN_OPTIONS "key=x;;mode=fast": option "" (at byte 6): empty option name`},
	}
	for _, tt := range tests {
		p, err := PluginFromEnv(env(tt.vars))
		if err == nil {
			t.Errorf("%s: PluginFromEnv = %+v, want an error", tt.name, p)
			continue
		}
		if !errors.Is(err, ErrPlugin) || !strings.HasPrefix(err.Error(), "SIP003 plugin mode: ") || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("%s: error %q, want ErrPlugin mentioning %q", tt.name, err, tt.reason)
		}
	}
}

func TestPluginArgsOwnedByTheAddresses(t *testing.T) {
	for _, tt := range []struct {
		option         string
		client, server bool // whether ClientArgs, ServerArgs accept it
	}{
		{"remoteaddr=x:1", false, true},
		{"localaddr=x:1", false, true},
		{"r=x:1", false, true},
		{"l=:1", false, false},
		{"listen=:1", true, false},
		{"target=x:1", true, false},
		{"t=x:1", true, false},
		{"crypt=none", true, true},
	} {
		p, err := PluginFromEnv(env(pluginEnv("vps", "1", "127.0.0.1", "2", tt.option)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.ClientArgs(); (err == nil) != tt.client || err != nil && !errors.Is(err, ErrPlugin) {
			t.Errorf("ClientArgs with %q: %v", tt.option, err)
		}
		if _, err := p.ServerArgs(); (err == nil) != tt.server || err != nil && !strings.Contains(err.Error(), "cannot be set in plugin mode") {
			t.Errorf("ServerArgs with %q: %v", tt.option, err)
		}
	}
}

func TestParsePluginOptions(t *testing.T) {
	good := []struct {
		in   string
		want []PluginOption
	}{
		{"", nil},
		{"key=abc;crypt=aes-128;mode=fast2;nocomp", []PluginOption{{"key", "abc"}, {"crypt", "aes-128"}, {"mode", "fast2"}, {"nocomp", "true"}}},
		{`key=a\;b\=c\\d`, []PluginOption{{"key", `a;b=c\d`}}},
		{`key=\\`, []PluginOption{{"key", `\`}}},
		{"key=a=b", []PluginOption{{"key", "a=b"}}},
		{"key=", []PluginOption{{"key", ""}}},
		{"key= spaced value ", []PluginOption{{"key", " spaced value "}}},
		{"a=1;", []PluginOption{{"a", "1"}}},
		{"nocomp;", []PluginOption{{"nocomp", "true"}}},
		{"nocomp=false", []PluginOption{{"nocomp", "false"}}},
		{"forward=1.2.3.4:1=h:1;forward=:2=h:2", []PluginOption{{"forward", "1.2.3.4:1=h:1"}, {"forward", ":2=h:2"}}},
		{"qpp-count=61;QPP;ds=10;x_y=1", []PluginOption{{"qpp-count", "61"}, {"QPP", "true"}, {"ds", "10"}, {"x_y", "1"}}},
	}
	for _, tt := range good {
		got, err := ParsePluginOptions(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParsePluginOptions(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}

	bad := []struct{ in, reason string }{
		{";", `option "" (at byte 0): empty option name`},
		{"a=1;;b=2", `option "" (at byte 4): empty option name`},
		{"a=1;;", "empty option name"},
		{"=v", `option "=v" (at byte 0): empty option name`},
		{"a=1;=v", "empty option name"},
		{`a=1\`, `at byte 3: unterminated escape`},
		{`a\`, `at byte 1: unterminated escape`},
		{`log=C:\logs\x.log`, `at byte 6: unknown escape: a backslash before 'l'`},
		{`n\ocomp`, `unknown escape: a backslash before 'o'`},
		{"a=\\\n", `a backslash before '\n'`},
		{"--key=x", "must start with a letter or digit"},
		{"-k=x", "must start with a letter or digit"},
		{"__android_vpn", `option "__android_vpn" (at byte 0): set by shadowsocks-android for its VPN mode, which smuxtun does not support`},
		{"key=x;__android_vpn;mode=fast2", `option "__android_vpn" (at byte 6)`},
		{"__other", `option name "__other" must start with a letter or digit`},
		{"key x=1", `option name "key x" has the character ' '`},
		{`k\=ey=v`, `option name "k=ey" has the character '='`},
		{"k\u00e9y=v", "has the character"},
		{"a=1;b\n=2", `has the character '\n'`},
	}
	for _, tt := range bad {
		got, err := ParsePluginOptions(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.reason) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParsePluginOptions(%q) = %q, %v; want an error mentioning %q", tt.in, got, err, tt.reason)
		}
	}
}

// escapeOption escapes a key or value as SS_PLUGIN_OPTIONS wants it.
func escapeOption(s string) string {
	return strings.NewReplacer(`\`, `\\`, ";", `\;`, "=", `\=`).Replace(s)
}

func FuzzPluginOptions(f *testing.F) {
	for _, s := range []string{
		"", "key=abc;crypt=aes-128;mode=fast2;nocomp", `key=a\;b\=c\\d`, "a=1;", ";", "=", `\`, `a=\x`,
		"forward=127.0.0.1:1=h:1;forward=:2/udp=h:2", "a=1;;b", "k\x00=\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		opts, err := ParsePluginOptions(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		parts := make([]string, len(opts))
		for i, o := range opts {
			if checkOptionName(o.Name) != nil {
				t.Fatalf("%q: accepted option name %q", s, o.Name)
			}
			if arg := o.Arg(); !strings.HasPrefix(arg, "--"+o.Name+"=") || strings.HasPrefix(o.Name, "-") {
				t.Fatalf("%q: Arg() = %q", s, arg)
			}
			parts[i] = escapeOption(o.Name) + "=" + escapeOption(o.Value)
		}
		again := strings.Join(parts, ";")
		back, err := ParsePluginOptions(again)
		if err != nil || !slices.Equal(back, opts) {
			t.Fatalf("%q parsed to %q; re-escaped as %q it parses to %q, %v", s, opts, again, back, err)
		}
	})
}

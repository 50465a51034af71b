package app

import (
	"bytes"
	"context"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pluginEnv returns a getenv for the four SIP003 addresses plus opts.
func pluginEnv(opts string, extra ...string) func(string) string {
	vars := map[string]string{
		"SS_REMOTE_HOST": "192.0.2.1", "SS_REMOTE_PORT": "8388",
		"SS_LOCAL_HOST": "127.0.0.1", "SS_LOCAL_PORT": "1984",
		"SS_PLUGIN_OPTIONS": opts,
	}
	for i := 0; i+1 < len(extra); i += 2 {
		vars[extra[i]] = extra[i+1]
	}
	return func(k string) string { return vars[k] }
}

func TestPluginArgs(t *testing.T) {
	noEnv := func(string) string { return "" }
	tests := []struct {
		name   string
		kind   Kind
		getenv func(string) string
		args   []string
		want   []string
	}{
		{"not a plugin", Client, noEnv, []string{"c", "-l", ":1"}, []string{"c", "-l", ":1"}},
		{"client", Client, pluginEnv("key=secret;crypt=aes-128;mode=fast2;nocomp"), []string{"c"},
			[]string{"c", "--localaddr=127.0.0.1:1984", "--remoteaddr=192.0.2.1:8388", "--key=secret", "--crypt=aes-128", "--mode=fast2", "--nocomp=true"}},
		{"server", Server, pluginEnv("key=secret;ds=5;ps=2"), []string{"s"},
			[]string{"s", "--listen=192.0.2.1:8388", "--target=127.0.0.1:1984", "--key=secret", "--ds=5", "--ps=2"}},
		{"no options", Server, pluginEnv(""), []string{"s"},
			[]string{"s", "--listen=192.0.2.1:8388", "--target=127.0.0.1:1984"}},
		{"IPv6 hosts", Client, pluginEnv("", "SS_REMOTE_HOST", "2001:db8::1", "SS_LOCAL_HOST", "::1"), []string{"c"},
			[]string{"c", "--localaddr=[::1]:1984", "--remoteaddr=[2001:db8::1]:8388"}},
		{"config file as an option", Client, pluginEnv("config=/etc/smuxtun/client.json"), []string{"c"},
			[]string{"c", "--localaddr=127.0.0.1:1984", "--remoteaddr=192.0.2.1:8388", "--config=/etc/smuxtun/client.json"}},
		// Flags on the command line come after, so that a positional
		// argument (help) does not end the parse before the plugin's flags.
		{"command-line flags kept", Client, pluginEnv("key=secret"), []string{"c", "--log", "/tmp/c.log", "-c", "f.json", "help"},
			[]string{"c", "--localaddr=127.0.0.1:1984", "--remoteaddr=192.0.2.1:8388", "--key=secret", "--log", "/tmp/c.log", "-c", "f.json", "help"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBinary(tt.kind)
			got, err := b.pluginArgs(tt.args, tt.getenv)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("pluginArgs(%q) = %q, %v; want %q", tt.args, got, err, tt.want)
			}
			if (b.plugin != nil) != (tt.name != "not a plugin") {
				t.Errorf("plugin mode recorded: %v", b.plugin != nil)
			}
		})
	}
}

// TestPluginModeErrors runs Main in plugin mode with what a user can get
// wrong and checks the exit code and the one line on stderr.
func TestPluginModeErrors(t *testing.T) {
	t.Setenv(envKey, "")
	t.Setenv(envKcptunKey, "")
	tests := []struct {
		name   string
		kind   Kind
		getenv func(string) string
		args   []string
		want   []string
	}{
		{"unknown option", Client, pluginEnv("key=k;turbo=1"), nil,
			[]string{"SS_PLUGIN_OPTIONS", `unknown option "turbo"`, "flag names"}},
		{"not a number", Server, pluginEnv("key=k;mtu=big"), nil,
			[]string{"SS_PLUGIN_OPTIONS", "option mtu=big", "not a valid value for --mtu"}},
		{"not a boolean", Client, pluginEnv("key=k;nocomp=maybe"), nil,
			[]string{"SS_PLUGIN_OPTIONS", "option nocomp=maybe"}},
		{"invalid cipher", Client, pluginEnv("key=k;crypt=rc4"), nil,
			[]string{"SS_PLUGIN_OPTIONS", `option crypt "rc4"`, "unknown crypt"}},
		{"out of range, by alias", Server, pluginEnv("key=k;ds=300"), nil,
			[]string{"SS_PLUGIN_OPTIONS", "option ds 300"}},
		{"no key", Client, pluginEnv("crypt=aes"), nil, []string{"key", "missing"}},
		{"does not parse", Client, pluginEnv(`key=k;log=C:\x`), nil,
			[]string{"SS_PLUGIN_OPTIONS", "unknown escape"}},
		{"address option", Server, pluginEnv("key=k;target=127.0.0.1:22"), nil,
			[]string{"SS_PLUGIN_OPTIONS", `option "target" cannot be set in plugin mode`}},
		{"given twice", Client, pluginEnv("key=k;mode=fast;mode=fast3"), nil,
			[]string{"SS_PLUGIN_OPTIONS", "option mode is given twice"}},
		{"android VPN mode", Client, pluginEnv("key=k;__android_vpn"), nil,
			[]string{"SS_PLUGIN_OPTIONS", `"__android_vpn"`, "VPN mode, which smuxtun does not support"}},
		{"missing variable", Client, pluginEnv("key=k", "SS_LOCAL_PORT", ""), nil,
			[]string{"SS_LOCAL_PORT not set"}},
		{"only the options", Server, pluginEnv("key=k", "SS_REMOTE_HOST", "", "SS_REMOTE_PORT", "", "SS_LOCAL_HOST", "", "SS_LOCAL_PORT", ""), nil,
			[]string{"SS_REMOTE_HOST, SS_REMOTE_PORT, SS_LOCAL_HOST, SS_LOCAL_PORT not set, but SS_PLUGIN_OPTIONS is"}},
		{"bad port", Server, pluginEnv("key=k", "SS_REMOTE_PORT", "99999"), nil,
			[]string{`SS_REMOTE_PORT "99999"`}},
		{"flag in both places", Client, pluginEnv("key=k;crypt=aes"), []string{"--crypt", "salsa20"},
			[]string{"--crypt is given both on the command line and as crypt in SS_PLUGIN_OPTIONS"}},
		{"alias in both places", Server, pluginEnv("key=k;datashard=5"), []string{"-ds=4"},
			[]string{"--ds is given both on the command line and as datashard in SS_PLUGIN_OPTIONS"}},
		{"address flag", Client, pluginEnv("key=k"), []string{"-r", "10.0.0.1:4000"},
			[]string{"-r is given on the command line", "SS_REMOTE_HOST and SS_REMOTE_PORT set it"}},
		{"unknown flag on the command line", Client, pluginEnv("key=k"), []string{"--turbo"},
			[]string{"unknown flag -turbo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{tt.kind.Name()}, tt.args...)
			code := mainEnv(tt.kind, "", "", args, tt.getenv, &stdout, &stderr)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") || !strings.HasPrefix(out, tt.kind.Name()+": ") {
				t.Errorf("want one line starting with %q on stderr, got %q", tt.kind.Name()+": ", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("stderr %q does not contain %q", out, w)
				}
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout: %q", stdout.String())
			}
		})
	}
}

func TestPluginContextEndsWithTheParent(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the parent is not watched on Windows")
	}
	var ppid atomic.Int64
	ppid.Store(4242)
	getppid := func() int { return int(ppid.Load()) }

	b := newBinary(Client)
	if _, err := b.pluginArgs([]string{"c"}, pluginEnv("key=k")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := b.pluginContext(getppid, time.Millisecond)
	defer cancel()
	select {
	case <-ctx.Done():
		t.Fatal("ended while the parent is there")
	case <-time.After(50 * time.Millisecond):
	}
	ppid.Store(1) // reparented to init: the parent exited
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("still running 5 s after the parent went away")
	}
	if got := shutdownReason(ctx); len(got) != 2 || got[1] != errParentGone.Error() {
		t.Errorf("shutdownReason = %q, want the parent named", got)
	}

	// Not a plugin: nothing watches the parent.
	ctx, cancel = newBinary(Client).pluginContext(func() int { panic("getppid called outside plugin mode") }, time.Millisecond)
	defer cancel()
	time.Sleep(20 * time.Millisecond)
	if ctx.Err() != nil || shutdownReason(ctx) != nil {
		t.Errorf("outside plugin mode the context ended: %v", context.Cause(ctx))
	}
	cancel()
	if shutdownReason(ctx) != nil {
		t.Errorf("a plain cancel gives reason %q", shutdownReason(ctx))
	}
}

func TestHelpNamesPluginMode(t *testing.T) {
	for _, kind := range []Kind{Client, Server} {
		var stdout, stderr bytes.Buffer
		if code := mainEnv(kind, "", "", []string{kind.Name(), "--help"}, func(string) string { return "" }, &stdout, &stderr); code != exitOK {
			t.Fatalf("%s --help: exit %d, stderr %q", kind.Name(), code, stderr.String())
		}
		for _, want := range []string{"SIP003 plugin", "$SS_REMOTE_HOST", "$SS_PLUGIN_OPTIONS", "key=...;crypt=aes-128;mode=fast2"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("%s --help does not say %q", kind.Name(), want)
			}
		}
	}
}

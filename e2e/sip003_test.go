package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// TestSIP003ShadowsocksLibev runs both binaries as shadowsocks plugins under
// Debian's shadowsocks-libev, the way a user sets it up: ss-server starts
// smuxtun-server, ss-local starts smuxtun-client, each with --plugin-opts,
// and curl fetches a file through ss-local's SOCKS5 port. The body must
// arrive intact (SHA-256), each plugin must say it runs in plugin mode, and
// no plugin process may outlive its shadowsocks parent.
//
// The IPv6 variant has shadowsocks hand the plugins an IPv6 literal
// (SS_REMOTE_HOST=::1), which they must bracket.
func TestSIP003ShadowsocksLibev(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("finds the plugin processes through /proc")
	}
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			if host == "::1" {
				ln, err := net.ListenPacket("udp", "[::1]:0")
				if err != nil {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				ln.Close()
			}
			testShadowsocksLibev(t, host)
		})
	}
}

func testShadowsocksLibev(t *testing.T, host string) {
	ssServer, ssLocal, curl := lookPath(t, "ss-server"), lookPath(t, "ss-local"), lookPath(t, "curl")

	// Private copies of the binaries: any process running one of them was
	// started by this test, even while other tests run theirs.
	dir := t.TempDir()
	server := copyBinary(t, demo.ServerBinary, dir)
	client := copyBinary(t, demo.ClientBinary, dir)
	t.Cleanup(func() { killPlugins(t, dir) })

	body := make([]byte, 4<<20+1234)
	rand.Read(body)
	want := sha256.Sum256(body)
	web := serveFile(t, "/file", body)

	ssPort := freeUDPPort(t, host) // smuxtun-server listens there
	socksPort := freePort(t, "tcp")
	password := demo.GenerateKey()
	opts := "key=" + demo.GenerateKey() + ";crypt=aes-128;mode=fast2"
	common := []string{"-s", host, "-p", strconv.Itoa(ssPort), "-k", password, "-m", "chacha20-ietf-poly1305", "-v"}
	ssrv := startShadowsocks(t, "ss-server", ssServer, append(common, "--plugin", server, "--plugin-opts", opts)...)
	sloc := startShadowsocks(t, "ss-local", ssLocal, append(common, "-b", "127.0.0.1", "-l", strconv.Itoa(socksPort), "--plugin", client, "--plugin-opts", opts)...)

	plugins := waitPlugins(t, dir, 2, 10*time.Second, ssrv, sloc)
	t.Logf("plugins running: %v", plugins)

	got := fetchThroughSocks(t, curl, socksPort, web+"/file", 60*time.Second, ssrv, sloc)
	if len(got) != len(body) || sha256.Sum256(got) != want {
		t.Fatalf("fetched %d bytes with SHA-256 %x; want %d bytes with %s", len(got), sha256.Sum256(got), len(body), hex.EncodeToString(want[:]))
	}

	// Each plugin's log reaches its parent's stderr: one line says plugin
	// mode and where it listens.
	remote := net.JoinHostPort(host, strconv.Itoa(ssPort))
	for _, c := range []struct {
		p    *demo.Proc
		line string
		rest string
	}{
		{ssrv, `msg="SIP003 plugin mode" listen=` + remote + " target=", ""},
		{sloc, `msg="SIP003 plugin mode" listen=`, " remote=" + remote},
	} {
		if out := c.p.Output(); strings.Count(out, `msg="SIP003 plugin mode"`) != 1 || !strings.Contains(out, c.line) || !strings.Contains(out, c.rest) {
			t.Errorf("%s's plugin does not log one plugin-mode line with %q%s:\n%s", c.p.Name, c.line, c.rest, c.p.Describe())
		}
	}

	// Stopping shadowsocks stops its plugin.
	for _, p := range []*demo.Proc{sloc, ssrv} {
		if err := p.Stop(5 * time.Second); err != nil {
			t.Errorf("stop %v\n%s", err, p.Describe())
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(pluginPids(t, dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := pluginPids(t, dir); len(left) > 0 {
		t.Errorf("plugin processes %v still run 5 s after ss-local and ss-server exited", left)
	}
}

// TestSIP003InvalidOptions runs each binary as a plugin with an option it
// does not have, an invalid value and the Android VPN key, and expects what
// shadowsocks shows its user: exit status 2 and one line naming
// SS_PLUGIN_OPTIONS and the option.
func TestSIP003InvalidOptions(t *testing.T) {
	tests := []struct {
		name, opts string
		want       []string
	}{
		{"unknown option", "key=k;turbo", []string{`unknown option "turbo"`}},
		{"invalid value", "key=k;crypt=rc4", []string{`option crypt "rc4"`}},
		{"not a number", "key=k;mtu=big", []string{"option mtu=big"}},
		{"android VPN mode", "key=k;__android_vpn", []string{`"__android_vpn"`, "VPN mode"}},
	}
	for _, name := range []string{demo.ServerBinary, demo.ClientBinary} {
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				env := append(os.Environ(), "SS_REMOTE_HOST=127.0.0.1", "SS_REMOTE_PORT=8388",
					"SS_LOCAL_HOST=127.0.0.1", "SS_LOCAL_PORT=1984", "SS_PLUGIN_OPTIONS="+tt.opts)
				code, stderr := runBounded(t, demo.BinaryPath(binDir, name), env, 10*time.Second)
				if code != 2 {
					t.Errorf("exit status %d, want 2; stderr %q", code, stderr)
				}
				if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") || !strings.HasPrefix(stderr, name+": ") {
					t.Errorf("want one line starting with %q, got %q", name+": ", stderr)
				}
				for _, w := range append([]string{"SS_PLUGIN_OPTIONS"}, tt.want...) {
					if !strings.Contains(stderr, w) {
						t.Errorf("stderr %q does not contain %q", stderr, w)
					}
				}
			})
		}
	}
}

// TestSIP003InvalidOptionsUnderShadowsocks: ss-server started with a
// mistake in --plugin-opts stops by itself, and its output shows the
// plugin's one line naming the option.
func TestSIP003InvalidOptionsUnderShadowsocks(t *testing.T) {
	ssServer := lookPath(t, "ss-server")
	dir := t.TempDir()
	server := copyBinary(t, demo.ServerBinary, dir)
	t.Cleanup(func() { killPlugins(t, dir) })
	p := startShadowsocks(t, "ss-server", ssServer, "-s", "127.0.0.1", "-p", strconv.Itoa(freePort(t, "udp")),
		"-k", demo.GenerateKey(), "-m", "chacha20-ietf-poly1305", "--plugin", server, "--plugin-opts", "key=k;crypt=aes;turbo")
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("ss-server still runs 10 s after its plugin was given a bad option:\n%s", p.Describe())
	}
	line := demo.ServerBinary + `: SIP003 plugin mode: SS_PLUGIN_OPTIONS: unknown option "turbo"`
	if p.ExitCode() == 0 || strings.Count(p.Output(), demo.ServerBinary+":") != 1 || !strings.Contains(p.Output(), line) {
		t.Errorf("want a non-zero exit and the plugin's one line %q in the output:\n%s", line, p.Describe())
	}
}

// TestSIP003PluginExitsWithShadowsocks kills ss-server or ss-local outright
// (SIGKILL: no chance to stop its plugin) and expects the plugin to notice
// and exit within 5 s, saying why, instead of holding its port for no one.
func TestSIP003PluginExitsWithShadowsocks(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("finds the plugin processes through /proc")
	}
	for _, tt := range []struct{ ss, plugin string }{{"ss-server", demo.ServerBinary}, {"ss-local", demo.ClientBinary}} {
		t.Run(tt.ss, func(t *testing.T) {
			ss := lookPath(t, tt.ss)
			dir := t.TempDir()
			plugin := copyBinary(t, tt.plugin, dir)
			t.Cleanup(func() { killPlugins(t, dir) })
			args := []string{"-s", "127.0.0.1", "-p", strconv.Itoa(freePort(t, "udp")), "-k", demo.GenerateKey(),
				"-m", "chacha20-ietf-poly1305", "--plugin", plugin, "--plugin-opts", "key=" + demo.GenerateKey()}
			if tt.ss == "ss-local" {
				args = append(args, "-b", "127.0.0.1", "-l", strconv.Itoa(freePort(t, "tcp")))
			}
			p := startShadowsocks(t, tt.ss, ss, args...)
			waitPlugins(t, dir, 1, 10*time.Second, p)
			// The plugin notes its parent before it logs; a parent killed
			// within the plugin's first milliseconds goes unnoticed.
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(p.Output(), `msg="SIP003 plugin mode"`) {
				if time.Now().After(deadline) {
					t.Fatalf("no plugin-mode line within 10 s:\n%s", p.Describe())
				}
				time.Sleep(20 * time.Millisecond)
			}
			// Only the parent: a kill of the process group would take the
			// plugin along.
			if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			deadline = time.Now().Add(5 * time.Second)
			for len(pluginPids(t, dir)) > 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if left := pluginPids(t, dir); len(left) > 0 {
				t.Fatalf("plugin %v still runs 5 s after %s was killed", left, tt.ss)
			}
			// The plugin held the output pipe open too; once it is gone the
			// output is complete.
			select {
			case <-p.Done():
			case <-time.After(5 * time.Second):
				t.Fatalf("%s's output still open 5 s after its plugin exited", tt.ss)
			}
			want := `msg=stopped reason="the shadowsocks process that started the plugin has exited"`
			if !strings.Contains(p.Output(), want) {
				t.Errorf("the plugin's log lacks %q:\n%s", want, p.Describe())
			}
		})
	}
}

// lookPath returns the path of a program the test needs, or skips the test.
func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (apt-get install shadowsocks-libev curl): %v", name, err)
	}
	return p
}

func copyBinary(t *testing.T, name, dir string) string {
	t.Helper()
	b, err := os.ReadFile(demo.BinaryPath(binDir, name))
	if err != nil {
		t.Fatal(err)
	}
	p := demo.BinaryPath(dir, name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	p, err := demo.FreePort(network)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// freeUDPPort returns a UDP port of host that is free at the time of the
// call.
func freeUDPPort(t *testing.T, host string) int {
	t.Helper()
	c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// serveFile serves body at path on 127.0.0.1 until the test ends and
// returns the base URL.
func serveFile(t *testing.T, path string, body []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "file", time.Time{}, bytes.NewReader(body))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// startShadowsocks starts ss-server or ss-local; the test's cleanup kills it
// and everything in its process group (its plugin included).
func startShadowsocks(t *testing.T, name, path string, args ...string) *demo.Proc {
	t.Helper()
	p, err := demo.StartProc(name, path, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-p.Pid(), syscall.SIGKILL)
		p.Kill()
		if t.Failed() {
			t.Log(p.Describe())
		}
	})
	return p
}

// pluginPids returns the processes that run a binary in dir.
func pluginPids(t *testing.T, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue // gone, or not ours to read
		}
		if filepath.Dir(strings.TrimSuffix(exe, " (deleted)")) == dir && !isZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isZombie reports whether pid has exited but is not yet reaped.
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// killPlugins kills whatever still runs a binary in dir, failing the test
// if anything did.
func killPlugins(t *testing.T, dir string) {
	t.Helper()
	for _, pid := range pluginPids(t, dir) {
		t.Errorf("plugin process %d outlived the test; killing it", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// waitPlugins waits until n plugin processes run from dir and returns their
// ids; it fails the test if a shadowsocks process exits first.
func waitPlugins(t *testing.T, dir string, n int, limit time.Duration, parents ...*demo.Proc) []int {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		pids := pluginPids(t, dir)
		if len(pids) == n {
			return pids
		}
		for _, p := range parents {
			if p.Exited() {
				t.Fatalf("%s exited before its plugin ran:\n%s", p.Name, p.Describe())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d plugin processes after %s, want %d", len(pids), limit, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fetchThroughSocks fetches url with curl through the SOCKS5 port, retrying
// while the chain starts, for at most limit.
func fetchThroughSocks(t *testing.T, curl string, socksPort int, url string, limit time.Duration, procs ...*demo.Proc) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "body")
	deadline := time.Now().Add(limit)
	for attempt := 1; ; attempt++ {
		for _, p := range procs {
			if p.Exited() {
				t.Fatalf("%s exited:\n%s", p.Name, p.Describe())
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("curl through 127.0.0.1:%d did not fetch %s within %s", socksPort, url, limit)
		}
		// A refused or cut connection while the chain starts is retried;
		// a transfer that stalls is a failure.
		ctx, cancel := context.WithTimeout(context.Background(), left)
		cmd := exec.CommandContext(ctx, curl, "--silent", "--show-error", "--fail", "--max-time", "20",
			"--socks5-hostname", fmt.Sprintf("127.0.0.1:%d", socksPort), "--output", out, url)
		msg, err := cmd.CombinedOutput()
		cancel()
		if err == nil {
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("fetched %d bytes on attempt %d", len(b), attempt)
			return b
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("run curl: %v", err)
		}
		if exit.ExitCode() == 28 {
			t.Fatalf("curl attempt %d stalled: %s", attempt, strings.TrimSpace(string(msg)))
		}
		t.Logf("curl attempt %d: %v: %s", attempt, err, strings.TrimSpace(string(msg)))
		time.Sleep(200 * time.Millisecond)
	}
}

// runBounded runs bin without arguments in env and returns its exit status
// and stderr; it fails the test if bin runs longer than limit.
func runBounded(t *testing.T, bin string, env []string, limit time.Duration) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s still running after %s:\n%s", bin, limit, stderr.String())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

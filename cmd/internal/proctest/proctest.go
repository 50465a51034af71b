// Package proctest runs the smuxtun binaries as real processes for the tests
// in cmd/client and cmd/server: it builds them once, runs them with a clean
// environment and a deadline, and checks what an operator would see.
package proctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is stamped into the binaries Build produces.
const Version = "v0.0.0-proctest"

// BuiltCommit is the commit the toolchain recorded in the binaries Build
// produced, or "" if unknown (no git checkout, or HEAD moved during the build).
var BuiltCommit string

// Build compiles each package (a path relative to the module root, such as
// "./cmd/client") into dir under the given name, stamping Version. It is
// meant for TestMain, so it returns an error instead of failing a test.
func Build(dir string, pkgs map[string]string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-ldflags", "-X main.version=" + Version}
	head := HeadCommit(root)
	if head != "" {
		// Record the commit even where GOFLAGS says -buildvcs=false.
		args = append(args, "-buildvcs=true")
	}
	for name, pkg := range pkgs {
		cmd := exec.Command("go", append(args, "-o", filepath.Join(dir, name), pkg)...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	if HeadCommit(root) == head {
		BuiltCommit = head
	}
	return nil
}

// HeadCommit returns the commit checked out in the git repository holding
// dir, or "" outside a repository (a source archive, say).
func HeadCommit(dir string) string {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// ModuleRoot returns the directory holding go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(mod), nil
}

// Env returns the current environment without the variables that would feed
// the binaries a key, plus extra ("NAME=value").
func Env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KCPTUN_KEY=") || strings.HasPrefix(kv, "SMUXTUN_KEY=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// Result is what a finished process left behind.
type Result struct {
	Stdout, Stderr string
	Code           int           // exit code; -1 if killed
	Elapsed        time.Duration // from start to exit
}

// Run runs bin with args and env and waits for it to exit; a process still
// running after limit is killed and fails the test.
func Run(t *testing.T, limit time.Duration, bin string, env []string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String(), Elapsed: time.Since(start), Code: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		t.Fatalf("%s %q did not exit within %s; stderr:\n%s", filepath.Base(bin), args, limit, r.Stderr)
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run %s: %v", bin, err)
	}
	return r
}

// RunRefused runs an invocation that must be refused at once and fails the
// test unless it exits within limit. On a shared machine the first exec of a
// fresh binary can stall, so one slow run is retried before it counts.
func RunRefused(t *testing.T, limit time.Duration, bin string, env []string, args ...string) Result {
	t.Helper()
	r := Run(t, 10*limit, bin, env, args...)
	if r.Elapsed > limit {
		t.Logf("took %s to exit, retrying once", r.Elapsed)
		r = Run(t, 10*limit, bin, env, args...)
		if r.Elapsed > limit {
			t.Errorf("took %s to exit, want under %s", r.Elapsed, limit)
		}
	}
	return r
}

// CheckOneLineError fails the test unless r is a non-zero exit with exactly
// one line on stderr that contains every string in want, and no sign of a
// panic or of the help text.
func CheckOneLineError(t *testing.T, r Result, want ...string) {
	t.Helper()
	if r.Code <= 0 {
		t.Errorf("exit code %d, want > 0; stderr: %q", r.Code, r.Stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.Stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasSuffix(r.Stderr, "\n") {
		t.Errorf("want exactly one line on stderr, got %d:\n%s", len(lines), r.Stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.Stderr, w) {
			t.Errorf("stderr %q does not mention %q", r.Stderr, w)
		}
	}
	for _, bad := range []string{"panic", "goroutine ", "GLOBAL OPTIONS", "USAGE:"} {
		if strings.Contains(r.Stderr+r.Stdout, bad) {
			t.Errorf("output contains %q:\nstdout: %s\nstderr: %s", bad, r.Stdout, r.Stderr)
		}
	}
}

// Proc is a binary running in the background.
type Proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

// lockedWriter lets the test read stderr while the process writes it.
type lockedWriter struct{ p *Proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.stderr.Write(b)
}

// Start runs bin in the background; the process is killed when the test ends.
func Start(t *testing.T, bin string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stderr = lockedWriter{p}
	p.cmd.Stdout = lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// Output returns what the process has written to stdout and stderr so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and returns the exit code, or fails the test if the
// process is still running after limit.
func (p *Proc) Stop(t *testing.T, limit time.Duration) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !p.Exited() {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		t.Fatalf("still running %s after SIGTERM; output:\n%s", limit, p.Output())
		return -1
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// WaitOutput waits until the process output contains s, failing the test
// after limit or if the process exits first.
func (p *Proc) WaitOutput(t *testing.T, s string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(p.Output(), s) {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("output never contained %q (exited: %v):\n%s", s, p.Exited(), p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitTCP waits until addr accepts TCP connections, failing the test after
// limit or if p exits first.
func WaitTCP(t *testing.T, p *Proc, addr string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("%s never accepted connections (exited: %v): %v\n%s", addr, p.Exited(), err, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreePort returns a loopback port that was free for network ("tcp" or
// "udp") a moment ago.
func FreePort(t *testing.T, network string) int {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
}

// WriteFile writes content to name inside a fresh temporary directory and
// returns its path.
func WriteFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Main builds smuxtun-client and smuxtun-server into a temporary folder,
// stores their paths in *client and *server, runs the tests and exits; it is
// the whole TestMain of a package whose tests run the binaries.
func Main(m *testing.M, client, server *string) {
	dir, err := os.MkdirTemp("", "smuxtun-proctest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*client, *server = filepath.Join(dir, "smuxtun-client"), filepath.Join(dir, "smuxtun-server")
	err = Build(dir, map[string]string{"smuxtun-client": "./cmd/client", "smuxtun-server": "./cmd/server"})
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// Package e2e runs smuxtun-server and smuxtun-client as real processes on
// 127.0.0.1 in front of a real target and checks what a user would see:
// every byte arrives (SHA-256), half-close works end to end, the client redials
// a restarted server, nothing leaks, SIGTERM exits 0. It also checks the files
// that ship beside the binaries: the systemd units, the Dockerfile and the
// example configs.
//
// TestMain builds both binaries once, into a temporary folder, the way the
// Dockerfile and `make release` build them (CGO_ENABLED=0, -trimpath), or
// takes them from the folder $SMUXTUN_E2E_BIN names, to test binaries built
// elsewhere:
//
//	SMUXTUN_E2E_BIN=$PWD/bin go test ./e2e/
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// testVersion is stamped into the binaries, as the Makefile stamps `git describe`.
const testVersion = "v0.0.0-e2e"

var (
	binDir   string // holds smuxtun-server and smuxtun-client
	repoRoot string // the module root
	prebuilt bool   // binDir came from $SMUXTUN_E2E_BIN, not built with testVersion
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	repoRoot = root
	if dir := os.Getenv("SMUXTUN_E2E_BIN"); dir != "" {
		// Test binaries built elsewhere (a release, an install) instead.
		binDir, prebuilt = dir, true
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "smuxtun-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	for _, c := range []struct{ pkg, name string }{{"./cmd/server", demo.ServerBinary}, {"./cmd/client", demo.ClientBinary}} {
		if err := goBuild(c.pkg, demo.BinaryPath(dir, c.name), "CGO_ENABLED=0"); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
	}
	return m.Run()
}

// goBuild builds pkg (relative to the module root) into out with the extra
// environment variables env.
func goBuild(pkg, out string, env ...string) error {
	cmd := exec.Command(goTool(), "build", "-trimpath", "-ldflags", "-X main.version="+testVersion, "-o", out, pkg)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// startTarget starts a checking target (see internal/demo) that fails the test
// for any connection that ends in error, unless the test expects such errors.
func startTarget(t *testing.T, tolerateErrors bool) *demo.Target {
	t.Helper()
	var mu sync.Mutex
	var errs []error
	tg, err := demo.NewTarget(func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tg.Close()
		if tolerateErrors {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for i, err := range errs {
			if i == 5 {
				t.Errorf("... and %d more target errors", len(errs)-5)
				break
			}
			t.Errorf("%v", err)
		}
	})
	return tg
}

// startTunnel starts smuxtun-server and smuxtun-client in front of target and
// kills both when the test ends; the test fails if either panicked.
func startTunnel(t *testing.T, o demo.Options) *demo.Tunnel {
	t.Helper()
	o.Bin = binDir
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tun, err := demo.StartTunnel(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tun.Kill()
		for _, p := range []*demo.Proc{tun.Server, tun.Client} {
			if p != nil && hasPanic(p.Output()) {
				t.Errorf("%s panicked:\n%s", p.Name, p.Describe())
			}
		}
		if t.Failed() {
			t.Logf("%s\n%s", tun.Server.Describe(), tun.Client.Describe())
		}
	})
	return tun
}

func hasPanic(out string) bool {
	for _, s := range []string{"panic:", "fatal error:", "goroutine 1 ["} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

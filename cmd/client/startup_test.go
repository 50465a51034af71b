package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/cmd/internal/proctest"
)

// TestHelpCommand: "help" works as kcptun's command line takes it.
func TestHelpCommand(t *testing.T) {
	want := proctest.Run(t, 10*time.Second, client, proctest.Env(), "--help")
	if want.Code != 0 || !strings.Contains(want.Stdout, "--localaddr value") {
		t.Fatalf("--help: exit %d, stdout %.200q", want.Code, want.Stdout)
	}
	for _, args := range [][]string{{"help"}, {"h"}, {"--key", "k", "help"}} {
		r := proctest.Run(t, 10*time.Second, client, proctest.Env(), args...)
		if r.Code != 0 || r.Stderr != "" || r.Stdout != want.Stdout {
			t.Errorf("%q: exit %d, stderr %q, stdout the same as --help: %v", args, r.Code, r.Stderr, r.Stdout == want.Stdout)
		}
	}
	r := proctest.RunRefused(t, errorExit, client, proctest.Env(), "help", "me")
	proctest.CheckOneLineError(t, r, `unexpected argument "help"`)
}

// TestLocalAddrInUse: a local port or socket already taken stops the client
// with exit 1 after its "starting" line, and the error is one line naming
// --localaddr and the address once.
func TestLocalAddrInUse(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	sock := filepath.Join(t.TempDir(), "in-use.sock")
	unix, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close()
	for _, addr := range []string{tcp.Addr().String(), sock} {
		r := proctest.RunRefused(t, errorExit, client, proctest.Env(), "--key", "k", "-r", "127.0.0.1:29900", "-l", addr)
		want := "smuxtun-client: localaddr " + addr + ": bind: address already in use"
		lines := strings.Split(strings.TrimSuffix(r.Stderr, "\n"), "\n")
		if r.Code != 1 || len(lines) != 2 || !strings.Contains(lines[0], " level=INFO msg=starting ") || lines[1] != want {
			t.Errorf("exit %d, stderr:\n%s\nwant exit 1, the starting line, then:\n%s", r.Code, r.Stderr, want)
		}
	}
}

package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/cmd/internal/proctest"
)

// TestQPPStarts: both binaries run with --QPP; a count kcptun only warns
// about is a warning here too, the first log line says QPP is on, and a
// transfer goes through.
func TestQPPStarts(t *testing.T) {
	listen := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "udp"))
	local := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "tcp"))
	target := proctest.Echo(t)
	srv := proctest.Start(t, server, proctest.Env("KCPTUN_KEY=qpp"), "-l", listen, "-t", target, "--QPP", "--QPPCount", "64")
	srv.WaitOutput(t, "server listening", 10*time.Second)
	srv.WaitOutput(t, "qpp=true qppcount=64", time.Second)
	srv.WaitOutput(t, `level=WARN msg="QPPCount 64 is not a prime number`, time.Second)
	cli := proctest.Start(t, client, proctest.Env("KCPTUN_KEY=qpp"), "-l", local, "-r", listen, "--QPP", "--QPPCount", "64")
	proctest.WaitTCP(t, cli, local, 10*time.Second)
	proctest.RoundTrip(t, local, 1<<20, 20*time.Second)
	if code := cli.Stop(t, 5*time.Second); code != 0 {
		t.Errorf("client exit code after SIGTERM %d, want 0; output:\n%s", code, cli.Output())
	}
	if code := srv.Stop(t, 5*time.Second); code != 0 {
		t.Errorf("server exit code after SIGTERM %d, want 0; output:\n%s", code, srv.Output())
	}
}

// TestQPPCountRefused: a count the pads cannot be built from, or that would
// take memory for nothing, is one line naming --QPPCount and exit status 2,
// like every other bad setting.
func TestQPPCountRefused(t *testing.T) {
	for _, n := range []string{"0", "-61", "65536", "1000000000"} {
		r := proctest.RunRefused(t, time.Second, server, proctest.Env(), "--key", "k", "-l", "127.0.0.1:0", "-t", "127.0.0.1:1",
			"--QPP", "--QPPCount="+n)
		proctest.CheckOneLineError(t, r, "smuxtun-server: --QPPCount "+n+": out of range: must be 1..65535 pads")
		if r.Code != 2 {
			t.Errorf("--QPPCount %s: exit status %d, want 2", n, r.Code)
		}
	}
}

package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/cmd/internal/proctest"
)

// sharedFile is a kcptun JSON file holding both sides' settings, as kcptun
// users keep one file for client and server.
const sharedFile = `{
  "localaddr": "127.0.0.1:12948",
  "remoteaddr": "127.0.0.1:29900",
  "conn": 2,
  "autoexpire": 60,
  "scavengettl": 30,
  "key": "shared",
  "crypt": "aes",
  "mtu": 1300,
  "pprofaddr": %q
}`

// logLines runs the server with args until its log shows "server listening",
// stops it and returns the lines of the --log file; stderr must stay empty.
func logLines(t *testing.T, args ...string) []string {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "server.log")
	listen := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "udp"))
	p := proctest.Start(t, server, proctest.Env(), append([]string{"-l", listen, "-t", "127.0.0.1:1", "--log", logPath}, args...)...)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "server listening") {
			break
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("no \"server listening\" in the log (exited: %v):\n%s\nstderr:\n%s", p.Exited(), b, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := p.Stop(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, p.Output())
	}
	if out := p.Output(); out != "" {
		t.Errorf("with --log, stderr should stay empty, got:\n%s", out)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// indexOf returns the index of the only line matching re, failing the test
// if there is not exactly one.
func indexOf(t *testing.T, lines []string, re string) int {
	t.Helper()
	r := regexp.MustCompile(re)
	at := -1
	for i, l := range lines {
		if r.MatchString(l) {
			if at >= 0 {
				t.Errorf("two lines match %s:\n%s\n%s", re, lines[at], l)
			}
			at = i
		}
	}
	if at < 0 {
		t.Errorf("no line matches %s in:\n%s", re, strings.Join(lines, "\n"))
	}
	return at
}

// TestStartupLog: "starting" is the first line, then one warning per client
// key of a shared kcptun file, then pprof, then the listener, all in the
// --log file at their levels.
func TestStartupLog(t *testing.T) {
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "tcp"))
	conf := proctest.WriteFile(t, "shared.json", fmt.Sprintf(sharedFile, pprofAddr))

	t.Run("with pprof", func(t *testing.T) {
		lines := logLines(t, "-c", conf, "--pprof")
		if !strings.Contains(lines[0], ` level=INFO msg=starting program=smuxtun-server version="`+proctest.Version) ||
			!strings.Contains(lines[0], " mtu=1300 ") {
			t.Errorf("first line %q, want msg=starting with the version and the file's mtu", lines[0])
		}
		last := indexOf(t, lines, `^time=\S+ level=WARN msg="config file: client settings; the server ignores them" file=`+
			regexp.QuoteMeta(conf)+` keys=localaddr,remoteaddr,conn,autoexpire,scavengettl$`)
		if last <= 0 {
			t.Errorf("warning about the client's keys on line %d, want after the first", last)
		}
		pprof := indexOf(t, lines, `level=INFO msg="pprof listening" addr=`+regexp.QuoteMeta(pprofAddr))
		listening := indexOf(t, lines, `level=INFO msg="server listening"`)
		if !(last < pprof && pprof < listening) {
			t.Errorf("want the warnings, then pprof, then the listener; got lines %d, %d, %d", last, pprof, listening)
		}
		if n := strings.Count(strings.Join(lines, "\n"), "level=WARN"); n != 1 {
			t.Errorf("%d warnings, want 1:\n%s", n, strings.Join(lines, "\n"))
		}
	})

	t.Run("pprofaddr in the file without pprof", func(t *testing.T) {
		lines := logLines(t, "-c", conf)
		indexOf(t, lines, `^time=\S+ level=WARN msg="config file: key has no effect while pprof is off; nothing is served" file=`+
			regexp.QuoteMeta(conf)+` key=pprofaddr value=`+regexp.QuoteMeta(pprofAddr)+`$`)
		if strings.Contains(strings.Join(lines, "\n"), "pprof listening") {
			t.Error("pprof served without pprof")
		}
	})
}

// TestPprofAddrWithoutPprof: --pprofaddr alone is refused as a usage error
// that names both flags; with "pprof": true in the file it is accepted.
func TestPprofAddrWithoutPprof(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "tcp"))
	args := []string{"--key", "k", "-l", "127.0.0.1:0", "-t", "127.0.0.1:1", "--pprofaddr", addr}
	r := proctest.RunRefused(t, errorExit, server, proctest.Env(), args...)
	proctest.CheckOneLineError(t, r, "smuxtun-server: --pprofaddr "+addr+" has no effect without --pprof")
	if r.Code != 2 {
		t.Errorf("exit code %d, want 2 (usage)", r.Code)
	}

	conf := proctest.WriteFile(t, "pprof.json", `{"pprof": true}`)
	lines := logLines(t, "--key", "k", "-c", conf, "--pprofaddr", addr)
	indexOf(t, lines, `msg="pprof listening" addr=`+regexp.QuoteMeta(addr))
}

// TestHelpCommand: "help" works as kcptun's command line takes it.
func TestHelpCommand(t *testing.T) {
	want := proctest.Run(t, 10*time.Second, server, proctest.Env(), "--help")
	if want.Code != 0 || !strings.Contains(want.Stdout, "--listen value") {
		t.Fatalf("--help: exit %d, stdout %.200q", want.Code, want.Stdout)
	}
	for _, args := range [][]string{{"help"}, {"h"}} {
		r := proctest.Run(t, 10*time.Second, server, proctest.Env(), args...)
		if r.Code != 0 || r.Stderr != "" || r.Stdout != want.Stdout {
			t.Errorf("%q: exit %d, stderr %q, stdout the same as --help: %v", args, r.Code, r.Stderr, r.Stdout == want.Stdout)
		}
	}
	r := proctest.RunRefused(t, errorExit, server, proctest.Env(), "helpme")
	proctest.CheckOneLineError(t, r, `unexpected argument "helpme"`)
}

// TestPortInUse: a port already taken (alone or in a range) stops the
// server with exit 1 after its "starting" line, and the error is one line
// naming the address once.
func TestPortInUse(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	busyUDP, busyTCP := udp.LocalAddr().String(), tcp.Addr().String()
	// A range whose last port is taken: the error must name that port.
	busyPort := udp.LocalAddr().(*net.UDPAddr).Port
	rangeWithBusy := fmt.Sprintf("127.0.0.1:%d-%d", busyPort-2, busyPort)
	for _, c := range []struct{ name, listen, transport, want string }{
		{"kcp", busyUDP, "kcp", "smuxtun-server: listen udp " + busyUDP + ": bind: address already in use"},
		{"tcp", busyTCP, "tcp", "smuxtun-server: listen tcp " + busyTCP + ": bind: address already in use"},
		{"range", rangeWithBusy, "kcp", "smuxtun-server: listen udp " + busyUDP + ": bind: address already in use"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := proctest.RunRefused(t, errorExit, server, proctest.Env(), "--key", "k", "-t", "127.0.0.1:1", "-l", c.listen, "--transport", c.transport)
			lines := strings.Split(strings.TrimSuffix(r.Stderr, "\n"), "\n")
			if r.Code != 1 || len(lines) != 2 || !strings.Contains(lines[0], " level=INFO msg=starting ") || lines[1] != c.want {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 1, the starting line, then:\n%s", r.Code, r.Stderr, c.want)
			}
		})
	}
}

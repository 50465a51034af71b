package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/cmd/internal/proctest"
)

var client, server string // paths of the binaries built by TestMain

func TestMain(m *testing.M) { proctest.Main(m, &client, &server) }

// errorExit is how long an invalid invocation may take to be refused.
const errorExit = time.Second

func TestInvalidInvocations(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	malformed := file("malformed.json", "{\n  \"key\": \"k\",\n  \"mtu\": 1350,,\n}")
	wrongType := file("wrongtype.json", `{"key": "k", "sndwnd": "128"}`)
	unknownKey := file("unknownkey.json", `{"key": "k", "listen": ":29900", "localadr": ":1"}`)
	badValue := file("badvalue.json", `{"key": "k", "mtu": 9000}`)
	qppZero := file("qppzero.json", `{"key": "k", "qpp": true, "qpp-count": 0}`)
	badForward := file("badforward.json", `{"key": "k", "forward": ["127.0.0.1:2222=10.0.0.5:22", "127.0.0.1:2223"]}`)
	missing := filepath.Join(dir, "missing.json")

	base := []string{"--key", "k", "-l", "127.0.0.1:0", "-r", "127.0.0.1:29900"}
	tests := []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{"unknown cipher", []string{"--crypt", "rc4"}, nil, []string{"--crypt", `"rc4"`, "aes-128-gcm"}},
		{"unknown mode", []string{"--mode", "turbo"}, nil, []string{"--mode", `"turbo"`, "fast3"}},
		{"no key", []string{"-l", "127.0.0.1:0", "-r", "127.0.0.1:29900"}, nil, []string{"key", "missing"}},
		{"empty key flag", []string{"--key", ""}, []string{"KCPTUN_KEY=k"}, []string{"key", "missing"}},
		{"port out of range", []string{"-r", "127.0.0.1:70000"}, nil, []string{"--remoteaddr", "70000", "1..65535"}},
		{"local port out of range", []string{"-l", "127.0.0.1:65536"}, nil, []string{"--localaddr", "65536"}},
		{"reversed range", []string{"-r", "127.0.0.1:3000-2000"}, nil, []string{"--remoteaddr", "3000-2000", "reversed"}},
		{"mtu over the limit", []string{"--mtu", "1501"}, nil, []string{"--mtu", "1501", "64..1500"}},
		{"negative window", []string{"--sndwnd", "-1"}, nil, []string{"--sndwnd", "-1"}},
		{"negative rcvwnd", []string{"--rcvwnd=-5"}, nil, []string{"--rcvwnd", "-5"}},
		{"smuxver 3", []string{"--smuxver", "3"}, nil, []string{"--smuxver", "3", "1..2"}},
		{"framesize over 65535", []string{"--framesize", "65536"}, nil, []string{"--framesize", "65536", "65535"}},
		{"streambuf over smuxbuf", []string{"--smuxbuf", "1048576", "--streambuf", "2097152"}, nil, []string{"--streambuf", "2097152", "smuxbuf"}},
		{"negative maxstreams", []string{"--maxstreams", "-1"}, nil, []string{"--maxstreams", "-1"}},
		{"too many shards", []string{"--ds", "200", "--ps", "100"}, nil, []string{"parityshard", "256"}},
		{"conn 0", []string{"--conn", "0"}, nil, []string{"--conn", "0"}},
		{"not a number", []string{"--mtu", "big"}, nil, []string{"mtu", `"big"`}},
		{"unknown flag", []string{"--bogus", "1"}, nil, []string{"bogus"}},
		{"positional argument", []string{"extra"}, nil, []string{`"extra"`}},
		{"raw tcp over transport tcp", []string{"--tcp", "--transport", "tcp"}, nil, []string{"--tcp", "cannot be combined"}},
		{"qpp count 0", []string{"--QPP", "--QPPCount", "0"}, nil, []string{"--QPPCount 0", "1..65535 pads"}},
		{"qpp count negative", []string{"--QPP", "--QPPCount=-61"}, nil, []string{"--QPPCount -61", "1..65535 pads"}},
		{"qpp count huge", []string{"--QPP", "--QPPCount", "1000000"}, nil, []string{"--QPPCount 1000000", "1..65535 pads"}},
		{"qpp count by its JSON name", []string{"--qpp", "--qpp-count", "0"}, nil, []string{"--QPPCount 0", "1..65535 pads"}},
		{"JSON qpp count 0", []string{"-c", qppZero}, nil, []string{qppZero, "qpp-count 0", "1..65535 pads"}},
		{"pprof off loopback", []string{"--pprofaddr", "0.0.0.0:6060"}, nil, []string{"--pprofaddr", "loopback"}},
		{"unknown transport", []string{"--transport", "quic"}, nil, []string{"--transport", `"quic"`}},
		{"missing config file", []string{"-c", missing}, nil, []string{missing, "no such file"}},
		{"malformed JSON", []string{"-c", malformed}, nil, []string{malformed, "line 3", "invalid JSON"}},
		{"JSON value of the wrong type", []string{"-c", wrongType}, nil, []string{wrongType, `"sndwnd"`, "want an integer"}},
		{"JSON unknown key", []string{"-c", unknownKey}, nil, []string{unknownKey, `unknown key "localadr"`}},
		{"JSON value out of range", []string{"-c", badValue}, nil, []string{badValue, "mtu 9000"}},
		{"log file in a missing directory", []string{"--log", filepath.Join(dir, "no", "such", "x.log")}, nil, []string{"log", "no such file"}},
		{"forward without target", []string{"--forward", "127.0.0.1:2222"}, nil, []string{"--forward", `"127.0.0.1:2222"`, "LISTEN=TARGET"}},
		{"forward listen port 0", []string{"--forward", "127.0.0.1:0=10.0.0.5:22"}, nil, []string{"--forward", "port 0"}},
		{"forward target without port", []string{"--forward", "127.0.0.1:2222=10.0.0.5"}, nil, []string{"--forward", `"10.0.0.5"`}},
		{"forward unknown protocol", []string{"--forward", "127.0.0.1:2222/sctp=10.0.0.5:22"}, nil, []string{"--forward", "sctp"}},
		{"forward twice on one port", []string{"--forward", "127.0.0.1:2222=a:22", "--forward", ":2222=b:22"}, nil, []string{"--forward", "same TCP address"}},
		{"socks without port", []string{"--socks", "127.0.0.1"}, nil, []string{"--socks", `"127.0.0.1"`}},
		{"udptimeout 0", []string{"--udptimeout", "0"}, nil, []string{"--udptimeout", "0"}},
		{"JSON bad forward", []string{"-c", badForward}, nil, []string{badForward, `"127.0.0.1:2223"`}},
		{"snmplog in a missing directory", []string{"--snmplog", filepath.Join(dir, "no", "snmp.csv")}, nil, []string{"snmplog", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.name != "no key" {
				args = append(append([]string{}, base...), tt.args...)
			}
			r := proctest.RunRefused(t, errorExit, client, proctest.Env(tt.env...), args...)
			proctest.CheckOneLineError(t, r, append([]string{"smuxtun-client:"}, tt.want...)...)
		})
	}
}

// startClient runs the client against a server address and waits until its
// local port accepts connections.
func startClient(t *testing.T, env []string, args ...string) (*proctest.Proc, string) {
	t.Helper()
	local := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "tcp"))
	p := proctest.Start(t, client, env, append([]string{"-l", local}, args...)...)
	proctest.WaitTCP(t, p, local, 5*time.Second)
	return p, local
}

// startServer runs the server in front of target and waits for its log line.
func startServer(t *testing.T, target string, args ...string) (*proctest.Proc, string) {
	t.Helper()
	listen := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "udp"))
	p := proctest.Start(t, server, proctest.Env(), append([]string{"-l", listen, "-t", target}, args...)...)
	p.WaitOutput(t, "server listening", 5*time.Second)
	return p, listen
}

func TestFlagsWinOverJSONFile(t *testing.T) {
	fromFile := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "tcp"))
	conf := proctest.WriteFile(t, "client.json", fmt.Sprintf(`{
  "localaddr": %q,
  "remoteaddr": "127.0.0.1:29900",
  "key": "from the file",
  "crypt": "rc4",
  "mtu": 9000,
  "quiet": true
}`, fromFile))
	// The file alone is refused: its crypt is unknown.
	r := proctest.Run(t, 10*time.Second, client, proctest.Env(), "-c", conf)
	proctest.CheckOneLineError(t, r, conf, `crypt "rc4"`)

	// Flags override the bad values and the listen address.
	p, local := startClient(t, proctest.Env(), "-c", conf, "--crypt", "aes", "--mtu", "1400")
	if c, err := net.DialTimeout("tcp", fromFile, 200*time.Millisecond); err == nil {
		c.Close()
		t.Errorf("the client listens on the file's localaddr %s too; the flag's %s should replace it", fromFile, local)
	}
	if code := p.Stop(t, 5*time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM %d, want 0; output:\n%s", code, p.Output())
	}
}

func TestKeyFromEnvironment(t *testing.T) {
	const key = "environment key"
	target := proctest.Echo(t)
	srv, listen := startServer(t, target, "--key", key, "--quiet")
	tests := []struct {
		name string
		env  []string
	}{
		{"KCPTUN_KEY", []string{"KCPTUN_KEY=" + key}},
		{"SMUXTUN_KEY", []string{"SMUXTUN_KEY=" + key}},
		{"SMUXTUN_KEY wins", []string{"KCPTUN_KEY=wrong", "SMUXTUN_KEY=" + key}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, local := startClient(t, proctest.Env(tt.env...), "-r", listen, "--quiet")
			proctest.RoundTrip(t, local, 64<<10, 10*time.Second)
			if code := p.Stop(t, 5*time.Second); code != 0 {
				t.Errorf("exit code after SIGTERM %d, want 0; output:\n%s", code, p.Output())
			}
		})
	}
	if code := srv.Stop(t, 5*time.Second); code != 0 {
		t.Errorf("server exit code after SIGTERM %d, want 0; output:\n%s", code, srv.Output())
	}
}

func TestVersion(t *testing.T) {
	for _, flag := range []string{"--version", "-v"} {
		r := proctest.Run(t, 10*time.Second, client, proctest.Env(), flag)
		if r.Code != 0 || r.Stderr != "" {
			t.Fatalf("%s: exit %d, stderr %q", flag, r.Code, r.Stderr)
		}
		want := "smuxtun-client " + proctest.Version + " ("
		if !strings.HasPrefix(r.Stdout, want) || strings.Count(r.Stdout, "\n") != 1 {
			t.Errorf("%s printed %q, want one line starting with %q", flag, r.Stdout, want)
		}
		// Builds from a git checkout carry the commit.
		if rev := proctest.BuiltCommit; rev != "" {
			if commit := "commit " + rev[:12]; !strings.Contains(r.Stdout, commit) {
				t.Errorf("%s printed %q, want it to name %q", flag, r.Stdout, commit)
			}
		}
	}
}

func TestHelpSaysFlagsWin(t *testing.T) {
	r := proctest.Run(t, 10*time.Second, client, proctest.Env(), "--help")
	if r.Code != 0 {
		t.Fatalf("--help exit %d", r.Code)
	}
	for _, want := range []string{"flags given on the command line win over the file", "--localaddr value, -l value", "--remoteaddr value, -r value",
		"--datashard value, --ds value", "--parityshard value, --ps value", "--config value, -c value", "$KCPTUN_KEY", "$SMUXTUN_KEY", `(default: ":12948")`} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("--help does not show %q", want)
		}
	}
	if strings.Contains(r.Stdout, "generate-man") {
		t.Error("--help shows the hidden generation flags")
	}
}

func TestLogFileAndQuietStart(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "client.log")
	p, _ := startClient(t, proctest.Env("KCPTUN_KEY=k"), "-r", "127.0.0.1:29900", "--log", logPath)
	if code := p.Stop(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d; output:\n%s", code, p.Output())
	}
	if out := p.Output(); out != "" {
		t.Errorf("with --log, stderr should stay empty, got:\n%s", out)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "client listening") || !strings.Contains(string(b), "stopped") {
		t.Errorf("log file lacks the start and stop lines:\n%s", b)
	}
	if strings.Contains(string(b), "k\"") {
		t.Errorf("log file shows the key:\n%s", b)
	}
}

func TestSignalsExitCleanly(t *testing.T) {
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			p, local := startClient(t, proctest.Env("KCPTUN_KEY=k"), "-r", "127.0.0.1:29900")
			p.Signal(t, sig)
			deadline := time.Now().Add(5 * time.Second)
			for !p.Exited() {
				if time.Now().After(deadline) {
					t.Fatalf("still running 5s after %v:\n%s", sig, p.Output())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if code := p.Stop(t, time.Second); code != 0 {
				t.Errorf("exit code %d after %v, want 0:\n%s", code, sig, p.Output())
			}
			if c, err := net.DialTimeout("tcp", local, 200*time.Millisecond); err == nil {
				c.Close()
				t.Errorf("%s still accepts connections after exit", local)
			}
		})
	}
}

// TestKcptunStyleFlags runs both binaries with a kcptun command line (single
// dashes, short aliases, hidden manual-mode flags) and moves data through.
func TestKcptunStyleFlags(t *testing.T) {
	target := proctest.Echo(t)
	listen := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "udp"))
	shared := []string{"-key", "it is a secret", "-crypt", "salsa20", "-mode", "manual", "-nodelay", "1", "-interval", "15",
		"-resend", "2", "-nc", "1", "-ds", "5", "-ps", "2", "-nocomp", "-smuxver", "1", "-mtu", "1200", "-quiet"}
	srv := proctest.Start(t, server, proctest.Env(), append([]string{"-l", listen, "-t", target}, shared...)...)
	srv.WaitOutput(t, "server listening", 5*time.Second)
	p, local := startClient(t, proctest.Env(), append([]string{"-r", listen, "-conn", "2"}, shared...)...)
	proctest.RoundTrip(t, local, 256<<10, 20*time.Second)
	if code := p.Stop(t, 5*time.Second); code != 0 {
		t.Errorf("client exit %d:\n%s", code, p.Output())
	}
	if code := srv.Stop(t, 5*time.Second); code != 0 {
		t.Errorf("server exit %d:\n%s", code, srv.Output())
	}
}

// A forward list on the command line replaces the file's, and with
// forwards the default --localaddr is not listened on.
func TestForwardFlagsReplaceFile(t *testing.T) {
	fromFile := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "tcp"))
	fromFlag := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "tcp"))
	conf := proctest.WriteFile(t, "client.json", fmt.Sprintf(`{
  "remoteaddr": "127.0.0.1:29900",
  "key": "k",
  "forward": [%q]
}`, fromFile+"=10.0.0.5:22"))
	p := proctest.Start(t, client, proctest.Env(), "-c", conf, "--forward", fromFlag+"=10.0.0.6:22")
	proctest.WaitTCP(t, p, fromFlag, 5*time.Second)
	if c, err := net.DialTimeout("tcp", fromFile, 200*time.Millisecond); err == nil {
		c.Close()
		t.Errorf("the client listens on the file's forward %s too; the flag's list should replace it", fromFile)
	}
	if out := p.Output(); !strings.Contains(out, `local=""`) || !strings.Contains(out, "target=10.0.0.6:22") {
		t.Errorf("want the default localaddr not listened on and the flag's forward; output:\n%s", out)
	}
	if code := p.Stop(t, 5*time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM %d, want 0; output:\n%s", code, p.Output())
	}
}

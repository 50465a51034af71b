package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/cmd/internal/proctest"
)

var server, client string // paths of the binaries built by TestMain

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
	malformed := file("malformed.json", `{"key": "k" "target": "127.0.0.1:80"}`)
	wrongType := file("wrongtype.json", `{"key": "k", "nocomp": "yes"}`)
	unknownKey := file("unknownkey.json", `{"key": "k", "remoteaddr": "vps:29900", "targett": "127.0.0.1:80"}`)
	badAllow := file("badallow.json", `{"key": "k", "allow": ["10.0.0.5:22", "10.0.0.0/33:22"]}`)
	allowNotList := file("allownotlist.json", `{"key": "k", "allow": "10.0.0.5:22"}`)
	missing := filepath.Join(dir, "missing.json")

	base := []string{"--key", "k", "-l", "127.0.0.1:0", "-t", "127.0.0.1:8080"}
	tests := []struct {
		name  string
		args  []string
		noKey bool
		want  []string
	}{
		{"unknown cipher", []string{"--crypt", "chacha"}, false, []string{"--crypt", `"chacha"`, "salsa20"}},
		{"unknown mode", []string{"--mode", "fast4"}, false, []string{"--mode", `"fast4"`}},
		{"no key", []string{"-l", "127.0.0.1:0", "-t", "127.0.0.1:8080"}, true, []string{"key", "missing"}},
		{"port out of range", []string{"-l", "127.0.0.1:65536"}, false, []string{"--listen", "65536"}},
		{"target port out of range", []string{"-t", "127.0.0.1:99999"}, false, []string{"--target", "99999"}},
		{"reversed range", []string{"-l", "127.0.0.1:4000-3999"}, false, []string{"--listen", "4000-3999", "reversed"}},
		{"mtu over the limit", []string{"--mtu", "9000"}, false, []string{"--mtu", "9000", "64..1500"}},
		{"negative window", []string{"--rcvwnd", "-1024"}, false, []string{"--rcvwnd", "-1024"}},
		{"smuxver 3", []string{"--smuxver", "3"}, false, []string{"--smuxver", "3"}},
		{"framesize over 65535", []string{"--framesize", "70000"}, false, []string{"--framesize", "70000", "65535"}},
		{"streambuf over smuxbuf", []string{"--streambuf", "8388608"}, false, []string{"--streambuf", "8388608", "smuxbuf (4194304)"}},
		{"negative closewait", []string{"--closewait", "-1"}, false, []string{"--closewait", "-1"}},
		{"zero keepalive", []string{"--keepalive", "0"}, false, []string{"--keepalive", "0"}},
		{"unknown flag", []string{"--localaddr", "x"}, false, []string{"localaddr"}},
		{"missing config file", []string{"-c", missing}, false, []string{missing, "no such file"}},
		{"malformed JSON", []string{"--config", malformed}, false, []string{malformed, "invalid JSON"}},
		{"JSON value of the wrong type", []string{"-c", wrongType}, false, []string{wrongType, `"nocomp"`, "want true or false"}},
		{"unknown key beside a client key", []string{"-c", unknownKey}, false, []string{unknownKey, `unknown key "targett"`}},
		{"pprofaddr without pprof", []string{"--pprofaddr", "127.0.0.1:7000"}, false, []string{"--pprofaddr 127.0.0.1:7000", "without --pprof"}},
		{"allow everything", []string{"--allow", "*"}, false, []string{"--allow", `"*"`, "open proxy"}},
		{"allow any port of any host", []string{"--allow", "*:*"}, false, []string{"--allow", `"*:*"`}},
		{"allow bad CIDR", []string{"--allow", "10.0.0.0/8:22", "--allow", "10.0.0.0/33:22"}, false, []string{"--allow", `"10.0.0.0/33:22"`}},
		{"allow without port", []string{"--allow", "10.0.0.5"}, false, []string{"--allow", `"10.0.0.5"`}},
		{"allow reversed ports", []string{"--allow", "10.0.0.5:443-80"}, false, []string{"--allow", `"10.0.0.5:443-80"`}},
		{"udptimeout 0", []string{"--udptimeout", "0"}, false, []string{"--udptimeout", "0"}},
		{"JSON bad allow pattern", []string{"-c", badAllow}, false, []string{badAllow, `"10.0.0.0/33:22"`}},
		{"JSON allow not a list", []string{"-c", allowNotList}, false, []string{allowNotList, `"allow"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if !tt.noKey {
				args = append(append([]string{}, base...), tt.args...)
			}
			r := proctest.RunRefused(t, errorExit, server, proctest.Env(), args...)
			proctest.CheckOneLineError(t, r, append([]string{"smuxtun-server:"}, tt.want...)...)
		})
	}
}

func TestFlagsWinOverJSONFile(t *testing.T) {
	fromFile := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "tcp"))
	fromFlag := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "tcp"))
	conf := proctest.WriteFile(t, "server.json", fmt.Sprintf(`{
  "listen": %q,
  "target": "127.0.0.1:1",
  "key": "k",
  "transport": "tcp",
  "smuxver": 3
}`, fromFile))
	r := proctest.Run(t, 10*time.Second, server, proctest.Env(), "-c", conf)
	proctest.CheckOneLineError(t, r, conf, "smuxver 3")

	p := proctest.Start(t, server, proctest.Env(), "-c", conf, "--smuxver", "1", "-l", fromFlag)
	proctest.WaitTCP(t, p, fromFlag, 5*time.Second)
	if c, err := net.DialTimeout("tcp", fromFile, 200*time.Millisecond); err == nil {
		c.Close()
		t.Errorf("the server listens on the file's address %s; --listen %s should replace it", fromFile, fromFlag)
	}
	if !strings.Contains(p.Output(), "smuxver=1") {
		t.Errorf("log does not show smuxver=1 from the flag:\n%s", p.Output())
	}
	if code := p.Stop(t, 5*time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM %d, want 0; output:\n%s", code, p.Output())
	}
}

// TestOperation runs both binaries over each transport and exercises what an
// operator touches on a running server: a transfer, SIGUSR1, pprof, the SNMP
// log and SIGTERM.
func TestOperation(t *testing.T) {
	for _, transport := range []string{"kcp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			network := "udp"
			if transport == "tcp" {
				network = "tcp"
			}
			listen := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, network))
			pprofAddr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "tcp"))
			local := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t, "tcp"))
			snmp := filepath.Join(t.TempDir(), "snmp-20060102.csv")
			target := proctest.Echo(t)

			srv := proctest.Start(t, server, proctest.Env("KCPTUN_KEY=operation"), "-l", listen, "-t", target, "--transport", transport,
				"--pprof", "--pprofaddr", pprofAddr, "--snmplog", snmp, "--snmpperiod", "1", "--quiet")
			srv.WaitOutput(t, "server listening", 5*time.Second)
			cli := proctest.Start(t, client, proctest.Env("SMUXTUN_KEY=operation"), "-l", local, "-r", listen, "--transport", transport, "--quiet")
			proctest.WaitTCP(t, cli, local, 5*time.Second)
			proctest.RoundTrip(t, local, 1<<20, 20*time.Second)

			srv.Signal(t, syscall.SIGUSR1)
			// The client's readiness probe opened a stream too, with no bytes.
			srv.WaitOutput(t, " BytesUp=1048576 ", 5*time.Second)
			if transport == "kcp" {
				srv.WaitOutput(t, " InPkts=", 5*time.Second)
			}

			resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/goroutine?debug=1")
			if err != nil {
				t.Fatalf("pprof: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
				t.Errorf("pprof answered %s: %.200s", resp.Status, body)
			}

			path := filepath.Join(filepath.Dir(snmp), time.Now().Format("snmp-20060102.csv"))
			deadline := time.Now().Add(5 * time.Second)
			for {
				b, _ := os.ReadFile(path)
				if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) >= 2 && strings.HasPrefix(lines[0], "Unix,") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no SNMP row in %s after 5s:\n%s", path, b)
				}
				time.Sleep(100 * time.Millisecond)
			}

			if code := cli.Stop(t, 5*time.Second); code != 0 {
				t.Errorf("client exit code after SIGTERM %d, want 0; output:\n%s", code, cli.Output())
			}
			if code := srv.Stop(t, 5*time.Second); code != 0 {
				t.Errorf("server exit code after SIGTERM %d, want 0; output:\n%s", code, srv.Output())
			}
			if c, err := net.DialTimeout("tcp", pprofAddr, 200*time.Millisecond); err == nil {
				c.Close()
				t.Error("pprof still answers after the server exited")
			}
		})
	}
}

func TestVersion(t *testing.T) {
	r := proctest.Run(t, 10*time.Second, server, proctest.Env(), "--version")
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.Code, r.Stderr)
	}
	want := "smuxtun-server " + proctest.Version + " ("
	if !strings.HasPrefix(r.Stdout, want) || strings.Count(r.Stdout, "\n") != 1 {
		t.Errorf("--version printed %q, want one line starting with %q", r.Stdout, want)
	}
	// Builds from a git checkout carry the commit.
	if rev := proctest.BuiltCommit; rev != "" {
		if commit := "commit " + rev[:12]; !strings.Contains(r.Stdout, commit) {
			t.Errorf("--version printed %q, want it to name %q", r.Stdout, commit)
		}
	}
}

func TestGeneratedDocs(t *testing.T) {
	r := proctest.Run(t, 10*time.Second, server, proctest.Env(), "--generate-man")
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("--generate-man: exit %d, stderr %q", r.Code, r.Stderr)
	}
	for _, want := range []string{".TH smuxtun-server 1", "--listen", "--target", "--key", "--crypt", "win over the file"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	if strings.Contains(r.Stdout, "generate-man") {
		t.Error("man page documents the hidden generation flags")
	}

	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := proctest.Run(t, 10*time.Second, server, proctest.Env(), "--generate-completion", shell)
		if r.Code != 0 || r.Stderr != "" || !strings.Contains(r.Stdout, "listen") || !strings.Contains(r.Stdout, "crypt") {
			t.Errorf("--generate-completion %s: exit %d, stderr %q, output %.200q", shell, r.Code, r.Stderr, r.Stdout)
			continue
		}
		if shell != "bash" {
			continue
		}
		script := proctest.WriteFile(t, "smuxtun-server.bash", r.Stdout)
		if bash, err := exec.LookPath("bash"); err == nil {
			out, err := exec.Command(bash, "-c", "source "+script+`; COMP_WORDS=(smuxtun-server --crypt aes-12); COMP_CWORD=2; _smuxtun_server; echo "${COMPREPLY[@]}"`).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "aes-128 aes-128-gcm" {
				t.Errorf("bash completion of --crypt aes-12: %v %q", err, out)
			}
		}
	}
	r = proctest.Run(t, 10*time.Second, server, proctest.Env(), "--generate-completion", "tcsh")
	proctest.CheckOneLineError(t, r, "tcsh")
}

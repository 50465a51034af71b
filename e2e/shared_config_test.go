package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// sharedKcptunFile holds both sides' settings in one file, as kcptun users
// keep it. The addresses and the key in it are replaced by flags.
const sharedKcptunFile = `{
  "localaddr": "127.0.0.1:12948",
  "remoteaddr": "127.0.0.1:29900",
  "listen": ":29900",
  "target": "127.0.0.1:12948",
  "key": "it's a secrect",
  "crypt": "aes",
  "mode": "fast",
  "conn": 2,
  "autoexpire": 0,
  "scavengettl": 600,
  "mtu": 1350,
  "sndwnd": 1024,
  "rcvwnd": 1024,
  "datashard": 10,
  "parityshard": 3,
  "dscp": 0,
  "nocomp": false,
  "sockbuf": 4194304,
  "smuxver": 2,
  "keepalive": 10
}`

// TestSharedKcptunConfigFile: one kcptun file holding both sides' keys starts
// either binary; each logs one warning per key of the other side, at WARN, in
// its log (the --log file for the client here), and carries data.
func TestSharedKcptunConfigFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "kcptun.json")
	if err := os.WriteFile(conf, []byte(sharedKcptunFile), 0o600); err != nil {
		t.Fatal(err)
	}
	clientLog := filepath.Join(dir, "client.log")
	tg := startTarget(t, false)
	tun := startTunnel(t, demo.Options{
		Target:     tg.Addr(),
		ServerArgs: []string{"-c", conf},
		ClientArgs: []string{"-c", conf, "--log", clientLog},
	})
	if err := through(tun, operations[2], 256<<10, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	clientOut, err := os.ReadFile(clientLog)
	if err != nil {
		t.Fatal(err)
	}

	for _, side := range []struct {
		name, log, reader, owner string
		foreign                  []string
	}{
		{demo.ServerBinary, tun.Server.Output(), "server", "client", []string{"localaddr", "remoteaddr", "conn", "autoexpire", "scavengettl"}},
		{demo.ClientBinary, string(clientOut), "client", "server", []string{"listen", "target"}},
	} {
		warn := regexp.MustCompile(`(?m)^time=\S+ level=WARN msg="config file: ` + side.owner +
			` settings; the ` + side.reader + ` ignores them" file=` + regexp.QuoteMeta(conf) + ` keys=(\S+)$`)
		var got []string
		for _, m := range warn.FindAllStringSubmatch(side.log, -1) {
			got = append(got, m[1])
		}
		if len(got) != 1 || got[0] != strings.Join(side.foreign, ",") {
			t.Errorf("%s warned about %q, want one line naming %q; log:\n%s", side.name, got, side.foreign, side.log)
		}
		if n := strings.Count(side.log, "level=WARN"); n != 1 {
			t.Errorf("%s: %d warnings, want 1; log:\n%s", side.name, n, side.log)
		}
	}
	if out := tun.Client.Output(); out != "" {
		t.Errorf("client with --log wrote to stderr:\n%s", out)
	}
}

// TestInventedConfigKey: a key neither binary knows is still refused, with
// exit code 2 and one line naming the file and the key.
func TestInventedConfigKey(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "typo.json")
	content := strings.Replace(sharedKcptunFile, `"conn": 2,`, `"conn": 2,
  "sndwin": 512,`, 1)
	if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{demo.ServerBinary, demo.ClientBinary} {
		p, err := demo.StartProc(name, demo.BinaryPath(binDir, name), "-c", conf)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			p.Kill()
			t.Fatalf("%s -c %s kept running", name, conf)
		}
		want := name + ": config file " + conf + `: unknown key "sndwin"` + "\n"
		if p.ExitCode() != 2 || p.Output() != want {
			t.Errorf("want exit 2 and exactly %q, got:\n%s", want, p.Describe())
		}
	}
}

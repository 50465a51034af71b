package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// units are the unit files in systemd/: the binary each starts, the config
// file it reads (installed from the example systemd/<example>), and the one
// directory under /var/log it may write to.
var units = []struct {
	file, binary, config, example, logs string
}{
	{"smuxtun-server.service", demo.ServerBinary, "/etc/smuxtun/server.json", "server.json", "smuxtun-server"},
	{"smuxtun-client.service", demo.ClientBinary, "/etc/smuxtun/client.json", "client.json", "smuxtun-client"},
	{"smuxtun-server@.service", demo.ServerBinary, "/etc/smuxtun/server-%i.json", "server.json", "smuxtun-server-%i"},
	{"smuxtun-client@.service", demo.ClientBinary, "/etc/smuxtun/client-%i.json", "client.json", "smuxtun-client-%i"},
}

// parseUnit returns the settings of a unit file as key -> values (a key may
// repeat), section names dropped.
func parseUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a key=value line: %q", path, line)
		}
		kv[strings.TrimSpace(k)] = append(kv[strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestSystemdUnitSettings checks that each unit has what the deployment
// section of the README promises: its config file, restart on failure, a high
// file limit, a dynamic unprivileged user, the sandbox and a log directory.
// The config file is found through $CREDENTIALS_DIRECTORY, not the %d
// specifier, which would raise the systemd the units need from 247 to 251.
func TestSystemdUnitSettings(t *testing.T) {
	for _, u := range units {
		t.Run(u.file, func(t *testing.T) {
			kv := parseUnit(t, filepath.Join(repoRoot, "systemd", u.file))
			credential := strings.TrimSuffix(filepath.Base(u.config), filepath.Ext(u.config))
			credential = strings.TrimSuffix(credential, "-%i") + ".json"
			want := map[string]string{
				"ExecStart":               "/usr/local/bin/" + u.binary + " -c ${CREDENTIALS_DIRECTORY}/" + credential,
				"LoadCredential":          credential + ":" + u.config,
				"Restart":                 "on-failure",
				"DynamicUser":             "yes",
				"NoNewPrivileges":         "yes",
				"ProtectSystem":           "strict",
				"ProtectHome":             "yes",
				"PrivateTmp":              "yes",
				"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
				"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
				"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
				"KillSignal":              "SIGTERM",
				"LogsDirectory":           u.logs,
			}
			for k, v := range want {
				if got := strings.Join(kv[k], " | "); got != v {
					t.Errorf("%s=%q, want %q", k, got, v)
				}
			}
			if n, err := strconv.Atoi(strings.Join(kv["LimitNOFILE"], "")); err != nil || n < 65536 {
				t.Errorf("LimitNOFILE=%q, want a number of at least 65536", kv["LimitNOFILE"])
			}
		})
	}
}

// TestSystemdUnits runs `systemd-analyze verify` on every unit, and `systemd-analyze
// security` to keep the sandbox from eroding. verify insists that ExecStart's
// binary exists, so it checks copies of the units whose ExecStart points at the
// binaries TestMain built; nothing else in the copies differs.
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd; .ci/run does)")
	}
	dir := t.TempDir()
	for _, u := range units {
		src, err := os.ReadFile(filepath.Join(repoRoot, "systemd", u.file))
		if err != nil {
			t.Fatal(err)
		}
		installed := "/usr/local/bin/" + u.binary
		if !strings.Contains(string(src), "ExecStart="+installed+" ") {
			t.Fatalf("%s: ExecStart does not start %s", u.file, installed)
		}
		copy := strings.ReplaceAll(string(src), "ExecStart="+installed, "ExecStart="+demo.BinaryPath(binDir, u.binary))
		if err := os.WriteFile(filepath.Join(dir, u.file), []byte(copy), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A template is verified as itself (systemd fills in "i" for %i) and as an
	// instance, which systemd-analyze finds in the working directory.
	targets := []string{
		"smuxtun-server.service", "smuxtun-client.service",
		"smuxtun-server@.service", "smuxtun-client@.service",
		"smuxtun-server@vps.service", "smuxtun-client@laptop.service",
	}
	for _, file := range targets {
		t.Run("verify/"+file, func(t *testing.T) {
			cmd := exec.Command(analyze, "verify", file)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			// verify exits 0 for many problems it only warns about (an unknown key, a
			// value it cannot parse), so any output at all is a failure.
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", file, err, out)
			}
		})
	}

	if out, err := exec.Command(analyze, "security", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "--offline") {
		t.Log("this systemd-analyze has no `security --offline`; exposure not checked")
		return
	}
	exposure := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, u := range units {
		t.Run("security/"+u.file, func(t *testing.T) {
			// --threshold counts in tenths: 25 is an exposure of 2.5, inside systemd's
			// "OK" band; the units score about 1.7.
			cmd := exec.Command(analyze, "security", "--offline=yes", "--threshold=25", "--no-pager", filepath.Join(dir, u.file))
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			m := exposure.FindSubmatch(out)
			if m == nil {
				t.Fatalf("systemd-analyze security: %v, no exposure level in:\n%s", err, out)
			}
			level, _ := strconv.ParseFloat(string(m[1]), 64)
			t.Logf("exposure level %.1f", level)
			if err != nil || level > 2.5 {
				t.Errorf("exposure level %.1f (exit %v), want at most 2.5:\n%s", level, err, out)
			}
		})
	}
}

// TestSysctlConf checks that every setting in systemd/sysctl.conf names a real
// kernel parameter with a numeric value, at least as large as what smuxtun asks
// for by default (--sockbuf 4 MiB).
func TestSysctlConf(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, "systemd", "sysctl.conf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string][]int64{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("line %d: not key = value: %q", n, line)
		}
		k = strings.TrimSpace(k)
		var nums []int64
		for _, field := range strings.Fields(v) {
			x, err := strconv.ParseInt(field, 10, 64)
			if err != nil {
				t.Errorf("line %d: %s: value %q is not numeric", n, k, field)
			}
			nums = append(nums, x)
		}
		seen[k] = nums
		if _, err := os.Stat("/proc/sys"); err == nil {
			if _, err := os.Stat("/proc/sys/" + strings.ReplaceAll(k, ".", "/")); err != nil {
				t.Errorf("line %d: %s is not a kernel parameter here: %v", n, k, err)
			}
		}
	}
	for _, k := range []string{"net.core.rmem_max", "net.core.wmem_max"} {
		if v := seen[k]; len(v) != 1 || v[0] < 4<<20 {
			t.Errorf("%s = %v, want one value of at least 4194304 (the default --sockbuf)", k, v)
		}
	}
}

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// TestSystemdTCPDropIn installs systemd/smuxtun-tcp.conf as a drop-in of
// each unit, the way its header says, and checks with systemd-analyze that
// systemd reads it cleanly, that the service then may use raw sockets and
// run iptables (CAP_NET_RAW, CAP_NET_ADMIN, netlink), and that the rest of
// the sandbox holds.
func TestSystemdTCPDropIn(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd; .ci/run does)")
	}
	dropIn, err := os.ReadFile(filepath.Join(repoRoot, "systemd", "smuxtun-tcp.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dropIn), "/etc/systemd/system/smuxtun-server.service.d/tcp.conf") {
		t.Error("the drop-in's header does not say where it goes")
	}
	offline := false
	if out, err := exec.Command(analyze, "security", "--help").CombinedOutput(); err == nil && strings.Contains(string(out), "--offline") {
		offline = true
	}
	exposure := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, u := range units[:2] {
		t.Run(u.file, func(t *testing.T) {
			dir := t.TempDir()
			src, err := os.ReadFile(filepath.Join(repoRoot, "systemd", u.file))
			if err != nil {
				t.Fatal(err)
			}
			installed := "/usr/local/bin/" + u.binary
			unit := strings.ReplaceAll(string(src), "ExecStart="+installed, "ExecStart="+demo.BinaryPath(binDir, u.binary))
			if err := os.WriteFile(filepath.Join(dir, u.file), []byte(unit), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(dir, u.file+".d"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, u.file+".d", "tcp.conf"), dropIn, 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(analyze, "verify", u.file)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify %s with the drop-in: %v\n%s", u.file, err, out)
			}
			if !offline {
				t.Log("this systemd-analyze has no `security --offline`; the granted capabilities are not checked")
				return
			}
			cmd = exec.Command(analyze, "security", "--offline=yes", "--no-pager", u.file)
			cmd.Dir = dir
			out, _ := cmd.CombinedOutput()
			// systemd-analyze security marks with ✗ what the service may do.
			for _, granted := range []string{
				"✗ CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
				"✗ CapabilityBoundingSet=~CAP_NET_ADMIN",
				"✗ RestrictAddressFamilies=~AF_NETLINK",
				"✗ AmbientCapabilities=",
			} {
				if !strings.Contains(string(out), granted) {
					t.Errorf("with the drop-in, systemd-analyze security lacks %q:\n%s", granted, out)
				}
			}
			m := exposure.FindSubmatch(out)
			if m == nil {
				t.Fatalf("no exposure level in:\n%s", out)
			}
			level, _ := strconv.ParseFloat(string(m[1]), 64)
			t.Logf("exposure level with the drop-in %.1f", level)
			if level > 2.5 {
				t.Errorf("exposure level %.1f with the drop-in, want at most 2.5", level)
			}
		})
	}
}

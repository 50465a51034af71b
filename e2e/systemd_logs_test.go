package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeSection returns the part of README.md from the heading line until the
// next heading of the same or a higher level.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	level := strings.Index(heading, " ")
	var b strings.Builder
	in := false
	for _, line := range strings.Split(string(raw), "\n") {
		if in && strings.HasPrefix(line, "#") {
			if n := strings.Index(line, " "); n > 0 && n <= level && strings.Trim(line[:n], "#") == "" {
				break
			}
		}
		if line == heading {
			in = true
		}
		if in {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	if !in {
		t.Fatalf("README.md has no %q heading", heading)
	}
	return b.String()
}

// logPathRef matches a log file named the way an operator would copy it: a
// JSON key ("log": "/var/log/...") or a flag (--snmplog /var/log/...).
var logPathRef = regexp.MustCompile(`(?:"(?:snmp)?log":\s*"|--(?:snmp)?log[ =])(/var/log/[^"\s` + "`" + `]+)`)

// underLogsDir reports whether path lies in the directory that LogsDirectory=
// value makes writable, with an instance name in place of %i.
func underLogsDir(path, logsDir, instance string) bool {
	return strings.HasPrefix(path, "/var/log/"+strings.ReplaceAll(logsDir, "%i", instance)+"/")
}

// TestSystemdLogPaths keeps every log file that the shipped configs, the units'
// comments and the README name inside the LogsDirectory= of the unit that would
// write it. ProtectSystem=strict leaves nothing else under /var/log writable:
// smuxtun cannot open a "log" path elsewhere (a kcptun file's
// /var/log/kcptun.log, say), exits, and systemd restarts it again and again.
func TestSystemdLogPaths(t *testing.T) {
	t.Run("examples", func(t *testing.T) {
		// Each example is installed for a unit and for its template's instances,
		// whose log directories differ, so a path in it would be wrong for one of
		// them: the examples leave the log to the journal.
		for _, example := range []string{"server.json", "client.json"} {
			raw, err := os.ReadFile(filepath.Join(repoRoot, "systemd", example))
			if err != nil {
				t.Fatal(err)
			}
			var conf map[string]any
			if err := json.Unmarshal(raw, &conf); err != nil {
				t.Fatalf("%s: %v", example, err)
			}
			for _, key := range []string{"log", "snmplog"} {
				path, _ := conf[key].(string)
				if path == "" {
					continue
				}
				for _, u := range units {
					if u.example == example && !underLogsDir(path, u.logs, "NAME") {
						t.Errorf("%s: %q: %q is outside /var/log/%s/, the only log directory %s may write", example, key, path, u.logs, u.file)
					}
				}
			}
		}
	})

	t.Run("unit-comments", func(t *testing.T) {
		for _, u := range units {
			raw, err := os.ReadFile(filepath.Join(repoRoot, "systemd", u.file))
			if err != nil {
				t.Fatal(err)
			}
			refs := logPathRef.FindAllStringSubmatch(string(raw), -1)
			if len(refs) == 0 {
				t.Errorf("%s: no example of a log path under its LogsDirectory in the comments", u.file)
			}
			for _, m := range refs {
				if !underLogsDir(m[1], u.logs, "%i") {
					t.Errorf("%s: the comment's %q is outside /var/log/%s/", u.file, m[1], u.logs)
				}
			}
		}
	})

	t.Run("readme", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range logPathRef.FindAllStringSubmatch(string(raw), -1) {
			ok := false
			for _, u := range units {
				ok = ok || underLogsDir(m[1], u.logs, "NAME")
			}
			if !ok {
				t.Errorf("README: %q is in no unit's LogsDirectory; the service could not write it", m[0])
			}
		}
		section := readmeSection(t, "### systemd")
		for _, want := range []string{"LogsDirectory", "journalctl -u smuxtun-server", "/var/log/smuxtun-server/"} {
			if !strings.Contains(section, want) {
				t.Errorf("README's systemd section does not mention %s", want)
			}
		}
	})
}

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// centOS7 is the systemd of CentOS 7, the oldest still met in the wild. The
// settings it already has are listed with this release rather than the one
// that introduced them: nobody runs an older one, so no instruction depends on it.
const centOS7 = 219

// systemdSince is the systemd release that introduced each setting the units
// use, and each value, specifier or variable that came later than its
// setting. Source: the "CHANGES WITH <release>" entries of systemd's NEWS file
// (as shipped in /usr/share/doc/systemd/NEWS.gz), except @system-service,
// which NEWS does not announce: systemd pull request 8766, merged for 239.
//
// NEWS for 250 also says that ProcSubset=pid can now be combined with
// ProtectKernelTunables= and ProtectKernelLogs=, which the units do; they pass
// internal/demo/cmd/unitcheck all the same when booted under the systemd of
// Debian 11 (247) and Ubuntu 22.04 (249).
var systemdSince = map[string]int{
	"Description":             centOS7,
	"Documentation":           centOS7,
	"After":                   centOS7,
	"Wants":                   centOS7,
	"WantedBy":                centOS7,
	"Type":                    centOS7,
	"Type=exec":               240,
	"ExecStart":               centOS7,
	"KillSignal":              centOS7,
	"TimeoutStopSec":          centOS7,
	"Restart":                 centOS7,
	"RestartSec":              centOS7,
	"LimitNOFILE":             centOS7,
	"UMask":                   centOS7,
	"CapabilityBoundingSet":   centOS7,
	"NoNewPrivileges":         centOS7,
	"PrivateTmp":              centOS7,
	"PrivateDevices":          centOS7, // 209
	"SystemCallArchitectures": centOS7, // 209
	"SystemCallErrorNumber":   centOS7, // 209
	"SystemCallFilter":        centOS7,
	"RestrictAddressFamilies": centOS7, // 211
	"RuntimeDirectory":        centOS7, // 211
	"RuntimeDirectoryMode":    centOS7, // 211
	"ProtectSystem":           centOS7, // 214
	"ProtectHome":             centOS7, // 214
	"%i":                      centOS7,

	"AmbientCapabilities":              229,
	"SystemCallFilter=~@privileged":    231, // named system call sets
	"MemoryDenyWriteExecute":           231,
	"RestrictRealtime":                 231,
	"DynamicUser":                      232,
	"ProtectSystem=strict":             232,
	"ProtectKernelTunables":            232,
	"ProtectKernelModules":             232,
	"ProtectControlGroups":             232,
	"RestrictNamespaces":               233,
	"LogsDirectory":                    235,
	"LockPersonality":                  235,
	"PrivateMounts":                    239,
	"SystemCallFilter=@system-service": 239,
	"ProtectHostname":                  242,
	"RestrictSUIDSGID":                 242,
	"ProtectKernelLogs":                244,
	"ProtectClock":                     245,
	"LoadCredential":                   247,
	"$CREDENTIALS_DIRECTORY":           247,
	"ProtectProc":                      247,
	"ProcSubset":                       247,
	"%d":                               251, // why ExecStart uses $CREDENTIALS_DIRECTORY
}

var (
	specifier = regexp.MustCompile(`%[a-zA-Z]`)
	envVar    = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)
	needs     = regexp.MustCompile(`systemd (\d+) or later`)
	minRow    = regexp.MustCompile("^\\| (\\d+) \\| (.*) \\|$")
	quoted    = regexp.MustCompile("`([^`]+)`")
)

// unitNeeds returns what one unit file uses that systemdSince knows, as
// "Setting=" or "Setting=value" (or a specifier or variable), with the release
// each needs; it fails the test for anything the table lacks.
func unitNeeds(t *testing.T, file string) map[string]int {
	t.Helper()
	used := map[string]int{}
	for key, values := range parseUnit(t, filepath.Join(repoRoot, "systemd", file)) {
		since, ok := systemdSince[key]
		if !ok {
			t.Errorf("%s: %s= is not in systemdSince: add the systemd release that introduced it", file, key)
			continue
		}
		used[key+"="] = since
		for _, v := range values {
			for _, item := range append(strings.Fields(v), v) {
				if since, ok := systemdSince[key+"="+item]; ok {
					used[key+"="+item] = since
				}
			}
			for _, s := range specifier.FindAllString(v, -1) {
				since, ok := systemdSince[s]
				if !ok {
					t.Errorf("%s: specifier %s in %s= is not in systemdSince", file, s, key)
				}
				used[s] = since
			}
			for _, m := range envVar.FindAllStringSubmatch(v, -1) {
				since, ok := systemdSince["$"+m[1]]
				if !ok {
					t.Errorf("%s: variable $%s in %s= is not in systemdSince", file, m[1], key)
				}
				used["$"+m[1]] = since
			}
		}
	}
	return used
}

// TestSystemdMinimumVersion keeps the systemd release that the README and the
// units' comments state as the minimum at least as new as every setting the
// units use, and the README's list of what an older systemd lacks complete.
func TestSystemdMinimumVersion(t *testing.T) {
	need, needFor := 0, ""
	used := map[string]int{}
	for _, u := range units {
		for name, since := range unitNeeds(t, u.file) {
			used[name] = since
			if since > need {
				need, needFor = since, u.file+": "+name
			}
		}
	}
	t.Logf("the units need systemd %d (%s)", need, needFor)

	section := readmeSection(t, "### systemd")
	m := needs.FindStringSubmatch(section)
	if m == nil {
		t.Fatalf("README's systemd section does not say which systemd the units need (%q)", needs)
	}
	stated, _ := strconv.Atoi(m[1])
	if stated < need {
		t.Errorf("README says systemd %d or later, but %s needs %d", stated, needFor, need)
	}
	for _, u := range units {
		raw, err := os.ReadFile(filepath.Join(repoRoot, "systemd", u.file))
		if err != nil {
			t.Fatal(err)
		}
		if c := needs.FindStringSubmatch(string(raw)); c == nil || c[1] != m[1] {
			t.Errorf("%s: its comment should say \"systemd %s or later\", as the README does; found %q", u.file, m[1], c)
		}
	}

	// The table of what each release added, for whoever runs an older systemd:
	// every setting newer than CentOS 7's in the row of its release, nothing else.
	// Specifiers and variables stay out of it: the stated minimum covers them.
	rows := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		if r := minRow.FindStringSubmatch(line); r != nil {
			for _, q := range quoted.FindAllStringSubmatch(r[2], -1) {
				rows[q[1]] = r[1]
			}
		}
	}
	var missing []string
	for name, since := range used {
		if since <= centOS7 || strings.HasPrefix(name, "$") || strings.HasPrefix(name, "%") {
			continue
		}
		if got, want := rows[name], strconv.Itoa(since); got != want {
			missing = append(missing, fmt.Sprintf("%s (%s, listed under %q)", name, want, got))
		}
	}
	slices.Sort(missing)
	for _, s := range missing {
		t.Errorf("README's systemd table: want `%s` in the row of the release that added it", s)
	}
	for name, release := range rows {
		if since, ok := used[name]; !ok || strconv.Itoa(since) != release {
			t.Errorf("README's systemd table lists `%s` under %s, which the units do not use or which came with %d", name, release, since)
		}
	}
}

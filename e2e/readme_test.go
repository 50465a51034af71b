package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// helpFlag is one flag as --help shows it.
type helpFlag struct {
	names      []string
	defaultVal string // "" when --help shows none
}

// A repeatable flag reads "--forward value [ --forward value ]".
var helpLine = regexp.MustCompile(`^\s+(--?\S+(?: value)?(?:, --?\S+(?: value)?)*)(?: \[ --?\S+ value \])?\s{2,}(.*?)(?: \(default: (.*)\))?$`)

// helpFlags runs binary --help and returns its flags by first name.
func helpFlags(t *testing.T, binary string) map[string]helpFlag {
	t.Helper()
	out, err := exec.Command(demo.BinaryPath(binDir, binary), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", binary, err, out)
	}
	flags := map[string]helpFlag{}
	for _, line := range strings.Split(string(out), "\n") {
		m := helpLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var names []string
		for _, n := range strings.Split(m[1], ", ") {
			names = append(names, strings.TrimSuffix(n, " value"))
		}
		if names[0] == "--help" || names[0] == "--version" {
			continue
		}
		flags[names[0]] = helpFlag{names: names, defaultVal: m[3]}
	}
	if len(flags) < 20 {
		t.Fatalf("%s --help: found only %d flags in:\n%s", binary, len(flags), out)
	}
	return flags
}

// normalize writes a default the way the README's table does.
func normalize(v string) string {
	v = strings.Trim(v, `"`)
	if v == "false" {
		return "off"
	}
	return v
}

// TestReadmeFlagTable keeps the README's flag table true: every flag of both
// binaries is in it with the default --help shows, and it lists no other flag.
func TestReadmeFlagTable(t *testing.T) {
	client := helpFlags(t, demo.ClientBinary)
	server := helpFlags(t, demo.ServerBinary)

	raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{} // first flag name -> cells
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "| `--") && !strings.HasPrefix(line, "| `-") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 4 {
			continue // another table
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		name := strings.Trim(strings.Split(cells[0], ",")[0], "` ")
		rows[name] = cells
	}

	check := func(side string, flags map[string]helpFlag, col int) {
		for name, f := range flags {
			row, ok := rows[name]
			if !ok {
				t.Errorf("README: no row for %s flag %s", side, name)
				continue
			}
			for _, n := range f.names {
				if !strings.Contains(row[0], "`"+n+"`") {
					t.Errorf("README: the row for %s does not name %s", name, n)
				}
			}
			if got, want := strings.Trim(row[col], "`"), normalize(f.defaultVal); got != want {
				t.Errorf("README: %s default for %s is %q, --help says %q", side, name, got, want)
			}
		}
	}
	check("client", client, 1)
	check("server", server, 2)
	for name, row := range rows {
		_, inClient := client[name]
		_, inServer := server[name]
		if !inClient && !inServer {
			t.Errorf("README lists %s, which neither binary has", name)
		}
		if !inClient && row[1] != "n/a" || !inServer && row[2] != "n/a" {
			t.Errorf("README: %s should read n/a for the side that lacks it: %q", name, row)
		}
	}
}

// TestReadmeJSONExamples runs the binaries with the JSON examples of the
// README (the key and the addresses given as flags, which win over the file)
// and carries a checked transfer, so that every key and value shown there loads.
func TestReadmeJSONExamples(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(string(raw), -1)
	dir := t.TempDir()
	var server, client string
	for i, b := range blocks {
		path := filepath.Join(dir, "example"+strconv.Itoa(i)+".json")
		if err := os.WriteFile(path, []byte(b[1]), 0o600); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.Contains(b[1], `"listen"`):
			server = path
		case strings.Contains(b[1], `"localaddr"`):
			client = path
		default:
			t.Errorf("README JSON example %d is neither a server nor a client:\n%s", i, b[1])
		}
	}
	if server == "" || client == "" {
		t.Fatalf("README: want a server and a client JSON example, found %d blocks", len(blocks))
	}
	tg := startTarget(t, false)
	tun := startTunnel(t, demo.Options{
		Target:     tg.Addr(),
		ServerArgs: []string{"-c", server},
		ClientArgs: []string{"-c", client},
	})
	for _, op := range operations {
		if err := through(tun, op, 256<<10, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

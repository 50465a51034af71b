package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestTroubleshootingCoversEveryWarning: every warning or error the tunnel
// and the command line can log is explained in docs/TROUBLESHOOTING.md, so a
// user who finds a line in the log finds it there too.
func TestTroubleshootingCoversEveryWarning(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "TROUBLESHOOTING.md"))
	if err != nil {
		t.Fatal(err)
	}
	// log.Warn("msg", ...), and limiter.warn(log, key, "msg", ...) (lograte.go).
	re := regexp.MustCompile(`\.(Warn|Error)\("([^"]+)"|\.(warn)\([^,]+, [^,]+, "([^"]+)"`)
	seen := 0
	for _, dir := range []string{"tunnel", "cmd/internal/app", "config"} {
		files, err := filepath.Glob(filepath.Join(repoRoot, dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range re.FindAllStringSubmatch(string(src), -1) {
				seen++
				msg := m[2] + m[4]
				if !strings.Contains(string(doc), msg) {
					t.Errorf("%s logs %q, which docs/TROUBLESHOOTING.md does not explain", filepath.Base(f), msg)
				}
			}
		}
	}
	if seen < 20 {
		t.Fatalf("found only %d log messages in the sources; the pattern no longer matches how the code logs", seen)
	}
	// Messages put together at run time, or logged at a level chosen at run
	// time: the settings they name, and the lines themselves.
	for _, want := range []string{"--nocomp differs", "--smuxver differs", "--key or --crypt", "server does not answer",
		"packets are not KCP: the client's --crypt differs from this server's", "stream closed", "session closed",
		"forward failed", "udp forward failed", "socks connect failed", "socks udp associate failed", "socks request refused"} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("docs/TROUBLESHOOTING.md does not mention %q", want)
		}
	}
}

package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// TestExampleConfigs runs both binaries from the example JSON files that the
// README tells operators to copy to /etc/smuxtun/, with the addresses and the key
// given as flags (flags win over the file).
func TestExampleConfigs(t *testing.T) {
	server := filepath.Join(repoRoot, "systemd", "server.json")
	client := filepath.Join(repoRoot, "systemd", "client.json")

	t.Run("refused-without-a-key", func(t *testing.T) {
		// The examples ship with an empty key, so that a copy nobody edited
		// cannot run on a guessable one.
		for _, c := range []struct{ name, file string }{{demo.ServerBinary, server}, {demo.ClientBinary, client}} {
			p, err := demo.StartProc(c.name, demo.BinaryPath(binDir, c.name), "-c", c.file)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.Done():
			case <-time.After(5 * time.Second):
				p.Kill()
				t.Fatalf("%s -c %s without a key kept running", c.name, c.file)
			}
			if p.ExitCode() == 0 || !strings.Contains(strings.ToLower(p.Output()), "key") {
				t.Errorf("want a non-zero exit and a message about the key:\n%s", p.Describe())
			}
		}
	})

	t.Run("runs-with-flags-over-the-file", func(t *testing.T) {
		tg := startTarget(t, false)
		tun := startTunnel(t, demo.Options{
			Target:     tg.Addr(),
			ServerArgs: []string{"-c", server},
			ClientArgs: []string{"-c", client},
		})
		for _, op := range operations {
			if err := through(tun, op, 1<<20, 20*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	})
}

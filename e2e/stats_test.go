//go:build unix

package e2e

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// TestStatistics: after a transfer, SIGUSR1 prints the server's counters and
// --snmplog writes them as CSV rows, as the README's statistics section says.
func TestStatistics(t *testing.T) {
	const size = 1 << 20
	dir := t.TempDir()
	tg := startTarget(t, false)
	tun := startTunnel(t, demo.Options{
		Target:     tg.Addr(),
		ServerArgs: []string{"--snmplog", filepath.Join(dir, "snmp-20060102.csv"), "--snmpperiod", "1"},
	})
	if err := through(tun, operations[0], size, 20*time.Second); err != nil {
		t.Fatal(err)
	}

	t.Run("SIGUSR1", func(t *testing.T) {
		bytesUp := regexp.MustCompile(`(?m)^BytesUp: (\d+)$`)
		streams := regexp.MustCompile(`(?m)^StreamsOpened: (\d+)$`)
		if err := tun.Server.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			out := tun.Server.Output()
			up, opened := bytesUp.FindStringSubmatch(out), streams.FindStringSubmatch(out)
			if up != nil && opened != nil {
				n, _ := strconv.Atoi(up[1])
				s, _ := strconv.Atoi(opened[1])
				// The readiness probes count too, so at least: the upload and its header.
				if n < size || s < 1 {
					t.Fatalf("after a %d-byte upload SIGUSR1 shows BytesUp %d, StreamsOpened %d", size, n, s)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no counters 5 s after SIGUSR1:\n%s", tun.Server.Describe())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if tun.Server.Exited() {
			t.Fatalf("SIGUSR1 stopped the server:\n%s", tun.Server.Describe())
		}
	})

	t.Run("snmplog", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := checkSnmpLog(filepath.Join(dir, time.Now().Format("snmp-20060102.csv")), size)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("--snmplog: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// checkSnmpLog wants a header naming kcp-go's and the tunnel's counters and a
// row that shows at least min bytes carried up.
func checkSnmpLog(path string, min int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1 // the last row may be half written
	records, err := r.ReadAll()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(records) < 2 {
		return fmt.Errorf("%s: %d lines, want a header and rows", path, len(records))
	}
	header := records[0]
	col := slices.Index(header, "BytesUp")
	if header[0] != "Unix" || !slices.Contains(header, "RetransSegs") || col < 0 {
		return fmt.Errorf("%s: header %v lacks Unix, RetransSegs or BytesUp", path, header)
	}
	for _, row := range records[1:] {
		if len(row) != len(header) {
			continue
		}
		if n, err := strconv.Atoi(row[col]); err == nil && n >= min {
			return nil
		}
	}
	return fmt.Errorf("%s: no row with BytesUp >= %d yet", path, min)
}

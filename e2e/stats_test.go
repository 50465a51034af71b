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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
	kcp "github.com/xtaci/kcp-go/v5"
)

// TestStatistics: after a transfer, SIGUSR1 logs the server's counters as one
// record and --snmplog writes kcp-go's as CSV rows in kcptun's columns, as the
// README's statistics section says.
func TestStatistics(t *testing.T) {
	const size = 1 << 20
	dir := t.TempDir()
	// The day's file already holds what kcptun wrote into it: its header and
	// a row. smuxtun's rows must go on with the same columns.
	kcptunHeader := append([]string{"Unix"}, kcp.DefaultSnmp.Header()...)
	kcptunRow := make([]string, len(kcptunHeader))
	for i := range kcptunRow {
		kcptunRow[i] = "7"
	}
	prior := strings.Join(kcptunHeader, ",") + "\n" + strings.Join(kcptunRow, ",") + "\n"
	if err := os.WriteFile(filepath.Join(dir, time.Now().Format("snmp-20060102.csv")), []byte(prior), 0o644); err != nil {
		t.Fatal(err)
	}
	tg := startTarget(t, false)
	tun := startTunnel(t, demo.Options{
		Target:     tg.Addr(),
		ServerArgs: []string{"--snmplog", filepath.Join(dir, "snmp-20060102.csv"), "--snmpperiod", "1"},
	})
	if err := through(tun, operations[0], size, 20*time.Second); err != nil {
		t.Fatal(err)
	}

	t.Run("SIGUSR1", func(t *testing.T) {
		// One log record, like the other lines: time, level, msg, then every
		// counter as an attribute.
		record := regexp.MustCompile(`(?m)^time=\S+ level=INFO msg=statistics (\w+=\d+ )+\w+=\d+$`)
		bytesUp := regexp.MustCompile(` BytesUp=(\d+) `)
		streams := regexp.MustCompile(` StreamsOpened=(\d+) `)
		before := strings.Count(tun.Server.Output(), "msg=statistics")
		if err := tun.Server.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(tun.Server.Output(), "msg=statistics") == before {
			if time.Now().After(deadline) {
				t.Fatalf("no statistics 5 s after SIGUSR1:\n%s", tun.Server.Describe())
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // anything else SIGUSR1 might print
		out := tun.Server.Output()
		lines := record.FindAllString(out, -1)
		if len(lines) != 1 || strings.Count(out, "msg=statistics") != 1 {
			t.Fatalf("want exactly one statistics record, got:\n%s", out)
		}
		line := lines[0]
		for _, name := range []string{"SessionsOpened", "StreamsActive", "BytesDown", "InCsumErrors", "RetransSegs", "FECRecovered", "OOBPackets"} {
			if !strings.Contains(line, " "+name+"=") {
				t.Errorf("statistics lack %s: %s", name, line)
			}
		}
		if strings.Contains(out, "\nBytesUp: ") {
			t.Errorf("bare Name: value lines in the log:\n%s", out)
		}
		up, opened := bytesUp.FindStringSubmatch(line), streams.FindStringSubmatch(line)
		if up == nil || opened == nil {
			t.Fatalf("statistics lack BytesUp or StreamsOpened: %s", line)
		}
		n, _ := strconv.Atoi(up[1])
		st, _ := strconv.Atoi(opened[1])
		// The readiness probes count too, so at least: the upload and its header.
		if n < size || st < 1 {
			t.Fatalf("after a %d-byte upload SIGUSR1 shows BytesUp %d, StreamsOpened %d", size, n, st)
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
		path := filepath.Join(dir, time.Now().Format("snmp-20060102.csv"))
		if b, err := os.ReadFile(path); err != nil || !strings.HasPrefix(string(b), prior) {
			t.Errorf("the rows kcptun wrote are not at the start of %s any more (%v)", path, err)
		}
		if _, err := os.Stat(path + ".1"); err == nil {
			t.Errorf("rows went to %s.1, beside a file in kcptun's own columns", path)
		}
	})
}

// checkSnmpLog wants kcptun's header (Unix and kcp-go's 30 counters, no
// others), every complete row as wide, and a row that shows at least min bytes
// delivered by KCP.
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
	col := slices.Index(header, "BytesReceived")
	if len(header) != 31 || header[0] != "Unix" || !slices.Contains(header, "RetransSegs") || col < 0 || slices.Contains(header, "BytesUp") {
		return fmt.Errorf("%s: header %v is not kcptun's 31 columns", path, header)
	}
	found := false
	for i, row := range records[1:] {
		if len(row) != len(header) {
			if i == len(records)-2 {
				continue // being written
			}
			return fmt.Errorf("%s: row %d has %d fields, the header %d", path, i+1, len(row), len(header))
		}
		if n, err := strconv.Atoi(row[col]); err == nil && n >= min {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%s: no row with BytesReceived >= %d yet", path, min)
	}
	return nil
}

package tunnel

import (
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"
)

func TestSnmpLogPath(t *testing.T) {
	at := time.Date(2026, 11, 21, 5, 6, 7, 0, time.UTC)
	cases := []struct{ pattern, want string }{
		{"./snmp-20060102.log", "snmp-20261121.log"},
		{"/var/log/2006/snmp-20060102-15.log", "/var/log/2006/snmp-20261121-05.log"}, // the directory is not a layout
		{"snmp.csv", "snmp.csv"},
	}
	for _, c := range cases {
		if got := SnmpLogPath(c.pattern, at); filepath.Clean(got) != filepath.Clean(c.want) {
			t.Errorf("SnmpLogPath(%q) = %q, want %q", c.pattern, got, c.want)
		}
	}
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestSnmpLogRollsOver: one header per file, one row per call, and a new
// file when the formatted name changes.
func TestSnmpLogRollsOver(t *testing.T) {
	dir := t.TempDir()
	pattern := filepath.Join(dir, "snmp-20060102.log")
	day1 := time.Date(2026, 11, 21, 23, 59, 0, 0, time.UTC)
	day2 := day1.Add(2 * time.Minute)
	for _, at := range []time.Time{day1, day1.Add(time.Second), day2} {
		if err := WriteSnmpRow(pattern, at); err != nil {
			t.Fatal(err)
		}
	}
	want := append(append([]string{"Unix"}, kcp.DefaultSnmp.Header()...), statNames...)
	for _, c := range []struct {
		file string
		rows int
	}{{"snmp-20261121.log", 2}, {"snmp-20261122.log", 1}} {
		rows := readCSV(t, filepath.Join(dir, c.file))
		if len(rows) != c.rows+1 {
			t.Fatalf("%s: %d lines, want a header and %d rows", c.file, len(rows), c.rows)
		}
		if strings.Join(rows[0], ",") != strings.Join(want, ",") {
			t.Fatalf("%s header = %v", c.file, rows[0])
		}
		for _, r := range rows[1:] {
			if len(r) != len(want) {
				t.Fatalf("%s: row has %d fields, header %d", c.file, len(r), len(want))
			}
		}
	}
	if rows := readCSV(t, filepath.Join(dir, "snmp-20261122.log")); rows[1][0] != strconv.FormatInt(day2.Unix(), 10) {
		t.Fatalf("Unix column = %q, want %d", rows[1][0], day2.Unix())
	}
}

func TestRunSnmpLogger(t *testing.T) {
	check := goroutineBaseline(t)
	pattern := filepath.Join(t.TempDir(), "snmp.csv")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunSnmpLogger(ctx, pattern, 20*time.Millisecond, testLogger()) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, err := os.ReadFile(pattern); err == nil && strings.Count(string(b), "\n") >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no rows written")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	check()
}

func TestRunSnmpLoggerBadPathKeepsGoing(t *testing.T) {
	pattern := filepath.Join(t.TempDir(), "no-such-dir", "snmp.csv")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := RunSnmpLogger(ctx, pattern, 10*time.Millisecond, testLogger()); err != nil {
		t.Fatal(err)
	}
	if err := WriteSnmpRow(pattern, time.Now()); err == nil || !strings.Contains(err.Error(), "snmplog") {
		t.Fatalf("WriteSnmpRow to a missing directory: %v", err)
	}
}

func TestDumpStats(t *testing.T) {
	var b strings.Builder
	if err := DumpStats(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, name := range append(append([]string(nil), statNames...), kcp.DefaultSnmp.Header()...) {
		if !strings.Contains(out, "\n"+name+": ") && !strings.HasPrefix(out, name+": ") {
			t.Errorf("DumpStats output lacks %s", name)
		}
	}
}

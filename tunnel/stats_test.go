package tunnel

import (
	"context"
	"encoding/csv"
	"log/slog"
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
	want := append([]string{"Unix"}, kcp.DefaultSnmp.Header()...)
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

// kcptunHeader is the first line kcptun writes into its --snmplog files.
const kcptunHeader = "Unix,BytesSent,BytesReceived,MaxConn,ActiveOpens,PassiveOpens,CurrEstab,InErrs,InCsumErrors," +
	"KCPInErrors,InPkts,OutPkts,InSegs,OutSegs,InBytes,OutBytes,RetransSegs,FastRetransSegs,EarlyRetransSegs," +
	"LostSegs,RepeatSegs,FECFullShards,FECParityShards,FECErrs,FECRecovered,FECShardSet,FECShardMin," +
	"RingBufferSndQueue,RingBufferRcvQueue,RingBufferSndBuffer,OOBPackets"

// checkColumns fails unless path holds a header and rows, every row with as
// many fields as the header, and returns the rows after the header.
func checkColumns(t *testing.T, path, header string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1 // count them here, to say which row differs
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 2 || strings.Join(rows[0], ",") != header {
		t.Fatalf("%s: want the header %q and rows, got %q", filepath.Base(path), header, rows)
	}
	for i, row := range rows[1:] {
		if len(row) != len(rows[0]) {
			t.Errorf("%s: row %d has %d fields, the header %d", filepath.Base(path), i+1, len(row), len(rows[0]))
		}
	}
	return rows[1:]
}

// TestSnmpLogKcptunColumns: the header is kcptun's, 31 columns, and rows
// appended to a file kcptun wrote keep its column count.
func TestSnmpLogKcptunColumns(t *testing.T) {
	if got := strings.Join(snmpHeader(), ","); got != kcptunHeader {
		t.Fatalf("snmplog header\n%s\nwant kcptun's\n%s", got, kcptunHeader)
	}
	if n := strings.Count(kcptunHeader, ",") + 1; n != 31 {
		t.Fatalf("kcptun's header has %d columns, want 31", n)
	}
	path := filepath.Join(t.TempDir(), "snmp.log")
	kcptunRow := "1700000000" + strings.Repeat(",7", 30) + "\n"
	if err := os.WriteFile(path, []byte(kcptunHeader+"\n"+kcptunRow), 0o644); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 21, 5, 6, 7, 0, time.UTC)
	for i := range 2 {
		if err := WriteSnmpRow(path, at.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	rows := checkColumns(t, path, kcptunHeader)
	if len(rows) != 3 || rows[0][0] != "1700000000" || rows[2][0] != strconv.FormatInt(at.Unix()+60, 10) {
		t.Fatalf("want kcptun's row then two of ours, got %q", rows)
	}
	if _, err := os.Stat(path + ".1"); err == nil {
		t.Errorf("rows went beside a file with kcptun's header")
	}
}

// TestSnmpLogOtherHeader: a file whose header differs (an older smuxtun wrote
// 39 columns, a CRLF header from another tool matches) gets no row; the rows
// go to name.1, or the next sibling with the right header or none at all.
func TestSnmpLogOtherHeader(t *testing.T) {
	older := kcptunHeader + ",SessionsOpened,SessionsActive,SessionErrors,StreamsOpened,StreamsActive,StreamErrors,BytesUp,BytesDown"
	olderFile := older + "\n1700000000" + strings.Repeat(",1", 38) + "\n"
	ours := "1700000000" + strings.Repeat(",2", 30) + "\n"
	at := time.Date(2026, 11, 21, 5, 6, 7, 0, time.UTC)
	cases := []struct {
		name     string
		files    map[string]string // suffix -> content
		wantFile string            // where the rows go
		wantRows int
	}{
		{"older smuxtun", map[string]string{"": olderFile}, ".1", 2},
		{"older smuxtun, then ours beside it", map[string]string{"": olderFile, ".1": kcptunHeader + "\n" + ours}, ".1", 3},
		{"two older files", map[string]string{"": olderFile, ".1": olderFile}, ".2", 2},
		{"header only, longer", map[string]string{"": older + "\n"}, ".1", 2},
		{"header without its end", map[string]string{"": kcptunHeader[:40]}, ".1", 2},
		{"CRLF line ending", map[string]string{"": kcptunHeader + "\r\n"}, "", 2},
		{"empty file", map[string]string{"": ""}, "", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "snmp.csv")
			for suffix, content := range c.files {
				if err := os.WriteFile(path+suffix, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 2 {
				if err := WriteSnmpRow(path, at.Add(time.Duration(i)*time.Minute)); err != nil {
					t.Fatal(err)
				}
			}
			for suffix, content := range c.files {
				if suffix == c.wantFile {
					continue
				}
				if b, _ := os.ReadFile(path + suffix); string(b) != content {
					t.Errorf("snmp.csv%s changed:\n%s", suffix, b)
				}
			}
			header := kcptunHeader
			if c.files[c.wantFile] != "" {
				header = strings.TrimSuffix(strings.SplitN(c.files[c.wantFile], "\n", 2)[0], "\r")
			}
			if rows := checkColumns(t, path+c.wantFile, header); len(rows) != c.wantRows {
				t.Errorf("snmp.csv%s: %d rows, want %d", c.wantFile, len(rows), c.wantRows)
			}
		})
	}
}

// TestRunSnmpLoggerSaysWhereRowsGo: writing beside a file with other columns
// is logged once, naming both files.
func TestRunSnmpLoggerSaysWhereRowsGo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snmp.csv")
	if err := os.WriteFile(path, []byte("Unix,Something,Else\n1,2,3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunSnmpLogger(ctx, path, 10*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, err := os.ReadFile(path + ".1"); err == nil && strings.Count(string(b), "\n") >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no rows in snmp.csv.1")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	want := `level=WARN msg="snmp log file has other columns than kcptun's; writing the rows beside it" file=` + path + " instead=" + path + ".1\n"
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "time=") || !strings.HasSuffix(out, " "+want) {
		t.Errorf("log:\n%s\nwant one line ending in:\n%s", out, want)
	}
	checkColumns(t, path+".1", kcptunHeader)
}

// TestDumpStats: SIGUSR1's dump is one record at Info, msg "statistics",
// with every tunnel counter and every kcp-go counter as an integer attribute.
func TestDumpStats(t *testing.T) {
	stats.bytesDown.Add(12345)
	var b strings.Builder
	DumpStats(slog.New(slog.NewTextHandler(&b, nil)))
	out := b.String()
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "time=") || !strings.Contains(out, " level=INFO msg=statistics ") {
		t.Fatalf("want one line at INFO with msg=statistics, got:\n%s", out)
	}
	var names []string
	for _, s := range statList {
		names = append(names, s.name)
	}
	names = append(names, kcp.DefaultSnmp.Header()...)
	fields := strings.Fields(out)[3:]
	if len(fields) != len(names) {
		t.Errorf("%d attributes, want %d (%d tunnel counters, %d of kcp-go's):\n%s", len(fields), len(names), len(statList), len(names)-len(statList), out)
	}
	for i, name := range names {
		if i >= len(fields) {
			break
		}
		k, v, _ := strings.Cut(fields[i], "=")
		if _, err := strconv.ParseInt(v, 10, 64); k != name || err != nil {
			t.Errorf("attribute %d is %q, want %s=<integer>", i, fields[i], name)
		}
	}
	for _, f := range fields {
		if k, v, _ := strings.Cut(f, "="); k == "BytesDown" {
			if n, _ := strconv.ParseUint(v, 10, 64); n < 12345 {
				t.Errorf("BytesDown=%s after 12345 bytes down", v)
			}
		}
	}
}

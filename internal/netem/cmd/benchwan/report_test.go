package main

import (
	"encoding/csv"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSummaryAndOutputs(t *testing.T) {
	rows := []row{
		{Set: "default", Path: "near", Stack: stackRef, Rep: 1, result: result{DownMbps: 100, UpMbps: 50, RTT50: 10, RTT90: 20}},
		{Set: "default", Path: "near", Stack: stackSmuxtun, Rep: 1, result: result{DownMbps: 90, UpMbps: 60, RTT50: 12, RTT90: 22}},
		{Set: "default", Path: "near", Stack: stackRef, Rep: 2, result: result{DownMbps: 120, UpMbps: 40, RTT50: 14, RTT90: 30}},
		{Set: "default", Path: "near", Stack: stackSmuxtun, Rep: 2, result: result{DownMbps: 110, UpMbps: 40, RTT50: 16, RTT90: 26}},
		{Set: "default", Path: "near", Stack: stackRef, Rep: 3, result: result{DownMbps: 80, UpMbps: 45}, Err: "failed"},
	}
	sum := summarize(rows)
	if len(sum) != 1 {
		t.Fatalf("%d summaries, want 1", len(sum))
	}
	s := sum[0]
	if s.Ref.N != 2 || s.Ref.Down != 110 || s.Ref.Up != 45 || s.Smux.Down != 100 || s.Smux.RTT90 != 24 {
		t.Errorf("summary %+v: want medians of the runs without error", s)
	}
	dir := t.TempDir()
	if err := writeCSV(filepath.Join(dir, "b.csv"), rows, sum); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "b.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + len(rows) + 3; len(recs) != want {
		t.Errorf("%d CSV records, want %d", len(recs), want)
	}
	if err := writeChart(filepath.Join(dir, "b.png"), sum); err != nil {
		t.Fatal(err)
	}
	pf, err := os.Open(filepath.Join(dir, "b.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	if _, err := png.Decode(pf); err != nil {
		t.Errorf("chart: %v", err)
	}
	md := markdown(sum, config{reps: 2, warmup: time.Second, measure: time.Second}, time.Minute)
	if !strings.Contains(md, "| 110.0 | 100.0 | 0.91 |") {
		t.Errorf("markdown lacks the download medians and ratio:\n%s", md)
	}
}

package main

import (
	"encoding/csv"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// stackSummary holds the medians over one stack's successful runs.
type stackSummary struct {
	N                      int
	Down, Up, RTT50, RTT90 float64
}

// summary is one set and path: both stacks side by side.
type summary struct {
	Set, Path string
	P         wanPath
	Ref, Smux stackSummary
}

func summarize(rows []row) []summary {
	var out []summary
	find := func(set, path string) *summary {
		for i := range out {
			if out[i].Set == set && out[i].Path == path {
				return &out[i]
			}
		}
		s := summary{Set: set, Path: path}
		for _, p := range paths {
			if p.Name == path {
				s.P = p
			}
		}
		out = append(out, s)
		return &out[len(out)-1]
	}
	type key struct{ set, path, stack string }
	vals := map[key][]result{}
	for _, r := range rows {
		find(r.Set, r.Path)
		if r.Err == "" {
			k := key{r.Set, r.Path, r.Stack}
			vals[k] = append(vals[k], r.result)
		}
	}
	med := func(rs []result, f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	of := func(rs []result) stackSummary {
		if len(rs) == 0 {
			return stackSummary{}
		}
		return stackSummary{
			N:     len(rs),
			Down:  med(rs, func(r result) float64 { return r.DownMbps }),
			Up:    med(rs, func(r result) float64 { return r.UpMbps }),
			RTT50: med(rs, func(r result) float64 { return r.RTT50 }),
			RTT90: med(rs, func(r result) float64 { return r.RTT90 }),
		}
	}
	for i := range out {
		out[i].Ref = of(vals[key{out[i].Set, out[i].Path, stackRef}])
		out[i].Smux = of(vals[key{out[i].Set, out[i].Path, stackSmuxtun}])
	}
	return out
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
func u64(v uint64) string { return strconv.FormatUint(v, 10) }
func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// writeCSV writes one row per run, then one summary row per set, path and
// stack (rep "median") and one ratio row (stack "smuxtun/ref").
func writeCSV(name string, rows []row, sum []summary) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"set", "path", "stack", "rep", "down_mbps", "up_mbps", "rtt_p50_ms", "rtt_p90_ms", "rtt_samples", "rtt_lost",
		"up_pkts", "up_queue_drops", "up_loss_drops", "down_pkts", "down_queue_drops", "down_loss_drops", "error"})
	for _, r := range rows {
		w.Write([]string{r.Set, r.Path, r.Stack, strconv.Itoa(r.Rep), f2(r.DownMbps), f2(r.UpMbps), f1(r.RTT50), f1(r.RTT90),
			strconv.Itoa(r.RTTSamples), strconv.Itoa(r.RTTLost),
			u64(r.Up.PacketsIn), u64(r.Up.DroppedQueue), u64(r.Up.DroppedLoss),
			u64(r.Down.PacketsIn), u64(r.Down.DroppedQueue), u64(r.Down.DroppedLoss), r.Err})
	}
	for _, s := range sum {
		for _, st := range []struct {
			name string
			v    stackSummary
		}{{stackRef, s.Ref}, {stackSmuxtun, s.Smux}} {
			w.Write([]string{s.Set, s.Path, st.name, "median", f2(st.v.Down), f2(st.v.Up), f1(st.v.RTT50), f1(st.v.RTT90), "", "", "", "", "", "", "", "", "runs=" + strconv.Itoa(st.v.N)})
		}
		w.Write([]string{s.Set, s.Path, "smuxtun/ref", "ratio", f2(ratio(s.Smux.Down, s.Ref.Down)), f2(ratio(s.Smux.Up, s.Ref.Up)),
			f2(ratio(s.Smux.RTT50, s.Ref.RTT50)), f2(ratio(s.Smux.RTT90, s.Ref.RTT90)), "", "", "", "", "", "", "", "", ""})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// markdown renders the summary as one table per set.
func markdown(sum []summary, c config, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nbench-wan: %d repetition(s) per stack and path, %v warm-up, %v measured, took %v\n",
		c.reps, c.warmup, c.measure, took.Round(time.Second))
	set := ""
	for _, s := range sum {
		if s.Set != set {
			set = s.Set
			fmt.Fprintf(&b, "\nSet %q. Goodput in Mbit/s of one connection, RTT in ms of 100-byte requests during the download (p50 / p90); medians over runs; ratio = smuxtun / ref.\n\n", set)
			b.WriteString("| path | download ref | download smuxtun | ratio | upload ref | upload smuxtun | ratio | RTT ref | RTT smuxtun | ratio (p50) |\n")
			b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		}
		fmt.Fprintf(&b, "| %s (%d Mbit/s, %v, %g %%) | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s |\n",
			s.Path, s.P.Rate/1e6, s.P.Delay, s.P.Loss*100,
			f1(s.Ref.Down), f1(s.Smux.Down), f2(ratio(s.Smux.Down, s.Ref.Down)),
			f1(s.Ref.Up), f1(s.Smux.Up), f2(ratio(s.Smux.Up, s.Ref.Up)),
			f1(s.Ref.RTT50), f1(s.Ref.RTT90), f1(s.Smux.RTT50), f1(s.Smux.RTT90), f2(ratio(s.Smux.RTT50, s.Ref.RTT50)))
	}
	b.WriteString("\nChart (bench-wan.png): one group per set and path; bars left to right are download ref, download smuxtun, upload ref, upload smuxtun (light: ref, dark: smuxtun; blue: download, orange: upload); grey lines every 10 Mbit/s.\n")
	return b.String()
}

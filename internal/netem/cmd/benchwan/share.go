package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/smuxtun/smuxtun/internal/netem"
)

// sharePair is two stacks downloading at the same time through one
// emulated bottleneck.
type sharePair struct {
	Name string
	A, B string // stacks
}

var sharePairs = []sharePair{
	{"smuxtun+smuxtun", stackSmuxtun, stackSmuxtun},
	{"smuxtun+ref", stackSmuxtun, stackRef},
}

// shareRow is one run of a pair: each session's download goodput.
type shareRow struct {
	Pair       string
	Rep        int
	AMbps      float64
	BMbps      float64
	Down       netem.Stats
	Err        string
	RTT50A     float64
	RTT50B     float64
	ShareA     float64 // A's part of the total
	TotalMbps  float64
	PathName   string
	StackA     string
	StackB     string
	LinkMbps   float64
	QueueDrops uint64
}

// runShare starts both stacks behind one relay and measures their
// downloads side by side.
func runShare(c config, tgt *target, p wanPath, pair sharePair, seed uint64) (shareRow, error) {
	r := shareRow{Pair: pair.Name, PathName: p.Name, StackA: pair.A, StackB: pair.B, LinkMbps: float64(p.Rate) / 1e6}
	link := netem.Link{Rate: p.Rate, Delay: p.Delay, Loss: p.Loss, QueueDelay: queueBound}
	relay, err := netem.Start(netem.Config{Listen: "127.0.0.1:0", Upstream: "127.0.0.1:9", Up: link, Down: link, Seed: seed})
	if err != nil {
		return r, err
	}
	defer relay.Close()
	def := set{Name: "default"}
	a, err := startStack(c, tgt, def, relay, pair.A)
	if err != nil {
		return r, err
	}
	defer a.stop()
	b, err := startStack(c, tgt, def, relay, pair.B)
	if err != nil {
		return r, err
	}
	defer b.stop()
	var wg sync.WaitGroup
	var ra, rb result
	var ea, eb error
	wg.Add(2)
	go func() { defer wg.Done(); ra, ea = download(a.caddr, c.warmup, c.measure) }()
	go func() { defer wg.Done(); rb, eb = download(b.caddr, c.warmup, c.measure) }()
	wg.Wait()
	if ea != nil {
		return r, a.fail(ea)
	}
	if eb != nil {
		return r, b.fail(eb)
	}
	r.AMbps, r.BMbps = ra.DownMbps, rb.DownMbps
	r.RTT50A, r.RTT50B = ra.RTT50, rb.RTT50
	r.TotalMbps = r.AMbps + r.BMbps
	if r.TotalMbps > 0 {
		r.ShareA = r.AMbps / r.TotalMbps
	}
	r.Down = relay.Down()
	r.QueueDrops = r.Down.DroppedQueue
	return r, nil
}

// runShares runs every pair reps times on the intercontinental path,
// interleaved, writes bench-wan-share.csv and returns a Markdown section.
func runShares(c config, tgt *target, began time.Time) (string, error) {
	var p wanPath
	for _, q := range paths {
		if q.Name == "intercontinental" {
			p = q
		}
	}
	var rows []shareRow
	for rep := 1; rep <= c.reps; rep++ {
		for _, pair := range sharePairs {
			fmt.Fprintf(os.Stderr, "[%s] share %s %s rep %d: ", time.Since(began).Round(time.Second), p.Name, pair.Name, rep)
			r, err := runShare(c, tgt, p, pair, uint64(100+rep))
			r.Rep = rep
			if err != nil {
				r.Err = err.Error()
				fmt.Fprintf(os.Stderr, "error: %v\n", err)
			} else {
				fmt.Fprintf(os.Stderr, "%s %.1f + %s %.1f Mbit/s (share %.2f), rtt p50 %.0f / %.0f ms\n",
					pair.A, r.AMbps, pair.B, r.BMbps, r.ShareA, r.RTT50A, r.RTT50B)
			}
			rows = append(rows, r)
		}
	}
	var csv strings.Builder
	csv.WriteString("pair,rep,path,stack_a,stack_b,a_mbps,b_mbps,share_a,total_mbps,link_mbps,rtt_p50_a_ms,rtt_p50_b_ms,down_queue_drops,error\n")
	for _, r := range rows {
		fmt.Fprintf(&csv, "%s,%d,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%d,%s\n", r.Pair, r.Rep, r.PathName, r.StackA, r.StackB,
			f1(r.AMbps), f1(r.BMbps), f2(r.ShareA), f1(r.TotalMbps), f1(r.LinkMbps), f1(r.RTT50A), f1(r.RTT50B), r.QueueDrops,
			strings.ReplaceAll(r.Err, ",", ";"))
	}
	if err := os.WriteFile(filepath.Join(c.out, "bench-wan-share.csv"), []byte(csv.String()), 0o644); err != nil {
		return "", err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "\nTwo sessions downloading at once through one emulated %s path (%.0f Mbit/s): each session's goodput in Mbit/s, median over %d runs, and the first session's share of the total (range over runs).\n\n",
		p.Name, float64(p.Rate)/1e6, c.reps)
	md.WriteString("| sessions | first | second | first's share (min–max) | total |\n| --- | --- | --- | --- | --- |\n")
	for _, pair := range sharePairs {
		var a, b, sh, tot []float64
		for _, r := range rows {
			if r.Pair == pair.Name && r.Err == "" {
				a, b, sh, tot = append(a, r.AMbps), append(b, r.BMbps), append(sh, r.ShareA), append(tot, r.TotalMbps)
			}
		}
		if len(a) == 0 {
			fmt.Fprintf(&md, "| %s | failed | | | |\n", pair.Name)
			continue
		}
		fmt.Fprintf(&md, "| %s | %s | %s | %s (%s–%s) | %s |\n", pair.Name, f1(med(a)), f1(med(b)), f2(med(sh)),
			f2(slices.Min(sh)), f2(slices.Max(sh)), f1(med(tot)))
	}
	return md.String(), nil
}

func med(v []float64) float64 { return quantile(v, 0.5) }

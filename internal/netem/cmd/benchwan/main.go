// Command benchwan compares smuxtun with the kcptun-style reference stack on
// emulated internet paths (`make bench-wan`). Each stack runs as a client and
// a server process at default flags, with an internal/netem relay between
// them; one TCP target behind both serves downloads, uploads and echoes.
//
// Environment: BENCH_WAN_REPS (default 3) repetitions per stack and path,
// interleaved ref, smuxtun, ref, ...; BENCH_WAN_BIGWIN=1 adds a second set
// with --mode fast3 --sndwnd 2048 --rcvwnd 2048 on both ends. Then two
// sessions download side by side through one intercontinental path: two
// smuxtun sessions, and a smuxtun session beside a reference one (-share).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
	"github.com/smuxtun/smuxtun/internal/netem"
)

// wanPath is an emulated path; both directions get the same settings.
type wanPath struct {
	Name  string
	Rate  int64 // bits/s
	Delay time.Duration
	Loss  float64
}

var paths = []wanPath{
	{"near", 200e6, 5 * time.Millisecond, 0},
	{"intercontinental", 100e6, 90 * time.Millisecond, 0.01},
	{"lossy", 50e6, 60 * time.Millisecond, 0.05},
	{"awful", 20e6, 150 * time.Millisecond, 0.15},
}

const queueBound = 60 * time.Millisecond

// set is a group of runs with the same extra flags on every end.
type set struct {
	Name  string
	Flags []string
}

const (
	stackRef     = "ref"
	stackSmuxtun = "smuxtun"
	benchKey     = "bench-wan-key"
)

type config struct {
	bin, out        string
	reps            int
	warmup, measure time.Duration
	only            string
	share           bool // run the two-session sharing experiment
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "bin", "directory with smuxtun-client, smuxtun-server and refkcptun")
	flag.StringVar(&c.out, "out", "bench-wan", "directory for bench-wan.csv and bench-wan.png")
	flag.DurationVar(&c.warmup, "warmup", 3*time.Second, "time before measuring each transfer")
	flag.DurationVar(&c.measure, "measure", 10*time.Second, "measuring time of each transfer")
	flag.StringVar(&c.only, "paths", "", "comma-separated path names to run (default all)")
	flag.BoolVar(&c.share, "share", true, "also run two sessions side by side on the intercontinental path")
	flag.Parse()
	c.reps = 3
	if s := os.Getenv("BENCH_WAN_REPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fatalf("BENCH_WAN_REPS=%q: want a positive number", s)
		}
		c.reps = n
	}
	sets := []set{{"default", nil}}
	if os.Getenv("BENCH_WAN_BIGWIN") == "1" {
		sets = append(sets, set{"fast3-2048", []string{"--mode", "fast3", "--sndwnd", "2048", "--rcvwnd", "2048"}})
	}
	if err := run(c, sets); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "benchwan: "+format+"\n", a...)
	os.Exit(1)
}

// row is one run.
type row struct {
	Set, Path, Stack string
	Rep              int
	result
	Err string
}

func run(c config, sets []set) error {
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	tgt, err := startTarget()
	if err != nil {
		return err
	}
	defer tgt.close()
	var selected []wanPath
	for _, p := range paths {
		if c.only == "" || strings.Contains(","+c.only+",", ","+p.Name+",") {
			selected = append(selected, p)
		}
	}
	began := time.Now()
	var rows []row
	for _, s := range sets {
		for _, p := range selected {
			for rep := 1; rep <= c.reps; rep++ {
				for _, stack := range []string{stackRef, stackSmuxtun} {
					r := row{Set: s.Name, Path: p.Name, Stack: stack, Rep: rep}
					fmt.Fprintf(os.Stderr, "[%s] %s %s %s rep %d: ", time.Since(began).Round(time.Second), s.Name, p.Name, stack, rep)
					res, err := runOne(c, tgt, s, p, stack, uint64(rep))
					r.result = res
					if err != nil {
						r.Err = err.Error()
						fmt.Fprintf(os.Stderr, "error: %v\n", err)
					} else {
						fmt.Fprintf(os.Stderr, "down %.1f up %.1f Mbit/s, rtt p50 %.0f p90 %.0f ms (%d, %d lost)\n",
							res.DownMbps, res.UpMbps, res.RTT50, res.RTT90, res.RTTSamples, res.RTTLost)
					}
					rows = append(rows, r)
				}
			}
		}
	}
	shares := ""
	if c.share {
		var err error
		if shares, err = runShares(c, tgt, began); err != nil {
			return err
		}
	}
	sum := summarize(rows)
	csvPath := filepath.Join(c.out, "bench-wan.csv")
	if err := writeCSV(csvPath, rows, sum); err != nil {
		return err
	}
	pngPath := filepath.Join(c.out, "bench-wan.png")
	if err := writeChart(pngPath, sum); err != nil {
		return err
	}
	fmt.Print(markdown(sum, c, time.Since(began)))
	fmt.Print(shares)
	fmt.Fprintf(os.Stderr, "wrote %s and %s\n", csvPath, pngPath)
	return nil
}

// runOne starts a server, a relay and a client for one stack and measures.
func runOne(c config, tgt *target, s set, p wanPath, stack string, seed uint64) (result, error) {
	var res result
	link := netem.Link{Rate: p.Rate, Delay: p.Delay, Loss: p.Loss, QueueDelay: queueBound}
	relay, err := netem.Start(netem.Config{Listen: "127.0.0.1:0", Upstream: "127.0.0.1:9", Up: link, Down: link, Seed: seed})
	if err != nil {
		return res, err
	}
	defer relay.Close()
	st, err := startStack(c, tgt, s, relay, stack)
	if err != nil {
		return res, err
	}
	defer st.stop()
	if res, err = download(st.caddr, c.warmup, c.measure); err != nil {
		return res, st.fail(err)
	}
	if res.UpMbps, err = upload(st.caddr, tgt, c.warmup, c.measure); err != nil {
		return res, st.fail(err)
	}
	res.Up, res.Down = relay.Up(), relay.Down()
	if st.server.Exited() || st.client.Exited() {
		return res, st.fail(fmt.Errorf("a process exited during the run"))
	}
	return res, nil
}

// stackRun is one stack's server and client, the client reaching the server
// through its own entrance of a relay.
type stackRun struct {
	server, client *demo.Proc
	caddr          string
}

func (s *stackRun) stop() {
	s.client.Stop(5 * time.Second)
	s.server.Stop(5 * time.Second)
}

func (s *stackRun) fail(err error) error {
	return fmt.Errorf("%w\n%s\n%s", err, s.server.Describe(), s.client.Describe())
}

// startStack starts a server and a client of stack with the set's flags,
// the client going through a new entrance of relay, and waits until the
// tunnel carries an echo.
func startStack(c config, tgt *target, s set, relay *netem.Relay, stack string) (*stackRun, error) {
	sport, err := demo.FreePort("udp")
	if err != nil {
		return nil, err
	}
	cport, err := demo.FreePort("tcp")
	if err != nil {
		return nil, err
	}
	saddr := fmt.Sprintf("127.0.0.1:%d", sport)
	caddr := fmt.Sprintf("127.0.0.1:%d", cport)
	entrance, err := relay.AddEntrance(saddr)
	if err != nil {
		return nil, err
	}
	var sargs, cargs []string
	var sbin, cbin string
	switch stack {
	case stackRef:
		sbin, cbin = filepath.Join(c.bin, "refkcptun"), filepath.Join(c.bin, "refkcptun")
		sargs = []string{"server", "-l", saddr, "-t", tgt.addr(), "--key", benchKey}
		cargs = []string{"client", "-l", caddr, "-r", entrance.String(), "--key", benchKey}
	default:
		sbin, cbin = demo.BinaryPath(c.bin, "smuxtun-server"), demo.BinaryPath(c.bin, "smuxtun-client")
		sargs = []string{"--listen", saddr, "--target", tgt.addr(), "--key", benchKey, "--quiet"}
		cargs = []string{"--localaddr", caddr, "--remoteaddr", entrance.String(), "--key", benchKey, "--quiet"}
	}
	sargs = append(sargs, s.Flags...)
	cargs = append(cargs, s.Flags...)
	st := &stackRun{caddr: caddr}
	if st.server, err = demo.StartProc(stack+"-server", sbin, sargs...); err != nil {
		return nil, err
	}
	time.Sleep(200 * time.Millisecond) // the server binds its UDP port
	if st.client, err = demo.StartProc(stack+"-client", cbin, cargs...); err != nil {
		st.server.Stop(5 * time.Second)
		return nil, err
	}
	if err := waitReady(caddr, 30*time.Second); err != nil {
		err = st.fail(err)
		st.stop()
		return nil, err
	}
	return st, nil
}

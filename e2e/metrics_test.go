package e2e

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/smuxtun/smuxtun/internal/demo"
)

var metricsListening = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

// metricsAddr waits for p to log where its metrics endpoint listens.
func metricsAddr(t *testing.T, p *demo.Proc) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := metricsListening.FindStringSubmatch(p.Output()); m != nil {
			return m[1]
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("no \"metrics listening\" line:\n%s", p.Describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scrapeMetrics reads http://addr/metrics with Prometheus's own parser.
func scrapeMetrics(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the official parser rejects /metrics of %s: %v", addr, err)
	}
	return fams
}

// metricValue returns the value of the sample of name whose labels include
// the given name, value pairs, or -1 if there is none.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// TestMetricsEndpoints runs both binaries with --metrics, moves an upload and
// a download through the tunnel, and scrapes both processes over HTTP: the
// counters moved on both sides, each says which side it is, and the endpoint
// goes away with the process.
func TestMetricsEndpoints(t *testing.T) {
	const size = 1 << 20
	tg := startTarget(t, false)
	tun := startTunnel(t, demo.Options{
		Target: tg.Addr(),
		// A bare port binds loopback; port 0 lets the kernel pick a free one.
		ServerArgs: []string{"--metrics", "0"},
		ClientArgs: []string{"--metrics", ":0"},
	})
	for _, op := range operations[:2] { // upload, then download
		if err := through(tun, op, size, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	addrs := map[string]string{"server": metricsAddr(t, tun.Server), "client": metricsAddr(t, tun.Client)}
	for side, addr := range addrs {
		t.Run(side, func(t *testing.T) {
			if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
				t.Errorf("a bare port bound %s, want 127.0.0.1", addr)
			}
			// The download is read to its end before through returns, but the
			// last counter update may trail it by a moment.
			var fams map[string]*dto.MetricFamily
			deadline := time.Now().Add(5 * time.Second)
			for {
				fams = scrapeMetrics(t, addr)
				if metricValue(fams, "smuxtun_stream_bytes_total", "direction", "down") >= size || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			version := testVersion
			if prebuilt {
				version = "" // whatever the build stamped
			}
			info := []string{"side", side}
			if version != "" {
				info = append(info, "version", version)
			}
			if v := metricValue(fams, "smuxtun_build_info", info...); v != 1 {
				t.Errorf("smuxtun_build_info%q = %v, want 1", info, v)
			}
			for _, c := range []struct {
				name   string
				labels []string
				min    float64
			}{
				{"smuxtun_stream_bytes_total", []string{"direction", "up"}, size},
				{"smuxtun_stream_bytes_total", []string{"direction", "down"}, size},
				// The readiness probes open streams too.
				{"smuxtun_streams_opened_total", nil, 2},
				{"smuxtun_sessions_opened_total", nil, 1},
				{"smuxtun_sessions_active", nil, 1},
				{"smuxtun_kcp_packets_total", []string{"direction", "out"}, 1},
				{"smuxtun_kcp_bytes_total", []string{"direction", "in"}, size},
			} {
				if v := metricValue(fams, c.name, c.labels...); v < c.min {
					t.Errorf("%s%q = %v, want at least %v after a %d-byte upload and download", c.name, c.labels, v, c.min, size)
				}
			}
			_, hasTarget := fams["smuxtun_target_dial_failures_total"]
			if hasTarget != (side == "server") {
				t.Errorf("smuxtun_target_dial_failures_total present: %v, want it on the server only", hasTarget)
			}
			if v := metricValue(fams, "smuxtun_target_dial_failures_total"); side == "server" && v != 0 {
				t.Errorf("target dial failures = %v with a working target", v)
			}
		})
	}

	if err := tun.Stop(5 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	for side, addr := range addrs {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("the %s's metrics endpoint %s still answers after it exited", side, addr)
		}
	}
}

// TestMetricsTargetDown: a server whose target refuses connections counts
// each refused stream in smuxtun_target_dial_failures_total.
func TestMetricsTargetDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	key := demo.GenerateKey()
	port, err := demo.FreePort("udp")
	if err != nil {
		t.Fatal(err)
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	srv, err := demo.StartProc(demo.ServerBinary, demo.BinaryPath(binDir, demo.ServerBinary),
		"--key", key, "-l", listen, "-t", dead, "--metrics", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	local, err := demo.FreePort("tcp")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := demo.StartProc(demo.ClientBinary, demo.BinaryPath(binDir, demo.ClientBinary),
		"--key", key, "-l", "127.0.0.1:"+strconv.Itoa(local), "-r", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cli.Kill)
	addr := metricsAddr(t, srv)

	deadline := time.Now().Add(15 * time.Second)
	for {
		// Each connection becomes a stream the server cannot connect.
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(local), time.Second); err == nil {
			c.Write([]byte("hello"))
			c.SetReadDeadline(time.Now().Add(time.Second))
			c.Read(make([]byte, 1))
			c.Close()
		}
		if metricValue(scrapeMetrics(t, addr), "smuxtun_target_dial_failures_total") >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no target dial failure counted in 15 s:\n%s\n%s", srv.Describe(), cli.Describe())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(srv.Output(), "cannot reach target") {
		t.Errorf("the counter moved but the log has no \"cannot reach target\":\n%s", srv.Describe())
	}
}

// TestMetricsBadValues: an invalid --metrics is refused before anything
// starts, with exit code 2 and one line naming --metrics, on both binaries;
// in a -c file the line names the file and the key.
func TestMetricsBadValues(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(file, []byte(`{"metrics": "example.com:9100"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	sides := []struct {
		binary string
		args   []string
	}{
		{demo.ServerBinary, []string{"--key", "k", "-l", "127.0.0.1:0", "-t", "127.0.0.1:1"}},
		{demo.ClientBinary, []string{"--key", "k", "-l", "127.0.0.1:0", "-r", "127.0.0.1:1"}},
	}
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"port out of range", []string{"--metrics", "70000"}, []string{"--metrics", "70000", "out of range"}},
		{"host name", []string{"--metrics", "example.com:9100"}, []string{"--metrics", "example.com", "not an IP address"}},
		{"no port", []string{"--metrics", "127.0.0.1"}, []string{"--metrics", `"127.0.0.1"`, "port"}},
		{"not an address", []string{"--metrics", "metrics"}, []string{"--metrics", "want a port, :port or IP:port"}},
		{"port range", []string{"--metrics", "127.0.0.1:9100-9101"}, []string{"--metrics", "9100-9101"}},
		{"in the JSON file", []string{"-c", file}, []string{file, "metrics", "example.com"}},
	}
	for _, s := range sides {
		for _, c := range cases {
			t.Run(s.binary+"/"+c.name, func(t *testing.T) {
				code, stderr := runToExit(t, s.binary, append(append([]string{}, s.args...), c.args...)...)
				if code != 2 {
					t.Errorf("exit code %d, want 2; stderr:\n%s", code, stderr)
				}
				if lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); len(lines) != 1 {
					t.Errorf("want one line on stderr, got %d:\n%s", len(lines), stderr)
				}
				for _, w := range append([]string{s.binary + ":"}, c.want...) {
					if !strings.Contains(stderr, w) {
						t.Errorf("stderr %q does not mention %q", stderr, w)
					}
				}
			})
		}
	}

	t.Run("port in use", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		code, stderr := runToExit(t, demo.ServerBinary, append(append([]string{}, sides[0].args...), "--metrics", busy.Addr().String())...)
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		if code != 1 || !strings.Contains(last, "metrics "+busy.Addr().String()) || !strings.Contains(last, "address already in use") {
			t.Errorf("exit code %d, last line %q; want 1 and the metrics address in use:\n%s", code, last, stderr)
		}
	})
}

// runToExit runs a binary without a key in its environment and returns its
// exit code and stderr; it fails the test if the binary is still running
// after 10 s.
func runToExit(t *testing.T, binary string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo.BinaryPath(binDir, binary), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KCPTUN_KEY=") && !strings.HasPrefix(kv, "SMUXTUN_KEY=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q still running after 10 s; stderr:\n%s", binary, args, stderr.String())
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

package tunnel

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/internal/nettest"
)

// scraper fetches and parses a metrics endpoint with Prometheus's own parser.
type scraper struct {
	t   *testing.T
	url string
	c   *http.Client
}

func newScraper(t *testing.T, m *MetricsServer) *scraper {
	t.Helper()
	// A transport of its own, closed at the end, so that no keep-alive
	// connection outlives the test.
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &scraper{t: t, url: "http://" + m.Addr().String() + MetricsPath, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (s *scraper) scrape() map[string]*dto.MetricFamily {
	s.t.Helper()
	resp, err := s.c.Get(s.url)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("GET %s: %s", s.url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		s.t.Fatalf("Content-Type %q, want the text format 0.0.4", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		s.t.Fatalf("the official parser rejects the output: %v", err)
	}
	return fams
}

// value returns the sample of family name whose labels are the given
// name, value pairs; the test fails if there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		for j, l := range m.GetLabel() {
			if l.GetName() != labels[2*j] || l.GetValue() != labels[2*j+1] {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		}
		t.Fatalf("%s has type %s", name, f.GetType())
	}
	t.Fatalf("no sample of %s with labels %q", name, labels)
	return 0
}

// waitFor scrapes until cond holds, for at most 10 s.
func (s *scraper) waitFor(what string, cond func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams := s.scrape()
		if cond(fams) {
			return fams
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("10 s and still not %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startMetrics(t *testing.T, side string) *MetricsServer {
	t.Helper()
	m, err := ListenMetrics("127.0.0.1:0", BuildInfo{Version: "v0.0.0-test", Side: side}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		m.Close() // idempotent
	})
	return m
}

// refusingAddr returns a loopback address where nothing listens.
func refusingAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestMetricsEndpoint runs a real server and client over KCP on loopback,
// moves a checked transfer and reads /metrics over HTTP with Prometheus's
// parser: the stream, byte and KCP counters moved, and a target that
// refuses connections shows in the dial-failure counter.
func TestMetricsEndpoint(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		const size = 1 << 20
		m := startMetrics(t, SideServer)
		s := newScraper(t, m)
		local := runPair(t, pairOpts{})
		before := s.scrape()

		if err := echoRoundTrip("tcp", local, randomBytes(t, size), ioTimeout); err != nil {
			t.Fatal(err)
		}
		// Both directions have been read back by now, so every byte has been counted.
		after := s.scrape()
		delta := func(name string, labels ...string) float64 {
			return value(t, after, name, labels...) - value(t, before, name, labels...)
		}
		for _, dir := range []string{"up", "down"} {
			// Each byte crosses the client and the server, both counting in this process.
			if d := delta("smuxtun_stream_bytes_total", "direction", dir); d < 2*size {
				t.Errorf("stream bytes %s grew by %.0f during a %d-byte echo through both ends", dir, d, size)
			}
		}
		if d := delta("smuxtun_streams_opened_total"); d < 1 {
			t.Errorf("streams opened grew by %.0f", d)
		}
		if d := delta("smuxtun_kcp_packets_total", "direction", "out"); d <= 0 {
			t.Errorf("KCP packets out grew by %.0f", d)
		}
		if d := delta("smuxtun_kcp_bytes_total", "direction", "in"); d < size {
			t.Errorf("KCP bytes in grew by %.0f, less than the %d bytes carried", d, size)
		}
		if v := value(t, after, "smuxtun_sessions_opened_total"); v < 2 {
			t.Errorf("sessions opened = %.0f, want the client's and the server's", v)
		}
		if v := value(t, after, "smuxtun_sessions_active"); v < 2 {
			t.Errorf("sessions active = %.0f, want at least the pair's two ends", v)
		}
		if v := value(t, after, "smuxtun_build_info", "version", "v0.0.0-test", "side", "server", "goversion", runtime.Version()); v != 1 {
			t.Errorf("build_info = %v", v)
		}

		t.Run("target-dial-failure", func(t *testing.T) {
			srv, _ := runServer(t, pairOpts{target: refusingAddr(t)})
			cli, _ := runClient(t, pairOpts{remote: srv.Addrs()[0].String()})
			start := value(t, s.scrape(), "smuxtun_target_dial_failures_total")
			streamsFailed := value(t, s.scrape(), "smuxtun_streams_failed_total")
			c, err := net.Dial("tcp", cli.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("hello"))
			// The two counters move one after the other, not at once: a
			// scrape between them is fine, as long as both move.
			s.waitFor("counting the failed dial and the failed stream", func(f map[string]*dto.MetricFamily) bool {
				return value(t, f, "smuxtun_target_dial_failures_total") > start &&
					value(t, f, "smuxtun_streams_failed_total") > streamsFailed
			})
		})

		t.Run("target-refused-and-udp-flows", func(t *testing.T) {
			u := nettest.UDPEcho(t, "127.0.0.1:0")
			srv, _ := runServer(t, pairOpts{target: startEcho(t, "tcp", "127.0.0.1:0"), allow: []string{u}})
			fwd := []string{
				"127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")) + "=" + refusingAddr(t),
				"127.0.0.1:" + strconv.Itoa(freePort(t, "udp")) + "/udp=" + u,
			}
			cli, _ := runClient(t, pairOpts{remote: srv.Addrs()[0].String(), forward: fwd, local: "-"})
			start := value(t, s.scrape(), "smuxtun_targets_refused_total")
			// The refusal's reset can end the connect itself on a loaded
			// machine; the refusal is counted either way.
			c, err := net.Dial("tcp", cli.ForwardAddrs()[0].String())
			if err == nil {
				defer c.Close()
			} else if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatal(err)
			}
			s.waitFor("counting the refused target", func(f map[string]*dto.MetricFamily) bool {
				return value(t, f, "smuxtun_targets_refused_total") == start+1
			})
			uc, err := net.Dial("udp", cli.ForwardAddrs()[1].String())
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			uc.Write([]byte("flow"))
			// The flow is open at both ends of this process.
			s.waitFor("the UDP flow at both ends", func(f map[string]*dto.MetricFamily) bool {
				return value(t, f, "smuxtun_udp_flows_active") >= 2
			})
		})
	})
}

// TestMetricsSessionLost: a client whose server goes away counts a session
// that failed while established (the TCP transport notices at once).
func TestMetricsSessionLost(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		m := startMetrics(t, SideClient)
		s := newScraper(t, m)
		o := pairOpts{transport: config.TransportTCP, target: startEcho(t, "tcp", "127.0.0.1:0")}
		srv, stopServer := runServer(t, o)
		o.remote = srv.Addrs()[0].String()
		cli, _ := runClient(t, o)
		if err := echoRoundTrip("tcp", cli.Addr().String(), []byte("ping"), ioTimeout); err != nil {
			t.Fatal(err)
		}
		start := value(t, s.scrape(), "smuxtun_sessions_failed_total", "stage", "established")
		stopServer()
		s.waitFor("counting the lost session", func(f map[string]*dto.MetricFamily) bool {
			return value(t, f, "smuxtun_sessions_failed_total", "stage", "established") > start
		})
	})
}

// TestMetricsFormat checks what the parser does not: every family has a
// help text, counters end in _total, the client has no target metric, and
// the endpoint answers only GET and HEAD at /metrics.
func TestMetricsFormat(t *testing.T) {
	leakChecked(t, func(t *testing.T) {
		m := startMetrics(t, SideClient)
		s := newScraper(t, m)
		fams := s.scrape()
		if _, ok := fams["smuxtun_target_dial_failures_total"]; ok {
			t.Error("the client exposes the server-only smuxtun_target_dial_failures_total")
		}
		value(t, fams, "smuxtun_build_info", "version", "v0.0.0-test", "side", "client", "goversion", runtime.Version())
		for name, f := range fams {
			if f.GetHelp() == "" {
				t.Errorf("%s has no help text", name)
			}
			if isCounter := f.GetType() == dto.MetricType_COUNTER; isCounter != strings.HasSuffix(name, "_total") {
				t.Errorf("%s is a %s", name, f.GetType())
			}
		}
		for _, c := range []struct {
			method, path string
			want         int
		}{
			{http.MethodHead, MetricsPath, http.StatusOK},
			{http.MethodPost, MetricsPath, http.StatusMethodNotAllowed},
			{http.MethodGet, "/", http.StatusNotFound},
			{http.MethodGet, "/debug/pprof/", http.StatusNotFound},
		} {
			req, _ := http.NewRequest(c.method, "http://"+m.Addr().String()+c.path, nil)
			resp, err := s.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("%s %s: %s, want %d", c.method, c.path, resp.Status, c.want)
			}
		}
	})
}

// TestMetricsLabelEscaping: a version with quotes, a backslash and a line
// break still parses and comes back unchanged.
func TestMetricsLabelEscaping(t *testing.T) {
	odd := "v1 \"quoted\" back\\slash\nnext"
	var b strings.Builder
	if err := WriteMetrics(&b, BuildInfo{Version: odd, Side: SideServer}); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	value(t, fams, "smuxtun_build_info", "version", odd, "side", "server", "goversion", runtime.Version())
}

// TestMetricsDocumented keeps docs/METRICS.md true: every metric the
// endpoint writes has a row there, and the table names no other.
func TestMetricsDocumented(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "docs", "METRICS.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(smuxtun_[a-z_]+)`").FindAllStringSubmatch(string(raw), -1) {
		documented[m[1]] = true
	}
	written := map[string]bool{}
	for _, f := range families(BuildInfo{Side: SideServer}) {
		written[f.name] = true
		if !documented[f.name] {
			t.Errorf("docs/METRICS.md has no row for %s", f.name)
		}
	}
	for name := range documented {
		if !written[name] {
			t.Errorf("docs/METRICS.md documents %s, which the endpoint does not write", name)
		}
	}
}

// TestGrafanaDashboard keeps docs/grafana-dashboard.json loadable and true:
// valid JSON, every query on the ${DS_PROMETHEUS} data source, every metric
// it queries written by the endpoint, and the panels the docs promise there.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "docs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	type datasource struct{ Type, UID string }
	var dash struct {
		Title  string
		Panels []struct {
			Title      string
			Datasource datasource
			Targets    []struct {
				Datasource datasource
				Expr       string
			}
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	written := map[string]bool{}
	for _, f := range families(BuildInfo{Side: SideServer}) {
		written[f.name] = true
	}
	queried := map[string]bool{}
	metricName := regexp.MustCompile(`smuxtun_[a-z_]+`)
	for _, p := range dash.Panels {
		sources := []datasource{p.Datasource}
		for _, tg := range p.Targets {
			sources = append(sources, tg.Datasource)
		}
		for _, ds := range sources {
			if ds.Type != "prometheus" || ds.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: data source %+v, want prometheus ${DS_PROMETHEUS}", p.Title, ds)
			}
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, name := range metricName.FindAllString(tg.Expr, -1) {
				queried[name] = true
				if !written[name] {
					t.Errorf("panel %q queries %s, which the endpoint does not write", p.Title, name)
				}
			}
		}
	}
	for _, name := range []string{
		"smuxtun_sessions_active", "smuxtun_streams_active", "smuxtun_stream_bytes_total",
		"smuxtun_kcp_retransmitted_segments_total", "smuxtun_kcp_checksum_errors_total", "smuxtun_target_dial_failures_total",
	} {
		if !queried[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
}

// TestMetricsListenNetwork: an IPv4 address never binds IPv6 as well.
func TestMetricsListenNetwork(t *testing.T) {
	for addr, want := range map[string]string{
		"0.0.0.0:9100":   "tcp4",
		"127.0.0.1:9100": "tcp4",
		"[::]:9100":      "tcp6",
		"[::1]:9100":     "tcp6",
		"localhost:9100": "tcp",
	} {
		if got := listenNetwork(addr); got != want {
			t.Errorf("listenNetwork(%q) = %q, want %q", addr, got, want)
		}
	}
}

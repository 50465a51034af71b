package tunnel

// The metrics endpoint writes the Prometheus text exposition format
// (version 0.0.4) by hand instead of using github.com/prometheus/client_golang,
// because routers pay for every megabyte of the static binary. Measured on
// 2026-12-01 with go1.26.8 and
// CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' ./cmd/server
// (linux/mipsle with GOMIPS=softfloat, as `make release` builds it for routers):
//
//	linux/amd64   no endpoint 11,534,498 bytes
//	              hand-written (this file) 11,579,554 (+45 KB, +0.4 %)
//	              client_golang v1.25.0 13,975,714 (+2.4 MB, +21 %)
//	linux/mipsle  no endpoint 11,600,065 bytes
//	              hand-written (this file) 11,665,601 (+66 KB, +0.6 %)
//	              client_golang v1.25.0 14,287,041 (+2.7 MB, +23 %)
//
// client_golang here means a Collector over the same counters on a private
// registry, served by promhttp.HandlerFor. The binaries already link net/http
// for --pprof, so the hand-written writer costs little; client_golang brings
// protobuf, its registry and its runtime collectors (linked even when not
// registered). The format is a few lines per metric (# HELP, # TYPE,
// name{label="value"} value), and the tests parse what this file writes with
// the official parser, github.com/prometheus/common/expfmt, a test-only
// dependency.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"
)

// Sides of the tunnel, for BuildInfo.Side.
const (
	SideClient = "client"
	SideServer = "server"
)

// MetricsPath is where a MetricsServer answers.
const MetricsPath = "/metrics"

// metricsContentType is the text exposition format's media type.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// BuildInfo describes the process in smuxtun_build_info.
type BuildInfo struct {
	Version string // e.g. "v1.2.0"
	Side    string // SideClient or SideServer
}

// metricKind is a Prometheus metric type.
type metricKind string

const (
	counter metricKind = "counter"
	gauge   metricKind = "gauge"
)

// sample is one line of a metric family: its labels, already formatted as
// `{name="value",...}` (or empty), and its value.
type sample struct {
	labels string
	value  string
}

// family is one metric: a name, its help text and type, and its samples.
type family struct {
	name    string
	help    string
	kind    metricKind
	samples []sample
}

func uval(v uint64) string { return strconv.FormatUint(v, 10) }
func ival(v int64) string  { return strconv.FormatInt(v, 10) }

// one is a family with a single unlabelled sample.
func one(name string, kind metricKind, help, value string) family {
	return family{name: name, help: help, kind: kind, samples: []sample{{value: value}}}
}

// byLabel is a family with one sample per value of a single label; values
// alternates label values and sample values.
func byLabel(name string, kind metricKind, help, label string, values ...string) family {
	f := family{name: name, help: help, kind: kind}
	for j := 0; j+1 < len(values); j += 2 {
		f.samples = append(f.samples, sample{labels: `{` + label + `="` + values[j] + `"}`, value: values[j+1]})
	}
	return f
}

// families reads every counter now. The tunnel's counters come first, then
// kcp-go's process-wide SNMP counters (all KCP sessions together; zero on the
// tcp transport).
func families(info BuildInfo) []family {
	k := kcp.DefaultSnmp.Copy()
	fs := []family{
		{
			name: "smuxtun_build_info", kind: gauge, help: "Always 1; the labels describe the running binary.",
			samples: []sample{{labels: `{version="` + escapeLabel(info.Version) + `",side="` + escapeLabel(info.Side) +
				`",goversion="` + escapeLabel(runtime.Version()) + `"}`, value: "1"}},
		},
		one("smuxtun_sessions_opened_total", counter,
			"Transport sessions established (client: dialled, server: accepted).", uval(stats.sessionsOpened.Load())),
		one("smuxtun_sessions_active", gauge, "Transport sessions open now.", ival(stats.sessionsActive.Load())),
		byLabel("smuxtun_sessions_failed_total", counter,
			"Transport sessions that failed: stage open = the dial or the mux handshake failed; stage established = a working session died under the client (server gone, keepalives stopped, path broken; always 0 on a server).",
			"stage", "open", uval(stats.sessionErrors.Load()), "established", uval(stats.sessionsLost.Load())),
		one("smuxtun_streams_opened_total", counter,
			"Streams (tunnelled connections) opened.", uval(stats.streamsOpened.Load())),
		one("smuxtun_streams_active", gauge, "Streams open now.", ival(stats.streamsActive.Load())),
		one("smuxtun_streams_failed_total", counter,
			"Streams that could not be set up (client: no session could open one; server: the target could not be reached).",
			uval(stats.streamErrors.Load())),
		byLabel("smuxtun_stream_bytes_total", counter,
			"Application bytes carried by streams: up = from the client's applications to the target, down = back.",
			"direction", "up", uval(stats.bytesUp.Load()), "down", uval(stats.bytesDown.Load())),
		one("smuxtun_udp_flows_active", gauge,
			"UDP flows (one per source address of a UDP forward) and SOCKS UDP associations open now.", ival(stats.udpFlowsActive.Load())),
	}
	if info.Side == SideServer {
		fs = append(fs, one("smuxtun_target_dial_failures_total", counter,
			"Connections to the target that failed (refused, unreachable, timed out).", uval(stats.targetDialFailures.Load())),
			one("smuxtun_targets_refused_total", counter,
				"Streams and datagrams whose client-chosen target the allow-list refused.", uval(stats.targetsRefused.Load())))
	}
	return append(fs,
		one("smuxtun_kcp_sessions_active", gauge, "KCP sessions open now.", uval(k.CurrEstab)),
		byLabel("smuxtun_kcp_packets_total", counter, "UDP packets received and sent by KCP sessions.",
			"direction", "in", uval(k.InPkts), "out", uval(k.OutPkts)),
		byLabel("smuxtun_kcp_bytes_total", counter,
			"UDP payload bytes received and sent by KCP sessions (KCP headers, FEC parity and encryption included).",
			"direction", "in", uval(k.InBytes), "out", uval(k.OutBytes)),
		byLabel("smuxtun_kcp_payload_bytes_total", counter,
			"Bytes the mux handed to KCP (out) and KCP delivered to the mux (in), after compression.",
			"direction", "in", uval(k.BytesReceived), "out", uval(k.BytesSent)),
		byLabel("smuxtun_kcp_segments_total", counter, "KCP segments received and sent: data (first sends and retransmissions), ACKs and window probes.",
			"direction", "in", uval(k.InSegs), "out", uval(k.OutSegs)),
		one("smuxtun_kcp_retransmitted_segments_total", counter,
			"KCP segments sent again, for any reason (the sum of the lost, fast and early retransmissions).", uval(k.RetransSegs)),
		one("smuxtun_kcp_lost_segments_total", counter,
			"KCP segments retransmitted because their retransmission timeout expired.", uval(k.LostSegs)),
		one("smuxtun_kcp_fast_retransmitted_segments_total", counter,
			"KCP segments retransmitted early because later segments were acknowledged (fast retransmit).", uval(k.FastRetransSegs)),
		one("smuxtun_kcp_early_retransmitted_segments_total", counter,
			"KCP segments retransmitted early because the send queue was empty (early retransmit).", uval(k.EarlyRetransSegs)),
		one("smuxtun_kcp_duplicate_segments_total", counter, "KCP segments received more than once.", uval(k.RepeatSegs)),
		one("smuxtun_kcp_fec_recovered_total", counter, "Packets rebuilt from FEC parity shards.", uval(k.FECRecovered)),
		one("smuxtun_kcp_fec_errors_total", counter, "FEC shard sets that could not be rebuilt, and parity shards that could not be computed.", uval(k.FECErrs)),
		one("smuxtun_kcp_fec_parity_shards_total", counter, "FEC parity shards received.", uval(k.FECParityShards)),
		one("smuxtun_kcp_fec_full_shard_sets_total", counter,
			"FEC shard sets whose data shards all arrived (nothing to rebuild).", uval(k.FECFullShardSet)),
		one("smuxtun_kcp_checksum_errors_total", counter,
			"Packets dropped because their checksum failed after decryption: usually a peer with another --key or --crypt, or corruption.",
			uval(k.InCsumErrors)),
		one("smuxtun_kcp_input_errors_total", counter,
			"Packets that passed the checksum but KCP could not use (too short or malformed).", uval(k.KCPInErrors)),
		one("smuxtun_kcp_read_errors_total", counter, "Errors reading from the UDP socket.", uval(k.InErrs)),
	)
}

// escapeLabel escapes a label value as the text format requires.
func escapeLabel(v string) string {
	return labelEscaper.Replace(v)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// escapeHelp escapes a help text as the text format requires.
func escapeHelp(v string) string {
	return helpEscaper.Replace(v)
}

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// WriteMetrics writes every metric, read now, to w in the Prometheus text
// exposition format.
func WriteMetrics(w io.Writer, info BuildInfo) error {
	var b bytes.Buffer
	for _, f := range families(info) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f.name, escapeHelp(f.help), f.name, f.kind)
		for _, s := range f.samples {
			b.WriteString(f.name)
			b.WriteString(s.labels)
			b.WriteByte(' ')
			b.WriteString(s.value)
			b.WriteByte('\n')
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// MetricsHandler serves WriteMetrics to GET and HEAD requests.
func MetricsHandler(info BuildInfo) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", metricsContentType)
		w.Header().Set("Cache-Control", "no-store")
		if r.Method == http.MethodHead {
			return
		}
		_ = WriteMetrics(w, info)
	})
}

// MetricsServer serves MetricsHandler at MetricsPath over HTTP.
type MetricsServer struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	once sync.Once
}

// ListenMetrics binds addr (host:port) and serves the metrics there until
// Close. Errors of the running server are logged to log.
func ListenMetrics(addr string, info BuildInfo, log *slog.Logger) (*MetricsServer, error) {
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen(listenNetwork(addr), addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(MetricsPath, MetricsHandler(info))
	m := &MetricsServer{
		ln: ln,
		// The endpoint may face a network: bound what a slow or hostile
		// client can hold.
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      10 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return m, nil
}

// listenNetwork keeps an IPv4 address to IPv4: Go would serve "0.0.0.0" on
// every IPv6 address too, which is more than the operator asked to expose.
func listenNetwork(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is4() {
			return "tcp4"
		}
		return "tcp6"
	}
	return "tcp"
}

// Addr returns the bound address.
func (m *MetricsServer) Addr() net.Addr { return m.ln.Addr() }

// Close stops the server, closes its connections and waits for it to
// return. Calling it again does nothing.
func (m *MetricsServer) Close() error {
	var err error
	m.once.Do(func() {
		err = m.srv.Close()
		<-m.done
	})
	return err
}

package tunnel

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	kcp "github.com/xtaci/kcp-go/v5"
)

// counters are the tunnel's own statistics, process-wide like kcp-go's
// DefaultSnmp, so that a signal handler can dump them without holding a
// reference to the client or server.
type counters struct {
	sessionsOpened atomic.Uint64 // transport sessions established (dialled or accepted)
	sessionsActive atomic.Int64
	sessionErrors  atomic.Uint64 // dial or handshake failures
	streamsOpened  atomic.Uint64
	streamsActive  atomic.Int64
	streamErrors   atomic.Uint64 // streams that failed to open or to reach the target
	bytesUp        atomic.Uint64 // client side → target side, application bytes
	bytesDown      atomic.Uint64 // target side → client side, application bytes

	// Counted for the metrics endpoint (metrics.go).
	sessionsLost       atomic.Uint64 // client: established sessions that died under it
	targetDialFailures atomic.Uint64 // server: streams whose target could not be reached
	targetsRefused     atomic.Uint64 // server: client-chosen targets the allow-list refused
	udpFlowsActive     atomic.Int64  // UDP flows and SOCKS UDP associations open now
}

var stats counters

// stat is one tunnel counter as SIGUSR1 shows it.
type stat struct {
	name  string
	value func() slog.Value
}

func u64(c *atomic.Uint64) func() slog.Value {
	return func() slog.Value { return slog.Uint64Value(c.Load()) }
}

func i64(c *atomic.Int64) func() slog.Value {
	return func() slog.Value { return slog.Int64Value(c.Load()) }
}

// statList is the one list of the tunnel counters, in the order DumpStats
// shows them: a counter added to counters appears there once listed here.
var statList = []stat{
	{"SessionsOpened", u64(&stats.sessionsOpened)},
	{"SessionsActive", i64(&stats.sessionsActive)},
	{"SessionErrors", u64(&stats.sessionErrors)},
	{"SessionsLost", u64(&stats.sessionsLost)},
	{"StreamsOpened", u64(&stats.streamsOpened)},
	{"StreamsActive", i64(&stats.streamsActive)},
	{"StreamErrors", u64(&stats.streamErrors)},
	{"TargetDialFailures", u64(&stats.targetDialFailures)},
	{"TargetsRefused", u64(&stats.targetsRefused)},
	{"UDPFlowsActive", i64(&stats.udpFlowsActive)},
	{"BytesUp", u64(&stats.bytesUp)},
	{"BytesDown", u64(&stats.bytesDown)},
}

// statAttrs reads every counter now: the tunnel's, then kcp-go's SNMP
// counters under kcp-go's names (those of kcptun's CSV header).
func statAttrs() []slog.Attr {
	snmp := kcp.DefaultSnmp.Copy()
	names, values := snmp.Header(), snmp.ToSlice()
	attrs := make([]slog.Attr, 0, len(statList)+len(names))
	for _, s := range statList {
		attrs = append(attrs, slog.Attr{Key: s.name, Value: s.value()})
	}
	for i, name := range names {
		if n, err := strconv.ParseUint(values[i], 10, 64); err == nil {
			attrs = append(attrs, slog.Uint64(name, n))
		} else {
			attrs = append(attrs, slog.String(name, values[i]))
		}
	}
	return attrs
}

// DumpStats logs every counter, the tunnel's and kcp-go's, as one record at
// Info with the message "statistics" and one attribute per counter (meant
// for SIGUSR1), so that it reads like the rest of the log.
func DumpStats(log *slog.Logger) {
	log.LogAttrs(context.Background(), slog.LevelInfo, "statistics", statAttrs()...)
}

// SnmpLogPath returns the file the SNMP logger writes to at t: the file part
// of pattern is a Go time layout (kcptun's convention, e.g.
// "./snmp-20060102.log"); the directory part is used as is.
func SnmpLogPath(pattern string, t time.Time) string {
	dir, file := filepath.Split(pattern)
	return dir + t.Format(file)
}

// snmpHeader is the first line of every --snmplog file: exactly kcptun's
// columns, Unix time then kcp-go's counters, so that tools written for
// kcptun's files read ours. The tunnel's own counters are in DumpStats and
// the metrics endpoint instead.
func snmpHeader() []string {
	return append([]string{"Unix"}, kcp.DefaultSnmp.Header()...)
}

// maxSnmpSiblings bounds the search for a file beside one with other columns.
const maxSnmpSiblings = 99

// WriteSnmpRow appends one CSV row (Unix time, then kcp-go's counters in
// kcptun's column order) to the file for t, writing the header first if the
// file is new or empty. A file is never given rows whose columns differ from
// its header: if its first line is another header (an older smuxtun added
// its own columns), the row goes to the first of name.1, name.2, ... that is
// new, empty or has this header.
func WriteSnmpRow(pattern string, t time.Time) error {
	_, err := writeSnmpRow(pattern, t)
	return err
}

// writeSnmpRow is WriteSnmpRow, also returning the file it wrote to.
func writeSnmpRow(pattern string, t time.Time) (string, error) {
	header := snmpHeader()
	want := strings.Join(header, ",")
	base := SnmpLogPath(pattern, t)
	path := base
	for i := 1; ; i++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return path, fmt.Errorf("snmplog: %w", err)
		}
		first, err := firstLine(f, len(want)+2)
		if err != nil {
			f.Close()
			return path, fmt.Errorf("snmplog %s: %w", path, err)
		}
		if first == "" || first == want {
			w := csv.NewWriter(f)
			if first == "" {
				_ = w.Write(header)
			}
			_ = w.Write(append([]string{strconv.FormatInt(t.Unix(), 10)}, kcp.DefaultSnmp.ToSlice()...))
			w.Flush()
			err = w.Error()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return path, fmt.Errorf("snmplog %s: %w", path, err)
			}
			return path, nil
		}
		f.Close()
		if i > maxSnmpSiblings {
			return base, fmt.Errorf("snmplog %s: it and %s.1 to .%d all have other columns than kcptun's", base, base, maxSnmpSiblings)
		}
		path = base + "." + strconv.Itoa(i)
	}
}

// firstLine returns the first line of f without its line ending, "" for an
// empty file, or a prefix of max bytes if the line is longer than that.
func firstLine(f *os.File, max int) (string, error) {
	buf := make([]byte, max)
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return "", err
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	return strings.TrimSuffix(line, "\r"), nil
}

// RunSnmpLogger appends a row to the SNMP CSV log every period until ctx is
// done, then returns nil. A new file starts whenever the formatted name
// changes; a row written beside a file with other columns (see WriteSnmpRow)
// is logged once per file. Write errors are logged and the logger keeps going, so a full
// disk does not stop the tunnel; an empty pattern or a period <= 0 returns
// at once.
func RunSnmpLogger(ctx context.Context, pattern string, period time.Duration, log *slog.Logger) error {
	if pattern == "" || period <= 0 {
		return nil
	}
	t := time.NewTicker(period)
	defer t.Stop()
	var diverted string // the last file written beside one with other columns
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			path, err := writeSnmpRow(pattern, now)
			if err != nil {
				log.Warn("cannot write snmp log", "err", err)
			} else if base := SnmpLogPath(pattern, now); path != base && path != diverted {
				diverted = path
				log.Warn("snmp log file has other columns than kcptun's; writing the rows beside it", "file", base, "instead", path)
			}
		}
	}
}

// countUDPFlow counts a UDP flow (or SOCKS UDP association) as a stream
// that opened and is open now; the returned func counts its end.
func countUDPFlow() (ended func()) {
	stats.streamsOpened.Add(1)
	stats.streamsActive.Add(1)
	stats.udpFlowsActive.Add(1)
	return func() {
		stats.streamsActive.Add(-1)
		stats.udpFlowsActive.Add(-1)
	}
}

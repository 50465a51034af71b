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
}

var stats counters

// statNames and statValues list the tunnel counters in one fixed order, for
// DumpStats and the CSV log.
var statNames = []string{
	"SessionsOpened", "SessionsActive", "SessionErrors",
	"StreamsOpened", "StreamsActive", "StreamErrors",
	"BytesUp", "BytesDown",
}

func statValues() []string {
	return []string{
		strconv.FormatUint(stats.sessionsOpened.Load(), 10),
		strconv.FormatInt(stats.sessionsActive.Load(), 10),
		strconv.FormatUint(stats.sessionErrors.Load(), 10),
		strconv.FormatUint(stats.streamsOpened.Load(), 10),
		strconv.FormatInt(stats.streamsActive.Load(), 10),
		strconv.FormatUint(stats.streamErrors.Load(), 10),
		strconv.FormatUint(stats.bytesUp.Load(), 10),
		strconv.FormatUint(stats.bytesDown.Load(), 10),
	}
}

// DumpStats writes the tunnel counters and kcp-go's SNMP counters to w, one
// "Name: value" line each (meant for SIGUSR1).
func DumpStats(w io.Writer) error {
	snmp := kcp.DefaultSnmp.Copy()
	names := append(append([]string(nil), statNames...), snmp.Header()...)
	values := append(statValues(), snmp.ToSlice()...)
	for i, n := range names {
		if _, err := fmt.Fprintf(w, "%s: %s\n", n, values[i]); err != nil {
			return err
		}
	}
	return nil
}

// SnmpLogPath returns the file the SNMP logger writes to at t: the file part
// of pattern is a Go time layout (kcptun's convention, e.g.
// "./snmp-20060102.log"); the directory part is used as is.
func SnmpLogPath(pattern string, t time.Time) string {
	dir, file := filepath.Split(pattern)
	return dir + t.Format(file)
}

// WriteSnmpRow appends one CSV row (Unix time, kcp-go's counters in kcptun's
// column order, then the tunnel counters) to the file for t, writing the
// header line first if the file is new or empty.
func WriteSnmpRow(pattern string, t time.Time) error {
	path := SnmpLogPath(pattern, t)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("snmplog: %w", err)
	}
	w := csv.NewWriter(f)
	snmp := kcp.DefaultSnmp.Copy()
	if st, err := f.Stat(); err == nil && st.Size() == 0 {
		header := append(append([]string{"Unix"}, snmp.Header()...), statNames...)
		_ = w.Write(header)
	}
	row := append(append([]string{strconv.FormatInt(t.Unix(), 10)}, snmp.ToSlice()...), statValues()...)
	_ = w.Write(row)
	w.Flush()
	err = w.Error()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("snmplog %s: %w", path, err)
	}
	return nil
}

// RunSnmpLogger appends a row to the SNMP CSV log every period until ctx is
// done, then returns nil. A new file starts whenever the formatted name
// changes. Write errors are logged and the logger keeps going, so a full
// disk does not stop the tunnel; an empty pattern or a period <= 0 returns
// at once.
func RunSnmpLogger(ctx context.Context, pattern string, period time.Duration, log *slog.Logger) error {
	if pattern == "" || period <= 0 {
		return nil
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if err := WriteSnmpRow(pattern, now); err != nil {
				log.Warn("cannot write snmp log", "err", err)
			}
		}
	}
}

//go:build unix

package mux

import (
	"io"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// Polling before parking. On a quiet machine, and most of all in a virtual
// machine, a write to a socket whose reader sleeps in the network poller
// pays for waking that reader's thread, and under bulk traffic that cost is
// paid on nearly every write. While a session receives bulk data, its
// reading goroutine therefore polls the socket for a short while, yielding
// the processor between attempts, before it parks. Measured effect and the
// cases where it does not pay: docs/PERFORMANCE.md.
const (
	pollBudget = 50 * time.Microsecond // longest poll before parking
	pollRounds = 256                   // most read attempts in one poll
	// hotWait: after a poll that found nothing, the session polls again
	// only once a parked read returns within this time.
	hotWait = 2 * pollBudget
	// pollMinRead: the session polls only while its reads average at
	// least this many bytes. Small reads mean small messages, which
	// batch better when the reader waits for them to pile up.
	pollMinRead = 4096
)

// pollers counts reading goroutines polling right now, in the process; at
// most GOMAXPROCS poll at once.
var pollers atomic.Int32

// pollReader reads from a kernel socket, polling as described above.
type pollReader struct {
	conn io.Reader
	rc   syscall.RawConn
	try  func(fd uintptr) bool
	buf  []byte // the destination of the read in progress
	n    int
	err  error
	hot  bool // poll on the next read that finds no data
	avg  int  // moving average of read sizes
	// polls counts reads answered by polling rather than by parking.
	polls int
	// allow, when set, is asked before each poll.
	allow func() bool
}

// newPollReader returns a polling reader for c, or c itself when c has no
// file descriptor to poll.
func newPollReader(c io.Reader, allow func() bool) io.Reader {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	p := &pollReader{conn: c, rc: rc, allow: allow}
	p.try = p.tryRead // bound once, so polling does not allocate
	return p
}

func (p *pollReader) tryRead(fd uintptr) bool {
	p.n, p.err = syscall.Read(int(fd), p.buf)
	return true // never wait here: poll decides
}

func (p *pollReader) Read(b []byte) (int, error) {
	if p.hot && len(b) > 0 && (p.allow == nil || p.allow()) {
		if n, ok := p.poll(b); ok {
			p.polls++
			p.note(n)
			return n, nil
		}
		p.hot = false
	}
	if p.hot {
		n, err := p.conn.Read(b)
		p.note(n)
		return n, err
	}
	start := time.Now()
	n, err := p.conn.Read(b)
	p.hot = time.Since(start) < hotWait
	p.note(n)
	return n, err
}

// note keeps the moving average of read sizes; reads averaging under
// pollMinRead stop polling.
func (p *pollReader) note(n int) {
	p.avg += (n - p.avg) / 4
	if p.avg < pollMinRead {
		p.hot = false
	}
}

// poll tries non-blocking reads until data comes or the budget is spent. It
// reports false when the caller should make an ordinary read instead:
// nothing came, or the socket reported anything other than "no data yet"
// (end of stream, an error, a closed descriptor), which the ordinary read
// then returns in the usual form.
func (p *pollReader) poll(b []byte) (int, bool) {
	if pollers.Add(1) > int32(runtime.GOMAXPROCS(0)) {
		pollers.Add(-1)
		return 0, false
	}
	defer pollers.Add(-1)
	p.buf = b
	defer func() { p.buf = nil }()
	var start time.Time
	for i := range pollRounds {
		if err := p.rc.Read(p.try); err != nil {
			return 0, false
		}
		if p.err == nil && p.n > 0 {
			return p.n, true
		}
		if p.err != syscall.EAGAIN {
			return 0, false
		}
		if i == 0 {
			start = time.Now()
		} else if time.Since(start) > pollBudget {
			return 0, false
		}
		runtime.Gosched()
	}
	return 0, false
}

package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// copyBufSize is the buffer used when the source has no WriteTo of its own
// (a TCP or unix connection feeding a mux stream).
const copyBufSize = 32 << 10

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// closeWriter is a connection whose sending side can be shut down on its
// own: *net.TCPConn, *net.UnixConn and *mux.Stream (which sends a FIN).
type closeWriter interface {
	CloseWrite() error
}

// pipeResult reports what a pipe moved, for logs and counters.
type pipeResult struct {
	aToB, bToA int64
	err        error // first error other than a clean end of stream
}

// pipe copies a→b and b→a until both directions are done, then closes both.
// a is the side nearer the user (the local connection on the client, the
// stream on the server): bytes a→b count as up, b→a as down, in the
// process-wide counters as they move.
//
// The end of one direction is passed on as a half-close (CloseWrite on the
// destination), so a peer that shuts down its sending side still receives
// everything the other side writes back. An error in either direction tears
// both down at once. Both connections are also closed as soon as stop1 or
// stop2 is closed (the session died, or the tunnel is shutting down): a
// direction blocked on the non-mux side would otherwise never notice.
//
// closeWait bounds how long the surviving direction may stay idle once the
// other has ended: it is checked every closeWait, and if it moved no byte
// since the last check both are closed (so an idle pair goes after one to
// two closeWait periods). Zero
// means no bound: the pair lives until the surviving direction ends by
// itself. (kcptun instead closes the pair closeWait after the first
// direction ends, busy or not; an idle bound keeps a long reply after a
// half-close intact while still reaping half-open pairs.)
func pipe(a, b net.Conn, closeWait time.Duration, stop1, stop2 <-chan struct{}) pipeResult {
	var (
		res      pipeResult
		errOnce  sync.Once
		closeAll sync.Once
		abDone   = make(chan struct{})
		baDone   = make(chan struct{})
		abBytes  atomic.Int64
		baBytes  atomic.Int64
		shutting atomic.Bool
	)
	shut := func() {
		closeAll.Do(func() {
			shutting.Store(true)
			a.Close()
			b.Close()
		})
	}
	fail := func(err error) {
		// Errors caused by our own teardown say nothing about the peers.
		if !shutting.Load() {
			errOnce.Do(func() { res.err = err })
		}
		shut()
	}
	half := func(dst, src net.Conn, n *atomic.Int64, total *atomic.Uint64, done chan struct{}) {
		defer close(done)
		if err := copyHalf(countWriter{w: dst, n: n, total: total}, src); err != nil {
			fail(err)
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			if err := cw.CloseWrite(); err != nil && !isClosedErr(err) {
				fail(err)
			}
			return
		}
		// Nothing to half-close: ending the destination is the only way to
		// pass the end of stream on.
		shut()
	}
	go half(b, a, &abBytes, &stats.bytesUp, abDone)
	go half(a, b, &baBytes, &stats.bytesDown, baDone)

	wait := func(done <-chan struct{}) {
		select {
		case <-done:
		case <-stop1:
			shut()
			<-done
		case <-stop2:
			shut()
			<-done
		}
	}
	var rest <-chan struct{}
	var restBytes *atomic.Int64
	select {
	case <-abDone:
		rest, restBytes = baDone, &baBytes
	case <-baDone:
		rest, restBytes = abDone, &abBytes
	case <-stop1:
		shut()
	case <-stop2:
		shut()
	}
	if rest != nil && closeWait > 0 {
		lingerIdle(rest, restBytes, closeWait, stop1, stop2, shut)
	}
	wait(abDone)
	wait(baDone)
	shut()
	res.aToB, res.bToA = abBytes.Load(), baBytes.Load()
	return res
}

// lingerIdle waits for done, shutting the pair if the counter stops moving
// for a whole idle period.
func lingerIdle(done <-chan struct{}, n *atomic.Int64, idle time.Duration, stop1, stop2 <-chan struct{}, shut func()) {
	t := time.NewTicker(idle)
	defer t.Stop()
	last := n.Load()
	for {
		select {
		case <-done:
			return
		case <-stop1:
			shut()
			return
		case <-stop2:
			shut()
			return
		case <-t.C:
			cur := n.Load()
			if cur == last {
				shut()
				return
			}
			last = cur
		}
	}
}

// copyHalf moves bytes from src to w until src ends. A clean end of
// stream returns nil.
func copyHalf(w io.Writer, src net.Conn) error {
	// A mux stream hands over its buffered frames directly.
	if wt, ok := src.(io.WriterTo); ok && !isSocket(src) {
		_, err := wt.WriteTo(w)
		return cleanEOF(err)
	}
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			if _, werr := w.Write(buf[:nr]); werr != nil {
				return werr
			}
		}
		if rerr != nil {
			return cleanEOF(rerr)
		}
	}
}

// isSocket reports whether c is a kernel socket, whose WriteTo would fall
// back to io.Copy with a fresh 32 KiB buffer on every call.
func isSocket(c net.Conn) bool {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

func cleanEOF(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// isClosedErr reports errors that only say the connection is already gone,
// which are expected while a pair is being torn down.
func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}

// countWriter counts what reaches w, per pipe and process-wide.
type countWriter struct {
	w     io.Writer
	n     *atomic.Int64
	total *atomic.Uint64
}

func (c countWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n.Add(int64(k))
	c.total.Add(uint64(k))
	return k, err
}

// Package demo runs smuxtun the way a user does: it starts smuxtun-server and
// smuxtun-client as processes on loopback in front of a target that checks every
// byte with SHA-256. `make demo` and the end-to-end tests in e2e/ are built on it.
//
// The target speaks a tiny request protocol so that one listener can check
// transfers in both directions. A connection starts with a 9-byte header,
// an operation byte and a big-endian uint64 size:
//
//	'U' upload:   the client sends size bytes; the target answers with the
//	              count it read (uint64) and the SHA-256 of those bytes.
//	'D' download: the target sends size random bytes, then their SHA-256.
//	'E' echo:     the target sends back the size bytes it receives.
//	'Q' request:  the target reads until the client shuts down its write side
//	              (half-close), then sends size random bytes and their SHA-256.
//	'P' paused upload: the target reads the header, then reads nothing more
//	              until Target.ReleasePaused is called; from then on it is an
//	              upload ('U'). It lets a test stall a sender on purpose.
//
// After its answer the target closes the connection.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
)

// Operations of the target protocol.
const (
	OpUpload   byte = 'U'
	OpDownload byte = 'D'
	OpEcho     byte = 'E'
	OpRequest  byte = 'Q'
	// OpPausedUpload is an upload the target holds back until ReleasePaused.
	OpPausedUpload byte = 'P'
)

const (
	headerLen = 9
	chunkSize = 64 << 10
)

// ErrMismatch reports that the bytes that arrived are not the bytes that were sent.
var ErrMismatch = errors.New("data mismatch")

// Target is a TCP server on 127.0.0.1 that answers the target protocol.
type Target struct {
	ln      net.Listener
	onError func(error)

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	// done is closed by Close, release by ReleasePaused: a paused upload waits
	// on a channel, not on its connection, so closing the connection alone
	// would not wake it.
	done        chan struct{}
	release     chan struct{}
	releaseOnce sync.Once

	sent atomic.Int64 // random payload bytes written by downloads and requests
}

// NewTarget listens on a free port of 127.0.0.1 and serves until Close.
// onError, if not nil, is called (from any goroutine) for every connection
// that ends with an error.
func NewTarget(onError func(error)) (*Target, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("target: listen: %w", err)
	}
	t := &Target{
		ln:      ln,
		onError: onError,
		conns:   make(map[net.Conn]struct{}),
		done:    make(chan struct{}),
		release: make(chan struct{}),
	}
	t.wg.Add(1)
	go t.acceptLoop()
	return t, nil
}

// Addr is the target's address, host:port.
func (t *Target) Addr() string { return t.ln.Addr().String() }

// ReleasePaused lets every paused upload ('P'), present and future, go on as
// an ordinary upload. Calling it again does nothing.
func (t *Target) ReleasePaused() {
	t.releaseOnce.Do(func() { close(t.release) })
}

// Sent is the number of random payload bytes the target has written so far to
// its connections, for downloads and requests (not counting hashes). A test
// watches it to see when a receiver that stopped reading has stopped the flow.
func (t *Target) Sent() int64 { return t.sent.Load() }

// Active is the number of connections the target is serving: accepted and
// not yet answered in full (a download still sending, a paused upload).
func (t *Target) Active() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// Close stops the listener, closes every open connection, wakes the paused
// uploads and waits for their handlers to return.
func (t *Target) Close() error {
	t.mu.Lock()
	if !t.closed {
		close(t.done)
	}
	t.closed = true
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	err := t.ln.Close()
	t.wg.Wait()
	return err
}

func (t *Target) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			c.Close()
			return
		}
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go func() {
			defer t.wg.Done()
			err := t.serve(c)
			t.mu.Lock()
			delete(t.conns, c)
			// An error caused by Close tearing the connection down says
			// nothing about the transfer.
			stopping := t.closed
			t.mu.Unlock()
			c.Close()
			if err != nil && !stopping && t.onError != nil {
				t.onError(fmt.Errorf("target: %s: %w", c.RemoteAddr(), err))
			}
		}()
	}
}

func (t *Target) serve(c net.Conn) error {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	size := int64(binary.BigEndian.Uint64(hdr[1:]))
	if size < 0 {
		return fmt.Errorf("size %d out of range", size)
	}
	switch hdr[0] {
	case OpUpload:
		return receiveUpload(c, size, "upload")
	case OpPausedUpload:
		select {
		case <-t.release:
		case <-t.done:
			return errors.New("paused upload: target closed before the release")
		}
		return receiveUpload(c, size, "paused upload")
	case OpDownload:
		return sendRandom(c, size, &t.sent)
	case OpEcho:
		if n, err := io.CopyN(c, c, size); err != nil {
			return fmt.Errorf("echo: %d of %d bytes: %w", n, size, err)
		}
		return closeWrite(c)
	case OpRequest:
		if _, err := io.Copy(io.Discard, c); err != nil {
			return fmt.Errorf("request: read until EOF: %w", err)
		}
		return sendRandom(c, size, &t.sent)
	default:
		return fmt.Errorf("unknown operation %q", hdr[0])
	}
}

// receiveUpload reads size bytes and answers with the count it read and their
// SHA-256, then shuts down the write side.
func receiveUpload(c net.Conn, size int64, what string) error {
	h := sha256.New()
	n, err := io.CopyN(h, c, size)
	var reply [8 + sha256.Size]byte
	binary.BigEndian.PutUint64(reply[:8], uint64(n))
	h.Sum(reply[8:8])
	if err != nil {
		return fmt.Errorf("%s: read %d of %d bytes: %w", what, n, size, err)
	}
	if _, err := c.Write(reply[:]); err != nil {
		return fmt.Errorf("%s: write reply: %w", what, err)
	}
	return closeWrite(c)
}

// sendRandom writes size random bytes followed by their SHA-256, then shuts down
// the write side. sent counts the random bytes as the connection accepts them.
func sendRandom(c net.Conn, size int64, sent *atomic.Int64) error {
	h := sha256.New()
	counted := writerFunc(func(b []byte) (int, error) {
		n, err := c.Write(b)
		sent.Add(int64(n))
		return n, err
	})
	if _, err := io.CopyN(io.MultiWriter(counted, h), NewRandom(), size); err != nil {
		return fmt.Errorf("send %d random bytes: %w", size, err)
	}
	if _, err := c.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("send hash: %w", err)
	}
	return closeWrite(c)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// NewRandom returns a fast, endless source of random bytes with a fresh seed.
func NewRandom() io.Reader {
	var seed [32]byte
	rand.Read(seed[:])
	return mrand.NewChaCha8(seed)
}

func writeHeader(c net.Conn, op byte, size int64) error {
	var hdr [headerLen]byte
	hdr[0] = op
	binary.BigEndian.PutUint64(hdr[1:], uint64(size))
	if _, err := c.Write(hdr[:]); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	return nil
}

// progressWriter counts bytes as they pass and reports the running total.
type progressWriter struct {
	n        int64
	progress func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if p.progress != nil {
		p.progress(p.n)
	}
	return len(b), nil
}

// Upload sends size random bytes to the target through c and checks that the
// target received exactly those bytes. progress, if not nil, gets the running
// count of bytes sent.
func Upload(c net.Conn, size int64, progress func(int64)) error {
	return upload(c, OpUpload, size, progress, "upload")
}

// PausedUpload is Upload with the 'P' operation: the target reads nothing
// after the header until Target.ReleasePaused, so the sending blocks once the
// buffers on the way are full, and goes on after the release. progress, if not
// nil, gets the running count of bytes c accepted.
func PausedUpload(c net.Conn, size int64, progress func(int64)) error {
	return upload(c, OpPausedUpload, size, progress, "paused upload")
}

func upload(c net.Conn, op byte, size int64, progress func(int64), what string) error {
	if err := writeHeader(c, op, size); err != nil {
		return err
	}
	h := sha256.New()
	pw := &progressWriter{progress: progress}
	if n, err := io.CopyBuffer(io.MultiWriter(c, h, pw), io.LimitReader(NewRandom(), size), make([]byte, chunkSize)); err != nil {
		return fmt.Errorf("%s: sent %d of %d bytes: %w", what, n, size, err)
	}
	return checkUploadReply(c, size, h.Sum(nil), what)
}

// checkUploadReply reads the target's answer to an upload (the count it read
// and the SHA-256 of those bytes), compares it with what was sent, and checks
// that the target then closed the connection.
func checkUploadReply(c net.Conn, size int64, sum []byte, what string) error {
	var reply [8 + sha256.Size]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		return fmt.Errorf("%s: read the target's hash: %w", what, err)
	}
	if got := int64(binary.BigEndian.Uint64(reply[:8])); got != size {
		return fmt.Errorf("%s: target received %d of %d bytes: %w", what, got, size, ErrMismatch)
	}
	if !bytes.Equal(reply[8:], sum) {
		return fmt.Errorf("%s: SHA-256 of %d bytes differs at the target: %w", what, size, ErrMismatch)
	}
	return expectEOF(c)
}

// Download asks the target for size random bytes and checks them against the
// SHA-256 the target sends after them.
func Download(c net.Conn, size int64, progress func(int64)) error {
	if err := AskDownload(c, size); err != nil {
		return err
	}
	return ReceiveDownload(c, size, progress)
}

// AskDownload sends the header of a download of size bytes and returns at
// once: the target starts sending, and a test that does not read yet can
// stall the transfer on purpose. ReceiveDownload reads and checks the answer.
func AskDownload(c net.Conn, size int64) error {
	return writeHeader(c, OpDownload, size)
}

// ReceiveDownload reads the answer to a download asked for with AskDownload:
// size random bytes, then their SHA-256, then the end of the connection.
func ReceiveDownload(c net.Conn, size int64, progress func(int64)) error {
	return receiveRandom(c, size, progress, "download")
}

// Request sends a request header, shuts down the write side of c (half-close)
// and then reads the whole size-byte reply, which the target only sends after it
// has seen the end of the request.
func Request(c net.Conn, size int64, progress func(int64)) error {
	if err := writeHeader(c, OpRequest, size); err != nil {
		return err
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("request: %T cannot half-close", c)
	}
	if err := cw.CloseWrite(); err != nil {
		return fmt.Errorf("request: close write side: %w", err)
	}
	return receiveRandom(c, size, progress, "request")
}

func receiveRandom(c net.Conn, size int64, progress func(int64), what string) error {
	h := sha256.New()
	pw := &progressWriter{progress: progress}
	if n, err := io.CopyBuffer(io.MultiWriter(h, pw), io.LimitReader(c, size), make([]byte, chunkSize)); err != nil || n != size {
		return fmt.Errorf("%s: received %d of %d bytes: %w", what, n, size, orEOF(err))
	}
	var sum [sha256.Size]byte
	if _, err := io.ReadFull(c, sum[:]); err != nil {
		return fmt.Errorf("%s: read the target's hash after %d bytes: %w", what, size, err)
	}
	if !bytes.Equal(sum[:], h.Sum(nil)) {
		return fmt.Errorf("%s: SHA-256 of the %d bytes received differs from the target's: %w", what, size, ErrMismatch)
	}
	return expectEOF(c)
}

// Echo sends size random bytes and checks that the same bytes come back.
func Echo(c net.Conn, size int64, progress func(int64)) error {
	if err := writeHeader(c, OpEcho, size); err != nil {
		return err
	}
	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(io.MultiWriter(c, sent), io.LimitReader(NewRandom(), size), make([]byte, chunkSize))
		werr <- err
	}()
	got := sha256.New()
	pw := &progressWriter{progress: progress}
	n, rerr := io.CopyBuffer(io.MultiWriter(got, pw), io.LimitReader(c, size), make([]byte, chunkSize))
	if rerr != nil || n != size {
		// The socket reports a reset once: to the writer if it was the
		// first to see it, and the reader then sees a plain EOF. Keep both.
		c.Close() // unblocks the writer
		if serr := <-werr; serr != nil && !errors.Is(serr, net.ErrClosed) {
			return fmt.Errorf("echo: received %d of %d bytes: %w (send: %w)", n, size, orEOF(rerr), serr)
		}
		return fmt.Errorf("echo: received %d of %d bytes: %w", n, size, orEOF(rerr))
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("echo: send: %w", err)
	}
	if !equalHash(sent, got) {
		return fmt.Errorf("echo: SHA-256 of the %d bytes that came back differs: %w", size, ErrMismatch)
	}
	return expectEOF(c)
}

func equalHash(a, b hash.Hash) bool { return bytes.Equal(a.Sum(nil), b.Sum(nil)) }

func orEOF(err error) error {
	if err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}

// expectEOF checks that the target closed the connection after its answer.
func expectEOF(c net.Conn) error {
	var b [1]byte
	n, err := c.Read(b[:])
	if n > 0 {
		return fmt.Errorf("unexpected byte after the answer: %w", ErrMismatch)
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return fmt.Errorf("waiting for the end of the answer: %w", err)
}

// Dial connects to addr over TCP on behalf of ctx.
func Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return c, nil
}

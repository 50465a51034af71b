package mux

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"
)

// Commands carried in the second byte of every frame header.
const (
	cmdSYN byte = 0 // open a stream
	cmdFIN byte = 1 // the sender will send no more data on the stream
	cmdPSH byte = 2 // data
	cmdNOP byte = 3 // keepalive
	cmdUPD byte = 4 // version 2 window update: consumed u32, window u32
)

const (
	headerSize = 8     // version u8, cmd u8, length u16, stream id u32
	updSize    = 8     // payload of an UPD frame
	maxPayload = 65535 // the length field is 16 bits

	// initialPeerWindow is the window a version 2 sender assumes for a
	// stream until the receiver's first UPD arrives.
	initialPeerWindow = 262144
)

// header is one frame header as it appears on the wire (little endian).
type header [headerSize]byte

func (h *header) version() byte { return h[0] }
func (h *header) cmd() byte     { return h[1] }
func (h *header) length() int   { return int(binary.LittleEndian.Uint16(h[2:])) }
func (h *header) sid() uint32   { return binary.LittleEndian.Uint32(h[4:]) }

// putHeader encodes a header into b, which must hold headerSize bytes.
func putHeader(b []byte, ver, cmd byte, length int, sid uint32) {
	b[0] = ver
	b[1] = cmd
	binary.LittleEndian.PutUint16(b[2:], uint16(length))
	binary.LittleEndian.PutUint32(b[4:], sid)
}

// check reports whether h is a frame that a session speaking version ver
// may receive.
func (h *header) check(ver byte) error {
	if h.version() != ver {
		return fmt.Errorf("%w: frame version %d, session speaks %d", ErrInvalidProtocol, h.version(), ver)
	}
	switch h.cmd() {
	case cmdSYN, cmdFIN, cmdNOP:
		if h.length() != 0 {
			return fmt.Errorf("%w: command %d with a %d-byte payload", ErrInvalidProtocol, h.cmd(), h.length())
		}
	case cmdPSH:
	case cmdUPD:
		if ver != 2 {
			return fmt.Errorf("%w: window update in protocol version %d", ErrInvalidProtocol, ver)
		}
		if h.length() != updSize {
			return fmt.Errorf("%w: window update of %d bytes", ErrInvalidProtocol, h.length())
		}
	default:
		return fmt.Errorf("%w: unknown command %d", ErrInvalidProtocol, h.cmd())
	}
	return nil
}

// frameReader reads frames from the underlying connection. It reads as much
// as is available in one call, so that many frames cost one system call. Its
// buffer is a slab that queued payloads may keep pointing into; when the
// unread tail no longer fits, it moves to a fresh slab, growing from 16 KiB to
// 256 KiB while reads keep filling it.
type frameReader struct {
	r          io.Reader
	sl         *slab
	buf        []byte // sl.b
	start, end int
	nextSize   int
	live       *atomic.Int32
	maxSlabs   int32
	shareable  bool // queued payloads may point into the current slab
	// beforeBlock runs before every read from the connection, so that
	// work deferred while frames were buffered is done before waiting.
	beforeBlock func()
}

func newFrameReader(r io.Reader, live *atomic.Int32, maxSlabs int32) *frameReader {
	fr := &frameReader{r: r, nextSize: readBufferMin, live: live, maxSlabs: maxSlabs}
	fr.switchSlab(readBufferMin)
	return fr
}

// switchSlab moves the unread bytes into a fresh slab of at least size bytes.
func (fr *frameReader) switchSlab(size int) {
	sl := newSlab(size, fr.live)
	n := copy(sl.b, fr.buf[fr.start:fr.end])
	if fr.sl != nil {
		fr.sl.release()
	}
	fr.sl, fr.buf, fr.start, fr.end = sl, sl.b, 0, n
	fr.shareable = fr.live.Load() <= fr.maxSlabs
}

// close gives the slab back.
func (fr *frameReader) close() {
	if fr.sl != nil {
		fr.sl.release()
		fr.sl, fr.buf = nil, nil
	}
}

func (fr *frameReader) buffered() int { return fr.end - fr.start }

// fill makes at least n bytes (n <= the slab size) available.
func (fr *frameReader) fill(n int) error {
	for fr.end-fr.start < n {
		if len(fr.buf)-fr.start < n || fr.end == len(fr.buf) {
			size := max(fr.nextSize, n)
			if size <= len(fr.buf) && fr.sl.refs.Load() == 1 {
				// Nobody points into this slab: reuse it.
				fr.end = copy(fr.buf, fr.buf[fr.start:fr.end])
				fr.start = 0
				fr.shareable = fr.live.Load() <= fr.maxSlabs
			} else {
				fr.switchSlab(size)
			}
		}
		if fr.beforeBlock != nil {
			fr.beforeBlock()
		}
		room := len(fr.buf) - fr.end
		m, err := fr.r.Read(fr.buf[fr.end:])
		fr.end += m
		if m == room && room >= len(fr.buf)/2 && fr.nextSize < readBufferMax {
			fr.nextSize *= 4
		}
		if err != nil {
			if fr.end-fr.start >= n {
				return nil
			}
			if err == io.EOF && fr.end > fr.start {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// readHeader returns the next frame header.
func (fr *frameReader) readHeader() (header, error) {
	var h header
	if err := fr.fill(headerSize); err != nil {
		return h, err
	}
	copy(h[:], fr.buf[fr.start:])
	fr.start += headerSize
	return h, nil
}

// peek returns the next n bytes if they are already buffered.
func (fr *frameReader) peek(n int) ([]byte, bool) {
	if fr.buffered() < n {
		return nil, false
	}
	return fr.buf[fr.start : fr.start+n], true
}

func (fr *frameReader) skip(n int) { fr.start += n }

// readFull fills dst with the next len(dst) bytes of the connection.
func (fr *frameReader) readFull(dst []byte) error {
	n := copy(dst, fr.buf[fr.start:fr.end])
	fr.start += n
	rest := dst[n:]
	if len(rest) == 0 {
		return nil
	}
	if len(rest) > len(fr.buf)/2 {
		if fr.beforeBlock != nil {
			fr.beforeBlock()
		}
		_, err := io.ReadFull(fr.r, rest)
		return unexpected(err)
	}
	if err := fr.fill(len(rest)); err != nil {
		return unexpected(err)
	}
	fr.start += copy(rest, fr.buf[fr.start:])
	return nil
}

// discard drops the next n bytes.
func (fr *frameReader) discard(n int) error {
	for n > 0 {
		if fr.buffered() == 0 {
			if err := fr.fill(1); err != nil {
				return unexpected(err)
			}
		}
		k := min(n, fr.buffered())
		fr.start += k
		n -= k
	}
	return nil
}

// unexpected turns a clean EOF in the middle of a frame into
// io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

package mux

import (
	"encoding/binary"
	"fmt"
	"io"
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

// frameReader reads frames from the underlying connection. Small frames are
// served from an internal buffer so that many of them cost one read call;
// the tail of a large payload is read straight into its destination.
type frameReader struct {
	r          io.Reader
	buf        []byte
	start, end int
}

func newFrameReader(r io.Reader, size int) *frameReader {
	return &frameReader{r: r, buf: make([]byte, size)}
}

func (fr *frameReader) buffered() int { return fr.end - fr.start }

// fill makes at least n bytes (n <= len(fr.buf)) available in the buffer,
// reading ahead as far as the buffer allows.
func (fr *frameReader) fill(n int) error { return fr.fillLimit(n, 0) }

// fillLimit is fill that reads no more than limit bytes past the n it needs
// (0 means no limit).
func (fr *frameReader) fillLimit(n, limit int) error {
	if fr.buffered() >= n {
		return nil
	}
	if fr.start > 0 {
		copy(fr.buf, fr.buf[fr.start:fr.end])
		fr.end -= fr.start
		fr.start = 0
	}
	stop := len(fr.buf)
	if limit > 0 {
		stop = min(stop, fr.start+n)
	}
	for fr.end < n {
		m, err := fr.r.Read(fr.buf[fr.end:stop])
		fr.end += m
		if err != nil {
			if fr.end >= n {
				return nil
			}
			if err == io.EOF && fr.end > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// readHeader returns the next frame header. With limit > 0 it reads no
// further than the header, for when the payload is likely large.
func (fr *frameReader) readHeader(limit int) (header, error) {
	var h header
	if err := fr.fillLimit(headerSize, limit); err != nil {
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
	if n == len(dst) {
		return nil
	}
	rest := dst[n:]
	if len(rest) < len(fr.buf)/4 {
		if err := fr.fill(len(rest)); err != nil {
			return unexpected(err)
		}
		copy(rest, fr.buf[fr.start:])
		fr.start += len(rest)
		return nil
	}
	_, err := io.ReadFull(fr.r, rest)
	return unexpected(err)
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

package tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/smuxtun/smuxtun/crypt"
)

// Settings the two ends never negotiate (--nocomp, --smuxver) show up as a
// session that dies in its first frames, with an error about a frame
// version or corrupt snappy input that does not say which flag differs. The
// first bytes a session read from its transport do say it: a snappy stream
// starts with a stream identifier chunk, a mux stream with a frame header
// whose first byte is the version. Each transport connection keeps its
// first headLen bytes (after the packet cipher, before snappy) so that a
// failed session can be explained.

// headLen is how many bytes of a session's input are kept: the snappy
// stream identifier, one chunk header and checksum, and enough of the
// first compressed block to decode one frame header.
const headLen = 64

// snappyMagic is the snappy framing format's stream identifier chunk.
var snappyMagic = []byte("\xff\x06\x00\x00sNaPpY")

// frameHeaderLen is the size of a mux frame header: version, command,
// length (u16) and stream id (u32), little endian.
const frameHeaderLen = 8

// head keeps the first bytes read from a connection.
type head struct {
	mu  sync.Mutex
	n   int
	buf [headLen]byte
}

// record stores p, which was read at offset off of the connection's input.
// Reads come from one goroutine, so off is where the previous read ended.
func (h *head) record(off uint64, p []byte) {
	if off >= headLen {
		return
	}
	h.mu.Lock()
	h.n = int(off) + copy(h.buf[off:], p)
	h.mu.Unlock()
}

// bytes returns a copy of what was kept.
func (h *head) bytes() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]byte(nil), h.buf[:h.n]...)
}

// mismatch is a setting the two ends of a session disagree on.
type mismatch struct {
	flag  string // as the user types it: "--nocomp"
	cause string // what the peer's first bytes show
}

func (m mismatch) String() string { return m.cause + ": " + m.flag + " differs" }

// diagnose explains a session that failed, from the first bytes it read
// (in) and the error it ended with (err, may be nil), for a session that
// expects snappy framing unless noComp and mux frames of version ver. It
// reports false if neither shows a setting that differs.
func diagnose(in []byte, err error, noComp bool, ver int) (mismatch, bool) {
	if errors.Is(err, crypt.ErrAuthFailed) {
		return mismatch{flag: "--key or --crypt", cause: "the peer's data fails authentication"}, true
	}
	if isSnappyStart(in) {
		if noComp {
			return mismatch{flag: "--nocomp", cause: "the peer compresses"}, true
		}
		in = snappyFirstBytes(in[min(len(in), len(snappyMagic)):], frameHeaderLen)
	} else if !noComp {
		if _, ok := frameVersion(in); ok {
			return mismatch{flag: "--nocomp", cause: "the peer does not compress"}, true
		}
		return mismatch{}, false
	}
	if v, ok := frameVersion(in); ok && v != ver {
		return mismatch{flag: "--smuxver", cause: fmt.Sprintf("the peer speaks smux version %d", v)}, true
	}
	return mismatch{}, false
}

// isSnappyStart reports whether in starts with the snappy stream identifier
// (all of it, or as much of it as in holds, but at least its chunk header).
func isSnappyStart(in []byte) bool {
	n := min(len(in), len(snappyMagic))
	return n >= 4 && bytes.Equal(in[:n], snappyMagic[:n])
}

// frameVersion returns the version of the mux frame header in starts with,
// if it is one that a version 1 or 2 peer could send as its first frames.
// With fewer than frameHeaderLen bytes it judges by what there is.
func frameVersion(in []byte) (int, bool) {
	if len(in) < 2 {
		return 0, false
	}
	ver, cmd := in[0], in[1]
	if ver != 1 && ver != 2 {
		return 0, false
	}
	const syn, fin, psh, nop, upd = 0, 1, 2, 3, 4
	if cmd > upd || (cmd == upd && ver != 2) {
		return 0, false
	}
	if len(in) >= 4 {
		length := binary.LittleEndian.Uint16(in[2:])
		switch cmd {
		case syn, fin, nop:
			if length != 0 {
				return 0, false
			}
		case upd:
			if length != 8 {
				return 0, false
			}
		}
	}
	return int(ver), true
}

// snappyFirstBytes decodes up to want bytes from the start of the first data
// chunk of a snappy framed stream (in follows the stream identifier). It
// stops early, without error, where in ends or stops making sense: it only
// looks, the session has already failed.
func snappyFirstBytes(in []byte, want int) []byte {
	for len(in) >= 4 {
		typ := in[0]
		size := int(in[1]) | int(in[2])<<8 | int(in[3])<<16
		body := in[4:]
		switch {
		case typ == 0x00 || typ == 0x01: // compressed or uncompressed data
			if size < 4 || len(body) < 4 {
				return nil
			}
			body = body[4:min(len(body), size)] // after the checksum
			if typ == 0x01 {
				return body[:min(len(body), want)]
			}
			return snappyBlockPrefix(body, want)
		case typ >= 0x80: // padding, skippable, another stream identifier
			if len(body) < size {
				return nil
			}
			in = body[size:]
		default: // reserved, unskippable
			return nil
		}
	}
	return nil
}

// snappyBlockPrefix decodes up to want bytes from the start of a snappy
// block (a varint length, then literals and back-references).
func snappyBlockPrefix(src []byte, want int) []byte {
	_, n := binary.Uvarint(src)
	if n <= 0 {
		return nil
	}
	src = src[n:]
	var dst []byte
	for len(src) > 0 && len(dst) < want {
		tag := src[0]
		var length, offset, hdr int
		switch tag & 3 {
		case 0: // literal; long lengths follow the tag in 1 to 4 bytes
			x := uint64(tag >> 2)
			hdr = 1
			if x >= 60 {
				extra := int(x - 59)
				if len(src) < 1+extra {
					return dst
				}
				x = 0
				for i := range extra {
					x |= uint64(src[1+i]) << (8 * i)
				}
				hdr += extra
			}
			src = src[hdr:]
			take := int(min(x+1, uint64(len(src)), uint64(want-len(dst))))
			dst = append(dst, src[:take]...)
			if uint64(take) < x+1 {
				return dst
			}
			src = src[take:]
			continue
		case 1:
			if len(src) < 2 {
				return dst
			}
			length, offset, hdr = 4+int(tag>>2&7), int(tag&0xe0)<<3|int(src[1]), 2
		case 2:
			if len(src) < 3 {
				return dst
			}
			length, offset, hdr = 1+int(tag>>2), int(binary.LittleEndian.Uint16(src[1:])), 3
		case 3:
			if len(src) < 5 {
				return dst
			}
			length, offset, hdr = 1+int(tag>>2), int(binary.LittleEndian.Uint32(src[1:])), 5
		}
		if offset <= 0 || offset > len(dst) {
			return dst
		}
		for range min(length, want-len(dst)) {
			dst = append(dst, dst[len(dst)-offset])
		}
		src = src[hdr:]
	}
	return dst
}

// reportMismatch logs, if the first bytes m read (or err) show that the
// peer's settings differ from ours, msg with the named flag, this side's
// value of it and args, and reports true. A peer host gets one such line at
// WARN per kind per warnEvery (the line counts those held back); the others
// go out at DEBUG. It reports false, logging nothing, if no setting shows.
func (s *settings) reportMismatch(log *slog.Logger, msg, peer string, m *meteredConn, err error, args ...any) bool {
	mm, ok := diagnose(m.head.bytes(), err, s.noComp, s.muxConfig.Version)
	if !ok {
		return false
	}
	switch mm.flag {
	case "--nocomp":
		args = append(args, "nocomp", s.noComp)
	case "--smuxver":
		args = append(args, "smuxver", s.muxConfig.Version)
	}
	if err != nil {
		args = append(args, "err", err)
	}
	lvl := slog.LevelDebug
	if ok, held := s.mismatchWarn.allow(mm.flag+" "+hostOf(peer), time.Now()); ok {
		lvl = slog.LevelWarn
		if held > 0 {
			args = append(args, "held_back", held)
		}
	}
	log.Log(context.Background(), lvl, msg+": "+mm.String(), args...)
	return true
}

// hostOf is the host part of a host:port address, the key under which
// warnings about one peer are rate limited: a client that redials comes
// from a new port every time.
func hostOf(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

package crypt

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"time"
)

// The encrypted stream protects smuxtun's TCP transport. kcptun has no TCP
// transport, so nothing here is bound by kcptun's wire format: the KCP
// transport keeps kcptun's per-packet kcp.BlockCrypt (see New) so that it
// interoperates with kcptun, while the TCP transport uses this AEAD stream
// whichever cipher name is given (EncryptsStream says which names turn it
// on). Both ends derive the same key from --key, so both must use the same
// key and the same transport.
//
// Wire format, each direction independently:
//
//	salt     32 random bytes, in clear, sent first by both ends
//	confirm  16 bytes: the GCM tag of an empty message (nonce 0)
//	records  sealed length (2 + 16 bytes), then sealed payload (len + 16 bytes)
//
// After both salts are known, each end derives
//
//	prk      = HKDF-Extract(SHA-256, secret = DeriveKey(pass), salt = client salt || server salt)
//	key(dir) = HKDF-Expand(SHA-256, prk, "smuxtun stream v1 client to server" or "... server to client", 32)
//
// and uses AES-256-GCM with a 96-bit nonce holding a per-direction counter
// (big endian in the last 8 bytes; the length and the payload of a record
// each take one). Binding the key to both salts means that no recorded
// direction can be replayed into another connection, and the role in the
// label means that a direction reflected back to its sender does not
// decrypt. The confirm tag lets both ends detect a wrong key before any data
// moves. Every 1<<24 nonces a direction's key is replaced by
// HKDF-Expand(SHA-256, key, "smuxtun stream v1 rekey", 32), keeping the
// amount of data under one key well inside AES-GCM's limits; the counter
// itself keeps counting and a stream refuses to write once it would wrap.
const (
	saltSize     = 32
	tagSize      = 16
	nonceSize    = 12
	lenSize      = 2
	headerSize   = lenSize + tagSize
	maxPayload   = 16 << 10
	maxRecord    = headerSize + maxPayload + tagSize
	recordsPerIO = 4 // records sealed into one write, or buffered by one read
	rekeyEvery   = 1 << 24

	labelClient = "smuxtun stream v1 client to server"
	labelServer = "smuxtun stream v1 server to client"
	labelRekey  = "smuxtun stream v1 rekey"
)

// Errors from a Stream. Authentication and truncation errors are wrapped
// with the peer's address.
var (
	// ErrAuthFailed means a record did not authenticate: the peer uses
	// another key, or the bytes were changed, cut or reordered in transit.
	ErrAuthFailed = errors.New("authentication failed (wrong key or corrupted stream)")
	// ErrTruncated means the connection ended in the middle of a record.
	ErrTruncated = errors.New("stream truncated mid-record")
	// ErrRecordLength means an authenticated record declared a length out of
	// range: the peer speaks another version of the protocol.
	ErrRecordLength = errors.New("record length out of range")
	// ErrNonceExhausted means a direction used every nonce it has; the
	// connection must be replaced.
	ErrNonceExhausted = errors.New("nonce counter exhausted")
	// ErrNoPeerSalt means the peer closed the connection before sending its
	// salt, which is what a peer without stream encryption does.
	ErrNoPeerSalt = errors.New("peer closed before its salt (is it using the same --transport and --crypt?)")
)

// EncryptsStream reports whether the cipher name turns on the encrypted
// stream on the TCP transport: every name except "none" and "null".
func EncryptsStream(name string) bool {
	return name != "none" && name != "null"
}

// Stream is a net.Conn whose bytes are encrypted and authenticated on the
// wire. The handshake runs on the first Read, Write or CloseWrite, or
// explicitly through Handshake or HandshakeContext. One Read and one Write
// may run at the same time; concurrent Writes are serialised.
type Stream struct {
	conn   net.Conn
	client bool
	secret []byte
	salt   [saltSize]byte

	hsMu   sync.Mutex
	hsDone bool
	hsErr  error

	wmu     sync.Mutex
	send    direction
	out     []byte // sealed records for one conn.Write
	pending []byte // sealed bytes a timed-out write left unsent
	werr    error

	rmu     sync.Mutex
	recv    direction
	in      []byte // ciphertext from the conn: in[rpos:rend] is unread
	rpos    int
	rend    int
	bodyLen int    // length of the record whose header was opened, or 0
	plain   []byte // opened plaintext the caller has not read yet (inside in)
	rerr    error
}

var _ net.Conn = (*Stream)(nil)

// direction is the cipher state of one direction.
type direction struct {
	aead  cipher.AEAD
	key   []byte
	seq   uint64
	nonce [nonceSize]byte
	lenb  [lenSize]byte
}

// Client wraps the dialling end of conn; key is DeriveKey of the passphrase.
func Client(conn net.Conn, key []byte) *Stream { return newStream(conn, key, true, rand.Reader) }

// Server wraps the accepting end of conn; key is DeriveKey of the passphrase.
func Server(conn net.Conn, key []byte) *Stream { return newStream(conn, key, false, rand.Reader) }

func newStream(conn net.Conn, key []byte, client bool, random io.Reader) *Stream {
	s := &Stream{
		conn:   conn,
		client: client,
		secret: append([]byte(nil), key...),
		out:    make([]byte, 0, recordsPerIO*maxRecord),
		in:     make([]byte, recordsPerIO*maxRecord),
	}
	if _, err := io.ReadFull(random, s.salt[:]); err != nil {
		s.hsDone, s.hsErr = true, fmt.Errorf("crypt: salt: %w", err)
	}
	return s
}

// Handshake exchanges salts and confirm tags with the peer, using the
// connection's deadlines. It returns the same result every time.
func (s *Stream) Handshake() error {
	s.hsMu.Lock()
	defer s.hsMu.Unlock()
	if !s.hsDone {
		s.hsErr = s.handshake()
		s.hsDone = true
	}
	return s.hsErr
}

// HandshakeContext is Handshake bounded by ctx: when ctx ends first the
// connection's deadline is set to the past and an error is returned; the
// caller should then close the connection.
func (s *Stream) HandshakeContext(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetDeadline(time.Unix(1, 0)) })
	err := s.Handshake()
	if !stop() {
		// ctx ended first and its deadline may still be landing on the
		// connection: report the context whatever the handshake did.
		if err == nil {
			return fmt.Errorf("crypt: handshake with %s: %w", s.conn.RemoteAddr(), ctx.Err())
		}
		return fmt.Errorf("%w: %w", err, ctx.Err())
	}
	return err
}

func (s *Stream) handshake() error {
	if _, err := s.conn.Write(s.salt[:]); err != nil {
		return s.hsError(err)
	}
	if err := s.fill(saltSize); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, ErrTruncated) {
			err = ErrNoPeerSalt
		}
		return s.hsError(err)
	}
	peer := s.in[s.rpos : s.rpos+saltSize]
	s.rpos += saltSize
	clientSalt, serverSalt := s.salt[:], peer
	if !s.client {
		clientSalt, serverSalt = peer, s.salt[:]
	}
	c2s, s2c, err := deriveKeys(s.secret, clientSalt, serverSalt)
	if err != nil {
		return s.hsError(err)
	}
	if !s.client {
		c2s, s2c = s2c, c2s
	}
	if err := s.send.setKey(c2s); err != nil {
		return s.hsError(err)
	}
	if err := s.recv.setKey(s2c); err != nil {
		return s.hsError(err)
	}

	confirm := s.send.aead.Seal(s.out[:0], s.send.next(), nil, nil)
	if _, err := s.conn.Write(confirm); err != nil {
		return s.hsError(err)
	}
	if err := s.fill(tagSize); err != nil {
		if errors.Is(err, io.EOF) {
			err = ErrTruncated
		}
		return s.hsError(err)
	}
	tag := s.in[s.rpos : s.rpos+tagSize]
	s.rpos += tagSize
	if _, err := s.recv.aead.Open(tag[:0], s.recv.next(), tag, nil); err != nil {
		return s.authError()
	}
	return nil
}

func (s *Stream) hsError(err error) error {
	return fmt.Errorf("crypt: handshake with %s: %w", s.conn.RemoteAddr(), err)
}

func (s *Stream) authError() error {
	return fmt.Errorf("crypt: %w from %s", ErrAuthFailed, s.conn.RemoteAddr())
}

// deriveKeys returns the client-to-server and server-to-client keys of a
// connection.
func deriveKeys(secret, clientSalt, serverSalt []byte) (c2s, s2c []byte, err error) {
	salt := make([]byte, 0, 2*saltSize)
	salt = append(append(salt, clientSalt...), serverSalt...)
	prk, err := hkdf.Extract(sha256.New, secret, salt)
	if err != nil {
		return nil, nil, err
	}
	if c2s, err = hkdf.Expand(sha256.New, prk, labelClient, 32); err != nil {
		return nil, nil, err
	}
	if s2c, err = hkdf.Expand(sha256.New, prk, labelServer, 32); err != nil {
		return nil, nil, err
	}
	return c2s, s2c, nil
}

func (d *direction) setKey(key []byte) error {
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	d.key, d.aead = key, aead
	return nil
}

// next returns the nonce for the current counter and advances it, moving
// to the next key at every rekeyEvery boundary. Callers check the counter
// with room before sealing, so it never wraps.
func (d *direction) next() []byte {
	if d.seq != 0 && d.seq%rekeyEvery == 0 {
		key, err := hkdf.Expand(sha256.New, d.key, labelRekey, 32)
		if err == nil {
			err = d.setKey(key)
		}
		if err != nil {
			// Unreachable: both calls fail only for key sizes other than
			// the fixed 32 bytes, and the handshake already built a GCM.
			panic(fmt.Sprintf("crypt: rekey: %v", err))
		}
	}
	binary.BigEndian.PutUint64(d.nonce[nonceSize-8:], d.seq)
	d.seq++
	return d.nonce[:]
}

// room reports whether n more nonces are available.
func (d *direction) room(n uint64) bool {
	return d.seq <= math.MaxUint64-n
}

// sealRecord appends one record holding payload (1..maxPayload bytes) to dst.
func (d *direction) sealRecord(dst, payload []byte) ([]byte, error) {
	if !d.room(2) {
		return dst, ErrNonceExhausted
	}
	binary.BigEndian.PutUint16(d.lenb[:], uint16(len(payload)))
	dst = d.aead.Seal(dst, d.next(), d.lenb[:], nil)
	return d.aead.Seal(dst, d.next(), payload, nil), nil
}

// Write seals p into records of at most 16 KiB and writes them, several
// records per write to the connection. If a write deadline passes midway,
// the records already sealed count as written and go out first on the next
// Write; any other error ends the stream.
func (s *Stream) Write(p []byte) (int, error) {
	if err := s.Handshake(); err != nil {
		return 0, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.werr != nil {
		return 0, s.werr
	}
	if len(s.pending) > 0 {
		m, err := s.conn.Write(s.pending)
		s.pending = s.pending[m:]
		if err != nil {
			return 0, s.writeFailed(err)
		}
	}
	n := 0
	for n < len(p) {
		buf := s.out[:0]
		var sealErr error
		for n < len(p) && cap(buf)-len(buf) >= maxRecord {
			chunk := min(len(p)-n, maxPayload)
			buf, sealErr = s.send.sealRecord(buf, p[n:n+chunk])
			if sealErr != nil {
				break
			}
			n += chunk
		}
		m, err := s.conn.Write(buf)
		if err != nil {
			if isTimeout(err) {
				s.pending = buf[m:]
			}
			return n, s.writeFailed(err)
		}
		if sealErr != nil {
			s.werr = fmt.Errorf("crypt: write to %s: %w", s.conn.RemoteAddr(), sealErr)
			return n, s.werr
		}
	}
	return n, nil
}

// writeFailed keeps a timeout retryable and makes any other error final.
func (s *Stream) writeFailed(err error) error {
	if !isTimeout(err) {
		s.werr = err
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Read returns plaintext from the peer. It opens as many buffered records
// as fit in p but blocks only until the first one is complete. A record
// that fails authentication ends the stream with ErrAuthFailed; a
// connection that ends inside a record gives ErrTruncated, one that ends
// between records io.EOF. A read deadline that passes mid-record leaves the
// stream usable.
func (s *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.Handshake(); err != nil {
		return 0, err
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if len(s.plain) > 0 {
		n := copy(p, s.plain)
		s.plain = s.plain[n:]
		return n, nil
	}
	if s.rerr != nil {
		return 0, s.rerr
	}
	n := 0
	for n < len(p) {
		if s.bodyLen == 0 {
			if n > 0 && s.rend-s.rpos < headerSize {
				break
			}
			if err := s.fill(headerSize); err != nil {
				return n, s.readFailed(err)
			}
			if !s.recv.room(2) {
				return n, s.readFailed(ErrNonceExhausted)
			}
			hdr := s.in[s.rpos : s.rpos+headerSize]
			l, err := s.recv.aead.Open(hdr[:0], s.recv.next(), hdr, nil)
			if err != nil {
				return n, s.readFailed(s.authError())
			}
			s.rpos += headerSize
			s.bodyLen = int(binary.BigEndian.Uint16(l))
			if s.bodyLen == 0 || s.bodyLen > maxPayload {
				return n, s.readFailed(fmt.Errorf("crypt: %w from %s: %d bytes", ErrRecordLength, s.conn.RemoteAddr(), s.bodyLen))
			}
		}
		if n > 0 && s.rend-s.rpos < s.bodyLen+tagSize {
			break
		}
		if err := s.fill(s.bodyLen + tagSize); err != nil {
			if errors.Is(err, io.EOF) {
				err = ErrTruncated
			}
			return n, s.readFailed(err)
		}
		body := s.in[s.rpos : s.rpos+s.bodyLen+tagSize]
		s.rpos += len(body)
		if len(p)-n >= s.bodyLen {
			out, err := s.recv.aead.Open(p[n:n], s.recv.next(), body, nil)
			if err != nil {
				return n, s.readFailed(s.authError())
			}
			n += len(out)
		} else {
			out, err := s.recv.aead.Open(body[:0], s.recv.next(), body, nil)
			if err != nil {
				return n, s.readFailed(s.authError())
			}
			m := copy(p[n:], out)
			s.plain = out[m:]
			n += m
		}
		s.bodyLen = 0
	}
	return n, nil
}

// readFailed wraps a connection error with the peer's address and makes
// every error but a timeout final.
func (s *Stream) readFailed(err error) error {
	if errors.Is(err, ErrTruncated) {
		err = fmt.Errorf("crypt: read from %s: %w", s.conn.RemoteAddr(), err)
	}
	if !isTimeout(err) {
		s.rerr = err
	}
	return err
}

// fill reads from the connection until at least n unread bytes are
// buffered. At the end of the connection it returns io.EOF if nothing is
// buffered and ErrTruncated otherwise. It is only called with s.plain
// empty, so moving the unread bytes to the front loses nothing.
func (s *Stream) fill(n int) error {
	for s.rend-s.rpos < n {
		if len(s.in)-s.rpos < n {
			s.rend = copy(s.in, s.in[s.rpos:s.rend])
			s.rpos = 0
		}
		m, err := s.conn.Read(s.in[s.rend:])
		s.rend += m
		if err != nil {
			if s.rend-s.rpos >= n {
				return nil
			}
			if errors.Is(err, io.EOF) {
				if s.rend == s.rpos {
					return io.EOF
				}
				return ErrTruncated
			}
			return err
		}
	}
	return nil
}

// Close closes the connection. Sealed records a timed-out Write left
// behind are dropped.
func (s *Stream) Close() error { return s.conn.Close() }

// CloseWrite finishes the handshake if needed (so the peer sees a clean
// end rather than a missing salt), sends what a timed-out Write left
// behind and shuts down the sending side of the connection, if it has one.
func (s *Stream) CloseWrite() error {
	cw, ok := s.conn.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("crypt: %T has no CloseWrite", s.conn)
	}
	if err := s.Handshake(); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if len(s.pending) > 0 && s.werr == nil {
		m, err := s.conn.Write(s.pending)
		s.pending = s.pending[m:]
		if err != nil {
			return s.writeFailed(err)
		}
	}
	return cw.CloseWrite()
}

// NetConn returns the wrapped connection.
func (s *Stream) NetConn() net.Conn { return s.conn }

// LocalAddr returns the connection's local address.
func (s *Stream) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// RemoteAddr returns the connection's remote address.
func (s *Stream) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// SetDeadline sets the connection's read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error { return s.conn.SetDeadline(t) }

// SetReadDeadline sets the connection's read deadline.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the connection's write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.conn.SetWriteDeadline(t) }

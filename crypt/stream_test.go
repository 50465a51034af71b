package crypt

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/nettest"
)

var (
	keyA = DeriveKey("correct horse")
	keyB = DeriveKey("battery staple")
)

// wireSize is how many bytes n plaintext bytes take on the wire after the
// salt and confirm tag, written in one Write.
func wireSize(n int) int {
	full, rest := n/maxPayload, n%maxPayload
	size := full * maxRecord
	if rest > 0 {
		size += headerSize + rest + tagSize
	}
	return size
}

// checkGoroutines fails the test if goroutines it started outlive it.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > base {
			t.Errorf("goroutines: %d after the test, %d before", n, base)
		}
	})
}

// streamPair returns a client and a server Stream over loopback TCP.
func streamPair(t testing.TB, clientKey, serverKey []byte) (*Stream, *Stream) {
	t.Helper()
	d, a := nettest.TCPPair(t)
	return Client(d, clientKey), Server(a, serverKey)
}

// handshakeBoth runs both handshakes at once and returns their errors.
func handshakeBoth(c, s *Stream) (cerr, serr error) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); serr = s.Handshake() }()
	cerr = c.Handshake()
	wg.Wait()
	return cerr, serr
}

// relay sits between a client and a server on loopback. It forwards the
// server's bytes as they come and the client's salt at once; the rest of
// the client's bytes it collects until the client half-closes, passes
// through edit and then forwards.
type relay struct {
	flipSalt bool
	edit     func([]byte) []byte
	captured chan []byte // the client's bytes after the salt, unedited
}

// connect returns a client Stream that reaches a server Stream through the
// relay.
func (r *relay) connect(t *testing.T, clientKey, serverKey []byte) (*Stream, *Stream) {
	t.Helper()
	cd, ca := nettest.TCPPair(t) // client ↔ relay
	sd, sa := nettest.TCPPair(t) // relay ↔ server
	r.captured = make(chan []byte, 1)
	go func() {
		io.Copy(ca, sd)
		ca.CloseWrite()
	}()
	go func() {
		defer sd.CloseWrite()
		salt := make([]byte, saltSize)
		if _, err := io.ReadFull(ca, salt); err != nil {
			r.captured <- nil
			return
		}
		if r.flipSalt {
			salt[7] ^= 0x40
		}
		sd.Write(salt)
		rest, _ := io.ReadAll(ca)
		r.captured <- bytes.Clone(rest)
		if r.edit != nil {
			rest = r.edit(rest)
		}
		sd.Write(rest)
	}()
	return Client(cd, clientKey), Server(sa, serverKey)
}

// readAll reads s to the end with reads of random sizes up to max.
func readAll(s *Stream, max int, rng *mrand.Rand) ([]byte, error) {
	var got []byte
	buf := make([]byte, max)
	for {
		n, err := s.Read(buf[:1+rng.IntN(max)])
		got = append(got, buf[:n]...)
		if err != nil {
			return got, err
		}
	}
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStreamRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		maxRead int
		size    int // plus up to as much again, at random
	}{
		{"small reads", 7, 64 << 10},
		{"reads of a record", maxPayload, 1 << 20},
		{"large reads", 256 << 10, 1 << 20},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			rng := mrand.New(mrand.NewPCG(uint64(i), 42))
			c, s := streamPair(t, keyA, keyA)

			// The server echoes everything back, then half-closes.
			echoErr := make(chan error, 1)
			go func() {
				_, err := io.Copy(s, s)
				if err == nil {
					err = s.CloseWrite()
				}
				echoErr <- err
			}()

			data := randomBytes(t, tt.size+rng.IntN(tt.size))
			writeErr := make(chan error, 1)
			go func() {
				for rest := data; len(rest) > 0; {
					n := min(len(rest), 1+rng.IntN(100<<10))
					if _, err := c.Write(rest[:n]); err != nil {
						writeErr <- err
						return
					}
					rest = rest[n:]
				}
				writeErr <- c.CloseWrite()
			}()

			got, err := readAll(c, tt.maxRead, mrand.New(mrand.NewPCG(uint64(i), 7)))
			if err != io.EOF {
				t.Fatalf("client read: %v, want io.EOF", err)
			}
			if err := <-writeErr; err != nil {
				t.Fatalf("client write: %v", err)
			}
			if err := <-echoErr; err != nil {
				t.Fatalf("server echo: %v", err)
			}
			if sha256.Sum256(got) != sha256.Sum256(data) {
				t.Fatalf("echoed %d bytes, sent %d: SHA-256 differs", len(got), len(data))
			}
		})
	}
}

func TestStreamWrongKey(t *testing.T) {
	checkGoroutines(t)
	c, s := streamPair(t, keyA, keyB)
	go c.Write([]byte("secret request"))

	buf := make([]byte, 64)
	n, err := s.Read(buf)
	if n != 0 || !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("server read = %d, %v; want 0 and ErrAuthFailed", n, err)
	}
	want := "crypt: authentication failed (wrong key or corrupted stream) from " + s.RemoteAddr().String()
	if err.Error() != want {
		t.Errorf("server error %q, want %q", err, want)
	}
	// The result is final.
	if _, err2 := s.Read(buf); !errors.Is(err2, ErrAuthFailed) {
		t.Errorf("second read: %v, want ErrAuthFailed", err2)
	}
	// The client finds out too, without sending a byte of data.
	if err := c.Handshake(); !errors.Is(err, ErrAuthFailed) || !strings.Contains(err.Error(), c.RemoteAddr().String()) {
		t.Errorf("client handshake: %v; want ErrAuthFailed naming %s", err, c.RemoteAddr())
	}
	c.Close()
	s.Close()
}

func TestStreamTampering(t *testing.T) {
	const size = 3*maxPayload + 1000
	// Offsets are into what the client sends after its salt: the confirm
	// tag, then three full records and one of 1000 bytes.
	rec := func(i int) int { return tagSize + i*maxRecord } // start of record i
	flip := func(off int) func([]byte) []byte {
		return func(b []byte) []byte { b[off] ^= 0x01; return b }
	}
	cut := func(off int) func([]byte) []byte {
		return func(b []byte) []byte { return b[:off] }
	}
	tests := []struct {
		name     string
		flipSalt bool
		edit     func([]byte) []byte
		want     error // from the server's reads
		wantData int   // plaintext bytes the server may deliver first
	}{
		{"untouched", false, nil, io.EOF, size},
		{"salt", true, nil, ErrAuthFailed, 0},
		{"confirm tag", false, flip(3), ErrAuthFailed, 0},
		{"first length", false, flip(rec(0) + 1), ErrAuthFailed, 0},
		{"first length tag", false, flip(rec(0) + headerSize - 1), ErrAuthFailed, 0},
		{"first payload", false, flip(rec(0) + headerSize + 100), ErrAuthFailed, 0},
		{"third payload tag", false, flip(rec(3) - 1), ErrAuthFailed, 2 * maxPayload},
		{"last byte", false, func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }, ErrAuthFailed, 3 * maxPayload},
		{"records swapped", false, func(b []byte) []byte {
			out := append([]byte(nil), b[:rec(0)]...)
			out = append(out, b[rec(1):rec(2)]...)
			out = append(out, b[rec(0):rec(1)]...)
			return append(out, b[rec(2):]...)
		}, ErrAuthFailed, 0},
		{"record dropped", false, func(b []byte) []byte {
			return append(b[:rec(1):rec(1)], b[rec(2):]...)
		}, ErrAuthFailed, maxPayload},
		{"record repeated", false, func(b []byte) []byte {
			out := append([]byte(nil), b[:rec(2)]...)
			return append(out, b[rec(1):]...)
		}, ErrAuthFailed, 2 * maxPayload},
		{"appended garbage", false, func(b []byte) []byte { return append(b, make([]byte, 40)...) }, ErrAuthFailed, size},
		{"cut in confirm tag", false, cut(10), ErrTruncated, 0},
		{"cut after confirm tag", false, cut(rec(0)), io.EOF, 0},
		{"cut in length", false, cut(rec(0) + 5), ErrTruncated, 0},
		{"cut in payload", false, cut(rec(1) + headerSize + 10), ErrTruncated, maxPayload},
		{"cut in last tag", false, func(b []byte) []byte { return b[:len(b)-3] }, ErrTruncated, 3 * maxPayload},
		{"cut between records", false, cut(rec(2)), io.EOF, 2 * maxPayload},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			r := &relay{flipSalt: tt.flipSalt, edit: tt.edit}
			c, s := r.connect(t, keyA, keyA)
			data := randomBytes(t, size)
			go func() {
				c.Write(data)
				c.CloseWrite()
				c.Close() // also when the handshake failed and nothing was shut down
			}()
			got, err := readAll(s, 64<<10, mrand.New(mrand.NewPCG(uint64(i), 1)))
			if !errors.Is(err, tt.want) {
				t.Fatalf("server read error %v, want %v", err, tt.want)
			}
			if err != io.EOF && !strings.Contains(err.Error(), s.RemoteAddr().String()) {
				t.Errorf("error %q does not name the peer %s", err, s.RemoteAddr())
			}
			if len(got) != tt.wantData || !bytes.Equal(got, data[:len(got)]) {
				t.Errorf("server got %d bytes before the error (prefix of what was sent: %v), want %d",
					len(got), bytes.Equal(got, data[:len(got)]), tt.wantData)
			}
			if captured := <-r.captured; tt.edit == nil && !tt.flipSalt && len(captured) != tagSize+wireSize(size) {
				t.Errorf("client sent %d bytes after its salt, the cases assume %d", len(captured), tagSize+wireSize(size))
			}
			c.Close()
			s.Close()
		})
	}
}

func TestStreamConnectionsDoNotShareKeystream(t *testing.T) {
	checkGoroutines(t)
	data := randomBytes(t, 4*maxPayload)
	var salts, wires [][]byte
	for range 2 {
		r := &relay{}
		c, s := r.connect(t, keyA, keyA)
		go func() {
			c.Write(data)
			c.CloseWrite()
		}()
		got, err := io.ReadAll(s)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, err %v", len(got), err)
		}
		salts = append(salts, bytes.Clone(c.salt[:]))
		wires = append(wires, <-r.captured)
		c.Close()
		s.Close()
	}
	if bytes.Equal(salts[0], salts[1]) {
		t.Fatal("two connections used the same salt")
	}
	// With a shared keystream the same plaintext would encrypt to the same
	// bytes; independent keystreams agree on about one byte in 256.
	same := 0
	for i := range min(len(wires[0]), len(wires[1])) {
		if wires[0][i] == wires[1][i] {
			same++
		}
	}
	if limit := len(wires[0]) / 64; same > limit {
		t.Errorf("%d of %d ciphertext bytes equal across connections (limit %d)", same, len(wires[0]), limit)
	}
}

func TestStreamDirectionKeys(t *testing.T) {
	c, s := streamPair(t, keyA, keyA)
	if cerr, serr := handshakeBoth(c, s); cerr != nil || serr != nil {
		t.Fatalf("handshake: %v, %v", cerr, serr)
	}
	if !bytes.Equal(c.send.key, s.recv.key) || !bytes.Equal(s.send.key, c.recv.key) {
		t.Fatal("the two ends disagree on a direction's key")
	}
	if bytes.Equal(c.send.key, c.recv.key) {
		t.Fatal("both directions use one key: a reflected stream would decrypt")
	}
	if bytes.Equal(c.send.key, keyA[:]) {
		t.Fatal("the direction key is the passphrase key itself")
	}
}

func TestStreamReflectionRejected(t *testing.T) {
	// A client talking to a relay that sends its own bytes back.
	checkGoroutines(t)
	d, a := nettest.TCPPair(t)
	go io.Copy(a, a)
	c := Client(d, keyA)
	if err := c.Handshake(); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("handshake with a mirror: %v, want ErrAuthFailed", err)
	}
	d.Close()
}

func TestStreamPlaintextPeer(t *testing.T) {
	checkGoroutines(t)
	d, a := nettest.TCPPair(t)
	go func() {
		// A peer without stream encryption reads what it takes for frames,
		// answers with a smux NOP and hangs up.
		io.ReadFull(a, make([]byte, saltSize))
		a.Write([]byte("\x02\x03\x00\x00\x00\x00\x00\x00"))
		a.CloseWrite()
	}()
	err := Client(d, keyA).Handshake()
	if !errors.Is(err, ErrNoPeerSalt) || !strings.Contains(err.Error(), "--transport") {
		t.Fatalf("handshake with a plaintext peer: %v, want ErrNoPeerSalt", err)
	}
}

func TestStreamRekey(t *testing.T) {
	checkGoroutines(t)
	c, s := streamPair(t, keyA, keyA)
	if cerr, serr := handshakeBoth(c, s); cerr != nil || serr != nil {
		t.Fatalf("handshake: %v, %v", cerr, serr)
	}
	first := bytes.Clone(c.send.key)
	// Jump both ends of one direction to just before a rekey; the next
	// records cross it.
	c.send.seq, s.recv.seq = rekeyEvery-5, rekeyEvery-5
	data := randomBytes(t, 10*maxPayload)
	go func() {
		c.Write(data)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("read %d of %d bytes across a rekey, err %v", len(got), len(data), err)
	}
	if bytes.Equal(c.send.key, first) || !bytes.Equal(c.send.key, s.recv.key) {
		t.Fatal("the key did not move on at the rekey boundary, or the ends disagree")
	}
}

func TestStreamNonceExhausted(t *testing.T) {
	checkGoroutines(t)
	c, s := streamPair(t, keyA, keyA)
	if cerr, serr := handshakeBoth(c, s); cerr != nil || serr != nil {
		t.Fatalf("handshake: %v, %v", cerr, serr)
	}
	c.send.seq, s.recv.seq = math.MaxUint64-3, math.MaxUint64-3
	if _, err := c.Write([]byte("last record")); err != nil {
		t.Fatalf("write with two nonces left: %v", err)
	}
	buf := make([]byte, 64)
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "last record" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	n, err := c.Write([]byte("one too many"))
	if n != 0 || !errors.Is(err, ErrNonceExhausted) {
		t.Fatalf("write past the last nonce = %d, %v; want 0 and ErrNonceExhausted", n, err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrNonceExhausted) {
		t.Fatalf("the refusal is not final: %v", err)
	}
	c.Close()
	if _, err := s.Read(buf); err != io.EOF {
		t.Fatalf("reader after the writer gave up: %v, want io.EOF", err)
	}
}

func TestStreamReadDeadlineMidRecord(t *testing.T) {
	checkGoroutines(t)
	c, s := streamPair(t, keyA, keyA)
	if cerr, serr := handshakeBoth(c, s); cerr != nil || serr != nil {
		t.Fatalf("handshake: %v, %v", cerr, serr)
	}
	rec, err := c.send.sealRecord(nil, []byte("split across a timeout"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.conn.Write(rec[:headerSize+3]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := s.Read(buf); n != 0 || !isTimeout(err) {
		t.Fatalf("read of half a record = %d, %v; want a timeout", n, err)
	}
	s.SetReadDeadline(time.Time{})
	if _, err := c.conn.Write(rec[headerSize+3:]); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "split across a timeout" {
		t.Fatalf("read after the timeout = %q, %v", buf[:n], err)
	}
}

func TestStreamWriteDeadlineResumes(t *testing.T) {
	checkGoroutines(t)
	c, s := streamPair(t, keyA, keyA)
	if cerr, serr := handshakeBoth(c, s); cerr != nil || serr != nil {
		t.Fatalf("handshake: %v, %v", cerr, serr)
	}
	// Nobody reads yet: writes fill the socket buffers until the deadline.
	chunk := randomBytes(t, 1<<20)
	var sent []byte
	c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	timedOut := false
	for range 64 {
		n, err := c.Write(chunk)
		sent = append(sent, chunk[:n]...)
		if err != nil {
			if !isTimeout(err) {
				t.Fatalf("write: %v, want a timeout", err)
			}
			timedOut = true
			break
		}
	}
	if !timedOut {
		t.Fatal("64 MiB went into the socket buffers without a reader")
	}
	c.SetWriteDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(chunk) // sends what the timed-out write left first
		sent = append(sent, chunk...)
		if err == nil {
			err = c.CloseWrite()
		}
		done <- err
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("write after the timeout: %v", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(sent) {
		t.Fatalf("received %d bytes, writes reported %d: SHA-256 differs", len(got), len(sent))
	}
}

func TestStreamWriteDoesNotAllocate(t *testing.T) {
	checkGoroutines(t)
	c, s := streamPair(t, keyA, keyA)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		buf := make([]byte, 64<<10)
		for {
			if _, err := s.Read(buf); err != nil {
				return
			}
		}
	}()
	for _, size := range []int{10, 1000, maxPayload, 100 << 10} {
		p := make([]byte, size)
		if _, err := c.Write(p); err != nil { // handshake and warm-up
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(50, func() {
			if _, err := c.Write(p); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Write of %d bytes: %.1f allocations per call (reader included), want 0", size, allocs)
		}
	}
	c.Close()
	<-drained
}

func TestEncryptsStream(t *testing.T) {
	for _, name := range Names() {
		want := name != "none" && name != "null"
		if got := EncryptsStream(name); got != want {
			t.Errorf("EncryptsStream(%q) = %v, want %v", name, got, want)
		}
	}
}

// fuzzConn serves fixed bytes to a reader, a few at a time, and discards
// what is written: fuzzing runs millions of cases, too many for sockets.
type fuzzConn struct {
	r     *bytes.Reader
	chunk int
}

func (c *fuzzConn) Read(p []byte) (int, error) {
	return c.r.Read(p[:min(len(p), c.chunk)])
}
func (c *fuzzConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *fuzzConn) Close() error                     { return nil }
func (c *fuzzConn) LocalAddr() net.Addr              { return fuzzAddr }
func (c *fuzzConn) RemoteAddr() net.Addr             { return fuzzAddr }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

var fuzzAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}

var (
	fuzzClientSalt = bytes.Repeat([]byte{1}, saltSize)
	fuzzServerSalt = make([]byte, saltSize) // the server end's salt: zeros
)

// sealAsClient builds what a client with keyA would send to a server whose
// salt is fuzzServerSalt, with one record per length-prefixed chunk of
// script (the length is taken as given, even 0 or over the limit). It
// returns the wire bytes and the plaintext of the records up to the first
// invalid length.
func sealAsClient(t testing.TB, script []byte) (wire, plain []byte) {
	c2s, _, err := deriveKeys(keyA, fuzzClientSalt, fuzzServerSalt)
	if err != nil {
		t.Fatal(err)
	}
	var d direction
	if err := d.setKey(c2s); err != nil {
		t.Fatal(err)
	}
	wire = append(bytes.Clone(fuzzClientSalt), d.aead.Seal(nil, d.next(), nil, nil)...)
	valid := true
	for len(script) >= 2 {
		n := int(binary.BigEndian.Uint16(script))
		script = script[2:]
		payload := script[:min(n, len(script))]
		script = script[len(payload):]
		valid = valid && n > 0 && n <= maxPayload && n == len(payload)
		if valid {
			plain = append(plain, payload...)
		}
		var l [2]byte
		binary.BigEndian.PutUint16(l[:], uint16(n))
		wire = d.aead.Seal(wire, d.next(), l[:], nil)
		wire = d.aead.Seal(wire, d.next(), payload, nil)
	}
	return wire, plain
}

// FuzzStreamRead feeds arbitrary bytes to the server end of a Stream, either
// raw or sealed with the right key as records of arbitrary declared length.
// The reader must never panic, never grow its buffers, return only
// plaintext that was sealed, and end every stream with an error.
func FuzzStreamRead(f *testing.F) {
	f.Add([]byte{}, false, uint8(255))
	f.Add(bytes.Repeat([]byte{7}, 100), false, uint8(3))
	f.Add([]byte("\x00\x05hello\x00\x03abc"), true, uint8(255))
	f.Add([]byte("\x00\x05hello\x00\x00"), true, uint8(10))
	f.Add([]byte("\xff\xffwhat"), true, uint8(0))
	f.Add([]byte("\x40\x01"), true, uint8(100))
	f.Fuzz(func(t *testing.T, input []byte, sealed bool, chunk uint8) {
		wire, plain := input, []byte(nil)
		if sealed {
			wire, plain = sealAsClient(t, input)
		}
		conn := &fuzzConn{r: bytes.NewReader(wire), chunk: 1 + int(chunk)}
		s := newStream(conn, keyA, false, bytes.NewReader(fuzzServerSalt))
		bufLen := len(s.in)
		var got []byte
		buf := make([]byte, 1+int(chunk)*97)
		var err error
		for range 2*len(wire) + 4 {
			var n int
			n, err = s.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if err == nil {
			t.Fatalf("no error after %d reads of %d wire bytes", len(wire)+2, len(wire))
		}
		if len(s.in) != bufLen || cap(s.out) != recordsPerIO*maxRecord {
			t.Fatalf("buffers grew: in %d→%d, out cap %d", bufLen, len(s.in), cap(s.out))
		}
		if !bytes.Equal(got, plain[:min(len(got), len(plain))]) || len(got) > len(plain) {
			t.Fatalf("read %q, which was not sealed (sealed %q)", got, plain)
		}
		if sealed && err == io.EOF && len(got) != len(plain) {
			t.Fatalf("clean end after %d of %d sealed bytes", len(got), len(plain))
		}
	})
}

// BenchmarkStream measures one direction over loopback TCP, raw and
// encrypted, so that one run prints the cost of the encryption.
func BenchmarkStream(b *testing.B) {
	for _, size := range []int{64 << 10} {
		b.Run(fmt.Sprintf("tcp/%dKiB", size>>10), func(b *testing.B) {
			d, a := nettest.TCPPair(b)
			benchTransfer(b, d, a, size)
		})
		b.Run(fmt.Sprintf("aes-256-gcm/%dKiB", size>>10), func(b *testing.B) {
			d, a := nettest.TCPPair(b)
			benchTransfer(b, Client(d, keyA), Server(a, keyA), size)
		})
	}
}

func benchTransfer(b *testing.B, w io.WriteCloser, r io.ReadCloser, size int) {
	b.Helper()
	done := make(chan int64)
	go func() {
		var total int64
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			total += int64(n)
			if err != nil {
				done <- total
				return
			}
		}
	}()
	p := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := w.Write(p); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	<-done
	r.Close()
}

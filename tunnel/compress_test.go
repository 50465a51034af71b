package tunnel

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"

	"github.com/smuxtun/smuxtun/internal/nettest"
)

// TestCompConnFraming: what compConn writes is the snappy framing format
// (stream identifier first), every Write is on the wire when Write
// returns, and concurrent writers never interleave inside one Write.
func TestCompConnFraming(t *testing.T) {
	a, b := nettest.TCPPair(t)
	w := newCompConn(a)

	// Flushed per write: a small write is readable without any further write.
	if _, err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 10)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(b, raw); err != nil {
		t.Fatal(err)
	}
	if want := []byte("\xff\x06\x00\x00sNaPpY"); !bytes.Equal(raw, want) {
		t.Fatalf("stream starts with %q, want the snappy stream identifier", raw)
	}
	r := snappy.NewReader(io.MultiReader(bytes.NewReader(raw), b))
	got := make([]byte, 5)
	if _, err := io.ReadFull(r, got); err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}

	// Concurrent writers: each record is [len u32][payload]; a record cut by
	// another writer would break the parse below.
	const writers, records = 4, 50
	var wg sync.WaitGroup
	var sent [writers]int
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range records {
				payload := bytes.Repeat([]byte{byte(i)}, 1+(j*997)%70000)
				rec := append([]byte{byte(len(payload)), byte(len(payload) >> 8), byte(len(payload) >> 16), byte(i)}, payload...)
				if _, err := w.Write(rec); err != nil {
					t.Error(err)
					return
				}
				sent[i] += len(payload)
			}
		}()
	}
	readDone := make(chan error, 1)
	var recvd [writers]int
	go func() {
		for range writers * records {
			var h [4]byte
			if _, err := io.ReadFull(r, h[:]); err != nil {
				readDone <- err
				return
			}
			n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
			p := make([]byte, n)
			if _, err := io.ReadFull(r, p); err != nil {
				readDone <- err
				return
			}
			if !bytes.Equal(p, bytes.Repeat([]byte{h[3]}, n)) {
				readDone <- errors.New("interleaved record")
				return
			}
			recvd[h[3]] += n
		}
		readDone <- nil
	}()
	wg.Wait()
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := <-readDone; err != nil {
		t.Fatal(err)
	}
	if sent != recvd {
		t.Fatalf("sent %v, received %v", sent, recvd)
	}
}

// TestCompConnReadsReference: compConn reads what the reference wrapper
// writes, including incompressible data.
func TestCompConnReadsReference(t *testing.T) {
	a, b := nettest.TCPPair(t)
	ref := newRefComp(a)
	ours := newCompConn(b)
	data := append(randomBytes(t, 200<<10), bytes.Repeat([]byte("smuxtun "), 20000)...)
	go func() {
		ref.Write(data[:1000])
		ref.Write(data[1000:])
		a.CloseWrite()
	}()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(ours)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("got %d bytes, want %d", len(got), len(data))
	}
}

// TestCompConnCorrupt: garbage from the network is an error, not a panic
// or a hang.
func TestCompConnCorrupt(t *testing.T) {
	a, b := nettest.TCPPair(t)
	ours := newCompConn(b)
	a.Write([]byte("\xff\x06\x00\x00sNaPpY\x00\x10\x00\x00garbage-garbage-"))
	a.CloseWrite()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(ours)
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("corrupt chunk read as %v", err)
	}
}

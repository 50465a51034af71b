package tunnel

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/smuxtun/smuxtun/tunnel/socks"
)

// FuzzReadRequest: whatever a client sends as a marked stream's request is
// read without a panic and without reading more than the request; what
// parses encodes back to the same bytes.
func FuzzReadRequest(f *testing.F) {
	for _, seed := range [][]byte{
		{1, 1, 127, 0, 0, 1, 0, 80},
		{2, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 53},
		{1, 3, 9, 'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't', 1, 187},
		{3},
		{9},
		{1, 3, 0},
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		kind, dst, err := readRequest(r)
		if err != nil {
			return
		}
		used := len(b) - r.Len()
		again, err := appendRequest(nil, kind, dst)
		if err != nil {
			t.Fatalf("%v %v parsed but does not encode: %v", kind, dst, err)
		}
		k2, d2, err := readRequest(bytes.NewReader(again))
		if err != nil || k2 != kind || d2 != dst {
			t.Fatalf("round trip: %x -> %v %v -> %x -> %v %v %v", b[:used], kind, dst, again, k2, d2, err)
		}
		if kind == kindAssoc && used != 1 {
			t.Fatalf("associate request took %d bytes", used)
		}
	})
}

// FuzzDatagramReader: any byte stream splits into datagrams of at most
// MaxDatagram bytes, or ends with io.EOF or errBadRequest; never a panic.
func FuzzDatagramReader(f *testing.F) {
	var ok []byte
	w := &datagramWriter{w: writerFunc(func(p []byte) (int, error) { ok = append(ok, p...); return len(p), nil })}
	w.write(nil, []byte("hello"))
	f.Add(ok, false)
	var assoc []byte
	w = &datagramWriter{w: writerFunc(func(p []byte) (int, error) { assoc = append(assoc, p...); return len(p), nil })}
	a := socks.Addr{Host: "example.com", Port: 53}
	w.write(&a, []byte("query"))
	f.Add(assoc, true)
	f.Add([]byte{0xff, 0xff}, false)
	f.Add([]byte{0, 10, 1}, false)
	f.Fuzz(func(t *testing.T, b []byte, withAddr bool) {
		r := newDatagramReader(bytes.NewReader(b), withAddr)
		defer r.release()
		for range len(b) + 1 {
			_, data, err := r.read()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, errBadRequest) {
					t.Fatalf("error %v is neither EOF nor a bad request", err)
				}
				return
			}
			if len(data) > MaxDatagram {
				t.Fatalf("datagram of %d bytes", len(data))
			}
		}
		t.Fatal("more datagrams than bytes")
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

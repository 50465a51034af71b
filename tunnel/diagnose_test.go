package tunnel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/golang/snappy"
	"github.com/smuxtun/smuxtun/crypt"
)

// frame returns a mux frame header (and payload) as a peer sends it.
func frame(ver, cmd byte, sid uint32, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0], b[1] = ver, cmd
	binary.LittleEndian.PutUint16(b[2:], uint16(len(payload)))
	binary.LittleEndian.PutUint32(b[4:], sid)
	return append(b, payload...)
}

// peerHead is what a session reads first from a peer that writes writes,
// compressed unless noComp, cut to headLen as meteredConn keeps it.
func peerHead(t testing.TB, noComp bool, writes ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if noComp {
		for _, w := range writes {
			out.Write(w)
		}
	} else {
		sw := snappy.NewBufferedWriter(&out)
		for _, w := range writes {
			if _, err := sw.Write(w); err != nil {
				t.Fatal(err)
			}
			if err := sw.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	b := out.Bytes()
	return b[:min(len(b), headLen)]
}

func TestDiagnose(t *testing.T) {
	const helloID = 0x736d7478
	hello := func(ver byte) [][]byte { return [][]byte{frame(ver, 3, helloID, nil)} }
	// A first write that snappy compresses: a SYN, a window update and
	// data that repeats, batched into one write as the mux does.
	bulk := func(ver byte) [][]byte {
		var w []byte
		w = append(w, frame(ver, 0, 1, nil)...)
		if ver == 2 {
			w = append(w, frame(ver, 4, 1, make([]byte, 8))...)
		}
		w = append(w, frame(ver, 2, 1, bytes.Repeat([]byte("abcd"), 1000))...)
		return [][]byte{w}
	}
	type end struct {
		noComp bool
		ver    int
	}
	cases := []struct {
		name   string
		us     end
		peer   end
		writes func(ver byte) [][]byte
		want   string // "" for no mismatch
	}{
		{"same compressed v2", end{false, 2}, end{false, 2}, hello, ""},
		{"same raw v1", end{true, 1}, end{true, 1}, hello, ""},
		{"same compressed bulk", end{false, 2}, end{false, 2}, bulk, ""},
		{"peer compresses", end{true, 2}, end{false, 2}, hello, "the peer compresses: --nocomp differs"},
		{"peer compresses, other version too", end{true, 2}, end{false, 1}, hello, "the peer compresses: --nocomp differs"},
		{"peer does not compress", end{false, 2}, end{true, 2}, hello, "the peer does not compress: --nocomp differs"},
		{"peer does not compress, v1", end{false, 2}, end{true, 1}, hello, "the peer does not compress: --nocomp differs"},
		{"peer does not compress, bulk", end{false, 1}, end{true, 1}, bulk, "the peer does not compress: --nocomp differs"},
		{"raw, peer speaks v1", end{true, 2}, end{true, 1}, hello, "the peer speaks smux version 1: --smuxver differs"},
		{"raw, peer speaks v2", end{true, 1}, end{true, 2}, hello, "the peer speaks smux version 2: --smuxver differs"},
		{"compressed, peer speaks v1", end{false, 2}, end{false, 1}, hello, "the peer speaks smux version 1: --smuxver differs"},
		{"compressed, peer speaks v2", end{false, 1}, end{false, 2}, hello, "the peer speaks smux version 2: --smuxver differs"},
		{"compressed bulk, peer speaks v1", end{false, 2}, end{false, 1}, bulk, "the peer speaks smux version 1: --smuxver differs"},
		{"compressed bulk, peer speaks v2", end{false, 1}, end{false, 2}, bulk, "the peer speaks smux version 2: --smuxver differs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := peerHead(t, c.peer.noComp, c.writes(byte(c.peer.ver))...)
			got, ok := diagnose(in, nil, c.us.noComp, c.us.ver)
			if !ok {
				got = mismatch{}
			}
			if ok != (c.want != "") || (ok && got.String() != c.want) {
				t.Fatalf("diagnose(% x) = %q, %v; want %q", in, got, ok, c.want)
			}
		})
	}
}

// TestDiagnoseNoClue: input that shows no setting, and errors that say
// nothing about one, give no diagnosis; a failed authentication names the
// key.
func TestDiagnoseNoClue(t *testing.T) {
	for _, in := range [][]byte{
		nil,
		{2},
		[]byte("GET / HTTP/1.1\r\n"),
		frame(2, 9, 1, nil),             // unknown command
		frame(1, 4, 1, make([]byte, 8)), // window update in v1
		frame(2, 0, 1, []byte("x")),     // SYN with a payload
		frame(2, 4, 1, make([]byte, 4)), // short window update
	} {
		for _, noComp := range []bool{false, true} {
			for _, ver := range []int{1, 2} {
				if m, ok := diagnose(in, nil, noComp, ver); ok {
					t.Errorf("diagnose(% x, nocomp %v, v%d) = %q, want none", in, noComp, ver, m)
				}
			}
		}
	}
	// Snappy framing as expected, but what follows is no data chunk.
	for _, in := range []string{"\xff\x06\x00\x00", "\xff\x06\x00\x00sNaPpY\x02\x01\x00\x00"} {
		if m, ok := diagnose([]byte(in), nil, false, 2); ok {
			t.Errorf("diagnose(%q) = %q, want none", in, m)
		}
	}
	m, ok := diagnose(nil, fmt.Errorf("read: %w", crypt.ErrAuthFailed), false, 2)
	if !ok || m.flag != "--key or --crypt" {
		t.Errorf("authentication failure: %q, %v", m, ok)
	}
}

// TestHeadKeepsFirstBytes: meteredConn keeps the first headLen bytes,
// across reads of any size.
func TestHeadKeepsFirstBytes(t *testing.T) {
	data := randomBytes(t, 3*headLen)
	var m meteredConn
	off := uint64(0)
	for _, n := range []int{1, 7, 30, 100, 50} {
		m.head.record(off, data[off:off+uint64(n)])
		off += uint64(n)
	}
	if got := m.head.bytes(); !bytes.Equal(got, data[:headLen]) {
		t.Fatalf("kept % x\nwant % x", got, data[:headLen])
	}
}

// FuzzDiagnose: no input makes the classifier panic or read past what it
// was given, and the partial snappy decoder agrees with snappy's own.
func FuzzDiagnose(f *testing.F) {
	f.Add(peerHead(f, false, frame(2, 3, 1, nil)), false, 2)
	f.Add(peerHead(f, true, frame(1, 3, 1, nil)), true, 2)
	f.Add(peerHead(f, false, frame(1, 2, 1, bytes.Repeat([]byte{7}, 300))), false, 2)
	f.Add([]byte("\xff\x06\x00\x00sNaPpY\x00\x10\x00\x00\x00\x00\x00\x00\x0c\x08\x02\x03"), true, 1)
	f.Fuzz(func(t *testing.T, in []byte, noComp bool, ver int) {
		diagnose(in, nil, noComp, ver)
		if got := snappyFirstBytes(in, frameHeaderLen); len(got) > frameHeaderLen {
			t.Fatalf("asked for %d bytes, got %d", frameHeaderLen, len(got))
		}
		if dec, err := snappy.Decode(nil, in); err == nil {
			want := dec[:min(len(dec), frameHeaderLen)]
			if got := snappyBlockPrefix(in, frameHeaderLen); !bytes.Equal(got, want) {
				t.Fatalf("prefix of block % x: got % x, snappy decodes % x", in, got, want)
			}
		}
		enc := snappy.Encode(nil, in)
		want := in[:min(len(in), frameHeaderLen)]
		if got := snappyBlockPrefix(enc, frameHeaderLen); !bytes.Equal(got, want) {
			t.Fatalf("prefix of encoded % x: got % x, want % x", in, got, want)
		}
	})
}

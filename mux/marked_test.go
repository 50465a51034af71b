package mux_test

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/xtaci/smux"

	"github.com/smuxtun/smuxtun/internal/nettest"
	"github.com/smuxtun/smuxtun/mux"
)

// markedPair starts a client of ours and a server of ours that accepts
// marked streams.
func markedPair(t *testing.T, version int, accept bool) (*mux.Session, *mux.Session) {
	t.Helper()
	c, s := nettest.TCPPair(t)
	cc, sc := mux.DefaultConfig(), mux.DefaultConfig()
	cc.Version, sc.Version = version, version
	sc.AcceptMarked = accept
	client, err := mux.Client(c, cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := mux.Server(s, sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

func waitHello(t *testing.T, s *mux.Session) {
	t.Helper()
	select {
	case <-s.PeerHello():
	case <-time.After(5 * time.Second):
		t.Fatal("no hello from the peer within 5 s")
	}
}

// Marked and plain streams interleaved on one session arrive with their
// marks, in both protocol versions, and carry their data unchanged.
func TestMarkedStreams(t *testing.T) {
	checkGoroutines(t)
	for _, ver := range []int{1, 2} {
		client, server := markedPair(t, ver, true)
		waitHello(t, client)
		if !client.PeerAcceptsMarked() {
			t.Fatalf("v%d: the server's announcement did not arrive before its hello", ver)
		}
		const n = 200
		want := make([]bool, 0, n)
		errc := make(chan error, 1)
		go func() {
			for i := range n {
				var st *mux.Stream
				var err error
				if i%3 == 0 {
					st, err = client.OpenStream()
				} else {
					st, err = client.OpenMarkedStream()
				}
				if err != nil {
					errc <- err
					return
				}
				st.Write([]byte{byte(i)})
				st.Close()
			}
			errc <- nil
		}()
		for i := range n {
			want = append(want, i%3 != 0)
			st, err := server.AcceptStream()
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(st)
			if err != nil || len(b) != 1 || b[0] != byte(i) {
				t.Fatalf("v%d stream %d: read %v, %v", ver, i, b, err)
			}
			if st.Marked() != want[i] {
				t.Fatalf("v%d stream %d: marked=%v, want %v", ver, i, st.Marked(), want[i])
			}
			st.Close()
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// A server that does not accept marked streams never says so, the client
// refuses to open one (sending nothing), and a stray mark NOP does not mark
// a later stream.
func TestMarkedStreamsRefused(t *testing.T) {
	checkGoroutines(t)
	client, server := markedPair(t, 2, false)
	waitHello(t, client)
	if client.PeerAcceptsMarked() {
		t.Fatal("a server without AcceptMarked announced marked streams")
	}
	if _, err := client.OpenMarkedStream(); !errors.Is(err, mux.ErrNotMarkable) {
		t.Fatalf("OpenMarkedStream: %v, want ErrNotMarkable", err)
	}
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if got.Marked() {
		t.Fatal("plain stream marked")
	}
	got.Close()
}

// rawMarkedServer starts a version 2 server session of ours that accepts
// marked streams and returns it with the raw connection of its peer; both
// are closed when the test ends.
func rawMarkedServer(t *testing.T) (*mux.Session, net.Conn) {
	t.Helper()
	c, s := nettest.TCPPair(t)
	cfg := mux.DefaultConfig()
	cfg.Version = 2
	cfg.AcceptMarked = true
	server, err := mux.Server(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); c.Close() })
	return server, c
}

// A mark NOP that is not right before its SYN marks nothing: raw frames
// from a peer that sends mark NOPs for other ids.
func TestStrayMarkIgnored(t *testing.T) {
	checkGoroutines(t)
	server, c := rawMarkedServer(t)
	var wire []byte
	wire = append(wire, rawFrame(2, 3, 5, nil)...)    // mark for stream 5
	wire = append(wire, rawFrame(2, 0, 3, nil)...)    // SYN 3: not marked
	wire = append(wire, rawFrame(2, 0, 5, nil)...)    // SYN 5: its mark was spent on 3
	wire = append(wire, rawFrame(2, 3, 7, nil)...)    // mark 7
	wire = append(wire, rawFrame(2, 3, 0, nil)...)    // keepalive between: harmless
	wire = append(wire, rawFrame(2, 0, 7, nil)...)    // SYN 7: marked
	wire = append(wire, rawFrame(2, 3, 0x10, nil)...) // even id: never a mark
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		id     uint32
		marked bool
	}{{3, false}, {5, false}, {7, true}} {
		server.SetDeadline(time.Now().Add(5 * time.Second))
		st, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		if st.ID() != want.id || st.Marked() != want.marked {
			t.Fatalf("stream %d marked=%v, want stream %d marked=%v", st.ID(), st.Marked(), want.id, want.marked)
		}
	}
}

// An xtaci/smux server (kcptun) never says hello: a client waiting for it
// times out, and it carries plain streams as before.
func TestMarkedStreamsPlainSmuxPeer(t *testing.T) {
	checkGoroutines(t)
	c, s := nettest.TCPPair(t)
	cfg := mux.DefaultConfig()
	client, err := mux.Client(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := smux.Server(s, smux.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	select {
	case <-client.PeerHello():
		t.Fatal("xtaci/smux said hello")
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := client.OpenMarkedStream(); !errors.Is(err, mux.ErrNotMarkable) {
		t.Fatalf("OpenMarkedStream: %v", err)
	}
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("plain"))
	st.Close()
	got, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(got)
	if string(b) != "plain" {
		t.Fatalf("read %q", b)
	}
	got.Close()
}

// Every odd id is a client's stream id, even one that equals a reserved
// NOP id's value plus one or that a future reserved id might take: the mark
// must work whatever the id. Raw frames, ids near the reserved ones.
func TestMarkAnyOddID(t *testing.T) {
	checkGoroutines(t)
	server, c := rawMarkedServer(t)
	ids := []uint32{0x73746775, 0x736d7479, 0x676e6971, 0x676e6f71, 0x6b72616d, 0xffffffff}
	var wire []byte
	for _, id := range ids {
		wire = append(wire, rawFrame(2, 3, id, nil)...)
		wire = append(wire, rawFrame(2, 0, id, nil)...)
	}
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		server.SetDeadline(time.Now().Add(5 * time.Second))
		st, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		if st.ID() != id || !st.Marked() {
			t.Fatalf("stream %#x marked=%v, want %#x marked", st.ID(), st.Marked(), id)
		}
	}
}

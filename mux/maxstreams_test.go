package mux_test

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/nettest"
	"github.com/smuxtun/smuxtun/mux"
)

// TestMaxStreamsWithRealPeers: our server with MaxStreams = 8, and a client
// of either implementation that opens 10 streams. The first 8 are accepted
// and echo; the 9th and 10th read io.EOF at once (the server answers their
// SYN with FIN), without reaching AcceptStream; once the client closes one
// of the 8, a new stream is accepted again. The cap is the same in both
// protocol versions, so both are checked.
func TestMaxStreamsWithRealPeers(t *testing.T) {
	const maxStreams, opened = 8, 10
	for _, cfg := range []muxConfig{kcptunConfig(2), defaultConfig(1)} {
		for _, client := range []impl{implXtaci, implOurs} {
			t.Run(fmt.Sprintf("%s/%s-client", cfg.name, client.name), func(t *testing.T) {
				checkGoroutines(t)
				c, sconn := nettest.TCPPair(t)
				mc := cfg.ours()
				mc.MaxStreams = maxStreams
				server, err := mux.Server(sconn, mc)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { server.Close() })
				cs, err := client.client(c, cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cs.Close() })

				// The server echoes every stream it accepts until the
				// client's FIN, then closes it.
				var echoes sync.WaitGroup
				acceptedIDs := make(chan uint32, opened+1)
				go func() {
					for {
						st, err := server.AcceptStream()
						if err != nil {
							return
						}
						acceptedIDs <- st.ID()
						echoes.Add(1)
						go func() {
							defer echoes.Done()
							defer st.Close()
							st.SetDeadline(time.Now().Add(30 * time.Second))
							io.Copy(st, st)
						}()
					}
				}()
				t.Cleanup(func() {
					server.Close()
					echoes.Wait()
				})

				streams := make([]halfConn, 0, opened+1)
				t.Cleanup(func() {
					for _, st := range streams {
						st.Close()
					}
				})
				for i := range opened {
					st, err := cs.open()
					if err != nil {
						t.Fatalf("open stream %d: %v", i+1, err)
					}
					streams = append(streams, st)
				}

				// The two past the cap end at once, with nothing to read.
				for _, st := range streams[maxStreams:] {
					start := time.Now()
					st.SetReadDeadline(start.Add(time.Second))
					var b [1]byte
					n, err := st.Read(b[:])
					if n != 0 || !errors.Is(err, io.EOF) {
						t.Errorf("stream %d, past MaxStreams: read %d bytes, %v within 1 s; want io.EOF at once",
							st.ID(), n, err)
					} else {
						t.Logf("stream %d, past MaxStreams: io.EOF after %v", st.ID(), time.Since(start).Round(time.Microsecond))
					}
				}
				// The first 8 work.
				for _, st := range streams[:maxStreams] {
					echo(t, st, fmt.Sprintf("stream %d", st.ID()))
				}
				if n := server.RefusedStreams(); n != opened-maxStreams {
					t.Errorf("RefusedStreams() = %d, want %d", n, opened-maxStreams)
				}
				if n := len(acceptedIDs); n != maxStreams {
					t.Errorf("AcceptStream returned %d streams, want %d", n, maxStreams)
				}

				// Closing one makes room: the server has forgotten it once
				// its echo ended and it closed its end too.
				streams[0].Close()
				if !waitFor(2*time.Second, func() bool { return server.NumStreams() == maxStreams-1 }) {
					t.Fatalf("the server still counts %d streams 2 s after the client closed one, want %d",
						server.NumStreams(), maxStreams-1)
				}
				st, err := cs.open()
				if err != nil {
					t.Fatalf("open after closing one: %v", err)
				}
				streams = append(streams, st)
				echo(t, st, fmt.Sprintf("stream %d, opened after closing one", st.ID()))
				if n := server.RefusedStreams(); n != opened-maxStreams {
					t.Errorf("RefusedStreams() = %d after the new stream, want still %d", n, opened-maxStreams)
				}
				if server.IsClosed() || cs.IsClosed() {
					t.Errorf("a session closed: server %v, client %v", server.IsClosed(), cs.IsClosed())
				}
			})
		}
	}
}

// echo writes a message on st and checks that the same comes back within
// 5 s.
func echo(t *testing.T, st halfConn, name string) {
	t.Helper()
	msg := []byte("echo through " + name)
	st.SetDeadline(time.Now().Add(5 * time.Second))
	defer st.SetDeadline(time.Time{})
	if _, err := st.Write(msg); err != nil {
		t.Fatalf("%s: write: %v", name, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(st, got); err != nil {
		t.Fatalf("%s: read the echo: %v", name, err)
	}
	if string(got) != string(msg) {
		t.Fatalf("%s: echo %q, want %q", name, got, msg)
	}
}

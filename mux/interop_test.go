package mux_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// The interop tests run our mux against github.com/xtaci/smux v1.5.56 over
// real TCP connections on 127.0.0.1, in both roles, at both protocol versions,
// with the default configuration and kcptun's.

// interopRoles are the two ways to pair the implementations.
var interopRoles = []struct {
	name           string
	client, server impl
}{
	{"ours-client-xtaci-server", implOurs, implXtaci},
	{"xtaci-client-ours-server", implXtaci, implOurs},
}

// interopConfigs are the configurations every interop case runs with.
func interopConfigs() []muxConfig {
	return []muxConfig{defaultConfig(1), kcptunConfig(1), defaultConfig(2), kcptunConfig(2)}
}

// Stream modes of the transfer protocol used by TestInterop. The opener
// writes a 9-byte header (mode, then the payload length as a little-endian
// uint64) and the payload. In echo mode the acceptor sends the payload back;
// in sink mode it sends back the SHA-256 of what it read. Then it closes.
const (
	modeEcho = 'e'
	modeSink = 's'
)

// transfer is one stream of an interop case.
type transfer struct {
	index int
	mode  byte
	data  []byte
}

// interopPlan draws 48 transfers: one of 8 MiB (2 MiB in -short mode), a
// quarter tiny, the rest up to 640 KiB (128 KiB in -short mode), about 24 MiB
// of payload in all.
func interopPlan(rng *rand.Rand) []transfer {
	const streams = 48
	largest, typical := 8<<20, 640<<10
	if testing.Short() {
		largest, typical = 2<<20, 128<<10
	}
	big := rng.IntN(streams)
	plan := make([]transfer, streams)
	for i := range plan {
		var n int
		switch {
		case i == big:
			n = largest
		case rng.IntN(4) == 0:
			n = rng.IntN(1025) // 0 to 1 KiB, empty payloads included
		default:
			n = rng.IntN(typical + 1)
		}
		mode := byte(modeEcho)
		if (i/2)%2 == 1 {
			mode = modeSink
		}
		plan[i] = transfer{index: i, mode: mode, data: payload(rng, n)}
	}
	return plan
}

func TestInterop(t *testing.T) {
	for _, cfg := range interopConfigs() {
		for _, roles := range interopRoles {
			t.Run(cfg.name+"/"+roles.name, func(t *testing.T) {
				checkGoroutines(t)
				seed := uint64(time.Now().UnixNano())
				t.Logf("seed %d", seed)
				runInterop(t, roles.client, roles.server, cfg, seed)
			})
		}
	}
}

// runInterop opens half of the planned streams from the client and half from
// the server, runs every transfer at once and checks every byte.
func runInterop(t *testing.T, ci, si impl, cfg muxConfig, seed uint64) {
	t.Helper()
	client, server := sessionPair(t, ci, si, cfg, cfg)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	plan := interopPlan(rng)

	var errs errorList
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second)

	// Even transfers are opened by the client, odd ones by the server.
	sides := []struct {
		name           string
		opener         session
		openerIsOurs   bool
		acceptor       session
		acceptorIsOurs bool
	}{
		{"client", client, ci.name == "ours", server, si.name == "ours"},
		{"server", server, si.name == "ours", client, ci.name == "ours"},
	}
	for parity, side := range sides {
		var mine []transfer
		for _, tr := range plan {
			if tr.index%2 == parity {
				mine = append(mine, tr)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range mine {
				st, err := side.acceptor.accept()
				if err != nil {
					errs.add("accept on the %s's peer: %v", side.name, err)
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					serveTransfer(st, side.openerIsOurs, deadline, &errs)
				}()
			}
		}()
		for _, tr := range mine {
			chunkSeed := rng.Uint64()
			wg.Add(1)
			go func() {
				defer wg.Done()
				openTransfer(side.opener, side.name, side.openerIsOurs, tr, chunkSeed, deadline, &errs)
			}()
		}
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	if !waitClosed(done, 90*time.Second) {
		client.Close()
		server.Close()
		<-done
		t.Fatalf("transfers did not finish in 90 s; errors so far:%v", errs.err())
	}
	if err := errs.err(); err != nil {
		t.Fatalf("transfers failed:%v", err)
	}

	// Every stream was closed by both ends: our session must have forgotten them.
	for _, s := range []session{client, server} {
		if _, ok := s.(oursSession); !ok {
			continue
		}
		if !waitFor(time.Second, func() bool { return s.NumStreams() == 0 }) {
			t.Errorf("our session still counts %d streams after every stream was closed at both ends", s.NumStreams())
		}
		if s.IsClosed() {
			t.Errorf("our session closed itself during the transfers")
		}
	}
}

// openTransfer opens a stream, sends the transfer and checks what comes back.
// When the opener is ours it half-closes after writing, so our reading side
// also sees the peer's FIN after its own.
func openTransfer(s session, side string, half bool, tr transfer, chunkSeed uint64, deadline time.Time, errs *errorList) {
	st, err := s.open()
	if err != nil {
		errs.add("open on the %s: %v", side, err)
		return
	}
	defer st.Close()
	st.SetDeadline(deadline)

	werr := make(chan error, 1)
	go func() {
		hdr := make([]byte, 9)
		hdr[0] = tr.mode
		binary.LittleEndian.PutUint64(hdr[1:], uint64(len(tr.data)))
		if _, err := st.Write(hdr); err != nil {
			werr <- fmt.Errorf("write header: %w", err)
			return
		}
		// Writes of varying sizes, so frames are cut at many places.
		rng := rand.New(rand.NewPCG(chunkSeed, 1))
		for rest := tr.data; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(96<<10))
			m, err := st.Write(rest[:n])
			if err != nil {
				werr <- fmt.Errorf("write after %d of %d bytes: %w", len(tr.data)-len(rest)+m, len(tr.data), err)
				return
			}
			rest = rest[n:]
		}
		if half {
			if err := st.CloseWrite(); err != nil {
				werr <- fmt.Errorf("CloseWrite: %w", err)
				return
			}
		}
		werr <- nil
	}()

	sum, n, rerr := hashReader(st)
	if err := <-werr; err != nil {
		errs.add("%s: %v", transferName(st.ID(), tr, side), err)
		return
	}
	if !errors.Is(rerr, io.EOF) {
		errs.add("%s: read ended after %d bytes with %v, want io.EOF", transferName(st.ID(), tr, side), n, rerr)
		return
	}
	want := sha256.Sum256(tr.data)
	switch tr.mode {
	case modeEcho:
		if n != int64(len(tr.data)) || sum != want {
			errs.add("%s: echo came back as %d bytes with SHA-256 %x, want %d bytes with %x",
				transferName(st.ID(), tr, side), n, sum[:8], len(tr.data), want[:8])
		}
	case modeSink:
		// What came back is the peer's SHA-256 of what it received; check it
		// by hashing the expected digest the same way.
		if n != 32 || sum != sha256.Sum256(want[:]) {
			errs.add("%s: the peer's digest of what it received does not match the SHA-256 of what was sent (%d bytes back)",
				transferName(st.ID(), tr, side), n)
		}
	}
}

func transferName(id uint32, tr transfer, side string) string {
	mode := "echo"
	if tr.mode == modeSink {
		mode = "sink"
	}
	return fmt.Sprintf("stream %d (%s, %d bytes, opened by the %s)", id, mode, len(tr.data), side)
}

// serveTransfer is the acceptor's side of a transfer. If the opener
// half-closes (it is ours), the acceptor also checks that it reads io.EOF
// after the payload.
func serveTransfer(st halfConn, openerHalfCloses bool, deadline time.Time, errs *errorList) {
	defer st.Close()
	st.SetDeadline(deadline)
	hdr := make([]byte, 9)
	if _, err := io.ReadFull(st, hdr); err != nil {
		errs.add("accepted stream %d: read header: %v", st.ID(), err)
		return
	}
	size := int64(binary.LittleEndian.Uint64(hdr[1:]))
	switch hdr[0] {
	case modeEcho:
		if n, err := io.CopyN(st, st, size); err != nil {
			errs.add("accepted stream %d: echo stopped after %d of %d bytes: %v", st.ID(), n, size, err)
			return
		}
	case modeSink:
		h := sha256.New()
		if n, err := io.CopyN(h, st, size); err != nil {
			errs.add("accepted stream %d: sink stopped after %d of %d bytes: %v", st.ID(), n, size, err)
			return
		}
		if _, err := st.Write(sumOf(h)); err != nil {
			errs.add("accepted stream %d: write digest: %v", st.ID(), err)
			return
		}
	default:
		errs.add("accepted stream %d: bad mode %q", st.ID(), hdr[0])
		return
	}
	if openerHalfCloses {
		var one [1]byte
		if n, err := st.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
			errs.add("accepted stream %d: after the payload read %d bytes, %v; want io.EOF", st.ID(), n, err)
		}
	}
}

func sumOf(h hash.Hash) []byte { return h.Sum(nil) }

// waitFor polls cond every 10 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestInteropHalfClose: our side half-closes first; the xtaci/smux side sees
// our FIN, then writes and half-closes. Ours must read every byte, then
// io.EOF. The small case starts reading only once both FINs have crossed.
func TestInteropHalfClose(t *testing.T) {
	cases := []struct {
		name       string
		size       int
		readLate   bool
		oursOpens  bool
		oursClient bool
	}{
		{"ours-opens/read-after-fins", 40000, true, true, true},
		{"xtaci-opens/read-after-fins", 40000, true, false, true},
		{"ours-opens/read-while-writing", 3 << 20, false, true, true},
		{"xtaci-opens/read-while-writing", 3 << 20, false, false, true},
		{"ours-server/ours-opens/read-after-fins", 40000, true, true, false},
		{"ours-server/xtaci-opens/read-while-writing", 3 << 20, false, false, false},
	}
	for _, cfg := range interopConfigs() {
		for _, tc := range cases {
			t.Run(cfg.name+"/"+tc.name, func(t *testing.T) {
				checkGoroutines(t)
				var ours, xt session
				if tc.oursClient {
					ours, xt = sessionPair(t, implOurs, implXtaci, cfg, cfg)
				} else {
					xt, ours = sessionPair(t, implXtaci, implOurs, cfg, cfg)
				}
				opener, acceptor := xt, ours
				if tc.oursOpens {
					opener, acceptor = ours, xt
				}
				a, err := opener.open()
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				data := payload(rand.New(rand.NewPCG(uint64(tc.size), 7)), tc.size)
				var oursSt, xtSt halfConn
				if tc.oursOpens {
					oursSt = a
					if err := oursSt.CloseWrite(); err != nil {
						t.Fatalf("our CloseWrite: %v", err)
					}
					xtSt, err = acceptor.accept()
				} else {
					xtSt = a
					oursSt, err = acceptor.accept()
					if err == nil {
						err = oursSt.CloseWrite()
					}
				}
				if err != nil {
					t.Fatalf("accept or CloseWrite: %v", err)
				}
				t.Cleanup(func() { oursSt.Close(); xtSt.Close() })
				oursSt.SetDeadline(time.Now().Add(30 * time.Second))
				xtSt.SetDeadline(time.Now().Add(30 * time.Second))

				peerDone := make(chan error, 1)
				go func() {
					// xtaci's side: wait for our FIN, then send and half-close.
					var b [1]byte
					if n, err := xtSt.Read(b[:]); n != 0 || !errors.Is(err, io.EOF) {
						peerDone <- fmt.Errorf("xtaci side read %d bytes, %v; want io.EOF from our FIN", n, err)
						return
					}
					if _, err := xtSt.Write(data); err != nil {
						peerDone <- fmt.Errorf("xtaci side write: %w", err)
						return
					}
					peerDone <- xtSt.CloseWrite()
				}()
				if tc.readLate {
					if err, ok := waitErr(peerDone, 10*time.Second); !ok || err != nil {
						t.Fatalf("xtaci side: %v (finished: %v)", err, ok)
					}
					time.Sleep(100 * time.Millisecond) // let its data and FIN arrive
				}
				got, rerr := readAll(oursSt)
				if !tc.readLate {
					if err, ok := waitErr(peerDone, 10*time.Second); !ok || err != nil {
						t.Fatalf("xtaci side: %v (finished: %v)", err, ok)
					}
				}
				if !errors.Is(rerr, io.EOF) {
					t.Errorf("our read ended with %v after %d of %d bytes, want io.EOF", rerr, len(got), len(data))
				}
				if len(got) != len(data) || sha256.Sum256(got) != sha256.Sum256(data) {
					t.Errorf("our side read %d bytes (SHA-256 match %v), want all %d", len(got), bytes.Equal(got, data), len(data))
				}
			})
		}
	}
}

// TestInteropKeepAlive: with short keepalive intervals, a session between ours
// and xtaci/smux that carries no data outlives the keepalive timeout several
// times over on both ends, because each end hears the other's NOPs.
// The cases mostly sleep, so they run in parallel.
func TestInteropKeepAlive(t *testing.T) {
	checkGoroutines(t)
	for _, version := range []int{1, 2} {
		for _, roles := range interopRoles {
			t.Run(fmt.Sprintf("v%d/%s", version, roles.name), func(t *testing.T) {
				t.Parallel()
				cfg := defaultConfig(version)
				cfg.keepAliveInterval = 100 * time.Millisecond
				cfg.keepAliveTimeout = time.Second
				client, server := sessionPair(t, roles.client, roles.server, cfg, cfg)
				time.Sleep(3 * cfg.keepAliveTimeout)
				if client.IsClosed() || server.IsClosed() {
					t.Fatalf("after %v idle: client closed %v, server closed %v; both should be alive",
						3*cfg.keepAliveTimeout, client.IsClosed(), server.IsClosed())
				}
				// Still usable in both directions.
				for _, p := range []struct {
					name string
					a, b session
				}{{"client", client, server}, {"server", server, client}} {
					echoOnce(t, p.name, p.a, p.b)
				}
			})
		}
	}
}

// echoOnce opens a stream on a, echoes a short message through b and checks it.
func echoOnce(t *testing.T, name string, a, b session) {
	t.Helper()
	msg := []byte("still alive after the keepalive timeout")
	done := make(chan error, 1)
	go func() {
		st, err := b.accept()
		if err != nil {
			done <- err
			return
		}
		defer st.Close()
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(st, buf); err != nil {
			done <- err
			return
		}
		_, err = st.Write(buf)
		done <- err
	}()
	st, err := a.open()
	if err != nil {
		t.Fatalf("open from the %s: %v", name, err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Write(msg); err != nil {
		t.Fatalf("write from the %s: %v", name, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(st, got); err != nil {
		t.Fatalf("read echo on the %s: %v", name, err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo on the %s: got %q", name, got)
	}
	if err, ok := waitErr(done, 10*time.Second); !ok || err != nil {
		t.Fatalf("echo peer of the %s: %v (finished: %v)", name, err, ok)
	}
}

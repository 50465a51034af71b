package tunnel

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/internal/nettest"
	"github.com/smuxtun/smuxtun/mux"
	"github.com/smuxtun/smuxtun/tunnel/socks"
)

// rawMuxToServer starts a server on the TCP transport in the clear and
// returns a mux client session to it that has seen the server's hello, and
// the server's log.
func rawMuxToServer(t *testing.T, allow []string, udpTimeout ...int) (*mux.Session, *syncBuffer) {
	t.Helper()
	def := startEcho(t, "tcp", "127.0.0.1:0")
	plain := func(cc *config.Common) { cc.Crypt = "null" }
	o := pairOpts{transport: config.TransportTCP, nocomp: true, target: def, allow: allow, tweak: plain}
	if len(udpTimeout) > 0 {
		o.udpTimeout = udpTimeout[0]
	}
	srv, srvLog := runServerLogged(t, o)
	c, err := net.Dial("tcp", srv.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	cfg := mux.DefaultConfig()
	cfg.Version = 2
	m, err := mux.Client(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	select {
	case <-m.PeerHello():
	case <-time.After(5 * time.Second):
		t.Fatal("no hello from the server")
	}
	if !m.PeerAcceptsMarked() {
		t.Fatal("the server did not announce client-chosen targets")
	}
	return m, srvLog
}

// endsWithin reads st until it ends and fails unless that happens within d.
func endsWithin(t *testing.T, st *mux.Stream, d time.Duration) []byte {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(st)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("stream still open after %v (read %q)", d, b)
	}
	return b
}

// Malformed requests and datagram frames from a client that has the key:
// each closes that stream (with a WARN naming the client), never the
// session, never a panic or a hang.
func TestMarkedStreamBadInput(t *testing.T) {
	defer func(d, w time.Duration) { requestTimeout, refusedWarnEvery = d, w }(requestTimeout, refusedWarnEvery)
	requestTimeout = 300 * time.Millisecond
	refusedWarnEvery = 0 // one WARN per case
	u := nettest.UDPEcho(t, "127.0.0.1:0")
	leakChecked(t, func(t *testing.T) {
		m, srvLog := rawMuxToServer(t, []string{u})
		udpReq, _ := appendRequest(nil, kindUDP, socks.AddrFromAddrPort(mustAddrPort(t, u)))
		cases := []struct {
			name string
			send []byte
			fin  bool   // half-close after sending
			want string // in the server's WARN line
		}{
			{"unknown kind", []byte{9, 1, 127, 0, 0, 1, 0, 80}, false, "unknown kind 9"},
			{"unknown address type", []byte{1, 7, 1, 2, 3}, false, "address type"},
			{"truncated address", []byte{1, 1, 127, 0}, true, "truncated address"},
			{"port 0", []byte{1, 1, 127, 0, 0, 1, 0, 0}, false, "port 0"},
			{"empty name", []byte{1, 3, 0, 0, 80}, false, "bad stream request"},
			{"no request at all", nil, false, "bad stream request"},
			{"oversized datagram", append(bytes.Clone(udpReq), 0xff, 0xff), false, "65535 bytes"},
			{"truncated datagram", append(bytes.Clone(udpReq), 0, 100, 1, 2, 3), true, "ended inside a datagram"},
		}
		for _, c := range cases {
			st, err := m.OpenMarkedStream()
			if err != nil {
				t.Fatal(err)
			}
			if len(c.send) > 0 {
				st.Write(c.send)
			}
			if c.fin {
				st.CloseWrite()
			}
			endsWithin(t, st, 5*time.Second)
			st.Close()
			waitLogWithin(t, 2*time.Second, "server", srvLog, "level=WARN", c.want)
		}
		// The session carries on: a good request still works.
		st, err := m.OpenMarkedStream()
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.Write(udpReq)
		code, msg, err := readStatus(st)
		if err != nil || code != socks.ReplySucceeded {
			t.Fatalf("good request after the bad ones: %v %q %v", code, msg, err)
		}
		w := &datagramWriter{w: st}
		w.write(nil, []byte("ping"))
		r := newDatagramReader(st, false)
		defer r.release()
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, data, err := r.read(); err != nil || string(data) != "echo:ping" {
			t.Fatalf("datagram after the bad ones: %q %v", data, err)
		}
	})
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// A client that opens more UDP flows than a session may have is refused
// past the cap, with a status, and the flows it has keep working.
func TestUDPFlowsPerSessionCapped(t *testing.T) {
	defer func(n int32) { maxFlowsPerSession = n }(maxFlowsPerSession)
	maxFlowsPerSession = 20
	u := nettest.UDPEcho(t, "127.0.0.1:0")
	leakChecked(t, func(t *testing.T) {
		m, srvLog := rawMuxToServer(t, []string{u})
		req, _ := appendRequest(nil, kindUDP, socks.AddrFromAddrPort(mustAddrPort(t, u)))
		var open []*mux.Stream
		refused := 0
		for range 30 {
			st, err := m.OpenMarkedStream()
			if err != nil {
				t.Fatal(err)
			}
			st.Write(req)
			st.SetReadDeadline(time.Now().Add(5 * time.Second))
			code, _, err := readStatus(st)
			if err != nil {
				t.Fatal(err)
			}
			if code == socks.ReplySucceeded {
				open = append(open, st)
			} else {
				refused++
				st.Close()
			}
		}
		if len(open) != 20 || refused != 10 {
			t.Fatalf("%d flows open, %d refused; want 20 and 10", len(open), refused)
		}
		waitLogWithin(t, 2*time.Second, "server", srvLog, "level=WARN", "too many UDP flows")
		for _, st := range open {
			st.Close()
		}
	})
}

// A flood of 10,000 source addresses at a UDP forward: the client keeps at
// most maxClientFlows flows (the oldest idle one makes room), so the
// goroutines and streams stay bounded; the forward still answers a new
// source afterwards.
func TestUDPForwardFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 sockets")
	}
	u := nettest.UDPEcho(t, "127.0.0.1:0")
	leakChecked(t, func(t *testing.T) {
		srv, _ := runServer(t, pairOpts{transport: config.TransportTCP, target: u, allow: []string{u}})
		fwd := "127.0.0.1:" + strconv.Itoa(freePort(t, "udp")) + "/udp=" + u
		cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, remote: srv.Addrs()[0].String(), forward: []string{fwd}, local: "-"})
		addr := cli.ForwardAddrs()[0].(*net.UDPAddr)
		base := runtime.NumGoroutine()
		peak := 0
		var heap uint64
		var mu sync.Mutex
		const total, batch = 10000, 500
		for sent := 0; sent < total; sent += batch {
			conns := make([]*net.UDPConn, 0, batch)
			for range batch {
				c, err := net.DialUDP("udp", nil, addr)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				c.Write([]byte("flood"))
			}
			mu.Lock()
			peak = max(peak, runtime.NumGoroutine())
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heap = max(heap, ms.HeapInuse)
			mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		}
		fl := cli.forwards[0]
		fl.mu.Lock()
		n := len(fl.flows)
		fl.mu.Unlock()
		if n > maxClientFlows {
			t.Fatalf("%d flows after the flood, the cap is %d", n, maxClientFlows)
		}
		// Per flow: two goroutines at the client (sending, receiving) and
		// three at the server (the stream's and one per direction); flows
		// being replaced may overlap for a moment.
		if limit := base + 6*maxClientFlows + 500; peak > limit {
			t.Fatalf("goroutines peaked at %d during the flood (baseline %d, bound %d)", peak, base, limit)
		}
		// Per flow a few KiB of buffers at each end, and queued datagrams
		// at the client (8 MiB for all flows of a forward).
		if heap > 128<<20 {
			t.Fatalf("heap in use peaked at %d MiB during the flood, bound 128 MiB", heap>>20)
		}
		t.Logf("flows after the flood: %d, goroutines: baseline %d, peak %d, heap peak %d MiB", n, base, peak, heap>>20)
		if err := udpPairs(addr.String(), 20, 64); err != nil {
			t.Fatalf("after the flood: %v", err)
		}
	})
}

// A client sending bad requests in a loop gets one WARN line per second,
// not one per stream.
func TestBadRequestWarningsLimited(t *testing.T) {
	m, srvLog := rawMuxToServer(t, nil)
	start := time.Now()
	for range 50 {
		st, err := m.OpenMarkedStream()
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte{9})
		endsWithin(t, st, 5*time.Second)
		st.Close()
	}
	waitLogWithin(t, 2*time.Second, "server", srvLog, "level=WARN", `msg="bad stream request"`)
	n := len(logLines(srvLog, `msg="bad stream request"`))
	if limit := int(time.Since(start)/time.Second) + 2; n > limit {
		t.Fatalf("%d WARN lines for 50 bad requests in %v, want at most %d", n, time.Since(start), limit)
	}
}

// Flows that end at once (the server refuses their target) while their
// source keeps sending give back every queued byte: the forward's budget
// does not leak away.
func TestUDPQueueBudgetReturned(t *testing.T) {
	def := startEcho(t, "tcp", "127.0.0.1:0")
	refused := nettest.UDPEcho(t, "127.0.0.1:0")
	srv, _ := runServer(t, pairOpts{transport: config.TransportTCP, target: def})
	fwd := "127.0.0.1:" + strconv.Itoa(freePort(t, "udp")) + "/udp=" + refused
	cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, remote: srv.Addrs()[0].String(), forward: []string{fwd}, local: "-"})
	addr := cli.ForwardAddrs()[0].(*net.UDPAddr)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialUDP("udp", nil, addr)
			if err != nil {
				return
			}
			defer c.Close()
			for end := time.Now().Add(time.Second); time.Now().Before(end); {
				c.Write(make([]byte, 1000))
				time.Sleep(100 * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	fl := cli.forwards[0]
	deadline := time.Now().Add(5 * time.Second)
	for {
		fl.mu.Lock()
		n := len(fl.flows)
		fl.mu.Unlock()
		if n == 0 && fl.queued.Load() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the senders stopped: %d flows, %d bytes still counted as queued", n, fl.queued.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The server closes a UDP flow idle for its own --udptimeout, even when
// the client never closes it (a client that went quiet, or misbehaves).
func TestServerClosesIdleUDPFlow(t *testing.T) {
	u := nettest.UDPEcho(t, "127.0.0.1:0")
	m, _ := rawMuxToServer(t, []string{u}, 1)
	st, err := m.OpenMarkedStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	req, _ := appendRequest(nil, kindUDP, socks.AddrFromAddrPort(mustAddrPort(t, u)))
	st.Write(req)
	if code, _, err := readStatus(st); err != nil || code != socks.ReplySucceeded {
		t.Fatalf("status %v, %v", code, err)
	}
	w := &datagramWriter{w: st}
	w.write(nil, []byte("once"))
	r := newDatagramReader(st, false)
	defer r.release()
	start := time.Now()
	st.SetReadDeadline(start.Add(10 * time.Second))
	if _, data, err := r.read(); err != nil || string(data) != "echo:once" {
		t.Fatalf("answer: %q %v", data, err)
	}
	_, _, err = r.read()
	if err != io.EOF {
		t.Fatalf("idle flow: read %v after %v, want io.EOF (the server closing it)", err, time.Since(start))
	}
	if took := time.Since(start); took < 900*time.Millisecond || took > 5*time.Second {
		t.Fatalf("the server closed the idle flow after %v, want about its --udptimeout of 1 s", took)
	}
}

// At the cap, a new source replaces the flow idle longest (not the
// newest, not a busy one), and that flow is told to stop.
func TestEvictOldestFlow(t *testing.T) {
	fl := &forwardListener{flows: make(map[netip.AddrPort]*udpFlow)}
	now := time.Now().UnixNano()
	var flows []*udpFlow
	for i, age := range []int64{5, 60, 1} { // seconds since the last datagram
		f := &udpFlow{src: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1000+i))}
		f.ctx, f.close = context.WithCancel(context.Background())
		f.last.Store(now - age*int64(time.Second))
		fl.flows[f.src] = f
		flows = append(flows, f)
	}
	fl.evictOldestLocked()
	if _, ok := fl.flows[flows[1].src]; ok || len(fl.flows) != 2 {
		t.Fatalf("after eviction: %d flows, the one idle 60 s still there: %v", len(fl.flows), ok)
	}
	if flows[1].ctx.Err() == nil {
		t.Fatal("the evicted flow was not told to stop")
	}
	if flows[0].ctx.Err() != nil || flows[2].ctx.Err() != nil {
		t.Fatal("a flow that stays was stopped")
	}
}

// The datagrams a UDP forward holds while its flows wait for the link are
// bounded by queueBudget in all: eight sources each offer 128 datagrams of
// 60,000 bytes (61 MB) to a target whose name never resolves, so nothing
// leaves the queues. The forward fills its budget and holds no more, and
// the process's heap does not grow by what was offered.
func TestUDPQueueBudget(t *testing.T) {
	o := pairOpts{transport: config.TransportTCP, target: startEcho(t, "tcp", "127.0.0.1:0"), allow: []string{"slow.example.test:53"}}
	o.resolver = hangingDNS()
	srv, _ := runServer(t, o)
	fwd := "127.0.0.1:" + strconv.Itoa(freePort(t, "udp")) + "/udp=slow.example.test:53"
	cli, _ := runClient(t, pairOpts{transport: config.TransportTCP, remote: srv.Addrs()[0].String(), forward: []string{fwd}, local: "-"})
	fl := cli.forwards[0]
	addr := cli.ForwardAddrs()[0].(*net.UDPAddr)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var most atomic.Int64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() { // the most ever queued, sampled while the senders run
		defer close(watched)
		for {
			if q := fl.queued.Load(); q > most.Load() {
				most.Store(q)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	const size, perSource, sources = 60_000, 128, 8
	payload := make([]byte, size)
	for range sources {
		c, err := net.DialUDP("udp", nil, addr)
		if err != nil {
			t.Fatal(err)
		}
		for range perSource {
			c.Write(payload)
			time.Sleep(300 * time.Microsecond) // the forward's socket buffer holds only a few
		}
		c.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for fl.queued.Load() < queueBudget-size && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	<-watched
	q := fl.queued.Load()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("offered %d bytes; queued %d (most %d, budget %d); heap in use grew %d MiB",
		size*perSource*sources, q, most.Load(), queueBudget, grown>>20)
	if most.Load() > queueBudget {
		t.Errorf("%d bytes queued at once, more than the forward's budget of %d", most.Load(), queueBudget)
	}
	if q < queueBudget-size {
		t.Errorf("%d bytes queued: the budget of %d never filled although %d bytes were offered", q, queueBudget, size*perSource*sources)
	}
	if grown > 3*queueBudget {
		t.Errorf("heap in use grew by %d MiB holding datagrams nobody can send (budget %d MiB)", grown>>20, queueBudget>>20)
	}
}

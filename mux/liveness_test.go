package mux_test

import (
	"net"
	"sync/atomic"
	"testing"

	"github.com/smuxtun/smuxtun/internal/nettest"
	"github.com/smuxtun/smuxtun/mux"
	xsmux "github.com/xtaci/smux"
)

// readMeter counts the bytes read through it.
type readMeter struct {
	net.Conn
	n atomic.Int64
}

func (m *readMeter) Read(p []byte) (int, error) {
	k, err := m.Conn.Read(p)
	m.n.Add(int64(k))
	return k, err
}

// TestPingIsAnswered: in both protocol versions, a session that heard the
// peer's hello can ping it and bytes come back; before the hello, and to a
// plain smux peer, Ping declines.
func TestPingIsAnswered(t *testing.T) {
	for _, ver := range []int{1, 2} {
		a, b := nettest.TCPPair(t)
		cfg := mux.DefaultConfig()
		cfg.Version = ver
		cfg.KeepAliveDisabled = true
		meter := &readMeter{Conn: a}
		cs, err := mux.Client(meter, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ss, err := mux.Server(b, cfg)
		if err != nil {
			t.Fatal(err)
		}
		nettest.Eventually(t, "hello from the server", cs.PeerAnswersPing)
		for range 20 {
			before := meter.n.Load()
			if !cs.Ping() {
				t.Fatalf("v%d: Ping declined after the hello", ver)
			}
			nettest.Eventually(t, "an answer to ping", func() bool { return meter.n.Load() > before })
		}
		cs.Close()
		ss.Close()
	}
}

func TestPingNotSentToPlainSmux(t *testing.T) {
	a, b := nettest.TCPPair(t)
	cfg := mux.DefaultConfig()
	cfg.Version = 2
	cfg.KeepAliveDisabled = true
	cs, err := mux.Client(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	xcfg := xsmux.DefaultConfig()
	xcfg.Version = 2
	xs, err := xsmux.Server(b, xcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer xs.Close()
	// A stream both ways proves the peer has been heard from.
	st, err := cs.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	xst, err := xs.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := xst.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := st.Read(buf); err != nil {
		t.Fatal(err)
	}
	if cs.PeerAnswersPing() || cs.Ping() {
		t.Fatal("a plain smux peer is taken for one that answers pings")
	}
}

package tunnel

import (
	"github.com/smuxtun/smuxtun/internal/nettest"
	"net"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/mux"
)

// TestIdlePingSchedule: on a session with an open stream and no data, a
// smuxtun peer is pinged 1 s after the data stopped, then at doubling
// intervals up to one every 8 s; data resets the schedule.
func TestIdlePingSchedule(t *testing.T) {
	a, b := net.Pipe()
	cfg := mux.DefaultConfig()
	cfg.Version = 2
	cfg.KeepAliveDisabled = true
	meter := &meteredConn{Conn: a}
	cm, err := mux.Client(meter, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cm.Close()
	sm, err := mux.Server(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sm.Close()
	nettest.Eventually(t, "the server's hello", cm.PeerAnswersPing)
	st, err := cm.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := sm.AcceptStream(); err != nil {
		t.Fatal(err)
	}
	// Let the frames of the stream's opening (window updates) arrive, so
	// that only the pings' answers arrive from here on.
	for quiet := 0; quiet < 5; {
		time.Sleep(20 * time.Millisecond)
		if cm.TakeDataSeen() {
			quiet = 0
		} else {
			quiet++
		}
	}
	l := newLiveness(cm, meter, a)
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	l.check(at(0), probeTimeout) // data was seen: the schedule starts here
	var pings []float64
	for s := 0.25; s <= 40; s += 0.25 {
		before := meter.read.Load()
		if v := l.check(at(s), probeTimeout); v != verdictAlive {
			t.Fatalf("at %.2f s: verdict %v for an answering peer", s, v)
		}
		l.mu.Lock()
		pinged := !l.probeSince.IsZero()
		l.mu.Unlock()
		if pinged {
			pings = append(pings, s)
			nettest.Eventually(t, "the answer", func() bool { return meter.read.Load() > before })
		}
	}
	want := []float64{1, 3, 7, 15, 23, 31, 39}
	if len(pings) != len(want) {
		t.Fatalf("pings at %v s, want %v", pings, want)
	}
	for i := range want {
		if pings[i] != want[i] {
			t.Fatalf("pings at %v s, want %v", pings, want)
		}
	}
}

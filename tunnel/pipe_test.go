package tunnel

import (
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/nettest"
)

// pipeRig is userA <-> a ==pipe== b <-> userB over loopback TCP.
type pipeRig struct {
	userA, userB *net.TCPConn
	res          chan pipeResult
	stop         chan struct{}
}

func newPipeRig(t *testing.T, closeWait time.Duration) *pipeRig {
	t.Helper()
	userA, a := nettest.TCPPair(t)
	b, userB := nettest.TCPPair(t)
	r := &pipeRig{userA: userA, userB: userB, res: make(chan pipeResult, 1), stop: make(chan struct{})}
	go func() { r.res <- pipe(a, b, closeWait, r.stop, nil) }()
	return r
}

func (r *pipeRig) wait(t *testing.T, within time.Duration) pipeResult {
	t.Helper()
	select {
	case res := <-r.res:
		return res
	case <-time.After(within):
		t.Fatalf("pipe still running after %v", within)
		return pipeResult{}
	}
}

func readAllWithin(t *testing.T, c net.Conn, d time.Duration) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (after %d bytes)", err, len(b))
	}
	return b
}

func TestPipeHalfCloseBothWays(t *testing.T) {
	r := newPipeRig(t, 0)
	x := randomBytes(t, 256<<10)
	y := randomBytes(t, 128<<10)
	go func() {
		r.userA.Write(x)
		r.userA.CloseWrite()
	}()
	if got := readAllWithin(t, r.userB, 5*time.Second); sha256.Sum256(got) != sha256.Sum256(x) {
		t.Fatalf("a→b: got %d bytes, want %d", len(got), len(x))
	}
	// B answers only after seeing A's end of stream.
	r.userB.Write(y)
	r.userB.CloseWrite()
	if got := readAllWithin(t, r.userA, 5*time.Second); sha256.Sum256(got) != sha256.Sum256(y) {
		t.Fatalf("b→a: got %d bytes, want %d", len(got), len(y))
	}
	res := r.wait(t, 5*time.Second)
	if res.err != nil || res.aToB != int64(len(x)) || res.bToA != int64(len(y)) {
		t.Fatalf("pipe result %+v, want %d/%d bytes and no error", res, len(x), len(y))
	}
}

// With closewait 0, a pair whose one direction ended stays up as long as
// the other direction does, however idle.
func TestPipeNoCloseWaitWaitsForever(t *testing.T) {
	r := newPipeRig(t, 0)
	r.userA.CloseWrite()
	readAllWithin(t, r.userB, 5*time.Second) // EOF arrives
	select {
	case res := <-r.res:
		t.Fatalf("pipe ended early: %+v", res)
	case <-time.After(500 * time.Millisecond):
	}
	r.userB.Write([]byte("late reply"))
	r.userB.CloseWrite()
	if got := readAllWithin(t, r.userA, 5*time.Second); string(got) != "late reply" {
		t.Fatalf("got %q", got)
	}
	r.wait(t, 5*time.Second)
}

// closewait bounds the idle time of the surviving direction...
func TestPipeCloseWaitReapsIdle(t *testing.T) {
	r := newPipeRig(t, 200*time.Millisecond)
	r.userA.CloseWrite()
	start := time.Now()
	r.wait(t, 5*time.Second)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("pipe torn down after %v, before closewait", d)
	}
	// Both users see their connection end.
	readAllWithin(t, r.userA, 5*time.Second)
}

// ...but never cuts a direction that is still moving data.
func TestPipeCloseWaitSparesActive(t *testing.T) {
	r := newPipeRig(t, 200*time.Millisecond)
	r.userA.CloseWrite()
	go func() {
		for i := range 20 { // 1 s of trickle, 50 ms apart: 5× closewait in total
			chunk := []byte{byte(i), byte(i), byte(i)}
			if _, err := r.userB.Write(chunk); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		r.userB.CloseWrite()
	}()
	got := readAllWithin(t, r.userA, 5*time.Second)
	if len(got) != 60 {
		t.Fatalf("got %d bytes of 60: the active direction was cut", len(got))
	}
	if res := r.wait(t, 5*time.Second); res.err != nil {
		t.Fatal(res.err)
	}
}

func TestPipeStopClosesBoth(t *testing.T) {
	r := newPipeRig(t, 0)
	close(r.stop)
	r.wait(t, 5*time.Second)
	readAllWithin(t, r.userA, 5*time.Second)
	readAllWithin(t, r.userB, 5*time.Second)
}

// An error (a reset) in one direction tears the pair down at once.
func TestPipeResetTearsDown(t *testing.T) {
	r := newPipeRig(t, 0)
	r.userA.Write([]byte("x"))
	buf := make([]byte, 1)
	r.userB.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(r.userB, buf); err != nil {
		t.Fatal(err)
	}
	r.userA.SetLinger(0)
	r.userA.Close() // RST
	res := r.wait(t, 5*time.Second)
	if res.err == nil {
		t.Fatalf("pipe reported no error after a reset: %+v", res)
	}
	r.userB.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.userB.Read(buf); err == nil {
		t.Fatal("the other side stayed open after a reset")
	}
}

package demo

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func startTarget(t *testing.T) *Target {
	t.Helper()
	var mu sync.Mutex
	var errs []error
	tg, err := NewTarget(func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tg.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, err := range errs {
			t.Errorf("target: %v", err)
		}
	})
	return tg
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func TestTargetOperations(t *testing.T) {
	before := runtime.NumGoroutine()
	tg := startTarget(t)
	ops := []struct {
		name string
		run  func(net.Conn, int64, func(int64)) error
	}{
		{"upload", Upload},
		{"download", Download},
		{"echo", Echo},
		{"request", Request},
	}
	for _, op := range ops {
		for _, size := range []int64{0, 1, 65536, 3<<20 + 7} {
			var seen int64
			c := dial(t, tg.Addr())
			if err := op.run(c, size, func(n int64) { seen = n }); err != nil {
				t.Fatalf("%s %d bytes: %v", op.name, size, err)
			}
			if seen != size {
				t.Errorf("%s %d bytes: progress reported %d", op.name, size, seen)
			}
			c.Close()
		}
	}
	tg.Close()
	waitGoroutines(t, before)
}

// corruptingProxy relays between a client and addr and flips one byte of what the
// target sends, so that the checks must notice.
func corruptingProxy(t *testing.T, addr string, at int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				go func() {
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
				}()
				buf := make([]byte, 4096)
				var off int64
				for {
					n, err := up.Read(buf)
					if at >= off && at < off+int64(n) {
						buf[at-off] ^= 0x40
					}
					off += int64(n)
					if _, werr := c.Write(buf[:n]); werr != nil || err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestChecksCatchCorruption(t *testing.T) {
	tg := startTarget(t)
	cases := []struct {
		name string
		run  func(net.Conn, int64, func(int64)) error
		at   int64
	}{
		{"download body", Download, 1000},
		{"download hash", Download, 100000 + 5},
		{"echo", Echo, 99999},
		{"upload reply", Upload, 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, corruptingProxy(t, tg.Addr(), tc.at))
			err := tc.run(c, 100000, nil)
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("got %v, want ErrMismatch", err)
			}
		})
	}
}

func TestTruncatedTransferIsAnError(t *testing.T) {
	// A "target" that answers a download with fewer bytes than asked and closes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.ReadFull(c, make([]byte, headerLen))
		c.Write(make([]byte, 500))
		c.Close()
	}()
	c := dial(t, ln.Addr().String())
	if err := Download(c, 1000, nil); err == nil {
		t.Fatal("a download cut short passed the check")
	}
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d, want at most %d", runtime.NumGoroutine(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPausedUpload: the target reads nothing of a paused upload until
// ReleasePaused, so the sender stalls with bytes still to send; after the
// release the upload completes and checks out like an ordinary one.
func TestPausedUpload(t *testing.T) {
	before := runtime.NumGoroutine()
	tg := startTarget(t)
	// More than loopback's socket buffers on both ends can hold, so the
	// sender must block.
	const size = 64 << 20
	c := dial(t, tg.Addr())
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() { done <- PausedUpload(c, size, func(n int64) { sent.Store(n) }) }()

	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("paused upload ended before the release: %v", err)
	default:
	}
	if n := sent.Load(); n >= size {
		t.Fatalf("paused upload sent all %d bytes before the release", n)
	}
	if n := tg.Active(); n != 1 {
		t.Errorf("Active() = %d with one paused upload, want 1", n)
	}

	tg.ReleasePaused()
	tg.ReleasePaused() // a second call is harmless
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Uploads paused after the release are not held back.
	c2 := dial(t, tg.Addr())
	if err := PausedUpload(c2, 3<<20+7, nil); err != nil {
		t.Fatalf("paused upload after the release: %v", err)
	}
	c.Close()
	c2.Close()
	tg.Close()
	waitGoroutines(t, before)
}

// TestCloseWithPausedUploads: Close returns promptly with paused uploads
// still waiting for a release, and reports no error for them.
func TestCloseWithPausedUploads(t *testing.T) {
	tg := startTarget(t)
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		c := dial(t, tg.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			PausedUpload(c, 1<<20, nil) // cut off by Close: an error is expected
		}()
	}
	time.Sleep(100 * time.Millisecond) // let the target read the headers
	closed := make(chan struct{})
	go func() {
		tg.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on paused uploads")
	}
	wg.Wait()
}

// TestAskThenReceiveDownload: a download asked for and read later checks out,
// and Sent counts the random bytes the target wrote.
func TestAskThenReceiveDownload(t *testing.T) {
	tg := startTarget(t)
	const size = 1<<20 + 3
	c := dial(t, tg.Addr())
	if err := AskDownload(c, size); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // nobody reads: the target is ahead
	if err := ReceiveDownload(c, size, nil); err != nil {
		t.Fatal(err)
	}
	if got := tg.Sent(); got != size {
		t.Errorf("Sent() = %d, want %d", got, size)
	}
}

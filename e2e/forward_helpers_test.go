package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// Helpers of forward_test.go: processes, log lines, UDP and HTTP targets,
// curl and a SOCKS UDP client of the test's own.

// startProcess starts a binary that is killed when the test ends; a panic
// fails the test, and its output is logged when the test failed.
func startProcess(t *testing.T, name, path string, args ...string) *demo.Proc {
	t.Helper()
	p, err := demo.StartProc(name, path, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if hasPanic(p.Output()) {
			t.Errorf("%s panicked:\n%s", p.Name, p.Describe())
		} else if t.Failed() {
			t.Log(p.Describe())
		}
	})
	return p
}

// refBinary is the kcptun-style reference stack, built from this tree.
func refBinary(t *testing.T) string {
	t.Helper()
	if prebuilt {
		t.Skip("needs the reference stack built from this tree")
	}
	return refkcptun(t)
}

// waitLine waits up to within for a line of p's output that holds every
// one of subs and returns it.
func waitLine(t *testing.T, p *demo.Proc, within time.Duration, subs ...string) string {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(p.Output(), "\n") {
			if containsAll(line, subs) {
				return line
			}
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("no line with %q in %s's output within %s:\n%s", subs, p.Name, within, p.Describe())
		}
	}
}

// logLines are the lines of p's output that hold any one of subs.
func logLines(p *demo.Proc, subs ...string) []string {
	var found []string
	for _, line := range strings.Split(p.Output(), "\n") {
		for _, s := range subs {
			if strings.Contains(line, s) {
				found = append(found, line)
				break
			}
		}
	}
	return found
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	port, err := demo.FreePort("udp")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// transferVia runs op over a new connection to addr, with a deadline.
func transferVia(addr string, op operation, size int64, timeout time.Duration) error {
	c, err := dialRetry(addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if err := op.run(c, size, nil); err != nil {
		return fmt.Errorf("%s of %d bytes: %w", op.name, size, err)
	}
	return nil
}

// udpPairs sends n distinct requests from one socket to addr, one at a time,
// and counts the ones answered with their echo. UDP may drop a datagram: a
// request goes out again after 300 ms without its answer, at most 20 times.
func udpPairs(addr string, worker, n int, within time.Duration) (answered, resent int, err error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	deadline := time.Now().Add(within)
	buf := make([]byte, 65536)
	for i := range n {
		req := make([]byte, 16+mrand.IntN(1200))
		rand.Read(req)
		binary.BigEndian.PutUint32(req, uint32(worker))
		binary.BigEndian.PutUint32(req[4:], uint32(i))
		want := append([]byte("echo:"), req...)
		ok := false
		for try := 0; try < 20 && !ok; try++ {
			if time.Now().After(deadline) {
				return answered, resent, fmt.Errorf("%d of %d answered within %s", answered, n, within)
			}
			if try > 0 {
				resent++
			}
			if _, err := c.Write(req); err != nil {
				return answered, resent, fmt.Errorf("request %d: %w", i, err)
			}
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			for {
				m, err := c.Read(buf)
				if err != nil {
					break // no answer yet: send again
				}
				if bytes.Equal(buf[:m], want) {
					ok = true
					break
				}
				// The answer to an earlier copy of a request: read on.
			}
		}
		if !ok {
			return answered, resent, fmt.Errorf("request %d: no matching answer to 20 copies", i)
		}
		answered++
	}
	return answered, resent, nil
}

// sink is a TCP target that counts what reaches it.
type sink struct {
	addr         string
	conns, bytes atomic.Int64
}

func startSink(t *testing.T) *sink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(io.Discard, byteCounter{c, &s.bytes})
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// byteCounter counts the bytes read from r as they arrive.
type byteCounter struct {
	r io.Reader
	n *atomic.Int64
}

func (b byteCounter) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// startHTTP serves body at every path on addr and returns where it listens.
func startHTTP(t *testing.T, addr string, body []byte) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(body) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return l.Addr().String()
}

func randomBody(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// runCurl runs curl with args and a 30 s limit, without ~/.curlrc (-q,
// which must come first) or any proxy from the environment, and returns its exit status, stdout, stderr and duration.
func runCurl(t *testing.T, curl string, args ...string) (int, []byte, string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, append([]string{"-q", "-sS", "--max-time", "20"}, args...)...)
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasSuffix(strings.ToLower(k), "_proxy") && k != "CURL_HOME" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("curl %q still running after 30 s; stderr: %s", args, stderr.String())
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stdout.Bytes(), stderr.String(), took
}

// socksUDPExchange opens a SOCKS5 UDP ASSOCIATE at proxy and sends n
// datagrams to target (an IPv4 host:port) through it, each checked against
// its echo; a datagram without an answer in 300 ms goes out again, at most
// 20 times.
func socksUDPExchange(proxy, target string, n int, within time.Duration) error {
	dst, err := netip.ParseAddrPort(target)
	if err != nil || !dst.Addr().Is4() {
		return fmt.Errorf("target %q: want an IPv4 host:port", target)
	}
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(within))
	// No authentication; UDP ASSOCIATE from an unspecified address.
	if _, err := c.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
		return err
	}
	var rep [4]byte
	if _, err := io.ReadFull(c, rep[:2]); err != nil || rep[0] != 5 || rep[1] != 0 {
		return fmt.Errorf("method reply %v: %v", rep[:2], err)
	}
	if _, err := io.ReadFull(c, rep[:]); err != nil || rep[1] != 0 {
		return fmt.Errorf("UDP ASSOCIATE reply %d: %v", rep[1], err)
	}
	bound, err := readSocksAddr(c, rep[3])
	if err != nil {
		return fmt.Errorf("UDP ASSOCIATE bound address: %w", err)
	}
	if bound.Addr().IsUnspecified() {
		bound = netip.AddrPortFrom(netip.MustParseAddrPort(proxy).Addr(), bound.Port())
	}
	uc, err := net.Dial("udp", bound.String())
	if err != nil {
		return err
	}
	defer uc.Close()
	hdr := append([]byte{0, 0, 0, 1}, dst.Addr().AsSlice()...)
	hdr = binary.BigEndian.AppendUint16(hdr, dst.Port())
	buf := make([]byte, 65536)
	for i := range n {
		data := randomDatagram(i)
		want := append(append([]byte(nil), hdr...), append([]byte("echo:"), data...)...)
		ok := false
		for try := 0; try < 20 && !ok; try++ {
			if _, err := uc.Write(append(append([]byte(nil), hdr...), data...)); err != nil {
				return fmt.Errorf("datagram %d: %w", i, err)
			}
			uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			for {
				m, err := uc.Read(buf)
				if err != nil {
					break
				}
				if bytes.Equal(buf[:m], want) {
					ok = true
					break
				}
			}
		}
		if !ok {
			return fmt.Errorf("datagram %d of %d: no matching answer to 20 copies", i, n)
		}
	}
	return nil
}

func randomDatagram(i int) []byte {
	b := make([]byte, 8+mrand.IntN(1000))
	rand.Read(b)
	binary.BigEndian.PutUint64(b, uint64(i))
	return b
}

// readSocksAddr reads a SOCKS5 address of type atyp (IPv4 or IPv6) and port.
func readSocksAddr(r io.Reader, atyp byte) (netip.AddrPort, error) {
	var n int
	switch atyp {
	case 1:
		n = 4
	case 4:
		n = 16
	default:
		return netip.AddrPort{}, fmt.Errorf("address type %d, want an IP address", atyp)
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(r, b); err != nil {
		return netip.AddrPort{}, err
	}
	a, _ := netip.AddrFromSlice(b[:n])
	return netip.AddrPortFrom(a.Unmap(), binary.BigEndian.Uint16(b[n:])), nil
}

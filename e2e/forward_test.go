package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// TestForwardTransfers: one server allowing four targets, one client with
// three TCP forwards and one UDP forward to them. 16 concurrent transfers of
// 1–4 MiB per TCP forward arrive intact (SHA-256, uploads, downloads and
// echoes), 1,000 UDP requests through the UDP forward are all answered
// correctly meanwhile, and the client's plain -l still reaches --target.
func TestForwardTransfers(t *testing.T) {
	def := startTarget(t, false)
	var targets []*demo.Target
	var allow, fwd []string
	for range 3 {
		tg := startTarget(t, false)
		targets = append(targets, tg)
		allow = append(allow, "--allow", tg.Addr())
		fwd = append(fwd, "--forward", freeAddr(t)+"="+tg.Addr())
	}
	udpTarget := startUDPEcho(t, "127.0.0.1:0")
	udpListen := freeUDPAddr(t)
	allow = append(allow, "--allow", udpTarget)
	fwd = append(fwd, "--forward", udpListen+"/udp="+udpTarget)
	tun := startTunnel(t, demo.Options{Target: def.Addr(), ServerArgs: allow, ClientArgs: fwd})

	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 2))
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range targets {
		listen, _, _ := strings.Cut(fwd[2*i+1], "=")
		for j := range 16 {
			op := operations[j%len(operations)]
			size := 1<<20 + rng.Int64N(3<<20+1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := transferVia(listen, op, size, 120*time.Second); err != nil {
					errs <- fmt.Errorf("forward %d (%s), transfer %d: %w", i, listen, j, err)
				}
			}()
		}
	}
	var answered, resent atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, r, err := udpPairs(udpListen, w, 250, 90*time.Second)
			answered.Add(int64(n))
			resent.Add(int64(r))
			if err != nil {
				errs <- fmt.Errorf("UDP forward, socket %d: %w", w, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("48 TCP transfers and 1,000 UDP pairs in %s; %d datagrams sent again", time.Since(start).Round(time.Millisecond), resent.Load())
	if answered.Load() != 1000 {
		t.Errorf("%d of 1,000 UDP requests answered correctly", answered.Load())
	}
	if err := through(tun, operations[2], 1<<20, 20*time.Second); err != nil {
		t.Errorf("plain -l connection to --target: %v", err)
	}
	for _, p := range []*demo.Proc{tun.Server, tun.Client} {
		for _, line := range logLines(p, "level=WARN", "level=ERROR") {
			t.Errorf("%s: %s", p.Name, line)
		}
	}
}

// TestSocksCurl: curl --socks5-hostname through the client's --socks reaches
// an allowed HTTP target by name (localhost:PORT) and one by IPv6 address;
// a target outside the allow-list is refused within 1 s with curl's SOCKS
// error, and the server logs a WARN naming the client and the target; a
// UDP ASSOCIATE carries 100 datagrams; HTTP CONNECT on the same port works.
func TestSocksCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (.ci/run installs it): ", err)
	}
	body4 := randomBody(t, 1<<20+7)
	_, port4, _ := net.SplitHostPort(startHTTP(t, "127.0.0.1:0", body4))
	allow := []string{"--allow", "localhost:" + port4}
	body6 := randomBody(t, 512<<10+3)
	var port6, noV6 string
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		noV6 = fmt.Sprintf("::1 is not available here: %v", err)
	} else {
		l.Close()
		_, port6, _ = net.SplitHostPort(startHTTP(t, "[::1]:0", body6))
		allow = append(allow, "--allow", "[::1]:"+port6)
	}
	udpTarget := startUDPEcho(t, "127.0.0.1:0")
	allow = append(allow, "--allow", udpTarget)
	proxy := freeAddr(t)
	tg := startTarget(t, false)
	tun := startTunnel(t, demo.Options{Target: tg.Addr(), ServerArgs: allow, ClientArgs: []string{"--socks", proxy}})

	getThrough := func(t *testing.T, url string, want []byte, how ...string) {
		t.Helper()
		code, out, stderr, took := runCurl(t, curl, append(how, url)...)
		if code != 0 || !bytes.Equal(sha256Of(out), sha256Of(want)) {
			t.Fatalf("curl %s %s: exit %d after %s, %d bytes (want %d, same SHA-256 %v); stderr: %s",
				strings.Join(how, " "), url, code, took, len(out), len(want), bytes.Equal(out, want), stderr)
		}
	}
	t.Run("by-name", func(t *testing.T) {
		getThrough(t, "http://localhost:"+port4+"/", body4, "--socks5-hostname", proxy)
	})
	t.Run("ipv6", func(t *testing.T) {
		if noV6 != "" {
			t.Skip(noV6)
		}
		getThrough(t, "http://[::1]:"+port6+"/", body6, "-g", "--socks5-hostname", proxy)
	})
	t.Run("http-connect", func(t *testing.T) {
		getThrough(t, "http://localhost:"+port4+"/", body4, "-p", "-x", "http://"+proxy)
	})
	t.Run("refused", func(t *testing.T) {
		refused := freeAddr(t)
		code, _, stderr, took := runCurl(t, curl, "--socks5-hostname", proxy, "http://"+refused+"/")
		// curl 7.73 and later exit 97 (CURLE_PROXY) for a SOCKS reply other
		// than success and print the reply code: 2, not allowed by ruleset.
		low := strings.ToLower(stderr)
		if code != 97 || !strings.Contains(low, "socks5") || !strings.Contains(stderr, "(2)") || took > time.Second {
			t.Errorf("curl to %s (not allowed): exit %d after %s, stderr %q; want exit 97 within 1 s and a SOCKS5 error naming reply 2",
				refused, code, took, stderr)
		}
		line := waitLine(t, tun.Server, 2*time.Second, "level=WARN", `msg="target refused"`, "client=127.0.0.1:", "target="+refused)
		t.Logf("curl: exit %d after %s: %s; server: %s", code, took.Round(time.Millisecond), strings.TrimSpace(stderr), line)
		waitLine(t, tun.Client, 2*time.Second, "level=WARN", `msg="socks connect failed"`, "target="+refused)
	})
	t.Run("udp-associate", func(t *testing.T) {
		if err := socksUDPExchange(proxy, udpTarget, 100, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAllowKcptunClient: the kcptun-style reference client against a
// smuxtun-server that has --allow patterns still reaches --target, uploads
// and downloads intact (SHA-256).
func TestAllowKcptunClient(t *testing.T) {
	ref := refBinary(t)
	tg := startTarget(t, false)
	key := demo.GenerateKey()
	server := freeUDPAddr(t)
	tun := &demo.Tunnel{ServerAddr: server, ClientAddr: freeAddr(t)}
	tun.Server = startProcess(t, "smuxtun-server", demo.BinaryPath(binDir, demo.ServerBinary),
		"--listen", server, "--target", tg.Addr(), "--key", key,
		"--allow", "10.0.0.0/8:22", "--allow", "*.example.com:443", "--allow", "[2001:db8::/32]:1000-2000", "--allow", freeAddr(t))
	tun.Client = startProcess(t, "refkcptun client", ref, "client", "-l", tun.ClientAddr, "-r", server, "--key", key)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tun.WaitReady(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, op := range operations[:2] { // the reference ends both ways at one EOF: no echo
		if err := through(tun, op, 2<<20+11, 30*time.Second); err != nil {
			t.Error(err)
		}
	}
}

// TestForwardKcptunServer: a smuxtun-client with a --forward against the
// kcptun-style reference server: the forwarded connection is closed within
// 5 s, the client's log says why, and the reference server's target sees no
// connection and no byte — while the same client's -l does reach it.
func TestForwardKcptunServer(t *testing.T) {
	ref := refBinary(t)
	sink := startSink(t)
	key := demo.GenerateKey()
	server := freeUDPAddr(t)
	startProcess(t, "refkcptun server", ref, "server", "-l", server, "-t", sink.addr, "--key", key)
	local, listen := freeAddr(t), freeAddr(t)
	cli := startProcess(t, "smuxtun-client", demo.BinaryPath(binDir, demo.ClientBinary),
		"--remoteaddr", server, "--key", key, "-l", local, "--forward", listen+"="+sink.addr)
	waitLine(t, cli, 5*time.Second, `msg=forwarding`, "listen="+listen)

	c, err := dialRetry(listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte("SSH-2.0-e2e\r\n"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	took := time.Since(start)
	var ne net.Error
	if n > 0 || (errors.As(err, &ne) && ne.Timeout()) || took > 5*time.Second {
		t.Fatalf("forwarded connection to a kcptun server: read %d bytes, %v after %s; want it closed within 5 s", n, err, took)
	}
	line := waitLine(t, cli, time.Second, "level=ERROR", "does not take client-chosen targets")
	t.Logf("closed after %s (%v); client: %s", took.Round(time.Millisecond), err, line)
	time.Sleep(200 * time.Millisecond)
	if conns, got := sink.conns.Load(), sink.bytes.Load(); conns != 0 || got != 0 {
		t.Fatalf("the kcptun server's target saw %d connections and %d bytes from a forward", conns, got)
	}

	// Not a dead tunnel: the client's -l reaches the same target.
	lc, err := dialRetry(local, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	lc.Write([]byte("plain"))
	for deadline := time.Now().Add(10 * time.Second); sink.bytes.Load() < 5; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("-l through the same client: the kcptun server's target got %d bytes of 5", sink.bytes.Load())
		}
	}
}

// TestForwardAllowBadInput: a malformed --forward or --allow, as a flag or
// as a key in a -c file, makes the binary exit 2 with one line on stderr
// naming the flag or key.
func TestForwardAllowBadInput(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, binary string
		args         []string
		json         string // a -c file instead of args, when not empty
		want         string // in the line
	}{
		{"forward-no-equals", demo.ClientBinary, []string{"--forward", "127.0.0.1:2222"}, "", `--forward "127.0.0.1:2222"`},
		{"forward-listen-port-0", demo.ClientBinary, []string{"--forward", "127.0.0.1:0=10.0.0.5:22"}, "", `--forward "127.0.0.1:0=10.0.0.5:22"`},
		{"forward-bad-target", demo.ClientBinary, []string{"--forward", "127.0.0.1:2222=nohost"}, "", `--forward "127.0.0.1:2222=nohost"`},
		{"forward-target-port", demo.ClientBinary, []string{"--forward", "127.0.0.1:2222/udp=10.0.0.2:99999"}, "", `--forward "127.0.0.1:2222/udp=10.0.0.2:99999"`},
		{"allow-star", demo.ServerBinary, []string{"--allow", "*"}, "", `--allow "*"`},
		{"allow-bad-cidr", demo.ServerBinary, []string{"--allow", "10.0.0.0/33:22"}, "", `--allow "10.0.0.0/33:22"`},
		{"json-forward", demo.ClientBinary, nil, `{"remoteaddr": "127.0.0.1:1", "forward": ["127.0.0.1:2222"]}`, `forward "127.0.0.1:2222"`},
		{"json-forward-port-0", demo.ClientBinary, nil, `{"remoteaddr": "127.0.0.1:1", "forward": ["127.0.0.1:0=10.0.0.5:22"]}`, `forward "127.0.0.1:0=10.0.0.5:22"`},
		{"json-allow-star", demo.ServerBinary, nil, `{"listen": "127.0.0.1:1", "target": "127.0.0.1:1", "allow": ["*"]}`, `allow "*"`},
		{"json-allow-bad-cidr", demo.ServerBinary, nil, `{"listen": "127.0.0.1:1", "target": "127.0.0.1:1", "allow": ["10.0.0.0/33:22"]}`, `allow "10.0.0.0/33:22"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if c.json != "" {
				path := filepath.Join(dir, c.name+".json")
				if err := os.WriteFile(path, []byte(c.json), 0o600); err != nil {
					t.Fatal(err)
				}
				args = []string{"-c", path}
			} else if c.binary == demo.ClientBinary {
				args = append([]string{"--remoteaddr", "127.0.0.1:1"}, args...)
			} else {
				args = append([]string{"--listen", "127.0.0.1:1", "--target", "127.0.0.1:1"}, args...)
			}
			code, stderr := runToExit(t, c.binary, args...)
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
				t.Errorf("%s %q: exit %d, stderr:\n%s\nwant exit 2 and one line naming %s", c.binary, args, code, stderr, c.want)
			}
		})
	}
}

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

// startUDPEcho runs a UDP target on addr that answers each datagram with
// "echo:" and the datagram, and returns its address.
func startUDPEcho(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().String()
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

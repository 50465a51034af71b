package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
	"github.com/smuxtun/smuxtun/internal/nettest"
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
	udpTarget := nettest.UDPEcho(t, "127.0.0.1:0")
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
	udpTarget := nettest.UDPEcho(t, "127.0.0.1:0")
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

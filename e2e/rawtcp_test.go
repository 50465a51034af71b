//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
	"golang.org/x/sys/unix"
)

// --tcp (kcptun's raw-socket TCP emulation) runs between two network
// namespaces joined by a veth pair, which the test creates and deletes: the
// processes run inside them through `ip netns exec`, the target listens in
// the server's namespace and the test's connections start in the client's.
// It needs root, the ip command and iptables (tcpraw adds a rule); without
// them it says so and skips.

// rawNet is a pair of network namespaces joined by a veth pair.
type rawNet struct {
	client, server     string // namespace names
	clientIP, serverIP string
	clientDev          string // the client's end of the veth pair
}

// rawNetSkip returns why the --tcp tests cannot run here, or "".
func rawNetSkip() string {
	if runtime.GOOS != "linux" {
		return "--tcp works on Linux only"
	}
	if os.Geteuid() != 0 {
		return "creating network namespaces and raw sockets needs root (run the tests as root to cover --tcp)"
	}
	for _, c := range []struct{ cmd, pkg string }{{"ip", "iproute2"}, {"iptables", "iptables"}} {
		if _, err := exec.LookPath(c.cmd); err != nil {
			return fmt.Sprintf("the %s command is missing (install the %s package; .ci/run does)", c.cmd, c.pkg)
		}
	}
	return ""
}

// newRawNet creates the namespaces, deleted when the test ends, pass or fail.
func newRawNet(t *testing.T) *rawNet {
	t.Helper()
	if why := rawNetSkip(); why != "" {
		t.Skip("--tcp test skipped: " + why)
	}
	// Unique per test process, so that parallel runs do not collide.
	id := os.Getpid()%50000 + 1
	sub := 200 + id%50
	n := &rawNet{
		client:   fmt.Sprintf("smxt%d-c", id),
		server:   fmt.Sprintf("smxt%d-s", id),
		clientIP: fmt.Sprintf("10.%d.%d.1", sub, id%250+1),
		serverIP: fmt.Sprintf("10.%d.%d.2", sub, id%250+1),
	}
	if out, err := exec.Command("ip", "netns", "add", n.client).CombinedOutput(); err != nil {
		t.Skipf("--tcp test skipped: cannot create a network namespace (a container without CAP_SYS_ADMIN?): %v: %s", err, out)
	}
	t.Cleanup(func() {
		for _, ns := range []string{n.client, n.server} {
			exec.Command("ip", "netns", "del", ns).Run() // deletes the veth pair too
		}
	})
	vc, vs := fmt.Sprintf("smxt%dc", id), fmt.Sprintf("smxt%ds", id)
	n.clientDev = vc
	for _, args := range [][]string{
		{"netns", "add", n.server},
		{"link", "add", vc, "netns", n.client, "type", "veth", "peer", "name", vs, "netns", n.server},
		{"-n", n.client, "addr", "add", n.clientIP + "/24", "dev", vc},
		{"-n", n.server, "addr", "add", n.serverIP + "/24", "dev", vs},
		{"-n", n.client, "link", "set", "lo", "up"},
		{"-n", n.server, "link", "set", "lo", "up"},
		{"-n", n.client, "link", "set", vc, "up"},
		{"-n", n.server, "link", "set", vs, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return n
}

// in runs f on a thread that has entered namespace ns: sockets f opens
// belong to ns for good, whichever goroutine uses them later.
func in(ns string, f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", ns, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and ends with this goroutine.
		return fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// startIn starts a binary inside namespace ns, stopped when the test ends.
func startIn(t *testing.T, ns, name, bin string, args ...string) *demo.Proc {
	t.Helper()
	p, err := demo.StartProc(name, "ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if hasPanic(p.Output()) || t.Failed() {
			t.Logf("%s", p.Describe())
		}
	})
	return p
}

// waitLog waits until p has written sub.
func waitLog(t *testing.T, p *demo.Proc, sub string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Output(), sub) {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("no %q from %s", sub, p.Describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialIn connects from namespace ns to addr, retrying while the listener
// comes up.
func dialIn(t *testing.T, ns, addr string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var c net.Conn
		err := in(ns, func() (err error) {
			c, err = net.DialTimeout("tcp", addr, time.Second)
			return err
		})
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial %s in %s: %v", addr, ns, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// snmp is a namespace's /proc/net/snmp, "Udp.InDatagrams" -> value.
type snmp map[string]int64

func readSNMP(t *testing.T, ns string) snmp {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		t.Fatalf("read /proc/net/snmp in %s: %v", ns, err)
	}
	m := snmp{}
	var head []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			head = f
			continue
		}
		for i := 1; i < len(f) && i < len(head); i++ {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			m[strings.TrimSuffix(f[0], ":")+"."+head[i]] = v
		}
	}
	return m
}

func (s snmp) delta(before snmp, key string) int64 { return s[key] - before[key] }

// vethBytes is what the client's end of the veth pair has received and
// sent: everything that crossed between the namespaces.
func (n *rawNet) vethBytes(t *testing.T) int64 {
	t.Helper()
	var sum int64
	for _, dir := range []string{"rx", "tx"} {
		out, err := exec.Command("ip", "netns", "exec", n.client, "cat", "/sys/class/net/"+n.clientDev+"/statistics/"+dir+"_bytes").Output()
		if err != nil {
			t.Fatalf("read %s bytes of %s: %v", dir, n.clientDev, err)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return sum
}

var (
	refOnce sync.Once
	refBin  string
	refErr  error
)

// refkcptun builds the kcptun-style reference stack once.
func refkcptun(t *testing.T) string {
	t.Helper()
	refOnce.Do(func() {
		refBin = demo.BinaryPath(binDir, "refkcptun")
		refErr = goBuild("./internal/refstack/cmd/refkcptun", refBin, "CGO_ENABLED=0")
	})
	if refErr != nil {
		t.Fatal(refErr)
	}
	return refBin
}

// TestRawTCP: with --tcp on both ends, smuxtun with smuxtun and either side
// with the kcptun-style reference stack (kcp-go + tcpraw as kcptun wires
// them) carry transfers intact both ways, and the packets between the
// namespaces are TCP: no UDP datagram is sent or received on either side.
func TestRawTCP(t *testing.T) {
	n := newRawNet(t)
	const key = "raw tcp e2e"
	const port = 29900
	cases := []struct {
		name           string
		server, client string // "smuxtun" or "ref"
		udpClient      bool   // the client without --tcp
		anyHost        bool   // the server listens on every address (":port")
	}{
		// --conn 3 over a range of 3 ports: several raw TCP flows at once,
		// each with FEC (kcptun's default 10 data + 3 parity shards).
		{name: "smuxtun-smuxtun", server: "smuxtun", client: "smuxtun"},
		{name: "ref-client", server: "smuxtun", client: "ref", anyHost: true},
		{name: "ref-server", server: "ref", client: "smuxtun"},
		// A --tcp server still serves UDP clients on the same ports, as
		// kcptun's does.
		{name: "udp-client", server: "smuxtun", client: "smuxtun", udpClient: true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			listenPort := port + 10*i
			var tg *demo.Target
			if err := in(n.server, func() (err error) { tg = startTarget(t, false); return nil }); err != nil {
				t.Fatal(err)
			}
			var srv, cli *demo.Proc
			remote := net.JoinHostPort(n.serverIP, strconv.Itoa(listenPort))
			if c.server == "smuxtun" {
				// A range: the smuxtun client spreads its sessions over it.
				listen := fmt.Sprintf("%s:%d-%d", n.serverIP, listenPort, listenPort+2)
				if c.client == "smuxtun" {
					remote = listen
				}
				if c.anyHost {
					listen = fmt.Sprintf(":%d-%d", listenPort, listenPort+2)
				}
				srv = startIn(t, n.server, "smuxtun-server", demo.BinaryPath(binDir, demo.ServerBinary),
					"--tcp", "-l", listen, "-t", tg.Addr(), "--key", key)
				waitLog(t, srv, "server listening")
			} else {
				srv = startIn(t, n.server, "refkcptun server", refkcptun(t),
					"server", "--tcp", "-l", remote, "-t", tg.Addr(), "--key", key)
				time.Sleep(300 * time.Millisecond) // it says nothing when ready
			}
			local := "127.0.0.1:12948"
			if c.client == "smuxtun" {
				args := []string{"-l", local, "-r", remote, "--conn", "3", "--key", key}
				if !c.udpClient {
					args = append(args, "--tcp")
				}
				cli = startIn(t, n.client, "smuxtun-client", demo.BinaryPath(binDir, demo.ClientBinary), args...)
			} else {
				cli = startIn(t, n.client, "refkcptun client", refkcptun(t),
					"client", "--tcp", "-l", local, "-r", remote, "--key", key)
			}
			cb, sb, vb := readSNMP(t, n.client), readSNMP(t, n.server), n.vethBytes(t)

			const size = 4 << 20
			var wg sync.WaitGroup
			errs := make(chan error, 6)
			for j, op := range []func(net.Conn, int64, func(int64)) error{demo.Upload, demo.Download, demo.Echo, demo.Upload, demo.Download, demo.Echo} {
				c := dialIn(t, n.client, local)
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					c.SetDeadline(time.Now().Add(60 * time.Second))
					if err := op(c, size, nil); err != nil {
						errs <- fmt.Errorf("transfer %d: %w", j, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}

			ca, sa, va := readSNMP(t, n.client), readSNMP(t, n.server), n.vethBytes(t)
			if t.Failed() {
				for _, ns := range []string{n.client, n.server} {
					out, _ := exec.Command("ip", "netns", "exec", ns, "sh", "-c", "nstat -az | grep -v ' 0 '; ip -s link; iptables -S").CombinedOutput()
					t.Logf("%s:\n%s", ns, out)
				}
			}
			// 6 transfers of 4 MiB, echo both ways: at least 32 MiB crossed
			// the veth pair, in segments of at most 1350 bytes of KCP. The
			// TCP counters also count the loopback connections to the
			// client and the target, but in far fewer (64 KiB) segments.
			const moved = 8 * size
			if d := va - vb; d < moved {
				t.Errorf("%d bytes crossed the veth pair for %d bytes of transfers", d, moved)
			}
			segs := ca.delta(cb, "Tcp.InSegs") + sa.delta(sb, "Tcp.InSegs")
			t.Logf("%d bytes over the veth pair; TCP segments received: client %d, server %d; UDP datagrams in/out: client %d/%d, server %d/%d",
				va-vb, ca.delta(cb, "Tcp.InSegs"), sa.delta(sb, "Tcp.InSegs"),
				ca.delta(cb, "Udp.InDatagrams"), ca.delta(cb, "Udp.OutDatagrams"),
				sa.delta(sb, "Udp.InDatagrams"), sa.delta(sb, "Udp.OutDatagrams"))
			udp := ca.delta(cb, "Udp.InDatagrams") + sa.delta(sb, "Udp.InDatagrams")
			if c.udpClient {
				if udp < moved/1350 {
					t.Errorf("only %d UDP datagrams arrived for %d bytes from a client without --tcp", udp, moved)
				}
			} else if segs < moved/1350 {
				t.Errorf("only %d TCP segments arrived for %d bytes: the data did not travel as TCP", segs, moved)
			}
			for _, k := range []string{"Udp.InDatagrams", "Udp.OutDatagrams", "Udp.NoPorts", "Udp.InErrors"} {
				if d := ca.delta(cb, k) + sa.delta(sb, k); d != 0 && !c.udpClient {
					t.Errorf("%s moved by %d: UDP carried some of the tunnel", k, d)
				}
			}

			// smuxtun exits cleanly and takes tcpraw's iptables rules with it.
			for _, p := range []*demo.Proc{cli, srv} {
				if strings.HasPrefix(p.Name, "smuxtun") {
					if err := p.Stop(10 * time.Second); err != nil {
						t.Errorf("%v\n%s", err, p.Describe())
					}
				} else {
					p.Kill()
				}
			}
			for _, side := range []struct {
				ns, who string
			}{{n.client, c.client}, {n.server, c.server}} {
				out, err := exec.Command("ip", "netns", "exec", side.ns, "iptables", "-S", "OUTPUT").CombinedOutput()
				if err != nil {
					t.Fatalf("iptables -S in %s: %v: %s", side.ns, err, out)
				}
				rules := strings.Count(string(out), "-A OUTPUT")
				if side.who == "smuxtun" && rules != 0 {
					t.Errorf("%s left iptables rules behind:\n%s", side.ns, out)
				}
				// The reference was killed: clear its rules for the next case.
				exec.Command("ip", "netns", "exec", side.ns, "iptables", "-F", "OUTPUT").Run()
			}
		})
	}
}

// TestRawTCPNoPrivilege: without CAP_NET_RAW, --tcp is refused at start with
// one line that names the capability and how to grant it, exit code 1.
func TestRawTCPNoPrivilege(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("--tcp works on Linux only")
	}
	var wrap []string
	if os.Geteuid() == 0 {
		// Root: drop the capability for the child.
		if _, err := exec.LookPath("setpriv"); err != nil {
			t.Skip("running as root and setpriv (util-linux) is missing: cannot drop CAP_NET_RAW for the binary")
		}
		wrap = []string{"setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-net_raw"}
	}
	for _, side := range []struct {
		bin  string
		args []string
	}{
		{demo.ClientBinary, []string{"-l", "127.0.0.1:1", "-r", "127.0.0.1:2"}},
		{demo.ServerBinary, []string{"-l", "127.0.0.1:2", "-t", "127.0.0.1:1"}},
	} {
		t.Run(side.bin, func(t *testing.T) {
			argv := append(append(append([]string{}, wrap...), demo.BinaryPath(binDir, side.bin), "--tcp", "--key", "k"), side.args...)
			cmd := exec.Command(argv[0], argv[1:]...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := cmd.ProcessState.ExitCode()
			if code != 1 {
				t.Errorf("exit code %d (%v), want 1", code, err)
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
				t.Errorf("want exactly one line on stderr, got:\n%s", out)
			}
			for _, want := range []string{side.bin + ": ", "--tcp", "CAP_NET_RAW", "root", "setcap cap_net_raw", "AmbientCapabilities"} {
				if !strings.Contains(out, want) {
					t.Errorf("stderr lacks %q:\n%s", want, out)
				}
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: %q", stdout.String())
			}
		})
	}
}

// TestRawTCPNoRule: with CAP_NET_RAW but not CAP_NET_ADMIN, tcpraw cannot
// add its iptables rule; the server says so in one warning and serves.
func TestRawTCPNoRule(t *testing.T) {
	n := newRawNet(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is missing: cannot drop CAP_NET_ADMIN for the binary")
	}
	p := startIn(t, n.server, "smuxtun-server", "setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-net_admin",
		demo.BinaryPath(binDir, demo.ServerBinary), "--tcp", "-l", n.serverIP+":29900", "-t", "127.0.0.1:1", "--key", "k")
	waitLog(t, p, "server listening")
	out := p.Output()
	if c := strings.Count(out, "cannot add tcpraw's iptables rule"); c != 1 {
		t.Errorf("%d warnings about the iptables rule, want 1:\n%s", c, out)
	}
	if !strings.Contains(out, "CAP_NET_ADMIN") {
		t.Errorf("the warning does not name CAP_NET_ADMIN:\n%s", out)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Errorf("%v\n%s", err, p.Describe())
	}
}

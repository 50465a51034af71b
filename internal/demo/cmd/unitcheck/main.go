// Command unitcheck runs inside a container booted with systemd (see
// scripts/systemd-boot-check.sh) and checks that the units in systemd/ work
// under a real service manager: it writes configs from the shipped examples,
// starts smuxtun-server, smuxtun-client and an instance of each template,
// checks the sandbox the processes got, carries checked transfers through both
// tunnels (one server on a port below 1024) and through a client that listens
// on a unix socket in its RuntimeDirectory, stops the units and checks they
// exited 0. It prints one line per check and exits 1 if any failed.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/smuxtun/smuxtun/internal/demo"
)

const (
	examples = "/usr/local/share/smuxtun" // server.json and client.json from systemd/
	confDir  = "/etc/smuxtun"
)

var failed, passed int

func check(ok bool, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if ok {
		passed++
		fmt.Println("ok  ", msg)
	} else {
		failed++
		fmt.Println("FAIL", msg)
	}
}

type tunnelCase struct {
	server, client         string // unit names
	serverConf, clientConf string // file names in /etc/smuxtun
	listen, local          string
}

func main() {
	target, err := demo.NewTarget(nil)
	if err != nil {
		fmt.Println("FAIL target:", err)
		os.Exit(1)
	}
	defer target.Close()
	key := demo.GenerateKey()
	cases := []tunnelCase{
		{"smuxtun-server.service", "smuxtun-client.service", "server.json", "client.json", "127.0.0.1:29900", "127.0.0.1:12948"},
		// A port below 1024: needs the ambient CAP_NET_BIND_SERVICE.
		{"smuxtun-server@alt.service", "smuxtun-client@alt.service", "server-alt.json", "client-alt.json", "127.0.0.1:999", "127.0.0.1:12949"},
	}
	// A third client, on a unix socket, in front of the first server.
	const sock = "/run/smuxtun-client-sock/tunnel.sock"
	check(writeConf("client.json", "client-sock.json", map[string]any{"key": key, "localaddr": sock, "remoteaddr": cases[0].listen}) == nil, "write client-sock.json")
	for _, c := range cases {
		check(writeConf("server.json", c.serverConf, map[string]any{"key": key, "listen": c.listen, "target": target.Addr()}) == nil, "write %s", c.serverConf)
		check(writeConf("client.json", c.clientConf, map[string]any{"key": key, "localaddr": c.local, "remoteaddr": c.listen}) == nil, "write %s", c.clientConf)
		for _, u := range []string{c.server, c.client} {
			out, err := exec.Command("systemctl", "start", u).CombinedOutput()
			check(err == nil, "systemctl start %s %s", u, strings.TrimSpace(string(out)))
		}
	}
	out, err := exec.Command("systemctl", "start", "smuxtun-client@sock.service").CombinedOutput()
	check(err == nil, "systemctl start smuxtun-client@sock.service %s", strings.TrimSpace(string(out)))
	checkUnit("smuxtun-client@sock.service")
	err = retry("unix", sock)
	check(err == nil, "echo, upload and download of 1 MiB through %s: %v", sock, err)
	if fi, err := os.Stat(sock); err == nil {
		// UMask=0077: only the service's user (and root) may connect.
		check(fi.Mode().Perm() == 0o700, "%s mode %v", sock, fi.Mode())
	}
	out, err = exec.Command("systemctl", "stop", "smuxtun-client@sock.service").CombinedOutput()
	check(err == nil && show("smuxtun-client@sock.service", "ExecMainStatus") == "0", "stop smuxtun-client@sock.service: %s status %s", out, show("smuxtun-client@sock.service", "ExecMainStatus"))
	_, err = os.Stat(sock)
	check(os.IsNotExist(err), "the RuntimeDirectory and the socket are gone after the stop: %v", err)

	for _, c := range cases {
		for _, u := range []string{c.server, c.client} {
			checkUnit(u)
		}
		err := retry("tcp", c.local)
		check(err == nil, "echo, upload and download of 1 MiB through %s and %s (%s): %v", c.client, c.server, c.listen, err)
	}
	for _, c := range cases {
		for _, u := range []string{c.client, c.server} {
			out, err := exec.Command("systemctl", "stop", u).CombinedOutput()
			check(err == nil, "systemctl stop %s %s", u, strings.TrimSpace(string(out)))
			res, status := show(u, "Result"), show(u, "ExecMainStatus")
			check(res == "success" && status == "0", "%s stopped with Result=%s ExecMainStatus=%s (want success, 0)", u, res, status)
		}
	}
	fmt.Printf("unitcheck: %d checks passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

// writeConf writes /etc/smuxtun/name from the shipped example with some keys
// replaced, readable by root only, as the README says to install it.
func writeConf(example, name string, set map[string]any) error {
	raw, err := os.ReadFile(filepath.Join(examples, example))
	if err != nil {
		return err
	}
	conf := map[string]any{}
	if err := json.Unmarshal(raw, &conf); err != nil {
		return err
	}
	for k, v := range set {
		conf[k] = v
	}
	out, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(confDir, name), out, 0o600)
}

func show(unit, prop string) string {
	out, _ := exec.Command("systemctl", "show", "-p", prop, "--value", unit).Output()
	return strings.TrimSpace(string(out))
}

// checkUnit checks the running unit's process: a dynamic non-root user, only
// CAP_NET_BIND_SERVICE (bit 10), no new privileges, a seccomp filter.
func checkUnit(u string) {
	check(show(u, "ActiveState") == "active", "%s is active (%s/%s)", u, show(u, "ActiveState"), show(u, "SubState"))
	pid := show(u, "MainPID")
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		check(false, "%s: read /proc/%s/status: %v", u, pid, err)
		return
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	uid := strings.Fields(fields["Uid"] + " x")[0]
	check(uid != "0" && uid != "x", "%s runs as uid %s (user %s)", u, uid, show(u, "User"))
	const netBindService = "0000000000000400"
	for _, k := range []string{"CapEff", "CapPrm", "CapBnd", "CapAmb"} {
		check(fields[k] == netBindService, "%s %s=%s (want only CAP_NET_BIND_SERVICE, %s)", u, k, fields[k], netBindService)
	}
	check(fields["NoNewPrivs"] == "1", "%s NoNewPrivs=%s", u, fields["NoNewPrivs"])
	check(fields["Seccomp"] == "2", "%s Seccomp=%s (2 = filter)", u, fields["Seccomp"])
	if limits, err := os.ReadFile("/proc/" + pid + "/limits"); err == nil {
		for _, line := range strings.Split(string(limits), "\n") {
			if strings.HasPrefix(line, "Max open files") {
				fmt.Printf("info %s %s (LimitNOFILE=1048576, capped by the container's own limit)\n", u, strings.Join(strings.Fields(line), " "))
			}
		}
	}
}

// retry runs transfer until it works, for up to 20 s: the units have just started.
func retry(network, addr string) error {
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err = transfer(network, addr); err == nil {
			return nil
		}
	}
	return err
}

// transfer runs an echo, an upload and a download of 1 MiB through the client at addr.
func transfer(network, addr string) error {
	for _, op := range []func(net.Conn, int64, func(int64)) error{demo.Echo, demo.Upload, demo.Download} {
		var d net.Dialer
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c, err := d.DialContext(ctx, network, addr)
		cancel()
		if err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		err = op(c, 1<<20, nil)
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

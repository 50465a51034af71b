//go:build linux

package tunnel

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// capNetAdmin is CAP_NET_ADMIN's bit in /proc/self/status.
const capNetAdmin = 12

// checkRawTCP fails with ErrRawTCPPrivilege if the process may not open the
// raw sockets tcpraw needs: at start, in one line, rather than at the first
// dial or as a listener that never hears anything.
func checkRawTCP() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_TCP)
	if errors.Is(err, syscall.EAFNOSUPPORT) {
		fd, err = syscall.Socket(syscall.AF_INET6, syscall.SOCK_RAW, syscall.IPPROTO_TCP)
	}
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%w: run it as root, or grant the capability with `setcap cap_net_raw+ep %s`, "+
			"or under systemd with AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN (the drop-in systemd/smuxtun-tcp.conf)",
			ErrRawTCPPrivilege, executable())
	case err != nil:
		return fmt.Errorf("--tcp: cannot open a raw socket: %w", err)
	}
	syscall.Close(fd)
	return nil
}

// executable is the running binary's path, for the setcap hint.
func executable() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "BINARY"
}

// rawTCPRuleProblem says why tcpraw will not manage to add its iptables
// rule, or returns "". tcpraw runs the iptables command and carries on
// silently when it fails; the command needs CAP_NET_ADMIN, which a child
// process has only as root or as an ambient capability.
func rawTCPRuleProblem() string {
	if _, err := exec.LookPath("iptables"); err != nil {
		return "the iptables command is not installed"
	}
	if os.Geteuid() == 0 {
		if !hasCap("CapEff", capNetAdmin) {
			return "the process lacks CAP_NET_ADMIN"
		}
		return ""
	}
	if !hasCap("CapAmb", capNetAdmin) {
		return "the iptables child process gets no CAP_NET_ADMIN: it must be an ambient capability (systemd's AmbientCapabilities=)"
	}
	return ""
}

// hasCap reports whether capability bit is in the named set of
// /proc/self/status; true when that cannot be read (nothing to warn about).
func hasCap(set string, bit uint) bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return true
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), set+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || n&(1<<bit) != 0
		}
	}
	return true
}

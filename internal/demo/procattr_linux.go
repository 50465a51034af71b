package demo

import "syscall"

// childAttr puts the child in its own process group and has the kernel kill it
// if the process that started it dies first, so nothing outlives the demo or a test.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

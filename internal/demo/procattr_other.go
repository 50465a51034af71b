//go:build !linux && !windows

package demo

import "syscall"

// childAttr puts the child in its own process group, so that a Ctrl-C reaches the
// demo only and the demo stops its children itself.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

package demo

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Usage is a process's resource use as /proc shows it.
type Usage struct {
	FDs      int   // open file descriptors
	Threads  int   // OS threads
	RSSBytes int64 // resident memory
}

func (u Usage) String() string {
	return fmt.Sprintf("%d fds, %d threads, %.1f MiB RSS", u.FDs, u.Threads, float64(u.RSSBytes)/(1<<20))
}

// ReadUsage reads pid's open descriptors, thread count and resident memory from /proc.
func ReadUsage(pid int) (Usage, error) {
	var u Usage
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return u, fmt.Errorf("count fds of %d: %w", pid, err)
	}
	u.FDs = len(fds)
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("read status of %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) == 0 {
			continue
		}
		switch key {
		case "Threads":
			u.Threads, err = strconv.Atoi(fields[0])
		case "VmRSS": // in kB
			var kb int64
			kb, err = strconv.ParseInt(fields[0], 10, 64)
			u.RSSBytes = kb << 10
		}
		if err != nil {
			return u, fmt.Errorf("parse %s of %d: %w", key, pid, err)
		}
	}
	if err := sc.Err(); err != nil {
		return u, fmt.Errorf("read status of %d: %w", pid, err)
	}
	return u, nil
}

package demo

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrStillRunning reports that a process did not exit when asked to.
var ErrStillRunning = errors.New("process did not exit in time")

// Proc is a child process (smuxtun-server or smuxtun-client) whose output is kept
// for error messages.
type Proc struct {
	Name string
	Args []string

	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done closes
}

// StartProc starts path with args. The child gets its own process group, so a
// Ctrl-C in the terminal reaches only the demo, which then stops its children
// itself; on Linux the child is also killed if the demo dies.
func StartProc(name, path string, args ...string) (*Proc, error) {
	p := &Proc{Name: name, Args: args, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.SysProcAttr = childAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the exit status once the process has exited, -1 if it was killed
// by a signal or is still running.
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Output is everything the process wrote to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

// Signal sends sig to the process if it is still running.
func (p *Proc) Signal(sig os.Signal) error {
	if p.Exited() {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM and waits up to timeout for the process to exit. If it has
// not exited by then, it is killed and Stop returns ErrStillRunning. Otherwise
// Stop returns nil for exit status 0 and an error naming the status for any other.
// Stop may be called more than once.
func (p *Proc) Stop(timeout time.Duration) error {
	if !p.Exited() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(timeout):
			p.Kill()
			return fmt.Errorf("%s: no exit %s after SIGTERM: %w", p.Name, timeout, ErrStillRunning)
		}
	}
	if p.err != nil {
		return fmt.Errorf("%s: %w", p.Name, p.err)
	}
	return nil
}

// Kill kills the process and waits for it to be reaped.
func (p *Proc) Kill() {
	if !p.Exited() {
		p.cmd.Process.Kill()
	}
	<-p.done
}

// Describe is the command line and output of the process, for error messages.
func (p *Proc) Describe() string {
	state := "running"
	if p.Exited() {
		state = fmt.Sprintf("exited: %v", p.cmd.ProcessState)
	}
	return fmt.Sprintf("%s (%s %s, %s), output:\n%s", p.Name, p.cmd.Path, strings.Join(p.Args, " "), state, indent(p.Output()))
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (none)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// syncBuffer is a bytes.Buffer that the child's output pipe goroutine and
// readers may use at the same time. It keeps the last 64 KiB only.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const maxOutput = 64 << 10

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.buf.Len() > 2*maxOutput {
		keep := b.buf.Bytes()[b.buf.Len()-maxOutput:]
		b.buf = *bytes.NewBuffer(append([]byte(nil), keep...))
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

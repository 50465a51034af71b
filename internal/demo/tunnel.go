package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"time"
)

// Binary names, as `make build` writes them to bin/.
const (
	ServerBinary = "smuxtun-server"
	ClientBinary = "smuxtun-client"
)

// Options describe one tunnel: smuxtun-server in front of Target and
// smuxtun-client in front of the server, all on 127.0.0.1.
type Options struct {
	Bin        string   // folder holding smuxtun-server and smuxtun-client
	Target     string   // host:port the server connects streams to
	Key        string   // pre-shared key; a random one if empty
	Transport  string   // "kcp" or "tcp"; empty passes no --transport flag (kcp)
	NoComp     bool     // --nocomp on both sides
	ServerArgs []string // more flags for the server
	ClientArgs []string // more flags for the client
}

// Tunnel is a running server and client.
type Tunnel struct {
	Options
	ServerAddr string // where the server listens (UDP for kcp, TCP for tcp)
	ClientAddr string // where the client accepts TCP connections
	Server     *Proc
	Client     *Proc
}

// ErrNotReady reports that the tunnel did not carry a probe connection in time.
var ErrNotReady = errors.New("tunnel not ready")

// GenerateKey returns a random 256-bit key in hex.
func GenerateKey() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// BinaryPath is the path of the named smuxtun binary in bin.
func BinaryPath(bin, name string) string {
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	return filepath.Join(bin, name)
}

// FreePort returns a port of 127.0.0.1 that is free for network ("tcp" or
// "udp") at the time of the call.
func FreePort(network string) (int, error) {
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free UDP port: %w", err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free TCP port: %w", err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
}

func (o Options) serverNetwork() string {
	if o.Transport == "tcp" {
		return "tcp"
	}
	return "udp"
}

// StartTunnel starts the server and the client on free ports of 127.0.0.1 and
// waits until a connection through the client reaches the target. Both
// processes are stopped if it fails.
func StartTunnel(ctx context.Context, o Options) (*Tunnel, error) {
	if o.Key == "" {
		o.Key = GenerateKey()
	}
	var lastErr error
	// A port found free can be taken by someone else before the server binds it;
	// that shows as an early exit, and another pair of ports is tried.
	for attempt := 0; attempt < 3; attempt++ {
		sport, err := FreePort(o.serverNetwork())
		if err != nil {
			return nil, err
		}
		cport, err := FreePort("tcp")
		if err != nil {
			return nil, err
		}
		t := &Tunnel{
			Options:    o,
			ServerAddr: fmt.Sprintf("127.0.0.1:%d", sport),
			ClientAddr: fmt.Sprintf("127.0.0.1:%d", cport),
		}
		if err := t.StartServer(); err != nil {
			return nil, err
		}
		if err := t.StartClient(); err != nil {
			t.Kill()
			return nil, err
		}
		err = t.WaitReady(ctx, 15*time.Second)
		if err == nil {
			return t, nil
		}
		lastErr = err
		t.Kill()
		if !t.Server.Exited() && !t.Client.Exited() {
			break // both ran: not a port race
		}
	}
	return nil, lastErr
}

func (t *Tunnel) common() []string {
	args := []string{"--key", t.Key}
	if t.Transport != "" {
		args = append(args, "--transport", t.Transport)
	}
	if t.NoComp {
		args = append(args, "--nocomp")
	}
	return args
}

// StartServer starts smuxtun-server on t.ServerAddr (again, after a Kill or
// Stop of the previous one).
func (t *Tunnel) StartServer() error {
	args := append([]string{"--listen", t.ServerAddr, "--target", t.Target}, t.common()...)
	args = append(args, t.ServerArgs...)
	p, err := StartProc("smuxtun-server", BinaryPath(t.Bin, ServerBinary), args...)
	if err != nil {
		return err
	}
	t.Server = p
	return nil
}

// StartClient starts smuxtun-client on t.ClientAddr.
func (t *Tunnel) StartClient() error {
	args := append([]string{"--localaddr", t.ClientAddr, "--remoteaddr", t.ServerAddr}, t.common()...)
	args = append(args, t.ClientArgs...)
	p, err := StartProc("smuxtun-client", BinaryPath(t.Bin, ClientBinary), args...)
	if err != nil {
		return err
	}
	t.Client = p
	return nil
}

// WaitReady waits until a small download through the client succeeds, for at
// most timeout.
func (t *Tunnel) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if t.Server.Exited() || t.Client.Exited() {
			return fmt.Errorf("%w: a process exited\n%s\n%s", ErrNotReady, t.Server.Describe(), t.Client.Describe())
		}
		last = t.Probe(ctx, 2*time.Second)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w after %s: %v\n%s\n%s", ErrNotReady, timeout, last, t.Server.Describe(), t.Client.Describe())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Probe downloads a few bytes from the target through the tunnel.
func (t *Tunnel) Probe(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := Dial(ctx, t.ClientAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	return Download(c, 1024, nil)
}

// Stop sends SIGTERM to the client, then to the server, and waits up to timeout
// for each to exit. It returns the first error, nil if both exited with status 0.
func (t *Tunnel) Stop(timeout time.Duration) error {
	var errs []error
	for _, p := range []*Proc{t.Client, t.Server} {
		if p != nil {
			errs = append(errs, p.Stop(timeout))
		}
	}
	return errors.Join(errs...)
}

// Kill kills both processes.
func (t *Tunnel) Kill() {
	for _, p := range []*Proc{t.Client, t.Server} {
		if p != nil {
			p.Kill()
		}
	}
}

package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/smuxtun/smuxtun/config"
	kcp "github.com/xtaci/kcp-go/v5"
	"github.com/xtaci/tcpraw"
)

// kcptun's --tcp, as kcptun wires it: the client's KCP packets travel as the
// payload of TCP segments that github.com/xtaci/tcpraw writes and captures
// through raw sockets, after a real TCP handshake with the server's port, so
// that networks which throttle or drop UDP see a TCP connection. The KCP
// packets inside are byte for byte the ones UDP would carry (cipher, FEC and
// all), so --conn, port ranges and FEC work as they do over UDP. The server
// accepts these on each port besides UDP, as kcptun's does, so clients with
// and without --tcp share it.
//
// tcpraw also adds an iptables rule that drops the kernel's own packets of
// the hijacked connection (it sets their TTL to 1 to mark them), and removes
// it when the connection closes.

// Errors for --tcp.
var (
	// ErrRawTCPPrivilege is returned for --tcp when the process may not
	// open raw sockets.
	ErrRawTCPPrivilege = errors.New("--tcp needs root or the CAP_NET_RAW capability (it sends and captures TCP packets through raw sockets)")
	// ErrRawTCPPlatform is returned for --tcp on a system other than Linux.
	ErrRawTCPPlatform = errors.New("--tcp (KCP inside raw TCP packets) works on Linux only; leave it out to use UDP")
)

// CheckPrivileges fails with ErrRawTCPPrivilege or ErrRawTCPPlatform (with
// how to get the privilege) if c asks for --tcp and this process cannot open
// raw sockets. NewClient and NewServer check it too; a program calls it first
// to refuse before anything else is said.
func CheckPrivileges(c config.Common) error {
	if !c.TCP {
		return nil
	}
	return checkRawTCP()
}

// dialRaw opens a KCP session to addr (an ip:port) inside tcpraw's TCP
// emulation, as kcptun's client does: a random conversation id and a
// session that owns the connection.
func (t *kcpTransport) dialRaw(ctx context.Context, addr string) (*kcp.UDPSession, error) {
	// kcptun hands kcp-go the server as a *net.UDPAddr; kcp-go v5.6.72
	// then drops every packet whose source is not one, and tcpraw reports
	// *net.TCPAddr sources. The same ip:port as a TCP address passes, and
	// tcpraw only reads its string.
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	// tcpraw.Dial completes a TCP handshake and takes no context; do not
	// let shutdown wait for it.
	type dialed struct {
		c   *tcpraw.TCPConn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := tcpraw.Dial("tcp", addr)
		ch <- dialed{c, err}
	}()
	var conn *tcpraw.TCPConn
	select {
	case d := <-ch:
		if d.err != nil {
			return nil, d.err
		}
		conn = d.c
	case <-ctx.Done():
		go func() {
			if d := <-ch; d.err == nil {
				d.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		conn.Close()
		return nil, err
	}
	s, err := kcp.NewConn4(binary.LittleEndian.Uint32(id[:]), ta, t.block, t.dataShard, t.parityShard, true, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// listenRaw serves KCP on addr twice, as kcptun's --tcp server does: inside
// tcpraw's TCP emulation on the TCP port, and over UDP on the same port
// number.
func (t *kcpTransport) listenRaw(addr string) (net.Listener, error) {
	conn, err := tcpraw.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp (raw) %s: %w", addr, err)
	}
	t.rawSockOpts(conn, addr)
	raw, err := t.serve(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("listen tcp (raw) %s: %w", addr, err)
	}
	host, _, _ := net.SplitHostPort(addr)
	port := conn.LocalAddr().(*net.TCPAddr).Port // the chosen one for port 0
	udp, err := t.listenUDP(net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		raw.Close()
		return nil, err
	}
	return newDualListener(raw, udp), nil
}

// rawSockOpts applies --dscp and --sockbuf to tcpraw's raw sockets, which
// the server's sessions share. (tcpraw's stand-in for other systems has no
// SetDSCP; it never gets this far.)
func (t *kcpTransport) rawSockOpts(conn *tcpraw.TCPConn, addr string) {
	if d, ok := any(conn).(interface{ SetDSCP(int) error }); ok && t.dscp != 0 {
		if err := d.SetDSCP(t.dscp); err != nil {
			t.log.Warn("cannot set dscp", "listen", addr, "dscp", t.dscp, "err", err)
		}
	}
	if t.sockBuf > 0 {
		if err := conn.SetReadBuffer(t.sockBuf); err != nil {
			t.log.Warn("cannot set socket read buffer", "listen", addr, "sockbuf", t.sockBuf, "err", err)
		}
		if err := conn.SetWriteBuffer(t.sockBuf); err != nil {
			t.log.Warn("cannot set socket write buffer", "listen", addr, "sockbuf", t.sockBuf, "err", err)
		}
	}
}

// dualListener accepts the sessions of two listeners of one port: --tcp's
// raw TCP and UDP. Addr is the raw TCP one.
type dualListener struct {
	ls    [2]net.Listener
	conns chan net.Conn
	errs  chan error
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func newDualListener(raw, udp net.Listener) *dualListener {
	d := &dualListener{
		ls:    [2]net.Listener{raw, udp},
		conns: make(chan net.Conn),
		errs:  make(chan error, 2),
		done:  make(chan struct{}),
	}
	for _, l := range d.ls {
		d.wg.Add(1)
		go d.accept(l)
	}
	return d
}

// accept hands l's sessions to Accept until l fails or d closes.
func (d *dualListener) accept(l net.Listener) {
	defer d.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			d.errs <- err // room for both listeners' last error
			return
		}
		select {
		case d.conns <- c:
		case <-d.done:
			c.Close()
			return
		}
	}
}

func (d *dualListener) Accept() (net.Conn, error) {
	select {
	case <-d.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-d.conns:
		return c, nil
	case err := <-d.errs:
		// One half failed: close the other too, so that the server stops
		// or retries on this port as a whole.
		d.Close()
		return nil, err
	case <-d.done:
		return nil, net.ErrClosed
	}
}

// Close closes both listeners and waits for their accepting goroutines.
func (d *dualListener) Close() error {
	err := net.ErrClosed
	d.once.Do(func() {
		close(d.done)
		var errs [2]error
		var wg sync.WaitGroup
		for i, l := range d.ls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = l.Close()
			}()
		}
		wg.Wait()
		d.wg.Wait()
		err = errors.Join(errs[0], errs[1])
	})
	return err
}

func (d *dualListener) Addr() net.Addr { return d.ls[0].Addr() }

package tunnel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/smuxtun/smuxtun/tunnel/socks"
)

// Client-chosen targets (see PROTOCOL.md). A smuxtun server announces that
// it takes them (mux.Config.AcceptMarked); a smuxtun client then opens a
// marked stream for each forward or SOCKS connection. A marked stream starts
// with a request, which the server answers with a status before anything
// else:
//
//	request: KIND(1) [ADDRESS]           ADDRESS in SOCKS form, absent for kindAssoc
//	status:  CODE(1) LEN(1) MESSAGE(LEN) CODE is a SOCKS5 reply code, 0 = success
//
// After a successful status a kindTCP stream carries the connection's bytes
// both ways. kindUDP and kindAssoc streams carry datagrams, each framed as
//
//	[ADDRESS] LENGTH(2, big endian) DATA(LENGTH)
//
// where ADDRESS (kindAssoc only) is the destination on the way to the
// server and the source on the way back.

// streamKind is what a marked stream asks for.
type streamKind byte

const (
	kindTCP   streamKind = 1 // a TCP connection to ADDRESS
	kindUDP   streamKind = 2 // datagrams to and from ADDRESS
	kindAssoc streamKind = 3 // datagrams, each to its own destination (SOCKS UDP ASSOCIATE)
)

func (k streamKind) String() string {
	switch k {
	case kindTCP:
		return "tcp"
	case kindUDP:
		return "udp"
	case kindAssoc:
		return "udp-associate"
	}
	return "kind " + strconv.Itoa(int(k))
}

// MaxDatagram is the largest UDP payload a flow carries: the most an IPv4
// UDP datagram can hold.
const MaxDatagram = 65507

// errBadRequest is wrapped by every malformed request or datagram frame
// that arrives from the network.
var errBadRequest = errors.New("malformed request")

// appendRequest encodes a marked stream's request.
func appendRequest(b []byte, kind streamKind, dst socks.Addr) ([]byte, error) {
	b = append(b, byte(kind))
	if kind == kindAssoc {
		return b, nil
	}
	return socks.AppendAddr(b, dst)
}

// readRequest reads a marked stream's request.
func readRequest(r io.Reader) (streamKind, socks.Addr, error) {
	var k [1]byte
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return 0, socks.Addr{}, fmt.Errorf("read request: %w", err)
	}
	kind := streamKind(k[0])
	switch kind {
	case kindAssoc:
		return kind, socks.Addr{}, nil
	case kindTCP, kindUDP:
	default:
		return 0, socks.Addr{}, fmt.Errorf("%w: unknown kind %d", errBadRequest, k[0])
	}
	dst, err := socks.ReadAddr(r)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, socks.Addr{}, fmt.Errorf("%w: truncated address", errBadRequest)
		}
		return 0, socks.Addr{}, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	if dst.Port == 0 {
		return 0, socks.Addr{}, fmt.Errorf("%w: port 0", errBadRequest)
	}
	return kind, dst, nil
}

// appendStatus encodes the server's answer; msg is cut to 255 bytes.
func appendStatus(b []byte, code socks.Reply, msg string) []byte {
	if len(msg) > 255 {
		msg = msg[:255]
	}
	b = append(b, byte(code), byte(len(msg)))
	return append(b, msg...)
}

// readStatus reads the server's answer.
func readStatus(r io.Reader) (socks.Reply, string, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, "", err
	}
	msg := make([]byte, h[1])
	if _, err := io.ReadFull(r, msg); err != nil {
		return 0, "", err
	}
	return socks.Reply(h[0]), string(msg), nil
}

// refusedError is what the client reports when the server answered a
// request with a failure.
type refusedError struct {
	code socks.Reply
	msg  string
}

func (e *refusedError) Error() string {
	if e.msg == "" {
		return "server: " + e.code.String()
	}
	return "server: " + e.msg
}

// datagramPool holds buffers for one datagram each, one byte more than the
// largest so that a longer one shows.
var datagramPool = sync.Pool{New: func() any { b := make([]byte, MaxDatagram+1); return &b }}

// datagramWriter frames datagrams onto a stream. It is safe for concurrent
// use; each datagram is written with one Write.
type datagramWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// write sends one datagram; src (kindAssoc only, else nil) goes in front.
func (d *datagramWriter) write(addr *socks.Addr, data []byte) error {
	if len(data) > MaxDatagram {
		return fmt.Errorf("datagram of %d bytes: the most is %d", len(data), MaxDatagram)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.buf[:0]
	if addr != nil {
		var err error
		if b, err = socks.AppendAddr(b, *addr); err != nil {
			return err
		}
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	b = append(b, data...)
	if cap(b) <= 4096 {
		d.buf = b // keep small buffers, let large ones go
	}
	_, err := d.w.Write(b)
	return err
}

// datagramReader reads framed datagrams from a stream. It keeps a small
// buffer and borrows a large one only for a datagram that needs it.
type datagramReader struct {
	r        *bufio.Reader
	withAddr bool
	small    []byte
	large    *[]byte
}

func newDatagramReader(r io.Reader, withAddr bool) *datagramReader {
	return &datagramReader{r: bufio.NewReaderSize(r, 2048), withAddr: withAddr, small: make([]byte, smallDatagram)}
}

// read returns the next datagram, valid until the next call, and, for
// kindAssoc, its address. io.EOF means the stream ended between two
// datagrams; a stream that ends inside one is errBadRequest.
func (d *datagramReader) read() (socks.Addr, []byte, error) {
	d.release()
	var addr socks.Addr
	if d.withAddr {
		if _, err := d.r.Peek(1); err != nil {
			return addr, nil, err
		}
		var err error
		if addr, err = socks.ReadAddr(d.r); err != nil {
			return addr, nil, truncated(err)
		}
	}
	var h [2]byte
	if _, err := io.ReadFull(d.r, h[:]); err != nil {
		if !d.withAddr && errors.Is(err, io.EOF) {
			return addr, nil, io.EOF
		}
		return addr, nil, truncated(err)
	}
	n := int(binary.BigEndian.Uint16(h[:]))
	if n > MaxDatagram {
		return addr, nil, fmt.Errorf("%w: datagram of %d bytes, the most is %d", errBadRequest, n, MaxDatagram)
	}
	buf := d.small
	if n > len(buf) {
		d.large = datagramPool.Get().(*[]byte)
		buf = *d.large
	}
	if _, err := io.ReadFull(d.r, buf[:n]); err != nil {
		return addr, nil, truncated(err)
	}
	return addr, buf[:n], nil
}

// release gives back a borrowed buffer; call it when done with the reader.
func (d *datagramReader) release() {
	if d.large != nil {
		datagramPool.Put(d.large)
		d.large = nil
	}
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: stream ended inside a datagram", errBadRequest)
	}
	if errors.Is(err, socks.ErrAddrType) || errors.Is(err, socks.ErrBadAddress) {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return err
}

// addrOf returns a socks.Addr for a target written host:port.
func addrOf(hostport string) (socks.Addr, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return socks.Addr{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return socks.Addr{}, fmt.Errorf("port %q", port)
	}
	return socks.Addr{Host: host, Port: uint16(p)}, nil
}

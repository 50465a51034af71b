package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/xtaci/qpp"
)

// kcptun's --QPP puts Quantum Permutation Pads between each mux stream and
// the connection it carries: above the mux, so frame headers and the snappy
// layer below see only permuted bytes. To interoperate we do exactly what
// kcptun does:
//
//   - the pads come from qpp.NewQPP with the passphrase as typed (--key,
//     not the PBKDF2 key of the packet cipher) and --QPPCount;
//   - every stream, in each direction, starts a fresh PRNG seeded with the
//     passphrase (qpp.CreatePRNG), so all streams and both directions use
//     the same sequence of pads from their first byte;
//   - each byte written is permuted before the mux frames it, each byte read
//     is restored after the mux hands it over.
//
// The pads carry no checksum: a peer with another key, count, or no QPP at
// all sees its streams open and move bytes that are garbled (see
// docs/TROUBLESHOOTING.md).

// qppLayer holds the pads and the seeded PRNG that every stream copies.
type qppLayer struct {
	pad *qpp.QuantumPermutationPad
	// start is the PRNG as qpp.CreatePRNG(key) returns it. Deriving it takes
	// two PBKDF2 runs (about 0.1 ms); kcptun pays that twice per stream, we
	// copy the result, which is the same state.
	start qpp.Rand
}

func newQPPLayer(key string, count int) *qppLayer {
	return &qppLayer{
		pad:   qpp.NewQPP([]byte(key), uint16(count)),
		start: *qpp.CreatePRNG([]byte(key)),
	}
}

// qppStream is what the layer wraps: a mux stream.
type qppStream interface {
	net.Conn
	io.WriterTo
	CloseWrite() error
}

// wrap returns st with the pads applied to every byte in both directions.
func (q *qppLayer) wrap(st qppStream) *qppConn {
	return &qppConn{qppStream: st, pad: q.pad, rrand: q.start, wrand: q.start}
}

// qppConn is a stream under QPP. Reads and writes each come from one
// goroutine at a time (the pipe's two directions), as each PRNG demands.
type qppConn struct {
	qppStream
	pad   *qpp.QuantumPermutationPad
	rrand qpp.Rand // restores what the peer sent
	wrand qpp.Rand // permutes what we send
}

// qppBufPool holds the buffers that Write permutes into, so the caller's
// bytes stay untouched (io.Writer's contract).
var qppBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

func (c *qppConn) Read(p []byte) (int, error) {
	n, err := c.qppStream.Read(p)
	c.pad.DecryptWithPRNG(p[:n], &c.rrand)
	return n, err
}

// WriteTo hands the stream's buffered data to w, restored in place: the
// mux frees each buffer once w has taken it, so nothing else sees it.
func (c *qppConn) WriteTo(w io.Writer) (int64, error) {
	return c.qppStream.WriteTo(qppRestorer{w: w, c: c})
}

type qppRestorer struct {
	w io.Writer
	c *qppConn
}

func (r qppRestorer) Write(p []byte) (int, error) {
	r.c.pad.DecryptWithPRNG(p, &r.c.rrand)
	return r.w.Write(p)
}

func (c *qppConn) Write(p []byte) (int, error) {
	bp := qppBufPool.Get().(*[]byte)
	defer qppBufPool.Put(bp)
	total := 0
	for len(p) > 0 {
		chunk := (*bp)[:copy(*bp, p)]
		c.pad.EncryptWithPRNG(chunk, &c.wrand)
		n, err := c.qppStream.Write(chunk)
		total += n
		if err != nil {
			return total, err
		}
		p = p[len(chunk):]
	}
	return total, nil
}

// qppHint adds a hint to the arguments of a stream that ended with err, if
// QPP is on and the target reset the connection. That is how a mismatch of
// the pads usually shows on the server, if at all: the target gets garbled
// bytes, rejects them and resets; nothing else in the tunnel can tell.
func (s *settings) qppHint(args []any, err error) []any {
	// A target that resets the connection shows as ECONNRESET, or as EPIPE
	// when the server was writing at that moment.
	if s.qpp == nil || !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		return args
	}
	return append(args, "hint", "if the target resets every connection, check that the client's --QPP, --QPPCount and --key match this server's: pads that differ garble every byte without any other error")
}

package mux

import (
	"math/bits"
	"sync"
)

// Receive buffers come from size-classed pools (powers of two from 512 bytes
// to 64 KiB) so that steady traffic allocates nothing.
const (
	minClassShift = 9
	maxClassShift = 16
	smallChunk    = 4096 // smallest chunk opened for small payloads, so later ones can be appended
)

var bufPools [maxClassShift - minClassShift + 1]sync.Pool

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// getBuf returns a buffer of at least n bytes (n <= 64 KiB).
func getBuf(n int) *[]byte {
	c := classOf(n)
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 1<<(c+minClassShift))
	return &b
}

func putBuf(p *[]byte) {
	c := classOf(cap(*p))
	if cap(*p) != 1<<(c+minClassShift) {
		return
	}
	*p = (*p)[:cap(*p)]
	bufPools[c].Put(p)
}

// chunk is a filled part [off, end) of a pooled buffer.
type chunk struct {
	buf      *[]byte
	off, end int
}

// chunkQueue is the FIFO of received, unread data of one stream.
type chunkQueue struct {
	q    []chunk
	head int
	size int // unread bytes
}

func (cq *chunkQueue) push(c chunk) {
	cq.q = append(cq.q, c)
	cq.size += c.end - c.off
}

// appendSmall copies p behind the last chunk if it has room, or into a new
// chunk otherwise.
func (cq *chunkQueue) appendSmall(p []byte) {
	if n := len(cq.q); n > cq.head {
		last := &cq.q[n-1]
		if len(*last.buf)-last.end >= len(p) {
			last.end += copy((*last.buf)[last.end:], p)
			cq.size += len(p)
			return
		}
	}
	b := getBuf(max(len(p), smallChunk))
	cq.push(chunk{buf: b, end: copy(*b, p)})
}

// read copies unread data into p and recycles emptied chunks.
func (cq *chunkQueue) read(p []byte) int {
	n := 0
	for n < len(p) && cq.head < len(cq.q) {
		c := &cq.q[cq.head]
		k := copy(p[n:], (*c.buf)[c.off:c.end])
		c.off += k
		n += k
		if c.off == c.end {
			cq.popFront()
		}
	}
	cq.size -= n
	return n
}

// front detaches the oldest chunk; the caller recycles it with putBuf.
func (cq *chunkQueue) front() (chunk, bool) {
	if cq.head == len(cq.q) {
		return chunk{}, false
	}
	c := cq.q[cq.head]
	cq.q[cq.head] = chunk{}
	cq.head++
	cq.size -= c.end - c.off
	cq.compact()
	return c, true
}

func (cq *chunkQueue) popFront() {
	putBuf(cq.q[cq.head].buf)
	cq.q[cq.head] = chunk{}
	cq.head++
	cq.compact()
}

func (cq *chunkQueue) compact() {
	if cq.head == len(cq.q) {
		cq.q = cq.q[:0]
		cq.head = 0
	}
}

// release recycles everything and returns how many unread bytes it dropped.
func (cq *chunkQueue) release() int {
	n := cq.size
	for cq.head < len(cq.q) {
		cq.popFront()
	}
	cq.q = nil
	cq.size = 0
	return n
}

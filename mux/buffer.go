package mux

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// Receive buffers come from size-classed pools (powers of two from 64 bytes
// to 64 KiB) so that steady traffic allocates nothing.
const (
	minClassShift = 6
	maxClassShift = 16
	// smallChunk is the largest chunk opened for small payloads. A chunk
	// opened for a small payload has room for as much again, so later small
	// payloads are appended, yet a lone byte pins 64 bytes, not 4 KiB.
	smallChunk = 4096
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

// slab is a read buffer of the session. Received payloads of a useful size
// stay where they were read and the stream's queue points into the slab; it
// returns to its pool when the reader and every such chunk are done with it.
type slab struct {
	b    []byte
	refs atomic.Int32
	live *atomic.Int32 // the session's count of slabs in use
}

var slabPools [3]sync.Pool // readBufferMin, 4x, 16x

func slabClass(size int) int {
	switch {
	case size <= readBufferMin:
		return 0
	case size <= 4*readBufferMin:
		return 1
	}
	return 2
}

func newSlab(size int, live *atomic.Int32) *slab {
	c := slabClass(size)
	sl, ok := slabPools[c].Get().(*slab)
	if !ok {
		sl = &slab{b: make([]byte, readBufferMin<<(2*c))}
	}
	sl.live = live
	sl.refs.Store(1)
	live.Add(1)
	return sl
}

func (sl *slab) release() {
	if sl.refs.Add(-1) == 0 {
		sl.live.Add(-1)
		sl.live = nil
		slabPools[slabClass(len(sl.b))].Put(sl)
	}
}

// chunk is a filled part [off, end) of b, which is either a pooled buffer
// (pb) or part of a slab (sl).
type chunk struct {
	b        []byte
	off, end int
	pb       *[]byte
	sl       *slab
}

func (c *chunk) data() []byte { return c.b[c.off:c.end] }

// free recycles the chunk's storage.
func (c *chunk) free() {
	if c.pb != nil {
		putBuf(c.pb)
	} else if c.sl != nil {
		c.sl.release()
	}
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
		if last.pb != nil && len(last.b)-last.end >= len(p) {
			last.end += copy(last.b[last.end:], p)
			cq.size += len(p)
			return
		}
	}
	b := getBuf(max(len(p), min(smallChunk, 2*(cq.size+len(p)))))
	cq.push(chunk{b: *b, pb: b, end: copy(*b, p)})
}

// pushSlab queues b[off:end] of sl, taking a reference on it.
func (cq *chunkQueue) pushSlab(sl *slab, off, end int) {
	sl.refs.Add(1)
	cq.push(chunk{b: sl.b, off: off, end: end, sl: sl})
}

// read copies unread data into p and recycles emptied chunks.
func (cq *chunkQueue) read(p []byte) int {
	n := 0
	for n < len(p) && cq.head < len(cq.q) {
		c := &cq.q[cq.head]
		k := copy(p[n:], c.data())
		c.off += k
		n += k
		if c.off == c.end {
			cq.popFront()
		}
	}
	cq.size -= n
	return n
}

// front detaches the oldest chunk; the caller recycles it with free.
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
	cq.q[cq.head].free()
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

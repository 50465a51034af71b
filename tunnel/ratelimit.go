package tunnel

import (
	"net"
	"sync"
	"time"
)

// rateBurst is how far a limited writer may run ahead of its rate, so that
// one mux write of a few frames goes out in one piece.
const rateBurst = 64 << 10

// rateLimiter paces writes to an average number of bytes per second. A
// write larger than what is saved up goes out at once and leaves a debt
// that later writes wait off, which keeps the average exact without
// splitting writes.
type rateLimiter struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	tokens float64 // may go negative: a debt
	last   time.Time
}

func newRateLimiter(bytesPerSecond int) *rateLimiter {
	return &rateLimiter{rate: float64(bytesPerSecond), tokens: rateBurst, last: time.Now()}
}

// wait blocks until n bytes may be sent.
func (l *rateLimiter) wait(n int) {
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(l.tokens+now.Sub(l.last).Seconds()*l.rate, rateBurst)
	l.last = now
	var sleep time.Duration
	if l.tokens < 0 {
		sleep = time.Duration(-l.tokens / l.rate * float64(time.Second))
	}
	l.tokens -= float64(n)
	l.mu.Unlock()
	if sleep > 0 {
		time.Sleep(sleep)
	}
}

// rateConn limits the bytes written to a connection (--ratelimit on the TCP
// transport, where kcp-go's own limiter is not there to do it).
type rateConn struct {
	net.Conn
	l *rateLimiter
}

func (c *rateConn) Write(p []byte) (int, error) {
	c.l.wait(len(p))
	return c.Conn.Write(p)
}

// CloseWrite keeps half-close working through the wrapper.
func (c *rateConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Package netem emulates an internet path between a UDP client and server on
// one machine: a relay that forwards datagrams through a rate-limited,
// time-bounded queue, a propagation delay and seeded random loss, each set
// per direction. It exists for tests and for `make bench-wan`.
package netem

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Config describes a relay.
type Config struct {
	// Listen is the UDP address clients send to, e.g. "127.0.0.1:0".
	Listen string
	// Upstream is the UDP address of the server.
	Upstream string
	// Up applies to client→server packets, Down to server→client ones.
	Up, Down Link
	// Seed makes the loss pattern repeat from run to run.
	Seed uint64
	// MaxFlows bounds the client addresses served at once (one upstream
	// socket each); packets from further clients are ignored. 0 means 64.
	MaxFlows int
	// IdleTimeout ends a flow that carried nothing for this long. 0 means
	// two minutes.
	IdleTimeout time.Duration
}

// ErrClosed is returned by operations on a closed relay.
var ErrClosed = errors.New("netem: relay closed")

// Relay is a running link emulator. It is safe for concurrent use.
type Relay struct {
	cfg      Config
	conn     *net.UDPConn
	upstream *net.UDPAddr
	up, down *link

	mu     sync.Mutex
	flows  map[string]*flow
	extras []*net.UDPConn // entrances added by AddEntrance

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// flow is one client address and the upstream socket that speaks for it.
type flow struct {
	client *net.UDPAddr
	conn   *net.UDPConn
	front  *net.UDPConn // the relay socket the client sends to
	last   time.Time    // guarded by Relay.mu
}

// socketBuffer is asked of the kernel for every relay socket, so bursts at
// the emulated rates are queued by the emulator, not dropped by the kernel.
const socketBuffer = 8 << 20

// Start listens on cfg.Listen and relays to cfg.Upstream until Close.
func Start(cfg Config) (*Relay, error) {
	if cfg.MaxFlows == 0 {
		cfg.MaxFlows = 64
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	for _, l := range []Link{cfg.Up, cfg.Down} {
		if l.Rate < 0 || l.QueueDelay < 0 || l.Delay < 0 || l.Loss < 0 || l.Loss >= 1 {
			return nil, fmt.Errorf("netem: invalid link %+v", l)
		}
	}
	if cfg.MaxFlows < 0 || cfg.IdleTimeout < 0 {
		return nil, fmt.Errorf("netem: invalid MaxFlows %d or IdleTimeout %v", cfg.MaxFlows, cfg.IdleTimeout)
	}
	up, err := net.ResolveUDPAddr("udp", cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("netem: upstream %s: %w", cfg.Upstream, err)
	}
	la, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("netem: listen %s: %w", cfg.Listen, err)
	}
	conn, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, fmt.Errorf("netem: listen %s: %w", cfg.Listen, err)
	}
	conn.SetReadBuffer(socketBuffer)
	conn.SetWriteBuffer(socketBuffer)
	r := &Relay{
		cfg:      cfg,
		conn:     conn,
		upstream: up,
		up:       newLink(cfg.Up, cfg.Seed),
		down:     newLink(cfg.Down, cfg.Seed+1),
		flows:    make(map[string]*flow),
		done:     make(chan struct{}),
	}
	r.wg.Add(4)
	go func() { defer r.wg.Done(); r.up.run(r.done) }()
	go func() { defer r.wg.Done(); r.down.run(r.done) }()
	go func() { defer r.wg.Done(); r.readClients(conn, up) }()
	go func() { defer r.wg.Done(); r.expire() }()
	return r, nil
}

// Addr is the address clients send to.
func (r *Relay) Addr() *net.UDPAddr { return r.conn.LocalAddr().(*net.UDPAddr) }

// Up returns the client→server counters.
func (r *Relay) Up() Stats { return r.up.stats.snapshot() }

// Down returns the server→client counters.
func (r *Relay) Down() Stats { return r.down.stats.snapshot() }

// Flows is the number of client addresses currently served.
func (r *Relay) Flows() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.flows)
}

// Close stops the relay and waits for its goroutines; packets in flight are
// dropped. It is safe to call more than once.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		close(r.done)
		r.conn.Close()
		r.mu.Lock()
		for _, c := range r.extras {
			c.Close()
		}
		for k, f := range r.flows {
			f.conn.Close()
			delete(r.flows, k)
		}
		r.mu.Unlock()
	})
	r.wg.Wait()
	return nil
}

// AddEntrance opens another address for clients, relaying to upstream
// over the same two links: sessions to different servers then share one
// emulated bottleneck.
func (r *Relay) AddEntrance(upstream string) (*net.UDPAddr, error) {
	up, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		return nil, fmt.Errorf("netem: upstream %s: %w", upstream, err)
	}
	la := *r.Addr()
	la.Port = 0
	conn, err := net.ListenUDP("udp", &la)
	if err != nil {
		return nil, fmt.Errorf("netem: listen: %w", err)
	}
	conn.SetReadBuffer(socketBuffer)
	conn.SetWriteBuffer(socketBuffer)
	r.mu.Lock()
	select {
	case <-r.done:
		r.mu.Unlock()
		conn.Close()
		return nil, ErrClosed
	default:
	}
	r.extras = append(r.extras, conn)
	r.wg.Add(1)
	r.mu.Unlock()
	go func() { defer r.wg.Done(); r.readClients(conn, up) }()
	return conn.LocalAddr().(*net.UDPAddr), nil
}

func (r *Relay) readClients(front *net.UDPConn, upstream *net.UDPAddr) {
	buf := make([]byte, maxDatagram)
	for {
		n, addr, err := front.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		f := r.flowFor(front, upstream, addr)
		if f == nil {
			continue
		}
		r.up.enqueue(&packet{buf: copyBuf(buf[:n]), n: n, conn: f.conn})
	}
}

// flowFor returns the flow of addr, starting it if there is room.
func (r *Relay) flowFor(front *net.UDPConn, upstream, addr *net.UDPAddr) *flow {
	key := front.LocalAddr().String() + ">" + addr.String()
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.flows[key]; ok {
		f.last = now
		return f
	}
	select {
	case <-r.done:
		return nil
	default:
	}
	if len(r.flows) >= r.cfg.MaxFlows {
		return nil
	}
	c, err := net.DialUDP("udp", nil, upstream)
	if err != nil {
		return nil
	}
	c.SetReadBuffer(socketBuffer)
	c.SetWriteBuffer(socketBuffer)
	f := &flow{client: addr, conn: c, front: front, last: now}
	r.flows[key] = f
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.readUpstream(f) }()
	return f
}

// readUpstream carries the server's replies for one flow until its socket
// closes.
func (r *Relay) readUpstream(f *flow) {
	buf := make([]byte, maxDatagram)
	for {
		n, err := f.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A refused port (ICMP) shows up here; the server may come back.
			continue
		}
		r.mu.Lock()
		f.last = time.Now()
		r.mu.Unlock()
		r.down.enqueue(&packet{buf: copyBuf(buf[:n]), n: n, conn: f.front, to: f.client})
	}
}

// expire closes flows idle for longer than IdleTimeout.
func (r *Relay) expire() {
	period := r.cfg.IdleTimeout / 4
	if period < 10*time.Millisecond {
		period = 10 * time.Millisecond
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case now := <-t.C:
			r.mu.Lock()
			for k, f := range r.flows {
				if now.Sub(f.last) > r.cfg.IdleTimeout {
					f.conn.Close()
					delete(r.flows, k)
				}
			}
			r.mu.Unlock()
		}
	}
}

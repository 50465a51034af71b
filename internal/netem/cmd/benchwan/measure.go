package main

import (
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smuxtun/smuxtun/internal/netem"
)

// result is what one run measured.
type result struct {
	DownMbps, UpMbps float64 // goodput, Mbit/s
	RTT50, RTT90     float64 // 100-byte request round trip during the download, ms
	RTTSamples       int
	RTTLost          int // requests that got no answer within their deadline
	// What the relay did over the whole run (download and upload phases).
	Up, Down netem.Stats
}

func dialService(addr string, svc byte) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{svc}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// waitReady dials through the tunnel until an echo comes back.
func waitReady(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		c, err := dialService(addr, svcEcho)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := []byte("ping")
			if _, err = c.Write(buf); err == nil {
				_, err = io.ReadFull(c, buf)
			}
			c.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("tunnel at %s not ready after %v: %v", addr, timeout, last)
}

// counter returns bytes moved so far.
type counter func() uint64

// goodput reads cnt at warm-up and at warm-up+measure, in Mbit/s.
func goodput(cnt counter, start time.Time, warmup, measure time.Duration) float64 {
	time.Sleep(time.Until(start.Add(warmup)))
	a := cnt()
	t0 := time.Now()
	time.Sleep(time.Until(start.Add(warmup + measure)))
	b := cnt()
	return float64(b-a) * 8 / time.Since(t0).Seconds() / 1e6
}

// download measures one connection's download goodput, and the round trip
// of 100-byte requests on a second connection meanwhile.
func download(addr string, warmup, measure time.Duration) (res result, err error) {
	c, err := dialService(addr, svcDownload)
	if err != nil {
		return res, err
	}
	defer c.Close()
	var got atomic.Uint64
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			got.Add(uint64(n))
			if err != nil {
				return
			}
		}
	}()
	start := time.Now()
	var (
		wg   sync.WaitGroup
		rtts []float64
		lost int
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rtts, lost = probe(addr, start.Add(warmup), start.Add(warmup+measure))
	}()
	res.DownMbps = goodput(got.Load, start, warmup, measure)
	wg.Wait()
	res.RTTSamples, res.RTTLost = len(rtts), lost
	if len(rtts) > 0 {
		res.RTT50, res.RTT90 = quantile(rtts, 0.5), quantile(rtts, 0.9)
	}
	return res, nil
}

// probe sends 100-byte requests one after another (10 per second at most)
// from..until and returns their round trips in ms.
func probe(addr string, from, until time.Time) (rtts []float64, lost int) {
	time.Sleep(time.Until(from))
	var c net.Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	req := make([]byte, 100)
	resp := make([]byte, 100)
	for time.Now().Before(until) {
		if c == nil {
			var err error
			if c, err = dialService(addr, svcEcho); err != nil {
				lost++
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		t0 := time.Now()
		c.SetDeadline(t0.Add(5 * time.Second))
		_, err := c.Write(req)
		if err == nil {
			_, err = io.ReadFull(c, resp)
		}
		if err != nil {
			lost++
			c.Close()
			c = nil
			continue
		}
		rtts = append(rtts, float64(time.Since(t0))/float64(time.Millisecond))
		time.Sleep(time.Until(t0.Add(100 * time.Millisecond)))
	}
	return rtts, lost
}

// upload measures one connection's upload goodput as the target counts it.
func upload(addr string, t *target, warmup, measure time.Duration) (float64, error) {
	c, err := dialService(addr, svcUpload)
	if err != nil {
		return 0, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := c.Write(t.payload); err != nil {
				return
			}
		}
	}()
	mbps := goodput(t.uploaded.Load, time.Now(), warmup, measure)
	c.Close()
	<-done
	return mbps, nil
}

func quantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

package socks

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// FuzzAccept feeds arbitrary bytes to Accept as the client, with and without
// credentials and HTTP: Accept must return (the client's end closes after
// its bytes) well within its deadline, without a panic, and a request it
// returns must be well formed.
func FuzzAccept(f *testing.F) {
	userPassOK := userPass("alice", "s3cret")
	seeds := [][]byte{
		cat(greetNoAuth, request(1, dstIPv4("127.0.0.1", 80))),
		cat(greetNoAuth, request(1, dstIPv6("2001:db8::1", 443))),
		cat(greetNoAuth, request(1, dstName("example.com", 443))),
		cat(greetNoAuth, request(3, dstIPv4("0.0.0.0", 0))),
		cat(greetNoAuth, request(2, dstIPv4("127.0.0.1", 80))),
		cat([]byte{5, 2, 0, 2}, userPassOK, request(1, dstName("example.com", 80))),
		cat(greetNoAuth, request(1, []byte{3, 0, 0, 80})),
		cat(greetNoAuth, request(1, []byte{9, 1, 2})),
		{5, 0},
		{4, 1, 0, 80, 127, 0, 0, 1, 0},
		[]byte("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
		[]byte("CONNECT [::1]:22 HTTP/1.0\nProxy-Authorization: " + basic("alice", "s3cret") + "\n\nearly"),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		[]byte("CONNECT a:1 HTTP/1.1\r\nX: " + strings.Repeat("y", MaxHTTPHeader)),
	}
	for _, s := range seeds {
		for mode := range uint8(4) {
			f.Add(s, mode)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		cfg := Config{Timeout: 2 * time.Second, DisableHTTP: mode&2 != 0}
		if mode&1 != 0 {
			cfg.Username, cfg.Password = "alice", "s3cret"
		}
		srv, cli := net.Pipe()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(io.Discard, cli)
		}()
		go func() {
			defer wg.Done()
			_, _ = cli.Write(in)
			cli.Close()
		}()
		start := time.Now()
		req, err := Accept(srv, cfg)
		if el := time.Since(start); el > cfg.Timeout+lingerMax {
			t.Errorf("Accept took %v (timeout %v)", el, cfg.Timeout)
		}
		if err == nil {
			checkRequest(t, req, cfg)
			_ = req.Reply(ReplySucceeded, nil)
		} else if req != nil {
			t.Errorf("Accept returned a request and %v", err)
		}
		srv.Close()
		wg.Wait()
	})
}

// checkRequest fails the test if req is not one Accept may return.
func checkRequest(t *testing.T, req *Request, cfg Config) {
	t.Helper()
	switch {
	case req.Proto != ProtoSOCKS5 && req.Proto != ProtoHTTP:
		t.Errorf("proto %v", req.Proto)
	case req.Cmd != CmdConnect && req.Cmd != CmdUDPAssociate:
		t.Errorf("command %v", req.Cmd)
	case req.Proto == ProtoHTTP && (req.Cmd != CmdConnect || cfg.DisableHTTP):
		t.Errorf("HTTP request %v with DisableHTTP %v", req.Cmd, cfg.DisableHTTP)
	case req.Cmd == CmdConnect && req.Dst.Port == 0:
		t.Errorf("CONNECT to port 0")
	case cfg.Username != "" && req.User != cfg.Username:
		t.Errorf("user %q authenticated", req.User)
	}
	if ip, err := netip.ParseAddr(req.Dst.Host); err == nil {
		if ip.String() != req.Dst.Host {
			t.Errorf("IP host %q is not canonical", req.Dst.Host)
		}
	} else if _, err := hostFromName([]byte(req.Dst.Host)); err != nil {
		t.Errorf("host %q: %v", req.Dst.Host, err)
	}
	if _, err := AppendUDPDatagram(nil, req.Dst, nil); err != nil {
		t.Errorf("destination %+v does not encode: %v", req.Dst, err)
	}
}

// FuzzUDPHeader: a datagram that parses encodes back to one that parses
// to the same destination and data; nothing panics.
func FuzzUDPHeader(f *testing.F) {
	for _, s := range [][]byte{
		cat([]byte{0, 0, 0}, dstIPv4("192.0.2.1", 53), []byte("query")),
		cat([]byte{0, 0, 0}, dstIPv6("2001:db8::1", 443), []byte("quic")),
		cat([]byte{0, 0, 0}, dstName("dns.example", 53)),
		cat([]byte{0, 0, 0}, dstName("192.0.2.1", 53), []byte("ip as a name")),
		cat([]byte{0, 0, 1}, dstIPv4("192.0.2.1", 53)),
		{0, 0, 0, 3, 0, 0, 53},
		{0, 0, 0, 7},
		{0, 0},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		dst, data, err := ParseUDPDatagram(in)
		if err != nil {
			return
		}
		if len(data) > len(in) || len(data) > 0 && &data[len(data)-1] != &in[len(in)-1] {
			t.Fatalf("data is not the tail of the datagram")
		}
		out, err := AppendUDPDatagram(nil, dst, data)
		if err != nil {
			t.Fatalf("parsed %+v does not encode: %v", dst, err)
		}
		dst2, data2, err := ParseUDPDatagram(out)
		if err != nil || dst2 != dst || !bytes.Equal(data2, data) {
			t.Fatalf("round trip: %+v %q %v, want %+v %q", dst2, data2, err, dst, data)
		}
	})
}

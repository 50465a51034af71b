// Package tunnel is the body of smuxtun-client and smuxtun-server: the
// transports, the client's session pool, the server's accept loop, the pipe
// between two connections and the statistics.
//
// # Wire
//
// Each transport connection carries one mux session (package mux, the smux
// protocol). Unless nocomp is set, the session's bytes travel in the snappy
// framing format, flushed after every mux write. The transport is either
// kcp-go (FEC, packet cipher from package crypt, stream mode, no write
// delay, the mode's nodelay profile), which is kcptun's wire format, or one
// TCP connection (transport "tcp", smuxtun's own: no FEC, and instead of
// kcptun's packet cipher an AES-256-GCM stream from package crypt, keyed
// from the key whichever cipher is named; crypt none or null leave it in
// clear, with a warning). Both ends must agree on the transport, key,
// crypt, nocomp and smuxver. datashard and parityshard may differ: kcp-go
// takes packets with or without FEC whatever its own shards, and tunes its
// decoder to the peer's.
//
// With kcptun's --tcp (Linux only, root or CAP_NET_RAW), kcp-go's packets
// travel inside TCP segments that tcpraw writes and captures through raw
// sockets (transport_rawtcp.go); a --tcp server also keeps UDP on each port.
//
// With qpp (kcptun's Quantum Permutation Pads, qpp.go), each stream's bytes
// are permuted above the mux, before framing and compression; both ends must
// then also agree on qpp-count, and the pads are built from the key.
//
// ratelimit caps the bytes per second each transport session sends: kcp-go's
// own limiter on KCP (it counts UDP bytes, FEC parity included), a pacing
// writer on TCP. dscp marks the packets on both transports; sockbuf sizes
// the KCP socket and leaves TCP to the kernel's autotuning.
//
// # Client
//
// The client keeps conn transport sessions and hands new connections to
// them round-robin. Each session has a keeper goroutine that dials it (to a
// random port of a host:min-max range), watches it and replaces it:
//
//   - when it dies (the mux closes itself on a transport error or when the
//     peer's keepalives stop): redial after a back-off that starts at 100 ms
//     and doubles up to 5 s, with jitter;
//   - after autoexpire seconds: the session takes no new streams, its streams
//     finish on it, and it is closed when the last one ends or scavengettl
//     seconds after it expired, whichever comes first;
//   - when it fails a liveness probe: KCP has no reset, so a client never
//     learns that its server restarted. If a session receives nothing at all
//     for 3 s after a stream was opened on it, it is retired like an expired
//     session (but without scavengettl: its streams keep running until they
//     end or its keepalive times out) and a fresh session is dialled. A false
//     alarm (a healthy but slow target) costs one extra session and nothing
//     else; a real one has new connections working again within seconds.
//
// # Server
//
// The server listens on every port of its listen range, accepts transport
// sessions, accepts their streams and connects each stream to the target, a
// TCP host:port or a unix socket path (anything that does not split as
// host:port, as in kcptun).
//
// # Pipe and closewait
//
// Each stream is piped to its connection in both directions. The end of
// one direction is passed on as a half-close (CloseWrite on TCP, unix and mux
// streams), so a client that sends a request and shuts down its sending side
// still receives the whole reply; the pair is closed when both directions
// are done, or at once when either fails. closewait (seconds) bounds how long
// the surviving direction may stay idle after the other ended: a reply that
// keeps moving is never cut, a half-open pair that moves nothing for one to
// two closewait periods is closed. 0 means no bound. (kcptun closes the pair
// closewait seconds after the first direction ends, busy or not.)
//
// # Lifecycle
//
// NewClient and NewServer validate the configuration and bind their
// listeners, so that a bad address or a port in use is reported before
// anything runs. Serve runs until its context is cancelled, then closes the
// listeners and sessions, waits for every goroutine it started, and returns.
//
// # Logs and statistics
//
// Logs go through log/slog with the session and stream ids as attributes;
// per-stream events are logged at Info, or at Debug when quiet is set.
// DumpStats logs the tunnel's counters and kcp-go's SNMP counters as one
// record; RunSnmpLogger appends kcp-go's counters as CSV, in kcptun's
// columns, to a file whose name is a time layout. A session whose peer is
// gone is closed within seconds, and its streams end with an error
// (liveness.go). A peer whose key or crypt differs is named by the server
// (transport_kcp_recv.go), one whose nocomp or smuxver differs by both ends
// (diagnose.go), at Warn, at most once a minute per peer host.
// ListenMetrics serves the same counters over HTTP in the Prometheus text
// format (metrics.go; docs/METRICS.md lists them).
package tunnel

// Package config holds the settings of smuxtun-client and smuxtun-server:
// kcptun's defaults, the KCP mode profiles, loading of kcptun JSON files and
// validation of every field. It uses the standard library only, so any
// front end (flags, files, tests) can build and check a configuration.
//
// JSON keys and flag names are kcptun's, so an existing kcptun configuration
// file loads unchanged.
package config

// Common holds the settings both ends share. Key, Crypt, NoComp, SmuxVer,
// DataShard, ParityShard, QPP and QPPCount must match on the client and the
// server.
type Common struct {
	Key    string `json:"key"`
	Crypt  string `json:"crypt"`
	Mode   string `json:"mode"`
	MTU    int    `json:"mtu"`
	SndWnd int    `json:"sndwnd"`
	RcvWnd int    `json:"rcvwnd"`
	// NoPacing (smuxtun) sends as kcptun does: fixed windows, no pacing.
	NoPacing bool `json:"nopacing"`
	// SndWndSet and RcvWndSet record that the window came from a flag or
	// the file rather than the defaults: a window the user set caps the
	// automatic one.
	SndWndSet    bool   `json:"-"`
	RcvWndSet    bool   `json:"-"`
	DataShard    int    `json:"datashard"`
	ParityShard  int    `json:"parityshard"`
	DSCP         int    `json:"dscp"`
	NoComp       bool   `json:"nocomp"`
	AckNodelay   bool   `json:"acknodelay"`
	NoDelay      int    `json:"nodelay"`
	Interval     int    `json:"interval"` // milliseconds
	Resend       int    `json:"resend"`
	NoCongestion int    `json:"nc"`
	RateLimit    int    `json:"ratelimit"` // outgoing bytes per second per KCP session, 0 = unlimited
	SockBuf      int    `json:"sockbuf"`   // bytes
	SmuxVer      int    `json:"smuxver"`
	SmuxBuf      int    `json:"smuxbuf"`    // bytes, session receive buffer
	FrameSize    int    `json:"framesize"`  // bytes
	StreamBuf    int    `json:"streambuf"`  // bytes, per-stream window (smux v2)
	MaxStreams   int    `json:"maxstreams"` // smuxtun: streams the peer may open per session, 0 = no cap
	KeepAlive    int    `json:"keepalive"`  // seconds
	CloseWait    int    `json:"closewait"`  // seconds
	SnmpLog      string `json:"snmplog"`
	SnmpPeriod   int    `json:"snmpperiod"` // seconds
	Log          string `json:"log"`
	Quiet        bool   `json:"quiet"`
	TCP          bool   `json:"tcp"`       // kcptun's --tcp: KCP inside raw TCP packets (Linux, needs CAP_NET_RAW)
	Transport    string `json:"transport"` // smuxtun: "kcp" or "tcp"
	Pprof        bool   `json:"pprof"`
	PprofAddr    string `json:"pprofaddr"` // smuxtun: loopback host:port for --pprof
	Metrics      string `json:"metrics"`   // smuxtun: where to serve Prometheus metrics, "" = off (see MetricsListenAddr)
	QPP          bool   `json:"qpp"`       // kcptun's Quantum Permutation Pads on every stream (qpp.go)
	QPPCount     int    `json:"qpp-count"` // pads, must match the peer
}

// Client holds the settings of smuxtun-client.
type Client struct {
	Common
	LocalAddr   string `json:"localaddr"`   // host:port or a unix socket path
	RemoteAddr  string `json:"remoteaddr"`  // host:port or host:min-max
	Conn        int    `json:"conn"`        // transport sessions in the pool
	AutoExpire  int    `json:"autoexpire"`  // seconds, 0 = never
	ScavengeTTL int    `json:"scavengettl"` // seconds
	// Forward lists smuxtun's client forwards, LISTEN[/udp]=TARGET
	// (ParseForward); the server's allow-list decides.
	Forward []string `json:"forward"`
	// Socks is where to serve SOCKS5 (and HTTP CONNECT), "" = off;
	// SocksUser and SocksPass, if either is set, are required from clients.
	Socks     string `json:"socks"`
	SocksUser string `json:"socksuser"`
	SocksPass string `json:"sockspass"`
	// UDPTimeout closes a UDP flow idle for this many seconds.
	UDPTimeout int `json:"udptimeout"`
	// LocalAddrSet records that localaddr came from a flag or the file:
	// with forwards or SOCKS, the default localaddr is not listened on.
	LocalAddrSet bool `json:"-"`
}

// Listens reports whether the client has something to listen on besides
// localaddr: forwards or SOCKS.
func (c *Client) Listens() bool { return len(c.Forward) > 0 || c.Socks != "" }

// LocalListen returns the localaddr the client listens on: "" when it has
// forwards or SOCKS and localaddr is only the default.
func (c *Client) LocalListen() string {
	if c.Listens() && !c.LocalAddrSet {
		return ""
	}
	return c.LocalAddr
}

// Server holds the settings of smuxtun-server.
type Server struct {
	Common
	Listen string `json:"listen"` // host:port or host:min-max
	Target string `json:"target"` // host:port or a unix socket path
	// Allow lists the targets clients may choose per stream besides
	// Target (ParseAllowList).
	Allow []string `json:"allow"`
	// UDPTimeout closes a UDP flow idle for this many seconds.
	UDPTimeout int `json:"udptimeout"`
}

// Transports smuxtun knows.
const (
	TransportKCP = "kcp"
	TransportTCP = "tcp"
)

// DefaultPprofAddr is where --pprof serves net/http/pprof unless told otherwise.
const DefaultPprofAddr = "127.0.0.1:6060"

// defaultCommon returns kcptun's defaults shared by both ends. Key is left
// empty on purpose: smuxtun never runs on a built-in key.
func defaultCommon() Common {
	c := Common{
		Crypt:       "aes",
		Mode:        "fast",
		MTU:         1350,
		DataShard:   10,
		ParityShard: 3,
		// kcptun's hidden manual-mode flags default to these; any other mode
		// replaces them in ApplyMode.
		NoDelay:      0,
		Interval:     50,
		Resend:       0,
		NoCongestion: 0,
		SockBuf:      4 << 20,
		SmuxVer:      2,
		SmuxBuf:      4 << 20,
		FrameSize:    8192,
		StreamBuf:    2 << 20,
		MaxStreams:   4096,
		KeepAlive:    10,
		SnmpPeriod:   60,
		Transport:    TransportKCP,
		PprofAddr:    DefaultPprofAddr,
		QPPCount:     61,
	}
	return c
}

// DefaultUDPTimeout is how long, in seconds, a UDP flow may stay idle.
const DefaultUDPTimeout = 60

// DefaultClient returns kcptun's client defaults.
func DefaultClient() *Client {
	c := &Client{
		Common:      defaultCommon(),
		LocalAddr:   ":12948",
		RemoteAddr:  "vps:29900",
		Conn:        1,
		AutoExpire:  0,
		ScavengeTTL: 600,
		UDPTimeout:  DefaultUDPTimeout,
	}
	c.SndWnd, c.RcvWnd = 128, 512
	c.CloseWait = 0
	return c
}

// DefaultServer returns kcptun's server defaults.
func DefaultServer() *Server {
	s := &Server{
		Common:     defaultCommon(),
		Listen:     ":29900",
		Target:     "127.0.0.1:12948",
		UDPTimeout: DefaultUDPTimeout,
	}
	s.SndWnd, s.RcvWnd = 1024, 1024
	s.CloseWait = 30
	return s
}

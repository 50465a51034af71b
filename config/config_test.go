package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func validClient() *Client {
	c := DefaultClient()
	c.Key = "test key"
	c.RemoteAddr = "127.0.0.1:29900"
	return c
}

func validServer() *Server {
	s := DefaultServer()
	s.Key = "test key"
	return s
}

func TestDefaultsAreKcptuns(t *testing.T) {
	c := DefaultClient()
	s := DefaultServer()
	tests := []struct {
		name      string
		got, want any
	}{
		{"client localaddr", c.LocalAddr, ":12948"},
		{"client remoteaddr", c.RemoteAddr, "vps:29900"},
		{"server listen", s.Listen, ":29900"},
		{"server target", s.Target, "127.0.0.1:12948"},
		{"client crypt", c.Crypt, "aes"},
		{"server crypt", s.Crypt, "aes"},
		{"mode", c.Mode + "/" + s.Mode, "fast/fast"},
		{"conn", c.Conn, 1},
		{"autoexpire", c.AutoExpire, 0},
		{"scavengettl", c.ScavengeTTL, 600},
		{"mtu", [2]int{c.MTU, s.MTU}, [2]int{1350, 1350}},
		{"client windows", [2]int{c.SndWnd, c.RcvWnd}, [2]int{128, 512}},
		{"server windows", [2]int{s.SndWnd, s.RcvWnd}, [2]int{1024, 1024}},
		{"shards", [4]int{c.DataShard, c.ParityShard, s.DataShard, s.ParityShard}, [4]int{10, 3, 10, 3}},
		{"sockbuf", c.SockBuf, 4194304},
		{"smuxver", c.SmuxVer, 2},
		{"smuxbuf", c.SmuxBuf, 4194304},
		{"framesize", c.FrameSize, 8192},
		{"streambuf", c.StreamBuf, 2097152},
		{"maxstreams", [2]int{c.MaxStreams, s.MaxStreams}, [2]int{4096, 4096}},
		{"keepalive", [2]int{c.KeepAlive, s.KeepAlive}, [2]int{10, 10}},
		{"closewait", [2]int{c.CloseWait, s.CloseWait}, [2]int{0, 30}},
		{"snmpperiod", c.SnmpPeriod, 60},
		{"transport", c.Transport, "kcp"},
		{"pprofaddr", s.PprofAddr, "127.0.0.1:6060"},
		{"no built-in key", c.Key + s.Key, ""},
		{"compression on", c.NoComp || s.NoComp, false},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if err := validClient().Validate(); err != nil {
		t.Errorf("defaults plus a key and address: %v", err)
	}
	if err := validServer().Validate(); err != nil {
		t.Errorf("server defaults plus a key: %v", err)
	}
}

func TestDefaultsDoNotAlias(t *testing.T) {
	a, b := DefaultClient(), DefaultClient()
	a.MTU = 1
	if b.MTU == 1 {
		t.Fatal("DefaultClient returns shared state")
	}
}

func TestApplyMode(t *testing.T) {
	tests := []struct {
		mode string
		want [4]int
	}{
		{"normal", [4]int{0, 40, 2, 1}},
		{"fast", [4]int{0, 30, 2, 1}},
		{"fast2", [4]int{1, 20, 2, 1}},
		{"fast3", [4]int{1, 10, 2, 1}},
		{"manual", [4]int{1, 77, 5, 0}},
	}
	for _, tt := range tests {
		c := Common{Mode: tt.mode, NoDelay: 1, Interval: 77, Resend: 5, NoCongestion: 0}
		if err := c.ApplyMode(); err != nil {
			t.Fatalf("ApplyMode(%s): %v", tt.mode, err)
		}
		got := [4]int{c.NoDelay, c.Interval, c.Resend, c.NoCongestion}
		if got != tt.want {
			t.Errorf("ApplyMode(%s) = %v, want %v", tt.mode, got, tt.want)
		}
	}
	for _, bad := range []string{"", "Fast", "fast4", "turbo"} {
		c := Common{Mode: bad, Interval: 77}
		err := c.ApplyMode()
		if !errors.Is(err, ErrUnknownMode) || !strings.Contains(err.Error(), "fast3") {
			t.Errorf("ApplyMode(%q) = %v, want ErrUnknownMode listing the modes", bad, err)
		}
		if c.Interval != 77 {
			t.Errorf("ApplyMode(%q) changed the settings", bad)
		}
	}
}

func TestParseAddrRange(t *testing.T) {
	tests := []struct {
		in       string
		host     string
		min, max int
		err      string
	}{
		{"127.0.0.1:29900", "127.0.0.1", 29900, 29900, ""},
		{":1", "", 1, 1, ""},
		{"vps:65535", "vps", 65535, 65535, ""},
		{"example.com:3000-3010", "example.com", 3000, 3010, ""},
		{"[::1]:100-100", "::1", 100, 100, ""},
		{"127.0.0.1:3010-3000", "", 0, 0, "reversed"},
		{"127.0.0.1:0", "", 0, 0, "out of range"},
		{"127.0.0.1:65536", "", 0, 0, "out of range"},
		{"127.0.0.1:-1", "", 0, 0, "range min-max"},
		{"127.0.0.1:1-70000", "", 0, 0, "out of range"},
		{"127.0.0.1:", "", 0, 0, "missing port"},
		{"127.0.0.1:1-", "", 0, 0, "range min-max"},
		{"127.0.0.1:1-2-3", "", 0, 0, "not a number"},
		{"127.0.0.1:x", "", 0, 0, "not a number"},
		{"127.0.0.1:+80", "", 0, 0, "not a number"},
		{"127.0.0.1: 80", "", 0, 0, "not a number"},
		{"127.0.0.1", "", 0, 0, "want host:port"},
		{"", "", 0, 0, "want host:port"},
		{"::1:80", "", 0, 0, "want host:port"},
		{"h:99999999999999999999", "", 0, 0, "out of range"},
	}
	for _, tt := range tests {
		host, min, max, err := ParseAddrRange(tt.in)
		if tt.err != "" {
			if !errors.Is(err, ErrBadAddress) || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), tt.in) {
				t.Errorf("ParseAddrRange(%q) error = %v, want ErrBadAddress mentioning the input and %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || host != tt.host || min != tt.min || max != tt.max {
			t.Errorf("ParseAddrRange(%q) = %q, %d, %d, %v; want %q, %d, %d", tt.in, host, min, max, err, tt.host, tt.min, tt.max)
		}
	}
}

// fieldCase changes one setting of a valid configuration; err is "" when the
// result must still be valid, otherwise the key the error must name plus a
// fragment of the reason.
type fieldCase struct {
	name   string
	mutate func(*Common)
	key    string
	reason string
}

var commonCases = []fieldCase{
	{"no key", func(c *Common) { c.Key = "" }, "key", "missing"},
	{"unknown cipher", func(c *Common) { c.Crypt = "rc4" }, "crypt", "aes-128-gcm"},
	{"cipher case matters", func(c *Common) { c.Crypt = "AES" }, "crypt", "unknown"},
	{"null cipher", func(c *Common) { c.Crypt = "null" }, "", ""},
	{"unknown mode", func(c *Common) { c.Mode = "fast4" }, "mode", "fast3"},
	{"manual mode", func(c *Common) { c.Mode = "manual" }, "", ""},
	{"unknown transport", func(c *Common) { c.Transport = "udp" }, "transport", "kcp, tcp"},
	{"tcp transport", func(c *Common) { c.Transport = "tcp" }, "", ""},
	{"raw tcp", func(c *Common) { c.TCP = true }, "", ""},
	{"raw tcp over transport tcp", func(c *Common) { c.TCP, c.Transport = true, "tcp" }, "tcp", "cannot be combined with transport \"tcp\""},
	{"qpp", func(c *Common) { c.QPP = true }, "", ""},
	{"qpp count 0", func(c *Common) { c.QPP, c.QPPCount = true, 0 }, "qpp-count", "1..65535 pads"},
	{"qpp count negative", func(c *Common) { c.QPP, c.QPPCount = true, -61 }, "qpp-count", "1..65535 pads"},
	{"qpp count huge", func(c *Common) { c.QPP, c.QPPCount = true, 65536 }, "qpp-count", "1..65535 pads"},
	{"qpp count max", func(c *Common) { c.QPP, c.QPPCount = true, 65535 }, "", ""},
	{"qpp count not prime", func(c *Common) { c.QPP, c.QPPCount = true, 64 }, "", ""},
	{"qpp off ignores count 0", func(c *Common) { c.QPPCount = 0 }, "", ""},
	{"qpp off negative count", func(c *Common) { c.QPPCount = -1 }, "qpp-count", "0..65535"},
	{"mtu over", func(c *Common) { c.MTU = 1501 }, "mtu", "64..1500"},
	{"mtu under", func(c *Common) { c.MTU = 63 }, "mtu", "64..1500"},
	{"mtu min", func(c *Common) { c.MTU = 64 }, "", ""},
	{"mtu max", func(c *Common) { c.MTU = 1500 }, "", ""},
	{"negative sndwnd", func(c *Common) { c.SndWnd = -1 }, "sndwnd", "1..65535"},
	{"zero rcvwnd", func(c *Common) { c.RcvWnd = 0 }, "rcvwnd", "1..65535"},
	{"huge rcvwnd", func(c *Common) { c.RcvWnd = 65536 }, "rcvwnd", "1..65535"},
	{"negative datashard", func(c *Common) { c.DataShard = -1 }, "datashard", "0..256"},
	{"negative parityshard", func(c *Common) { c.ParityShard = -3 }, "parityshard", "0..256"},
	{"too many shards", func(c *Common) { c.DataShard, c.ParityShard = 200, 57 }, "parityshard", "exceeds 256"},
	{"fec off", func(c *Common) { c.DataShard, c.ParityShard = 0, 0 }, "", ""},
	{"dscp", func(c *Common) { c.DSCP = 64 }, "dscp", "0..63"},
	{"manual nodelay", func(c *Common) { c.Mode, c.NoDelay = "manual", 2 }, "nodelay", "0..1"},
	{"manual interval", func(c *Common) { c.Mode, c.Interval = "manual", 5 }, "interval", "10..5000"},
	{"manual resend", func(c *Common) { c.Mode, c.Resend = "manual", -1 }, "resend", "0.."},
	{"manual nc", func(c *Common) { c.Mode, c.NoCongestion = "manual", 3 }, "nc", "0..1"},
	{"profile ignores manual values", func(c *Common) { c.Mode, c.Interval = "fast", 5 }, "", ""},
	{"negative ratelimit", func(c *Common) { c.RateLimit = -1 }, "ratelimit", "0.."},
	{"zero sockbuf", func(c *Common) { c.SockBuf = 0 }, "sockbuf", "1.."},
	{"smuxver 3", func(c *Common) { c.SmuxVer = 3 }, "smuxver", "1..2"},
	{"smuxver 0", func(c *Common) { c.SmuxVer = 0 }, "smuxver", "1..2"},
	{"smuxver 1", func(c *Common) { c.SmuxVer = 1 }, "", ""},
	{"zero smuxbuf", func(c *Common) { c.SmuxBuf = 0 }, "smuxbuf", "1.."},
	{"framesize over", func(c *Common) { c.FrameSize = 65536 }, "framesize", "1..65535"},
	{"framesize max", func(c *Common) { c.FrameSize = 65535 }, "", ""},
	{"framesize zero", func(c *Common) { c.FrameSize = 0 }, "framesize", "1..65535"},
	{"streambuf over smuxbuf", func(c *Common) { c.StreamBuf = c.SmuxBuf + 1 }, "streambuf", "smuxbuf"},
	{"streambuf equal smuxbuf", func(c *Common) { c.StreamBuf = c.SmuxBuf }, "", ""},
	{"negative maxstreams", func(c *Common) { c.MaxStreams = -1 }, "maxstreams", "0.."},
	{"no stream cap", func(c *Common) { c.MaxStreams = 0 }, "", ""},
	{"zero keepalive", func(c *Common) { c.KeepAlive = 0 }, "keepalive", "1.."},
	{"negative closewait", func(c *Common) { c.CloseWait = -1 }, "closewait", "0.."},
	{"negative snmpperiod", func(c *Common) { c.SnmpPeriod = -1 }, "snmpperiod", "0.."},
	{"snmplog without period", func(c *Common) { c.SnmpLog, c.SnmpPeriod = "/tmp/x", 0 }, "snmpperiod", "snmplog"},
	{"pprof elsewhere", func(c *Common) { c.PprofAddr = "0.0.0.0:6060" }, "pprofaddr", "loopback"},
	{"pprof ipv6 loopback", func(c *Common) { c.PprofAddr = "[::1]:6060" }, "", ""},
	{"pprof localhost", func(c *Common) { c.PprofAddr = "localhost:7070" }, "", ""},
	{"pprof no port", func(c *Common) { c.PprofAddr = "127.0.0.1" }, "pprofaddr", "host:port"},
}

func checkField(t *testing.T, name string, err error, key, reason string) {
	t.Helper()
	if key == "" {
		if err != nil {
			t.Errorf("%s: unexpected error %v", name, err)
		}
		return
	}
	var fe *FieldError
	if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
		t.Errorf("%s: error %v, want a *FieldError for %q", name, err, key)
		return
	}
	if fe.Key != key || !(strings.HasPrefix(err.Error(), key+" ") || strings.HasPrefix(err.Error(), key+": ")) || !strings.Contains(err.Error(), reason) {
		t.Errorf("%s: error %q (key %q), want it to start with %q and mention %q", name, err, fe.Key, key, reason)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: error spans lines: %q", name, err)
	}
}

func TestValidateCommon(t *testing.T) {
	for _, tt := range commonCases {
		c := validClient()
		tt.mutate(&c.Common)
		checkField(t, "client: "+tt.name, c.Validate(), tt.key, tt.reason)
		s := validServer()
		tt.mutate(&s.Common)
		checkField(t, "server: "+tt.name, s.Validate(), tt.key, tt.reason)
	}
}

func TestValidateClient(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Client)
		key    string
		reason string
	}{
		{"remote range", func(c *Client) { c.RemoteAddr = "127.0.0.1:3000-3005" }, "", ""},
		{"remote reversed", func(c *Client) { c.RemoteAddr = "127.0.0.1:3005-3000" }, "remoteaddr", "reversed"},
		{"remote port 0", func(c *Client) { c.RemoteAddr = "127.0.0.1:0" }, "remoteaddr", "1..65535"},
		{"remote port over", func(c *Client) { c.RemoteAddr = "127.0.0.1:65536" }, "remoteaddr", "out of range"},
		{"remote no host", func(c *Client) { c.RemoteAddr = ":29900" }, "remoteaddr", "missing host"},
		{"remote not an address", func(c *Client) { c.RemoteAddr = "29900" }, "remoteaddr", "host:port"},
		{"local any port", func(c *Client) { c.LocalAddr = "127.0.0.1:0" }, "", ""},
		{"local unix", func(c *Client) { c.LocalAddr = "/run/smuxtun.sock" }, "", ""},
		{"local bare word", func(c *Client) { c.LocalAddr = "12948" }, "localaddr", "unix socket path"},
		{"local range", func(c *Client) { c.LocalAddr = "127.0.0.1:1-2" }, "localaddr", "range is not allowed"},
		{"local port over", func(c *Client) { c.LocalAddr = ":70000" }, "localaddr", "out of range"},
		{"conn 0", func(c *Client) { c.Conn = 0 }, "conn", "1..65535"},
		{"autoexpire negative", func(c *Client) { c.AutoExpire = -1 }, "autoexpire", "0.."},
		{"scavengettl disabled", func(c *Client) { c.ScavengeTTL = -1 }, "", ""},
		{"scavengettl negative", func(c *Client) { c.ScavengeTTL = -2 }, "scavengettl", "-1.."},
	}
	for _, tt := range tests {
		c := validClient()
		tt.mutate(c)
		checkField(t, tt.name, c.Validate(), tt.key, tt.reason)
	}
}

func TestValidateServer(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Server)
		key    string
		reason string
	}{
		{"listen range", func(s *Server) { s.Listen = ":3000-3010" }, "", ""},
		{"listen any port", func(s *Server) { s.Listen = "127.0.0.1:0" }, "", ""},
		{"listen reversed", func(s *Server) { s.Listen = ":3010-3000" }, "listen", "reversed"},
		{"listen over", func(s *Server) { s.Listen = ":65536" }, "listen", "out of range"},
		{"listen range from 0", func(s *Server) { s.Listen = ":0-10" }, "listen", "1..65535"},
		{"target unix", func(s *Server) { s.Target = "/var/run/app.sock" }, "", ""},
		{"target relative unix", func(s *Server) { s.Target = "./app.sock" }, "", ""},
		{"target no host", func(s *Server) { s.Target = ":80" }, "target", "missing host"},
		{"target port 0", func(s *Server) { s.Target = "127.0.0.1:0" }, "target", "1..65535"},
		{"target bare word", func(s *Server) { s.Target = "app" }, "target", "unix socket path"},
	}
	for _, tt := range tests {
		s := validServer()
		tt.mutate(s)
		checkField(t, tt.name, s.Validate(), tt.key, tt.reason)
	}
}

func TestFieldErrorFormat(t *testing.T) {
	c := validClient()
	c.Crypt = "rc4"
	want := `crypt "rc4": unknown crypt (valid: ` + strings.Join(Ciphers(), ", ") + ")"
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
	c = validClient()
	c.MTU = 9000
	if err := c.Validate(); err == nil || err.Error() != "mtu 9000: out of range: must be 64..1500 (kcp-go's packet limit)" {
		t.Errorf("got %v", err)
	}
}

func TestQPPWarnings(t *testing.T) {
	tests := []struct {
		qpp   bool
		count int
		want  []string // a fragment of each warning, in order
	}{
		{false, 64, nil},
		{true, 61, nil},
		{true, 65521, nil},
		{true, 64, []string{"QPPCount 64 is not a prime"}},
		{true, 9, []string{"QPPCount 9 is not a prime"}},
		{true, 5, []string{"QPPCount 5 is below 7"}},
		{true, 1, []string{"QPPCount 1 is below 7", "QPPCount 1 is not a prime"}},
	}
	for _, tt := range tests {
		c := validClient()
		c.QPP, c.QPPCount = tt.qpp, tt.count
		if err := c.Validate(); err != nil {
			t.Fatalf("qpp %v count %d: %v", tt.qpp, tt.count, err)
		}
		got := c.QPPWarnings()
		if len(got) != len(tt.want) {
			t.Errorf("qpp %v count %d: warnings %q, want %d", tt.qpp, tt.count, got, len(tt.want))
			continue
		}
		for i, w := range tt.want {
			if !strings.Contains(got[i], w) || strings.Contains(got[i], "\n") {
				t.Errorf("qpp %v count %d: warning %q, want one line with %q", tt.qpp, tt.count, got[i], w)
			}
		}
	}
}

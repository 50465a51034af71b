package app

import (
	"strings"

	"github.com/smuxtun/smuxtun/config"
	"github.com/urfave/cli/v2"
)

// Help categories; urfave/cli sorts them by name, which happens to be the
// order an operator reads them in.
const (
	catTunnel  = "Connection"
	catKCP     = "KCP"
	catMux     = "Mux"
	catOps     = "Operation"
	catTargets = "Forwards and SOCKS"
)

// localOpt is --localaddr, which also records that the user chose it:
// with --forward or --socks, the default one is not listened on.
func localOpt(cfg *config.Client) option {
	o := strOpt("localaddr", []string{"l"}, catTunnel, &cfg.LocalAddr, "where to accept connections for the server's --target: host:port, or a unix socket path (with --forward or --socks: only when given)")
	apply := o.apply
	o.apply = func(c *cli.Context) {
		apply(c)
		if c.IsSet("localaddr") {
			cfg.LocalAddrSet = true
		}
	}
	return o
}

// option is one command-line flag bound to a field of the configuration:
// the flag shows the field's default, and apply copies the flag's value into
// the field only if the flag was given on the command line, so that values
// from a -c file survive unless overridden.
type option struct {
	flag  cli.Flag
	key   string // the JSON key the flag sets
	apply func(c *cli.Context)
}

func strOpt(name string, aliases []string, cat string, p *string, usage string) option {
	return option{
		flag: &cli.StringFlag{Name: name, Aliases: aliases, Category: cat, Value: *p, Usage: usage},
		key:  name,
		apply: func(c *cli.Context) {
			if c.IsSet(name) {
				*p = c.String(name)
			}
		},
	}
}

func intOpt(name string, aliases []string, cat string, p *int, usage string) option {
	return option{
		flag: &cli.IntFlag{Name: name, Aliases: aliases, Category: cat, Value: *p, Usage: usage},
		key:  name,
		apply: func(c *cli.Context) {
			if c.IsSet(name) {
				*p = c.Int(name)
			}
		},
	}
}

// listOpt is a repeatable string flag: given on the command line, its
// values replace the file's list.
func listOpt(name string, cat string, p *[]string, usage string) option {
	return option{
		flag: &cli.StringSliceFlag{Name: name, Category: cat, Usage: usage},
		key:  name,
		apply: func(c *cli.Context) {
			if c.IsSet(name) {
				*p = c.StringSlice(name)
			}
		},
	}
}

// windowOpt is intOpt for --sndwnd and --rcvwnd, which also record that
// the user chose the window.
func windowOpt(name string, p *int, set *bool, usage string) option {
	o := intOpt(name, nil, catKCP, p, usage)
	apply := o.apply
	o.apply = func(c *cli.Context) {
		apply(c)
		if c.IsSet(name) {
			*set = true
		}
	}
	return o
}

func boolOpt(name string, aliases []string, cat string, p *bool, usage string) option {
	return option{
		flag: &cli.BoolFlag{Name: name, Aliases: aliases, Category: cat, Value: *p, Usage: usage},
		key:  name,
		apply: func(c *cli.Context) {
			if c.IsSet(name) {
				*p = c.Bool(name)
			}
		},
	}
}

// commonOptions binds the flags both binaries share to cfg.
func commonOptions(cfg *config.Common) []option {
	opts := []option{
		strOpt("key", nil, catTunnel, &cfg.Key,
			"pre-shared secret, must match the peer (also $"+envKey+" or $"+envKcptunKey+"); required, there is no built-in key"),
		strOpt("crypt", nil, catTunnel, &cfg.Crypt, "cipher: "+strings.Join(config.Ciphers(), ", ")+" (kcp: kcptun's packet cipher; tcp: any name but none/null turns on AES-256-GCM)"),
		strOpt("mode", nil, catKCP, &cfg.Mode, "KCP profile: "+strings.Join(config.Modes(), ", ")+" (manual uses --nodelay, --interval, --resend, --nc)"),
		strOpt("transport", nil, catTunnel, &cfg.Transport, "link to the peer: kcp (UDP) or tcp (for networks that block UDP; both ends must agree)"),
		boolOpt("nocomp", nil, catTunnel, &cfg.NoComp, "disable snappy compression (must match the peer)"),
		intOpt("mtu", nil, catKCP, &cfg.MTU, "maximum size of a UDP packet, 64..1500"),
		intOpt("ratelimit", nil, catKCP, &cfg.RateLimit, "maximum outgoing bytes per second per KCP session, 0 = unlimited"),
		windowOpt("sndwnd", &cfg.SndWnd, &cfg.SndWndSet, "send window in packets; unset, it follows the path's rate (with --nopacing: this value)"),
		windowOpt("rcvwnd", &cfg.RcvWnd, &cfg.RcvWndSet, "receive window in packets; unset, it grows with what arrives (with --nopacing: this value)"),
		boolOpt("nopacing", nil, catKCP, &cfg.NoPacing, "send as kcptun does: fixed --sndwnd/--rcvwnd, no pacing"),
		intOpt("datashard", []string{"ds"}, catKCP, &cfg.DataShard, "Reed-Solomon data shards (must match the peer; 0 disables FEC)"),
		intOpt("parityshard", []string{"ps"}, catKCP, &cfg.ParityShard, "Reed-Solomon parity shards (must match the peer; 0 disables FEC)"),
		intOpt("dscp", nil, catKCP, &cfg.DSCP, "DSCP value for outgoing packets, 0..63"),
		boolOpt("acknodelay", nil, catKCP, &cfg.AckNodelay, "send ACKs at once instead of with the next flush"),
		intOpt("nodelay", nil, catKCP, &cfg.NoDelay, "manual mode: 1 enables KCP nodelay"),
		intOpt("interval", nil, catKCP, &cfg.Interval, "manual mode: KCP flush interval in milliseconds, 10..5000"),
		intOpt("resend", nil, catKCP, &cfg.Resend, "manual mode: fast resend after this many skipped ACKs, 0 = off"),
		intOpt("nc", nil, catKCP, &cfg.NoCongestion, "manual mode: 1 disables congestion control"),
		intOpt("sockbuf", nil, catKCP, &cfg.SockBuf, "UDP socket send and receive buffer in bytes"),
		intOpt("smuxver", nil, catMux, &cfg.SmuxVer, "smux protocol version, 1 or 2 (must match the peer)"),
		intOpt("smuxbuf", nil, catMux, &cfg.SmuxBuf, "receive buffer of a mux session in bytes"),
		intOpt("framesize", nil, catMux, &cfg.FrameSize, "largest mux frame payload in bytes, at most 65535"),
		intOpt("streambuf", nil, catMux, &cfg.StreamBuf, "receive window of one stream in bytes (smux v2), at most --smuxbuf"),
		intOpt("maxstreams", nil, catMux, &cfg.MaxStreams, "streams the peer may have open in one session; more are refused at once (0 = no cap)"),
		intOpt("keepalive", nil, catMux, &cfg.KeepAlive, "seconds between keepalive frames"),
		intOpt("closewait", nil, catTunnel, &cfg.CloseWait, "seconds one direction of a connection may linger after the other has ended"),
		strOpt("snmplog", nil, catOps, &cfg.SnmpLog, "append kcp-go's counters as CSV in kcptun's columns to this file (a file with other columns is left alone: the rows go to FILE.1); Go time layout in the name starts new files, e.g. ./snmp-20060102.log"),
		intOpt("snmpperiod", nil, catOps, &cfg.SnmpPeriod, "seconds between two --snmplog rows"),
		strOpt("log", nil, catOps, &cfg.Log, "append the log to this file instead of stderr"),
		boolOpt("quiet", nil, catOps, &cfg.Quiet, "do not log each stream opening and closing"),
		boolOpt("pprof", nil, catOps, &cfg.Pprof, "serve net/http/pprof on --pprofaddr"),
		strOpt("pprofaddr", nil, catOps, &cfg.PprofAddr, "loopback host:port for --pprof"),
		strOpt("metrics", nil, catOps, &cfg.Metrics, "serve Prometheus metrics at http://ADDR/metrics; a port or :port binds 127.0.0.1, IP:port binds that IP (0.0.0.0 exposes them to the network); empty = off"),
		boolOpt("tcp", nil, catTunnel, &cfg.TCP, "kcptun's --tcp: KCP packets travel inside TCP segments sent through raw sockets, for networks that block UDP; a server with it accepts UDP clients too (Linux; needs root or CAP_NET_RAW, see the README)"),
		boolOpt("QPP", []string{"qpp"}, catTunnel, &cfg.QPP, "kcptun's Quantum Permutation Pads: permute every stream's bytes with pads built from --key (must match the peer, as must --key and --QPPCount; a mismatch garbles data without an error)"),
		intOpt("QPPCount", []string{"qpp-count"}, catTunnel, &cfg.QPPCount, "number of QPP pads, 1..65535, best a prime (must match the peer); each pad takes 512 bytes and about 0.1 ms to build at start-up"),
	}
	// The JSON keys of the QPP flags differ from kcptun's flag names.
	opts[len(opts)-2].key = "qpp"
	opts[len(opts)-1].key = "qpp-count"
	return opts
}

// clientOptions binds every smuxtun-client flag to cfg.
func clientOptions(cfg *config.Client) []option {
	return append([]option{
		localOpt(cfg),
		strOpt("remoteaddr", []string{"r"}, catTunnel, &cfg.RemoteAddr, "the server: host:port, or host:min-max to spread sessions over a port range"),
		intOpt("conn", nil, catTunnel, &cfg.Conn, "number of transport sessions to the server"),
		intOpt("autoexpire", nil, catTunnel, &cfg.AutoExpire, "replace a session after this many seconds, 0 = never"),
		intOpt("scavengettl", nil, catTunnel, &cfg.ScavengeTTL, "close a replaced session this many seconds later even if streams remain, -1 = wait for them"),
		listOpt("forward", catTargets, &cfg.Forward, "LISTEN=TARGET: carry connections to LISTEN to TARGET, named at the server's end, e.g. 127.0.0.1:2222=10.0.0.5:22; LISTEN/udp=TARGET for UDP (repeatable; the server's --allow must admit TARGET; needs smuxtun-server)"),
		strOpt("socks", nil, catTargets, &cfg.Socks, "serve SOCKS5 (CONNECT, UDP ASSOCIATE) and HTTP CONNECT on this host:port; names are resolved at the server's end, whose --allow decides (needs smuxtun-server)"),
		strOpt("socksuser", nil, catTargets, &cfg.SocksUser, "username SOCKS and HTTP clients must give (with --sockspass)"),
		strOpt("sockspass", nil, catTargets, &cfg.SocksPass, "password SOCKS and HTTP clients must give (with --socksuser)"),
		intOpt("udptimeout", nil, catTargets, &cfg.UDPTimeout, "seconds a UDP flow may stay idle before it is closed"),
	}, commonOptions(&cfg.Common)...)
}

// serverOptions binds every smuxtun-server flag to cfg.
func serverOptions(cfg *config.Server) []option {
	return append([]option{
		strOpt("listen", []string{"l"}, catTunnel, &cfg.Listen, "where to accept clients: host:port, or host:min-max for a port range"),
		strOpt("target", []string{"t"}, catTunnel, &cfg.Target, "where to send each stream: host:port, or a unix socket path"),
		listOpt("allow", catTargets, &cfg.Allow, "PATTERN: a target clients may choose with --forward or --socks besides --target: host:port, CIDR:port, *.domain:port, ports lo-hi or * (repeatable; loopback and link-local only when named; every pattern widens what anyone with the key reaches)"),
		intOpt("udptimeout", nil, catTargets, &cfg.UDPTimeout, "seconds a UDP flow may stay idle before it is closed"),
	}, commonOptions(&cfg.Common)...)
}

// Command refkcptun is the kcptun-style reference stack as a process, for
// `make bench-wan`: kcp-go + xtaci/smux + snappy at kcptun's defaults.
//
//	refkcptun client -l 127.0.0.1:12948 -r 127.0.0.1:29900 --key K
//	refkcptun server -l 127.0.0.1:29900 -t 127.0.0.1:8080 --key K
//
// The tuning flags mean what kcptun's do (--mode, --sndwnd, --rcvwnd, ...).
// The role is the first argument because kcptun's --mode is taken.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/smuxtun/smuxtun/internal/refstack"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "client" && os.Args[1] != "server") {
		fmt.Fprintln(os.Stderr, "usage: refkcptun client|server [flags]")
		os.Exit(2)
	}
	role := os.Args[1]
	o := refstack.Defaults(role == "server")
	fs := flag.NewFlagSet("refkcptun "+role, flag.ExitOnError)
	local := fs.String("l", "", "client: local TCP address; server: UDP listen address")
	remote := fs.String("r", "", "client: server address")
	target := fs.String("t", "", "server: TCP target address")
	fs.StringVar(&o.Key, "key", "it's a secrect", "pre-shared secret")
	fs.StringVar(&o.Crypt, "crypt", o.Crypt, "aes, aes-128, aes-192, salsa20, none, null")
	fs.StringVar(&o.Mode, "mode", o.Mode, "normal, fast, fast2, fast3")
	fs.IntVar(&o.SndWnd, "sndwnd", o.SndWnd, "send window in packets")
	fs.IntVar(&o.RcvWnd, "rcvwnd", o.RcvWnd, "receive window in packets")
	fs.IntVar(&o.MTU, "mtu", o.MTU, "largest UDP payload")
	fs.IntVar(&o.DataShard, "datashard", o.DataShard, "FEC data shards")
	fs.IntVar(&o.ParityShard, "parityshard", o.ParityShard, "FEC parity shards")
	fs.IntVar(&o.SockBuf, "sockbuf", o.SockBuf, "UDP socket buffer in bytes")
	fs.BoolVar(&o.NoComp, "nocomp", false, "no snappy compression")
	fs.IntVar(&o.SmuxVer, "smuxver", o.SmuxVer, "smux version, 1 or 2")
	fs.IntVar(&o.SmuxBuf, "smuxbuf", o.SmuxBuf, "session receive buffer in bytes")
	fs.IntVar(&o.StreamBuf, "streambuf", o.StreamBuf, "stream receive buffer in bytes (smux v2)")
	fs.BoolVar(&o.QPP, "QPP", false, "Quantum Permutation Pads on every stream")
	fs.IntVar(&o.QPPCount, "QPPCount", o.QPPCount, "number of QPP pads")
	fs.BoolVar(&o.TCP, "tcp", false, "KCP inside raw TCP packets (tcpraw), as kcptun's --tcp")
	fs.Parse(os.Args[2:])

	var err error
	switch {
	case role == "client" && *local != "" && *remote != "":
		err = refstack.Client(*local, *remote, o)
	case role == "server" && *local != "" && *target != "":
		err = refstack.Server(*local, *target, o)
	default:
		fmt.Fprintln(os.Stderr, "refkcptun: client needs -l and -r, server needs -l and -t")
		os.Exit(2)
	}
	fmt.Fprintln(os.Stderr, "refkcptun:", err)
	os.Exit(1)
}

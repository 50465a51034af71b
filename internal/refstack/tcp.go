package refstack

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"

	kcp "github.com/xtaci/kcp-go/v5"
	"github.com/xtaci/tcpraw"
)

// dial opens the client's KCP session to remote as kcptun's client/dial.go
// does: over UDP, or with --tcp inside tcpraw's TCP emulation, with a random
// conversation id and a session that owns the connection.
func (o Options) dial(remote string, block kcp.BlockCrypt) (*kcp.UDPSession, error) {
	if !o.TCP {
		return kcp.DialWithOptions(remote, block, o.DataShard, o.ParityShard)
	}
	conn, err := tcpraw.Dial("tcp", remote)
	if err != nil {
		return nil, fmt.Errorf("tcpraw.Dial(): %w", err)
	}
	// kcptun passes net.ResolveUDPAddr's result here; with kcp-go v5.6.72
	// (this module's) a *net.UDPAddr remote makes the session drop every
	// packet tcpraw delivers, whose source is a *net.TCPAddr. The same
	// ip:port as a TCP address changes nothing on the wire.
	raddr, err := net.ResolveTCPAddr("tcp", remote)
	if err != nil {
		conn.Close()
		return nil, err
	}
	var convid uint32
	binary.Read(rand.Reader, binary.LittleEndian, &convid)
	return kcp.NewConn4(convid, raddr, block, o.DataShard, o.ParityShard, true, conn)
}

// listenRaw is kcptun's --tcp listener: tcpraw on the TCP port of listen,
// served by kcp-go as a packet connection.
func listenRaw(listen string, block kcp.BlockCrypt, o Options) (*kcp.Listener, error) {
	conn, err := tcpraw.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	lis, err := kcp.ServeConn(block, o.DataShard, o.ParityShard, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	lis.SetReadBuffer(o.SockBuf)
	lis.SetWriteBuffer(o.SockBuf)
	return lis, nil
}

package mux_test

import (
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/smuxtun/smuxtun/mux"
)

// People replacing github.com/xtaci/smux usually start from its examples, so
// these show the same things with this package: a server that accepts
// streams and echoes them, a client that opens one, and kcptun's
// configuration. Each cleans up everything it starts (listener, sessions,
// goroutines) before it returns.

// ExampleServer accepts one connection on a listener, runs the server side of
// a session on it and echoes every stream the client opens.
func ExampleServer() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()

	served := make(chan struct{})
	go func() {
		defer close(served)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		session, err := mux.Server(conn, nil) // nil: DefaultConfig()
		if err != nil {
			conn.Close()
			return
		}
		defer session.Close() // also closes conn
		var echoes sync.WaitGroup
		defer echoes.Wait()
		for {
			stream, err := session.AcceptStream()
			if err != nil {
				return // the client closed the session
			}
			echoes.Go(func() {
				defer stream.Close()
				io.Copy(stream, stream) // echo until the client's FIN
			})
		}
	}()

	// A client to talk to it.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	session, err := mux.Client(conn, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	stream, err := session.OpenStream()
	if err != nil {
		fmt.Println(err)
		return
	}
	stream.SetDeadline(time.Now().Add(10 * time.Second))
	stream.Write([]byte("ping"))
	stream.CloseWrite() // half-close: the echo ends after "ping"
	reply, err := io.ReadAll(stream)
	fmt.Printf("echoed %q, err %v\n", reply, err)
	stream.Close()

	session.Close() // the server's AcceptStream returns an error now
	<-served
	// Output: echoed "ping", err <nil>
}

// ExampleClient opens a stream over a TCP connection, writes to it and reads
// the echo that the server sends back.
func ExampleClient() {
	addr, stop := startEchoServer()
	defer stop()

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Println(err)
		return
	}
	session, err := mux.Client(conn, nil) // nil: DefaultConfig()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer session.Close() // closes its streams and conn too

	stream, err := session.OpenStream()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stream.Close()
	stream.SetDeadline(time.Now().Add(10 * time.Second))

	msg := []byte("hello, mux")
	if _, err := stream.Write(msg); err != nil {
		fmt.Println(err)
		return
	}
	echo := make([]byte, len(msg))
	if _, err := io.ReadFull(stream, echo); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("stream %d: %s\n", stream.ID(), echo)
	// Output: stream 3: hello, mux
}

// startEchoServer runs an echo server of mux sessions on 127.0.0.1 for
// ExampleClient and returns its address and a function that stops it and
// waits for every goroutine it started.
func startEchoServer() (addr string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		session, err := mux.Server(conn, nil)
		if err != nil {
			conn.Close()
			return
		}
		defer session.Close()
		var echoes sync.WaitGroup
		defer echoes.Wait()
		for {
			stream, err := session.AcceptStream()
			if err != nil {
				return
			}
			echoes.Go(func() {
				defer stream.Close()
				io.Copy(stream, stream)
			})
		}
	}()
	return ln.Addr().String(), func() {
		ln.Close()
		// The client's session closing ends AcceptStream; if the client
		// never connected, closing the listener ends Accept.
		<-done
	}
}

// Example_kcptun is the configuration kcptun runs smux with by default:
// protocol version 2 (a window per stream), a 4 MiB receive buffer per
// session, 2 MiB per stream, 8 KiB frames and a keepalive every 10 s. Both
// ends must use the same Version.
func Example_kcptun() {
	config := mux.DefaultConfig()
	config.Version = 2
	config.MaxReceiveBuffer = 4 << 20 // kcptun's --smuxbuf
	config.MaxStreamBuffer = 2 << 20  // kcptun's --streambuf
	config.MaxFrameSize = 8192
	config.KeepAliveInterval = 10 * time.Second // kcptun's --keepalive
	if err := mux.VerifyConfig(config); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("version %d, %d MiB per session, %d MiB per stream, %d-byte frames, keepalive %v (timeout %v)\n",
		config.Version, config.MaxReceiveBuffer>>20, config.MaxStreamBuffer>>20,
		config.MaxFrameSize, config.KeepAliveInterval, config.KeepAliveTimeout)

	// A stream buffer larger than the session's is rejected.
	config.MaxStreamBuffer = 8 << 20
	fmt.Println(mux.VerifyConfig(config))

	// Pass the config to mux.Client or mux.Server on each end, e.g.
	//	session, err := mux.Client(conn, config)

	// Output:
	// version 2, 4 MiB per session, 2 MiB per stream, 8192-byte frames, keepalive 10s (timeout 30s)
	// mux: MaxStreamBuffer is 8388608, must be in 1..MaxReceiveBuffer (4194304)
}

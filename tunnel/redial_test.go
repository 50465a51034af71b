package tunnel

import (
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
)

// TestRedial: the server goes away and comes back on the same port; a new
// connection through the client works within 10 s of the restart, without
// restarting the client. Over KCP nothing tells the client that the server
// restarted (there is no reset), so this exercises the liveness probe; over
// TCP it exercises the redial back-off.
func TestRedial(t *testing.T) {
	cases := []struct {
		transport string
		downFor   time.Duration
	}{
		{config.TransportKCP, 0},
		{config.TransportKCP, 2 * time.Second},
		{config.TransportTCP, 0},
		{config.TransportTCP, 2 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.transport+"/down-"+tc.downFor.String(), func(t *testing.T) {
			leakChecked(t, func(t *testing.T) {
				target := startEcho(t, "tcp", "127.0.0.1:0")
				o := pairOpts{transport: tc.transport, target: target}
				srvA, stopA := runServer(t, o)
				o.remote = srvA.Addrs()[0].String()
				cli, _ := runClient(t, o)
				local := cli.Addr().String()
				if err := echoRoundTrip("tcp", local, randomBytes(t, 64<<10), ioTimeout); err != nil {
					t.Fatalf("before the restart: %v", err)
				}

				stopA()
				if tc.downFor > 0 {
					// Users keep trying while the server is down.
					end := time.Now().Add(tc.downFor)
					for time.Now().Before(end) {
						echoRoundTrip("tcp", local, randomBytes(t, 1<<10), 500*time.Millisecond)
					}
				}
				o.listen = o.remote
				runServer(t, o)
				restarted := time.Now()

				data := randomBytes(t, 64<<10)
				for attempt := 1; ; attempt++ {
					err := echoRoundTrip("tcp", local, data, 2*time.Second)
					if err == nil {
						t.Logf("a new connection worked %v after the restart (attempt %d)",
							time.Since(restarted).Round(time.Millisecond), attempt)
						break
					}
					if time.Since(restarted) > 10*time.Second {
						t.Fatalf("no working connection within 10 s of the restart; last error: %v", err)
					}
				}
			})
		})
	}
}

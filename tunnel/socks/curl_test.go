package socks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestCurl: curl, a real client, through the test proxy to a local HTTP
// server: SOCKS5 with names resolved by the proxy (socks5h) and without,
// HTTP CONNECT (curl -p), with and without credentials; bodies checked by
// SHA-256, wrong credentials refused.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed; the hand-written clients of the other tests still run")
	}
	checkGoroutines(t)
	body := randomBytes(t, 1<<20)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) })
	web4 := httptest.NewServer(handler)
	t.Cleanup(web4.Close)
	port := web4.Listener.Addr().(*net.TCPAddr).Port

	var web6URL string
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		web6 := httptest.NewUnstartedServer(handler)
		web6.Listener.Close()
		web6.Listener = ln
		web6.Start()
		t.Cleanup(web6.Close)
		web6URL = web6.URL
	}

	open := startProxy(t, Config{}, nil)
	authErrs := make(chan error, 8)
	creds := Config{Username: "alice", Password: "s3cret"}
	locked := startProxy(t, creds, authErrs)

	cases := []struct {
		name    string
		args    []string
		url     string
		wantErr error // from the proxy's Accept; nil: the body arrives
	}{
		{"socks5-hostname", []string{"--socks5-hostname", open.Addr()}, fmt.Sprintf("http://localhost:%d/", port), nil},
		{"socks5-ip", []string{"--socks5", open.Addr()}, web4.URL, nil},
		{"socks5h-ipv6", []string{"-x", "socks5h://" + open.Addr()}, web6URL, nil},
		{"socks5h-auth", []string{"-x", "socks5h://alice:s3cret@" + locked.Addr()}, fmt.Sprintf("http://localhost:%d/", port), nil},
		{"socks5h-wrong-password", []string{"-x", "socks5h://alice:guess@" + locked.Addr()}, web4.URL, ErrAuth},
		{"socks5h-no-credentials", []string{"-x", "socks5h://" + locked.Addr()}, web4.URL, ErrNoAcceptableMethod},
		{"http-connect", []string{"-p", "-x", "http://" + open.Addr()}, web4.URL, nil},
		{"http-connect-name", []string{"-p", "-x", "http://" + open.Addr()}, fmt.Sprintf("http://localhost:%d/", port), nil},
		{"http-connect-ipv6", []string{"-p", "-x", "http://" + open.Addr()}, web6URL, nil},
		{"http-connect-auth", []string{"-p", "-x", "http://alice:s3cret@" + locked.Addr()}, web4.URL, nil},
		{"http-connect-wrong-password", []string{"-p", "-x", "http://alice:guess@" + locked.Addr()}, web4.URL, ErrAuth},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.url == "" {
				t.Skip("no IPv6 loopback")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := append([]string{"-q", "-sS", "--fail", "--max-time", "15"}, c.args...)
			cmd := exec.CommandContext(ctx, curl, append(args, c.url)...)
			cmd.Env = withoutProxyEnv()
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if c.wantErr == nil {
				if err != nil {
					t.Fatalf("curl %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, stderr.Bytes())
				}
				if sha256.Sum256(stdout.Bytes()) != sha256.Sum256(body) {
					t.Fatalf("curl: %d bytes, SHA-256 differs from the %d served", stdout.Len(), len(body))
				}
				return
			}
			if err == nil {
				t.Fatalf("curl succeeded, want a refusal")
			}
			t.Logf("curl: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
			select {
			case perr := <-authErrs:
				if !errors.Is(perr, c.wantErr) {
					t.Fatalf("proxy: %v, want %v", perr, c.wantErr)
				}
			case <-time.After(ioTimeout):
				t.Fatal("the proxy reported no error")
			}
		})
	}
}

// withoutProxyEnv is the environment without the variables that would
// send curl elsewhere or keep it from its proxy (-q keeps it from .curlrc).
func withoutProxyEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasSuffix(strings.ToLower(name), "_proxy") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

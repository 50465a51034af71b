// Command smuxtun-client accepts local TCP connections and carries each one
// as a stream over a KCP or TCP link to smuxtun-server (or kcptun's server).
package main

import (
	"os"

	"github.com/smuxtun/smuxtun/cmd/internal/app"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version string

func main() {
	os.Exit(app.Main(app.Client, version, os.Args, os.Stdout, os.Stderr))
}

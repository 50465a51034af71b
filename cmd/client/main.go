// Command smuxtun-client accepts local TCP connections and carries each one
// as a stream over a KCP or TCP link to smuxtun-server (or kcptun's server).
package main

import (
	"os"

	"github.com/smuxtun/smuxtun/cmd/internal/app"
)

// version and commit are set at build time, for example
// go build -ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD)";
// without them --version falls back to what the Go toolchain recorded.
var version, commit string

func main() {
	os.Exit(app.Main(app.Client, version, commit, os.Args, os.Stdout, os.Stderr))
}

// Command smuxtun-server accepts smuxtun (or kcptun) clients over KCP or TCP
// and connects each of their streams to the configured target.
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
	os.Exit(app.Main(app.Server, version, commit, os.Args, os.Stdout, os.Stderr))
}

// Command smuxtun-server accepts smuxtun (or kcptun) clients over KCP or TCP
// and connects each of their streams to the configured target.
package main

import (
	"os"

	"github.com/smuxtun/smuxtun/cmd/internal/app"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version string

func main() {
	os.Exit(app.Main(app.Server, version, os.Args, os.Stdout, os.Stderr))
}

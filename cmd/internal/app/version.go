package app

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

func init() {
	// One line, to stdout, the same for both binaries.
	cli.VersionPrinter = func(c *cli.Context) {
		fmt.Fprintf(c.App.Writer, "%s %s\n", c.App.Name, c.App.Version)
	}
}

// versionString describes the build: the version stamped with
// -ldflags "-X main.version=..." (or else the module version), then the VCS
// commit and the Go version, e.g. "v1.2.0 (commit 1a2b3c4d5e6f, go1.26.8)".
func versionString(stamped string) string {
	v := stamped
	var details []string
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "-dirty"
				}
			}
		}
		if rev != "" {
			details = append(details, "commit "+shortRev(rev)+modified)
		}
	}
	if v == "" {
		v = "(devel)"
	}
	details = append(details, runtime.Version())
	return v + " (" + strings.Join(details, ", ") + ")"
}

func shortRev(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

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

// versionString describes the build: the stamped version (or else the
// module version), the commit (stamped, or else the one the toolchain
// recorded with -buildvcs) and the Go version, e.g.
// "v1.2.0 (commit 1a2b3c4d5e6f, go1.26.8)".
func versionString(stampedVersion, stampedCommit string) string {
	v := stampedVersion
	rev, modified := stampedCommit, ""
	var details []string
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if rev == "" {
					rev = s.Value
					for _, m := range bi.Settings {
						if m.Key == "vcs.modified" && m.Value == "true" {
							modified = "-dirty"
						}
					}
				}
			}
		}
	}
	if rev != "" {
		details = append(details, "commit "+shortRev(rev)+modified)
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

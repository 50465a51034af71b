//go:build !unix

package app

import (
	"io"
	"log/slog"
)

// dumpOnSignal does nothing where SIGUSR1 does not exist.
func dumpOnSignal(io.Writer, *slog.Logger) (stop func()) { return func() {} }

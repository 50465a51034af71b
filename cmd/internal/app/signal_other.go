//go:build !unix

package app

import "log/slog"

// dumpOnSignal does nothing where SIGUSR1 does not exist.
func dumpOnSignal(*slog.Logger) (stop func()) { return func() {} }

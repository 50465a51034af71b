package config

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnknownMode is returned for a mode name that is not in Modes.
var ErrUnknownMode = errors.New("unknown mode")

// ModeManual keeps NoDelay, Interval, Resend and NoCongestion as given.
const ModeManual = "manual"

// profile is one set of KCP nodelay parameters.
type profile struct{ noDelay, interval, resend, nc int }

// profiles are kcptun's; the numbers are part of what makes a smuxtun peer
// behave like the kcptun peer it replaces.
var profiles = map[string]profile{
	"normal": {0, 40, 2, 1},
	"fast":   {0, 30, 2, 1},
	"fast2":  {1, 20, 2, 1},
	"fast3":  {1, 10, 2, 1},
}

// Modes returns the mode names ApplyMode accepts, slowest first.
func Modes() []string {
	return []string{"normal", "fast", "fast2", "fast3", ModeManual}
}

// ApplyMode sets NoDelay, Interval, Resend and NoCongestion from Mode;
// "manual" keeps the values already there.
func (c *Common) ApplyMode() error {
	if c.Mode == ModeManual {
		return nil
	}
	p, ok := profiles[c.Mode]
	if !ok {
		return fmt.Errorf("mode %q: %w (valid: %s)", c.Mode, ErrUnknownMode, strings.Join(Modes(), ", "))
	}
	c.NoDelay, c.Interval, c.Resend, c.NoCongestion = p.noDelay, p.interval, p.resend, p.nc
	return nil
}

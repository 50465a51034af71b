// Package app is the command line of smuxtun-client and smuxtun-server:
// kcptun's flags bound to the configuration, the -c JSON file, the key from
// the environment, one-line errors, --version, and the generated man page and
// shell completion. What happens once the configuration is valid lives in
// run.go.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/tunnel"
	"github.com/urfave/cli/v2"
)

// Environment variables that supply the key when --key is not given.
const (
	envKey       = "SMUXTUN_KEY"
	envKcptunKey = "KCPTUN_KEY"
)

// Kind selects which binary Main runs as.
type Kind int

// The two binaries.
const (
	Client Kind = iota
	Server
)

// Name returns the binary's name.
func (k Kind) Name() string {
	if k == Server {
		return "smuxtun-server"
	}
	return "smuxtun-client"
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the tunnel could not start or stopped with an error
	exitUsage   = 2 // a flag, a config file or a setting is invalid
)

// usageError marks an error in what the operator asked for, as opposed to a
// failure while running.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// daemon is what tunnel.Client and tunnel.Server have in common.
type daemon interface {
	Serve(ctx context.Context) error
}

// binary is one of the two programs: its configuration, the flags bound to
// it and the few calls that differ between client and server.
type binary struct {
	kind     Kind
	usage    string
	common   *config.Common
	opts     []option
	load     func(path string) ([]config.IgnoredKey, error)
	validate func() error
	start    func(log *slog.Logger) (daemon, error)
	warnings []warning   // found by configure, logged by run once the logger exists
	plugin   *pluginMode // set when running as a SIP003 plugin (sip003.go)
}

// warning is a log line about the configuration that has to wait for the
// logger, which --log sets up after the configuration is read.
type warning struct {
	msg  string
	args []any
}

func newBinary(kind Kind) *binary {
	b := &binary{kind: kind}
	switch kind {
	case Server:
		cfg := config.DefaultServer()
		b.usage = "accept smuxtun or kcptun clients and connect their streams to a target"
		b.common = &cfg.Common
		b.opts = serverOptions(cfg)
		b.load = func(path string) ([]config.IgnoredKey, error) { return config.LoadJSON(path, cfg) }
		b.validate = cfg.Validate
		b.start = func(log *slog.Logger) (daemon, error) { return tunnel.NewServer(cfg, log) }
	default:
		cfg := config.DefaultClient()
		b.usage = "carry local TCP connections to a smuxtun or kcptun server"
		b.common = &cfg.Common
		b.opts = clientOptions(cfg)
		b.load = func(path string) ([]config.IgnoredKey, error) { return config.LoadJSON(path, cfg) }
		b.validate = cfg.Validate
		b.start = func(log *slog.Logger) (daemon, error) { return tunnel.NewClient(cfg, log) }
	}
	return b
}

// Main runs the binary with args (os.Args) and returns the exit code. Every
// error is reported as exactly one line on stderr.
// version and commit are the values stamped into the binary, possibly empty.
// The SIP003 variables, when set, turn the binary into a shadowsocks plugin
// (see sip003.go).
func Main(kind Kind, version, commit string, args []string, stdout, stderr io.Writer) int {
	return mainEnv(kind, version, commit, args, os.Getenv, stdout, stderr)
}

// mainEnv is Main reading the SIP003 variables through getenv.
func mainEnv(kind Kind, version, commit string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	b := newBinary(kind)
	args, err := b.pluginArgs(args, getenv)
	if err == nil {
		ctx, cancel := b.pluginContext(os.Getppid, parentCheck)
		err = newApp(b, versionString(version, commit), stdout, stderr).RunContext(ctx, args)
		cancel()
	}
	if err == nil {
		return exitOK
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintf(stderr, "%s: %s\n", kind.Name(), msg)
	if errors.As(err, new(usageError)) {
		return exitUsage
	}
	return exitFailure
}

// newApp builds the urfave/cli application for b; version is the full
// --version text.
func newApp(b *binary, version string, stdout, stderr io.Writer) *cli.App {
	name := b.kind.Name()
	flags := make([]cli.Flag, 0, len(b.opts)+3)
	for _, o := range b.opts {
		flags = append(flags, o.flag)
	}
	flags = append(flags,
		&cli.StringFlag{
			Name: "config", Aliases: []string{"c"}, Category: catOps, TakesFile: true,
			Usage: "read settings from a kcptun JSON file (keys are the flag names); flags given on the command line win over the file",
		},
		&cli.BoolFlag{Name: flagGenMan, Hidden: true, Usage: "print the man page and exit"},
		&cli.StringFlag{Name: flagGenCompletion, Hidden: true, Usage: "print the completion script for bash, zsh or fish and exit"},
	)
	return &cli.App{
		Name:      name,
		HelpName:  name,
		Usage:     b.usage,
		UsageText: name + " [flags]",
		Description: "A kcptun-compatible tunnel: every TCP connection becomes one smux stream over a single " +
			"KCP (UDP) or TCP link. Settings come from, in order of precedence: flags given on the command line, " +
			"the -c JSON file, $" + envKey + " or $" + envKcptunKey + " (the key only), the defaults shown below. " +
			"Started by shadowsocks as a SIP003 plugin ($SS_REMOTE_HOST, $SS_REMOTE_PORT, $SS_LOCAL_HOST and $SS_LOCAL_PORT set), " +
			"it takes its addresses from those variables and its flags from $SS_PLUGIN_OPTIONS, without dashes: key=...;crypt=aes-128;mode=fast2.",
		Version:         version,
		Flags:           flags,
		HideHelpCommand: true,
		Writer:          stdout,
		ErrWriter:       stderr,
		// urfave/cli would print the whole help after a bad flag; one line is enough.
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			msg := err.Error()
			if flag, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
				msg = "unknown flag " + flag
			}
			return usagef("%s (see --help)", msg)
		},
		// Main decides the exit code; urfave/cli must not exit on its own.
		ExitErrHandler: func(*cli.Context, error) {},
		Action: func(c *cli.Context) error {
			if c.Bool(flagGenMan) {
				return writeMan(c.App, stdout)
			}
			if sh := c.String(flagGenCompletion); sh != "" {
				return writeCompletion(c.App, sh, stdout)
			}
			// kcptun's command line has a help command; its users type it.
			if c.NArg() == 1 && (c.Args().First() == "help" || c.Args().First() == "h") {
				return cli.ShowAppHelp(c)
			}
			if c.NArg() > 0 {
				return usagef("unexpected argument %q: %s takes flags only (see --help)", c.Args().First(), name)
			}
			if err := b.configure(c); err != nil {
				return err
			}
			return run(c.Context, b, c.App.Version, stderr)
		},
	}
}

// configure layers the settings: defaults, then the -c file, then flags
// given on the command line; the key falls back to the environment. It
// returns a usageError naming the flag or key at fault, and keeps in
// b.warnings what the file holds that this binary ignores.
func (b *binary) configure(c *cli.Context) error {
	file := c.String("config")
	defaultPprofAddr := b.common.PprofAddr
	if file != "" {
		ignored, err := b.load(file)
		if err != nil {
			return usageError{err}
		}
		if len(ignored) > 0 {
			// One line for all of them: every such key belongs to the other
			// side (a file shared between both ends, as kcptun allows).
			keys := make([]string, len(ignored))
			for i, k := range ignored {
				keys[i] = k.Key
			}
			side := strings.TrimPrefix(b.kind.Name(), "smuxtun-")
			b.warnings = append(b.warnings, warning{
				msg:  fmt.Sprintf("config file: %s settings; the %s ignores them", ignored[0].Owner, side),
				args: []any{"file", file, "keys", strings.Join(keys, ",")},
			})
		}
	}
	filePprofAddr := b.common.PprofAddr != defaultPprofAddr
	for _, o := range b.opts {
		o.apply(c)
	}
	if b.common.Key == "" && !c.IsSet("key") {
		b.common.Key = keyFromEnv()
	}
	if err := b.validate(); err != nil {
		return usageError{b.explain(c, err, file)}
	}
	for _, w := range b.common.QPPWarnings() {
		b.warnings = append(b.warnings, warning{msg: w})
	}
	// An address without the switch serves nothing: on the command line that
	// is a mistake; in a file it may be kept for the next debugging session.
	if !b.common.Pprof {
		if c.IsSet("pprofaddr") {
			return usagef("--pprofaddr %s has no effect without --pprof (add --pprof to serve the profiler there)", b.common.PprofAddr)
		}
		if filePprofAddr {
			b.warnings = append(b.warnings, warning{
				msg:  "config file: key has no effect while pprof is off; nothing is served",
				args: []any{"file", file, "key", "pprofaddr", "value", b.common.PprofAddr},
			})
		}
	}
	return nil
}

// keyFromEnv returns $SMUXTUN_KEY, or else $KCPTUN_KEY.
func keyFromEnv() string {
	if k := os.Getenv(envKey); k != "" {
		return k
	}
	return os.Getenv(envKcptunKey)
}

// explain says where a bad value came from: a flag, the file, or a default
// (which only happens for the key, or for a value a default depends on).
func (b *binary) explain(c *cli.Context, err error, file string) error {
	var fe *config.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	for _, o := range b.opts {
		if name := o.flag.Names()[0]; o.key == fe.Key && c.IsSet(name) {
			// The flag's own name: kcptun's --QPPCount is qpp-count in JSON.
			named := *fe
			named.Key = name
			return fmt.Errorf("--%w", &named)
		}
	}
	if file != "" && fe.Key != "key" {
		return fmt.Errorf("config file %s: %w", file, err)
	}
	return err
}

package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/smuxtun/smuxtun/config"
	"github.com/urfave/cli/v2"
)

// SIP003 plugin mode. A shadowsocks client or server (ss-local, ss-server)
// starts the binary with no arguments and the SS_* variables set (see
// config.Plugin): the addresses become --localaddr/--remoteaddr or
// --listen/--target, and each key=value of SS_PLUGIN_OPTIONS becomes
// --key=value, so the options are the flag names without dashes.
//
// Flags on the command line (shadowsocks-rust's plugin_args, a wrapper
// script) are read as well, but a setting may come from one place only: a
// flag given both on the command line and in SS_PLUGIN_OPTIONS, or an
// address flag on the command line, is refused rather than one silently
// winning. A -c file on either side works as usual: the SS_* addresses and
// the options win over it, as flags do.

// errParentGone is the cause of a shutdown because shadowsocks went away
// without stopping its plugin (killed, or crashed): the plugin would
// otherwise hold its port and keep its sessions open for no one.
var errParentGone = errors.New("the shadowsocks process that started the plugin has exited")

// parentCheck is how often a plugin looks for its parent.
const parentCheck = time.Second

// pluginMode is what the binary was told as a plugin, kept for the log line
// and for naming SS_PLUGIN_OPTIONS in errors.
type pluginMode struct {
	plugin *config.Plugin
	// fromOptions maps the JSON key of each setting SS_PLUGIN_OPTIONS gives
	// to the option's name as written there.
	fromOptions map[string]string
}

// addressVars names the variables behind each address key.
var addressVars = map[string]string{
	"localaddr":  config.EnvLocalHost + " and " + config.EnvLocalPort,
	"target":     config.EnvLocalHost + " and " + config.EnvLocalPort,
	"remoteaddr": config.EnvRemoteHost + " and " + config.EnvRemotePort,
	"listen":     config.EnvRemoteHost + " and " + config.EnvRemotePort,
}

// pluginArgs returns the command line to run: args itself when the SIP003
// variables are not set, otherwise args[0], the flags the variables stand
// for, then the flags of args. It refuses, with a usageError naming the
// variable and the option, an option that is no flag of this binary, a
// value the flag cannot parse, and a setting given in both places.
func (b *binary) pluginArgs(args []string, getenv func(string) string) ([]string, error) {
	p, err := config.PluginFromEnv(getenv)
	if err != nil {
		return nil, usageError{err}
	}
	if p == nil || len(args) == 0 {
		return args, nil
	}
	var addrs []string
	if b.kind == Server {
		addrs, err = p.ServerArgs()
	} else {
		addrs, err = p.ClientArgs()
	}
	if err != nil {
		return nil, usageError{err}
	}
	flags := pluginFlags(b.kind)
	mode := &pluginMode{plugin: p, fromOptions: map[string]string{}}
	if err := mode.checkOptions(b.kind, flags); err != nil {
		return nil, err
	}
	if err := mode.checkCommandLine(args[1:], flags); err != nil {
		return nil, err
	}

	b.plugin = mode
	validate := b.validate
	b.validate = func() error { return mode.explain(validate()) }

	out := make([]string, 0, len(args)+len(addrs))
	out = append(out, args[0])
	out = append(out, addrs...)
	return append(out, args[1:]...), nil
}

// pluginFlags returns the flags a plugin option may name, by every name
// and alias: the binary's settings and --config. They belong to a
// throwaway binary, because applying a urfave/cli flag to a flag.FlagSet
// may write through to the configuration it is bound to.
func pluginFlags(kind Kind) map[string]*option {
	scratch := newBinary(kind)
	flags := map[string]*option{}
	for i := range scratch.opts {
		for _, name := range scratch.opts[i].flag.Names() {
			flags[name] = &scratch.opts[i]
		}
	}
	configFlag := option{flag: &cli.StringFlag{Name: "config", Aliases: []string{"c"}}, key: "config"}
	for _, name := range configFlag.flag.Names() {
		flags[name] = &configFlag
	}
	return flags
}

// checkOptions refuses an option that names no flag, a value its flag
// cannot parse and a setting given twice, and records where each setting
// came from.
func (m *pluginMode) checkOptions(kind Kind, flags map[string]*option) error {
	for _, o := range m.plugin.Options {
		opt, ok := flags[o.Name]
		if !ok {
			return usagef("%w: %s: unknown option %q; the options are %s's flag names without dashes, such as crypt=aes-128 or nocomp (see --help)",
				config.ErrPlugin, config.EnvPluginOptions, o.Name, kind.Name())
		}
		fs := flag.NewFlagSet(o.Name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		if err := opt.flag.Apply(fs); err != nil {
			return err
		}
		if err := fs.Parse([]string{o.Arg()}); err != nil {
			return usagef("%w: %s: option %s=%s: not a valid value for -%s (%s)",
				config.ErrPlugin, config.EnvPluginOptions, o.Name, o.Value, dashes(o.Name), parseReason(err))
		}
		if prev, ok := m.fromOptions[opt.key]; ok && !isSlice(opt.flag) {
			also := ""
			if prev != o.Name {
				also = " (also as " + prev + ")"
			}
			return usagef("%w: %s: option %s is given twice%s; give it once",
				config.ErrPlugin, config.EnvPluginOptions, o.Name, also)
		}
		m.fromOptions[opt.key] = o.Name
	}
	return nil
}

// checkCommandLine refuses flags of args that set what the SS_* variables
// set: an address, or a setting SS_PLUGIN_OPTIONS gives.
func (m *pluginMode) checkCommandLine(args []string, flags map[string]*option) error {
	fs := flag.NewFlagSet("command line", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	applied := map[*option]bool{}
	for _, opt := range flags {
		if !applied[opt] {
			applied[opt] = true
			if err := opt.flag.Apply(fs); err != nil {
				return err
			}
		}
	}
	// An error (an unknown flag, --help) stops the scan where the real parse
	// will report it; what was read up to there still counts.
	_ = fs.Parse(args)
	var conflict error
	fs.Visit(func(f *flag.Flag) {
		if conflict != nil {
			return
		}
		opt := flags[f.Name]
		if vars, ok := addressVars[opt.key]; ok {
			conflict = usagef("%w: -%s is given on the command line, but in plugin mode %s set it; drop the flag",
				config.ErrPlugin, dashes(f.Name), vars)
		} else if name, ok := m.fromOptions[opt.key]; ok {
			conflict = usagef("%w: -%s is given both on the command line and as %s in %s; give it in one place",
				config.ErrPlugin, dashes(f.Name), name, config.EnvPluginOptions)
		}
	})
	return conflict
}

// isSlice reports whether f may be given more than once, each adding a value.
func isSlice(f cli.Flag) bool {
	switch f.(type) {
	case *cli.StringSliceFlag, *cli.IntSliceFlag, *cli.Int64SliceFlag, *cli.UintSliceFlag, *cli.Uint64SliceFlag, *cli.Float64SliceFlag:
		return true
	}
	return false
}

// dashes returns the dashes that go before a flag name as --help shows it:
// one more for a long name.
func dashes(name string) string {
	if len(name) > 1 {
		return "-" + name
	}
	return name
}

// parseReason trims what package flag says about a bad value down to the
// reason: `invalid value "big" for flag -mtu: parse error` becomes "parse
// error".
func parseReason(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.HasPrefix(msg, "invalid ") {
		return msg[i+2:]
	}
	return msg
}

// explain names SS_PLUGIN_OPTIONS, or the address variables, in an error
// about a setting that came from them.
func (m *pluginMode) explain(err error) error {
	var fe *config.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	// The result no longer unwraps to the FieldError, so that the caller
	// does not attribute it to a flag again.
	if name, ok := m.fromOptions[fe.Key]; ok {
		named := *fe
		named.Key = name
		return fmt.Errorf("%w: %s: option %s", config.ErrPlugin, config.EnvPluginOptions, named.Error())
	}
	if vars, ok := addressVars[fe.Key]; ok {
		return fmt.Errorf("%w: %s (set by %s)", config.ErrPlugin, fe.Error(), vars)
	}
	return err
}

// logPluginMode writes the line that says the binary runs as a plugin and
// where it listens and connects.
func (b *binary) logPluginMode(log *slog.Logger) {
	if b.plugin == nil {
		return
	}
	p := b.plugin.plugin
	if b.kind == Server {
		log.Info("SIP003 plugin mode", "listen", p.Remote, "target", p.Local)
		return
	}
	log.Info("SIP003 plugin mode", "listen", p.Local, "remote", p.Remote)
}

// pluginContext returns the context the binary runs in: in plugin mode it
// ends, with errParentGone, once the process that started the binary is
// gone. A parent that exits leaves its children to another process (init
// or a subreaper), so the parent's id changes; this is polled rather than
// asked of the kernel (Linux's parent-death signal follows the thread that
// started the plugin, and a multi-threaded shadowsocks may end that thread
// long before itself). On Windows the recorded id never changes, so
// nothing is watched there.
// A parent that dies before the binary reads its id here (the first
// milliseconds after exec) goes unnoticed: that parent cannot be told from
// init starting the binary.
func (b *binary) pluginContext(getppid func() int, every time.Duration) (context.Context, context.CancelFunc) {
	if b.plugin == nil || runtime.GOOS == "windows" {
		return context.WithCancel(context.Background())
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	parent := getppid()
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if getppid() != parent {
					cancel(errParentGone)
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(nil) }
}

// shutdownReason returns the log attributes that say why the binary
// stopped when that was not a signal: its shadowsocks parent is gone.
func shutdownReason(ctx context.Context) []any {
	if cause := context.Cause(ctx); errors.Is(cause, errParentGone) {
		return []any{"reason", cause.Error()}
	}
	return nil
}

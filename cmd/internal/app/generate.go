package app

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/smuxtun/smuxtun/config"
	"github.com/urfave/cli/v2"
)

// Hidden flags the Makefile uses to produce the man page and completions.
const (
	flagGenMan        = "generate-man"
	flagGenCompletion = "generate-completion"
)

// writeMan prints the man page (section 1) built from the flag definitions.
func writeMan(a *cli.App, w io.Writer) error {
	man, err := a.ToManWithSection(1)
	if err != nil {
		return fmt.Errorf("man page: %w", err)
	}
	_, err = io.WriteString(w, man)
	return err
}

// writeCompletion prints a completion script for shell.
func writeCompletion(a *cli.App, shell string, w io.Writer) error {
	var script string
	switch shell {
	case "bash":
		script = bashCompletion(a)
	case "zsh":
		// zsh runs bash completion functions through bashcompinit.
		script = "#compdef " + a.Name + "\nautoload -U +X bashcompinit && bashcompinit\n" + bashCompletion(a)
	case "fish":
		s, err := a.ToFishCompletion()
		if err != nil {
			return fmt.Errorf("fish completion: %w", err)
		}
		script = s
	default:
		return usagef("--%s %q: want bash, zsh or fish", flagGenCompletion, shell)
	}
	_, err := io.WriteString(w, script)
	return err
}

// bashCompletion builds a static bash completion function from the visible
// flags; cipher, mode and transport names complete from their lists and
// file-valued flags complete file names.
func bashCompletion(a *cli.App) string {
	var all []string
	choices := map[string][]string{
		"crypt":     config.Ciphers(),
		"mode":      config.Modes(),
		"transport": {config.TransportKCP, config.TransportTCP},
	}
	var files, values []string
	for _, f := range a.VisibleFlags() {
		var spelled []string
		for _, n := range f.Names() {
			if len(n) == 1 {
				spelled = append(spelled, "-"+n)
			} else {
				spelled = append(spelled, "--"+n)
			}
		}
		all = append(all, spelled...)
		df, ok := f.(cli.DocGenerationFlag)
		if !ok || !df.TakesValue() {
			continue
		}
		name := f.Names()[0]
		switch {
		case slices.Contains([]string{"config", "log", "snmplog"}, name):
			files = append(files, spelled...)
		case choices[name] != nil:
			for _, s := range spelled {
				values = append(values, fmt.Sprintf("\t\t%s) COMPREPLY=($(compgen -W %q -- \"$cur\")); return ;;", s, strings.Join(choices[name], " ")))
			}
		default:
			values = append(values, fmt.Sprintf("\t\t%s) return ;;", strings.Join(spelled, "|")))
		}
	}
	fn := "_" + strings.ReplaceAll(a.Name, "-", "_")
	var b strings.Builder
	fmt.Fprintf(&b, "# bash completion for %s, generated from its flags\n", a.Name)
	fmt.Fprintf(&b, "%s() {\n\tlocal cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n", fn)
	b.WriteString("\tcase \"$prev\" in\n")
	if len(files) > 0 {
		fmt.Fprintf(&b, "\t\t%s) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n", strings.Join(files, "|"))
	}
	for _, v := range values {
		b.WriteString(v + "\n")
	}
	b.WriteString("\tesac\n")
	fmt.Fprintf(&b, "\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n}\n", strings.Join(all, " "))
	fmt.Fprintf(&b, "complete -F %s %s\n", fn, a.Name)
	return b.String()
}

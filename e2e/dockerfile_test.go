package e2e

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/smuxtun/smuxtun/internal/demo"
)

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

type stage struct {
	from   string // the base image
	name   string // AS name, if any
	instrs []instruction
}

func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []stage
	var cur strings.Builder
	start := 0
	flush := func() {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if in.cmd == "FROM" {
			fields := strings.Fields(in.args)
			var st stage
			for i := 0; i < len(fields); i++ {
				switch {
				case strings.HasPrefix(fields[i], "--"):
				case strings.EqualFold(fields[i], "AS") && i+1 < len(fields):
					st.name = fields[i+1]
					i++
				default:
					st.from = fields[i]
				}
			}
			stages = append(stages, st)
			return
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("line %d: %s before the first FROM", in.line, in.cmd)
			}
			return
		}
		stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
	}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			cur.WriteString(body)
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// TestDockerfile checks what matters in the Dockerfile without a Docker engine:
// a build stage that compiles both commands statically, a final stage that holds
// both binaries and runs as a non-root user, the ports, the entrypoint, and a
// build context that keeps what the build needs.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a final stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.from, "golang:1.26") {
		t.Errorf("build stage from %q, want golang:1.26", build.from)
	}
	if build.name == "" {
		t.Fatal("the build stage has no name for COPY --from")
	}

	var buildRun string
	for _, in := range build.instrs {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			buildRun = in.args
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/server", "./cmd/client", "main.version="} {
		if !strings.Contains(buildRun, want) {
			t.Errorf("the build stage's go build RUN lacks %q: %q", want, buildRun)
		}
	}
	if strings.Count(buildRun, "CGO_ENABLED=0") < 2 {
		t.Errorf("CGO_ENABLED=0 must apply to both go build commands: %q", buildRun)
	}

	var user, entry string
	var exposed, copied []string
	for _, in := range final.instrs {
		switch in.cmd {
		case "USER":
			user = in.args
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "ENTRYPOINT":
			entry = in.args
		case "COPY":
			if strings.Contains(in.args, "--from="+build.name) {
				copied = append(copied, strings.Fields(in.args)...)
			}
		}
	}
	if name, _, _ := strings.Cut(user, ":"); name == "" || name == "root" || name == "0" {
		t.Errorf("final stage USER %q, want a non-root user", user)
	}
	for _, port := range []string{"29900/udp", "29900/tcp", "12948/tcp"} {
		if !slices.Contains(exposed, port) && !(strings.HasSuffix(port, "/tcp") && slices.Contains(exposed, strings.TrimSuffix(port, "/tcp"))) {
			t.Errorf("EXPOSE lacks %s (has %v)", port, exposed)
		}
	}
	for _, bin := range []string{demo.ServerBinary, demo.ClientBinary} {
		i := slices.IndexFunc(copied, func(s string) bool { return strings.HasSuffix(s, "/"+bin) })
		if i < 0 {
			t.Errorf("the final stage does not copy %s from the build stage (COPY args %v)", bin, copied)
		} else if !strings.Contains(buildRun, "-o "+copied[i]+" ") {
			t.Errorf("the final stage copies %s, which the build stage does not write (-o)", copied[i])
		}
	}
	var argv []string
	if err := json.Unmarshal([]byte(entry), &argv); err != nil || len(argv) == 0 {
		t.Errorf("ENTRYPOINT %q: want the exec form, a JSON array", entry)
	} else if base := filepath.Base(argv[0]); base != demo.ServerBinary && base != demo.ClientBinary {
		t.Errorf("ENTRYPOINT runs %q, want one of the binaries", argv[0])
	}

	t.Run("dockerignore-keeps-the-sources", func(t *testing.T) {
		checkDockerignore(t)
	})
	t.Run("same-build-static-binaries", func(t *testing.T) {
		runDockerBuild(t, buildRun)
	})
	t.Run("hadolint", func(t *testing.T) {
		hadolint, err := exec.LookPath("hadolint")
		if err != nil {
			t.Skip("hadolint is not installed; the checks above stand in for it")
		}
		if out, err := exec.Command(hadolint, filepath.Join(repoRoot, "Dockerfile")).CombinedOutput(); err != nil {
			t.Errorf("hadolint: %v\n%s", err, out)
		}
	})
}

// runDockerBuild runs the build stage's go build command itself (with /out/
// pointing at a temporary folder, and the ARGs a linux build on this machine
// would get) and checks that the binaries are static and run.
func runDockerBuild(t *testing.T, run string) {
	if runtime.GOOS != "linux" {
		t.Skip("checks linux ELF binaries")
	}
	out := t.TempDir()
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(run, "/out/", out+"/"))
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "VERSION="+testVersion, "TARGETOS=linux", "TARGETARCH="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build command failed: %v\n%s", err, b)
	}
	for _, bin := range []string{demo.ServerBinary, demo.ClientBinary} {
		path := filepath.Join(out, bin)
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has a program interpreter: not a static binary", bin)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s needs shared libraries %v: not a static binary", bin, libs)
		}
		f.Close()
		b, err := exec.Command(path, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(b), testVersion) {
			t.Errorf("%s --version: %v, want %q in:\n%s", bin, err, testVersion, b)
		}
	}
}

// checkDockerignore: no pattern in .dockerignore may drop go.mod, go.sum or a
// folder of this module that the two commands import.
func checkDockerignore(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goTool(), "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "./cmd/client", "./cmd/server")
	cmd.Dir = repoRoot
	listed, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	needed := []string{"go.mod", "go.sum"}
	for _, dir := range strings.Fields(string(listed)) {
		if rel, err := filepath.Rel(repoRoot, dir); err == nil && !strings.HasPrefix(rel, "..") {
			needed = append(needed, filepath.ToSlash(rel))
		}
	}
	for _, pat := range strings.Split(string(raw), "\n") {
		pat = strings.TrimSpace(pat)
		if pat == "" || strings.HasPrefix(pat, "#") || strings.HasPrefix(pat, "!") {
			continue
		}
		pat = strings.TrimPrefix(strings.TrimSuffix(pat, "/"), "/")
		for _, path := range needed {
			// A pattern drops a path if it matches the path or one of its parents.
			parts := strings.Split(path, "/")
			for i := 1; i <= len(parts); i++ {
				if ok, _ := filepath.Match(pat, strings.Join(parts[:i], "/")); ok {
					t.Errorf(".dockerignore pattern %q drops %s, which the build needs", pat, path)
				}
			}
		}
	}
}

# smuxtun — build, test and ship.
#
#   make build     bin/smuxtun-client and bin/smuxtun-server
#   make test      go vet, then every test with the race detector
#   make demo      the whole tunnel on loopback, with a verified transfer
#   make bench     the mux and tunnel benchmarks (5 runs each, for benchstat)
#   make bench-wan smuxtun against the kcptun-style reference stack on four
#                  emulated internet paths (~14 min; BENCH_WAN_REPS, BENCH_WAN_BIGWIN)
#   make bench-rawtcp  --tcp against the plain UDP tunnel between two network
#                  namespaces, throughput and CPU per GB (root, iptables; ~2 min;
#                  RAWTCP_REPS, RAWTCP_MIB)
#   make fuzz      every Fuzz target for FUZZTIME each
#   make lint      gofmt, go vet, the Dockerfile and the systemd units
#   make release   static binaries for every platform in dist/, with SHA256SUMS,
#                  then checks them (scripts/check-release.sh)
#   make man       man pages in man/ (generated from the CLI definitions)
#   make completion  bash, zsh and fish completion scripts in completion/
#   make systemd-check  boots a container with systemd and runs the units in it (root)
#   make clean

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin
DIST     := dist
FUZZTIME ?= 20s
# Fast enough for the race detector on a 2-core machine; the e2e package runs real processes.
TESTTIMEOUT ?= 10m

CMDS := client server

# Release matrix: GOOS/GOARCH. linux/arm is built for ARMv7 and linux/mipsle with
# soft float (most routers have no FPU); override with GOARM=... / GOMIPS=...
PLATFORMS := linux/amd64 linux/arm64 linux/arm linux/mipsle \
             darwin/amd64 darwin/arm64 windows/amd64 freebsd/amd64
GOARM  ?= 7
GOMIPS ?= softfloat

.PHONY: all build test demo bench bench-wan bench-rawtcp fuzz lint release man completion systemd-check clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/smuxtun-client ./cmd/client
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/smuxtun-server ./cmd/server

test:
	$(GO) vet ./...
	$(GO) test -race -timeout $(TESTTIMEOUT) ./...

# The demo program starts a target, the server and the client from bin/ on
# 127.0.0.1, pushes DEMOSIZE through the tunnel and stops everything it started.
DEMOSIZE ?= 256MiB
demo: build
	$(GO) build -o $(BIN)/smuxtun-demo ./internal/demo/cmd/demo
	$(BIN)/smuxtun-demo -bin $(BIN) -size $(DEMOSIZE)

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./mux/ ./tunnel/

# Both stacks run as processes at their default flags, each through its own
# internal/netem relay; results go to bench-wan/ (CSV, PNG) and stdout (Markdown).
# refkcptun is benchmark tooling and is never part of the smuxtun binaries.
bench-wan: build
	$(GO) build -o $(BIN)/refkcptun ./internal/refstack/cmd/refkcptun
	$(GO) build -o $(BIN)/benchwan ./internal/netem/cmd/benchwan
	$(BIN)/benchwan -bin $(BIN) -out bench-wan

# kcptun's --tcp beside UDP: the same download through both binaries between
# two network namespaces the test creates, RAWTCP_REPS times each, interleaved.
RAWTCP_REPS ?= 5
RAWTCP_MIB  ?= 256
bench-rawtcp:
	SMUXTUN_BENCH_RAWTCP=1 RAWTCP_REPS=$(RAWTCP_REPS) RAWTCP_MIB=$(RAWTCP_MIB) \
		$(GO) test -count=1 -timeout 30m -run '^TestRawTCPCost$$' -v ./e2e/

# Runs each Fuzz target found in the tree, one at a time, for FUZZTIME.
fuzz:
	@set -e; \
	for file in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
		dir=$$(dirname $$file); \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
			echo "== $$dir $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$dir; \
		done; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go') $$(git ls-files --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt -l reports:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v hadolint >/dev/null 2>&1; then \
		echo "hadolint Dockerfile"; hadolint Dockerfile; \
	elif command -v npx >/dev/null 2>&1; then \
		echo "hadolint not installed: dockerfile-utils lint Dockerfile (from npm)"; \
		npx --yes dockerfile-utils@0.16.3 lint Dockerfile; \
	else \
		echo "no Dockerfile linter installed: TestDockerfile in e2e/ checks it"; \
	fi
	@if command -v systemd-analyze >/dev/null 2>&1; then \
		$(GO) test -count=1 -run 'TestSystemdUnits' ./e2e/; \
	else \
		echo "systemd-analyze not installed: skipping the unit check"; \
	fi

# Static (CGO_ENABLED=0), reproducible (-trimpath) binaries, one pair per platform.
release:
	@rm -rf $(DIST) && mkdir -p $(DIST)
	@set -e; for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; ext=; \
		[ "$$os" = windows ] && ext=.exe; \
		for c in $(CMDS); do \
			out=$(DIST)/smuxtun-$$c-$$os-$$arch$$ext; \
			echo "build $$out"; \
			CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$(GOARM) GOMIPS=$(GOMIPS) \
				$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $$out ./cmd/$$c; \
		done; \
	done
	cd $(DIST) && sha256sum smuxtun-* > SHA256SUMS
	scripts/check-release.sh $(DIST) $(VERSION)

man: build
	@mkdir -p man
	$(BIN)/smuxtun-client --generate-man > man/smuxtun-client.1
	$(BIN)/smuxtun-server --generate-man > man/smuxtun-server.1
	@echo "man/smuxtun-client.1 man/smuxtun-server.1 (view with: man -l man/smuxtun-client.1)"

completion: build
	@mkdir -p completion
	@set -e; for c in $(CMDS); do for sh in bash zsh fish; do \
		$(BIN)/smuxtun-$$c --generate-completion $$sh > completion/smuxtun-$$c.$$sh; \
	done; done
	@ls completion/

# Runs the units under a real systemd in a container (needs root; downloads a
# Debian root file system the first time). Not part of `make test`.
systemd-check:
	scripts/systemd-boot-check.sh

clean:
	rm -rf $(BIN) $(DIST) man completion bench-wan

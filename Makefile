# caretaker — see README.md. `make demo` and `make test` are all a fresh
# Debian 12 machine needs: both install the system packages they lack first
# (.ci/install-deps.sh, as root).
GO        ?= go
BIN       := bin/caretaker
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
PKGS      := ./...
# Packages whose tests use golden files (only these understand -update).
GOLDEN_PKGS := ./tui/...

.PHONY: all build test test-short test-race test-real fuzz crash lint fmt-check vet bench demo golden-update clean deps

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/caretaker

# The crash suite (simulator labs, CPU-bound) runs beside `go test`, whose
# real-engine part mostly waits for K3s: measured, the two one after the
# other left half of the two cores idle. Fuzzing follows, 10 s a target
# here (make fuzz: 20 s).
test: deps lint
	@mkdir -p bin; \
	$(MAKE) --no-print-directory crash > bin/crash.out 2>&1 & crash=$$!; \
	$(GO) test -count=1 -timeout 60m $(PKGS); status=$$?; \
	wait $$crash; crash_status=$$?; \
	echo "make crash (ran beside go test):"; cat bin/crash.out; \
	if [ $$status -ne 0 ] || [ $$crash_status -ne 0 ]; then exit 1; fi
	$(MAKE) --no-print-directory fuzz FUZZTIME=10s

# Crash consistency (issue 12): rotate-ca on the simulator killed with
# SIGKILL right after each of its journal entries, then resumed and undone
# (cmd/caretaker/crash_test.go): 158 cases (79 boundaries), 12-18 minutes on two cores, too
# long for the plain `go test ./...`, so it has its own target. Needs root
# (SCHED_FIFO, for kills that land exactly after an entry).
crash:
	@mkdir -p bin; CARETAKER_CRASH=1 $(GO) test -count=1 -timeout 40m -run '^TestCrashConsistency$$' -v ./cmd/caretaker/ > bin/crash.log 2>&1; \
	status=$$?; \
	sed -n '/crash consistency, boundary by boundary/,/lab closed/p;/^\(--- \|FAIL\|ok \|PASS\)/p' bin/crash.log; \
	echo "full log: bin/crash.log"; exit $$status

# Every Go fuzz target (package:Target), run FUZZTIME each with its seed
# corpus (f.Add, testdata/fuzz); `make test` runs them (CI). A crasher a
# run finds is written to the package's testdata/fuzz/<Target>/: fix the
# bug and keep the file as a seed. cmd/caretaker TestFuzzTargetsListed
# fails when a Fuzz function is missing here.
FUZZTIME ?= 20s
FUZZ_TARGETS := \
	./internal/k3s:FuzzStripKey \
	./internal/k3s:FuzzReplaceToken \
	./internal/k3s:FuzzParseUnitArgs \
	./internal/k3s:FuzzWriteUnit \
	./internal/k3s:FuzzParseEnvFile \
	./internal/k3s:FuzzUnmarshalBootstrap \
	./runner/inventory:FuzzParse \
	./runner/transport/ssh:FuzzKnownHosts

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# The acceptance suite on the real engine alone (real K3s in systemd-nspawn
# nodes; CARETAKER_K3S_BINARY, default ../shared/k3s/k3s.xz).
test-real: deps
	$(GO) test -count=1 -timeout 40m -run 'TestAcceptance/real' -v ./cmd/caretaker/

test-short:
	$(GO) test -short -count=1 $(PKGS)

test-race:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

# golangci-lint, pinned, built into .tools/bin on first use (.golangci.yml:
# funlen 100, gocognit 40, errcheck, revive doc comments, staticcheck, goimports).
GOLANGCI_VERSION := v2.15.0
GOLANGCI := .tools/bin/golangci-lint

lint: fmt-check vet $(GOLANGCI)
	$(GOLANGCI) run ./...

$(GOLANGCI):
	GOBIN=$(CURDIR)/.tools/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

bench: deps build
	bash bench/run.sh

demo: deps build
	bash scripts/demo.sh

golden-update:
	$(GO) test $(GOLDEN_PKGS) -update

# Installs the system packages the tests need (as root, Debian 12); says
# what to run when not root.
deps:
	@bash .ci/install-deps.sh

clean:
	rm -rf bin

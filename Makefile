# caretaker — see README.md. `make demo` and `make test` are all a fresh
# machine needs (after .ci/run's installs, or `make deps`).
GO        ?= go
BIN       := bin/caretaker
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
PKGS      := ./...
# Packages whose tests use golden files (only these understand -update).
GOLDEN_PKGS := ./tui/...

.PHONY: all build test test-short test-race lint fmt-check vet bench demo golden-update clean deps

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/caretaker

test: lint
	$(GO) test -count=1 -timeout 15m $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

test-race:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

lint: fmt-check vet

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

bench: build
	bash bench/run.sh

demo: build
	bash scripts/demo.sh

golden-update:
	$(GO) test $(GOLDEN_PKGS) -update

# Installs the system packages the tests need (as root, Debian 12).
deps:
	bash .ci/install-deps.sh

clean:
	rm -rf bin

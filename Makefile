# Nightona: `make run` runs the bot on its embedded defaults; `make test` installs what the
# tests need and runs them. See README.md.

SHELL          := bash
GO             ?= go
DATA_DIR       ?= $(or $(NIGHTONA_DATA_DIR),.nightona)
CLAUDE_VERSION ?= 2.1.332
STATICCHECK    ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
VERSION        ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
TEST_FLAGS     ?= -race -count=1 -timeout 20m
BENCH_FLAGS    ?= -run '^$$' -bench . -benchmem
# Browser tests keep their screenshots here, one folder per test.
export NIGHTONA_TEST_ARTIFACTS ?= $(abspath $(DATA_DIR))/test-artifacts

.PHONY: all build run test bench lint tools test-deps clean

all: build

## build: the bot (bin/nightona) and the relay (bin/nightona-relay, static, for any Linux sandbox)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/nightona ./cmd/bot
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/nightona-relay ./cmd/relay

## tools: the pinned Claude Code CLI, into $(DATA_DIR)/tools unless `claude` is on PATH
tools:
	@scripts/install-claude.sh "$(DATA_DIR)" "$(CLAUDE_VERSION)" >/dev/null

## run: the bot on its embedded defaults (web console on http://localhost:8080)
run: build tools
	NIGHTONA_DATA_DIR="$(DATA_DIR)" ./bin/nightona

## test-deps: what the tests need besides Go: redis-server and the Claude Code CLI
test-deps: tools
	@scripts/test-deps.sh

## test: every test, with the race detector, against real Redis and the real CLI
test: test-deps
	$(GO) test $(TEST_FLAGS) ./...

## bench: the benchmarks, printing their figures
bench: test-deps
	$(GO) test $(BENCH_FLAGS) ./...

## lint: gofmt, go vet and staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf bin

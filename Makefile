# sockdiag_exporter: build, run, test, lint, benchmark.
# Every target installs what it needs (Debian/Ubuntu packages via apt).

CARGO   ?= cargo
BIN     := target/release/sockdiag_exporter
ARGS    ?=
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)
APT     := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends

.PHONY: all build run dump test deps lint bench soak golden fixtures clean

all: build

## build: the release binary
build:
	$(CARGO) build --release --locked

## run: build and serve /metrics on :19275 (pass flags with ARGS="--cache.ttl 5s")
run: build
	$(BIN) $(ARGS)

## dump: build and print one collection as a table
dump: build
	$(BIN) dump --format table $(ARGS)

## deps: tools the tests use: promtool and prometheus (Debian package prometheus), ip, unshare, curl (TLS interop), wrk (hostile clients)
deps:
	@command -v promtool >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && $(APT) prometheus iproute2 util-linux curl wrk; }
	@command -v promtool >/dev/null 2>&1 || { echo "promtool still missing after apt-get install prometheus" >&2; exit 1; }
	@command -v wrk >/dev/null 2>&1 || { echo "wrk still missing after apt-get install wrk" >&2; exit 1; }

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## test: lint, then every test (kernel tests need root and skip with a reason otherwise)
test: deps lint
	$(CARGO) test --locked

## bench: socket load of 10k/100k/1M in a private namespace vs baselines (root); BENCH_SIZES=10000,100000
bench:
	$(CARGO) build --release --locked
	$(CARGO) bench --locked --bench collect

## soak: 1M scrapes at full speed against 100k sockets with churn, RSS/fds/threads must stay flat (root; not in make test; see benches/soak.rs for SOAK_* settings)
soak:
	$(CARGO) build --release --locked
	nice -n 10 $(CARGO) bench --locked --bench soak

## golden: regenerate tests/golden/* from the recorded fixtures
golden:
	UPDATE_GOLDEN=1 $(CARGO) test --locked --test golden

## fixtures: re-record tests/fixtures/*.fixture from a real kernel (root)
fixtures: build
	unshare --net python3 tests/fixtures/record.py $(BIN) tests/fixtures
	UPDATE_GOLDEN=1 $(CARGO) test --locked --test golden

clean:
	$(CARGO) clean

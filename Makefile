# sockdiag_exporter: build, run, test, lint, benchmark.
# Every target installs what it needs (Debian/Ubuntu packages via apt).

CARGO   ?= cargo
BIN     := target/release/sockdiag_exporter
ARGS    ?=
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)
APT     := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends

.PHONY: all build run dump test deps lint bench golden fixtures fuzz clean

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

## deps: tools the tests use: promtool and prometheus (Debian package prometheus), ip, unshare, curl (TLS interop)
deps:
	@command -v promtool >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && $(APT) prometheus iproute2 util-linux curl; }
	@command -v promtool >/dev/null 2>&1 || { echo "promtool still missing after apt-get install prometheus" >&2; exit 1; }

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

## golden: regenerate tests/golden/* from the recorded fixtures
golden:
	UPDATE_GOLDEN=1 $(CARGO) test --locked --test golden

## fixtures: re-record tests/fixtures/*.fixture from a real kernel (root)
fixtures: build
	unshare --net python3 tests/fixtures/record.py $(BIN) tests/fixtures
	UPDATE_GOLDEN=1 $(CARGO) test --locked --test golden

## fuzz: run each cargo-fuzz target (fuzz/) for FUZZ_SECONDS (default 1800), one at a time, niced, then minimise its corpus
# libFuzzer needs nightly flags: RUSTC_BOOTSTRAP=1 allows them on stable. No
# sanitizer (-s none): the fuzzed path is safe Rust, so the bugs to find are
# panics, which libFuzzer catches without ASan; -a keeps overflow checks on.
# FUZZ_FLAGS="-fork=1 -ignore_crashes=1" keeps going after a crash (the
# crashes land in fuzz/artifacts/) for unattended runs.
FUZZ_SECONDS ?= 1800
FUZZ_TARGETS ?= argv netlink
FUZZ_FLAGS   ?=
FUZZ         := RUSTC_BOOTSTRAP=1 nice -n 10 $(CARGO) fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		$(FUZZ) run -O -a -s none $$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_FLAGS) || exit 1; \
		$(FUZZ) cmin -O -a -s none $$t || exit 1; \
	done

clean:
	$(CARGO) clean

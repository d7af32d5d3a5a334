# sockdiag_exporter: build, run, test, lint, benchmark.
# Every target installs what it needs (Debian/Ubuntu packages via apt).

CARGO   ?= cargo
BIN     := target/release/sockdiag_exporter
ARGS    ?=
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)
APT     := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends

.PHONY: all build run dump test deps lint bench bench-netns soak golden fixtures fuzz clean \
	pkg-deps baseline deb rpm package-test image image-deps

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

## deps: tools the tests use, as command:Debian-package pairs; whatever is missing is installed with apt-get
DEPS := promtool:prometheus ip:iproute2 unshare:util-linux curl:curl wrk:wrk slowhttptest:slowhttptest nft:nftables chromium:chromium systemd-socket-activate:systemd python3:python3
deps:
	@missing=""; for d in $(DEPS); do command -v $${d%%:*} >/dev/null 2>&1 || missing="$$missing $${d#*:}"; done; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && $(APT) $$missing; fi; \
	for d in $(DEPS); do command -v $${d%%:*} >/dev/null 2>&1 || { echo "$${d%%:*} still missing after apt-get install $${d#*:}" >&2; exit 1; }; done

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## test: lint, every test, the package tests; ends with the count of skipped tests. A test that cannot run here (kernel tests need root) skips with a SKIP line, but fails in CI (CI=true) or with SOCKDIAG_TEST_STRICT=1; SOCKDIAG_TEST_STRICT=0 allows skips under CI
SKIP_LOG := $(CURDIR)/target/test-skips.log
SKIP_REPORT = n=$$(wc -l < $(SKIP_LOG)); sed 's/^/SKIPPED: /' $(SKIP_LOG); echo "$$n tests skipped"
test: deps lint
	@mkdir -p $(dir $(SKIP_LOG)) && : > $(SKIP_LOG)
	SOCKDIAG_SKIP_LOG=$(SKIP_LOG) $(CARGO) test --locked || { $(SKIP_REPORT); exit 1; }
	SOCKDIAG_SKIP_LOG=$(SKIP_LOG) $(MAKE) package-test || { $(SKIP_REPORT); exit 1; }
	@$(SKIP_REPORT)

## bench: socket load of 10k/100k/1M in a private namespace vs baselines (root); BENCH_SIZES=10000,100000
bench:
	$(CARGO) build --release --locked
	$(CARGO) bench --locked --bench collect

## bench-netns: --collector.netns over 100 namespaces x 1k sockets vs `ss -N` per namespace, and next to a 1M-socket namespace with 100/500 empty and 100 busy namespaces (root; run under `flock /tmp/bench.lock`); NETNS_PARTS (ss, scale; hold keeps the scale load up for profiling by hand), NETNS_COUNT, NETNS_CONNECTIONS, NETNS_RUNS, NETNS_HOST_SOCKETS, NETNS_SCALE_RUNS, NETNS_SERVER_COLLECTIONS (scale also measures the server: VmHWM over gzip, plain and / scrapes)
bench-netns:
	$(CARGO) bench --locked --bench netns

## soak: 2000 collections (cache TTL 0, paced by the 4x rule) against 100k sockets with churn; fails on an RSS slope over 256 B/collection or fd/thread growth (root; not in make test; SOAK_* settings in benches/soak.rs)
soak:
	$(CARGO) build --release --locked
	nice -n 10 $(CARGO) bench --locked --bench soak

## golden: regenerate tests/golden/* from the recorded fixtures (nothing is written unless legacy = by-family)
golden:
	UPDATE_GOLDEN=1 $(CARGO) test --locked --test it golden::

## fixtures: re-record tests/fixtures/*.fixture from a real kernel (root), checked against /proc and ss first; then `make golden`
# record.py writes into a scratch directory and exits non-zero on any
# disagreement with the kernel's own view, which stops make here: neither the
# fixtures nor the golden files change. Only a checked recording is moved into
# tests/fixtures and turned into golden files.
FIXTURES_NEW := target/fixtures-new
fixtures: build
	rm -rf $(FIXTURES_NEW) && mkdir -p $(FIXTURES_NEW)
	unshare --net python3 tests/fixtures/record.py $(BIN) $(FIXTURES_NEW)
	unshare --net python3 tests/fixtures/record_tcp_info.py $(BIN) $(FIXTURES_NEW)
	mv $(FIXTURES_NEW)/all_legacy.fixture $(FIXTURES_NEW)/all_by_family.fixture \
		$(FIXTURES_NEW)/legacy_refused.fixture $(FIXTURES_NEW)/tcp_info_legacy.fixture \
		$(FIXTURES_NEW)/tcp_info_by_family.fixture tests/fixtures/
	rm -rf $(FIXTURES_NEW)
	$(MAKE) golden

## ---- Packaging (issue 5): see README "Installing from packages" ----
# Tool versions are pinned; each is installed only when missing. Python tools
# (the zig toolchain for the glibc baseline, kubernetes-validate) live in a
# venv outside the work tree so a fresh clone reuses them.
CARGO_DEB_VERSION      := 3.8.0
CARGO_RPM_VERSION      := 0.21.1
CARGO_ZIGBUILD_VERSION := 0.24.1
ZIGLANG_VERSION        := 0.14.1
K8S_VALIDATE_VERSION   := 1.37.0
# The packaged binary links against this glibc at most: RHEL/CentOS 7 and
# every later distribution (glibc 2.17).
GLIBC_BASELINE ?= 2.17
PKG_TARGET     := x86_64-unknown-linux-gnu
PKG_BIN        := target/$(PKG_TARGET)/release/sockdiag_exporter
PKG_OUT        := target/packaging
PKG_VENV       ?= $(HOME)/.cache/sockdiag_exporter/pkgtools-venv
PYTHON         ?= python3
CARGO_BIN      := $(HOME)/.cargo/bin
PKG_PATH       := $(PKG_VENV)/bin:$(CARGO_BIN):$(PATH)
APT_PKG        := lintian rpm rpmlint dpkg-dev binutils man-db systemd curl python3-venv

## pkg-deps: packaging tools: apt (lintian, rpm, rpmlint, ...), cargo-deb, cargo-generate-rpm, cargo-zigbuild, zig and kubernetes-validate (PyPI)
pkg-deps: deps
	@missing=""; for p in $(APT_PKG); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
		$(SUDO) apt-get update -qq && $(APT) -o DPkg::Lock::Timeout=600 $$missing; fi
	@PATH="$(PKG_PATH)"; \
	cargo deb --version 2>/dev/null | grep -qF "$(CARGO_DEB_VERSION)" || $(CARGO) install --locked cargo-deb --version $(CARGO_DEB_VERSION); \
	cargo generate-rpm --version 2>/dev/null | grep -qF "$(CARGO_RPM_VERSION)" || $(CARGO) install --locked cargo-generate-rpm --version $(CARGO_RPM_VERSION); \
	cargo-zigbuild --version 2>/dev/null | grep -qF "$(CARGO_ZIGBUILD_VERSION)" || $(CARGO) install --locked cargo-zigbuild --version $(CARGO_ZIGBUILD_VERSION)
	@[ -x $(PKG_VENV)/bin/pip ] || $(PYTHON) -m venv $(PKG_VENV)
	@$(PKG_VENV)/bin/python3 -c "import ziglang, kubernetes_validate, yaml" 2>/dev/null && \
	$(PKG_VENV)/bin/pip show ziglang kubernetes-validate 2>/dev/null | grep -qxF "Version: $(ZIGLANG_VERSION)" || \
		$(PKG_VENV)/bin/pip install -q --disable-pip-version-check ziglang==$(ZIGLANG_VERSION) kubernetes-validate==$(K8S_VALIDATE_VERSION) pyyaml

## baseline: the release binary linked against glibc $(GLIBC_BASELINE) (cargo-zigbuild), which the packages ship
baseline: pkg-deps
	PATH="$(PKG_PATH)" cargo zigbuild --release --locked --target $(PKG_TARGET).$(GLIBC_BASELINE)

## deb: target/packaging/sockdiag-exporter_VERSION-1_amd64.deb (DEB_VERSION=x overrides the version)
deb: baseline
	@mkdir -p $(PKG_OUT)
	PATH="$(PKG_PATH)" cargo deb --no-build --locked --target $(PKG_TARGET) --output $(PKG_OUT)/ $(if $(DEB_VERSION),--deb-version $(DEB_VERSION))

## rpm: target/packaging/sockdiag-exporter-VERSION-1.x86_64.rpm (RPM_RELEASE=n overrides the release)
rpm: baseline
	@mkdir -p $(PKG_OUT)/rpm
	sed 's|^EnvironmentFile=-/etc/default/|EnvironmentFile=-/etc/sysconfig/|' packaging/systemd/sockdiag_exporter.service > $(PKG_OUT)/rpm/sockdiag_exporter.service
	sed 's|^EnvironmentFile=-/etc/default/|EnvironmentFile=-/etc/sysconfig/|' packaging/systemd/socket/sockdiag_exporter-activated.service > $(PKG_OUT)/rpm/sockdiag_exporter-activated.service
	cp packaging/sockdiag_exporter.default $(PKG_OUT)/rpm/sockdiag_exporter.sysconfig
	gzip -9n < packaging/sockdiag_exporter.1 > $(PKG_OUT)/rpm/sockdiag_exporter.1.gz
	PATH="$(PKG_PATH)" cargo generate-rpm --target $(PKG_TARGET) --output $(PKG_OUT)/ $(if $(RPM_RELEASE),--set-metadata 'release = "$(RPM_RELEASE)"')

## image-deps: buildah (Debian package), which builds the image without a daemon or a registry
image-deps:
	@command -v buildah >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(APT) -o DPkg::Lock::Timeout=600 buildah; }

## image: OCI image archive target/image/sockdiag-exporter_VERSION.oci.tar, tagged $(IMAGE_NAME) (the name packaging/kubernetes uses): the baseline binary, the libraries ldd lists, user 65534, no shell (root: buildah's vfs storage)
PKG_VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE_NAME    ?= sockdiag-exporter:$(PKG_VERSION)
IMAGE_ARCHIVE := target/image/sockdiag-exporter_$(PKG_VERSION).oci.tar
image: baseline image-deps
	bash packaging/image/build.sh $(PKG_BIN) $(IMAGE_ARCHIVE) $(IMAGE_NAME)

## package-test: build deb, rpm and the image; install, run, upgrade, remove the packages; run the image's entrypoint in a chroot; lint; check unit, Kubernetes, Prometheus and Grafana files (root)
package-test: deb rpm image
	PATH="$(PKG_PATH)" PKG_VENV="$(PKG_VENV)" GLIBC_BASELINE=$(GLIBC_BASELINE) IMAGE_ARCHIVE=$(IMAGE_ARCHIVE) IMAGE_NAME=$(IMAGE_NAME) bash tests/package/run.sh
## fuzz: run each cargo-fuzz target (fuzz/) for FUZZ_SECONDS (default 1800), one at a time, niced, then minimise its corpus
# fuzz/regressions/<target>/ (inputs that once crashed) is read but never
# minimised away; cmin renames the seeds, so seeds.py writes them again.
# libFuzzer needs nightly flags: RUSTC_BOOTSTRAP=1 allows them on stable. No
# sanitizer (-s none): the fuzzed path is safe Rust, so the bugs to find are
# panics, which libFuzzer catches without ASan; -a keeps overflow checks on.
# FUZZ_FLAGS="-fork=1 -ignore_crashes=1" keeps going after a crash (the
# crashes land in fuzz/artifacts/) for unattended runs.
FUZZ_SECONDS ?= 1800
FUZZ_TARGETS ?= argv netlink http
FUZZ_FLAGS   ?=
FUZZ         := RUSTC_BOOTSTRAP=1 nice -n 10 $(CARGO) fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t regressions/$$t; \
		$(FUZZ) run -O -a -s none $$t corpus/$$t regressions/$$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_FLAGS) || exit 1; \
		$(FUZZ) cmin -O -a -s none $$t corpus/$$t || exit 1; \
	done
	python3 fuzz/seeds.py

clean:
	$(CARGO) clean

#!/usr/bin/env bash
# Package tests (issue 5), run by `make package-test` after `make deb rpm`:
#
#   baseline  the packaged binary needs glibc $GLIBC_BASELINE at most
#   lint      lintian and rpmlint, with the silenced tags from one filter file
#   deb       dpkg -i; user, files, conffile, unit; run the unit's ExecStart
#             as the service user and scrape it; upgrade with an edited
#             options file; dpkg -r, dpkg -P, nothing left behind
#   unit      systemd-analyze verify (silent) and security (OK or better),
#             with and without the netns drop-in
#   rpm       install into a scratch root (rpm --root --nodeps --noscripts),
#             file list, config flags, rpm -V, run the binary, upgrade keeps
#             an edited %config(noreplace) file; then the scriptlets, run by
#             rpm in scratch roots with stub useradd, systemctl and the like
#             (rpm_scriptlets.sh) through install, upgrade and erase
#   image     unpack the OCI archive of `make image` (index -> manifest ->
#             layers) and run its entrypoint in a chroot as its user: dump,
#             and a scrape of the server; a copy without one library must
#             fail; no shell; the Kubernetes manifests name the image
#   fleet     Prometheus rules and their unit tests, Grafana panel queries
#             against the golden output, Kubernetes manifests
#
# The deb part installs into the real system: it needs root, refuses to run
# if sockdiag-exporter is already installed, and purges it (and removes the
# system user if this run created it) on any exit. Processes it starts are
# killed by PID.
#
# Every tool it uses is looked for first; a missing one fails the run,
# named. Strict mode (CI set to anything but "", false or 0, or
# SOCKDIAG_TEST_STRICT=1) counts every SKIP as a failure. The last line is
# always "N passed, M failed, K skipped".
set -uo pipefail

cd "$(dirname "$0")/../.."
REPO=$PWD
GLIBC_BASELINE=${GLIBC_BASELINE:-2.17}
PKG_VENV=${PKG_VENV:-$HOME/.cache/sockdiag_exporter/pkgtools-venv}
OUT=$REPO/target/packaging
BIN=$REPO/target/x86_64-unknown-linux-gnu/release/sockdiag_exporter
PKG=sockdiag-exporter
SVC_USER=sockdiag_exporter
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
DEB=$OUT/${PKG}_${VERSION}-1_amd64.deb
RPM=$OUT/${PKG}-${VERSION}-1.x86_64.rpm
IMAGE_ARCHIVE=${IMAGE_ARCHIVE:-$REPO/target/image/${PKG}_${VERSION}.oci.tar}
IMAGE_NAME=${IMAGE_NAME:-$PKG:$VERSION}

passed=0
failed=0
skipped=0
STRICT=0
case "${CI:-}" in "" | false | FALSE | False | 0) ;; *) STRICT=1 ;; esac
[ "${SOCKDIAG_TEST_STRICT:-}" = 1 ] && STRICT=1
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
skip() {
    if [ "$STRICT" = 1 ]; then
        failed=$((failed + 1))
        echo "FAIL (strict mode: CI or SOCKDIAG_TEST_STRICT=1 set, a skip is a failure): SKIP: $*"
    else
        skipped=$((skipped + 1))
        echo "SKIP: $*"
    fi
}
summary() { echo "$passed passed, $failed failed, $skipped skipped"; }
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}

WORK=$(mktemp -d /tmp/sockdiag-pkgtest.XXXXXX)
PIDS=()
INSTALLED_BY_US=0
USER_EXISTED=0
getent passwd "$SVC_USER" >/dev/null && USER_EXISTED=1

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    if [ "$INSTALLED_BY_US" = 1 ]; then
        rm -f /etc/systemd/system/sockdiag_exporter.service.d/netns.conf
        rmdir /etc/systemd/system/sockdiag_exporter.service.d 2>/dev/null
        dpkg -P "$PKG" >/dev/null 2>&1
        if [ "$USER_EXISTED" = 0 ] && getent passwd "$SVC_USER" >/dev/null; then
            userdel "$SVC_USER" 2>/dev/null
            getent group "$SVC_USER" >/dev/null && groupdel "$SVC_USER" 2>/dev/null
        fi
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for f in "$BIN" "$DEB" "$RPM" "$IMAGE_ARCHIVE"; do
    [ -f "$f" ] || { echo "missing $f: run 'make deb rpm image' (or make package-test)" >&2; exit 1; }
done

# Every tool the checks below run, looked for before any check: a missing
# one would otherwise make checks that expect a failure (or no output) pass.
echo "=== tools"
missing=0
for tool in objdump readelf dpkg dpkg-deb dpkg-query lintian rpm rpmlint systemd-analyze promtool \
    curl setpriv unshare nsenter mount man getent ps sha256sum awk sed cargo dash ldd mknod chroot python3 \
    $([ "$(id -u)" = 0 ] && echo userdel groupdel); do
    if ! command -v "$tool" >/dev/null 2>&1; then
        fail "required tool missing: $tool (make pkg-deps installs the packaging tools)"
        missing=1
    fi
done
for sub in deb generate-rpm; do
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        fail "required tool missing: cargo-$sub (make pkg-deps installs it into ~/.cargo/bin)"
        missing=1
    fi
done
if ! "$PKG_VENV/bin/python3" -c 'import yaml' >/dev/null 2>&1; then
    fail "required tool missing: python3 with pyyaml in the venv $PKG_VENV (make pkg-deps)"
    missing=1
fi
if [ ! -x "$PKG_VENV/bin/kubernetes-validate" ]; then
    fail "required tool missing: $PKG_VENV/bin/kubernetes-validate (make pkg-deps)"
    missing=1
fi
if [ "$missing" = 1 ]; then
    summary
    exit 1
fi
ok "every tool the package test uses is installed"

# Highest GLIBC_x.y symbol version an ELF file needs; fails (and prints
# nothing) when objdump fails or lists no GLIBC_ version at all.
glibc_max() {
    local syms
    syms=$(objdump -T "$1") || return 1
    printf '%s\n' "$syms" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1 | grep .
}
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }
# check_glibc WHAT FILE: FILE needs at most glibc $GLIBC_BASELINE.
check_glibc() {
    local what=$1 file=$2 max
    if ! max=$(glibc_max "$file"); then
        fail "$what: objdump -T $file gave no GLIBC_ symbol versions"
        return
    fi
    check "$what needs glibc $max <= $GLIBC_BASELINE" version_le "$max" "$GLIBC_BASELINE"
}
# is_stripped FILE: readelf lists FILE's sections (it must find .text, so
# an empty or failed listing fails) and none is .symtab or .debug_*.
is_stripped() {
    local sections
    sections=$(readelf -S --wide "$1") || return 1
    printf '%s\n' "$sections" | grep -qE '\] \.text +PROGBITS' || { echo "readelf -S $1: no .text section listed"; return 1; }
    ! printf '%s\n' "$sections" | grep -E '\] \.(symtab|debug_[a-z_]+) '
}

# Starts COMMAND... in the background with stderr to $WORK/$NAME.log, waits
# (at most 10 s) for its "listening" line and sets LISTEN_PID and LISTEN_ADDR.
start_listening() {
    local name=$1
    shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    LISTEN_PID=$!
    PIDS+=("$LISTEN_PID")
    LISTEN_ADDR=""
    local i
    for i in $(seq 1 100); do
        LISTEN_ADDR=$(sed -n 's/.*msg="listening" address=\([^ ]*\).*/\1/p' "$WORK/$name.log" | head -1)
        [ -n "$LISTEN_ADDR" ] && return 0
        kill -0 "$LISTEN_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "--- $name did not start listening; its log:"
    cat "$WORK/$name.log"
    return 1
}

stop_listening() {
    kill -TERM "$LISTEN_PID" 2>/dev/null
    local status=0
    wait "$LISTEN_PID" || status=$?
    return "$status"
}

# Scrapes $LISTEN_ADDR/metrics into $WORK/$1.prom and checks what any
# healthy exporter must show: a successful collection, the build info and
# at least one listening TCP socket (its own).
check_scrape() {
    local name=$1 file=$WORK/$1.prom
    if ! curl -fsS --max-time 10 -o "$file" "http://$LISTEN_ADDR/metrics"; then
        fail "$name: scrape http://$LISTEN_ADDR/metrics"
        return
    fi
    check "$name: sockdiag_collect_success is 1" grep -qx 'sockdiag_collect_success{collector="tcp"} 1' "$file"
    check "$name: build info says version $VERSION" grep -q "^sockdiag_build_info{.*version=\"$VERSION\"} 1" "$file"
    check "$name: its own listener is counted" \
        awk '/^sockdiag_sockets\{family="ipv4",protocol="tcp",state="listen"\} / { found = ($2 >= 1) } END { exit !found }' "$file"
    check "$name: promtool check metrics" promtool check metrics <"$file"
}

# The unit's ExecStart= with $ARGS expanded the way systemd does for an
# unquoted $VAR (split on whitespace), from the options file given.
unit_command() {
    local unit=$1 options=$2 exec args
    exec=$(sed -n 's/^ExecStart=//p' "$unit")
    args=$(env -i bash -c 'set -a; . "$1"; printf "%s" "${ARGS-}"' _ "$options")
    # shellcheck disable=SC2001
    echo "${exec//\$ARGS/$args}"
}

# Runs the unit's command line as the service user with no capabilities,
# like the unit does (User=, CapabilityBoundingSet= empty, NoNewPrivileges).
run_as_service() {
    local name=$1 unit=$2 options=$3 cmd
    cmd=$(unit_command "$unit" "$options")
    echo "$name: running as $SVC_USER: $cmd"
    # shellcheck disable=SC2086
    start_listening "$name" setpriv --reuid="$SVC_USER" --regid="$SVC_USER" --clear-groups \
        --inh-caps=-all --bounding-set=-all --no-new-privs $cmd
}

echo "=== baseline: glibc symbol versions"
check_glibc "built binary" "$BIN"
mkdir -p "$WORK/debx"
dpkg-deb -x "$DEB" "$WORK/debx"
check_glibc "packaged binary" "$WORK/debx/usr/bin/sockdiag_exporter"
check "packaged binary is stripped (no .symtab, no .debug_*)" is_stripped "$WORK/debx/usr/bin/sockdiag_exporter"
check "packaged binary runs here" "$WORK/debx/usr/bin/sockdiag_exporter" --version
depends=$(dpkg-deb -f "$DEB" Depends)
echo "deb Depends: $depends"
libc_min=$(printf '%s\n' "$depends" | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
check "deb depends on libc6 >= ${libc_min:-?}, within the baseline" sh -c \
    "[ -n '$libc_min' ] && printf '%s\n%s\n' '$libc_min' '$GLIBC_BASELINE' | sort -V | head -1 | grep -qx '$libc_min'"
check "deb depends on adduser" sh -c "printf '%s' '$depends' | grep -qw adduser"

echo "=== lint: lintian (overrides shipped in the .deb) and rpmlint (silenced tags: packaging/lint-filters)"
check "every lint filter line has a reason above it" awk '
    /^(rpmlint|rpmlint-config):/ { if (!comment) { print "no reason for: " $0; bad = 1 } next }
    /^#/ { comment = 1; next }
    /^$/ { comment = 0 }
    END { exit bad }' packaging/lint-filters
check "every lintian override has a reason above it" awk '
    /^sockdiag-exporter: / { if (!comment) { print "no reason for: " $0; bad = 1 } next }
    /^#/ { comment = 1; next }
    /^$/ { comment = 0 }
    END { exit bad }' packaging/debian/lintian-overrides
check "the lintian overrides ship in the .deb" cmp -s packaging/debian/lintian-overrides \
    "$WORK/debx/usr/share/lintian/overrides/$PKG"
strip_reason() { sed 's/[[:space:]]*#.*//; s/[[:space:]]*$//'; }
# lintian on the .deb alone: no error or warning at all (the package's own
# overrides are the only way to silence one), each override used (an
# unused or mismatched one is reported, and --show-overrides lists each
# used one as "O:").
# A canary package lintian must flag, checked in the same run: proves that
# lintian ran on what it was given and that its tags are read below (no
# output at all would otherwise read as a clean package).
mkdir -p "$WORK/canary/DEBIAN"
printf 'Package: sockdiag-lint-canary\nVersion: 1\nArchitecture: all\nMaintainer: Canary <canary@localhost>\nDescription: lint canary\n canary\n' \
    >"$WORK/canary/DEBIAN/control"
dpkg-deb -b "$WORK/canary" "$WORK/canary.deb" >/dev/null
lint_status=0
lintian --fail-on none --show-overrides --display-info --tag-display-limit 0 "$DEB" "$WORK/canary.deb" \
    >"$WORK/lintian.out" 2>&1 || lint_status=$?
grep -E '^[EW]: sockdiag-exporter: |^[IN]: sockdiag-exporter: (unused-override|mismatched-override)' \
    "$WORK/lintian.out" >"$WORK/lintian.left"
grep -E '^sockdiag-exporter: ' packaging/debian/lintian-overrides | sed 's/^/O: /' | sort >"$WORK/lintian.overrides"
grep -E '^O: sockdiag-exporter: ' "$WORK/lintian.out" | sort >"$WORK/lintian.used"
if [ "$lint_status" != 0 ]; then
    fail "lintian exited with status $lint_status (--fail-on none: it did not run):"
    cat "$WORK/lintian.out"
elif ! grep -qx 'E: sockdiag-lint-canary: no-copyright-file' "$WORK/lintian.out"; then
    fail "lintian did not report the canary package's no-copyright-file error: its output was not read"
    cat "$WORK/lintian.out"
elif [ -s "$WORK/lintian.left" ] || grep -qE '^(internal error|error)' "$WORK/lintian.out"; then
    fail "lintian:"
    grep -v ': sockdiag-lint-canary: ' "$WORK/lintian.out"
else
    ok "lintian: no errors or warnings on the .deb itself, and the canary's error seen"
fi
if diff "$WORK/lintian.overrides" "$WORK/lintian.used" >"$WORK/lintian.overrides.diff"; then
    ok "lintian used every shipped override (and no other)"
else
    fail "lintian overrides shipped (<) vs used (>):"
    cat "$WORK/lintian.overrides.diff"
fi
{
    grep -E '^rpmlint-config:' packaging/lint-filters | sed 's/^rpmlint-config:[[:space:]]*//' | strip_reason
    echo "Filters = ["
    grep -E '^rpmlint:' packaging/lint-filters | sed 's/^rpmlint:[[:space:]]*//' | strip_reason |
        while read -r re; do printf "  '%s',\n" "$re"; done
    echo "]"
} >"$WORK/rpmlint.toml"
lint_status=0
rpmlint -c "$WORK/rpmlint.toml" "$RPM" >"$WORK/rpmlint.out" 2>&1 || lint_status=$?
if [ "$lint_status" = 0 ] && grep -qE '^ *1 packages and 0 specfiles checked; 0 errors, 0 warnings' "$WORK/rpmlint.out"; then
    ok "rpmlint: 1 package checked, no errors or warnings"
else
    fail "rpmlint (exit status $lint_status; wanted 0 and '1 packages and 0 specfiles checked; 0 errors, 0 warnings'):"
    cat "$WORK/rpmlint.out"
fi

echo "=== deb: install, run, upgrade, remove, purge"
UNIT=""
if [ "$(id -u)" != 0 ]; then
    skip "deb install tests need root (dpkg -i into the real system)"
elif dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q installed; then
    fail "$PKG is already installed on this machine; not touching it (dpkg -P $PKG to run this test)"
else
    find_sockdiag_files() {
        find /etc /usr /var/lib /lib /run -xdev \( -name '*sockdiag*' -o -path '*sockdiag*' \) 2>/dev/null | sort
    }
    find_sockdiag_files >"$WORK/before.txt"
    INSTALLED_BY_US=1
    if dpkg -i "$DEB" >"$WORK/dpkg-i.out" 2>&1; then
        ok "dpkg -i"
    else
        fail "dpkg -i"
        cat "$WORK/dpkg-i.out"
    fi
    check "package is installed" sh -c "dpkg-query -W -f='\${Status}' $PKG | grep -qx 'install ok installed'"

    # The user and group.
    IFS=: read -r _ _ uid gid _ home shell < <(getent passwd "$SVC_USER")
    check "system user $SVC_USER exists" test -n "${uid:-}"
    check "uid ${uid:-?} is a system uid" test "${uid:-1000}" -lt 1000
    check "group $SVC_USER is the user's group" test "$(getent group "$SVC_USER" | cut -d: -f3)" = "${gid:-x}"
    check "home ${home:-?} does not exist" test ! -e "${home:-/}"
    check "login shell ${shell:-?} refuses logins" sh -c "case '${shell:-}' in */nologin|*/false) true;; *) false;; esac"

    # The files.
    for f in /usr/bin/sockdiag_exporter /etc/default/sockdiag_exporter \
        /usr/share/man/man1/sockdiag_exporter.1.gz /usr/share/doc/$PKG/copyright \
        /usr/share/doc/$PKG/changelog.Debian.gz /usr/share/doc/$PKG/README.md \
        /usr/share/doc/$PKG/examples/netns.conf $(for d in $REPO/docs/*.md; do
            echo /usr/share/doc/$PKG/docs/${d##*/}; done); do
        check "installed $f" test -f "$f"
    done
    check "binary is executable by all" test "$(stat -c %a /usr/bin/sockdiag_exporter)" = 755
    for d in /usr/lib/systemd/system /lib/systemd/system; do
        [ -f $d/sockdiag_exporter.service ] && UNIT=$d/sockdiag_exporter.service && break
    done
    check "unit installed (${UNIT:-none})" test -n "$UNIT"
    check "installed unit is the one in packaging/" cmp -s "${UNIT:-/dev/null}" packaging/systemd/sockdiag_exporter.service
    # man's own status counts: "no warnings" from a man that did not run
    # would pass.
    if LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z /usr/share/man/man1/sockdiag_exporter.1.gz \
        >"$WORK/man.out" 2>"$WORK/man.err" && [ ! -s "$WORK/man.err" ] && [ -s "$WORK/man.out" ]; then
        ok "man page renders without warnings"
    else
        fail "man page renders without warnings:"
        cat "$WORK/man.err"
    fi
    check "/etc/default/sockdiag_exporter is a conffile" sh -c \
        "dpkg-query -W -f='\${Conffiles}\n' $PKG | grep -q '^ /etc/default/sockdiag_exporter '"
    check "only the options file is a conffile" test \
        "$(dpkg-query -W -f='${Conffiles}\n' $PKG | grep -c .)" = 1
    check "the unit is enabled (multi-user.target.wants)" test -L \
        /etc/systemd/system/multi-user.target.wants/sockdiag_exporter.service
    check "the unit reads ARGS from /etc/default/sockdiag_exporter" \
        grep -qx 'EnvironmentFile=-/etc/default/sockdiag_exporter' "${UNIT:-/dev/null}"
    check "the unit runs as $SVC_USER" grep -qx "User=$SVC_USER" "${UNIT:-/dev/null}"
    check "the unit has no capabilities" grep -qx 'CapabilityBoundingSet=' "${UNIT:-/dev/null}"
    # Socket activation: the .socket unit and its service, installed as in
    # packaging/systemd/socket/, enabled by nobody but the user.
    UNIT_DIR=$(dirname "${UNIT:-/usr/lib/systemd/system/x}")
    SOCKET_UNIT=$UNIT_DIR/sockdiag_exporter-activated.socket
    SOCKET_SVC=$UNIT_DIR/sockdiag_exporter-activated.service
    check "installed socket unit is the one in packaging/" cmp -s "$SOCKET_UNIT" packaging/systemd/socket/sockdiag_exporter-activated.socket
    check "installed socket service is the one in packaging/" cmp -s "$SOCKET_SVC" packaging/systemd/socket/sockdiag_exporter-activated.service
    check "the socket listens on the default port 19275" grep -qx 'ListenStream=19275' "$SOCKET_UNIT"
    check "the socket starts the socket service" grep -qx 'Service=sockdiag_exporter-activated.service' "$SOCKET_UNIT"
    check "the socket and the plain service conflict (one port)" grep -qx 'Conflicts=sockdiag_exporter.service' "$SOCKET_UNIT"
    check "the package enables neither socket unit" sh -c \
        "! find /etc/systemd/system -name 'sockdiag_exporter-activated.socket' -o -name 'sockdiag_exporter-activated.service' | grep -q ."
    check "no maintainer script enables, starts or stops the socket units" sh -c \
        "! dpkg-deb -I '$DEB' postinst prerm postrm | grep -q activated"

    # Start it the way the unit does, with a local edit of the options file
    # (loopback, any free port), as the service user without capabilities.
    sed -i 's|^ARGS=.*|ARGS="--web.listen-address=127.0.0.1:0 --cache.ttl=2s"  # local edit|' /etc/default/sockdiag_exporter
    sha_edit=$(sha256sum </etc/default/sockdiag_exporter)
    check "ExecStart expands ARGS" test \
        "$(unit_command "$UNIT" /etc/default/sockdiag_exporter)" = \
        "/usr/bin/sockdiag_exporter --web.listen-address=127.0.0.1:0 --cache.ttl=2s"
    if run_as_service deb-run "$UNIT" /etc/default/sockdiag_exporter; then
        ok "installed binary serves with the unit's command line"
        check "it runs as $SVC_USER" test "$(ps -o user= -p "$LISTEN_PID")" = "$SVC_USER"
        check "it has no capabilities" grep -qx 'CapEff:[[:space:]]*0000000000000000' "/proc/$LISTEN_PID/status"
        check_scrape deb-run
        check "SIGTERM stops it with status 0" stop_listening
    else
        fail "installed binary serves with the unit's command line"
    fi

    # Upgrade to a rebuilt package (same files, new version): the edit stays.
    DEB2=$WORK/upgrade/${PKG}_${VERSION}-2_amd64.deb
    mkdir -p "$WORK/upgrade"
    if cargo deb --no-build --locked --target x86_64-unknown-linux-gnu --deb-version "${VERSION}-2" \
        --output "$WORK/upgrade/" >"$WORK/deb2.out" 2>&1 && dpkg -i "$DEB2" >"$WORK/dpkg-u.out" 2>&1; then
        ok "upgrade to ${VERSION}-2 with dpkg -i"
    else
        fail "upgrade to ${VERSION}-2"
        cat "$WORK/deb2.out" "$WORK/dpkg-u.out" 2>/dev/null
    fi
    check "version is now ${VERSION}-2" test "$(dpkg-query -W -f='${Version}' $PKG)" = "${VERSION}-2"
    check "the local edit of the options file survived" test "$(sha256sum </etc/default/sockdiag_exporter)" = "$sha_edit"
    check "no .dpkg-new/.dpkg-dist/.dpkg-old left" sh -c "! ls /etc/default/sockdiag_exporter.dpkg-* 2>/dev/null"
    if run_as_service deb-upgraded "$UNIT" /etc/default/sockdiag_exporter; then
        ok "upgraded binary serves with the edited options"
        check_scrape deb-upgraded
        check "SIGTERM stops it with status 0" stop_listening
    else
        fail "upgraded binary serves with the edited options"
    fi

    # The socket service's command line, under Debian's
    # systemd-socket-activate (which listens and passes the socket as fd 3,
    # as systemd does), as the service user: the first scrape starts it.
    if ! command -v systemd-socket-activate >/dev/null 2>&1; then
        fail "required tool missing: systemd-socket-activate (Debian package systemd)"
    else
        sa_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        sa_cmd=$(unit_command "$SOCKET_SVC" /etc/default/sockdiag_exporter)
        check "the socket service passes --web.systemd-socket" sh -c "case '$sa_cmd' in *' --web.systemd-socket '*) true;; *) false;; esac"
        # shellcheck disable=SC2086
        systemd-socket-activate -l "127.0.0.1:$sa_port" setpriv --reuid="$SVC_USER" --regid="$SVC_USER" \
            --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs $sa_cmd \
            >"$WORK/socket-run.out" 2>"$WORK/socket-run.log" &
        LISTEN_PID=$!
        PIDS+=("$LISTEN_PID")
        for _ in $(seq 1 50); do grep -q 'Listening on' "$WORK/socket-run.log" && break; sleep 0.1; done
        LISTEN_ADDR=127.0.0.1:$sa_port
        check_scrape socket-run
        check "socket-activated: it logged the passed socket's address" grep -q "msg=\"listening\" address=127.0.0.1:$sa_port " "$WORK/socket-run.log"
        check "socket-activated: SIGTERM stops it with status 0" stop_listening
    fi

    echo "=== unit: systemd-analyze"
    if systemd-analyze verify "$SOCKET_UNIT" "$SOCKET_SVC" >"$WORK/verify-socket.out" 2>&1 && [ ! -s "$WORK/verify-socket.out" ]; then
        ok "systemd-analyze verify of the socket unit and its service prints nothing"
    else
        fail "systemd-analyze verify of the socket units:"
        cat "$WORK/verify-socket.out"
    fi
    if systemd-analyze verify "$UNIT" >"$WORK/verify.out" 2>&1 && [ ! -s "$WORK/verify.out" ]; then
        ok "systemd-analyze verify prints nothing"
    else
        fail "systemd-analyze verify:"
        cat "$WORK/verify.out"
    fi
    systemd-analyze security --offline=true --threshold=49 "$UNIT" >"$WORK/security.out" 2>&1
    level=$(grep -o 'Overall exposure level for [^:]*: [0-9.]* [A-Z]*' "$WORK/security.out" | awk '{print $(NF-1), $NF}')
    echo "exposure: $level"
    if grep -qE 'Overall exposure level .* (OK|SAFE|PERFECT)' "$WORK/security.out"; then
        ok "systemd-analyze security rates the unit ${level}"
    else
        fail "systemd-analyze security rates the unit ${level:-?} (OK or better wanted)"
        grep '✗' "$WORK/security.out"
    fi
    # The rpm's unit (the same but for its options file), while the binary
    # and man page it names are installed.
    mkdir -p "$WORK/rpmunit"
    cp "$OUT/rpm/sockdiag_exporter.service" "$WORK/rpmunit/"
    if systemd-analyze verify "$WORK/rpmunit/sockdiag_exporter.service" >"$WORK/verify-rpm.out" 2>&1 &&
        [ ! -s "$WORK/verify-rpm.out" ]; then
        ok "systemd-analyze verify of the rpm unit prints nothing"
    else
        fail "systemd-analyze verify of the rpm unit:"
        cat "$WORK/verify-rpm.out"
    fi
    # The netns drop-in, where users put it.
    mkdir -p /etc/systemd/system/sockdiag_exporter.service.d
    cp packaging/systemd/netns.conf /etc/systemd/system/sockdiag_exporter.service.d/netns.conf
    if systemd-analyze verify "$UNIT" >"$WORK/verify-netns.out" 2>&1 && [ ! -s "$WORK/verify-netns.out" ]; then
        ok "systemd-analyze verify with the netns drop-in prints nothing"
    else
        fail "systemd-analyze verify with the netns drop-in:"
        cat "$WORK/verify-netns.out"
    fi
    systemd-analyze security --offline=true "$UNIT" >"$WORK/security-netns.out" 2>&1
    check "the drop-in grants exactly CAP_SYS_ADMIN and CAP_SYS_PTRACE" sh -c \
        "grep -q '✗ CapabilityBoundingSet=~CAP_SYS_ADMIN' '$WORK/security-netns.out' &&
         grep -q '✗ CapabilityBoundingSet=~CAP_SYS_PTRACE' '$WORK/security-netns.out' &&
         [ \$(grep -c '✗ CapabilityBoundingSet=' '$WORK/security-netns.out') = 2 ]"
    echo "exposure with the netns drop-in: $(grep -o 'Overall exposure level for [^:]*: [0-9.]* [A-Z]*' "$WORK/security-netns.out" | awk '{print $(NF-1), $NF}')"
    rm -f /etc/systemd/system/sockdiag_exporter.service.d/netns.conf
    rmdir /etc/systemd/system/sockdiag_exporter.service.d

    # The drop-in's capabilities are enough and each is needed: as the
    # service user, on a /proc mounted like ProtectProc=invisible does
    # (hidepid=invisible), enter a network namespace owned by a root process
    # the way the collector will (open /proc/PID/ns/net, setns CLONE_NEWNET).
    caps=$(sed -n 's/^AmbientCapabilities=//p' packaging/systemd/netns.conf | tr 'A-Z' 'a-z' |
        sed 's/cap_/+/g; s/ /,/g')
    check "the drop-in's ambient capabilities are sys_admin and sys_ptrace" test "$caps" = "+sys_admin,+sys_ptrace"
    enter_netns_as_service() { # CAPS (setpriv syntax, empty for none); stderr to $WORK/netns-caps.err
        local c=$1 opts="--inh-caps=-all --bounding-set=-all"
        [ -n "$c" ] && opts="--inh-caps=$c --ambient-caps=$c --bounding-set=-all,$c"
        # shellcheck disable=SC2086
        unshare -m sh -c "mount -t proc -o hidepid=invisible proc /proc &&
            setpriv --reuid=$SVC_USER --regid=$SVC_USER --clear-groups $opts --no-new-privs \
                nsenter --net=/proc/$TARGET_PID/ns/net true" 2>"$WORK/netns-caps.err"
    }
    # cannot_enter WHAT CAPS ERROR: entering with CAPS fails with exactly
    # nsenter's ERROR, not some other failure (a mount, setpriv or user
    # problem would fail too, for the wrong reason).
    cannot_enter() {
        local what=$1 c=$2 want=$3 status=0
        enter_netns_as_service "$c" || status=$?
        if [ "$status" != 0 ] && [ "$(cat "$WORK/netns-caps.err")" = "$want" ]; then
            ok "$what ($want)"
        else
            fail "$what: wanted failure '$want', got exit status $status and: $(cat "$WORK/netns-caps.err")"
        fi
    }
    unshare -n sleep 60 &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    sleep 0.2
    if enter_netns_as_service "$caps"; then
        ok "drop-in capabilities enter another netns through a hidden /proc"
    else
        fail "drop-in capabilities enter another netns through a hidden /proc: $(cat "$WORK/netns-caps.err")"
    fi
    # hidepid=invisible hides a root process's /proc/PID from a user
    # without CAP_SYS_PTRACE (ENOENT); setns needs CAP_SYS_ADMIN (EPERM).
    cannot_enter "without CAP_SYS_PTRACE the namespace cannot be opened" +sys_admin \
        "nsenter: cannot open /proc/$TARGET_PID/ns/net: No such file or directory"
    cannot_enter "without CAP_SYS_ADMIN setns is refused" +sys_ptrace \
        "nsenter: reassociate to namespace 'ns/net' failed: Operation not permitted"
    cannot_enter "with no capabilities (the default unit) the namespace cannot even be opened" "" \
        "nsenter: cannot open /proc/$TARGET_PID/ns/net: No such file or directory"
    kill "$TARGET_PID" 2>/dev/null
    wait "$TARGET_PID" 2>/dev/null

    # Remove: program files go, the conffile and the user stay.
    if dpkg -r "$PKG" >"$WORK/dpkg-r.out" 2>&1; then ok "dpkg -r"; else fail "dpkg -r"; cat "$WORK/dpkg-r.out"; fi
    check "after -r: state is config-files" test "$(dpkg-query -W -f='${db:Status-Abbrev}' $PKG 2>/dev/null | tr -d ' ')" = rc
    check "after -r: binary gone" test ! -e /usr/bin/sockdiag_exporter
    check "after -r: unit gone" test ! -e "$UNIT"
    check "after -r: options file kept" test -f /etc/default/sockdiag_exporter
    check "after -r: user kept" sh -c "getent passwd $SVC_USER >/dev/null"
    # Purge: nothing is left but the user.
    if dpkg -P "$PKG" >"$WORK/dpkg-p.out" 2>&1; then ok "dpkg -P"; else fail "dpkg -P"; cat "$WORK/dpkg-p.out"; fi
    check "after -P: package unknown to dpkg" sh -c "! dpkg-query -W $PKG >/dev/null 2>&1"
    check "after -P: options file gone" test ! -e /etc/default/sockdiag_exporter
    check "after -P: user and group kept" sh -c "getent passwd $SVC_USER >/dev/null && getent group $SVC_USER >/dev/null"
    find_sockdiag_files >"$WORK/after.txt"
    if diff "$WORK/before.txt" "$WORK/after.txt" >"$WORK/leftover.diff"; then
        ok "after -P: no file or directory named *sockdiag* left in /etc /usr /var/lib /lib /run"
    else
        fail "after -P: left behind:"
        cat "$WORK/leftover.diff"
    fi
fi

echo "=== rpm: scratch root"
ROOT=$WORK/rpmroot
mkdir -p "$ROOT"
if rpm -i --root "$ROOT" --nodeps --noscripts "$RPM" >"$WORK/rpm-i.out" 2>&1; then
    ok "rpm -i --root --nodeps --noscripts"
else
    fail "rpm -i into a scratch root"
    cat "$WORK/rpm-i.out"
fi
rpm -qpl "$RPM" 2>/dev/null | sort >"$WORK/rpm-files.txt"
cat >"$WORK/rpm-files.want" <<EOF
/etc/sysconfig/sockdiag_exporter
/usr/bin/sockdiag_exporter
/usr/lib/systemd/system/sockdiag_exporter.service
/usr/lib/systemd/system/sockdiag_exporter-activated.socket
/usr/lib/systemd/system/sockdiag_exporter-activated.service
/usr/share/doc/$PKG/README.md
/usr/share/doc/$PKG/docs/configuration.md
/usr/share/doc/$PKG/docs/containers.md
/usr/share/doc/$PKG/docs/deployment.md
/usr/share/doc/$PKG/docs/development.md
/usr/share/doc/$PKG/docs/metrics.md
/usr/share/doc/$PKG/docs/tls-auth.md
/usr/share/doc/$PKG/examples/netns.conf
/usr/share/man/man1/sockdiag_exporter.1.gz
EOF
sort -o "$WORK/rpm-files.want" "$WORK/rpm-files.want"
if diff "$WORK/rpm-files.want" "$WORK/rpm-files.txt" >"$WORK/rpm-files.diff"; then
    ok "rpm file list"
else
    fail "rpm file list (- wanted, + got):"
    cat "$WORK/rpm-files.diff"
fi
check "rpm -qp --configfiles lists only the options file" test \
    "$(rpm -qp --configfiles "$RPM" 2>/dev/null)" = /etc/sysconfig/sockdiag_exporter
check "the options file is %config(noreplace)" sh -c \
    "rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' '$RPM' 2>/dev/null | grep -qx 'cn /etc/sysconfig/sockdiag_exporter'"
check "the man page and docs are %doc" test \
    "$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" 2>/dev/null | grep -c '^d /usr/share/')" = $((3 + $(ls "$REPO"/docs/*.md | wc -l)))
check "rpm requires systemd and shadow-utils" sh -c \
    "rpm -qpR '$RPM' 2>/dev/null | grep -qx systemd && rpm -qpR '$RPM' 2>/dev/null | grep -qx shadow-utils"
if out=$(rpm -V --nodeps --root "$ROOT" "$PKG" 2>&1) && [ -z "$out" ]; then
    ok "rpm -V: every file as packaged"
else
    fail "rpm -V: $out"
fi
check "rpm unit reads /etc/sysconfig/sockdiag_exporter" \
    grep -qx 'EnvironmentFile=-/etc/sysconfig/sockdiag_exporter' "$ROOT/usr/lib/systemd/system/sockdiag_exporter.service"
check "rpm unit differs from the deb one only there" sh -c \
    "diff packaging/systemd/sockdiag_exporter.service '$ROOT/usr/lib/systemd/system/sockdiag_exporter.service' | grep -c '^[<>]' | grep -qx 2"
check "rpm unit is the one verified with the deb installed" cmp -s "$OUT/rpm/sockdiag_exporter.service" \
    "$ROOT/usr/lib/systemd/system/sockdiag_exporter.service"
check "rpm socket service reads /etc/sysconfig/sockdiag_exporter" \
    grep -qx 'EnvironmentFile=-/etc/sysconfig/sockdiag_exporter' "$ROOT/usr/lib/systemd/system/sockdiag_exporter-activated.service"
check "rpm socket unit is the one in packaging/" cmp -s packaging/systemd/socket/sockdiag_exporter-activated.socket \
    "$ROOT/usr/lib/systemd/system/sockdiag_exporter-activated.socket"
# has_scriptlet TAG: the rpm has that scriptlet, for /bin/sh (no
# interpreter tag means rpm's default, /bin/sh; a missing tag reads "(none)").
has_scriptlet() {
    local body prog
    body=$(rpm -qp --qf "%{$1}" "$RPM") && prog=$(rpm -qp --qf "%{${1}PROG}" "$RPM") || return 1
    [ -n "$body" ] && [ "$body" != "(none)" ] && { [ "$prog" = /bin/sh ] || [ "$prog" = "(none)" ]; }
}
for s in PREIN POSTIN PREUN POSTUN; do
    check "rpm has a %$s scriptlet, for /bin/sh" has_scriptlet "$s"
done
check "rpm binary runs: --version" "$ROOT/usr/bin/sockdiag_exporter" --version
if "$ROOT/usr/bin/sockdiag_exporter" dump --format prometheus >"$WORK/rpm-dump.prom" 2>"$WORK/rpm-dump.err"; then
    ok "rpm binary runs: dump"
    check "rpm binary: dump shows a successful collection" grep -qx 'sockdiag_collect_success{collector="tcp"} 1' "$WORK/rpm-dump.prom"
else
    fail "rpm binary: dump"
    cat "$WORK/rpm-dump.err"
fi
if start_listening rpm-run "$ROOT/usr/bin/sockdiag_exporter" --web.listen-address=127.0.0.1:0; then
    check_scrape rpm-run
    check "SIGTERM stops it with status 0" stop_listening
else
    fail "rpm binary serves"
fi
# A local edit shows in rpm -V, and survives an upgrade to a package whose
# options file changed (it gets .rpmnew instead).
echo 'ARGS="--cache.ttl=5s"  # local edit' >>"$ROOT/etc/sysconfig/sockdiag_exporter"
sha_edit=$(sha256sum <"$ROOT/etc/sysconfig/sockdiag_exporter")
check "rpm -V reports the edited config file as such" sh -c \
    "rpm -V --nodeps --root '$ROOT' $PKG 2>&1 | grep -qE '^S\.5\.{4}T\. +c +/etc/sysconfig/sockdiag_exporter$'"
mkdir -p "$WORK/rpm2"
cp "$OUT/rpm/sockdiag_exporter.sysconfig" "$WORK/sysconfig.orig"
echo "# changed in release 2" >>"$OUT/rpm/sockdiag_exporter.sysconfig"
cargo generate-rpm --target x86_64-unknown-linux-gnu --set-metadata 'release = "2"' \
    --output "$WORK/rpm2/" >"$WORK/rpm2.out" 2>&1
cp "$WORK/sysconfig.orig" "$OUT/rpm/sockdiag_exporter.sysconfig"
RPM2=$(ls "$WORK"/rpm2/*.rpm 2>/dev/null | head -1)
if [ -n "$RPM2" ] && rpm -U --root "$ROOT" --nodeps --noscripts "$RPM2" >"$WORK/rpm-u.out" 2>&1; then
    ok "rpm -U to release 2"
else
    fail "rpm -U to release 2"
    cat "$WORK/rpm2.out" "$WORK/rpm-u.out" 2>/dev/null
fi
check "rpm: release 2 installed" test "$(rpm -q --root "$ROOT" --qf '%{RELEASE}' $PKG 2>/dev/null)" = 2
check "rpm: the local edit survived the upgrade" test "$(sha256sum <"$ROOT/etc/sysconfig/sockdiag_exporter")" = "$sha_edit"
check "rpm: the new default went to .rpmnew" grep -q 'changed in release 2' "$ROOT/etc/sysconfig/sockdiag_exporter.rpmnew"
if rpm -e --root "$ROOT" --nodeps --noscripts "$PKG" >"$WORK/rpm-e.out" 2>&1; then ok "rpm -e"; else fail "rpm -e"; cat "$WORK/rpm-e.out"; fi
check "rpm -e: binary gone" test ! -e "$ROOT/usr/bin/sockdiag_exporter"
check "rpm -e: edited config saved as .rpmsave" test -f "$ROOT/etc/sysconfig/sockdiag_exporter.rpmsave"

echo "=== rpm: scriptlets, run by rpm -i, -U, -e in scratch roots with stub commands"
if [ "$(id -u)" != 0 ]; then
    skip "rpm scriptlet runs need root (rpm chroots into the scratch root to run them)"
elif [ -z "$RPM2" ]; then
    fail "rpm scriptlets: no release 2 package to upgrade to"
else
    # shellcheck source=tests/package/rpm_scriptlets.sh
    . tests/package/rpm_scriptlets.sh
    check_rpm_scriptlets "$RPM" "$RPM2" "$WORK/scriptlets"
fi

echo "=== image: $IMAGE_ARCHIVE"
if ! python3 tests/package/oci_unpack.py "$IMAGE_ARCHIVE" "$WORK/image" >"$WORK/image.json" 2>"$WORK/image.err"; then
    fail "unpack the OCI archive: $(cat "$WORK/image.err")"
else
    ok "unpacked the OCI archive (index.json -> manifest -> config and layers, digests checked)"
    image_field() { python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))[sys.argv[2]]))' "$WORK/image.json" "$1"; }
    IROOT=$WORK/image/rootfs
    check "image is named $IMAGE_NAME" test "$(image_field name)" = "\"$IMAGE_NAME\""
    check "image entrypoint is the exporter" test "$(image_field entrypoint)" = '["/usr/bin/sockdiag_exporter"]'
    check "image runs as the numeric user 65534" test "$(image_field user)" = '"65534:65534"'
    check "image exposes 19275/tcp" test "$(image_field ports)" = '["19275/tcp"]'
    echo "image files: $(image_field files)"
    check "image has no shell" sh -c "! find '$IROOT' -name sh -o -name bash -o -name dash -o -name busybox | grep -q ."
    only_binary_and_libs() {
        find "$IROOT" -type f | sed "s|^$IROOT||" |
            grep -vE '^/usr/bin/sockdiag_exporter$|^/lib(64|/x86_64-linux-gnu)/[^/]+[.]so[.0-9]*$' >"$WORK/image-extra.txt"
        [ ! -s "$WORK/image-extra.txt" ] || { cat "$WORK/image-extra.txt"; return 1; }
    }
    check "image holds only the binary and libraries" only_binary_and_libs
    check "image binary is the packaged one" cmp -s "$IROOT/usr/bin/sockdiag_exporter" "$BIN"
    check "the DaemonSet runs the image make image builds" grep -qE "^ +image: $IMAGE_NAME\$" packaging/kubernetes/daemonset.yaml
    # The entrypoint, in a chroot of the image as its user: what the image
    # lacks, it lacks here too.
    in_image() { chroot --userspec=65534:65534 "$1" /usr/bin/sockdiag_exporter "${@:2}"; }
    if in_image "$IROOT" dump >"$WORK/image-dump.prom" 2>"$WORK/image-dump.err"; then
        ok "image entrypoint runs in a chroot: dump"
        check "image: dump shows a successful collection" grep -qx 'sockdiag_collect_success{collector="tcp"} 1' "$WORK/image-dump.prom"
    else
        fail "image entrypoint in a chroot: dump: $(cat "$WORK/image-dump.err")"
    fi
    if start_listening image-run chroot --userspec=65534:65534 "$IROOT" /usr/bin/sockdiag_exporter \
        --web.listen-address=127.0.0.1:0; then
        check_scrape image-run
        check "image: it runs as uid 65534" test "$(ps -o uid= -p "$LISTEN_PID" | tr -d ' ')" = 65534
        check "image: SIGTERM stops it with status 0" stop_listening
    else
        fail "image entrypoint in a chroot serves"
    fi
    # The canary: the same root without one of its libraries must not run,
    # or the checks above would not notice a missing library.
    cp -a "$IROOT" "$WORK/image-lacking"
    lib=$(find "$WORK/image-lacking/lib" -name 'libc.so*' | head -1)
    rm -f "$lib"
    if in_image "$WORK/image-lacking" dump >/dev/null 2>"$WORK/image-lacking.err"; then
        fail "image without ${lib##*/} still runs: a missing library would go unnoticed"
    else
        ok "image without ${lib##*/} fails to start: $(head -c 150 "$WORK/image-lacking.err")"
    fi
fi

echo "=== fleet: Prometheus, Grafana, Kubernetes"
(cd packaging/prometheus && promtool check config prometheus.yml >"$WORK/promtool-config.out" 2>&1) &&
    ok "promtool check config prometheus.yml" || { fail "promtool check config"; cat "$WORK/promtool-config.out"; }
(cd packaging/prometheus && promtool check rules sockdiag.rules.yml >"$WORK/promtool-rules.out" 2>&1) &&
    ok "promtool check rules" || { fail "promtool check rules"; cat "$WORK/promtool-rules.out"; }
(cd packaging/prometheus && promtool test rules sockdiag.rules.test.yml >"$WORK/promtool-test.out" 2>&1) &&
    ok "promtool test rules: every alert fires and does not fire as tested" || { fail "promtool test rules"; cat "$WORK/promtool-test.out"; }
check "every alert has unit tests" sh -c '
    for a in $(sed -n "s/^ *- alert: //p" packaging/prometheus/sockdiag.rules.yml); do
        grep -q "alertname: $a\$" packaging/prometheus/sockdiag.rules.test.yml || { echo "no test for $a"; exit 1; }
    done'
if "$PKG_VENV/bin/python3" tests/package/grafana_check.py packaging/grafana/sockdiag_exporter.json tests/golden/*.prom; then
    ok "grafana: every panel query returns data against tests/golden/*.prom"
else
    fail "grafana panel queries"
fi
if "$PKG_VENV/bin/python3" tests/package/k8s_check.py packaging/kubernetes "$PKG_VENV/bin/kubernetes-validate" "$BIN"; then
    ok "kubernetes manifests: schema and security settings"
else
    fail "kubernetes manifests"
fi

echo
[ "$STRICT" = 1 ] && echo "strict mode (CI or SOCKDIAG_TEST_STRICT=1): skips count as failures"
summary
[ "$failed" = 0 ]

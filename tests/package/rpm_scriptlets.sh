# The rpm's %pre, %post, %preun and %postun, run by a real rpm (so rpm picks
# which scriptlets run, in which order, with which $1) in scratch roots:
# dash as /bin/sh, and stub useradd, groupadd, getent, systemctl (and the
# commands a scriptlet must not call: userdel, groupdel, usermod, adduser,
# systemd-sysusers, id, chown) that record each call and keep just enough
# state (passwd and group files; enabled, active and restart count of the
# unit) for the checks to ask what a real system would now look like.
#
# Sourced by run.sh, which provides ok, fail and check; run on its own as
#   bash tests/package/rpm_scriptlets.sh RPM RPM_RELEASE_2
# (root: rpm chroots into the scratch root to run the scriptlets).

# The stubs are dash scripts: the scratch root has no other programs.
# Each call goes to /stub/calls (and to stderr).
_write_stubs() {
    local root=$1 name
    cat >"$root/usr/bin/systemctl" <<'EOF'
#!/bin/dash
echo "STUB: systemctl $*" >&2
echo "systemctl $*" >>/stub/calls
unit=/usr/lib/systemd/system/sockdiag_exporter.service
now=0 verb="" units=""
for a; do
    case $a in
        --now) now=1 ;;
        -*) ;;
        *) if [ -z "$verb" ]; then verb=$a; else units="$units $a"; fi ;;
    esac
done
for u in $units; do
    case $u in
        sockdiag_exporter.service | sockdiag_exporter) ;;
        *) echo "Unit $u not found." >&2; exit 5 ;;
    esac
done
read -r enabled </stub/enabled
read -r active </stub/active
read -r restarts </stub/restarts
case $verb in
    daemon-reload)
        if [ -e $unit ]; then echo present >/stub/reload; else echo absent >/stub/reload; fi ;;
    enable)
        [ -e $unit ] || { echo "Failed to enable unit: Unit file sockdiag_exporter.service does not exist." >&2; exit 1; }
        enabled=1
        [ $now = 1 ] && active=1 ;;
    disable)
        enabled=0
        [ $now = 1 ] && active=0 ;;
    start)
        [ -e $unit ] || { echo "Unit sockdiag_exporter.service not found." >&2; exit 5; }
        active=1 ;;
    stop) active=0 ;;
    restart)
        [ -e $unit ] || { echo "Unit sockdiag_exporter.service not found." >&2; exit 5; }
        [ $active = 1 ] && restarts=$((restarts + 1))
        active=1 ;;
    try-restart | condrestart)
        [ $active = 1 ] && restarts=$((restarts + 1)) ;;
    *) echo "systemctl stub: verb '$verb' not modelled" >&2; exit 1 ;;
esac
echo $enabled >/stub/enabled
echo $active >/stub/active
echo $restarts >/stub/restarts
exit 0
EOF
    cat >"$root/usr/bin/getent" <<'EOF'
#!/bin/dash
echo "STUB: getent $*" >&2
echo "getent $*" >>/stub/calls
case $1 in passwd) f=/etc/passwd ;; group) f=/etc/group ;; *) exit 1 ;; esac
while IFS=: read -r name rest; do
    [ "$name" = "$2" ] && { echo "$name:$rest"; exit 0; }
done <$f
exit 2
EOF
    # groupadd [-r] NAME: gid 999 (system) or 1000; exit 9 if it exists.
    cat >"$root/usr/bin/groupadd" <<'EOF'
#!/bin/dash
echo "STUB: groupadd $*" >&2
echo "groupadd $*" >>/stub/calls
gid=1000
for a; do case $a in -r | --system) gid=999 ;; esac; name=$a; done
while IFS=: read -r n _; do
    [ "$n" = "$name" ] && { echo "groupadd: group '$name' already exists" >&2; exit 9; }
done </etc/group
echo "$name:x:$gid:" >>/etc/group
EOF
    # useradd [-r] [-g GROUP] [-d HOME] [-s SHELL] [-c COMMENT] NAME, like
    # shadow-utils: the group must exist (or, without -g, must not).
    cat >"$root/usr/bin/useradd" <<'EOF'
#!/bin/dash
echo "STUB: useradd $*" >&2
echo "useradd $*" >>/stub/calls
uid=1000 group="" home="" shell=/bin/sh comment=""
while [ $# -gt 1 ]; do
    case $1 in
        -r | --system) uid=999 ;;
        -g) group=$2; shift ;;
        -d) home=$2; shift ;;
        -s) shell=$2; shift ;;
        -c) comment=$2; shift ;;
        -M | -N | --no-create-home) ;;
        *) echo "useradd stub: option $1 not modelled" >&2; exit 2 ;;
    esac
    shift
done
name=$1
while IFS=: read -r n _; do
    [ "$n" = "$name" ] && { echo "useradd: user '$name' already exists" >&2; exit 9; }
done </etc/passwd
gid=""
while IFS=: read -r n _ g _; do
    [ "$n" = "${group:-$name}" ] && gid=$g
done </etc/group
if [ -n "$group" ] && [ -z "$gid" ]; then echo "useradd: group '$group' does not exist" >&2; exit 6; fi
if [ -z "$group" ] && [ -n "$gid" ]; then echo "useradd: group $name exists" >&2; exit 9; fi
[ -z "$gid" ] && { gid=$uid; echo "$name:x:$gid:" >>/etc/group; }
echo "$name:x:$uid:$gid:$comment:${home:-/home/$name}:$shell" >>/etc/passwd
EOF
    for name in userdel groupdel usermod adduser systemd-sysusers id chown; do
        printf '#!/bin/dash\necho "STUB: %s $*" >&2\necho "%s $*" >>/stub/calls\nexit 0\n' "$name" "$name" >"$root/usr/bin/$name"
    done
    chmod 755 "$root"/usr/bin/*
}

# _scratch_root DIR SYSTEMD USER: an empty root where rpm can run the
# scriptlets. SYSTEMD=1 makes /run/systemd/system (systemd is running);
# USER=1 puts the service user and group in its passwd and group files.
_scratch_root() {
    local root=$1 systemd=$2 user=$3 lib
    rm -rf "$root"
    mkdir -p "$root"/{bin,usr/bin,etc,dev,var/tmp,run,stub}
    # /bin/sh logs its arguments (the scriptlet file and $1), then runs dash.
    cp /bin/dash "$root/bin/dash"
    printf '#!/bin/dash\necho "SCRIPTLET $*" >>/stub/calls\nexec /bin/dash "$@"\n' >"$root/bin/sh"
    chmod 755 "$root/bin/sh"
    for lib in $(ldd /bin/dash | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    mknod -m 666 "$root/dev/null" c 1 3 2>/dev/null || : >"$root/dev/null"
    [ "$systemd" = 1 ] && mkdir -p "$root/run/systemd/system"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    if [ "$user" = 1 ]; then
        echo 'sockdiag_exporter:x:990:990::/:/sbin/nologin' >>"$root/etc/passwd"
        echo 'sockdiag_exporter:x:990:' >>"$root/etc/group"
    fi
    echo 0 >"$root/stub/enabled"
    echo 0 >"$root/stub/active"
    echo 0 >"$root/stub/restarts"
    echo none >"$root/stub/reload"
    : >"$root/stub/calls"
    _write_stubs "$root"
}

# _rpm_traced ROOT TRACE RPM-ARGS...: runs rpm -vv RPM-ARGS in ROOT and
# writes TRACE: per scriptlet a header "%prein R=1 $1=1 exit=0" (R the
# release, from rpm's "scriptlet start" and "waitpid" lines, $1 as /bin/sh
# got it), then the stub calls it made, indented. Lines rpm or a scriptlet
# printed that are none of these go to TRACE.other. Returns rpm's status.
# (The calls come from /stub/calls, not stderr: the scriptlets send
# systemctl's output to /dev/null.)
_rpm_traced() {
    local root=$1 trace=$2 status=0
    shift 2
    : >"$root/stub/calls"
    rpm -vv --root "$root" --nodeps "$@" >"$trace.raw" 2>&1 || status=$?
    cp "$root/stub/calls" "$trace.calls"
    awk -v other="$trace.other" '
        FNR == NR && /^D: %[a-z]+\(.*\): scriptlet start$/ {
            s = $2; sub(/\(.*/, "", s); r = $2; sub(/\):$/, "", r); sub(/\.[^.]*$/, "", r); sub(/.*-/, "", r)
            head[++n] = s " R=" r; st[n] = "?"; next }
        FNR == NR && /^D: %[a-z]+\(.*\): waitpid\(.*status [0-9]+$/ { st[n] = $NF; next }
        FNR == NR {
            if (/^D: / || /^\+ / || /^(STUB|SCRIPTLET): /) next
            if (/^rpm: (RPM should not be used directly|However assuming)/) next
            if (/^(Verifying packages|Preparing packages|Cleaning up|Updating \/ installing)\.\.\.$/) next
            if (/^Header (SHA256|SHA1) digest: OK$/ || /^sockdiag-exporter-[^ ]*$/) next
            print > other; next }
        /^SCRIPTLET / { m++; print head[m] " $1=" $3 " exit=" st[m]; next }
        { print "  " $0 }
        END { for (m++; m <= n; m++) print head[m] " $1=? exit=" st[m] " (not run by /bin/sh)" }
    ' "$trace.raw" "$trace.calls" >"$trace"
    touch "$trace.other"
    return "$status"
}

# _check_quiet WHAT FILE: rpm and the scriptlets printed nothing else (no
# "not found", no scriptlet warning); shows what they printed otherwise.
_check_quiet() {
    if [ -s "$2" ]; then
        fail "$1 printed nothing unexpected; it printed:"
        sed 's/^/    /' "$2"
    else
        ok "$1 printed nothing unexpected"
    fi
}

_trace_heads() { grep -v '^  ' "$1" | tr '\n' ';'; }
# _check_heads WHAT TRACE WANT: the scriptlets that ran, as _trace_heads.
_check_heads() {
    local got
    got=$(_trace_heads "$2")
    if [ "$got" = "$3" ]; then ok "$1"; else fail "$1: got '$got'"; fi
}
_state() { cat "$1/stub/$2"; }

# One install, upgrade, erase cycle in a fresh scratch root.
# ADMIN_OFF=1: after the install the admin disables and stops the service,
# and the upgrade must leave it so.
_scriptlet_cycle() { # LABEL SYSTEMD USER ADMIN_OFF RPM RPM2 WORKDIR
    local label=$1 systemd=$2 user=$3 admin_off=$4 rpm1=$5 rpm2=$6 dir=$7
    local root=$dir/root-$label t=$dir/trace-$label pw r1 r2
    _scratch_root "$root" "$systemd" "$user"
    r1=$(rpm -qp --qf '%{RELEASE}' "$rpm1" 2>/dev/null)
    r2=$(rpm -qp --qf '%{RELEASE}' "$rpm2" 2>/dev/null)

    echo "--- $label: rpm -i (release $r1)"
    if _rpm_traced "$root" "$t.install" -i "$rpm1"; then ok "$label: rpm -i runs the scriptlets"; else fail "$label: rpm -i runs the scriptlets"; cat "$t.install.raw" | grep -v '^D: '; fi
    cat "$t.install"
    _check_heads "$label: install ran %prein and %post of release $r1 with \$1=1" \
        "$t.install" "%prein R=$r1 \$1=1 exit=0;%post R=$r1 \$1=1 exit=0;"
    _check_quiet "$label: install" "$t.install.other"
    pw=$(grep '^sockdiag_exporter:' "$root/etc/passwd")
    check "$label: user sockdiag_exporter exists after install" test -n "$pw"
    if [ "$user" = 1 ]; then
        check "$label: the existing user and group were not added again" sh -c \
            "! grep -qE '^  (useradd|groupadd)' '$t.install'"
    else
        check "$label: install adds the group, then the user" test \
            "$(grep -oE '^  (useradd|groupadd)' "$t.install" | tr -d ' ' | tr '\n' ,)" = "groupadd,useradd,"
        check "$label: a system user (uid < 1000) whose group is sockdiag_exporter" awk -F: -v g="$(grep '^sockdiag_exporter:' "$root/etc/group" | cut -d: -f3)" \
            '$1 == "sockdiag_exporter" { found = ($3 < 1000 && $4 == g && g != "") } END { exit !found }' "$root/etc/passwd"
        check "$label: its shell refuses logins and its home is /" sh -c \
            "grep -qE '^sockdiag_exporter:[^:]*:[^:]*:[^:]*:[^:]*:/:(/usr)?/sbin/nologin$' '$root/etc/passwd'"
    fi
    if [ "$systemd" = 1 ]; then
        check "$label: install enables the service" test "$(_state "$root" enabled)" = 1
        check "$label: install starts the service" test "$(_state "$root" active)" = 1
        check "$label: install reloads systemd with the unit in place" test "$(_state "$root" reload)" = present
    else
        check "$label: without systemd running, install calls no systemctl" sh -c "! grep -q '^  systemctl' '$t.install'"
    fi
    cp "$root/etc/passwd" "$t.passwd-before-upgrade"
    if [ "$admin_off" = 1 ]; then
        echo "--- $label: the admin runs systemctl disable --now"
        echo 0 >"$root/stub/enabled"
        echo 0 >"$root/stub/active"
    fi

    echo "--- $label: rpm -U (release $r1 -> $r2)"
    if _rpm_traced "$root" "$t.upgrade" -U "$rpm2"; then ok "$label: rpm -U runs the scriptlets"; else fail "$label: rpm -U runs the scriptlets"; cat "$t.upgrade.raw" | grep -v '^D: '; fi
    cat "$t.upgrade"
    _check_heads "$label: upgrade ran new %prein, %post with \$1=2, old %preun, %postun with \$1=1" \
        "$t.upgrade" \
        "%prein R=$r2 \$1=2 exit=0;%post R=$r2 \$1=2 exit=0;%preun R=$r1 \$1=1 exit=0;%postun R=$r1 \$1=1 exit=0;"
    _check_quiet "$label: upgrade" "$t.upgrade.other"
    check "$label: upgrade adds or changes no user or group" sh -c \
        "! grep -qE '^  (useradd|groupadd|usermod|userdel|groupdel)' '$t.upgrade' && cmp -s '$t.passwd-before-upgrade' '$root/etc/passwd'"
    if [ "$systemd" = 1 ]; then
        check "$label: upgrade neither stops nor disables the service" sh -c \
            "! grep -qE '^  systemctl .*(stop|disable)' '$t.upgrade'"
        if [ "$admin_off" = 1 ]; then
            check "$label: the service the admin disabled stays disabled and stopped after the upgrade" \
                test "$(_state "$root" enabled)$(_state "$root" active)$(_state "$root" restarts)" = 000
        else
            check "$label: the service is still enabled and running after the upgrade" \
                test "$(_state "$root" enabled)$(_state "$root" active)" = 11
            check "$label: upgrade restarts the running service once (new binary)" test "$(_state "$root" restarts)" = 1
        fi
    else
        check "$label: without systemd running, upgrade calls no systemctl" sh -c "! grep -q '^  systemctl' '$t.upgrade'"
    fi

    echo "--- $label: rpm -e"
    if _rpm_traced "$root" "$t.erase" -e sockdiag-exporter; then ok "$label: rpm -e runs the scriptlets"; else fail "$label: rpm -e runs the scriptlets"; cat "$t.erase.raw" | grep -v '^D: '; fi
    cat "$t.erase"
    _check_heads "$label: erase ran %preun and %postun of release $r2 with \$1=0" \
        "$t.erase" "%preun R=$r2 \$1=0 exit=0;%postun R=$r2 \$1=0 exit=0;"
    _check_quiet "$label: erase" "$t.erase.other"
    check "$label: erase keeps the user and group" sh -c \
        "grep -q '^sockdiag_exporter:' '$root/etc/passwd' && grep -q '^sockdiag_exporter:' '$root/etc/group' &&
         ! grep -qE '^  (userdel|groupdel)' '$t.erase'"
    if [ "$systemd" = 1 ]; then
        check "$label: erase stops the service" test "$(_state "$root" active)" = 0
        check "$label: erase disables the service" test "$(_state "$root" enabled)" = 0
        check "$label: erase does not restart it" test "$(_state "$root" restarts)" = "$((1 - admin_off))"
        check "$label: erase reloads systemd after the unit file is gone" test "$(_state "$root" reload)" = absent
    else
        check "$label: without systemd running, erase calls no systemctl" sh -c "! grep -q '^  systemctl' '$t.erase'"
    fi
}

# check_rpm_scriptlets RPM RPM2 WORKDIR: RPM2 is the same package with a
# higher release.
check_rpm_scriptlets() {
    local rpm1=$1 rpm2=$2 dir=$3
    mkdir -p "$dir"
    _scriptlet_cycle systemd 1 0 0 "$rpm1" "$rpm2" "$dir"
    _scriptlet_cycle no-systemd 0 0 0 "$rpm1" "$rpm2" "$dir"
    _scriptlet_cycle user-exists 1 1 0 "$rpm1" "$rpm2" "$dir"
    _scriptlet_cycle admin-disabled 1 0 1 "$rpm1" "$rpm2" "$dir"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -uo pipefail
    [ $# = 2 ] || { echo "usage: $0 RPM RPM_RELEASE_2" >&2; exit 2; }
    passed=0 failed=0
    ok() { passed=$((passed + 1)); echo "ok: $*"; }
    fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
    check() {
        local what=$1
        shift
        if "$@"; then ok "$what"; else fail "$what"; fi
    }
    dir=$(mktemp -d /tmp/sockdiag-scriptlets.XXXXXX)
    trap 'rm -rf "$dir"' EXIT
    trap 'exit 130' INT TERM PIPE
    check_rpm_scriptlets "$1" "$2" "$dir"
    echo "$passed passed, $failed failed, 0 skipped"
    [ "$failed" = 0 ]
fi

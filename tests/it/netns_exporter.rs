//! `--collector.netns` end to end, through the binary: exact per-namespace
//! counts under each namespace's `netns` label, a deleted namespace leaving
//! the output (and, through the library, its socket closed), and an
//! unprivileged run that still serves its own namespace with
//! `sockdiag_collect_success{collector="netns"} 0`; and `--collector.cgroup`
//! on top, for a helper process in its own namespace and a test cgroup.
//!
//! Root tests make their namespaces with `ip netns add` (test-unique names,
//! deleted by a guard) and helper processes in private namespaces (killed by
//! PID); they skip with a printed reason when not root.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support;
use crate::support::netns::*;
use crate::support::{
    parse_prometheus, poll_until, require_root, require_sys_admin, require_tool, run_exporter,
    skip, Exposition, Server, BIN, STATES,
};
use sockdiag_exporter::collectors::{Collector, Options};
use sockdiag_exporter::kernel::diag::TcpState;
use sockdiag_exporter::kernel::transport::Netlink;
use sockdiag_exporter::scope::namespaces::{Fleet, NetnsConfig};
use sockdiag_exporter::scope::{netns, netns_enter};

const IP_HINT: &str = "iproute2, for named namespaces; `make deps` installs it";

/// These tests check which namespaces are served, not the budget
/// (netns_scale.rs does): a budget far above any collection keeps a busy
/// machine from leaving a namespace pending.
pub const NO_BUDGET: &str = "--collector.netns.budget=300s";

/// `listeners` IPv4 loopback listeners and `pairs` accepted connections to
/// the first, opened in the calling thread's namespace.
fn open_sockets(listeners: u32, pairs: u32) -> (Vec<TcpListener>, Vec<TcpStream>) {
    let ls: Vec<TcpListener> = (0..listeners)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut streams = Vec::new();
    for _ in 0..pairs {
        streams.push(TcpStream::connect(ls[0].local_addr().unwrap()).unwrap());
        streams.push(ls[0].accept().unwrap().0);
    }
    (ls, streams)
}

/// Asserts the namespace's TCP series: every state present, `listen` and
/// `established` as given, the rest 0.
fn assert_tcp(exp: &Exposition, netns: &str, listen: f64, established: f64) {
    for family in ["ipv4", "ipv6"] {
        for state in STATES {
            let want = match (family, state) {
                ("ipv4", "listen") => listen,
                ("ipv4", "established") => established,
                _ => 0.0,
            };
            let labels = [
                ("protocol", "tcp"),
                ("family", family),
                ("state", state),
                ("netns", netns),
            ];
            assert_eq!(
                exp.value("sockdiag_sockets", &labels),
                want,
                "netns {netns} {family} {state}"
            );
        }
    }
    assert_eq!(
        exp.value(
            "sockdiag_collect_success",
            &[("collector", "tcp"), ("netns", netns)]
        ),
        1.0
    );
}

fn labels_of(exp: &Exposition) -> Vec<String> {
    let mut labels: Vec<String> = exp
        .samples
        .keys()
        .filter(|(name, _)| name == "sockdiag_sockets")
        .filter_map(|(_, l)| l.iter().find(|(k, _)| k == "netns").map(|(_, v)| v.clone()))
        .collect();
    labels.sort();
    labels.dedup();
    labels
}

#[test]
fn every_namespace_is_collected_under_its_label() {
    if !require_sys_admin("create and enter network namespaces") || !require_tool("ip", IP_HINT) {
        return;
    }
    let prefix = format!("sdtest-{}-x", std::process::id());
    let mut named = NamedNs::add(&format!("{prefix}-a")).expect("ip netns add");
    let found = netns::discover(usize::MAX);
    let ns_a = found
        .namespaces
        .iter()
        .find(|ns| ns.label == named.name)
        .expect("the named namespace is found")
        .clone();
    let held = netns_enter::with_netns(&ns_a, || {
        netns_enter::set_link_up("lo").unwrap();
        open_sockets(3, 2)
    })
    .expect("enter the named namespace");
    let mut helper = Helper::spawn(
        ENTRY,
        &HelperSpec {
            listeners: 2,
            pairs: 1,
            private_netns: true,
            ..Default::default()
        },
    );
    let ino = std::fs::metadata(format!("/proc/{}/ns/net", helper.pid))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("helper namespace");
    let helper_label = format!("ino:{ino}");

    // One-shot dump: exact counts per namespace.
    let exp = support::dump_metrics(&["--collector.netns", NO_BUDGET]);
    assert_tcp(&exp, &named.name, 3.0, 4.0);
    assert_tcp(&exp, &helper_label, 2.0, 2.0);
    assert_eq!(
        exp.value(
            "sockdiag_netns_info",
            &[
                ("netns", &helper_label),
                ("inode", &ino.to_string()),
                ("pid", &helper.pid.to_string())
            ]
        ),
        1.0
    );
    assert_eq!(exp.value("sockdiag_netns_skipped", &[]), 0.0);
    // The host's own series are there too, under `host`.
    assert!(exp
        .get(
            "sockdiag_collect_success",
            &[("collector", "unix"), ("netns", "host")]
        )
        .is_some());
    // Healthy unless some process's namespace could not be read (this
    // machine's sandbox denies even root /proc/1/ns/net).
    let unreadable = exp.value("sockdiag_netns_unreadable_processes", &[]);
    let netns_ok = exp.value(
        "sockdiag_collect_success",
        &[("collector", "netns"), ("netns", "")],
    );
    assert_eq!(netns_ok, if unreadable == 0.0 { 1.0 } else { 0.0 });

    // The limit keeps the own namespace and counts the rest.
    let limited =
        support::dump_metrics(&["--collector.netns", NO_BUDGET, "--collector.netns.max=1"]);
    assert_eq!(labels_of(&limited), ["host"]);
    assert!(limited.value("sockdiag_netns_skipped", &[]) >= 2.0);
    assert_eq!(
        limited.value(
            "sockdiag_collect_success",
            &[("collector", "netns"), ("netns", "")]
        ),
        0.0
    );

    // A server: the namespaces disappear from the output once deleted, and
    // the exporter closes its socket in each.
    let server = Server::start(&["--collector.netns", NO_BUDGET, "--cache.ttl", "1ms"]);
    let first = server.scrape();
    let labels = labels_of(&first);
    assert!(labels.contains(&named.name), "{labels:?}");
    assert!(labels.contains(&helper_label), "{labels:?}");
    assert_tcp(&first, &named.name, 3.0, 4.0);

    // The same through the library, to see what is kept per namespace.
    let own = Collector::new(
        Netlink::open(Duration::from_secs(10)).unwrap(),
        Options::default(),
    );
    let mut fleet = Fleet::new(own, Some(NetnsConfig::new(10_000, Duration::from_secs(10))));
    fleet.collect();
    let helper_ns = netns::NsId {
        dev: ns_a.id.dev,
        ino,
    };
    assert!(fleet.holds(ns_a.id) && fleet.holds(helper_ns));
    let part = |fleet: &Fleet<Netlink>, label: &str| {
        fleet.parts().iter().find(|p| p.label == label).map(|p| {
            (
                p.stats.tcp.total(TcpState::Listen),
                p.stats.tcp.total(TcpState::Established),
            )
        })
    };
    assert_eq!(part(&fleet, &named.name), Some((3, 4)));
    assert_eq!(part(&fleet, &helper_label), Some((2, 2)));

    // Deleted while this process still holds sockets in it: the namespace
    // lives on, but nothing names it or runs in it any more.
    named.delete();
    helper.kill();
    let gone = poll_until(Duration::from_secs(10), || {
        let exp = server.scrape();
        let labels = labels_of(&exp);
        if labels.contains(&named.name) || labels.contains(&helper_label) {
            Err(format!("still there: {labels:?}"))
        } else {
            Ok(labels)
        }
    })
    .expect("deleted namespaces leave the output");
    assert!(gone.contains(&"host".to_string()), "{gone:?}");
    fleet.collect();
    assert!(
        !fleet.holds(ns_a.id) && !fleet.holds(helper_ns),
        "the counts of vanished namespaces are forgotten"
    );
    let parts: Vec<&str> = fleet.parts().iter().map(|p| p.label).collect();
    assert!(!parts.contains(&named.name.as_str()), "{parts:?}");
    drop(held);
}

/// The copy another uid runs works from a checkout other users cannot
/// enter: the binary in a 0700 directory cannot be run as uid 65534, its
/// `CopyForAnyUser` can.
#[test]
fn another_uid_runs_a_copy_of_a_binary_it_cannot_reach() {
    use std::os::unix::fs::PermissionsExt;
    if !require_root("drop to uid 65534") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sdtest-0700-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = dir.join("sockdiag_exporter");
    std::fs::copy(BIN, &hidden).unwrap();
    let run = |path: &std::path::Path| {
        let mut cmd = Command::new(path);
        cmd.arg("--version")
            .current_dir("/")
            .uid(65534)
            .gid(65534)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        spawn_retrying(&mut cmd).and_then(|c| c.wait_with_output())
    };
    let denied = run(&hidden);
    assert_eq!(
        denied.as_ref().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::PermissionDenied),
        "{denied:?}"
    );
    let copy = CopyForAnyUser::of(&hidden);
    let out = run(&copy.path).expect("the copy runs as uid 65534");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sockdiag_exporter "));
    drop(copy);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unprivileged_run_serves_the_own_namespace() {
    if !require_root("drop to uid 65534") {
        return;
    }
    // A namespace the unprivileged exporter must fail to enter.
    if !require_sys_admin("add a named network namespace") || !require_tool("ip", IP_HINT) {
        return;
    }
    let _named = NamedNs::add(&format!("sdtest-{}-xu", std::process::id())).expect("ip netns add");
    // The exporter as uid 65534 runs a copy it can reach, from a directory
    // it can enter (the checkout may be in root's 0700 home).
    let copy = CopyForAnyUser::of(std::path::Path::new(BIN));
    let mut cmd = Command::new(&copy.path);
    cmd.args(["dump", "--collector.netns"])
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = spawn_retrying(&mut cmd)
        .and_then(|child| child.wait_with_output())
        .expect("run the exporter as uid 65534");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let exp = parse_prometheus(&stdout).expect("exposition parses");
    assert_eq!(labels_of(&exp), ["host"], "{stderr}");
    for collector in ["tcp", "listeners", "udp", "unix"] {
        assert_eq!(
            exp.value(
                "sockdiag_collect_success",
                &[("collector", collector), ("netns", "host")]
            ),
            1.0,
            "{collector}"
        );
    }
    assert_eq!(
        exp.value(
            "sockdiag_collect_success",
            &[("collector", "netns"), ("netns", "")]
        ),
        0.0
    );
    assert!(exp.value("sockdiag_netns_unreadable_processes", &[]) > 0.0);
    // Said once in the log, with the reason.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("network namespace collection incomplete"))
        .collect();
    for reason in ["permission denied", "no CAP_SYS_ADMIN", "no CAP_SYS_PTRACE"] {
        assert_eq!(
            warnings.iter().filter(|l| l.contains(reason)).count(),
            1,
            "{reason} logged once: {stderr}"
        );
    }
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("cannot enter") && l.contains("Operation not permitted")),
        "{stderr}"
    );
}

/// A test-owned cgroup directly under the cgroup2 root, and its name; None
/// (after printing why) when not root or cgroup2 is missing or read-only.
fn test_cgroup(suffix: &str) -> Option<(TestCgroup, String)> {
    // The tests also spawn helpers in private network namespaces.
    if !require_sys_admin("create cgroups and network namespaces") {
        return None;
    }
    let mount = match sockdiag_exporter::scope::cgroup_mount::detect() {
        Ok(m) => m,
        Err(e) => {
            skip(format_args!("needs a cgroup2 mount: {e}"));
            return None;
        }
    };
    let name = format!("sockdiag-test-{}-{suffix}", std::process::id());
    match TestCgroup::create(&mount.mount_point, &name) {
        Ok(cg) => Some((cg, name)),
        Err(e) => {
            skip(format_args!(
                "needs a writable cgroup2 at {}: {e}",
                mount.mount_point.display()
            ));
            None
        }
    }
}

/// `--collector.netns --collector.cgroup` through the binary: a helper in
/// its own namespace and a test-owned cgroup shows up under both labels.
#[test]
fn pod_like_helper_is_counted_by_netns_and_cgroup() {
    let Some((top, name)) = test_cgroup("x") else {
        return;
    };
    let pod = TestCgroup::create(&top.path, "pod").unwrap();
    let helper = Helper::spawn(
        ENTRY,
        &HelperSpec {
            listeners: 2,
            pairs: 3,
            private_netns: true,
            cgroup: Some(pod.path.clone()),
            ..Default::default()
        },
    );
    let ino = std::fs::metadata(format!("/proc/{}/ns/net", helper.pid))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("helper namespace");
    let netns = format!("ino:{ino}");
    let path = format!("/{name}/pod");
    let exp = support::dump_metrics(&["--collector.netns", NO_BUDGET, "--collector.cgroup"]);
    for state in STATES {
        let want = match state {
            "listen" => 2.0,
            "established" => 6.0,
            _ => 0.0,
        };
        assert_eq!(
            exp.value(
                "sockdiag_cgroup_sockets",
                &[
                    ("cgroup", &path),
                    ("protocol", "tcp"),
                    ("state", state),
                    ("netns", &netns)
                ]
            ),
            want,
            "{state}"
        );
    }
    // Nothing else in that namespace: no other cgroup, nothing unknown.
    let rows: Vec<String> = exp
        .samples
        .keys()
        .filter(|(n, l)| {
            n == "sockdiag_cgroup_sockets" && l.iter().any(|(k, v)| k == "netns" && *v == netns)
        })
        .filter_map(|(_, l)| {
            l.iter()
                .find(|(k, _)| k == "cgroup")
                .map(|(_, v)| v.clone())
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(rows, [path.clone(), "none".to_string()]);
    assert_eq!(
        exp.value(
            "sockdiag_collect_success",
            &[("collector", "cgroup"), ("netns", "")]
        ),
        1.0
    );
    // Depth 1: summed into the test's top cgroup.
    let exp = support::dump_metrics(&[
        "--collector.netns",
        NO_BUDGET,
        "--collector.cgroup",
        "--collector.cgroup.depth=1",
    ]);
    assert_eq!(
        exp.value(
            "sockdiag_cgroup_sockets",
            &[
                ("cgroup", &format!("/{name}")),
                ("protocol", "tcp"),
                ("state", "established"),
                ("netns", &netns)
            ]
        ),
        6.0
    );
    drop(helper);
}

/// `--collector.cgroup.max-series` far below its default (500): three
/// test cgroups holding 3, 5 and 7 sockets, all in this test's private
/// namespace. At a cap of 3 every path is its own row; at 2 the heaviest
/// path stays and the other two are summed into `other`, counted in
/// `sockdiag_series_dropped`.
#[test]
fn cgroup_series_cap_keeps_the_heaviest_and_sums_the_rest() {
    let Some((top, name)) = test_cgroup("cap") else {
        return;
    };
    if !support::require_root_netns() {
        return;
    }
    // (cgroup, pairs): 1 listener + 2 ESTABLISHED per pair.
    let pods: Vec<(TestCgroup, u32)> = [("a", 1), ("b", 2), ("c", 3)]
        .into_iter()
        .map(|(pod, pairs)| (TestCgroup::create(&top.path, pod).unwrap(), pairs))
        .collect();
    let _helpers: Vec<Helper> = pods
        .iter()
        .map(|(cg, pairs)| {
            Helper::spawn(
                ENTRY,
                &HelperSpec {
                    listeners: 1,
                    pairs: *pairs,
                    cgroup: Some(cg.path.clone()),
                    ..Default::default()
                },
            )
        })
        .collect();
    let value = |exp: &Exposition, cgroup: &str, state: &str| {
        exp.value(
            "sockdiag_cgroup_sockets",
            &[("cgroup", cgroup), ("protocol", "tcp"), ("state", state)],
        )
    };
    let rows = |exp: &Exposition| -> Vec<String> {
        exp.samples
            .keys()
            .filter(|(n, _)| n == "sockdiag_cgroup_sockets")
            .filter_map(|(_, l)| {
                l.iter()
                    .find(|(k, _)| k == "cgroup")
                    .map(|(_, v)| v.clone())
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let dropped = |exp: &Exposition| {
        exp.value(
            "sockdiag_series_dropped",
            &[("metric", "sockdiag_cgroup_sockets")],
        )
    };
    let path = |pod: &str| format!("/{name}/{pod}");

    let at_three =
        support::dump_metrics(&["--collector.cgroup", "--collector.cgroup.max-series=3"]);
    // `none` (sockets without a cgroup id) is never cut and not counted
    // against the cap.
    let none = "none".to_string();
    assert_eq!(
        rows(&at_three),
        [path("a"), path("b"), path("c"), none.clone()]
    );
    for (pod, pairs) in [("a", 1.0), ("b", 2.0), ("c", 3.0)] {
        assert_eq!(value(&at_three, &path(pod), "listen"), 1.0, "{pod}");
        assert_eq!(
            value(&at_three, &path(pod), "established"),
            2.0 * pairs,
            "{pod}"
        );
    }
    assert_eq!(dropped(&at_three), 0.0);

    let at_two =
        support::dump_metrics(&["--collector.cgroup", "--collector.cgroup.max-series", "2"]);
    assert_eq!(rows(&at_two), [path("c"), none, "other".to_string()]);
    assert_eq!(value(&at_two, &path("c"), "established"), 6.0);
    assert_eq!(value(&at_two, "other", "listen"), 2.0);
    assert_eq!(value(&at_two, "other", "established"), 6.0);
    assert_eq!(dropped(&at_two), 2.0);
}

/// Inside a cgroup namespace with its own cgroup2 mount (a container
/// without the host's /sys/fs/cgroup) the mount's top is the container's
/// cgroup, shown as `/`: the exporter must refuse to name paths.
#[test]
fn cgroup_namespace_mount_is_refused() {
    let Some((cg, _)) = test_cgroup("cgns") else {
        return;
    };
    let mount = sockdiag_exporter::scope::cgroup_mount::detect().expect("checked by test_cgroup");
    let point = mount.mount_point.display().to_string();
    let script = format!(
        "umount -l {point} 2>/dev/null; mount -t cgroup2 none {point} && exec {BIN} dump --collector.cgroup --no-collector.udp --no-collector.unix --no-collector.listeners"
    );
    let procs = std::ffi::CString::new(format!("{}/cgroup.procs", cg.path.display())).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--cgroup", "--mount", "sh", "-c", &script]);
    // SAFETY: between fork and exec only open/write/close on data prepared
    // before the fork: the child moves itself into the test cgroup.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stdout.is_empty() {
        skip(format_args!(
            "needs a cgroup namespace with its own cgroup2 mount (unshare --cgroup --mount): {stderr}"
        ));
        return;
    }
    let exp = parse_prometheus(&stdout).expect("exposition parses");
    assert_eq!(
        exp.value("sockdiag_collect_success", &[("collector", "cgroup")]),
        0.0,
        "{stderr}"
    );
    assert!(!stdout.contains("sockdiag_cgroup_sockets{"), "{stdout}");
    assert!(stderr.contains("not the root of the hierarchy"), "{stderr}");
    drop(cg);
}

#[test]
fn cgroup_needs_the_tcp_collector() {
    let out = run_exporter(
        &["dump", "--collector.cgroup", "--no-collector.tcp"],
        Duration::from_secs(30),
    );
    assert_ne!(out.code(), Some(0));
    assert!(
        out.stderr.contains("--no-collector.tcp"),
        "{}",
        out.describe()
    );
}

#[test]
fn netns_cannot_be_combined_with_a_fixture() {
    let out = run_exporter(
        &[
            "dump",
            "--collector.netns",
            "--source.fixture",
            "tests/fixtures/all_legacy.fixture",
        ],
        Duration::from_secs(30),
    );
    assert_ne!(out.code(), Some(0));
    assert!(
        out.stderr.contains("--collector.netns") && out.stderr.contains("--source.fixture"),
        "{}",
        out.describe()
    );
}

//! `--collector.netns` at node scale (issue 16), against the kernel: a
//! namespace whose own counters show no socket is not dumped and its series
//! are exact zeros, and a socket it gains is counted at the next
//! collection; the counters never call a namespace empty that holds only a
//! listener, a TIME_WAIT, a request socket (with its listener) or an orphan
//! in FIN_WAIT1; UDP and unix counts per namespace end to end; the budget
//! serves unreached namespaces from their last collection, with its
//! timestamp, and refreshes them next time.
//!
//! Each test makes its own named namespaces (`ip netns add`, test-unique
//! names, deleted by a guard) and opens its sockets in them from the test
//! thread (`with_netns`), so they are closed when the test ends.

use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use crate::netns_exporter::NO_BUDGET;
use crate::support::netns::NamedNs;
use crate::support::sockets::{attach_drop_all_filter, TempDir};
use crate::support::{
    parse_prometheus, poll_until, require_sys_admin, require_tool, Exposition, STATES,
};
use sockdiag_exporter::collectors::{Collector, Kind, Options};
use sockdiag_exporter::export::metrics::{Metrics, Shape};
use sockdiag_exporter::kernel::diag::TcpState;
use sockdiag_exporter::kernel::transport::Netlink;
use sockdiag_exporter::scope::namespaces::{Fleet, NetnsConfig};
use sockdiag_exporter::scope::netns::{self, Namespace};
use sockdiag_exporter::scope::netns_enter::{set_link_up, with_netns};
use sockdiag_exporter::scope::netns_problem::Problem;
use sockdiag_exporter::scope::netns_sockstat::Occupancy;

const IP_HINT: &str = "iproute2, for named namespaces; `make deps` installs it";

fn can_run() -> bool {
    require_sys_admin("create and enter network namespaces") && require_tool("ip", IP_HINT)
}

/// A fresh named namespace with `lo` up, and its discovered identity.
fn named(tag: &str) -> (NamedNs, Namespace) {
    let guard =
        NamedNs::add(&format!("sdscale-{}-{tag}", std::process::id())).expect("ip netns add");
    let ns = netns::discover(usize::MAX)
        .namespaces
        .into_iter()
        .find(|ns| ns.label == guard.name)
        .expect("the named namespace is found");
    with_netns(&ns, || set_link_up("lo"))
        .expect("enter")
        .expect("lo up");
    (guard, ns)
}

fn inside<R>(ns: &Namespace, f: impl FnOnce() -> R) -> R {
    with_netns(ns, f).expect("enter the test namespace")
}

fn fleet() -> Fleet<Netlink> {
    let own = Collector::new(
        Netlink::open(Duration::from_secs(10)).unwrap(),
        Options::default(),
    );
    Fleet::new(
        own,
        Some(NetnsConfig::new(100_000, Duration::from_secs(10))),
    )
}

/// The fleet's last collection as the exporter serves it.
fn exposition(fleet: &Fleet<Netlink>) -> Exposition {
    let metrics = Metrics::new(Shape {
        process: false,
        compat_node_exporter: false,
        netns: true,
        cgroup: false,
    });
    metrics.begin();
    for part in fleet.parts() {
        metrics.record_namespace(part.label, part.stats, part.reports);
    }
    parse_prometheus(&metrics.encode()).expect("our exposition parses")
}

/// Asserts every TCP series of `netns`: the states in `want` (summed over
/// both families, all IPv4 here) as given, every other state 0.
fn assert_tcp(exp: &Exposition, netns: &str, want: &[(&str, f64)], context: &str) {
    for family in ["ipv4", "ipv6"] {
        for state in STATES {
            let expected = match family {
                "ipv4" => want.iter().find(|(s, _)| *s == state).map_or(0.0, |w| w.1),
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
                expected,
                "{context}: tcp {family} {state}"
            );
        }
    }
}

fn assert_udp(exp: &Exposition, netns: &str, connected: f64, unconnected: f64, context: &str) {
    for family in ["ipv4", "ipv6"] {
        for (state, want) in [("connected", connected), ("unconnected", unconnected)] {
            let want = if family == "ipv4" { want } else { 0.0 };
            let labels = [
                ("protocol", "udp"),
                ("family", family),
                ("state", state),
                ("netns", netns),
            ];
            assert_eq!(
                exp.value("sockdiag_sockets", &labels),
                want,
                "{context}: udp {family} {state}"
            );
        }
    }
}

fn assert_unix(exp: &Exposition, netns: &str, want: &[(&str, &str, f64)], context: &str) {
    for ty in ["stream", "dgram", "seqpacket"] {
        for state in ["connected", "listen", "unconnected"] {
            let expected = want
                .iter()
                .find(|(t, s, _)| *t == ty && *s == state)
                .map_or(0.0, |w| w.2);
            let labels = [("type", ty), ("state", state), ("netns", netns)];
            assert_eq!(
                exp.value("sockdiag_unix_sockets", &labels),
                expected,
                "{context}: unix {ty} {state}"
            );
        }
    }
}

#[test]
fn an_empty_namespace_is_not_dumped_and_a_socket_it_gains_is_counted_next_time() {
    if !can_run() {
        return;
    }
    let (_guard, ns) = named("gain");
    let label = ns.label.clone();
    let mut fleet = fleet();
    fleet.collect();
    assert_eq!(
        fleet.skipped_as_empty(&label),
        Some(&Kind::ALL[..]),
        "no socket: no collector dumps"
    );
    let exp = exposition(&fleet);
    assert_tcp(&exp, &label, &[], "empty");
    assert_udp(&exp, &label, 0.0, 0.0, "empty");
    assert_unix(&exp, &label, &[], "empty");
    for kind in Kind::ALL {
        let labels = [("collector", kind.label()), ("netns", label.as_str())];
        assert_eq!(exp.value("sockdiag_collect_success", &labels), 1.0);
    }
    let outcome = fleet.netns().unwrap();
    assert!(outcome.empty.iter().all(|(_, n)| *n >= 1), "{outcome:?}");

    // Between two collections the namespace gains one socket of each kind.
    let held = inside(&ns, || {
        (
            TcpListener::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UnixStream::pair().unwrap(),
        )
    });
    fleet.collect();
    assert_eq!(fleet.skipped_as_empty(&label), Some(&[][..]));
    let exp = exposition(&fleet);
    assert_tcp(&exp, &label, &[("listen", 1.0)], "gained");
    assert_udp(&exp, &label, 0.0, 1.0, "gained");
    assert_unix(&exp, &label, &[("stream", "connected", 2.0)], "gained");

    // Only the unix pair left: tcp and udp are skipped again, exactly 0.
    let (listener, udp, pair) = held;
    drop((listener, udp));
    fleet.collect();
    assert_eq!(
        fleet.skipped_as_empty(&label),
        Some(&[Kind::Tcp, Kind::Listeners, Kind::Udp][..])
    );
    let exp = exposition(&fleet);
    assert_tcp(&exp, &label, &[], "unix only");
    assert_udp(&exp, &label, 0.0, 0.0, "unix only");
    assert_unix(&exp, &label, &[("stream", "connected", 2.0)], "unix only");
    drop(pair);
}

/// Polls a fresh collection until the namespace's TCP counts are `want`.
fn settle(fleet: &mut Fleet<Netlink>, label: &str, want: &[(TcpState, u64)]) -> Result<(), String> {
    poll_until(Duration::from_secs(10), || {
        fleet.collect();
        let parts = fleet.parts();
        let part = parts
            .iter()
            .find(|p| p.label == label)
            .ok_or("not collected")?;
        let got: Vec<(TcpState, u64)> = TcpState::ALL
            .into_iter()
            .map(|s| (s, part.stats.tcp.total(s)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if got == want {
            Ok(())
        } else {
            Err(format!("{label}: {got:?}, want {want:?}"))
        }
    })
}

#[test]
fn counters_never_call_a_namespace_empty_that_holds_a_tcp_socket() {
    if !can_run() {
        return;
    }
    let mut fleet = fleet();

    // Only a listener.
    let (_g1, listen_ns) = named("listen");
    let (listener, occupancy) = inside(&listen_ns, || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        (l, Occupancy::of_current_thread())
    });
    assert_eq!(occupancy.tcp, Some(1), "a listener is in use");

    // Only a TIME_WAIT: the client closes first, then the server, then the
    // listener goes.
    let (_g2, tw_ns) = named("tw");
    inside(&tw_ns, || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut server, _) = l.accept().unwrap();
        drop(client);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).unwrap(); // the client's FIN
        drop(server);
        drop(l);
    });

    // A request socket: a TCP_DEFER_ACCEPT listener keeps the server side
    // of a connection that sent no data in SYN_RECV; the kernel's counter
    // does not count request sockets, but it counts their listener.
    let (_g3, syn_ns) = named("synrecv");
    let (deferred, client, occupancy) = inside(&syn_ns, || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let secs: libc::c_int = 60;
        // SAFETY: setsockopt with a c_int that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                l.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&secs as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "TCP_DEFER_ACCEPT");
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        (l, c, Occupancy::of_current_thread())
    });
    assert_eq!(
        occupancy.tcp,
        Some(2),
        "the listener and the client; the request socket is not counted"
    );

    // Only an orphan in FIN_WAIT1: the server end drops every packet it
    // gets, closes (its FIN is never acknowledged), and the client then
    // resets, unheard; the listener is gone.
    let (_g4, orphan_ns) = named("orphan");
    inside(&orphan_ns, || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        drop(l);
        attach_drop_all_filter(server.as_raw_fd());
        drop(server);
        std::thread::sleep(Duration::from_millis(50));
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt with a linger struct that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                client.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER");
        drop(client);
    });

    use TcpState::*;
    settle(&mut fleet, &listen_ns.label, &[(Listen, 1)]).unwrap();
    settle(&mut fleet, &tw_ns.label, &[(TimeWait, 1)]).unwrap();
    settle(
        &mut fleet,
        &syn_ns.label,
        &[(Established, 1), (SynRecv, 1), (Listen, 1)],
    )
    .unwrap();
    settle(&mut fleet, &orphan_ns.label, &[(FinWait1, 1)]).unwrap();
    for ns in [&listen_ns, &tw_ns, &syn_ns, &orphan_ns] {
        let skipped = fleet.skipped_as_empty(&ns.label).unwrap();
        assert!(
            !skipped.contains(&Kind::Tcp) && !skipped.contains(&Kind::Listeners),
            "{}: {skipped:?}",
            ns.label
        );
        assert!(skipped.contains(&Kind::Udp), "{}: {skipped:?}", ns.label);
    }
    // What kept the TIME_WAIT namespace from being skipped is `tw`.
    let tw_only = inside(&tw_ns, Occupancy::of_current_thread);
    assert_eq!(tw_only.tcp, Some(1));
    drop((listener, deferred, client));
}

#[test]
fn udp_and_unix_sockets_are_counted_per_namespace_end_to_end() {
    if !can_run() {
        return;
    }
    let (_g1, a) = named("udpa");
    let (_g2, b) = named("unixb");
    let dir = TempDir::new("netns-scale-unix");
    let held_a = inside(&a, || {
        let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        let third = UdpSocket::bind("127.0.0.1:0").unwrap();
        connected.connect(other.local_addr().unwrap()).unwrap();
        (connected, other, third)
    });
    let path = dir.path().join("sock");
    let held_b = inside(&b, || {
        let listener = UnixListener::bind(&path).unwrap();
        let client = UnixStream::connect(&path).unwrap();
        let (server, _) = listener.accept().unwrap();
        let pair = UnixStream::pair().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        (listener, client, server, pair, udp)
    });
    let exp = crate::support::dump_metrics(&["--collector.netns", NO_BUDGET]);
    assert_udp(&exp, &a.label, 1.0, 2.0, "namespace a");
    assert_unix(&exp, &a.label, &[], "namespace a");
    assert_tcp(&exp, &a.label, &[], "namespace a");
    assert_udp(&exp, &b.label, 0.0, 1.0, "namespace b");
    assert_unix(
        &exp,
        &b.label,
        &[("stream", "listen", 1.0), ("stream", "connected", 4.0)],
        "namespace b",
    );
    for ns in [&a, &b] {
        for collector in ["udp", "unix"] {
            let labels = [("collector", collector), ("netns", ns.label.as_str())];
            assert_eq!(exp.value("sockdiag_collect_success", &labels), 1.0);
        }
    }
    drop((held_a, held_b));
}

#[test]
fn namespaces_the_budget_misses_keep_their_last_series_and_go_first_next_time() {
    if !can_run() {
        return;
    }
    let (_g1, x) = named("budgetx");
    let first = inside(&x, || TcpListener::bind("127.0.0.1:0").unwrap());
    let mut fleet = fleet();
    fleet.collect();
    let stamp = |fleet: &Fleet<Netlink>| {
        let parts = fleet.parts();
        let part = parts.iter().find(|p| p.label == x.label).expect("x served");
        let tcp = part.reports.iter().find(|r| r.kind == Kind::Tcp).unwrap();
        (part.stats.tcp.total(TcpState::Listen), tcp.started)
    };
    let (listen, then) = stamp(&fleet);
    assert_eq!(listen, 1);

    // No budget at all: nothing is reached. x keeps its last counts and
    // timestamp (not its new listener), a namespace never collected has
    // no series, both are counted, and the netns health says so.
    let second = inside(&x, || TcpListener::bind("127.0.0.1:0").unwrap());
    let (_g2, y) = named("budgety");
    std::thread::sleep(Duration::from_millis(20));
    fleet.set_budget(Duration::ZERO);
    fleet.collect();
    assert_eq!(
        stamp(&fleet),
        (1, then),
        "served from the earlier collection"
    );
    assert!(fleet.parts().iter().all(|p| p.label != y.label));
    let outcome = fleet.netns().unwrap().clone();
    assert!(outcome.stale >= 1 && outcome.pending >= 1, "{outcome:?}");
    assert!(!outcome.health.ok);
    assert!(
        outcome
            .problems
            .iter()
            .any(|p| matches!(p, Problem::OverBudget { .. })),
        "{:?}",
        outcome.problems
    );
    assert!(outcome.namespaces.iter().any(|n| n.label == x.label));
    assert!(outcome.namespaces.iter().all(|n| n.label != y.label));
    let exp = exposition(&fleet);
    let since = then
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let ts = exp.value(
        "sockdiag_collect_timestamp_seconds",
        &[("collector", "tcp"), ("netns", &x.label)],
    );
    assert!((ts - since).abs() < 1e-3, "{ts} vs {since}");

    // With time again, both are fresh.
    fleet.set_budget(Duration::from_secs(60));
    fleet.collect();
    let (listen, now) = stamp(&fleet);
    assert_eq!(listen, 2);
    assert!(now > then);
    assert!(fleet.parts().iter().any(|p| p.label == y.label));
    let outcome = fleet.netns().unwrap();
    assert_eq!((outcome.stale, outcome.pending), (0, 0));
    assert!(!outcome
        .problems
        .iter()
        .any(|p| matches!(p, Problem::OverBudget { .. })));
    drop((first, second));
}

#[test]
fn the_costliest_namespaces_are_collected_first() {
    if !can_run() {
        return;
    }
    // Discovery order is by name: a, b, c. The pool's survey reads their
    // counters and starts c (a TCP walk and the most sockets), then b (a
    // walk), then a (nothing to walk). One thread, so each starts after
    // the one before it has finished.
    let (_ga, a) = named("order-a");
    let (_gb, b) = named("order-b");
    let (_gc, c) = named("order-c");
    let _lb = inside(&b, || TcpListener::bind("127.0.0.1:0").unwrap());
    let _lc = inside(&c, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        (listener, clients)
    });
    let own = Collector::new(
        Netlink::open(Duration::from_secs(10)).unwrap(),
        Options::default(),
    );
    let mut config = NetnsConfig::new(100_000, Duration::from_secs(10));
    config.parallel = 1;
    config.budget = Duration::from_secs(600);
    let mut fleet = Fleet::new(own, Some(config));
    fleet.collect();
    let parts = fleet.parts();
    let started = |ns: &Namespace| {
        let part = parts.iter().find(|p| p.label == ns.label).expect("served");
        assert_eq!(
            part.reports.iter().filter(|r| r.error.is_some()).count(),
            0,
            "{}",
            ns.label
        );
        part.reports
            .iter()
            .map(|r| r.started)
            .min()
            .expect("reports")
    };
    let (ta, tb, tc) = (started(&a), started(&b), started(&c));
    assert!(tc < tb && tb < ta, "c {tc:?}, b {tb:?}, a {ta:?}");
    assert_eq!(fleet.skipped_as_empty(&a.label).map(<[Kind]>::len), Some(4));
    assert_eq!(
        fleet.skipped_as_empty(&b.label),
        Some(&[Kind::Udp, Kind::Unix][..])
    );
}

#[test]
fn budget_and_parallel_flags_reach_the_collection() {
    if !can_run() {
        return;
    }
    let (_g, x) = named("flags");
    let _l = inside(&x, || TcpListener::bind("127.0.0.1:0").unwrap());
    let none = crate::support::dump_metrics(&["--collector.netns", "--collector.netns.budget=0s"]);
    let labelled_x = none
        .samples
        .keys()
        .filter(|(_, labels)| labels.iter().any(|(k, v)| k == "netns" && *v == x.label))
        .count();
    assert_eq!(labelled_x, 0, "a namespace never reached has no series");
    assert!(none.value("sockdiag_netns_pending", &[]) >= 1.0);
    assert_eq!(none.value("sockdiag_netns_stale", &[]), 0.0);
    assert_eq!(
        none.value(
            "sockdiag_collect_success",
            &[("collector", "netns"), ("netns", "")]
        ),
        0.0
    );
    let one = crate::support::dump_metrics(&[
        "--collector.netns",
        NO_BUDGET,
        "--collector.netns.parallel=1",
    ]);
    assert_tcp(&one, &x.label, &[("listen", 1.0)], "parallel 1");
    assert_eq!(one.value("sockdiag_netns_pending", &[]), 0.0);
}

/// Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the calling
/// thread's effective set (capabilities are per thread), so that file
/// modes apply to it although it runs as root.
fn drop_dac_override_on_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as the
    // ABI requires; pid 0 is the calling thread.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !((1 << 1) | (1 << 2));
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0,
            "capset: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn an_unreadable_cgroup_directory_skips_its_subtree_and_is_counted() {
    use sockdiag_exporter::scope::cgroup::{Problem as CgroupProblem, UNKNOWN};
    use sockdiag_exporter::scope::cgroup_mount::Cgroup2Mount;
    use sockdiag_exporter::scope::cgroup_paths::{walk, CgroupPaths, WalkLimits};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !crate::support::require_root("read a 0000 directory only without CAP_DAC_OVERRIDE") {
        return;
    }
    // A tree laid out like cgroup2 (the walk reads only names and d_ino);
    // b cannot be listed by a thread that file modes apply to.
    let dir = TempDir::new("netns-scale-cgwalk");
    let root = dir.path().to_path_buf();
    for d in ["a/x", "b/c/d", "e"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
    let (b, c, x, e) = (ino("b"), ino("b/c"), ino("a/x"), ino("e"));
    let b_dir = root.join("b");
    let mode = move |m: u32| std::fs::set_permissions(&b_dir, std::fs::Permissions::from_mode(m));
    mode(0o000).unwrap();
    let mount = Cgroup2Mount {
        mount_point: root.clone(),
        root: "/".into(),
    };
    let seen = {
        let mount = mount.clone();
        std::thread::spawn(move || {
            drop_dac_override_on_this_thread();
            let walked = walk(&mount, WalkLimits::default());
            let mut cache = CgroupPaths::new(mount, WalkLimits::default());
            cache.start_collection();
            let label = cache.resolve(Some(c)).to_string();
            let problem = cache.problem().cloned();
            // Readable again: the id was not written off as unknown.
            mode(0o755).unwrap();
            cache.start_collection();
            let again = cache.resolve(Some(c)).to_string();
            (walked, label, problem, again)
        })
        .join()
        .unwrap()
    };
    let (walked, label, problem, again) = seen;
    let (paths, report) = walked.expect("the walk goes on past an unreadable directory");
    assert_eq!(report.unreadable, 1, "{report:?}");
    assert!(!report.truncated);
    assert_eq!(paths[&x], "/a/x");
    assert_eq!(paths[&e], "/e");
    assert_eq!(
        paths[&b], "/b",
        "the directory itself is named by its parent"
    );
    assert!(!paths.contains_key(&c), "its subtree is skipped");
    assert_eq!(report.cgroups, 5, "/, a, a/x, b, e");
    assert_eq!(label, UNKNOWN);
    match problem {
        Some(CgroupProblem::SubtreesUnreadable {
            skipped, example, ..
        }) => {
            assert_eq!(skipped, 1);
            assert_eq!(example, root.join("b"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(again, "/b/c");
}

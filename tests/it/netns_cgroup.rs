//! Issue 4 building blocks against the real kernel (root; skipped with a
//! printed reason otherwise): network namespace discovery, labels, entering
//! and per-namespace dumps; cgroup ids mapped to test-owned cgroups; an
//! unprivileged discovery.
//!
//! Helper processes are this binary run again (`helper_process_entry`);
//! every namespace, cgroup and process a test makes carries the test
//! process id in its name and is removed by a guard, also on failure.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::support;
use crate::support::netns::*;
use crate::support::{poll_until, require_sys_admin, require_tool, skip};
use sockdiag_exporter::collectors::{tcp::DumpMode, Collector, Options};
use sockdiag_exporter::kernel::diag::TcpState;
use sockdiag_exporter::kernel::transport::Netlink;
use sockdiag_exporter::scope::cgroup;
use sockdiag_exporter::scope::cgroup_attribution::Attribution;
use sockdiag_exporter::scope::cgroup_mount;
use sockdiag_exporter::scope::netns::{self, Namespace};
use sockdiag_exporter::scope::netns_cache::PerNamespace;
use sockdiag_exporter::scope::netns_enter;

const IP_HINT: &str = "iproute2, for named namespaces; `make deps` installs it";

/// Opens `listeners` IPv4 loopback listeners and `pairs` accepted
/// connections to the first, in the calling thread's namespace.
fn open_sockets(listeners: u32, pairs: u32) -> (Vec<TcpListener>, Vec<TcpStream>) {
    let ls: Vec<TcpListener> = (0..listeners)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let mut streams = Vec::new();
    for _ in 0..pairs {
        let port = ls[0].local_addr().unwrap().port();
        streams.push(TcpStream::connect(("127.0.0.1", port)).expect("connect"));
        streams.push(ls[0].accept().expect("accept").0);
    }
    (ls, streams)
}

/// (listen, established, total) from one collection through `nl`.
fn counts(nl: Netlink) -> (u64, u64, u64) {
    let mut c = Collector::new(
        nl,
        Options::tcp_only(DumpMode::Auto, Duration::from_secs(10)),
    );
    let stats = c.collect_tcp().expect("collect");
    let total = TcpState::ALL.iter().map(|s| stats.total(*s)).sum();
    (
        stats.total(TcpState::Listen),
        stats.total(TcpState::Established),
        total,
    )
}

fn ns_ino_of_pid(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .expect("stat helper ns")
        .ino()
}

#[test]
fn discovers_labels_and_counts_every_namespace() {
    if !require_sys_admin("create and enter network namespaces") || !require_tool("ip", IP_HINT) {
        return;
    }
    let prefix = format!("sdtest-{}", std::process::id());
    let home = netns::current().unwrap();

    // Two named namespaces (sockets made from here, via with_netns) and two
    // held only by a helper process (sockets made by the helper).
    let mut named_a = NamedNs::add(&format!("{prefix}-a")).expect("ip netns add");
    let named_b = NamedNs::add(&format!("{prefix}-b")).expect("ip netns add");
    let h1 = Helper::spawn(
        ENTRY,
        &HelperSpec {
            listeners: 2,
            pairs: 1,
            private_netns: true,
            ..Default::default()
        },
    );
    let mut h2 = Helper::spawn(
        ENTRY,
        &HelperSpec {
            listeners: 1,
            pairs: 3,
            private_netns: true,
            ..Default::default()
        },
    );

    let found = netns::discover(usize::MAX);
    let by = netns::by_label(&found);
    assert_eq!(found.namespaces[0].label, "host");
    assert_eq!(found.namespaces[0].id, home);
    assert!(found.namespaces[0].own);
    assert_eq!(found.skipped, 0);
    let ns_a = (*by.get(named_a.name.as_str()).expect("named a found")).clone();
    let ns_b = (*by.get(named_b.name.as_str()).expect("named b found")).clone();
    assert_eq!(ns_a.name.as_deref(), Some(named_a.name.as_str()));
    let ns_h = |h: &Helper| -> Namespace {
        let ino = ns_ino_of_pid(h.pid);
        let ns = found
            .namespaces
            .iter()
            .find(|ns| ns.id.ino == ino)
            .unwrap_or_else(|| panic!("helper {}'s namespace {ino} not found", h.pid));
        assert_eq!(ns.label, format!("ino:{ino}"));
        assert_eq!(ns.lowest_pid, Some(h.pid), "the helper is alone in it");
        assert_eq!(ns.processes, 1);
        ns.clone()
    };
    let (ns_h1, ns_h2) = (ns_h(&h1), ns_h(&h2));
    // Labels are unique and ids are deduplicated.
    assert_eq!(by.len(), found.namespaces.len());
    let mut ids: Vec<_> = found.namespaces.iter().map(|n| n.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), found.namespaces.len());

    // Sockets inside the named ones, made on this thread while entered.
    let held_a = netns_enter::with_netns(&ns_a, || {
        netns_enter::set_link_up("lo").unwrap();
        open_sockets(3, 2)
    })
    .expect("enter a");
    let held_b = netns_enter::with_netns(&ns_b, || {
        netns_enter::set_link_up("lo").unwrap();
        open_sockets(1, 4)
    })
    .expect("enter b");
    assert_eq!(
        netns::current().unwrap(),
        home,
        "back home after with_netns"
    );

    // A panic inside still brings the thread back.
    let panicked = std::panic::catch_unwind(|| {
        netns_enter::with_netns(&ns_a, || {
            assert_ne!(netns::current().unwrap(), home);
            panic!("inside a");
        })
    });
    assert!(panicked.is_err());
    assert_eq!(netns::current().unwrap(), home, "back home after a panic");

    // One cached netlink socket per namespace, opened both ways.
    let mut cache: PerNamespace<Netlink> = PerNamespace::new();
    let open = || Netlink::open(Duration::from_secs(10));
    for ns in [&ns_a, &ns_h1] {
        cache
            .get_or_try_insert_with(ns.id, || netns_enter::with_netns(ns, open).and_then(|r| r))
            .expect("open in namespace");
    }
    for ns in [&ns_b, &ns_h2] {
        cache
            .get_or_try_insert_with(ns.id, || {
                netns_enter::run_on_new_thread(ns, open).and_then(|r| r)
            })
            .expect("open in namespace on a new thread");
    }
    assert_eq!(netns::current().unwrap(), home);
    // Exact counts: (listen, established, every state).
    let expect = [
        (&ns_a, (3, 4, 7)),
        (&ns_b, (1, 8, 9)),
        (&ns_h1, (2, 2, 4)),
        (&ns_h2, (1, 6, 7)),
    ];
    for (ns, want) in expect {
        let nl = cache.remove(ns.id).unwrap();
        assert_eq!(counts(nl), want, "namespace {}", ns.label);
        let nl = netns_enter::run_on_new_thread(ns, open).unwrap().unwrap();
        assert!(cache
            .get_or_try_insert_with(ns.id, || Ok::<_, ()>(nl))
            .is_ok());
    }

    // The limit keeps the own namespace first and counts the rest.
    let limited = netns::discover(2);
    assert_eq!(limited.namespaces.len(), 2);
    assert_eq!(limited.namespaces[0].label, "host");
    assert!(limited.skipped >= 3, "skipped {}", limited.skipped);

    // Delete a named namespace while this process still holds sockets in it
    // (so it lives on, unnamed and without processes), and end a helper.
    named_a.delete();
    h2.kill();
    let after = netns::discover(usize::MAX);
    let labels: Vec<&str> = after.namespaces.iter().map(|n| n.label.as_str()).collect();
    assert!(!labels.contains(&named_a.name.as_str()), "{labels:?}");
    assert!(!labels.contains(&ns_h2.label.as_str()), "{labels:?}");
    assert!(labels.contains(&named_b.name.as_str()), "{labels:?}");
    assert!(labels.contains(&ns_h1.label.as_str()), "{labels:?}");
    assert_eq!(cache.retain_live(&after.namespaces), 2);
    assert!(cache.contains(ns_b.id) && cache.contains(ns_h1.id));
    let gone = ns_a.open().unwrap_err();
    assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{gone}");
    assert!(netns_enter::with_netns(&ns_h2, || ()).is_err());
    assert_eq!(netns::current().unwrap(), home);
    drop((held_a, held_b));
}

/// One TCP collection through `c`, as rows of `attribution`, keyed by
/// (label, state) with zeros left out.
fn attributed(
    c: &mut Collector<Netlink>,
    attribution: &mut Attribution,
) -> BTreeMap<(String, &'static str), u64> {
    let stats = c.collect_tcp().expect("collect");
    assert_eq!(
        stats.full_sockets_without_cgroup_id(),
        0,
        "every full socket carries INET_DIAG_CGROUP_ID"
    );
    attribution.start_collection();
    let rows = attribution.rows(stats.by_cgroup().map(|(id, v)| (id, *v)));
    assert_eq!(rows.dropped, 0);
    let mut out = BTreeMap::new();
    for (label, counts) in rows.rows {
        for state in TcpState::ALL {
            if counts[state as usize] > 0 {
                out.insert((label.clone(), state.label()), counts[state as usize]);
            }
        }
    }
    out
}

/// Per-cgroup counts through the real path: a `Collector` with
/// `options.cgroup` over a netlink socket in the test's private namespace,
/// then `cgroup_attribution::Attribution`, for sockets of helper processes
/// moved into test-owned cgroups. Also checks what the kernel sends (the raw
/// attributes of full, TIME_WAIT and request sockets) and what it does when
/// a cgroup is removed while one of its sockets lives on.
#[test]
fn cgroup_ids_map_to_the_test_cgroups() {
    if !require_sys_admin("create cgroups and network namespaces and move processes") {
        return;
    }
    let mount = match cgroup_mount::detect() {
        Ok(m) => m,
        Err(e) => {
            skip(format_args!("needs a cgroup2 mount: {e}"));
            return;
        }
    };
    let top_name = format!("sockdiag-test-{}", std::process::id());
    let top = match TestCgroup::create(&mount.mount_point, &top_name) {
        Ok(t) => t,
        Err(e) => {
            skip(format_args!(
                "needs a writable cgroup2 at {}: {e}",
                mount.mount_point.display()
            ));
            return;
        }
    };
    // The sockets live in this thread's private namespace (helpers inherit
    // it), so the dump holds nothing else.
    if !support::require_root_netns() {
        return;
    }
    let cg_a = TestCgroup::create(&top.path, "a").unwrap();
    let cg_b = TestCgroup::create(&top.path, "b").unwrap();
    let cg_c = TestCgroup::create(&top.path, "c").unwrap();
    // a: 1 listener with 2 accepted pairs, 2 connections closed client
    // first (2 TIME_WAIT, no cgroup), and 2 connections to a
    // TCP_DEFER_ACCEPT listener (2 ESTABLISHED clients in a, 2 request
    // sockets without a cgroup, and that listener).
    let ha = Helper::spawn(
        ENTRY,
        &HelperSpec {
            listeners: 1,
            pairs: 2,
            time_wait: 2,
            syn_recv: 2,
            cgroup: Some(cg_a.path.clone()),
            ..Default::default()
        },
    );
    let a_port: u16 = ha.field("port").parse().unwrap();
    // b: 3 listeners, and one connection to a's listener, never accepted:
    // the client is b's, the server side is a child of a's listener and so
    // a's.
    let hb = Helper::spawn(
        ENTRY,
        &HelperSpec {
            listeners: 3,
            connect_to: Some(a_port),
            cgroup: Some(cg_b.path.clone()),
            ..Default::default()
        },
    );
    // c: 1 listener, taken over by this process before c is removed.
    let mut hc = Helper::spawn(
        ENTRY,
        &HelperSpec {
            listeners: 1,
            cgroup: Some(cg_c.path.clone()),
            ..Default::default()
        },
    );
    assert_eq!(
        cgroup::process_cgroup(ha.pid).unwrap().as_deref(),
        Some(format!("/{top_name}/a").as_str())
    );
    let c_id = std::fs::metadata(&cg_c.path).unwrap().ino();

    let open = || Netlink::open(Duration::from_secs(10)).expect("open NETLINK_SOCK_DIAG");
    let options = |mode| Options {
        cgroup: true,
        ..Options::tcp_only(mode, Duration::from_secs(10))
    };
    // Auto sends the legacy AF_UNSPEC request; by-family the v2 one.
    let mut legacy = Collector::new(open(), options(DumpMode::Auto));
    let mut by_family = Collector::new(open(), options(DumpMode::ByFamily));
    assert!(legacy.stats().tcp.counts_cgroups());

    // Wait (bounded) for the closes to settle into exactly 2 TIME_WAIT.
    poll_until(Duration::from_secs(10), || {
        let s = legacy.collect_tcp().map_err(|e| e.to_string())?;
        let (tw, req) = (s.total(TcpState::TimeWait), s.total(TcpState::SynRecv));
        let transient: u64 = [TcpState::FinWait1, TcpState::FinWait2, TcpState::LastAck]
            .iter()
            .map(|st| s.total(*st))
            .sum();
        if tw == 2 && req == 2 && transient == 0 {
            Ok(())
        } else {
            Err(format!(
                "{tw} TIME_WAIT, {req} SYN_RECV, {transient} closing"
            ))
        }
    })
    .expect("settled dump");

    let a = format!("/{top_name}/a");
    let b = format!("/{top_name}/b");
    let c = format!("/{top_name}/c");
    let none = cgroup::NONE.to_string();
    let mut want: BTreeMap<(String, &str), u64> = [
        ((a.clone(), "listen"), 1 + 1),
        ((a.clone(), "established"), 2 * 2 + 2 + 1),
        ((b.clone(), "listen"), 3),
        ((b.clone(), "established"), 1),
        ((c.clone(), "listen"), 1),
        ((none.clone(), "time_wait"), 2),
        ((none.clone(), "syn_recv"), 2),
    ]
    .into_iter()
    .collect();
    let mut attribution = Attribution::new(mount.clone(), 0, 100);
    assert_eq!(
        attributed(&mut legacy, &mut attribution),
        want,
        "legacy dump"
    );
    assert_eq!(
        attribution.paths().walks(),
        1,
        "one walk for the collection"
    );
    assert_eq!(attribution.problem(), None);
    assert_eq!(
        attributed(&mut by_family, &mut attribution),
        want,
        "by-family dumps"
    );
    // Depth 1 folds a, b and c into the test's top cgroup.
    let mut top_only = Attribution::new(mount.clone(), 1, 100);
    let top_label = format!("/{top_name}");
    let folded: BTreeMap<(String, &str), u64> = [
        ((top_label.clone(), "listen"), 2 + 3 + 1),
        ((top_label.clone(), "established"), 7 + 1),
        ((none.clone(), "time_wait"), 2),
        ((none.clone(), "syn_recv"), 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(attributed(&mut legacy, &mut top_only), folded);
    // A cap of 2 path rows keeps a (9 sockets) and sums b and c as other.
    let mut capped = Attribution::new(mount.clone(), 0, 2);
    capped.start_collection();
    let stats = legacy.collect_tcp().unwrap();
    let rows = capped.rows(stats.by_cgroup().map(|(id, v)| (id, *v)));
    let labels: Vec<&str> = rows.rows.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, [a.as_str(), cgroup::NONE, cgroup::OTHER]);
    assert_eq!(rows.dropped, 2);
    assert_eq!(rows.rows[2].1[TcpState::Listen as usize], 3 + 1);

    // What the kernel sends, from a raw dump: the attribute types of each
    // kind of socket.
    let sockets = dump_ipv4_tcp();
    let mut full_attrs = None;
    let mut tw_attrs = None;
    let mut req_attrs = None;
    for s in &sockets {
        if s.state == 6 {
            assert_eq!(s.cgroup_id, None, "TIME_WAIT carries no cgroup: {s:?}");
            tw_attrs.get_or_insert(s.attrs.clone());
        } else if s.state == 3 || s.state == 12 {
            assert_eq!(s.cgroup_id, None, "request sockets carry no cgroup: {s:?}");
            req_attrs.get_or_insert(s.attrs.clone());
        } else {
            assert!(s.cgroup_id.is_some(), "full socket without cgroup: {s:?}");
            full_attrs.get_or_insert(s.attrs.clone());
        }
    }
    assert!(sockets.iter().any(|s| s.cgroup_id == Some(c_id)));

    // c's listener outlives c: this process takes it over, c's process
    // ends and the cgroup is removed. The kernel keeps sending c's id (the
    // socket pins the dying cgroup); the id is gone from the tree, so the
    // next collection counts the listener as unknown.
    let stolen = support::steal_socket_fd(
        hc.pid as libc::pid_t,
        hc.field("listener_inode").parse().unwrap(),
    )
    .expect("take over c's listener");
    hc.kill();
    cg_c.remove().expect("rmdir c");
    assert!(!cg_c.path.exists());
    let walks = attribution.paths().walks();
    let stats = legacy.collect_tcp().unwrap();
    let by_id: BTreeMap<Option<u64>, [u64; TcpState::COUNT]> =
        stats.by_cgroup().map(|(id, v)| (id, *v)).collect();
    assert_eq!(
        by_id.get(&Some(c_id)).map(|v| v[TcpState::Listen as usize]),
        Some(1),
        "the kernel still sends the removed cgroup's id {c_id}: {by_id:?}"
    );
    want.remove(&(c.clone(), "listen"));
    want.insert((cgroup::UNKNOWN.to_string(), "listen"), 1);
    assert_eq!(attributed(&mut legacy, &mut attribution), want);
    // cgroup.stat changed with the rmdir: one walk noticed it.
    assert!(
        attribution.paths().walks() > walks,
        "no walk after the removal"
    );
    assert_eq!(attribution.problem(), None);

    let _ = writeln!(
        std::io::stderr(),
        "kernel {}: attributes of full sockets {:?}, TIME_WAIT {:?}, request sockets {:?}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        full_attrs,
        tw_attrs,
        req_attrs
    );
    drop(stolen);
    drop((ha, hb));
}

#[test]
fn unprivileged_discovery_serves_the_own_namespace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: the own namespace must still be there.
        let found = netns::discover(usize::MAX);
        assert_eq!(found.namespaces[0].label, "host");
        skip(format_args!(
            "needs root (euid 0) to drop to uid 65534 (ran the discovery as this user instead)"
        ));
        return;
    }
    // A namespace the unprivileged helper must fail to enter.
    if !require_sys_admin("add a named network namespace") || !require_tool("ip", IP_HINT) {
        return;
    }
    let _named = NamedNs::add(&format!("sdtest-{}-u", std::process::id())).expect("ip netns add");
    let h = Helper::spawn(
        ENTRY,
        &HelperSpec {
            discover: true,
            uid: Some(65534),
            ..Default::default()
        },
    );
    assert_eq!(h.field("uid"), "65534");
    assert_eq!(
        h.field("dump_ok"),
        "true",
        "own namespace dump: {:?}",
        h.lines
    );
    let home = netns::current().unwrap();
    let own_line = format!("NS label=host ino={} own=true", home.ino);
    assert!(h.lines.contains(&own_line), "{:?}", h.lines);
    let problem = h
        .lines
        .iter()
        .find(|l| l.starts_with("PROBLEM "))
        .unwrap_or_else(|| panic!("no problem reported: {:?}", h.lines));
    assert!(problem.contains("permission denied"), "{problem}");
    let denied: usize = h
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("DENIED "))
        .and_then(|n| n.parse().ok())
        .expect("DENIED line");
    assert!(denied > 0, "{:?}", h.lines);
    // Without CAP_NET_ADMIN there is no MARK, but the cgroup id still comes:
    // the helper's cgroup is ours.
    let mount = cgroup_mount::detect();
    let attrs = h
        .lines
        .iter()
        .find(|l| l.starts_with("ATTRS "))
        .unwrap_or_else(|| panic!("own listener not in the dump: {:?}", h.lines));
    let _ = writeln!(
        std::io::stderr(),
        "unprivileged dump of a listener: {attrs}"
    );
    let kinds: Vec<u16> = attrs
        .split(['[', ']'])
        .nth(1)
        .unwrap_or("")
        .split(", ")
        .filter_map(|k| k.parse().ok())
        .collect();
    assert!(kinds.contains(&21), "CGROUP_ID without privilege: {attrs}");
    assert!(!kinds.contains(&15), "MARK needs CAP_NET_ADMIN: {attrs}");
    match (mount, cgroup::process_cgroup(std::process::id())) {
        (Ok(mount), Ok(Some(path))) => {
            let dir = mount.mount_point.join(path.trim_start_matches('/'));
            let id = std::fs::metadata(dir).unwrap().ino();
            assert!(attrs.ends_with(&format!(" cgroup={id}")), "{attrs}");
        }
        (mount, path) => skip(format_args!(
            "part (the helper's cgroup id) needs a cgroup2 mount and this process's cgroup: {:?}, {:?}",
            mount.map(|m| m.mount_point),
            path
        )),
    }
    // Entering another namespace needs CAP_SYS_ADMIN: a clean EPERM.
    let enter = h
        .lines
        .iter()
        .find(|l| l.starts_with("ENTER "))
        .unwrap_or_else(|| panic!("no other namespace to try: {:?}", h.lines));
    assert!(enter.contains(" PermissionDenied "), "{enter}");
    assert!(enter.contains("Operation not permitted"), "{enter}");
}

//! Kernel-facing black-box tests: an exact socket mix in a private network
//! namespace (root only; skipped with a printed reason otherwise), and every
//! socket, queue-bytes and listener series the exporter reports for it,
//! through each dump mode, the table format and the HTTP endpoint.

use crate::support::*;

/// The design in numbers, written out by hand so a mistake in the mix
/// builder cannot silently change what the exporter is held to.
#[test]
fn socket_mix_is_what_the_kernel_reports() {
    if !require_root_netns() {
        return;
    }
    let mix = SocketMix::build();
    let e = mix.expected();
    // ipv4: 3 + 5 unaccepted (both ends) + 2 accepted pairs.
    assert_eq!(e.count("ipv4", "established"), 2 * 3 + 2 * 5 + 4);
    // ipv6: 2 unaccepted (both ends) + 2 accepted pairs + the bulk pair.
    assert_eq!(e.count("ipv6", "established"), 2 * 2 + 4 + 2);
    assert_eq!(e.count("ipv4", "listen"), 4);
    assert_eq!(e.count("ipv6", "listen"), 3);
    assert_eq!(e.count("ipv4", "time_wait"), TIME_WAIT_V4);
    assert_eq!(e.count("ipv6", "time_wait"), TIME_WAIT_V6);
    assert_eq!(e.count("ipv4", "close_wait"), CLOSE_WAIT_V4);
    assert_eq!(e.count("ipv4", "fin_wait2"), CLOSE_WAIT_V4);
    assert_eq!(e.count("ipv6", "close_wait"), CLOSE_WAIT_V6);
    assert_eq!(e.count("ipv6", "fin_wait2"), CLOSE_WAIT_V6);
    for f in FAMILIES {
        for s in [
            "syn_sent",
            "syn_recv",
            "fin_wait1",
            "close",
            "last_ack",
            "closing",
        ] {
            assert_eq!(e.count(f, s), 0, "{f} {s}");
        }
    }
    let key = |f: &str, s: &str| (f.to_string(), s.to_string());
    assert_eq!(e.recv_queue[&key("ipv4", "established")], 1000 + 3000);
    let (bulk_send, bulk_recv) = mix.bulk_queues();
    assert_eq!(
        e.recv_queue[&key("ipv6", "established")],
        777 + 2222 + bulk_recv
    );
    assert_eq!(e.send_queue[&key("ipv4", "established")], 0);
    assert_eq!(e.send_queue[&key("ipv6", "established")], bulk_send);
    let total_queue: u64 = e.listeners.values().map(|l| l.queue).sum();
    assert_eq!(total_queue, 3 + 2 + 5);
    let reuseport: Vec<_> = e.listeners.values().filter(|l| l.sockets == 2).collect();
    assert_eq!(reuseport.len(), 1, "{e:#?}");
    assert_eq!((reuseport[0].queue, reuseport[0].max), (5, 14));
    eprintln!("bulk pair: send queue {bulk_send} B, receive queue {bulk_recv} B");
}

fn check_dump(args: &[&str]) {
    let mix = SocketMix::build();
    let (want, got) = mix.stable(|| dump_metrics(args));
    want.assert_matches(&got, &format!("dump {args:?}"));
    assert_eq!(
        got.value("sockdiag_collect_success", &[("collector", "tcp")]),
        1.0
    );
}

#[test]
fn dump_legacy_reports_the_exact_mix() {
    if !require_root_netns() {
        return;
    }
    check_dump(&["--collector.tcp.dump", "legacy"]);
}

#[test]
fn dump_by_family_reports_the_exact_mix() {
    if !require_root_netns() {
        return;
    }
    check_dump(&["--collector.tcp.dump", "by-family"]);
}

#[test]
fn dump_auto_reports_the_exact_mix() {
    if !require_root_netns() {
        return;
    }
    check_dump(&["--collector.tcp.dump", "auto"]);
}

#[test]
fn dump_default_mode_reports_the_exact_mix() {
    if !require_root_netns() {
        return;
    }
    check_dump(&[]);
}

#[test]
fn dump_table_shows_the_mix() {
    if !require_root_netns() {
        return;
    }
    let mix = SocketMix::build();
    let (want, text) = mix.stable(|| dump(&["--format", "table"]));
    let rows = parse_table_states(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let names: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        names, STATES,
        "one row per state in the contract's order:\n{text}"
    );
    for (state, [v4, v6, total]) in &rows {
        let (w4, w6) = (want.count("ipv4", state), want.count("ipv6", state));
        assert_eq!(
            (*v4, *v6, *total),
            (w4, w6, w4 + w6),
            "row {state}:\n{text}"
        );
    }
    let est = &rows[0].1;
    assert_eq!(est, &[20, 10, 30], "established row:\n{text}");

    // The fullest listener is the SO_REUSEPORT group: queue 5, max 8 + 6.
    let (port, _) = want
        .listeners
        .iter()
        .find(|(_, l)| l.sockets == 2)
        .map(|((_, _, p), l)| (*p, *l))
        .unwrap();
    let section: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("Fullest listeners"))
        .collect();
    assert!(
        !section.is_empty(),
        "no `Fullest listeners` section:\n{text}"
    );
    let port = port.to_string();
    let wanted = ["ipv4", "127.0.0.1", port.as_str(), "5", "14"];
    assert!(
        // family address port queue max, and optionally the group size.
        section.iter().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 5 && f[..5] == wanted && f.get(5).is_none_or(|s| *s == "2")
        }),
        "no listener row {wanted:?} in the `Fullest listeners` section:\n{text}"
    );
}

#[test]
fn http_endpoint_reports_the_exact_mix() {
    if !require_root_netns() {
        return;
    }
    let mut mix = SocketMix::build();
    // Started from this thread, the server lives in the same namespace.
    // TTL 0: every scrape is a fresh dump that sees the scrape's own connection.
    let server = Server::start(&["--cache.ttl", "0s"]);
    assert!(server.addr.ip().is_loopback());
    mix.adopt_listener(Family::V4, server.addr.port(), server.pid());
    mix.settle();

    for attempt in 1..=3 {
        let want = mix.expected();
        let bulk_before = mix.bulk_queues();
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let got = server.scrape();
        let collected_at = got.value(
            "sockdiag_collect_timestamp_seconds",
            &[("collector", "tcp")],
        );
        let retry = if mix.bulk_queues() != bulk_before {
            Some("bulk pair moved during the scrape".to_string())
        } else if collected_at < t0 - 0.001 {
            // Served from the cache (collections are spaced by a multiple of
            // their duration even with TTL 0): it cannot show this scrape's
            // own connection. Wait it out.
            let d = got.value("sockdiag_collect_duration_seconds", &[("collector", "tcp")]);
            std::thread::sleep(std::time::Duration::from_secs_f64(4.0 * d + 0.3));
            Some(format!(
                "cached answer collected at {collected_at}, scrape started at {t0}"
            ))
        } else {
            None
        };
        if let Some(why) = retry {
            eprintln!("attempt {attempt}: {why}; retrying");
            // The finished scrape left a TIME_WAIT behind.
            mix.absorb_time_wait_v4();
            mix.settle();
            continue;
        }
        // The scrape's own connection is ESTABLISHED on both ends while the
        // exporter dumps; its request is read and acknowledged, nothing is
        // queued either way.
        let mut want = want;
        want.add_sockets("ipv4", "established", 2);
        want.assert_matches(&got, "GET /metrics in the namespace");
        assert_eq!(
            got.value("sockdiag_collect_success", &[("collector", "tcp")]),
            1.0
        );
        return;
    }
    panic!("no fresh, undisturbed scrape in 3 attempts");
}

//! Command-line contract: dotted flags in both forms, --help, --version,
//! exit status 2 with a one-line error naming the flag, and `dump` in both
//! formats. Runs as any user in whatever namespace the test runs in.

use crate::support;
use crate::support::*;
use std::io::Write;
use std::time::{Duration, Instant};

const DOTTED: [&str; 6] = [
    "--web.listen-address",
    "--web.telemetry-path",
    "--cache.ttl",
    "--log.level",
    "--collector.tcp.dump",
    "--web.write-timeout",
];

fn run(args: &[&str]) -> RunOutput {
    run_exporter(args, Duration::from_secs(20))
}

#[test]
fn help_shows_dotted_flag_names() {
    let out = run(&["--help"]);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    for flag in DOTTED {
        assert!(
            out.stdout.contains(flag),
            "--help lacks {flag}:\n{}",
            out.stdout
        );
        let dashed = flag.replace('.', "-");
        assert!(
            !out.stdout.contains(&dashed),
            "--help shows the dashed {dashed}:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("dump"),
        "--help does not mention the dump subcommand:\n{}",
        out.stdout
    );

    let out = run(&["dump", "--help"]);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    for flag in ["--format", "--record", "--collector.*"] {
        assert!(
            out.stdout.contains(flag),
            "dump --help lacks {flag}:\n{}",
            out.stdout
        );
    }
    for dashed in ["collector-tcp-dump", "source-fixture"] {
        assert!(
            !out.stdout.contains(dashed),
            "dump --help shows the dashed {dashed}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn version_prints_name_and_version() {
    let out = run(&["--version"]);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    // `sockdiag_exporter <version>`, optionally followed by more detail
    // (such as the revision) after a space, on one line.
    let want = format!("sockdiag_exporter {}", env!("CARGO_PKG_VERSION"));
    let line = out.stdout.trim_end_matches('\n');
    assert!(!line.contains('\n'), "more than one line: {:?}", out.stdout);
    assert!(
        line == want || line.starts_with(&format!("{want} ")),
        "--version printed {line:?}, want {want:?}"
    );
}

#[test]
fn bad_flags_and_values_exit_2_with_one_line_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--no.such.flag"], "--no.such.flag"),
        (&["--no.such.flag=1"], "--no.such.flag"),
        (&["--cache.ttl", "5x"], "--cache.ttl"),
        (&["--cache.ttl=5x"], "--cache.ttl"),
        (&["--cache.ttl"], "--cache.ttl"),
        (
            &["--web.listen-address", "nonsense"],
            "--web.listen-address",
        ),
        (
            &["--web.listen-address=127.0.0.1:99999"],
            "--web.listen-address",
        ),
        (&["--web.write-timeout", "soon"], "--web.write-timeout"),
        (&["--log.level", "loud"], "--log.level"),
        (&["--collector.tcp.dump", "fast"], "--collector.tcp.dump"),
        (&["--collector.tcp.dump=fast"], "--collector.tcp.dump"),
        (&["dump", "--format", "xml"], "--format"),
        (&["dump", "--format=xml"], "--format"),
        (
            &["dump", "--collector.tcp.dump", "fast"],
            "--collector.tcp.dump",
        ),
        (
            &["dump", "--collector.tcp.dump=fast"],
            "--collector.tcp.dump",
        ),
        (&["dump", "--no.such.flag"], "--no.such.flag"),
        (
            &["--collector.tcp.ephemeral.top", "many"],
            "--collector.tcp.ephemeral.top",
        ),
    ];
    let mut failures = Vec::new();
    for (args, flag) in cases {
        let out = run(args);
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        if out.code() != Some(2) {
            failures.push(format!(
                "{args:?}: exit {:?}, want 2; stderr {:?}",
                out.code(),
                out.stderr
            ));
        } else if lines.len() != 1 {
            failures.push(format!(
                "{args:?}: {} stderr lines, want 1: {:?}",
                lines.len(),
                out.stderr
            ));
        } else if !lines[0].contains(flag) {
            failures.push(format!(
                "{args:?}: stderr {:?} does not name {flag}",
                lines[0]
            ));
        }
        if !out.stdout.is_empty() && !args.contains(&"dump") {
            failures.push(format!("{args:?}: unexpected stdout {:?}", out.stdout));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

/// A bad network stops the start with status 2 and one line naming the
/// flag and the value, in both flag forms, for the server and `dump`.
#[test]
fn bad_remote_networks_are_refused_naming_the_value() {
    for bad in [
        "10.0.0.1/8",
        "10.0.0.0/33",
        "nonsense",
        "2001:db8::/129",
        "10.0.0.0/8,,",
    ] {
        for args in [
            vec![
                "--collector.tcp.remote-networks".to_string(),
                bad.to_string(),
            ],
            vec![format!("--collector.tcp.remote-networks={bad}")],
            vec![
                "dump".to_string(),
                "--collector.tcp.remote-networks".to_string(),
                bad.to_string(),
            ],
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run(&args);
            let lines: Vec<&str> = out
                .stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
            assert_eq!(lines.len(), 1, "{args:?}: {}", out.stderr);
            assert!(
                lines[0].contains("--collector.tcp.remote-networks")
                    && lines[0].contains(bad.trim_end_matches(',')),
                "{args:?}: {}",
                lines[0]
            );
        }
    }
}

/// Every server flag given, in both forms, with a value away from its
/// default, and each one's effect checked so that the default would fail
/// it: the address, the path, the TTL (a scrape 1.3 s later still shares
/// the collection; the default is 1 s), the log level (debug lines appear),
/// the dump mode (the fixture holds only by-family answers, which the
/// default auto mode never asks for) and the write timeout (1 s; the
/// default is 3 s).
#[test]
fn server_flags_work_in_both_forms() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/all_by_family.fixture"
    );
    let joined = format!("--source.fixture={fixture}");
    for args in [
        vec![
            "--web.listen-address",
            "127.0.0.1:0",
            "--web.telemetry-path",
            "/other",
            "--cache.ttl",
            "1m",
            "--log.level",
            "debug",
            "--collector.tcp.dump",
            "by-family",
            "--web.write-timeout",
            "1s",
            "--source.fixture",
            fixture,
        ],
        vec![
            "--web.listen-address=127.0.0.1:0",
            "--web.telemetry-path=/other",
            "--cache.ttl=1m",
            "--log.level=debug",
            "--collector.tcp.dump=by-family",
            "--web.write-timeout=1s",
            &joined,
        ],
    ] {
        let server = Server::start(&args);
        // --web.listen-address: the loopback address and a kernel-chosen
        // port, not the default :19275 on all addresses.
        assert_eq!(
            server.addr.ip(),
            std::net::IpAddr::from([127, 0, 0, 1]),
            "{args:?}: {}",
            server.listening_line
        );
        assert!(
            server.addr.port() != 0 && server.addr.port() != 19275,
            "{args:?}: {}",
            server.listening_line
        );
        // --web.telemetry-path.
        assert_eq!(
            server.telemetry_path, "/other",
            "{args:?}: {}",
            server.listening_line
        );
        assert_eq!(server.get("/metrics").status, 404, "{args:?}");
        // --collector.tcp.dump: only by-family requests find an answer.
        let m = server.scrape();
        assert_eq!(
            m.value("sockdiag_collect_success", &[("collector", "tcp")]),
            1.0,
            "{args:?}: the TCP collection failed on a by-family-only fixture\n{}",
            server.stderr()
        );
        // --log.level debug: each collection logs a debug line.
        let logged = poll_until(Duration::from_secs(5), || {
            let stderr = server.stderr();
            stderr
                .lines()
                .any(|l| l.contains("level=debug") && l.contains("msg=\"collected\""))
                .then_some(())
                .ok_or(stderr)
        });
        assert!(
            logged.is_ok(),
            "{args:?}: no debug line for the collection:\n{}",
            logged.unwrap_err()
        );
        // --cache.ttl 1m: a scrape past the 1 s default shares the collection.
        std::thread::sleep(Duration::from_millis(1300));
        let again = server.scrape();
        assert_eq!(
            m.value("sockdiag_collections_total", &[("collector", "tcp")]),
            again.value("sockdiag_collections_total", &[("collector", "tcp")]),
            "{args:?}: a scrape 1.3 s later collected again"
        );
        // --web.write-timeout 1s: a client that pipelines scrapes and never
        // reads is cut about 1 s after it stalls.
        let mut stalled = connect_small_rcvbuf(server.addr, 2048);
        stalled
            .write_all(
                "GET /other HTTP/1.1\r\nHost: x\r\n\r\n"
                    .repeat(1000)
                    .as_bytes(),
            )
            .unwrap();
        let stalled_at = Instant::now();
        let took = support::timing::server_closed_after(
            server.addr,
            stalled.local_addr().unwrap(),
            stalled_at,
            Duration::from_secs(8),
        );
        support::timing::assert_between(
            &format!("{args:?}: a client that stopped reading cut"),
            took,
            0.9,
            2.5,
        );
    }
}

#[test]
fn listen_address_forms() {
    // [V6]:PORT (skipped where ::1 is not configured, e.g. IPv6 disabled).
    match std::net::TcpListener::bind("[::1]:0") {
        Ok(probe) => {
            drop(probe);
            let server = Server::start(&["--web.listen-address", "[::1]:0"]);
            assert_eq!(
                server.addr.ip(),
                "::1".parse::<std::net::IpAddr>().unwrap(),
                "{}",
                server.listening_line
            );
            assert_eq!(server.get("/metrics").status, 200);
        }
        Err(e) => skip(format_args!(
            "part [::1]:0 needs ::1 configured (IPv6 on lo): {e}"
        )),
    }
    // :PORT listens on all addresses; reachable on 127.0.0.1.
    let server = Server::start(&["--web.listen-address", ":0"]);
    let port = server.addr.port();
    assert_ne!(port, 0, "{}", server.listening_line);
    let r = http_request(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "GET",
        "/metrics",
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

/// A busy listen address: exit 1 with the address as the user wrote it,
/// not as the program models it.
#[test]
fn a_busy_listen_address_is_named_as_written() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    for addr in [format!("127.0.0.1:{port}"), format!(":{port}")] {
        let out = run(&["--web.listen-address", &addr]);
        assert_eq!(out.code(), Some(1), "{}", out.stderr);
        let want = format!("cannot listen on --web.listen-address {addr}: Address already in use");
        assert!(
            out.stderr.contains(&want),
            "want {want:?} in:\n{}",
            out.stderr
        );
    }
}

fn assert_all_series(m: &Exposition, what: &str) {
    for name in [
        "sockdiag_sockets",
        "sockdiag_receive_queue_bytes",
        "sockdiag_send_queue_bytes",
    ] {
        let tcp = m
            .series(name)
            .iter()
            .filter(|(labels, _)| labels.iter().any(|(k, v)| k == "protocol" && v == "tcp"))
            .count();
        assert_eq!(tcp, 22, "{what}: {name} tcp series count");
        for f in FAMILIES {
            for s in STATES {
                let v = m.get(name, &[("protocol", "tcp"), ("family", f), ("state", s)]);
                assert!(
                    v.is_some(),
                    "{what}: {name}{{family={f},state={s}}} missing"
                );
                if s == "listen" && name != "sockdiag_sockets" {
                    assert_eq!(v, Some(0.0), "{what}: {name} for listeners is always 0");
                }
            }
        }
    }
    assert_eq!(
        m.value("sockdiag_collect_success", &[("collector", "tcp")]),
        1.0,
        "{what}"
    );
    assert_eq!(
        m.value("sockdiag_collections_total", &[("collector", "tcp")]),
        1.0,
        "{what}: one dump, one collection"
    );
}

#[test]
fn dump_prometheus_has_every_series_in_every_mode() {
    for args in [
        vec![],
        vec!["--format", "prometheus"],
        vec!["--format=prometheus", "--collector.tcp.dump=legacy"],
        vec!["--collector.tcp.dump", "legacy"],
        vec!["--collector.tcp.dump", "by-family"],
        vec!["--collector.tcp.dump=by-family"],
        vec!["--collector.tcp.dump", "auto"],
    ] {
        let m = dump_metrics(&args);
        assert_all_series(&m, &format!("dump {args:?}"));
    }
}

#[test]
fn dump_prints_the_same_families_the_server_serves() {
    let server = Server::start(&[]);
    let served = server.scrape();
    let dumped = dump_metrics(&[]);
    let families = |e: &Exposition| e.types.clone();
    assert_eq!(
        families(&dumped),
        families(&served),
        "metric families and types"
    );
    assert_eq!(dumped.helps, served.helps, "HELP texts");
}

#[test]
fn dump_table_has_every_state_row_in_both_forms() {
    for args in [
        vec!["--format", "table"],
        vec!["--format=table", "--collector.tcp.dump=legacy"],
    ] {
        let text = dump(&args);
        let rows = parse_table_states(&text).unwrap_or_else(|e| panic!("{args:?}: {e}\n{text}"));
        let names: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            names, STATES,
            "{args:?}: one row per state, in order:\n{text}"
        );
        for (state, [v4, v6, total]) in &rows {
            assert_eq!(v4 + v6, *total, "{args:?}: row {state}:\n{text}");
        }
        assert!(
            text.contains("Fullest listeners"),
            "{args:?}: no listener section:\n{text}"
        );
    }
}

#[test]
fn dump_exits_1_with_the_error_chain_when_collection_fails() {
    // A recorded kernel that refuses the legacy request: legacy mode (no
    // fallback) must fail the collection.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/legacy_refused.fixture"
    );
    let out = run(&[
        "dump",
        "--source.fixture",
        fixture,
        "--collector.tcp.dump",
        "legacy",
    ]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout when collection fails:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("Operation not supported"),
        "stderr lacks the root cause (EOPNOTSUPP):\n{}",
        out.stderr
    );
    // auto falls back to per-family dumps on the same recording.
    let out = run(&[
        "dump",
        "--source.fixture",
        fixture,
        "--collector.tcp.dump",
        "auto",
    ]);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let m = parse_prometheus(&out.stdout).unwrap();
    assert_all_series(&m, "auto on a refused legacy dump");

    let out = run(&["dump", "--source.fixture", "/nonexistent/sockdiag.fixture"]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("/nonexistent/sockdiag.fixture"),
        "{}",
        out.stderr
    );
}

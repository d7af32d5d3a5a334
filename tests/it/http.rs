//! HTTP behaviour of the server: content types, gzip, HEAD, 404/405, the
//! landing page, the scrape cache, slow clients, promtool, and signals.
//! These need no private namespace and run as any user, on 127.0.0.1:0 in
//! the host namespace.

use crate::support;
use crate::support::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TCP: [(&str, &str); 1] = [("collector", "tcp")];

fn allow_set(v: &str) -> BTreeSet<String> {
    v.split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .collect()
}

#[test]
fn metrics_is_text_format_with_meta_metrics() {
    let server = Server::start(&[]);
    assert_eq!(
        server.telemetry_path, "/metrics",
        "listening line: {}",
        server.listening_line
    );
    assert!(
        server.listening_line.contains("level=info"),
        "{}",
        server.listening_line
    );
    let r = server.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
    assert_eq!(
        r.header("content-encoding"),
        None,
        "no gzip unless asked for"
    );
    let m = parse_prometheus(&r.text()).unwrap();

    assert_eq!(m.value("sockdiag_collect_success", &TCP), 1.0);
    assert!(m.value("sockdiag_collections_total", &TCP) >= 1.0);
    let d = m.value("sockdiag_collect_duration_seconds", &TCP);
    assert!((0.0..10.0).contains(&d), "collect duration {d}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let ts = m.value("sockdiag_collect_timestamp_seconds", &TCP);
    assert!(
        (now - ts).abs() < 60.0,
        "collect timestamp {ts} vs now {now}"
    );
    let build = m.series("sockdiag_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    let (labels, v) = &build[0];
    assert_eq!(*v, 1.0);
    let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["revision", "version"]);
    assert_eq!(labels[1].1, env!("CARGO_PKG_VERSION"));
    assert!(m
        .get("process_resident_memory_bytes", &[])
        .is_some_and(|v| v > 0.0));

    assert_eq!(
        m.types
            .get("sockdiag_collections_total")
            .map(String::as_str),
        Some("counter")
    );
    for g in [
        "sockdiag_sockets",
        "sockdiag_receive_queue_bytes",
        "sockdiag_send_queue_bytes",
        "sockdiag_listen_queue",
        "sockdiag_listen_queue_max",
        "sockdiag_listen_sockets",
        "sockdiag_collect_duration_seconds",
        "sockdiag_collect_success",
        "sockdiag_collect_timestamp_seconds",
        "sockdiag_build_info",
    ] {
        assert_eq!(
            m.types.get(g).map(String::as_str),
            Some("gauge"),
            "TYPE of {g}"
        );
    }
    for name in [
        "sockdiag_sockets",
        "sockdiag_receive_queue_bytes",
        "sockdiag_send_queue_bytes",
    ] {
        for f in FAMILIES {
            for s in STATES {
                assert!(
                    m.get(name, &[("protocol", "tcp"), ("family", f), ("state", s)])
                        .is_some(),
                    "{name}{{family={f},state={s}}} missing"
                );
            }
        }
        // TCP in both families, UDP (connected, unconnected) in both.
        assert_eq!(m.series(name).len(), 22 + 4, "{name}");
    }
    // The server's own listener is one of the listeners it reports.
    let port = server.addr.port().to_string();
    let own = [
        ("protocol", "tcp"),
        ("family", "ipv4"),
        ("address", "127.0.0.1"),
        ("port", port.as_str()),
    ];
    assert_eq!(
        m.get("sockdiag_listen_sockets", &own),
        Some(1.0),
        "own listener {own:?} not reported"
    );
}

#[test]
fn gzip_when_asked_decodes_to_the_same_exposition() {
    // A long TTL: both scrapes are served from one collection.
    let server = Server::start(&["--cache.ttl", "1m"]);
    let plain = server.get("/metrics");
    let gz = server.request("GET", "/metrics", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("content-type"), Some(CONTENT_TYPE));
    assert!(
        gz.body.starts_with(&[0x1f, 0x8b]),
        "body is not gzip: {:?}",
        &gz.body[..gz.body.len().min(16)]
    );
    let decoded = String::from_utf8(gunzip(&gz.body).expect("gunzip")).unwrap();
    let (a, b) = (
        parse_prometheus(&plain.text()).unwrap(),
        parse_prometheus(&decoded).unwrap(),
    );
    let keys = |e: &Exposition| e.samples.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b), "same series with and without gzip");
    for (k, v) in &a.samples {
        // process_* describe the live process; everything else comes from the cached collection.
        if !k.0.starts_with("process_") {
            assert_eq!(Some(v), b.samples.get(k), "{k:?}");
        }
    }
    assert_eq!(a.types, b.types);
    assert_eq!(a.helps, b.helps);
    let no_proc = |t: &str| {
        t.lines()
            .filter(|l| !l.contains("process_"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        no_proc(&plain.text()),
        no_proc(&decoded),
        "same text apart from process_*"
    );

    // Other encodings only: identity.
    let other = server.request("GET", "/metrics", &[("Accept-Encoding", "br")]);
    assert_eq!(other.status, 200);
    assert_eq!(other.header("content-encoding"), None);
}

#[test]
fn head_sends_headers_and_no_body() {
    let server = Server::start(&[]);
    let r = server.request("HEAD", "/metrics", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
    assert!(
        r.body.is_empty(),
        "HEAD got {} body bytes: {:?}",
        r.body.len(),
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn unknown_paths_are_404() {
    let server = Server::start(&[]);
    for path in ["/nope", "/metrics/extra", "/metricsx", "/favicon.ico"] {
        let r = server.get(path);
        assert_eq!(r.status, 404, "GET {path}");
    }
}

#[test]
fn other_methods_are_405_with_allow() {
    let server = Server::start(&[]);
    for (method, path) in [
        ("POST", "/metrics"),
        ("PUT", "/metrics"),
        ("DELETE", "/metrics"),
        ("POST", "/"),
    ] {
        let r = server.request(method, path, &[("Content-Length", "0")]);
        assert_eq!(r.status, 405, "{method} {path}");
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header"));
        assert_eq!(
            allow_set(allow),
            allow_set("GET, HEAD"),
            "{method} {path}: Allow: {allow}"
        );
    }
}

#[test]
fn landing_page_links_to_the_telemetry_path() {
    let server = Server::start(&[]);
    // The landing page never waits for a collection: it shows the last
    // one's summary, so make one first.
    server.scrape();
    let r = server.get("/");
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/html"), "Content-Type {ct:?}");
    let body = r.text();
    assert!(
        body.contains("href=\"/metrics\""),
        "no link to /metrics:\n{body}"
    );
    assert!(
        body.contains("<pre>") && body.contains("established"),
        "no table summary in <pre>:\n{body}"
    );

    let custom = Server::start(&["--web.telemetry-path", "/custom/path"]);
    assert_eq!(custom.telemetry_path, "/custom/path");
    let body = custom.get("/").text();
    assert!(
        body.contains("href=\"/custom/path\""),
        "no link to /custom/path:\n{body}"
    );
    let r = custom.get("/custom/path");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
    parse_prometheus(&r.text()).unwrap();
    assert_eq!(
        custom.get("/metrics").status,
        404,
        "/metrics is not served when the path is /custom/path"
    );
}

/// Scrapes every 50 ms until the served collection changes; the time from
/// just before the first scrape (so before the first collection started)
/// to the first scrape that served a new collection, or None within `limit`.
fn next_collection_after(server: &Server, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let first = server.scrape().value("sockdiag_collections_total", &TCP);
    while started.elapsed() < limit {
        thread::sleep(Duration::from_millis(50));
        let now = server.scrape().value("sockdiag_collections_total", &TCP);
        if now != first {
            return Some(started.elapsed());
        }
    }
    None
}

/// --cache.ttl, timed against the 1 s default from both sides: at 3s the
/// collection is shared for about 3 s (the default would collect again
/// after 1 s), at 200ms it is replaced well before 1 s. Collections here
/// take milliseconds, so the 4x-duration spacing stays far below both.
#[test]
fn cache_ttl_holds_and_then_expires() {
    let long = Server::start(&["--cache.ttl", "3s"]);
    let took = next_collection_after(&long, Duration::from_secs(8));
    support::timing::assert_between(
        "with --cache.ttl 3s, the first scrape served a new collection",
        took,
        2.95,
        4.5,
    );
    let short = Server::start(&["--cache.ttl", "200ms"]);
    let took = next_collection_after(&short, Duration::from_secs(3));
    support::timing::assert_between(
        "with --cache.ttl 200ms, the first scrape served a new collection",
        took,
        0.19,
        0.95,
    );

    // 0s: every scrape collects again once the 4x rule allows, so a scrape
    // after 4x the last collection's duration (plus margin) gets a new one.
    let zero = Server::start(&["--cache.ttl", "0s"]);
    let first = zero.scrape();
    let a = first.value("sockdiag_collections_total", &TCP);
    let d = first.value("sockdiag_collect_duration_seconds", &TCP);
    let pause = Duration::from_secs_f64(4.0 * d) + Duration::from_millis(300);
    thread::sleep(pause);
    let b = zero.scrape().value("sockdiag_collections_total", &TCP);
    assert!(
        b > a,
        "--cache.ttl 0s: a scrape {pause:?} later must collect again: {a} then {b}"
    );
}

const STALL_REQUESTS: usize = 1000;

/// Opens a connection that sends many pipelined scrapes and never reads:
/// the server's writes to it block once the small window and its send
/// buffer are full.
fn stalled_reader(server: &Server, requests: usize) -> std::net::TcpStream {
    let mut s = connect_small_rcvbuf(server.addr, 2048);
    let one = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.telemetry_path, server.addr
    );
    s.write_all(one.repeat(requests).as_bytes())
        .expect("send pipelined requests");
    s
}

/// Three scrapes in a row, each must succeed within 5 s.
fn scrapes_within_five_seconds(server: &Server, context: &str) {
    for i in 0..3 {
        let t0 = Instant::now();
        let r = http_request(server.addr, "GET", "/metrics", &[]).unwrap_or_else(|e| {
            panic!(
                "{context}: scrape {i} failed after {:?}: {e}\nserver stderr:\n{}",
                t0.elapsed(),
                server.stderr()
            )
        });
        let took = t0.elapsed();
        assert_eq!(r.status, 200, "{context}: scrape {i}");
        parse_prometheus(&r.text()).unwrap();
        assert!(
            took < Duration::from_secs(5),
            "{context}: scrape {i} took {took:?}"
        );
    }
}

#[test]
fn slow_header_senders_do_not_block_a_scrape() {
    // Three fresh servers: the first burst of connections to an idle server
    // is the case that matters, and timing decides whether it bites.
    for round in 0..3 {
        let server = Server::start(&[]);
        // Let the server settle into waiting for connections, as it would
        // be when slow clients arrive in real life.
        thread::sleep(Duration::from_millis(300));
        // A burst of clients that send half a request header and then
        // nothing, immediately followed by a normal scrape.
        let mut half_headers = Vec::new();
        for _ in 0..20 {
            let mut s = std::net::TcpStream::connect(server.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: loc").unwrap();
            half_headers.push(s);
        }
        scrapes_within_five_seconds(
            &server,
            &format!("round {round}: 20 half-header clients connected"),
        );
        drop(half_headers);
    }
}

#[test]
fn stalled_reader_does_not_block_a_scrape() {
    let server = Server::start(&[]);
    // One response (~10 KB) fits in the socket buffers, so the client that
    // never reads pipelines 1000 scrapes (~10 MB of responses, more than the
    // 4 MB a loopback send buffer can grow to): within a second the server's
    // writes to it block. With the default 3 s write timeout it is cut
    // within ~3 s, and a scrape waiting behind it is answered.
    let stalled = stalled_reader(&server, STALL_REQUESTS);
    thread::sleep(Duration::from_secs(1));
    // Slow header senders on top (connected one by one, not in a burst).
    let mut half_headers = Vec::new();
    for _ in 0..5 {
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: loc").unwrap();
        half_headers.push(s);
        thread::sleep(Duration::from_millis(50));
    }
    scrapes_within_five_seconds(&server, "a client that never reads connected");
    drop(half_headers);
    drop(stalled);
}

/// The write timeout at 1 s (a third of the 3 s default): a client that
/// stops reading is cut about 1 s after its last response was queued, seen
/// from the server's end of the connection (the client must not read, or
/// the writes would progress).
#[test]
fn stalled_reader_is_cut_after_write_timeout() {
    let server = Server::start(&["--cache.ttl", "1m", "--web.write-timeout", "1s"]);
    // Collect once first, so the pipelined responses are queued at once.
    server.scrape();
    const REQUESTS: usize = STALL_REQUESTS;
    let mut s = stalled_reader(&server, REQUESTS);
    let stalled_at = Instant::now();
    let client = s.local_addr().unwrap();
    let took = support::timing::server_closed_after(
        server.addr,
        client,
        stalled_at,
        Duration::from_secs(8),
    );
    support::timing::assert_between(
        "a client that stops reading, with --web.write-timeout 1s, cut",
        took,
        0.9,
        2.5,
    );
    // Now drain: a cut connection ends (EOF or reset) before all responses arrived.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(20);
    let ended = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(e) => panic!("reading the stalled connection: {e}"),
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    let responses = got.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
    assert!(
        ended,
        "the server's end closed, yet the client's end did not end ({responses} responses read)"
    );
    assert!(
        responses < REQUESTS,
        "all {REQUESTS} responses were delivered: the connection was not cut"
    );
    // And the server still serves.
    assert_eq!(server.get("/metrics").status, 200);
}

#[test]
fn promtool_accepts_the_live_output() {
    let promtool = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("promtool"))
                .find(|f| f.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "promtool not found in PATH: `make test` installs it (Debian package `prometheus`)"
            )
        });
    let server = Server::start(&[]);
    for (what, headers) in [
        ("plain", vec![]),
        ("gzip", vec![("Accept-Encoding", "gzip")]),
    ] {
        let text = server.request("GET", "/metrics", &headers).text();
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn promtool");
        let mut stdin = child.stdin.take().unwrap();
        let feeder = thread::spawn(move || stdin.write_all(text.as_bytes()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
                let _ = child.wait();
                panic!("promtool did not finish in 30 s");
            }
            thread::sleep(Duration::from_millis(20));
        };
        feeder.join().unwrap().expect("feed promtool");
        let mut out = String::new();
        let mut err = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            status.success(),
            "promtool check metrics ({what}): {status}\n{out}\n{err}"
        );
    }
}

fn exits_zero_on(sig: libc::c_int) {
    let mut server = Server::start(&[]);
    // An idle keep-alive connection, as Prometheus keeps one, must not hold the server up.
    let mut idle = std::net::TcpStream::connect(server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    idle.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .unwrap();
    let r = read_response(&mut idle, false).unwrap();
    assert_eq!(r.status, 200);
    let t0 = Instant::now();
    let status = server
        .signal_and_wait(sig, Duration::from_secs(3))
        .unwrap_or_else(|| {
            panic!(
                "still running 3 s after signal {sig}; stderr:\n{}",
                server.stderr()
            )
        });
    assert_eq!(
        status.code(),
        Some(0),
        "exit after signal {sig}: {status}; stderr:\n{}",
        server.stderr()
    );
    eprintln!("exited {:?} after signal {sig}", t0.elapsed());
    drop(idle);
}

#[test]
fn sigterm_exits_zero() {
    exits_zero_on(libc::SIGTERM);
}

#[test]
fn sigint_exits_zero() {
    exits_zero_on(libc::SIGINT);
}

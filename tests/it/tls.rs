//! TLS and basic auth from `--web.config.file`, end to end against the
//! binary: scrapes over TLS with a rustls client (and curl, an OpenSSL
//! client, when installed), every client_auth_type, min/max_version, basic
//! auth good/bad/missing, bad config files, and slow TLS clients that must
//! not hold up anyone else. Certificates are made fresh by each test
//! (`support::Pki`, rcgen); nothing secret is checked in.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{
    basic_auth, bcrypt_hash, parse_prometheus, run_exporter, tls_client, tls_request, ClientCert,
    Pki, Server,
};
use rustls::version::{TLS12, TLS13};

const BOTH: &[&rustls::SupportedProtocolVersion] = &[&TLS13, &TLS12];

fn tls_yaml(extra: &str) -> String {
    format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{extra}")
}

fn start(pki: &Pki, yaml: &str, args: &[&str]) -> Server {
    let file = pki.web_config("web.yml", yaml);
    let mut full = vec!["--web.config.file", file.as_str()];
    full.extend_from_slice(args);
    Server::start(&full)
}

/// GET /metrics over TLS; Ok(status) or the handshake/IO error.
fn status(
    server: &Server,
    client: &Arc<rustls::ClientConfig>,
    headers: &[(&str, &str)],
) -> Result<u16, String> {
    tls_request(server.addr, client, "/metrics", headers)
        .map(|r| r.status)
        .map_err(|e| e.to_string())
}

#[test]
fn scrapes_over_tls_and_refuses_plain_http() {
    let pki = Pki::new("scrape");
    let server = start(&pki, &tls_yaml(""), &[]);
    assert!(
        server.listening_line.contains("tls=true"),
        "{}",
        server.listening_line
    );
    for versions in [BOTH, &[&TLS12][..], &[&TLS13][..]] {
        let client = tls_client(&pki, versions, ClientCert::None);
        let r = tls_request(
            server.addr,
            &client,
            "/metrics",
            &[("Accept-Encoding", "gzip")],
        )
        .unwrap_or_else(|e| panic!("{versions:?}: {e}\n{}", server.stderr()));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        let m = parse_prometheus(&r.text()).unwrap();
        assert_eq!(
            m.value("sockdiag_collect_success", &[("collector", "tcp")]),
            1.0
        );
    }
    // Plain HTTP on the TLS port gets Go's answer, not a hang.
    let r = support::http_request(server.addr, "GET", "/metrics", &[]).unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("HTTP request to an HTTPS server"),
        "{}",
        r.text()
    );
    // A client that does not trust our CA fails the handshake; the server
    // goes on serving.
    let other = Pki::new("other-ca");
    assert!(status(&server, &tls_client(&other, BOTH, ClientCert::None), &[]).is_err());
    assert_eq!(
        status(&server, &tls_client(&pki, BOTH, ClientCert::None), &[]),
        Ok(200)
    );
}

#[test]
fn min_and_max_version_are_enforced() {
    let pki = Pki::new("versions");
    let only12 = tls_client(&pki, &[&TLS12], ClientCert::None);
    let only13 = tls_client(&pki, &[&TLS13], ClientCert::None);
    let server = start(&pki, &tls_yaml("  min_version: TLS13\n"), &[]);
    assert_eq!(status(&server, &only13, &[]), Ok(200));
    assert!(
        status(&server, &only12, &[]).is_err(),
        "TLS 1.2 accepted with min_version TLS13"
    );
    drop(server);
    let server = start(&pki, &tls_yaml("  max_version: TLS12\n"), &[]);
    assert_eq!(status(&server, &only12, &[]), Ok(200));
    assert!(
        status(&server, &only13, &[]).is_err(),
        "TLS 1.3 accepted with max_version TLS12"
    );
}

#[test]
fn client_auth_types_behave_as_in_go() {
    let pki = Pki::new("client-auth");
    // (client_auth_type, CA given, outcome for: no cert, our CA's cert, another CA's cert)
    let table: &[(&str, bool, [bool; 3])] = &[
        ("NoClientCert", false, [true, true, true]),
        ("RequestClientCert", false, [true, true, true]),
        ("RequireAnyClientCert", false, [false, true, true]),
        ("VerifyClientCertIfGiven", true, [true, true, false]),
        ("RequireAndVerifyClientCert", true, [false, true, false]),
    ];
    for (mode, with_ca, want) in table {
        let mut extra = format!("  client_auth_type: {mode}\n");
        if *with_ca {
            extra.push_str("  client_ca_file: ca.pem\n");
        }
        let server = start(&pki, &tls_yaml(&extra), &[]);
        for (cert, ok) in [ClientCert::None, ClientCert::Good, ClientCert::Rogue]
            .into_iter()
            .zip(want)
        {
            for versions in [&[&TLS13][..], &[&TLS12][..]] {
                let got = status(&server, &tls_client(&pki, versions, cert), &[]);
                assert_eq!(
                    got.is_ok(),
                    *ok,
                    "{mode} with client cert {cert:?} over {versions:?}: {got:?}"
                );
                if let Ok(code) = got {
                    assert_eq!(code, 200);
                }
            }
        }
    }
}

#[test]
fn basic_auth_over_tls_and_plain_http() {
    let pki = Pki::new("basic");
    let users = format!(
        "basic_auth_users:\n  alice: {}\n  bob: {}\n",
        bcrypt_hash("secret"),
        bcrypt_hash("hunter2")
    );
    let good = basic_auth("alice", "secret");
    let cases = [
        (None, 401),
        (Some(basic_auth("alice", "wrong")), 401),
        (Some(basic_auth("bob", "secret")), 401),
        (Some(basic_auth("mallory", "secret")), 401),
        (Some("Bearer abc".to_string()), 401),
        (Some(good.clone()), 200),
        (Some(basic_auth("bob", "hunter2")), 200),
    ];
    // Over TLS.
    let server = start(
        &pki,
        &format!("{}{users}", tls_yaml("")),
        &["--log.level", "debug"],
    );
    assert!(
        server.listening_line.contains("basic_auth_users=2"),
        "{}",
        server.listening_line
    );
    let client = tls_client(&pki, BOTH, ClientCert::None);
    for (auth, want) in &cases {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = tls_request(server.addr, &client, "/metrics", &headers).unwrap();
        assert_eq!(r.status, *want, "{auth:?}");
        if *want == 401 {
            assert_eq!(r.header("www-authenticate"), Some("Basic"), "{auth:?}");
            assert!(!r.text().contains("sockdiag_"), "401 body leaks metrics");
        }
    }
    // Every path needs credentials.
    let r = tls_request(server.addr, &client, "/", &[]).unwrap();
    assert_eq!(r.status, 401);
    // Repeated scrapes with the same good credentials run bcrypt once: the
    // debug log has one line per bcrypt run (5 distinct pairs above, all
    // cached from then on).
    for _ in 0..5 {
        let r = tls_request(
            server.addr,
            &client,
            "/metrics",
            &[("Authorization", &good)],
        )
        .unwrap();
        assert_eq!(r.status, 200);
        let r = tls_request(
            server.addr,
            &client,
            "/",
            &[("Authorization", &basic_auth("alice", "wrong"))],
        )
        .unwrap();
        assert_eq!(r.status, 401, "a cached bad password stays bad");
    }
    let runs = server
        .stderr()
        .matches("basic auth checked with bcrypt")
        .count();
    assert_eq!(
        runs,
        5,
        "bcrypt runs (one per distinct pair):\n{}",
        server.stderr()
    );
    drop(server);

    // Basic auth without TLS works the same way.
    let server = start(&pki, &users, &[]);
    assert!(
        server.listening_line.contains("tls=false"),
        "{}",
        server.listening_line
    );
    for (auth, want) in &cases {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = server.request("GET", "/metrics", &headers);
        assert_eq!(r.status, *want, "{auth:?}");
        if *want == 401 {
            assert_eq!(r.header("www-authenticate"), Some("Basic"));
        }
    }
}

#[test]
fn configured_headers_are_sent() {
    let pki = Pki::new("headers");
    let server = start(
        &pki,
        "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n",
        &[],
    );
    for path in ["/metrics", "/", "/nope"] {
        let r = server.get(path);
        assert_eq!(r.header("x-frame-options"), Some("deny"), "{path}");
        assert_eq!(
            r.header("strict-transport-security"),
            Some("max-age=31536000"),
            "{path}"
        );
    }
}

#[test]
fn bad_config_files_stop_start_up_naming_the_field() {
    let pki = Pki::new("bad");
    let cases: &[(&str, &str)] = &[
        (
            "tls_server_config:\n  cert_file: server.pem\n  keyfile: server.key\n",
            "keyfile",
        ),
        ("tls_server_config:\n  cert_file: server.pem\n", "key_file"),
        (
            &tls_yaml("  client_auth_type: Always\n"),
            "client_auth_type",
        ),
        (&tls_yaml("  min_version: TLS10\n"), "min_version"),
        (
            &tls_yaml("  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n"),
            "cipher_suites",
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: server.key\n",
            "missing.pem",
        ),
        (
            "basic_auth_users:\n  alice: secret\n",
            "basic_auth_users.alice",
        ),
        (
            "http_server_config:\n  headers:\n    X-Powered-By: me\n",
            "X-Powered-By",
        ),
        // A value of the wrong type, and YAML that does not parse (named by line).
        (
            "tls_server_config:\n  curve_preferences: X25519\n",
            "curve_preferences",
        ),
        ("tls_server_config: {\n", "line 2"),
    ];
    for (yaml, field) in cases {
        let file = pki.web_config("bad.yml", yaml);
        let out = run_exporter(
            &[
                "--web.listen-address",
                "127.0.0.1:0",
                "--web.config.file",
                &file,
            ],
            Duration::from_secs(10),
        );
        assert_eq!(out.code(), Some(1), "{yaml}\n{}", out.describe());
        let line = out.stderr.trim();
        assert_eq!(line.lines().count(), 1, "one line:\n{line}");
        assert!(
            line.contains("--web.config.file") && line.contains(field),
            "{yaml}\n-> {line}\nwant {field:?}"
        );
        assert!(!line.contains("panicked"), "{line}");
    }
    let out = run_exporter(
        &["--web.config.file", "/nonexistent/web.yml"],
        Duration::from_secs(10),
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("/nonexistent/web.yml"),
        "{}",
        out.stderr
    );
    let out = run_exporter(&["--web.config.file"], Duration::from_secs(10));
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(out.stderr.contains("--web.config.file"), "{}", out.stderr);
}

/// The first bytes a real TLS client sends (its ClientHello).
fn client_hello(pki: &Pki) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn =
        rustls::ClientConnection::new(tls_client(pki, BOTH, ClientCert::None), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    assert!(out.len() > 100 && out[0] == 0x16, "not a handshake record");
    out
}

#[test]
fn stalled_tls_clients_do_not_block_other_scrapes() {
    let pki = Pki::new("stalled");
    let hello = client_hello(&pki);
    // A read timeout far above the clients' 10 s socket timeouts: if a
    // stalled handshake held the server (as tiny_http's accept thread is
    // held), the scrapes below would fail instead of waiting it out.
    let server = start(&pki, &tls_yaml(""), &["--web.read-timeout", "60s"]);
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        match i % 3 {
            0 => {}                                               // TCP only, sends nothing
            1 => s.write_all(&hello[..5]).unwrap(),               // a record header
            _ => s.write_all(&hello[..hello.len() / 2]).unwrap(), // half a ClientHello
        }
        stalled.push(s);
    }
    let client = tls_client(&pki, BOTH, ClientCert::None);
    for i in 0..5 {
        let r = tls_request(server.addr, &client, "/metrics", &[]).unwrap_or_else(|e| {
            panic!(
                "scrape {i} with 20 stalled TLS clients: {e}\n{}",
                server.stderr()
            )
        });
        assert_eq!(r.status, 200);
    }
    drop(stalled);
}

/// The TLS handshake is bounded by the read timeout: at 1 s (a fifth of the
/// 5 s default) half a ClientHello is cut about 1 s after it was sent.
#[test]
fn a_stalled_handshake_is_cut_at_the_read_timeout() {
    let pki = Pki::new("cut");
    let hello = client_hello(&pki);
    let server = start(&pki, &tls_yaml(""), &["--web.read-timeout", "1s"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    let started = Instant::now();
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    // Closed (EOF or reset) with nothing sent back.
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut buf = [0u8; 256];
    let read = loop {
        match s.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            read => break read,
        }
    };
    let took = match read {
        Ok(0) => Some(started.elapsed()),
        Ok(n) => panic!("{n} unexpected bytes to half a ClientHello"),
        // However the server's close shows (reset, or aborted), it is the cut.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            ) =>
        {
            Some(started.elapsed())
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!(
            "reading the half-handshake connection: {e} ({:?})",
            e.kind()
        ),
    };
    support::timing::assert_between(
        "half a ClientHello with --web.read-timeout 1s cut",
        took,
        0.9,
        2.5,
    );
    let client = tls_client(&pki, BOTH, ClientCert::None);
    assert_eq!(status(&server, &client, &[]), Ok(200));
}

/// curl links OpenSSL: a second, independent TLS implementation.
#[test]
fn curl_scrapes_with_client_cert_and_basic_auth() {
    if !support::require_tool("curl", "`make deps` installs it") {
        return;
    }
    let pki = Pki::new("curl");
    let yaml = format!(
        "{}basic_auth_users:\n  alice: {}\n",
        tls_yaml("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"),
        bcrypt_hash("secret")
    );
    let server = start(&pki, &yaml, &[]);
    let url = format!("https://localhost:{}/metrics", server.addr.port());
    let curl = |extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(pki.path("ca.pem"))
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", server.addr.port()),
            ])
            .args(["-w", "\n%{http_code}"])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let code = text.lines().last().unwrap_or("").to_string();
        (code, text, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let cert = pki.path("client.pem").display().to_string();
    let key = pki.path("client.key").display().to_string();
    let with_cert = ["--cert", cert.as_str(), "--key", key.as_str()];
    let (code, text, err) = curl(&[&with_cert[..], &["-u", "alice:secret"]].concat());
    assert_eq!(code, "200", "{text}\n{err}");
    parse_prometheus(text.rsplit_once('\n').unwrap().0).unwrap();
    let (code, _, err) = curl(&[&with_cert[..], &["-u", "alice:nope"]].concat());
    assert_eq!(code, "401", "{err}");
    // No client certificate: the handshake fails (curl reports 000).
    let (code, _, _) = curl(&["-u", "alice:secret"]);
    assert_eq!(code, "000");
    let (code, _, err) = curl(
        &[
            &with_cert[..],
            &["--tlsv1.2", "--tls-max", "1.2", "-u", "alice:secret"],
        ]
        .concat(),
    );
    assert_eq!(code, "200", "TLS 1.2 through OpenSSL: {err}");
}

/// A client trying password after password keeps only the bcrypt thread
/// busy: a scraper whose credentials are remembered is answered meanwhile,
/// and guesses beyond the queue get 503 with Retry-After.
#[test]
fn password_guessing_does_not_hold_up_a_known_scraper() {
    let pki = Pki::new("guessing");
    // Cost 10, exporter-toolkit's documented default: each check costs the
    // verifier thread tens of milliseconds (more in a debug build).
    let hash = bcrypt::hash("secret", 10).unwrap();
    let server = start(&pki, &format!("basic_auth_users:\n  alice: {hash}\n"), &[]);
    let good = basic_auth("alice", "secret");
    assert_eq!(
        server
            .request("GET", "/metrics", &[("Authorization", &good)])
            .status,
        200
    );
    // 24 guesses at once, each on its own connection.
    let mut guesses = Vec::new();
    for i in 0..24 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\r\n",
            basic_auth("alice", &format!("guess{i}"))
        );
        s.write_all(request.as_bytes()).unwrap();
        guesses.push(s);
    }
    for _ in 0..3 {
        let r = server.request("GET", "/metrics", &[("Authorization", &good)]);
        assert_eq!(r.status, 200, "remembered credentials while guesses queue");
    }
    let mut statuses = Vec::new();
    for mut s in guesses {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let r = support::parse_response_bytes(&raw).unwrap();
        if r.status == 503 {
            assert_eq!(r.header("retry-after"), Some("1"));
        }
        statuses.push(r.status);
    }
    assert!(
        statuses.iter().all(|s| [401, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&503), "queue never full: {statuses:?}");
    assert!(
        statuses.contains(&401),
        "no guess was checked: {statuses:?}"
    );
}

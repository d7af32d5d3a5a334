//! The serving loop never waits for a collection, and responses share the
//! collection's bytes (issue 12, points 1 and 3), end to end against the
//! binary:
//!
//! - with a dump that stalls for 3 s (`no_done_hang.fixture`,
//!   `--collector.timeout 3s`), the landing page, a 404 and a TLS
//!   handshake are answered at once while scrapes wait for the collection;
//!   the scrapes that arrive during it all get that one collection (one
//!   kernel dump, `sockdiag_collections_total` 1);
//! - 64 clients that ask for a 4 MB body and never read it cost the server
//!   about one body of memory, not 64.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

fn stalled_fixture() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/faults/no_done_hang.fixture")
        .to_str()
        .unwrap()
        .to_string()
}

/// How long anything but a scrape may take while a collection stalls: it
/// takes milliseconds; the stall is 3 s.
const AT_ONCE: Duration = Duration::from_secs(1);

/// Scrapes that arrive while a collection runs (one at the start, the others
/// spread over its first second) all wait for it and get it, while the
/// landing page and a 404 are answered at once. Seen failing with
/// `Collections::request` made to wait for the collection it starts (the
/// old in-loop collection): the landing page took 2.1 s.
#[test]
fn a_stalled_collection_holds_up_only_the_scrapes_that_need_it() {
    let fixture = stalled_fixture();
    let server = Server::start(&["--source.fixture", &fixture, "--collector.timeout", "3s"]);
    let addr = server.addr;
    let scrape = move || {
        let started = Instant::now();
        let r = http_request(addr, "GET", "/metrics", &[]).expect("scrape");
        (started.elapsed(), r)
    };
    let first = thread::spawn(scrape);
    thread::sleep(Duration::from_millis(200));
    let mut later = Vec::new();
    for _ in 0..7 {
        later.push(thread::spawn(scrape));
        thread::sleep(Duration::from_millis(100));
    }

    let started = Instant::now();
    let landing = http_request(addr, "GET", "/", &[]).expect("landing page");
    let landing_took = started.elapsed();
    let started = Instant::now();
    let missing = http_request(addr, "GET", "/nope", &[]).expect("404");
    let missing_took = started.elapsed();
    eprintln!(
        "during a stalled collection: GET / took {landing_took:?}, GET /nope {missing_took:?}"
    );
    assert_eq!(landing.status, 200);
    assert!(
        landing.text().contains("No collection has finished yet"),
        "the landing page must say the first collection is running:\n{}",
        landing.text()
    );
    assert!(landing_took < AT_ONCE, "GET / took {landing_took:?}");
    assert_eq!(missing.status, 404);
    assert!(missing_took < AT_ONCE, "GET /nope took {missing_took:?}");

    let (took, r) = first.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(
        took >= Duration::from_millis(2500),
        "the first scrape waited for the stalled collection, yet took {took:?}"
    );
    let body = r.body.clone();
    let exp = parse_prometheus(&r.text()).unwrap();
    let tcp = [("collector", "tcp")];
    assert_eq!(exp.value("sockdiag_collect_success", &tcp), 0.0);
    assert_eq!(exp.value("sockdiag_collections_total", &tcp), 1.0);
    for scrape in later {
        let (_, r) = scrape.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body, body,
            "every waiting scrape gets the same collection"
        );
    }
    // The landing page now shows that collection.
    let landing = server.get("/").text();
    assert!(
        landing.contains("tcp collection failed"),
        "no summary of the finished collection:\n{landing}"
    );
}

/// A TLS handshake and a request over TLS go on while a scrape waits for a
/// stalled collection. Seen failing as the test above (took 2.7 s).
#[test]
fn tls_handshakes_go_on_during_a_stalled_collection() {
    let pki = Pki::new("stalled-collection");
    let yaml = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";
    let file = pki.web_config("web.yml", yaml);
    let fixture = stalled_fixture();
    let server = Server::start(&[
        "--web.config.file",
        &file,
        "--source.fixture",
        &fixture,
        "--collector.timeout",
        "3s",
    ]);
    let client = tls_client(
        &pki,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        ClientCert::None,
    );
    let addr = server.addr;
    let scraper = {
        let client = client.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let r = tls_request(addr, &client, "/metrics", &[]).expect("scrape");
            (started.elapsed(), r.status)
        })
    };
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let r = tls_request(addr, &client, "/", &[]).expect("landing page over TLS");
    let took = started.elapsed();
    eprintln!("during a stalled collection: handshake and GET / over TLS took {took:?}");
    assert_eq!(r.status, 200);
    assert!(took < AT_ONCE, "handshake and GET / over TLS took {took:?}");
    let (took, status) = scraper.join().unwrap();
    assert_eq!(status, 200);
    assert!(took >= Duration::from_millis(2500), "{took:?}");
}

/// Single ports listed for a big body: N x 2 directions x 11 states series
/// (as in `hostile`): 2000 give about 4 MB of text.
fn big_body_args() -> Vec<String> {
    let ports: Vec<String> = (1..=2000).map(|p| p.to_string()).collect();
    vec![
        "--collector.tcp.ports".into(),
        ports.join(","),
        "--collector.ports.max-series".into(),
        "1000000".into(),
        "--cache.ttl".into(),
        "1h".into(),
        "--web.max-connections".into(),
        "100".into(),
        "--web.write-timeout".into(),
        "30s".into(),
    ]
}

/// Asks for the whole text body (no gzip) through a 4 KiB receive window,
/// and never reads.
fn non_reader(addr: SocketAddr) -> TcpStream {
    let mut s = connect_small_rcvbuf(addr, 4096);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: stuck\r\n\r\n")
        .unwrap();
    s
}

/// 64 clients that never read a 4 MB response hold references to the one
/// cached body, not copies: RSS grows by far less than 8 bodies. Seen
/// failing with the body copied per response (`Arc::from(&entry.text[..])`
/// in `Http::metrics`): RSS grew by 64.0 bodies (240 MB).
#[test]
fn stalled_readers_share_one_body() {
    let args = big_body_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    let body = server.get("/metrics").body.len() as u64;
    assert!(body > 2_000_000, "body only {body} bytes");
    // Let the warm-up connection close and the allocator settle.
    thread::sleep(Duration::from_millis(500));
    let idle = ProcStats::read(server.pid()).unwrap();
    let stuck: Vec<TcpStream> = (0..64).map(|_| non_reader(server.addr)).collect();
    // Every response is queued and its socket full well within this.
    thread::sleep(Duration::from_secs(2));
    let mut peak = idle;
    for _ in 0..10 {
        peak = peak.max(ProcStats::read(server.pid()).unwrap());
        thread::sleep(Duration::from_millis(100));
    }
    let grown = peak.rss_kib.saturating_sub(idle.rss_kib) * 1024;
    eprintln!(
        "64 stalled readers of a {body}-byte body: RSS {} -> {} KiB, grew {:.2} bodies",
        idle.rss_kib,
        peak.rss_kib,
        grown as f64 / body as f64
    );
    assert!(
        grown < 8 * body,
        "RSS grew {grown} bytes for 64 stalled readers of a {body}-byte body"
    );
    // They are still being served (not cut): the server holds them open.
    assert!(peak.fds >= idle.fds + 64, "{peak:?} vs {idle:?}");
    drop(stuck);
}

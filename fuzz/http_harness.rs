//! The HTTP harness, shared by the libFuzzer target (fuzz_targets/http.rs)
//! and by `cargo test` (tests/it/fuzz_corpus.rs), which replays every file
//! under fuzz/corpus/http/ and fuzz/regressions/http/ through it. It panics
//! when an invariant breaks; any other outcome is a pass.
//!
//! The input is a client: arbitrary bytes, split at arbitrary points, sent
//! through the connection's protocol state machine (`web::session`, which
//! `web::conn` drives with sockets) and the real answers (`web::respond`),
//! in plain text or through an in-memory rustls client and server (the TLS
//! layer's plaintext side). Byte 0 picks the mode (see the constants); then
//! come chunks, each a control byte (bits 0-5: length - 1; bit 6: the
//! client sends on without reading; bit 7: the client reads at most
//! [`TRICKLE`] bytes after this chunk) and that many bytes.
//!
//! The client then parses what came back, as a client would, and checks:
//! every response is well framed (status line, header lines, exactly one
//! numeric Content-Length, the body that long; none for HEAD on a kept-alive
//! connection, and no bytes after the last response); there is exactly one
//! response per request the server took, in order, and none after a
//! `Connection: close`; a request announcing a body is never kept alive
//! (its body is never read as a request); only GET and HEAD get 200. A
//! scrape that waits for a collection has an accepted `collect[]` filter,
//! and is answered by a collection of its own set only, never another's.

#![allow(dead_code)] // each user calls only part of the harness

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sockdiag_exporter::collectors::KindSet;
use sockdiag_exporter::cycle::cache::Entry;
use sockdiag_exporter::cycle::exporter::Snapshot;
use sockdiag_exporter::web::respond::{Config, Http};
use sockdiag_exporter::web::session::{Progress, Session, Wait};
use sockdiag_exporter::web::webconfig::WebConfig;

/// Byte 0, bit 0: through TLS.
pub const TLS: u8 = 0x01;
/// Byte 0, bits 1-2: the scrape cache (see [`Cache`]).
pub const CACHE_SHIFT: u8 = 1;
/// Byte 0, bit 3: --web.max-header-bytes 256 instead of 16384.
pub const SMALL_HEADS: u8 = 0x08;
/// Byte 0, bit 4: an extra response header from the web config.
pub const EXTRA_HEADER: u8 = 0x10;

/// Chunk control bit 6: send on without reading what came back.
pub const NO_READ: u8 = 0x40;
/// Chunk control bit 7: read at most TRICKLE bytes (partial writes).
pub const SLOW_READ: u8 = 0x80;
pub const TRICKLE: usize = 7;

/// How scrapes are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// A fresh collection is cached: answered at once.
    Fresh,
    /// Each scrape waits for a collection, which finishes before the next
    /// chunk arrives.
    Collecting,
    /// Nothing cached and no collection thread: 503.
    Empty,
    /// Scrapes wait for a collection that finishes only at the end.
    SlowCollection,
}

/// What the corpus exercised, for the replay test's coverage checks.
#[derive(Debug, Default)]
pub struct Seen {
    pub inputs: u64,
    pub tls: u64,
    /// Responses by status code.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    pub head_requests: u64,
    pub waited: u64,
    /// Scrapes with a `collect[]`/`exclude[]` filter answered by a
    /// collection of their set.
    pub filtered: u64,
    /// Requests with a filter parameter answered 400.
    pub refused_filters: u64,
    /// Inputs with more than one response on the connection.
    pub kept_alive: u64,
    /// Responses handed on in more than two pieces (a client reading a
    /// few bytes at a time, or a full TLS buffer).
    pub trickled: u64,
}

/// A collection of the collectors in `set` (a filtered scrape's).
fn entry_of(set: KindSet) -> Arc<Entry> {
    if set == KindSet::ALL {
        return entry();
    }
    let snapshot = Snapshot {
        text: format!("sockdiag_fuzz_set{{set=\"{}\"}} 1\n", set.names()),
        summary: String::new(),
        started: Instant::now(),
        duration: Duration::ZERO,
        success: true,
        set,
    };
    Arc::new(Entry::encode(snapshot, Instant::now()))
}

/// The cached collection every scrape gets.
fn entry() -> Arc<Entry> {
    static ENTRY: OnceLock<Arc<Entry>> = OnceLock::new();
    Arc::clone(ENTRY.get_or_init(|| {
        let snapshot = Snapshot {
            text: "# HELP sockdiag_build_info Build.\n# TYPE sockdiag_build_info gauge\n\
                   sockdiag_build_info{version=\"0\",revision=\"fuzz\"} 1\n"
                .repeat(20),
            summary: "summary <b>table</b>\n".into(),
            started: Instant::now(),
            duration: Duration::ZERO,
            success: true,
            set: KindSet::ALL,
        };
        Arc::new(Entry::encode(snapshot, Instant::now()))
    }))
}

/// A self-signed certificate for `localhost`, made once per process: the
/// server's config and a client that trusts it.
fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> =
        OnceLock::new();
    CONFIGS
        .get_or_init(|| {
            use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                .expect("a self-signed certificate");
            let cert = certified.cert.der().clone();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                certified.signing_key.serialize_der(),
            ));
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], key)
                .expect("server config");
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert).expect("root");
            let client = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            (Arc::new(server), Arc::new(client))
        })
        .clone()
}

/// The server side: the session and the answers, plus the record of which
/// request bytes each response answered.
struct Server<'a> {
    http: Http<'a>,
    session: Session,
    cache: Cache,
    /// Every plaintext byte the session took in, in order.
    input: Vec<u8>,
    /// The bytes of each request the session took (parsed or refused), in
    /// order; a response pops the oldest.
    requests: Vec<Vec<u8>>,
    /// How much of `input` the taken requests cover.
    taken: usize,
    /// Responses fully handed on, each with its request.
    answered: Vec<Vec<u8>>,
    closed: bool,
    /// Responses handed on in more than two pieces (head and body).
    trickled: u64,
    /// Pieces of the response being handed on.
    pieces: u32,
    waited: u64,
    filtered: u64,
}

impl Server<'_> {
    fn receive(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        if !self.session.closing() {
            self.input.extend_from_slice(bytes);
        }
        self.session.received(bytes);
    }

    /// Records the bytes the session just took as one request.
    fn took_request(&mut self) {
        let taken = self.input.len() - self.session.buffered();
        assert!(
            taken > self.taken,
            "a request was answered without taking any bytes"
        );
        self.requests.push(self.input[self.taken..taken].to_vec());
        self.taken = taken;
    }

    /// Runs the session as `conn` does: hand on output (at most `budget`
    /// bytes, through `sink`), resolve waits, process the next request.
    fn run(&mut self, mut budget: usize, finish: bool, sink: &mut dyn FnMut(&[u8]) -> usize) {
        while !self.closed {
            if self.session.responding() {
                if budget == 0 {
                    return;
                }
                let [head, body] = self.session.pending();
                let part = if head.is_empty() { body } else { head };
                let part = &part[..part.len().min(budget)];
                let n = sink(part);
                if n == 0 {
                    return; // the transport is full
                }
                budget -= n;
                self.pieces += 1;
                if self.session.wrote(n) {
                    self.answered.push(
                        self.requests
                            .get(self.answered.len())
                            .cloned()
                            .expect("a response with no request taken for it"),
                    );
                    self.trickled += u64::from(self.pieces > 2);
                    self.pieces = 0;
                    if self.session.closing() {
                        self.closed = true;
                    }
                }
                continue;
            }
            match self.session.waiting() {
                Some(Wait::Check(..)) => panic!("a bcrypt wait without basic auth"),
                Some(Wait::Collection(_)) => {
                    if self.cache == Cache::SlowCollection && !finish {
                        return;
                    }
                    let Some(Wait::Collection(head)) = self.session.waiting() else {
                        unreachable!("just matched");
                    };
                    let set = self
                        .http
                        .selection(head)
                        .expect("a scrape waits only with an accepted filter");
                    if set != KindSet::ALL {
                        assert!(
                            !self.session.collected(&entry(), &self.http),
                            "a filtered scrape answered with every collector's collection"
                        );
                        self.filtered += 1;
                    }
                    assert!(self.session.collected(&entry_of(set), &self.http));
                    self.waited += 1;
                    continue;
                }
                None => {}
            }
            match self.session.process(&mut self.http) {
                Progress::Respond | Progress::Wait => self.took_request(),
                Progress::NeedMore => return,
                Progress::Busy => {
                    assert!(self.session.closing(), "busy with nothing to do");
                    return;
                }
            }
        }
    }
}

/// Runs one input; panics when an invariant breaks.
pub fn http(data: &[u8]) {
    http_seen(data, &mut Seen::default());
}

pub fn http_seen(data: &[u8], seen: &mut Seen) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let cache = match (mode >> CACHE_SHIFT) & 3 {
        0 => Cache::Fresh,
        1 => Cache::Collecting,
        2 => Cache::Empty,
        _ => Cache::SlowCollection,
    };
    let config = Config {
        telemetry_path: "/metrics".into(),
        cache_ttl: Duration::from_secs(3600),
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(3),
        max_connections: 64,
        max_header_bytes: if mode & SMALL_HEADS != 0 { 256 } else { 16384 },
        web: WebConfig {
            headers: if mode & EXTRA_HEADER != 0 {
                vec![("X-Fuzz".into(), "yes".into())]
            } else {
                Vec::new()
            },
            ..WebConfig::default()
        },
    };
    let mut http = Http::new(&config, None, false).expect("no threads to start");
    match cache {
        Cache::Fresh => http.store(entry()),
        Cache::Collecting | Cache::SlowCollection => http.defer_scrapes(),
        Cache::Empty => {}
    }
    let mut server = Server {
        http,
        session: Session::new(),
        cache,
        input: Vec::new(),
        requests: Vec::new(),
        taken: 0,
        answered: Vec::new(),
        closed: false,
        trickled: 0,
        pieces: 0,
        waited: 0,
        filtered: 0,
    };
    let mut chunks = Vec::new();
    while let Some((&control, after)) = rest.split_first() {
        let len = (usize::from(control & 0x3f) + 1).min(after.len());
        chunks.push((control, &after[..len]));
        rest = &after[len..];
    }
    let tls = mode & TLS != 0;
    let received = if tls {
        through_tls(&mut server, &chunks)
    } else {
        plain(&mut server, &chunks)
    };
    check(&server, &received, seen);
    seen.inputs += 1;
    seen.tls += u64::from(tls);
    seen.waited += server.waited;
    seen.filtered += server.filtered;
    seen.trickled += server.trickled;
}

fn budget(control: u8) -> usize {
    if control & SLOW_READ != 0 {
        TRICKLE
    } else if control & NO_READ != 0 {
        0
    } else {
        usize::MAX
    }
}

/// Plain text: what the server hands on is what the client reads.
fn plain(server: &mut Server<'_>, chunks: &[(u8, &[u8])]) -> Vec<u8> {
    let mut received = Vec::new();
    let mut sink = |bytes: &[u8]| {
        received.extend_from_slice(bytes);
        bytes.len()
    };
    for &(control, bytes) in chunks {
        server.receive(bytes);
        server.run(budget(control), false, &mut sink);
    }
    server.run(usize::MAX, true, &mut sink);
    received
}

/// Moves every TLS record one side has queued to the other.
fn shuttle(from: &mut dyn FnMut(&mut Vec<u8>) -> usize, to: &mut dyn FnMut(&[u8])) {
    let mut buf = Vec::new();
    while from(&mut buf) > 0 {}
    if !buf.is_empty() {
        to(&buf);
    }
}

/// Through rustls: the client encrypts each chunk, the server decrypts it
/// into the session, and the responses travel back the same way.
fn through_tls(server: &mut Server<'_>, chunks: &[(u8, &[u8])]) -> Vec<u8> {
    let (server_config, client_config) = tls_configs();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let mut client = rustls::ClientConnection::new(client_config, name).expect("client");
    let mut tls = rustls::ServerConnection::new(server_config).expect("server");
    let mut received = Vec::new();
    let mut plaintext = vec![0u8; 16 * 1024];

    // Client records -> server -> session.
    let deliver = |client: &mut rustls::ClientConnection,
                   tls: &mut rustls::ServerConnection,
                   server: &mut Server<'_>,
                   plaintext: &mut [u8]| {
        shuttle(
            &mut |buf| client.write_tls(buf).expect("client write_tls"),
            &mut |bytes| {
                let mut at = bytes;
                while !at.is_empty() {
                    tls.read_tls(&mut at).expect("server read_tls");
                    tls.process_new_packets()
                        .expect("the server refused a well-behaved client's records");
                }
            },
        );
        loop {
            match tls.reader().read(plaintext) {
                Ok(0) => break,
                Ok(n) => server.receive(&plaintext[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("server plaintext: {e}"),
            }
        }
    };
    // Server records -> client -> received.
    let collect = |tls: &mut rustls::ServerConnection,
                   client: &mut rustls::ClientConnection,
                   received: &mut Vec<u8>,
                   plaintext: &mut [u8]| {
        shuttle(
            &mut |buf| tls.write_tls(buf).expect("server write_tls"),
            &mut |bytes| {
                let mut at = bytes;
                while !at.is_empty() {
                    client.read_tls(&mut at).expect("client read_tls");
                    client
                        .process_new_packets()
                        .expect("the client refused the server's records");
                }
            },
        );
        loop {
            match client.reader().read(plaintext) {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&plaintext[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // The server closed without close_notify: fine here, the
                // framing check below sees what arrived.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("client plaintext: {e}"),
            }
        }
    };
    // The handshake.
    for _ in 0..4 {
        deliver(&mut client, &mut tls, server, &mut plaintext);
        collect(&mut tls, &mut client, &mut received, &mut plaintext);
    }
    assert!(
        !client.is_handshaking() && !tls.is_handshaking(),
        "no handshake"
    );
    let mut step = |control: u8,
                    finish: bool,
                    client: &mut rustls::ClientConnection,
                    tls: &mut rustls::ServerConnection,
                    server: &mut Server<'_>,
                    received: &mut Vec<u8>| {
        deliver(client, tls, server, &mut plaintext);
        // rustls takes what fits under its buffer limit, as in conn.rs.
        server.run(budget(control), finish, &mut |bytes| {
            tls.writer().write(bytes).expect("server plaintext write")
        });
        if server.closed {
            tls.send_close_notify();
        }
        collect(tls, client, received, &mut plaintext);
    };
    for &(control, bytes) in chunks {
        client
            .writer()
            .write_all(bytes)
            .expect("client plaintext write");
        step(control, false, &mut client, &mut tls, server, &mut received);
    }
    // The end: the client reads everything, rustls's buffer permitting.
    for _ in 0..1000 {
        let before = received.len();
        step(0, true, &mut client, &mut tls, server, &mut received);
        if !server.session.responding() && received.len() == before {
            break;
        }
    }
    received
}

/// One response as a client parses it.
#[derive(Debug)]
struct Parsed {
    status: u16,
    close: bool,
    content_length: usize,
    body: usize,
}

/// Does the request announce a body (Content-Length other than 0, or any
/// Transfer-Encoding), by a plain reading of its header lines?
fn announces_body(request: &[u8]) -> bool {
    String::from_utf8_lossy(request)
        .split('\n')
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .any(|(name, value)| {
            let name = name.trim();
            name.eq_ignore_ascii_case("transfer-encoding")
                || (name.eq_ignore_ascii_case("content-length")
                    && value.trim().parse::<u64>().ok() != Some(0))
        })
}

/// The request's method, after any empty lines before it.
fn method(request: &[u8]) -> &[u8] {
    let start = request
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(request.len());
    let rest = &request[start..];
    let end = rest.iter().position(|b| *b == b' ').unwrap_or(rest.len());
    &rest[..end]
}

fn check(server: &Server<'_>, received: &[u8], seen: &mut Seen) {
    assert!(
        server.answered.len() <= server.requests.len(),
        "{} responses for {} requests",
        server.answered.len(),
        server.requests.len()
    );
    assert_eq!(
        server.answered.len(),
        server.requests.len(),
        "a request taken was never answered, although the client read everything"
    );
    check_responses(&server.answered, received, seen);
}

/// The wire checks alone, for one `GET /` (to show the harness catching
/// bad framing).
pub fn check_wire(received: &[u8]) {
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    check_responses(&[request], received, &mut Seen::default());
}

/// Parses `received` as the responses to `answered`, in order.
fn check_responses(answered: &[Vec<u8>], received: &[u8], seen: &mut Seen) {
    let mut at = received;
    let mut parsed = Vec::new();
    for (i, request) in answered.iter().enumerate() {
        let is_head = method(request) == b"HEAD";
        let response = parse_one(&mut at, is_head)
            .unwrap_or_else(|why| panic!("response {i} is not well framed: {why}"));
        if response.status == 200 {
            assert!(
                matches!(method(request), b"GET" | b"HEAD"),
                "200 for {:?}",
                String::from_utf8_lossy(request)
            );
        }
        if announces_body(request) {
            assert!(
                response.close,
                "a request with a body was kept alive: {:?}",
                String::from_utf8_lossy(request)
            );
        }
        if response.close {
            assert_eq!(i + 1, answered.len(), "a response after Connection: close");
        }
        seen.head_requests += u64::from(is_head);
        let text = String::from_utf8_lossy(request);
        let target = text.trim_start().split(' ').nth(1).unwrap_or("");
        if response.status == 400 && (target.contains("collect") || target.contains("exclude")) {
            seen.refused_filters += 1;
        }
        *seen.statuses.entry(response.status).or_default() += 1;
        parsed.push(response);
    }
    assert!(
        at.is_empty(),
        "{} bytes after the last response: {:?}",
        at.len(),
        String::from_utf8_lossy(&at[..at.len().min(200)])
    );
    if parsed.len() > 1 {
        seen.kept_alive += 1;
    }
}

/// Parses one response off the front of `at`.
fn parse_one(at: &mut &[u8], is_head: bool) -> Result<Parsed, String> {
    let end = at
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of head in {} bytes", at.len()))?;
    let head = std::str::from_utf8(&at[..end]).map_err(|e| format!("head not UTF-8: {e}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!("status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| format!("status line {status_line:?}"))?;
    let mut lengths = Vec::new();
    let mut connection = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(": ")
            .ok_or_else(|| format!("header line {line:?}"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(format!("header name {name:?}"));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(format!("header value {value:?}"));
        }
        if name.eq_ignore_ascii_case("content-length") {
            lengths.push(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("Content-Length {value:?}"))?,
            );
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("Transfer-Encoding in a response".into());
        }
        if name.eq_ignore_ascii_case("connection") {
            connection.push(value.to_ascii_lowercase());
        }
    }
    let [content_length] = lengths[..] else {
        return Err(format!("{} Content-Length headers", lengths.len()));
    };
    let close = match &connection[..] {
        [c] if c == "close" => true,
        [c] if c == "keep-alive" => false,
        other => return Err(format!("Connection headers {other:?}")),
    };
    let rest = &at[end + 4..];
    // A response to HEAD has no body on a kept-alive connection; a closing
    // one may carry it (nothing follows it anyway).
    let body = if is_head && (!close || rest.is_empty()) {
        0
    } else {
        content_length
    };
    if rest.len() < body {
        return Err(format!("body {} of {body} bytes", rest.len()));
    }
    *at = &rest[body..];
    Ok(Parsed {
        status,
        close,
        content_length,
        body,
    })
}

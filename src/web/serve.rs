//! The HTTP side: one thread, one poll loop, every connection nonblocking.
//!
//! Requests are parsed here (GET and HEAD only, no bodies) and answered from
//! the scrape cache; tiny_http builds and serializes the responses. tiny_http's
//! own server is not used: it reads each connection on a pool thread with no
//! timeouts, queues new connections behind stuck ones, drains unread request
//! bodies on the responding thread, and keeps a connection open after a
//! write failed, so a few slow or hostile clients could stop every scrape.
//! Here every connection has a deadline (a whole request head within
//! --web.read-timeout, a whole response within --web.write-timeout), the
//! number of connections is capped (the oldest idle one makes room for a new
//! one), a head larger than --web.max-header-bytes is refused, and a
//! connection that stops reading is closed instead of blocking anything.
//!
//! With `--web.config.file`, connections speak TLS through a rustls
//! `ServerConnection` driven by the same loop as a nonblocking state
//! machine: TLS bytes are read only when poll says the socket is readable
//! and written only when it says writable, so a slow or silent TLS client
//! holds nothing but its own connection, and its handshake is bounded by
//! the same read deadline as a request head. Basic auth (see `auth`) is
//! checked before anything else is answered.

use std::borrow::Cow;
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConnection;
use tiny_http::{HTTPVersion, Header, Method, Response, StatusCode};

use crate::config::ListenAddr;
use crate::cycle::cache::Cache;
use crate::cycle::exporter::Exporter;
use crate::export::render;
use crate::kernel::transport::Transport;
use crate::log::{self, Level};
use crate::web::auth::{BasicAuth, Lookup, Verdict, Verifier};
use crate::web::webconfig::WebConfig;

/// Binds the nonblocking listener, with TCP_NODELAY (inherited by accepted
/// connections): without it, Nagle against delayed ACKs caps a keep-alive
/// connection at about 25 responses a second.
pub fn bind(addr: &ListenAddr) -> io::Result<TcpListener> {
    let listener = match addr {
        ListenAddr::AnyHost(port) => {
            // [::] is dual-stack on Linux (unless net.ipv6.bindv6only=1);
            // hosts without IPv6 get 0.0.0.0.
            TcpListener::bind(SocketAddr::from(([0u16; 8], *port)))
                .or_else(|_| TcpListener::bind(SocketAddr::from(([0u8; 4], *port))))?
        }
        ListenAddr::Host(host, port) => {
            let candidates: Vec<SocketAddr> = (host.as_str(), *port).to_socket_addrs()?.collect();
            TcpListener::bind(&candidates[..])?
        }
    };
    let one: libc::c_int = 1;
    // SAFETY: a valid int option on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Set by SIGTERM or SIGINT; the serve loop polls it.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGTERM and SIGINT request a clean stop instead of killing us.
pub fn install_signal_handlers() -> io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; sigaction is given a fully initialised struct.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Serving settings and the limits every client is held to.
#[derive(Debug, Clone)]
pub struct Config {
    pub telemetry_path: String,
    pub cache_ttl: Duration,
    /// A whole request head must arrive within this; also the keep-alive
    /// idle time.
    pub read_timeout: Duration,
    /// A whole response must be taken within this.
    pub write_timeout: Duration,
    /// Open connections at most; the oldest one waiting for a request is
    /// closed to make room for a new one.
    pub max_connections: usize,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// TLS, basic auth and extra headers from --web.config.file.
    pub web: WebConfig,
}

/// How often the loop wakes at the latest, to check for a stop request.
const POLL: Duration = Duration::from_millis(200);

/// A request head, parsed.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    /// The path, without query string.
    pub path: String,
    pub version: HTTPVersion,
    pub headers: Vec<Header>,
}

impl Head {
    fn header(&self, name: &'static str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str())
    }

    /// Does the client want the connection kept open after the response?
    fn keep_alive(&self) -> bool {
        let connection = self.header("Connection").unwrap_or("");
        let has = |token: &str| {
            connection
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.version == HTTPVersion(1, 0) {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// Does the request carry a body (which we never read)?
    fn has_body(&self) -> bool {
        self.header("Transfer-Encoding").is_some()
            || self
                .header("Content-Length")
                .is_some_and(|v| v.trim() != "0")
    }
}

/// Why a request head was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Larger than the limit (431).
    TooLarge,
    /// Not HTTP/1.x as we understand it (400).
    Malformed(&'static str),
}

/// Parses the request head at the start of `buf`. Ok(None): incomplete.
/// On success also returns the head's length, so pipelined bytes after it
/// stay for the next request.
pub fn parse_head(buf: &[u8], max: usize) -> Result<Option<(Head, usize)>, HeadError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > max {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let len = end + 4;
    if len > max {
        return Err(HeadError::TooLarge);
    }
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| HeadError::Malformed("not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("bad request line"));
    };
    let version = match version {
        "HTTP/1.1" => HTTPVersion(1, 1),
        "HTTP/1.0" => HTTPVersion(1, 0),
        _ => return Err(HeadError::Malformed("unsupported HTTP version")),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(HeadError::Malformed("bad method"));
    }
    let method = Method::from_str(method).map_err(|_| HeadError::Malformed("bad method"))?;
    // Origin form (/path?query) or absolute form (http://host/path).
    let path = match target.find("://") {
        Some(at) => {
            let rest = &target[at + 3..];
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        None if target.starts_with('/') || target == "*" => target,
        None => return Err(HeadError::Malformed("bad request target")),
    };
    let path = path.split(['?', '#']).next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(HeadError::Malformed("bad header line"))?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(HeadError::Malformed("bad header name"));
        }
        let header = Header::from_bytes(name.as_bytes(), value.trim().as_bytes())
            .map_err(|_| HeadError::Malformed("bad header"))?;
        headers.push(header);
    }
    Ok(Some((
        Head {
            method,
            path,
            version,
            headers,
        },
        len,
    )))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

/// Does the Accept-Encoding header allow gzip? (`gzip` or `*`, q not 0)
pub fn accepts_gzip(request_headers: &[Header]) -> bool {
    request_headers
        .iter()
        .filter(|h| h.field.equiv("Accept-Encoding"))
        .flat_map(|h| h.value.as_str().split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    /// The TLS state machine, when serving TLS.
    tls: Option<Box<ServerConnection>>,
    /// Plaintext received and not yet answered.
    input: Vec<u8>,
    /// Plaintext response bytes; `written` of them are handed on (to the
    /// socket, or to rustls to encrypt).
    output: Vec<u8>,
    written: usize,
    /// Close once the output is written.
    close_after: bool,
    /// TLS: the close_notify alert is queued behind the last response.
    close_notify_sent: bool,
    /// Nothing has been read yet (to spot plain HTTP on a TLS port).
    fresh: bool,
    /// A request waiting for its bcrypt check (job id), answered when the
    /// verifier thread is done; the connection does nothing meanwhile.
    waiting: Option<(u64, Head)>,
    /// When this connection is closed unless it makes progress.
    deadline: Instant,
    /// When the connection was accepted, to pick the oldest for eviction.
    accepted: Instant,
}

impl Conn {
    /// Is anything waiting to go out (response bytes, or TLS records such
    /// as handshake messages and alerts)?
    fn writing(&self) -> bool {
        self.written < self.output.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
}

/// What became of a request.
enum Step {
    /// Answered; whether the connection stays open.
    Done(bool),
    /// Waiting for the bcrypt check with this id.
    Wait(u64),
}

/// The serving state: limits, cache and the exporter behind them.
struct Http<'a, T> {
    config: &'a Config,
    cache: Cache,
    exporter: &'a mut Exporter<T>,
    auth: Option<BasicAuth>,
    /// Runs bcrypt checks off this thread (with `auth`).
    verifier: Option<Verifier>,
    /// Headers from http_server_config.headers, on every response.
    extra_headers: Vec<Header>,
}

impl<T: Transport> Http<'_, T> {
    /// Answers `head` into `out` (Step::Done, with whether the connection
    /// stays open), or queues its bcrypt check (Step::Wait).
    fn respond(&mut self, head: &Head, out: &mut Vec<u8>) -> Step {
        let verdict = match &mut self.auth {
            None => Verdict::Allow,
            Some(auth) => match auth.lookup(head.header("Authorization")) {
                Lookup::Done(verdict) => verdict,
                Lookup::Bcrypt(job) => match &mut self.verifier {
                    Some(verifier) => match verifier.submit(job) {
                        Some(id) => return Step::Wait(id),
                        None => Verdict::Busy,
                    },
                    None => {
                        let allowed = job.run();
                        auth.record(job.key(), allowed)
                    }
                },
            },
        };
        Step::Done(self.answer(head, verdict, out))
    }

    /// Records a finished bcrypt check; its verdict.
    fn checked(&mut self, key: [u8; 32], allowed: bool) -> Verdict {
        let Some(auth) = self.auth.as_mut() else {
            return Verdict::Deny;
        };
        let verdict = auth.record(key, allowed);
        let (good, bad) = auth.cached();
        log::log(
            Level::Debug,
            "basic auth checked with bcrypt (not cached)",
            &[
                ("allowed", &allowed),
                ("cached_good", &good),
                ("cached_bad", &bad),
            ],
        );
        verdict
    }

    /// Appends the response to `head`, given the auth verdict, to `out`;
    /// returns whether the connection stays open.
    fn answer(&mut self, head: &Head, verdict: Verdict, out: &mut Vec<u8>) -> bool {
        let keep_alive = head.keep_alive() && !head.has_body();
        let readable = matches!(head.method, Method::Get | Method::Head);
        let is_metrics = head.path == self.config.telemetry_path;
        let text = "text/plain; charset=utf-8";
        let (status, mut headers, body): (u16, Vec<Header>, Cow<[u8]>) = if verdict == Verdict::Busy
        {
            (
                503,
                vec![header("Content-Type", text), header("Retry-After", "1")],
                Cow::Borrowed(b"503 too many password checks queued, try again\n"),
            )
        } else if verdict != Verdict::Allow {
            // Every path needs credentials, as with exporter-toolkit.
            (
                401,
                vec![
                    header("Content-Type", text),
                    header("WWW-Authenticate", "Basic"),
                ],
                Cow::Borrowed(b"401 Unauthorized\n"),
            )
        } else if head.has_body() {
            (
                413,
                vec![header("Content-Type", text)],
                Cow::Borrowed(b"413 request bodies are not accepted\n"),
            )
        } else if !is_metrics && head.path != "/" {
            (
                404,
                vec![header("Content-Type", text)],
                Cow::Borrowed(b"404 page not found\n"),
            )
        } else if !readable {
            (
                405,
                vec![header("Content-Type", text), header("Allow", "GET, HEAD")],
                Cow::Borrowed(b"405 method not allowed\n"),
            )
        } else {
            let freshness = self.cache.freshness();
            let exporter = &mut *self.exporter;
            let entry = self.cache.get(Instant::now(), || exporter.refresh());
            if is_metrics {
                let mut headers = vec![
                    header("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                    header("Vary", "Accept-Encoding"),
                ];
                let body = if accepts_gzip(&head.headers) {
                    headers.push(header("Content-Encoding", "gzip"));
                    Cow::Borrowed(entry.gzip())
                } else {
                    Cow::Borrowed(entry.snapshot.text.as_bytes())
                };
                (200, headers, body)
            } else {
                let page = render::landing_page(
                    &self.config.telemetry_path,
                    &freshness,
                    &entry.snapshot.summary,
                );
                (
                    200,
                    vec![header("Content-Type", "text/html; charset=utf-8")],
                    Cow::Owned(page.into_bytes()),
                )
            }
        };
        headers.extend(self.extra_headers.iter().cloned());
        let head_only = head.method == Method::Head;
        let version = head.version.clone();
        write_response(out, status, headers, &body, version, head_only, keep_alive);
        keep_alive
    }
}

/// Serializes a response with tiny_http into `out`, plus a `Connection`
/// header (tiny_http drops those from responses, since its server manages
/// connections itself; ours does).
fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: Vec<Header>,
    body: &[u8],
    version: HTTPVersion,
    head_only: bool,
    keep_alive: bool,
) {
    let start = out.len();
    let response = Response::new(StatusCode(status), headers, body, Some(body.len()), None);
    response
        .raw_print(&mut *out, version, &[], head_only, None)
        .expect("writing to memory cannot fail");
    let connection: &[u8] = if keep_alive {
        b"Connection: keep-alive\r\n"
    } else {
        b"Connection: close\r\n"
    };
    let status_line_end = out[start..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(out.len(), |at| start + at + 2);
    out.splice(status_line_end..status_line_end, connection.iter().copied());
}

/// An error answer for a head we could not parse; the connection closes.
fn refuse(out: &mut Vec<u8>, error: &HeadError) {
    let (status, message) = match error {
        HeadError::TooLarge => (431, "431 request header fields too large\n".to_string()),
        HeadError::Malformed(why) => (400, format!("400 bad request: {why}\n")),
    };
    let headers = vec![header("Content-Type", "text/plain; charset=utf-8")];
    let body = message.as_bytes();
    write_response(out, status, headers, body, HTTPVersion(1, 1), false, false);
}

/// What Go's net/http answers when plain HTTP reaches a TLS port.
const PLAIN_HTTP_ON_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Serves until SIGTERM/SIGINT.
pub fn serve<T: Transport>(
    listener: TcpListener,
    config: &Config,
    exporter: &mut Exporter<T>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let address = listener.local_addr()?;
    let users = config.web.users.as_ref().map_or(0, |u| u.len());
    log::log(
        Level::Info,
        "listening",
        &[
            ("address", &address),
            ("telemetry_path", &config.telemetry_path),
            ("tls", &config.web.tls.is_some()),
            ("basic_auth_users", &users),
        ],
    );
    let mut http = Http {
        config,
        cache: Cache::new(config.cache_ttl),
        exporter,
        auth: config.web.users.clone().map(BasicAuth::new),
        verifier: match config.web.users {
            Some(_) => Some(Verifier::start()?),
            None => None,
        },
        extra_headers: config
            .web
            .headers
            .iter()
            .map(|(name, value)| header(name, value))
            .collect(),
    };
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while !stop_requested() {
        let now = Instant::now();
        let wait = conns
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .fold(POLL, Duration::min);
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // The verifier's wake-up (or -1, which poll skips).
        fds.push(libc::pollfd {
            fd: http.verifier.as_ref().map_or(-1, Verifier::wake_fd),
            events: libc::POLLIN,
            revents: 0,
        });
        for conn in &conns {
            let events = if conn.waiting.is_some() {
                0 // only errors and hang-ups
            } else if conn.writing() {
                libc::POLLOUT
            } else {
                libc::POLLIN
            };
            fds.push(libc::pollfd {
                fd: conn.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        let timeout = wait.as_millis().clamp(1, POLL.as_millis()) as libc::c_int;
        // SAFETY: fds is a valid array of pollfd for the call's duration.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        // Finished password checks, then connections (indices match
        // fds[2..]), then new ones.
        if fds[1].revents != 0 {
            answer_checked(&mut conns, &mut http);
        }
        let mut closed = vec![false; conns.len()];
        for (i, conn) in conns.iter_mut().enumerate() {
            let revents = fds[i + 2].revents;
            if revents == 0 {
                continue;
            }
            closed[i] = !service(conn, revents, &mut http, &mut chunk);
        }
        let now = Instant::now();
        // A password check that did not finish in time gets 503, not silence.
        for conn in conns.iter_mut().filter(|c| c.deadline <= now) {
            if let Some((_, head)) = conn.waiting.take() {
                let keep = http.answer(&head, Verdict::Busy, &mut conn.output);
                queued_response(conn, keep, config);
            }
        }
        let mut i = 0;
        conns.retain(|c| {
            let keep = !closed[i] && c.deadline > now;
            i += 1;
            keep
        });
        if fds[0].revents != 0 {
            accept_all(&listener, &mut conns, config);
        }
    }
    log::log(Level::Info, "stopping on signal", &[]);
    Ok(())
}

/// Answers the requests whose bcrypt checks have finished.
fn answer_checked<T: Transport>(conns: &mut [Conn], http: &mut Http<'_, T>) {
    let finished = match http.verifier.as_mut() {
        Some(verifier) => verifier.finished(),
        None => return,
    };
    for (id, key, allowed) in finished {
        let verdict = http.checked(key, allowed);
        // The connection may have gone (deadline, eviction): the verdict is
        // remembered all the same.
        let Some(conn) = conns
            .iter_mut()
            .find(|c| c.waiting.as_ref().is_some_and(|(w, _)| *w == id))
        else {
            continue;
        };
        let (_, head) = conn.waiting.take().expect("just matched");
        let keep = http.answer(&head, verdict, &mut conn.output);
        queued_response(conn, keep, http.config);
    }
}

/// Which connection makes room for a new one at the cap: the oldest one
/// that is not writing (waiting for a request); and only when every slot is
/// writing, the writer nearest its deadline (the one making the least
/// progress), so stuck readers can never lock scrapes out.
fn eviction_victim(conns: &[Conn]) -> Option<usize> {
    conns
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.writing())
        .min_by_key(|(_, c)| c.accepted)
        .or_else(|| conns.iter().enumerate().min_by_key(|(_, c)| c.deadline))
        .map(|(i, _)| i)
}

/// Accepts pending connections, making room under the cap with
/// [`eviction_victim`]: at most half the cap per loop turn, so that a
/// connection accepted now is read (on the next turn, before any further
/// accepts) before a flood of new ones could make it the oldest and evict
/// it unread. Without this bound, a burst of reconnecting slow clients in
/// the backlog evicted a scrape whose request had already arrived.
fn accept_all(listener: &TcpListener, conns: &mut Vec<Conn>, config: &Config) {
    for _ in 0..(config.max_connections / 2).max(1) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and friends: leave the rest queued in the kernel.
                log::log(Level::Warn, "accepting a connection failed", &[("err", &e)]);
                return;
            }
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let tls = match &config.web.tls {
            Some(tls) => match ServerConnection::new(Arc::clone(tls)) {
                Ok(conn) => Some(Box::new(conn)),
                Err(e) => {
                    log::log(Level::Warn, "cannot start a TLS connection", &[("err", &e)]);
                    continue;
                }
            },
            None => None,
        };
        if conns.len() >= config.max_connections.max(1) {
            if let Some(i) = eviction_victim(conns) {
                conns.swap_remove(i);
            }
        }
        let now = Instant::now();
        conns.push(Conn {
            stream,
            tls,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            close_after: false,
            close_notify_sent: false,
            fresh: true,
            waiting: None,
            deadline: now + config.read_timeout,
            accepted: now,
        });
    }
}

/// Hands pending output on until done (Ok(true)) or the socket is full
/// (Ok(false)). With TLS, plaintext goes through rustls, and the
/// close_notify alert follows the last response of a closing connection.
fn flush(conn: &mut Conn) -> io::Result<bool> {
    let Some(tls) = conn.tls.as_mut() else {
        while conn.written < conn.output.len() {
            match conn.stream.write(&conn.output[conn.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(true);
    };
    loop {
        if conn.written < conn.output.len() {
            // rustls takes what fits under its buffer limit.
            conn.written += tls.writer().write(&conn.output[conn.written..])?;
        }
        let all_taken = conn.written == conn.output.len();
        if all_taken && conn.close_after && !conn.close_notify_sent {
            tls.send_close_notify();
            conn.close_notify_sent = true;
        }
        if !tls.wants_write() {
            if all_taken {
                return Ok(true);
            }
            // Nothing to send yet rustls took nothing: wait (bounded by the
            // deadline) rather than spin.
            return Ok(false);
        }
        match tls.write_tls(&mut conn.stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads what the socket has into `conn.input` (decrypted, with TLS).
/// Ok(false): the peer closed, or the connection is unusable.
fn receive(conn: &mut Conn, chunk: &mut [u8]) -> io::Result<bool> {
    let Some(tls) = conn.tls.as_mut() else {
        return match conn.stream.read(chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                conn.input.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
        };
    };
    if std::mem::take(&mut conn.fresh) {
        // Plain HTTP on the TLS port: say so (as Go does) instead of
        // failing the handshake silently. A TLS handshake record starts
        // with 0x16; a request line starts with a letter.
        let mut first = [0u8; 1];
        if let Ok(1) = conn.stream.peek(&mut first) {
            if first[0].is_ascii_alphabetic() {
                // Read what was sent (a bounded amount), so closing sends a
                // FIN, not a reset that could destroy the answer in flight.
                for _ in 0..4 {
                    if !matches!(conn.stream.read(chunk), Ok(n) if n > 0) {
                        break;
                    }
                }
                conn.tls = None;
                conn.output.clear();
                conn.output.extend_from_slice(PLAIN_HTTP_ON_TLS);
                conn.written = 0;
                conn.close_after = true;
                return Ok(true);
            }
        }
    }
    match tls.read_tls(&mut conn.stream) {
        Ok(0) => return Ok(false),
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            return Ok(true)
        }
        Err(e) => return Err(e),
    }
    if let Err(e) = tls.process_new_packets() {
        // Tell the client why (the alert is queued), best effort, then close.
        let _ = tls.write_tls(&mut conn.stream);
        return Err(io::Error::other(e));
    }
    loop {
        match tls.reader().read(chunk) {
            // close_notify: the client will send nothing more.
            Ok(0) => return Ok(false),
            Ok(n) => conn.input.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Handles readiness on one connection; false means close it.
fn service<T: Transport>(
    conn: &mut Conn,
    revents: libc::c_short,
    http: &mut Http<'_, T>,
    chunk: &mut [u8],
) -> bool {
    if conn.waiting.is_some() {
        // Polled for errors only: the client hung up.
        return revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) == 0;
    }
    if conn.writing() {
        if revents & (libc::POLLERR | libc::POLLHUP) != 0 && revents & libc::POLLOUT == 0 {
            return false;
        }
        let responded = !conn.output.is_empty();
        match flush(conn) {
            Ok(true) => {}
            Ok(false) => return true,
            Err(_) => return false,
        }
        if conn.close_after {
            return false;
        }
        if responded {
            conn.output.clear();
            conn.written = 0;
            // Idle keep-alive time. (TLS handshake messages alone do not
            // extend the deadline: the handshake counts as reading.)
            conn.deadline = Instant::now() + http.config.read_timeout;
        }
        // A pipelined request may already be buffered.
        return process(conn, http);
    }
    match receive(conn, chunk) {
        Ok(true) => {}
        Ok(false) => return false,
        Err(e) => {
            log::log(
                Level::Debug,
                "connection failed",
                &[("tls", &conn.tls.is_some()), ("err", &e)],
            );
            return false;
        }
    }
    if conn.writing() {
        // TLS handshake messages, or the plain-HTTP-on-TLS answer.
        return true;
    }
    process(conn, http)
}

/// A response is in `conn.output`: arrange its writing and what follows.
fn queued_response(conn: &mut Conn, keep: bool, config: &Config) {
    conn.close_after = !keep;
    if !keep {
        conn.input.clear();
    }
    conn.deadline = Instant::now() + config.write_timeout;
}

/// Answers the buffered request, if a whole head is there.
fn process<T: Transport>(conn: &mut Conn, http: &mut Http<'_, T>) -> bool {
    let max = http.config.max_header_bytes;
    match parse_head(&conn.input, max) {
        Ok(None) => true,
        Ok(Some((head, len))) => {
            conn.input.drain(..len);
            match http.respond(&head, &mut conn.output) {
                Step::Done(keep) => queued_response(conn, keep, http.config),
                Step::Wait(id) => {
                    conn.waiting = Some((id, head));
                    // The check, like the answer, must be done in time.
                    conn.deadline = Instant::now() + http.config.write_timeout;
                }
            }
            true
        }
        Err(error) => {
            refuse(&mut conn.output, &error);
            conn.input.clear();
            conn.close_after = true;
            conn.deadline = Instant::now() + http.config.write_timeout;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        let h = |v: &str| vec![header("Accept-Encoding", v)];
        assert!(accepts_gzip(&h("gzip")));
        assert!(accepts_gzip(&h("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(&h("*")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("identity")));
        assert!(!accepts_gzip(&[]));
    }

    #[test]
    fn binds_with_nodelay() {
        let addr = ListenAddr::Host("127.0.0.1".into(), 0);
        let listener = bind(&addr).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let (accepted, _) = listener.accept().unwrap();
        // Inherited by accepted connections.
        assert!(accepted.nodelay().unwrap());
        drop(client);
    }

    fn head(text: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse_head(text.as_bytes(), 1024)
    }

    #[test]
    fn parses_request_heads() {
        let text = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\nGET";
        let (h, len) = head(text).unwrap().unwrap();
        assert_eq!(
            (h.method.clone(), h.path.as_str()),
            (Method::Get, "/metrics")
        );
        assert_eq!(len, text.len() - 3, "pipelined bytes stay");
        assert!(h.keep_alive() && !h.has_body() && accepts_gzip(&h.headers));
        let (h, _) = head("HEAD http://x:1/m HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.method.clone(), h.path.as_str()), (Method::Head, "/m"));
        assert!(!h.keep_alive(), "HTTP/1.0 closes by default");
        let (h, _) = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive());
        let (h, _) = head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive());
        let (h, _) = head("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.has_body());
        let (h, _) = head("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.has_body());
        let (h, _) = head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.has_body());
        assert!(
            head("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none(),
            "incomplete"
        );
    }

    #[test]
    fn refuses_bad_and_oversized_heads() {
        for bad in [
            "GET /\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "G3T / HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
        ] {
            assert!(matches!(head(bad), Err(HeadError::Malformed(_))), "{bad:?}");
        }
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(head(&big).unwrap_err(), HeadError::TooLarge);
        assert_eq!(
            parse_head(&[b'a'; 1025], 1024).unwrap_err(),
            HeadError::TooLarge
        );
        assert!(parse_head(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n'], 1024).is_err());
    }
}

//! One client connection as a nonblocking state machine: accepting it
//! (and evicting at the cap), reading a request head within
//! --web.read-timeout, writing the whole response within
//! --web.write-timeout, keep-alive and pipelining, and TLS.
//!
//! Every connection has a deadline, the number of connections is capped
//! (the oldest idle one makes room for a new one), a head larger than
//! --web.max-header-bytes is refused, and a connection that stops reading
//! is closed instead of blocking anything. With `--web.config.file`,
//! connections speak TLS through a rustls `ServerConnection`: TLS bytes are
//! read only when poll says the socket is readable and written only when it
//! says writable, so a slow or silent TLS client holds nothing but its own
//! connection, and its handshake is bounded by the same read deadline as a
//! request head. The protocol (which bytes make a request, which response
//! goes out, what waits) is `session`'s; this module moves bytes and keeps
//! time.

use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConnection;

use crate::log::{self, Level};
use crate::web::respond::{Config, Http};
use crate::web::session::{Progress, Session, Wait};

/// The deadline of a scrape waiting for a collection: none of its own (the
/// collection has its deadline, --collector.timeout per dump, and the
/// answer then gets --web.write-timeout); a client that hangs up meanwhile
/// is noticed (its socket is polled for errors) and closed.
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// One client connection.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    /// The TLS state machine, when serving TLS.
    pub(super) tls: Option<Box<ServerConnection>>,
    /// The HTTP protocol: requests in, responses out.
    pub(super) session: Session,
    /// TLS: the close_notify alert is queued behind the last response.
    pub(super) close_notify_sent: bool,
    /// Nothing has been read yet (to spot plain HTTP on a TLS port).
    pub(super) fresh: bool,
    /// When this connection is closed unless it makes progress.
    pub(super) deadline: Instant,
    /// When the connection was accepted, to pick the oldest for eviction.
    pub(super) accepted: Instant,
    /// When its last response was handed on, while idle since (eviction).
    pub(super) idle_since: Option<Instant>,
    /// How long its client paused before its last request (eviction).
    pub(super) last_gap: Option<Duration>,
    /// When the response being written was queued, or bytes of it last
    /// went out (eviction: a writer that makes no progress is stuck).
    pub(super) writing_since: Option<Instant>,
}

impl Conn {
    /// Is anything waiting to go out (response bytes, or TLS records such
    /// as handshake messages and alerts)?
    pub(super) fn writing(&self) -> bool {
        self.session.responding() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Is a request waiting (for a bcrypt check or a collection)?
    pub(super) fn waiting(&self) -> bool {
        self.session.waiting().is_some()
    }
}

/// What Go's net/http answers when plain HTTP reaches a TLS port.
const PLAIN_HTTP_ON_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// What eviction looks at in a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Standing {
    /// Answering a request (writing it, or waiting for a check or a
    /// collection), or closing.
    pub(super) busy: bool,
    /// Writing a response (and not waiting).
    pub(super) writing: bool,
    /// The client has sent bytes we have not read yet (a request on its
    /// way).
    pub(super) unread: bool,
    /// Responses fully handed on.
    pub(super) served: u64,
    /// Part of a request head is buffered.
    pub(super) partial: bool,
    pub(super) accepted: Instant,
    /// How long the client paused between an answer and its next request:
    /// for a request unread, at most the time since the answer; else the
    /// last request's. None before a second request.
    pub(super) pause: Option<Duration>,
    /// When its last response was handed on, if it is idle since.
    pub(super) idle_since: Option<Instant>,
    /// When the response it is writing was queued, or bytes of it last
    /// went out.
    pub(super) writing_since: Option<Instant>,
    pub(super) deadline: Instant,
}

impl Conn {
    fn standing(&self, turn: Instant) -> Standing {
        let unread = self.unread();
        let pause = match self.idle_since {
            Some(since) if unread => Some(turn.saturating_duration_since(since)),
            _ => self.last_gap,
        };
        Standing {
            busy: self.waiting() || self.writing() || self.session.closing(),
            writing: self.writing() && !self.waiting(),
            unread,
            served: self.session.served(),
            partial: self.session.buffered() > 0,
            accepted: self.accepted,
            pause,
            idle_since: self.idle_since,
            writing_since: self.writing_since,
            deadline: self.deadline,
        }
    }

    /// Has the client sent bytes we have not read yet? FIONREAD on the
    /// socket; an error counts as no.
    fn unread(&self) -> bool {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int; the fd is open.
        let rc = unsafe { libc::ioctl(self.stream.as_raw_fd(), libc::FIONREAD, &mut n) };
        rc == 0 && n > 0
    }
}

/// A client that waits at least this long between an answer and its next
/// request is polling (Prometheus waits its scrape interval, a second or
/// more), not hammering; a connection younger than this that has sent
/// nothing yet, one that has written its response for less than this, and
/// one idle for less than this are not stuck, slow or idle yet.
pub(super) const POLITE_GAP: Duration = Duration::from_millis(100);

/// After this long with new connections waiting and none admitted, idle
/// keep-alive connections may make room too. Longer than a collection
/// usually takes (every scrape waiting for one is busy, so a short wait is
/// normal then), short enough that idle connections cannot keep a new
/// client out for long.
pub(super) const STARVING: Duration = Duration::from_secs(1);

/// The fair eviction order at the cap: the connections that may make room
/// for a new one, best victim first.
///
/// 1. Slow or silent clients: no whole request, nothing unread, open for
///    [`POLITE_GAP`] or more; the longest-open first. Slow-header floods
///    go before anyone with a request.
/// 2. Hammering clients: keep-alive connections whose client sent its
///    latest request less than POLITE_GAP after the answer before (or has
///    just done so: unread); the shortest pause first. They lose their
///    connection, or that one request.
/// 3. Stuck readers: connections writing a response that have handed
///    nothing on for POLITE_GAP or more, the one nearest its write deadline
///    first.
/// 4. When new connections have `waited` POLITE_GAP or more with none
///    admitted: the other writers (still making progress), nearest the
///    write deadline first.
/// 5. When they have waited [`STARVING`] or more: idle keep-alive connections (idle for
///    POLITE_GAP or more, nothing unread) of clients served once or
///    polling (pausing POLITE_GAP or more between requests), the longest
///    idle first. So idle connections cannot lock new clients out, and a
///    scraper keeps its connection while other clients keep the slots
///    turning over.
///
/// Never listed: a connection waiting for a password check or a collection,
/// one whose first request has arrived (read, or unread in the kernel) or
/// is being answered, one accepted less than POLITE_GAP ago, and a polling
/// client's whose next request has arrived. When the list is empty no
/// connection is accepted: new ones wait in the kernel's accept queue until
/// a connection closes or can make room. So a new client always gets in
/// (the slots turn over as hammering clients show their pace), and the
/// connections that get closed are those of clients that take the most.
pub(super) fn eviction_order(conns: &[Standing], turn: Instant, waited: Duration) -> Vec<usize> {
    let mut order = Vec::new();
    let mut tier = |keep: &dyn Fn(&Standing) -> bool, key: &dyn Fn(&Standing) -> Duration| {
        let mut picked: Vec<usize> = (0..conns.len()).filter(|&i| keep(&conns[i])).collect();
        // Stable: ties keep their order.
        picked.sort_by_key(|&i| key(&conns[i]));
        order.extend(picked);
    };
    let since = |t: Instant| turn.saturating_duration_since(t);
    let free = |c: &Standing| !c.busy && since(c.accepted) >= POLITE_GAP;
    let longest_first = |d: Duration| Duration::MAX - d;
    tier(
        &|c| free(c) && !c.unread && (c.served == 0 || c.partial),
        &|c| longest_first(since(c.accepted)),
    );
    tier(
        &|c| {
            !c.busy
                && c.served > 0
                && (!c.partial || c.unread)
                && c.pause.is_some_and(|p| p < POLITE_GAP)
        },
        &|c| c.pause.unwrap_or_default(),
    );
    tier(
        &|c| c.writing && c.writing_since.is_some_and(|t| since(t) >= POLITE_GAP),
        &|c| c.deadline.saturating_duration_since(turn),
    );
    if waited < POLITE_GAP {
        return order;
    }
    tier(
        &|c| c.writing && c.writing_since.is_some_and(|t| since(t) < POLITE_GAP),
        &|c| c.deadline.saturating_duration_since(turn),
    );
    if waited < STARVING {
        return order;
    }
    tier(
        &|c| {
            free(c)
                && c.served > 0
                && !c.partial
                && !c.unread
                && c.pause.is_none_or_polite()
                && c.idle_since.is_some_and(|t| since(t) >= POLITE_GAP)
        },
        &|c| longest_first(c.idle_since.map_or(Duration::ZERO, since)),
    );
    order
}

/// A pause that is unknown (one request so far) or polite.
trait Polite {
    fn is_none_or_polite(&self) -> bool;
}

impl Polite for Option<Duration> {
    fn is_none_or_polite(&self) -> bool {
        self.map_or(true, |p| p >= POLITE_GAP)
    }
}

/// Accepts pending connections, at most half the cap per loop turn, making
/// room under the cap by [`eviction_order`]. Returns how many it admitted,
/// and whether it stopped with connections possibly still queued because
/// none could make room for them (they stay in the accept queue; the
/// caller stops polling the listener for a while).
pub(super) fn accept_all(
    listener: &TcpListener,
    conns: &mut Vec<Conn>,
    config: &Config,
    waited: Duration,
) -> (usize, bool) {
    let turn = Instant::now();
    // Taken once per turn (FIONREAD on every connection), when first needed,
    // and kept in step with `conns`.
    let mut standings: Option<Vec<Standing>> = None;
    let mut admitted = 0;
    for _ in 0..(config.max_connections / 2).max(1) {
        let mut victim = None;
        if conns.len() >= config.max_connections.max(1) {
            let standing =
                standings.get_or_insert_with(|| conns.iter().map(|c| c.standing(turn)).collect());
            match eviction_order(standing, turn, waited).first() {
                Some(&i) => victim = Some(i),
                None => return (admitted, true),
            }
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (admitted, false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and friends: leave the rest queued in the kernel.
                log::log(Level::Warn, "accepting a connection failed", &[("err", &e)]);
                return (admitted, false);
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
        if let Some(i) = victim {
            conns.swap_remove(i);
            if let Some(standing) = standings.as_mut() {
                standing.swap_remove(i);
            }
        }
        let now = Instant::now();
        let conn = Conn {
            stream,
            tls,
            session: Session::new(),
            close_notify_sent: false,
            fresh: true,
            deadline: now + config.read_timeout,
            accepted: now,
            idle_since: None,
            last_gap: None,
            writing_since: None,
        };
        if let Some(standing) = standings.as_mut() {
            standing.push(conn.standing(turn));
        }
        conns.push(conn);
        admitted += 1;
    }
    (admitted, false)
}

/// Hands pending output on until done (Ok(true)) or the socket is full
/// (Ok(false)). With TLS, plaintext goes through rustls, and the
/// close_notify alert follows the last response of a closing connection.
fn flush(conn: &mut Conn) -> io::Result<bool> {
    if conn.session.broken() {
        return Err(io::Error::other("the response body could not be made"));
    }
    let Some(tls) = conn.tls.as_mut() else {
        loop {
            let [head, body] = conn.session.pending();
            if head.is_empty() && body.is_empty() {
                return Ok(true);
            }
            // The per-request head and the shared body in one call.
            match conn
                .stream
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    conn.session.wrote(n);
                    conn.writing_since = Some(Instant::now());
                    if conn.session.broken() {
                        return Err(io::Error::other("the response body could not be made"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    };
    loop {
        let [head, body] = conn.session.pending();
        let chunk = if head.is_empty() { body } else { head };
        if !chunk.is_empty() {
            // rustls takes what fits under its buffer limit.
            let n = tls.writer().write(chunk)?;
            conn.session.wrote(n);
            if conn.session.broken() {
                return Err(io::Error::other("the response body could not be made"));
            }
        }
        let all_taken = !conn.session.responding();
        if all_taken && conn.session.closing() && !conn.close_notify_sent {
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
            Ok(_) => conn.writing_since = Some(Instant::now()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads what the socket has into the session (decrypted, with TLS).
/// Ok(false): the peer closed, or the connection is unusable.
fn receive(conn: &mut Conn, chunk: &mut [u8]) -> io::Result<bool> {
    let Some(tls) = conn.tls.as_mut() else {
        return match conn.stream.read(chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                conn.session.received(&chunk[..n]);
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
                conn.session.answer_and_close(PLAIN_HTTP_ON_TLS);
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
            Ok(n) => conn.session.received(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Handles readiness on one connection; false means close it.
pub(super) fn service(
    conn: &mut Conn,
    revents: libc::c_short,
    http: &mut Http<'_>,
    chunk: &mut [u8],
) -> bool {
    if conn.waiting() {
        // Polled for errors only: the client hung up.
        return revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) == 0;
    }
    if conn.writing() {
        if revents & (libc::POLLERR | libc::POLLHUP) != 0 && revents & libc::POLLOUT == 0 {
            return false;
        }
        let served = conn.session.served();
        match flush(conn) {
            Ok(true) => {}
            Ok(false) => return true,
            Err(_) => return false,
        }
        if conn.session.closing() {
            return false;
        }
        if conn.session.served() > served {
            // Idle keep-alive time. (TLS handshake messages alone do not
            // extend the deadline: the handshake counts as reading.)
            let now = Instant::now();
            conn.deadline = now + http.config.read_timeout;
            conn.idle_since = Some(now);
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

/// A response is queued: it must be taken within the write timeout.
pub(super) fn queued_response(conn: &mut Conn, config: &Config) {
    let now = Instant::now();
    conn.deadline = now + config.write_timeout;
    conn.writing_since = Some(now);
}

/// Answers the buffered request, if a whole head is there.
fn process(conn: &mut Conn, http: &mut Http<'_>) -> bool {
    let progress = conn.session.process(http);
    if matches!(progress, Progress::Respond | Progress::Wait) {
        if let Some(since) = conn.idle_since.take() {
            conn.last_gap = Some(since.elapsed());
        }
    }
    match progress {
        Progress::Respond => queued_response(conn, http.config),
        Progress::Wait => {
            conn.deadline = Instant::now()
                + match conn.session.waiting() {
                    // The check, like the answer, must be done in time.
                    Some(Wait::Check(..)) => http.config.write_timeout,
                    _ => NO_DEADLINE,
                };
        }
        Progress::NeedMore | Progress::Busy => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(turn: Instant, age_ms: u64) -> Standing {
        Standing {
            busy: false,
            writing: false,
            unread: false,
            served: 0,
            partial: false,
            accepted: turn - Duration::from_millis(age_ms),
            pause: None,
            idle_since: None,
            writing_since: None,
            deadline: turn + Duration::from_secs(5),
        }
    }

    #[test]
    fn eviction_spares_requests_and_polling_clients() {
        let turn = Instant::now();
        let ms = Duration::from_millis;
        let slow = conn(turn, 3000);
        let slower = conn(turn, 4000);
        let first_request = Standing {
            unread: true,
            ..conn(turn, 3000)
        };
        let hammer = |pause_us: u64, unread: bool| Standing {
            served: 20,
            unread,
            pause: Some(Duration::from_micros(pause_us)),
            idle_since: Some(turn - ms(1)),
            ..conn(turn, 2000)
        };
        let writer = |for_ms: u64| Standing {
            busy: true,
            writing: true,
            served: 1,
            writing_since: Some(turn - ms(for_ms)),
            deadline: turn + ms(3000 - for_ms),
            ..conn(turn, 20_000)
        };
        let waiting = Standing {
            busy: true,
            ..conn(turn, 2000)
        };
        let once = |idle_ms: u64| Standing {
            served: 1,
            idle_since: Some(turn - ms(idle_ms)),
            ..conn(turn, 20_000)
        };
        let scraper = |idle_ms: u64, unread: bool| Standing {
            served: 30,
            unread,
            pause: Some(ms(1000)),
            idle_since: Some(turn - ms(idle_ms)),
            ..conn(turn, 30_000)
        };
        let conns = [
            scraper(500, false), // 0
            once(300),           // 1
            conn(turn, 10),      // 2: young, nothing sent yet
            writer(2000),        // 3
            hammer(50, true),    // 4
            hammer(50, false),   // 5
            hammer(10, true),    // 6
            slow,                // 7
            slower,              // 8
            first_request,       // 9
            waiting,             // 10
            scraper(1000, true), // 11: its next request has arrived
            writer(10),          // 12: a response just queued
            once(10),            // 13: just served
            writer(200),         // 14
        ];
        assert_eq!(
            eviction_order(&conns, turn, STARVING),
            [8, 7, 6, 4, 5, 3, 14, 12, 0, 1],
            "slow clients, hammering ones, stuck writers, (starving:) other writers, then idle \
             ones, the scraper last"
        );
        // Nothing can make room: the new connection waits.
        let busy = [
            first_request,
            waiting,
            scraper(1000, true),
            writer(10),
            once(10),
        ];
        assert!(eviction_order(&busy, turn, Duration::ZERO).is_empty());
        // After new connections have waited, a writer making progress goes
        // too; idle ones only after STARVING.
        assert_eq!(eviction_order(&busy, turn, POLITE_GAP), [3]);
        assert_eq!(eviction_order(&busy, turn, STARVING), [3]);
        // Idle connections go only when new ones starve.
        assert_eq!(
            eviction_order(&conns, turn, Duration::ZERO),
            [8, 7, 6, 4, 5, 3, 14]
        );
        assert_eq!(
            eviction_order(&conns, turn, POLITE_GAP),
            [8, 7, 6, 4, 5, 3, 14, 12]
        );
    }
}

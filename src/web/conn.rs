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
pub(super) fn accept_all(listener: &TcpListener, conns: &mut Vec<Conn>, config: &Config) {
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
            session: Session::new(),
            close_notify_sent: false,
            fresh: true,
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
            Ok(_) => {}
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

/// A response is queued: it must be taken within the write timeout.
pub(super) fn queued_response(conn: &mut Conn, config: &Config) {
    conn.deadline = Instant::now() + config.write_timeout;
}

/// Answers the buffered request, if a whole head is there.
fn process(conn: &mut Conn, http: &mut Http<'_>) -> bool {
    match conn.session.process(http) {
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

//! The HTTP side's entry points and its one thread: binding the listener,
//! SIGTERM/SIGINT, and the poll loop that drives every connection.
//!
//! One thread, one poll loop, every connection nonblocking: a few slow or
//! hostile clients cannot stop every scrape (tiny_http's own server, which
//! reads each connection on a pool thread with no timeouts, is not used).
//! The loop owns only the scheduling: what each connection waits for, when
//! the loop wakes (the nearest deadline, or `POLL` to notice a stop
//! request), finished bcrypt checks, finished collections (which run on the
//! collection thread, `cycle::collector_thread`, and are answered to every
//! scrape that waited for them), expired deadlines and new connections.
//! What a connection does when it is ready is `conn`'s; how a request is
//! parsed and answered is `request`'s and `respond`'s.

use std::error::Error;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ListenAddr;
use crate::cycle::collector_thread::{Collections, Died};
use crate::cycle::exporter::Exporter;
use crate::kernel::transport::Transport;
use crate::log::{self, Level};
use crate::web::auth::Verifier;
use crate::web::conn::{accept_all, queued_response, service, Conn};
use crate::web::respond::{Config, Http};
use crate::web::session::Wait;

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
    // A longer accept queue than std's 128: with more clients reconnecting
    // than the cap admits, a full queue drops SYNs, and a scraper's new
    // connection then waits a whole second for the SYN retransmit. (listen
    // again on a listening socket only changes the backlog; the kernel caps
    // it at net.core.somaxconn.)
    // SAFETY: listen(2) on the open, bound socket.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The listen backlog asked for (see [`bind`]).
const BACKLOG: libc::c_int = 1024;

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

/// How long new connections wait in the accept queue, at the cap with no
/// connection able to make room, before the loop looks again (sooner if a
/// connection closes).
const ADMIT_RETRY: Duration = Duration::from_millis(10);

/// How often the loop wakes at the latest, to check for a stop request.
const POLL: Duration = Duration::from_millis(200);

/// Serves until SIGTERM/SIGINT. Collections run on their own thread
/// (`cycle::collector_thread`), which owns the exporter.
pub fn serve<T: Transport + Send + 'static>(
    listener: TcpListener,
    config: &Config,
    exporter: Exporter<T>,
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
    let collections = Collections::start(exporter)?;
    let mut http = Http::new(config, Some(collections), true)?;
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    // When to try admitting queued connections again (see accept_all).
    let mut admit_again: Option<Instant> = None;
    // Since when new connections wait with none admitted.
    let mut waiting_since: Option<Instant> = None;
    // fds[0..FIRST_CONN]: the listener, the verifier's and the collection
    // thread's wake-ups; then one per connection, in order.
    const FIRST_CONN: usize = 3;
    while !stop_requested() {
        let now = Instant::now();
        let wait = conns
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .fold(POLL, Duration::min);
        // At the cap with no connection able to make room, new ones wait
        // in the accept queue: the listener is not polled (it would stay
        // readable) until a connection closes or ADMIT_RETRY passes.
        let admitting = admit_again.map_or(true, |at| at <= now);
        let wait = match admit_again {
            Some(at) if !admitting => wait.min(at.saturating_duration_since(now)),
            _ => wait,
        };
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: if admitting { libc::POLLIN } else { 0 },
            revents: 0,
        });
        // The verifier's wake-up (or -1, which poll skips).
        fds.push(libc::pollfd {
            fd: http.verifier.as_ref().map_or(-1, Verifier::wake_fd),
            events: libc::POLLIN,
            revents: 0,
        });
        fds.push(libc::pollfd {
            fd: http.collections.as_ref().map_or(-1, Collections::wake_fd),
            events: libc::POLLIN,
            revents: 0,
        });
        for conn in &conns {
            let events = if conn.waiting() {
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
        // Finished password checks and collections, then connections
        // (indices match fds[FIRST_CONN..]), then new ones.
        if fds[1].revents != 0 {
            answer_checked(&mut conns, &mut http);
        }
        if fds[2].revents != 0 {
            answer_collected(&mut conns, &mut http)?;
        }
        let mut closed = vec![false; conns.len()];
        for (i, conn) in conns.iter_mut().enumerate() {
            let revents = fds[i + FIRST_CONN].revents;
            if revents == 0 {
                continue;
            }
            closed[i] = !service(conn, revents, &mut http, &mut chunk);
        }
        let now = Instant::now();
        // A password check that did not finish in time gets 503, not silence.
        for conn in conns.iter_mut().filter(|c| c.deadline <= now) {
            if conn.session.check_late(&mut http) {
                queued_response(conn, config);
            }
        }
        let mut i = 0;
        let open = conns.len();
        conns.retain(|c| {
            let keep = !closed[i] && c.deadline > now;
            i += 1;
            keep
        });
        if conns.len() < open {
            admit_again = None;
        }
        if fds[0].revents & libc::POLLIN != 0 || (admit_again.is_some() && admitting) {
            // How long new connections have waited with none admitted.
            let waited = waiting_since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            let (admitted, blocked) = accept_all(&listener, &mut conns, config, waited);
            admit_again = blocked.then_some(now + ADMIT_RETRY);
            if admitted > 0 || !blocked {
                waiting_since = None;
            } else if waiting_since.is_none() {
                waiting_since = Some(now);
            }
        }
    }
    log::log(Level::Info, "stopping on signal", &[]);
    Ok(())
}

/// Answers the requests whose bcrypt checks have finished.
fn answer_checked(conns: &mut [Conn], http: &mut Http<'_>) {
    let finished = match http.verifier.as_mut() {
        Some(verifier) => verifier.finished(),
        None => return,
    };
    for (id, key, allowed) in finished {
        let verdict = http.checked(key, allowed);
        // The connection may have gone (deadline, eviction): the verdict is
        // remembered all the same.
        if let Some(conn) = conns
            .iter_mut()
            .find(|c| matches!(c.session.waiting(), Some(Wait::Check(w, _)) if *w == id))
        {
            conn.session.checked(id, verdict, http);
            if conn.session.responding() {
                queued_response(conn, http.config);
            }
            // else: it now waits for a collection, with no deadline.
        }
    }
}

/// Stores a finished collection and answers every scrape that waited for
/// it, all with the same bytes.
fn answer_collected(conns: &mut [Conn], http: &mut Http<'_>) -> Result<(), Died> {
    let Some(collections) = http.collections.as_mut() else {
        return Ok(());
    };
    let Some(entry) = collections.finished()? else {
        return Ok(());
    };
    http.store(Arc::clone(&entry));
    for conn in conns.iter_mut() {
        if conn.session.collected(&entry, http) {
            queued_response(conn, http.config);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

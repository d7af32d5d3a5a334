//! The HTTP side: one thread answers every request from the scrape cache.
//!
//! tiny_http reads request headers on its own pool threads (so a client
//! sending headers slowly never blocks this loop), but the response is written
//! here. The listening socket therefore carries TCP_NODELAY (without it,
//! Nagle against delayed ACKs caps a connection at ~25 requests/s) and
//! SO_SNDTIMEO, both inherited by every accepted connection, so a client that
//! stops reading is cut after --web.write-timeout instead of stalling others.

use std::error::Error;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::cache::Cache;
use crate::exporter::Exporter;
use crate::log::{self, Level};
use crate::render;
use crate::transport::{set_timeout, Transport};

/// Where to listen, as given by --web.listen-address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `:PORT`: every address, IPv6 and IPv4 where the host has IPv6.
    AnyHost(u16),
    /// `HOST:PORT` or `[IPv6]:PORT`; HOST is resolved when binding.
    Host(String, u16),
}

impl ListenAddr {
    /// Parses `:PORT`, `HOST:PORT` or `[IPv6]:PORT`.
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT or :PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?} has an invalid port {port:?} (expected 0-65535)"))?;
        if host.is_empty() {
            return Ok(ListenAddr::AnyHost(port));
        }
        if let Some(inner) = host.strip_prefix('[') {
            let ip = inner
                .strip_suffix(']')
                .and_then(|ip| ip.parse::<std::net::Ipv6Addr>().ok())
                .ok_or_else(|| format!("{s:?} has an invalid IPv6 literal {host:?}"))?;
            return Ok(ListenAddr::Host(ip.to_string(), port));
        }
        if host.contains(':') {
            return Err(format!(
                "{s:?}: write IPv6 addresses in brackets, e.g. [::1]:{port}"
            ));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{s:?} has an invalid host {host:?}"));
        }
        Ok(ListenAddr::Host(host.to_string(), port))
    }
}

/// Binds the listener: TCP_NODELAY and the write timeout are set on it so
/// that every accepted connection inherits them.
pub fn bind(addr: &ListenAddr, write_timeout: Duration) -> io::Result<TcpListener> {
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
    set_timeout(&listener, libc::SO_SNDTIMEO, write_timeout)?;
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

/// Serving settings.
pub struct Config {
    pub telemetry_path: String,
    pub cache_ttl: Duration,
}

/// How often the loop wakes to check for a stop request.
const POLL: Duration = Duration::from_millis(200);

/// Serves until SIGTERM/SIGINT.
pub fn serve<T: Transport>(
    listener: TcpListener,
    config: &Config,
    exporter: &mut Exporter<T>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let address = listener.local_addr()?;
    let mut server = Server::from_listener(listener.try_clone()?, None)?;
    log::log(
        Level::Info,
        "listening",
        &[
            ("address", &address),
            ("telemetry_path", &config.telemetry_path),
        ],
    );
    let mut cache = Cache::new(config.cache_ttl);
    while !stop_requested() {
        match server.recv_timeout(POLL) {
            Ok(Some(request)) => handle(request, config, &mut cache, exporter, address.port()),
            Ok(None) => {}
            Err(e) => {
                // tiny_http's accept thread ends on any accept() error (say
                // EMFILE); start a new one on the same listening socket.
                log::log(
                    Level::Error,
                    "accepting connections failed; restarting the HTTP server",
                    &[("err", &e)],
                );
                std::thread::sleep(POLL);
                server = Server::from_listener(listener.try_clone()?, None)?;
            }
        }
    }
    log::log(Level::Info, "stopping on signal", &[]);
    Ok(())
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

/// Largest declared body whose leftover tiny_http may drain when the request
/// is dropped: the drain first allocates a zeroed buffer of the whole
/// remaining length (lazily mapped, so harmless up to this size).
const MAX_DRAIN: usize = 1 << 30;

/// The Content-Length of a body that tiny_http streams from the socket and
/// drains, with blocking reads on the dropping thread, when the request is
/// dropped: over 1024 bytes, or any size with `Expect: 100-continue`. Smaller
/// bodies are read before the request reaches us; chunked bodies are not
/// drained.
fn streamed_body(request: &Request) -> Option<usize> {
    let length = request.body_length().filter(|&n| n > 0)?;
    let expects_continue = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Expect") && h.value.as_str().eq_ignore_ascii_case("100-continue"));
    (length > 1024 || expects_continue).then_some(length)
}

/// We never read request bodies, and tiny_http would drain an unread one on
/// this thread with no timeout (a client that never sends it would stall
/// every scrape) into a buffer of the declared length (a huge Content-Length
/// aborts the process). So the connection's read side is shut down first,
/// which ends the drain at once, and the client gets 413. A declared length
/// too large to allocate is closed without an answer and the request is
/// leaked rather than dropped.
fn reject_streamed_body(request: Request, length: usize, local_port: u16) {
    let peer = request.remote_addr().copied();
    let fd = peer.and_then(|peer| connection_fd(peer, local_port));
    if length > MAX_DRAIN {
        if let Some(fd) = fd {
            // SAFETY: shutdown on one of our sockets only ends the connection.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        log::log(
            Level::Warn,
            "closed a connection declaring a huge request body; its reader thread is leaked",
            &[("content_length", &length), ("peer", &format!("{peer:?}"))],
        );
        std::mem::forget(request);
        return;
    }
    if let Some(fd) = fd {
        // SAFETY: as above; reads now return end-of-file, writes still work.
        unsafe { libc::shutdown(fd, libc::SHUT_RD) };
    }
    let response = Response::from_string("413 request bodies are not accepted\n")
        .with_status_code(StatusCode(413))
        .with_header(header("Connection", "close"))
        .with_header(header("Content-Type", "text/plain; charset=utf-8"));
    let _ = request.respond(response);
}

/// Finds the descriptor of our accepted connection from `peer`, by asking
/// each socket in /proc/self/fd for its addresses. Only used for rejected
/// requests, so its cost does not matter.
fn connection_fd(peer: SocketAddr, local_port: u16) -> Option<libc::c_int> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if socket_address(fd, libc::getpeername) == Some(peer)
            && socket_address(fd, libc::getsockname).map(|a| a.port()) == Some(local_port)
        {
            return Some(fd);
        }
    }
    None
}

type AddressCall =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// getpeername/getsockname of an AF_INET or AF_INET6 socket.
fn socket_address(fd: libc::c_int, call: AddressCall) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data, large enough for any address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len are valid for the call; a bad fd just fails.
    if unsafe {
        call(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } != 0
    {
        return None;
    }
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel filled a sockaddr_in.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel filled a sockaddr_in6.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn handle<T: Transport>(
    request: Request,
    config: &Config,
    cache: &mut Cache,
    exporter: &mut Exporter<T>,
    local_port: u16,
) {
    if let Some(length) = streamed_body(&request) {
        return reject_streamed_body(request, length, local_port);
    }
    let path = request.url().split('?').next().unwrap_or("");
    let readable = matches!(request.method(), Method::Get | Method::Head);
    let is_metrics = path == config.telemetry_path;
    let result = if !is_metrics && path != "/" {
        request.respond(
            Response::from_string("404 page not found\n")
                .with_status_code(StatusCode(404))
                .with_header(header("Content-Type", "text/plain; charset=utf-8")),
        )
    } else if !readable {
        request.respond(
            Response::from_string("405 method not allowed\n")
                .with_status_code(StatusCode(405))
                .with_header(header("Allow", "GET, HEAD"))
                .with_header(header("Content-Type", "text/plain; charset=utf-8")),
        )
    } else {
        let freshness = cache.freshness();
        let entry = cache.get(Instant::now(), || exporter.refresh());
        if is_metrics {
            let gzip = accepts_gzip(request.headers());
            let mut headers = vec![
                header("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                header("Vary", "Accept-Encoding"),
            ];
            let body: &[u8] = if gzip {
                headers.push(header("Content-Encoding", "gzip"));
                entry.gzip()
            } else {
                entry.snapshot.text.as_bytes()
            };
            let response = Response::new(StatusCode(200), headers, body, Some(body.len()), None);
            request.respond(response)
        } else {
            let page =
                render::landing_page(&config.telemetry_path, &freshness, &entry.snapshot.summary);
            request.respond(
                Response::from_string(page)
                    .with_header(header("Content-Type", "text/html; charset=utf-8")),
            )
        }
    };
    if let Err(e) = result {
        log::log(Level::Debug, "writing a response failed", &[("err", &e)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(ListenAddr::parse(":9"), Ok(ListenAddr::AnyHost(9)));
        assert_eq!(
            ListenAddr::parse("127.0.0.1:0"),
            Ok(ListenAddr::Host("127.0.0.1".into(), 0))
        );
        assert_eq!(
            ListenAddr::parse("[::1]:19275"),
            Ok(ListenAddr::Host("::1".into(), 19275))
        );
        assert_eq!(
            ListenAddr::parse("localhost:80"),
            Ok(ListenAddr::Host("localhost".into(), 80))
        );
        for bad in [
            "", "9100", ":", ":65536", ":-1", "[::1:80", "[zz]:80", "::1:80", "a b:80",
        ] {
            assert!(ListenAddr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

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
    fn binds_with_nodelay_and_write_timeout() {
        let addr = ListenAddr::Host("127.0.0.1".into(), 0);
        let listener = bind(&addr, Duration::from_millis(1500)).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // Both options are inherited by accepted connections.
        assert!(accepted.nodelay().unwrap());
        assert_eq!(
            accepted.write_timeout().unwrap(),
            Some(Duration::from_millis(1500))
        );
        drop(client);
    }
}

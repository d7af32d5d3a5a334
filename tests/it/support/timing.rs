//! Timing when a timeout's effect happens, for the tests of the timeout
//! flags: when the server closes a connection, seen from the client (EOF or
//! reset) or, for a client that must not read, from the server's end of the
//! connection in `/proc/thread-self/net/tcp`.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How often the waits below look.
const STEP: Duration = Duration::from_millis(20);

/// Reads (and drops) whatever arrives on `stream` until the server closes
/// it (EOF or reset); the time from `since` to then, or None if it is still
/// open at `since + limit`.
pub fn closed_after(stream: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        let left = (since + limit).saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left.min(STEP))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(since.elapsed()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading while waiting for the server to close: {e}"),
        }
    }
}

/// The state (the kernel's TCP state number) of the connection from
/// `local` to `remote`, IPv4, in this thread's network namespace; None if
/// no such socket exists.
pub fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("tcp_state: IPv4 only, got {a}"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/thread-self/net/tcp").expect("read /proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 3 && f[1] == local && f[2] == remote)
            .then(|| u8::from_str_radix(f[3], 16).expect("hex state"))
    })
}

/// Time from `since` until the server's end (`server` -> `client`) of a
/// connection stops being open (ESTABLISHED, or CLOSE_WAIT if the client
/// closed first): the server closed it, without the client having to read
/// anything. None if it is still open at `since + limit`.
pub fn server_closed_after(
    server: SocketAddr,
    client: SocketAddr,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    const ESTABLISHED: u8 = 1;
    const CLOSE_WAIT: u8 = 8;
    assert!(
        matches!(tcp_state(server, client), Some(ESTABLISHED | CLOSE_WAIT)),
        "the server's end {server} -> {client} is not open to begin with: {:?}",
        tcp_state(server, client)
    );
    loop {
        if !matches!(tcp_state(server, client), Some(ESTABLISHED | CLOSE_WAIT)) {
            return Some(since.elapsed());
        }
        if since.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(STEP);
    }
}

/// Asserts that an effect measured at `took` (None: never, within the wait)
/// happened inside `[low, high]` seconds.
pub fn assert_between(what: &str, took: Option<Duration>, low: f64, high: f64) {
    let Some(took) = took else {
        panic!("{what}: did not happen at all within the wait (expected {low}..{high} s)");
    };
    let s = took.as_secs_f64();
    assert!(
        (low..=high).contains(&s),
        "{what}: happened after {s:.3} s, expected between {low} and {high} s"
    );
}

//! Helpers shared by the integration tests (tests/it), split by topic. The
//! items of mix, prom, http, exporter, pki and process, and the `skip` and
//! `require_*` helpers, are re-exported here, so a test module says
//! `use crate::support::*;` or names `support::http_request`.
//!
//! * `skips`: `skip` and `require_*`, the one way a test skips; in CI
//!   (strict mode) a skip fails the test instead.
//! * `timing`: when a connection closed, and bounds on how long that took.
//! * `netns`: `require_root_netns` (move the calling test thread into a
//!   private network namespace), helper processes (this binary run again on
//!   `helper_process_entry`), named namespaces, test cgroups, a raw dump.
//! * `mix`: `SocketMix`, an exact, known mix of TCP sockets on loopback and
//!   the numbers the exporter must report for it, cross-checked against
//!   `/proc/thread-self/net/tcp{,6}` and per-socket ioctls before use.
//! * `sockets`: socket builders (UDP, unix, nonblocking TCP) and
//!   independent kernel views for the collector tests.
//! * `prom`: a tiny text-format (0.0.4) parser.
//! * `http`: a tiny HTTP/1.1 client over `TcpStream`.
//! * `exporter`: `Server` and `run_exporter`: spawn the binary, bounded in
//!   time, and kill only the child we started, by PID.
//! * `pki`: certificates made at test time and a rustls client.
//! * `process`: threads, fds and RSS of a running exporter.

pub mod exporter;
pub mod http;
pub mod mix;
pub mod netns;
pub mod pki;
pub mod process;
pub mod prom;
pub mod skips;
pub mod sockets;
pub mod timing;

pub use exporter::*;
pub use http::*;
pub use mix::*;
pub use netns::require_root_netns;
pub use pki::*;
pub use process::*;
pub use prom::*;
pub use skips::{require_root, require_sys_admin, require_tool, skip};

use std::thread;
use std::time::{Duration, Instant};

/// The TCP states the exporter reports, in the contract's order.
pub const STATES: [&str; 11] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
];

pub const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];

/// Path of the binary under test, built by cargo for integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_sockdiag_exporter");

/// Polls `check` every 50 ms until it returns Ok, for at most `limit`.
/// Returns the last error on timeout.
pub fn poll_until<T>(
    limit: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

//! Whether a network namespace holds any socket a collector would dump,
//! read for free from the namespace's own counters, so that the dumps of
//! an empty namespace can be skipped (`--collector.netns`).
//!
//! Why: the kernel's TCP hash tables are shared by all namespaces, so a
//! dump of an empty namespace still walks every TCP socket on the host
//! (about 90 ms per namespace next to 1M sockets elsewhere). The counters
//! below are per namespace and cost a few microseconds to read.
//!
//! What is read, from the calling thread's namespace (`/proc/thread-self/net`,
//! so a pool thread that entered a namespace reads that namespace's files):
//! - `sockstat`: `TCP: inuse N ... tw N` and `UDP: inuse N`;
//! - `sockstat6`: `TCP6: inuse N` and `UDP6: inuse N` (absent when IPv6 is
//!   disabled: then no IPv6 socket can exist, and 0 is exact);
//! - `protocols`: the `sockets` column of `UNIX` and `UNIX-STREAM` (one
//!   `UNIX` line before 5.15). Both are the per-namespace
//!   `sock_prot_inuse_get` counter, the same one `sockstat` prints, raised
//!   when a unix socket is created and lowered when it is freed, so it is
//!   never below the number of sockets unix_diag can list. This file costs
//!   one short read, unlike /proc/net/unix, which lists every socket.
//!
//! What the TCP counters cover (net/ipv4/proc.c, inet_hashtables.c): `inuse`
//! counts sockets hashed in the namespace (listeners, SYN_SENT, established
//! and every closing state, orphans included, since an orphan stays hashed
//! until it is done), `tw` its TIME_WAIT sockets. Request sockets (SYN_RECV)
//! are not counted, but each belongs to a listener, which is. The one gap:
//! the request sockets of a listener that was just closed stay in the hash
//! until their SYN-ACK timer next fires (about a second) and are missed by a
//! skip in that window. The tests show each of listener only, TIME_WAIT
//! only, a request socket with its listener and an orphan in FIN_WAIT1
//! only keeps a namespace from being skipped.
//!
//! A counter that cannot be read or parsed is unknown, and unknown means
//! "dump": a skip is only taken when the counters prove the namespace empty.

use std::fs;
use std::io;

use crate::collectors::Kind;

/// Sockets counted by a namespace's own counters; `None` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Occupancy {
    /// TCP sockets hashed (both families) plus TIME_WAIT.
    pub tcp: Option<u64>,
    /// UDP sockets bound or connected (both families).
    pub udp: Option<u64>,
    /// Unix sockets of every type.
    pub unix: Option<u64>,
}

impl Occupancy {
    /// Nothing known: every collector dumps.
    pub const UNKNOWN: Occupancy = Occupancy {
        tcp: None,
        udp: None,
        unix: None,
    };

    /// Whether collector `kind` provably has nothing to dump, so that its
    /// series are exact zeros without a dump.
    pub fn empty(&self, kind: Kind) -> bool {
        let count = match kind {
            Kind::Tcp | Kind::Listeners => self.tcp,
            Kind::Udp => self.udp,
            Kind::Unix => self.unix,
        };
        count == Some(0)
    }

    /// Reads the calling thread's namespace's counters.
    pub fn of_current_thread() -> Occupancy {
        let dir = "/proc/thread-self/net";
        let v4 = fs::read_to_string(format!("{dir}/sockstat")).map(|t| parse_sockstat(&t));
        let v6 = match fs::read_to_string(format!("{dir}/sockstat6")) {
            Ok(text) => Ok(parse_sockstat(&text)),
            // No IPv6 in this kernel or namespace: no IPv6 socket either.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Sockstat::ZERO),
            Err(e) => Err(e),
        };
        let unix = fs::read_to_string(format!("{dir}/protocols"))
            .ok()
            .and_then(|t| parse_protocols_unix(&t));
        let (tcp, udp) = match (v4, v6) {
            (Ok(v4), Ok(v6)) => (
                sum(&[v4.tcp_inuse, v4.tcp_tw, v6.tcp_inuse]),
                sum(&[v4.udp_inuse, v6.udp_inuse]),
            ),
            _ => (None, None),
        };
        Occupancy { tcp, udp, unix }
    }
}

fn sum(parts: &[Option<u64>]) -> Option<u64> {
    parts.iter().try_fold(0u64, |acc, p| Some(acc + (*p)?))
}

/// The fields of one `sockstat` or `sockstat6` file that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sockstat {
    pub tcp_inuse: Option<u64>,
    /// Only in `sockstat` (TIME_WAIT of both families).
    pub tcp_tw: Option<u64>,
    pub udp_inuse: Option<u64>,
}

impl Sockstat {
    const ZERO: Sockstat = Sockstat {
        tcp_inuse: Some(0),
        tcp_tw: Some(0),
        udp_inuse: Some(0),
    };
}

/// Parses `sockstat` (`TCP:`, `UDP:` lines) or `sockstat6` (`TCP6:`,
/// `UDP6:`; it has no `tw`, which then reads 0). A field missing or not a
/// number is None.
pub fn parse_sockstat(text: &str) -> Sockstat {
    let mut out = Sockstat {
        tcp_inuse: None,
        tcp_tw: None,
        udp_inuse: None,
    };
    let mut six = false;
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(head) = words.next() else { continue };
        let pairs: Vec<&str> = words.collect();
        let field = |name: &str| {
            pairs
                .chunks(2)
                .find(|kv| kv[0] == name)
                .and_then(|kv| kv.get(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        match head {
            "TCP:" => {
                out.tcp_inuse = field("inuse");
                out.tcp_tw = field("tw");
            }
            "TCP6:" => {
                six = true;
                out.tcp_inuse = field("inuse");
            }
            "UDP:" | "UDP6:" => out.udp_inuse = field("inuse"),
            _ => {}
        }
    }
    if six {
        out.tcp_tw = Some(0);
    }
    out
}

/// The sum of the `sockets` column of the unix protocols (`UNIX`,
/// `UNIX-STREAM`) in `/proc/net/protocols`; None if there is none or one
/// cannot be read.
pub fn parse_protocols_unix(text: &str) -> Option<u64> {
    let mut total = None;
    for line in text.lines().skip(1) {
        let mut words = line.split_ascii_whitespace();
        let Some(name) = words.next() else { continue };
        if name != "UNIX" && !name.starts_with("UNIX-") {
            continue;
        }
        let sockets = words.nth(1)?.parse::<u64>().ok()?;
        total = Some(total.unwrap_or(0) + sockets);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKSTAT: &str = "sockets: used 15\n\
        TCP: inuse 3 orphan 9 tw 2 alloc 40 mem 1\n\
        UDP: inuse 1 mem 256\n\
        UDPLITE: inuse 0\n\
        RAW: inuse 0\n\
        FRAG: inuse 0 memory 0\n";
    const SOCKSTAT6: &str =
        "TCP6: inuse 4\nUDP6: inuse 0\nUDPLITE6: inuse 0\nRAW6: inuse 0\nFRAG6: inuse 0 memory 0\n";
    const PROTOCOLS: &str =
        "protocol  size sockets  memory press maxhdr  slab module     cl co di\n\
        UDPv6     1472      0     256   NI       0   yes  kernel      y  y  y\n\
        UNIX-STREAM 1152      2      -1   NI       0   yes  kernel      y  n  n\n\
        UNIX      1152      5      -1   NI       0   yes  kernel      y  n  n\n\
        TCP       2304      1       0   no     192   yes  kernel      y  y  y\n";

    #[test]
    fn reads_the_namespace_counters_not_the_global_ones() {
        // orphan and alloc are host-wide: only inuse and tw are per namespace.
        assert_eq!(
            parse_sockstat(SOCKSTAT),
            Sockstat {
                tcp_inuse: Some(3),
                tcp_tw: Some(2),
                udp_inuse: Some(1)
            }
        );
        assert_eq!(
            parse_sockstat(SOCKSTAT6),
            Sockstat {
                tcp_inuse: Some(4),
                tcp_tw: Some(0),
                udp_inuse: Some(0)
            }
        );
        assert_eq!(parse_protocols_unix(PROTOCOLS), Some(7));
        // Older kernels: one UNIX line.
        assert_eq!(
            parse_protocols_unix("protocol size sockets\nUNIX 1 4 -1\n"),
            Some(4)
        );
    }

    #[test]
    fn anything_unreadable_is_unknown_and_never_empty() {
        let broken = parse_sockstat("TCP: inuse x tw 0\nUDP: mem 3\n");
        assert_eq!(broken.tcp_inuse, None);
        assert_eq!(broken.tcp_tw, Some(0));
        assert_eq!(broken.udp_inuse, None);
        assert_eq!(parse_sockstat(""), parse_sockstat("garbage\n\n"));
        assert_eq!(parse_protocols_unix("protocol\nTCP 1 2\n"), None);
        assert_eq!(parse_protocols_unix("protocol\nUNIX 1\n"), None);
        assert_eq!(parse_protocols_unix("protocol\nUNIX 1 -3 x\n"), None);
        for kind in Kind::ALL {
            assert!(!Occupancy::UNKNOWN.empty(kind), "{kind:?}");
        }
        let tw_only = Occupancy {
            tcp: sum(&[Some(0), Some(1), Some(0)]),
            udp: Some(0),
            unix: None,
        };
        assert!(!tw_only.empty(Kind::Tcp) && !tw_only.empty(Kind::Listeners));
        assert!(tw_only.empty(Kind::Udp) && !tw_only.empty(Kind::Unix));
        assert_eq!(sum(&[Some(1), None]), None);
    }

    #[test]
    fn reads_this_thread_namespace() {
        // Whatever this namespace holds, every counter is readable here.
        let here = Occupancy::of_current_thread();
        assert!(here.tcp.is_some() && here.udp.is_some(), "{here:?}");
        assert!(here.unix.is_some(), "{here:?}");
    }
}

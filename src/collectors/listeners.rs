//! The `listeners` collector: TCP listeners from LISTEN-only dumps with
//! SKMEMINFO, which walk only the kernel's listening hash: per listening
//! address (an SO_REUSEPORT group summed), the accept queue, its limit, the
//! sockets and the drops, capped at `--collector.listeners.max`.

use std::collections::HashMap;

use super::{drops, inet, Options, SocketCollector, SERIES_DROPPED};
use crate::cap;
use crate::exposition::{Families, Ns, Spec, Type};
use crate::kernel::diag::{format_address, DumpRequest, Family, TcpState, INET_DIAG_MSG_LEN};
use crate::kernel::dump::{CollectError, Dumper, Sink};
use crate::kernel::parse::ParseError;
use crate::kernel::transport::Transport;
use crate::table::{columns, fullest, row};

pub(super) const LISTEN: &[DumpRequest] = &[
    DumpRequest::Listen(Family::Ipv4),
    DumpRequest::Listen(Family::Ipv6),
];

/// A listening address: sockets sharing it (SO_REUSEPORT) are one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    pub family: Family,
    /// IPv4 addresses use the first 4 bytes; the rest are zero.
    pub address: [u8; 16],
    pub port: u16,
}

/// One listener, summed over its SO_REUSEPORT group.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Connections completed and waiting for accept() (sk_ack_backlog).
    pub queue: u64,
    /// The accept backlog limit (sk_max_ack_backlog).
    pub max: u64,
    /// Listening sockets in the group.
    pub sockets: u64,
    /// SYNs and completed connections dropped (SK_MEMINFO_DROPS, raised by
    /// tcp_listendrop() with the namespace's ListenDrops).
    pub drops: u64,
}

/// TCP listeners from the LISTEN-only dump, with their drop counters.
#[derive(Debug, Default, Clone)]
pub struct ListenStats {
    listeners: HashMap<ListenerKey, Listener>,
}

impl ListenStats {
    pub fn clear(&mut self) {
        self.listeners.clear();
    }

    /// Folds one LISTEN socket (with its SKMEMINFO attribute) in.
    pub fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        let (msg, family) = inet(payload)?;
        if TcpState::from_kernel(msg.state()) != Some(TcpState::Listen) {
            return Err(ParseError::UnknownState { state: msg.state() });
        }
        let drops = drops(&payload[INET_DIAG_MSG_LEN..])?;
        let mut address = msg.local_address();
        if family == Family::Ipv4 {
            address[4..].fill(0);
        }
        let key = ListenerKey {
            family,
            address,
            port: msg.local_port(),
        };
        let listener = self.listeners.entry(key).or_default();
        listener.queue += u64::from(msg.rqueue());
        listener.max += u64::from(msg.wqueue());
        listener.sockets += 1;
        listener.drops += drops;
        Ok(())
    }

    /// Listeners in a stable order (family, address, port).
    pub fn listeners(&self) -> Vec<(ListenerKey, Listener)> {
        let mut out: Vec<_> = self.listeners.iter().map(|(k, v)| (*k, *v)).collect();
        out.sort_unstable_by_key(|(k, _)| *k);
        out
    }
}

impl Sink for ListenStats {
    fn clear(&mut self) {
        ListenStats::clear(self)
    }
    #[inline]
    fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        ListenStats::add(self, payload)
    }
}

/// Labels of the per-listener series.
const BY_LISTENER: &[&str] = &["protocol", "family", "address", "port"];

pub static LISTEN_QUEUE: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_listen_queue",
    help: "Connections completed and waiting for accept(), per listening address, summed over an SO_REUSEPORT group.",
    labels: BY_LISTENER,
};

pub static LISTEN_QUEUE_MAX: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_listen_queue_max",
    help: "Accept queue limit (the listen() backlog capped by net.core.somaxconn), per listening address, summed over an SO_REUSEPORT group.",
    labels: BY_LISTENER,
};

pub static LISTEN_SOCKETS: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_listen_sockets",
    help: "Listening sockets bound to the address (more than 1 for an SO_REUSEPORT group).",
    labels: BY_LISTENER,
};

pub static LISTEN_DROPS: Spec = Spec {
    kind: Type::Counter,
    name: "sockdiag_listen_drops_total",
    help: "SYNs and connections the listening socket dropped: its accept or SYN queue was full (counted with the kernel's ListenDrops) or its socket filter rejected them. Restarts at 0 when the listening socket is reopened.",
    labels: BY_LISTENER,
};

/// The metrics this collector alone produces.
pub static SPECS: &[&Spec] = &[
    &LISTEN_QUEUE,
    &LISTEN_QUEUE_MAX,
    &LISTEN_SOCKETS,
    &LISTEN_DROPS,
];

impl SocketCollector for ListenStats {
    const NAME: &'static str = "listeners";
    const HELP: &'static str = "TCP accept queues and drops per listener";
    const SIDE: bool = true;
    fn specs() -> &'static [&'static Spec] {
        SPECS
    }
    fn new(_options: &Options) -> ListenStats {
        ListenStats::default()
    }
    /// Runs its dumps through `dumper` into these counts.
    fn collect<T: Transport>(&mut self, dumper: &mut Dumper<T>) -> Result<(), CollectError> {
        dumper.run(LISTEN, self)
    }

    /// Its series for one namespace (`ns`: the `netns` label, if any).
    fn families(&self, options: &Options, out: &mut Families, ns: Ns<'_>) {
        let capped = cap::first(self.listeners(), options.max_listeners);
        for (key, listener) in &capped.rows {
            let address = format_address(key.family, &key.address);
            let port = key.port.to_string();
            let labels = &["tcp", key.family.label(), address.as_str(), port.as_str()];
            out.int(&LISTEN_QUEUE, labels, ns, listener.queue);
            out.int(&LISTEN_QUEUE_MAX, labels, ns, listener.max);
            out.int(&LISTEN_SOCKETS, labels, ns, listener.sockets);
            out.int(&LISTEN_DROPS, labels, ns, listener.drops);
        }
        out.int(
            &SERIES_DROPPED,
            &[LISTEN_QUEUE.name],
            ns,
            capped.dropped as u64,
        );
    }

    fn table(&self, out: &mut String) {
        let listeners = fullest(out, "listeners", self.listeners(), |l: &Listener| {
            (l.queue, l.max)
        });
        if listeners.is_empty() {
            out.push_str("(no listening sockets)\n");
            return;
        }
        let mut rows = vec![row([
            "family", "address", "port", "queue", "max", "sockets", "drops",
        ]
        .map(String::from))];
        for (key, l) in &listeners {
            rows.push(row([
                key.family.label().to_string(),
                format_address(key.family, &key.address),
                key.port.to_string(),
                l.queue.to_string(),
                l.max.to_string(),
                l.sockets.to_string(),
                l.drops.to_string(),
            ]));
        }
        out.push_str(&columns(&rows, 2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::diag::{AF_INET, AF_INET6};
    use crate::kernel::parse::tests::{inet_diag_msg, inet_with_drops, rtattr, v4};

    #[test]
    fn listeners_sum_reuseport_groups_with_drops() {
        let mut stats = ListenStats::default();
        let lo = v4([127, 0, 0, 1]);
        let mut dirty = lo;
        dirty[8] = 0xFF; // IPv4 keys ignore bytes past the 4th
        stats
            .add(&inet_with_drops(AF_INET, 10, lo, 80, 0, 3, 128, 5))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET, 10, dirty, 80, 0, 2, 128, 1))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET, 10, lo, 81, 0, 0, 16, 0))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET6, 10, [0; 16], 80, 0, 1, 4096, 0))
            .unwrap();
        let listeners = stats.listeners();
        assert_eq!(listeners.len(), 3);
        assert_eq!(listeners[0].0.port, 80);
        assert_eq!(
            listeners[0].1,
            Listener {
                queue: 5,
                max: 256,
                sockets: 2,
                drops: 6
            }
        );
        assert_eq!(listeners[1].1.max, 16);
        assert_eq!(listeners[2].0.family, Family::Ipv6);
        stats.clear();
        assert!(stats.listeners().is_empty());
    }

    #[test]
    fn listener_dump_needs_listen_state_and_meminfo() {
        let mut stats = ListenStats::default();
        let lo = v4([127, 0, 0, 1]);
        assert_eq!(
            stats.add(&inet_with_drops(AF_INET, 1, lo, 80, 9, 0, 0, 0)),
            Err(ParseError::UnknownState { state: 1 })
        );
        assert_eq!(
            stats.add(&inet_diag_msg(AF_INET, 10, lo, 80, 0, 0, 0, 1)),
            Err(ParseError::MissingAttribute {
                name: "INET_DIAG_SKMEMINFO"
            })
        );
        // SKMEMINFO too short to hold the drops.
        let mut short = inet_diag_msg(AF_INET, 10, lo, 80, 0, 0, 0, 1);
        short.extend(rtattr(7, &[0; 16]));
        assert!(matches!(
            stats.add(&short),
            Err(ParseError::MissingAttribute { .. })
        ));
        // An attribute claiming more bytes than there are.
        let mut bad = inet_diag_msg(AF_INET, 10, lo, 80, 0, 0, 0, 1);
        bad.extend_from_slice(&[40, 0, 7, 0, 1, 2, 3, 4]);
        assert!(matches!(stats.add(&bad), Err(ParseError::Attribute(_))));
        assert!(stats.listeners().is_empty());
    }
}

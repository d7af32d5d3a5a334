//! The `udp` collector: UDP sockets of both families by state, receive and
//! send memory, datagrams dropped on receive, and the per-port view of
//! `--collector.udp.ports` with drops per port. Per-family dumps with
//! SKMEMINFO (for the drop counter).

use std::collections::HashMap;

use super::ports::PortCounts;
use super::{
    drops, inet, Options, SocketCollector, RECEIVE_QUEUE, SEND_QUEUE, SERIES_DROPPED, SOCKETS,
};
use crate::config::PortSet;
use crate::exposition::{Families, Ns, Spec, Type};
use crate::kernel::diag::{DumpRequest, Family, UdpState, INET_DIAG_MSG_LEN};
use crate::kernel::dump::{CollectError, Dumper, Sink};
use crate::kernel::parse::ParseError;
use crate::kernel::transport::Transport;
use crate::table::{columns, row};

pub(super) const UDP: &[DumpRequest] = &[
    DumpRequest::Udp(Family::Ipv4),
    DumpRequest::Udp(Family::Ipv6),
];

/// Per-family, per-UDP-state values.
pub type UdpByState = [[u64; UdpState::COUNT]; 2];

/// UDP sockets by family and state, queue sums and drops.
#[derive(Debug, Default, Clone)]
pub struct UdpStats {
    pub sockets: UdpByState,
    /// Sum of idiag_rqueue: receive memory charged to the socket
    /// (skb truesize, so more than the payload bytes), over all sockets.
    pub receive_queue_bytes: UdpByState,
    /// Sum of idiag_wqueue: send memory not yet released by the device.
    pub send_queue_bytes: UdpByState,
    /// Sum of SK_MEMINFO_DROPS over the open sockets, by family.
    pub drops: [u64; 2],
    pub ports: PortCounts<{ UdpState::COUNT }>,
    /// Drops of the sockets bound to each configured port.
    port_drops: HashMap<u16, u64>,
}

impl UdpStats {
    pub fn new(ports: PortSet) -> UdpStats {
        UdpStats {
            ports: PortCounts::new(ports),
            ..UdpStats::default()
        }
    }

    pub fn clear(&mut self) {
        self.sockets = UdpByState::default();
        self.receive_queue_bytes = UdpByState::default();
        self.send_queue_bytes = UdpByState::default();
        self.drops = [0; 2];
        self.ports.clear();
        self.port_drops.clear();
    }

    /// Folds one UDP socket (with its SKMEMINFO attribute) in.
    pub fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        let (msg, family) = inet(payload)?;
        let state = UdpState::from_kernel(msg.state())
            .ok_or(ParseError::UnknownUdpState { state: msg.state() })?;
        let drops = drops(&payload[INET_DIAG_MSG_LEN..])?;
        let (f, s) = (family as usize, state as usize);
        self.sockets[f][s] += 1;
        self.receive_queue_bytes[f][s] += u64::from(msg.rqueue());
        self.send_queue_bytes[f][s] += u64::from(msg.wqueue());
        self.drops[f] += drops;
        self.ports.add(msg.local_port(), msg.remote_port(), s);
        if !self.ports.set.is_empty() && self.ports.set.contains(msg.local_port()) {
            *self.port_drops.entry(msg.local_port()).or_default() += drops;
        }
        Ok(())
    }

    /// Drops by local port for the configured ports: every single listed
    /// port (zero included) and range ports with sockets, sorted.
    pub fn port_drops(&self) -> Vec<(u16, u64)> {
        let mut out: Vec<_> = self.port_drops.iter().map(|(k, v)| (*k, *v)).collect();
        for &port in self.ports.set.singles() {
            if !self.port_drops.contains_key(&port) {
                out.push((port, 0));
            }
        }
        out.sort_unstable();
        out
    }
}

impl Sink for UdpStats {
    fn clear(&mut self) {
        UdpStats::clear(self)
    }
    #[inline]
    fn add(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        UdpStats::add(self, payload)
    }
}

pub static UDP_DROPS: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_udp_receive_drops",
    help: "Datagrams dropped on receive (full receive buffer, checksum or filter), summed over the UDP sockets open now. A gauge: a socket's count leaves the sum when it closes.",
    labels: &["family"],
};

pub static PORT_DROPS: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_port_receive_drops",
    help: "Datagrams dropped on receive by the UDP sockets bound to each port of --collector.udp.ports (a gauge, like sockdiag_udp_receive_drops).",
    labels: &["protocol", "port"],
};

/// The metrics this collector alone produces.
pub static SPECS: &[&Spec] = &[&UDP_DROPS, &PORT_DROPS];

impl SocketCollector for UdpStats {
    const NAME: &'static str = "udp";
    const HELP: &'static str = "UDP sockets, queues and drops";
    const SIDE: bool = true;
    fn specs() -> &'static [&'static Spec] {
        SPECS
    }
    fn new(options: &Options) -> UdpStats {
        UdpStats::new(options.udp_ports.clone())
    }
    /// Runs its dumps through `dumper` into these counts.
    fn collect<T: Transport>(&mut self, dumper: &mut Dumper<T>) -> Result<(), CollectError> {
        dumper.run(UDP, self)
    }

    /// Its series for one namespace (`ns`: the `netns` label, if any).
    fn families(&self, options: &Options, out: &mut Families, ns: Ns<'_>) {
        let udp = self;
        for family in Family::ALL {
            for state in UdpState::ALL {
                let labels = &["udp", family.label(), state.label()];
                let (f, s) = (family as usize, state as usize);
                out.int(&SOCKETS, labels, ns, udp.sockets[f][s]);
                out.int(&RECEIVE_QUEUE, labels, ns, udp.receive_queue_bytes[f][s]);
                out.int(&SEND_QUEUE, labels, ns, udp.send_queue_bytes[f][s]);
            }
            out.int(
                &UDP_DROPS,
                &[family.label()],
                ns,
                udp.drops[family as usize],
            );
        }
        let states = UdpState::ALL.map(|s| s.label());
        let kept = self
            .ports
            .families(out, "udp", &states, options.max_port_series, ns);
        let mut cut = 0u64;
        for (port, drops) in udp.port_drops() {
            if kept.binary_search(&port).is_ok() {
                out.int(&PORT_DROPS, &["udp", &port.to_string()], ns, drops);
            } else {
                cut += 1;
            }
        }
        if !udp.ports.series().is_empty() {
            out.int(&SERIES_DROPPED, &[PORT_DROPS.name], ns, cut);
        }
    }

    fn table(&self, out: &mut String) {
        let mut rows = vec![row([
            "UDP sockets",
            "ipv4",
            "ipv6",
            "recv bytes ipv4",
            "send bytes ipv4",
            "recv bytes ipv6",
            "send bytes ipv6",
        ]
        .map(String::from))];
        for state in UdpState::ALL {
            let s = state as usize;
            rows.push(row([
                state.label().to_string(),
                self.sockets[0][s].to_string(),
                self.sockets[1][s].to_string(),
                self.receive_queue_bytes[0][s].to_string(),
                self.send_queue_bytes[0][s].to_string(),
                self.receive_queue_bytes[1][s].to_string(),
                self.send_queue_bytes[1][s].to_string(),
            ]));
        }
        rows.push(row([
            "receive drops".to_string(),
            self.drops[0].to_string(),
            self.drops[1].to_string(),
        ]));
        out.push_str(&columns(&rows, 1));
        self.ports
            .table(out, "UDP", &UdpState::ALL.map(|s| s.label()));
        let drops = self.port_drops();
        if !drops.is_empty() {
            out.push('\n');
            let mut rows = vec![row(["UDP drops by port", "drops"].map(String::from))];
            for (port, n) in drops {
                rows.push(row([port.to_string(), n.to_string()]));
            }
            out.push_str(&columns(&rows, 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ports::Direction;
    use super::*;
    use crate::kernel::diag::{AF_INET, AF_INET6};
    use crate::kernel::parse::tests::{inet_with_drops, v4};

    #[test]
    fn udp_counts_states_queues_and_drops() {
        let mut stats = UdpStats::new(PortSet::parse("53").unwrap());
        let any = v4([0; 4]);
        stats
            .add(&inet_with_drops(AF_INET, 7, any, 53, 0, 2304, 0, 4))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET, 7, any, 53, 0, 0, 0, 1))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET, 1, any, 40000, 53, 0, 768, 0))
            .unwrap();
        stats
            .add(&inet_with_drops(AF_INET6, 7, [0; 16], 514, 0, 0, 0, 2))
            .unwrap();
        let (un, co) = (UdpState::Unconnected as usize, UdpState::Connected as usize);
        assert_eq!(stats.sockets[0][un], 2);
        assert_eq!(stats.sockets[0][co], 1);
        assert_eq!(stats.sockets[1][un], 1);
        assert_eq!(stats.receive_queue_bytes[0][un], 2304);
        assert_eq!(stats.send_queue_bytes[0][co], 768);
        assert_eq!(stats.drops, [5, 2]);
        assert_eq!(stats.port_drops(), vec![(53, 5)]);
        let series = stats.ports.series();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0], ((Direction::Local, 53), [2, 0]));
        assert_eq!(series[1], ((Direction::Remote, 53), [0, 1]));
        assert_eq!(
            stats.add(&inet_with_drops(AF_INET, 10, any, 1, 0, 0, 0, 0)),
            Err(ParseError::UnknownUdpState { state: 10 })
        );
        stats.clear();
        assert_eq!(stats.drops, [0, 0]);
        assert_eq!(stats.port_drops(), vec![(53, 0)]);
    }
}

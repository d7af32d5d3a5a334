//! Per-port views (`--collector.tcp.ports`, `--collector.udp.ports`): socket
//! counts by state for each configured port, both as the local port (a
//! service the host offers) and as the remote port (a service it uses),
//! capped at `--collector.ports.max-series` per protocol.

use std::collections::HashMap;

use super::SERIES_DROPPED;
use crate::cap;
use crate::config::PortSet;
use crate::exposition::{Families, Ns, Spec, Type};
use crate::table::columns;

/// Which end of a connection a port view matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// The port is the socket's local port: we serve it.
    Local,
    /// The port is the remote port: we are a client of it.
    Remote,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Local, Direction::Remote];

    /// The `direction` label value.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Local => "local",
            Direction::Remote => "remote",
        }
    }
}

/// Socket counts by state for the configured ports, each as a local and as a
/// remote port. `N` is the protocol's number of states.
#[derive(Debug, Clone, Default)]
pub struct PortCounts<const N: usize> {
    pub(super) set: PortSet,
    counts: HashMap<(Direction, u16), [u64; N]>,
}

impl<const N: usize> PortCounts<N> {
    pub fn new(set: PortSet) -> PortCounts<N> {
        PortCounts {
            set,
            counts: HashMap::new(),
        }
    }

    pub(super) fn clear(&mut self) {
        self.counts.clear();
    }

    #[inline]
    pub(super) fn add(&mut self, local: u16, remote: u16, state: usize) {
        if self.set.is_empty() {
            return;
        }
        if self.set.contains(local) {
            self.counts
                .entry((Direction::Local, local))
                .or_insert([0; N])[state] += 1;
        }
        if remote != 0 && self.set.contains(remote) {
            self.counts
                .entry((Direction::Remote, remote))
                .or_insert([0; N])[state] += 1;
        }
    }

    /// Every (direction, port) with sockets, plus both directions of every
    /// single listed port (zeros included), sorted by direction then port.
    pub fn series(&self) -> Vec<((Direction, u16), [u64; N])> {
        let mut out: Vec<_> = self.counts.iter().map(|(k, v)| (*k, *v)).collect();
        for &port in self.set.singles() {
            for direction in Direction::ALL {
                if !self.counts.contains_key(&(direction, port)) {
                    out.push(((direction, port), [0; N]));
                }
            }
        }
        out.sort_unstable_by_key(|(k, _)| *k);
        out
    }
}

pub static PORT_SOCKETS: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_port_sockets",
    help: "Sockets by state for the ports of --collector.tcp.ports / --collector.udp.ports: direction local is the port we serve, remote a port we connect to.",
    labels: &["protocol", "direction", "port", "state"],
};

impl<const N: usize> PortCounts<N> {
    /// Per-port series for one protocol (`states` names the `N` states),
    /// the first `max_series` (rounded down to whole ports) by port. Returns
    /// the local ports kept.
    pub fn families(
        &self,
        out: &mut Families,
        protocol: &str,
        states: &[&str; N],
        max_series: usize,
        ns: Ns<'_>,
    ) -> Vec<u16> {
        let series = self.series();
        let capped = cap::first(series.iter().cloned(), max_series / N);
        let mut kept_local = Vec::new();
        for ((direction, port), counts) in &capped.rows {
            let port_label = port.to_string();
            for (state, n) in states.iter().zip(counts) {
                out.int(
                    &PORT_SOCKETS,
                    &[protocol, direction.label(), &port_label, state],
                    ns,
                    *n,
                );
            }
            if *direction == Direction::Local {
                kept_local.push(*port);
            }
        }
        if !series.is_empty() {
            out.add(
                &SERIES_DROPPED,
                &[PORT_SOCKETS.name],
                ns,
                (capped.dropped * N) as u64 as f64,
            );
        }
        kept_local
    }

    /// The per-port view of one protocol in the table (only when ports are
    /// configured).
    pub fn table(&self, out: &mut String, protocol: &str, states: &[&str; N]) {
        let series = self.series();
        if series.is_empty() {
            return;
        }
        out.push('\n');
        let mut header = vec![format!("{protocol} by port"), "direction".into()];
        header.extend(states.iter().map(|s| s.to_string()));
        let mut rows = vec![header];
        for ((direction, port), counts) in &series {
            let mut cells = vec![port.to_string(), direction.label().to_string()];
            cells.extend(counts.iter().map(u64::to_string));
            rows.push(cells);
        }
        out.push_str(&columns(&rows, 2));
    }
}

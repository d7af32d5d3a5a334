//! Per-port views (`--collector.tcp.ports`, `--collector.udp.ports`): socket
//! counts by state for each configured port, both as the local port (a
//! service the host offers) and as the remote port (a service it uses),
//! capped at `--collector.ports.max-series` per protocol.

use std::collections::HashMap;

use super::SERIES_DROPPED;
use crate::cap;
use crate::exposition::{Families, Ns, Spec, Type};
use crate::table::columns;

/// A set of ports (`--collector.tcp.ports 22,80,8000-8100`), as a bitmap so
/// that checking a socket costs one load. The default is the empty set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet {
    bits: Vec<u64>,
    /// Ports listed one by one: their series are always emitted, zeros
    /// included. Ports inside ranges appear only while they have sockets.
    singles: Vec<u16>,
}

impl PortSet {
    /// Parses a comma-separated list of ports and inclusive ranges.
    pub fn parse(s: &str) -> Result<PortSet, String> {
        let mut set = PortSet {
            bits: vec![0; 1024],
            singles: Vec::new(),
        };
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "{p:?} in {s:?} is not a port (1-65535); expected a list like 22,80,8000-8100"
                )),
            }
        };
        for item in s.split(',') {
            if item.trim().is_empty() {
                return Err(format!(
                    "empty item in port list {s:?}; expected a list like 22,80,8000-8100"
                ));
            }
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(format!("port range {item:?} in {s:?} runs backwards"));
                    }
                    (a..=b).for_each(|p| set.insert(p));
                }
                None => {
                    let p = port(item)?;
                    set.insert(p);
                    set.singles.push(p);
                }
            }
        }
        set.singles.sort_unstable();
        set.singles.dedup();
        Ok(set)
    }

    fn insert(&mut self, port: u16) {
        self.bits[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    pub fn contains(&self, port: u16) -> bool {
        self.bits
            .get(usize::from(port >> 6))
            .is_some_and(|w| w & (1 << (port & 63)) != 0)
    }

    pub fn singles(&self) -> &[u16] {
        &self.singles
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sets_parse_lists_and_ranges() {
        let set = PortSet::parse("22, 5432,8000-8002,22").unwrap();
        for p in [22, 5432, 8000, 8001, 8002] {
            assert!(set.contains(p), "{p}");
        }
        for p in [1, 21, 23, 7999, 8003, 65535] {
            assert!(!set.contains(p), "{p}");
        }
        assert_eq!(set.singles(), &[22, 5432]);
        assert!(PortSet::parse("65535").unwrap().contains(65535));
        assert!(PortSet::default().is_empty());
        for bad in ["", "0", "65536", "a", "5-", "9-1", "1,,2", "-3"] {
            assert!(PortSet::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

//! Streaming aggregation: each socket from a dump is folded into counts and
//! queue sums as it is parsed, and then forgotten.
//!
//! Storage is fixed-size arrays plus one map of listeners, which keeps its
//! capacity across collections: after the first collection, counting a
//! socket allocates nothing, so memory stays flat from 10 sockets to millions.

use std::collections::HashMap;

use crate::diag::{Family, InetDiagMsg, TcpState};
use crate::parse::ParseError;

/// Per-family, per-state values, indexed `[Family as usize][TcpState as usize]`.
pub type ByState = [[u64; TcpState::COUNT]; 2];

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
}

/// TCP sockets by family and state, queue sums, and listeners.
#[derive(Debug, Default, Clone)]
pub struct TcpStats {
    /// Socket counts.
    pub sockets: ByState,
    /// Sum of idiag_rqueue (unread bytes) over non-listening sockets.
    pub receive_queue_bytes: ByState,
    /// Sum of idiag_wqueue (unacknowledged bytes) over non-listening sockets.
    pub send_queue_bytes: ByState,
    listeners: HashMap<ListenerKey, Listener>,
}

impl TcpStats {
    /// Forgets all sockets but keeps the listener map's capacity.
    pub fn clear(&mut self) {
        self.sockets = ByState::default();
        self.receive_queue_bytes = ByState::default();
        self.send_queue_bytes = ByState::default();
        self.listeners.clear();
    }

    /// Folds one socket in. For LISTEN sockets the kernel's queue fields are
    /// the accept queue length and its limit, not bytes, so they go to the
    /// listener table and never into the byte sums.
    pub fn add(&mut self, msg: InetDiagMsg<'_>) -> Result<(), ParseError> {
        let family = Family::from_kernel(msg.family()).ok_or(ParseError::UnknownFamily {
            family: msg.family(),
        })?;
        let state = TcpState::from_kernel(msg.state())
            .ok_or(ParseError::UnknownState { state: msg.state() })?;
        let (f, s) = (family as usize, state as usize);
        self.sockets[f][s] += 1;
        if state == TcpState::Listen {
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
        } else {
            self.receive_queue_bytes[f][s] += u64::from(msg.rqueue());
            self.send_queue_bytes[f][s] += u64::from(msg.wqueue());
        }
        Ok(())
    }

    /// Listeners in a stable order (family, address, port).
    pub fn listeners(&self) -> Vec<(ListenerKey, Listener)> {
        let mut out: Vec<_> = self.listeners.iter().map(|(k, v)| (*k, *v)).collect();
        out.sort_unstable_by_key(|(k, _)| *k);
        out
    }

    /// Total sockets in one state over both families.
    pub fn total(&self, state: TcpState) -> u64 {
        Family::ALL
            .iter()
            .map(|f| self.sockets[*f as usize][state as usize])
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{AF_INET, AF_INET6};
    use crate::parse::tests::{inet_diag_msg, v4};

    fn add(stats: &mut TcpStats, bytes: &[u8]) -> Result<(), ParseError> {
        stats.add(InetDiagMsg::new(bytes).unwrap())
    }

    #[test]
    fn counts_every_state_in_both_families() {
        let mut stats = TcpStats::default();
        for family in [AF_INET, AF_INET6] {
            for state in 1..=11u8 {
                for _ in 0..state {
                    let m = inet_diag_msg(family, state, v4([10, 0, 0, 1]), 1000, 2000, 7, 11, 0);
                    add(&mut stats, &m).unwrap();
                }
            }
        }
        for family in Family::ALL {
            for state in TcpState::ALL {
                let (f, s) = (family as usize, state as usize);
                let n = u64::from(state.kernel());
                assert_eq!(stats.sockets[f][s], n, "{family:?} {state:?}");
                let bytes = if state == TcpState::Listen {
                    (0, 0)
                } else {
                    (7 * n, 11 * n)
                };
                assert_eq!(
                    (
                        stats.receive_queue_bytes[f][s],
                        stats.send_queue_bytes[f][s]
                    ),
                    bytes
                );
            }
        }
        assert_eq!(stats.total(TcpState::Closing), 22);
    }

    #[test]
    fn listeners_sum_reuseport_groups_and_stay_out_of_byte_sums() {
        let mut stats = TcpStats::default();
        let lo = v4([127, 0, 0, 1]);
        // Two sockets of one SO_REUSEPORT group, another port, and IPv6 ::.
        add(
            &mut stats,
            &inet_diag_msg(AF_INET, 10, lo, 80, 0, 3, 128, 1),
        )
        .unwrap();
        add(
            &mut stats,
            &inet_diag_msg(AF_INET, 10, lo, 80, 0, 2, 128, 2),
        )
        .unwrap();
        add(&mut stats, &inet_diag_msg(AF_INET, 10, lo, 81, 0, 0, 16, 3)).unwrap();
        add(
            &mut stats,
            &inet_diag_msg(AF_INET6, 10, [0; 16], 80, 0, 1, 4096, 4),
        )
        .unwrap();
        let listeners = stats.listeners();
        assert_eq!(listeners.len(), 3);
        assert_eq!(listeners[0].0.port, 80);
        assert_eq!(
            listeners[0].1,
            Listener {
                queue: 5,
                max: 256,
                sockets: 2
            }
        );
        assert_eq!(listeners[1].1.max, 16);
        assert_eq!(listeners[2].0.family, Family::Ipv6);
        assert_eq!(stats.receive_queue_bytes, ByState::default());
        assert_eq!(stats.send_queue_bytes, ByState::default());
        stats.clear();
        assert!(stats.listeners().is_empty());
        assert_eq!(stats.sockets, ByState::default());
    }

    #[test]
    fn ipv4_listener_key_ignores_trailing_address_bytes() {
        let mut stats = TcpStats::default();
        let mut dirty = v4([127, 0, 0, 1]);
        dirty[8] = 0xFF;
        add(
            &mut stats,
            &inet_diag_msg(AF_INET, 10, dirty, 80, 0, 1, 8, 1),
        )
        .unwrap();
        add(
            &mut stats,
            &inet_diag_msg(AF_INET, 10, v4([127, 0, 0, 1]), 80, 0, 1, 8, 1),
        )
        .unwrap();
        assert_eq!(stats.listeners().len(), 1);
    }

    #[test]
    fn rejects_unknown_states_and_families() {
        let mut stats = TcpStats::default();
        let bad_state = inet_diag_msg(AF_INET, 0, v4([1, 2, 3, 4]), 1, 2, 0, 0, 0);
        assert_eq!(
            add(&mut stats, &bad_state),
            Err(ParseError::UnknownState { state: 0 })
        );
        let bad_state = inet_diag_msg(AF_INET, 14, v4([1, 2, 3, 4]), 1, 2, 0, 0, 0);
        assert_eq!(
            add(&mut stats, &bad_state),
            Err(ParseError::UnknownState { state: 14 })
        );
        let bad_family = inet_diag_msg(1, 1, v4([1, 2, 3, 4]), 1, 2, 0, 0, 0);
        assert_eq!(
            add(&mut stats, &bad_family),
            Err(ParseError::UnknownFamily { family: 1 })
        );
        assert_eq!(stats.sockets, ByState::default());
    }
}

//! TCP sockets by remote network (`--collector.tcp.remote-networks`), from
//! the tcp collector's dump: each socket but listeners (which have no
//! remote end) counts under the most specific listed network holding its
//! remote address, or under `other`. The list is the user's, so the series
//! are bounded by it: (networks + 1) x states, every one always present.
//!
//! IPv4-mapped IPv6 remotes (`::ffff:a.b.c.d`, a dual-stack socket talking
//! IPv4) match IPv4 networks as the IPv4 address they are, so a network's
//! count does not depend on how the server socket was opened; they match
//! IPv6 networks too (`::ffff:0:0/96`) where one is more specific.

use crate::config::{Cidr, Networks};
use crate::exposition::{Families, Ns, Spec, Type};
use crate::kernel::diag::{Family, InetDiagMsg, TcpState};
use crate::table::{columns, row};

/// Counts per listed network and state, `other` last.
#[derive(Debug, Clone, Default)]
pub struct RemoteNetworks {
    /// The networks, in list order.
    networks: Vec<Cidr>,
    /// Their indexes, most specific first (longest prefix, an IPv4 prefix
    /// counting 96 more as in `::ffff:0:0/96`), so the first match is the
    /// most specific one.
    by_specificity: Vec<usize>,
    /// `[network][TcpState as usize]`, with `other` at the end.
    counts: Vec<[u64; TcpState::COUNT]>,
}

impl RemoteNetworks {
    pub fn new(networks: &Networks) -> RemoteNetworks {
        let list = networks.0.clone();
        let mut by_specificity: Vec<usize> = (0..list.len()).collect();
        by_specificity.sort_by_key(|&i| {
            std::cmp::Reverse(u16::from(list[i].prefix) + if list[i].v4 { 96 } else { 0 })
        });
        RemoteNetworks {
            counts: vec![[0; TcpState::COUNT]; list.len() + 1],
            networks: list,
            by_specificity,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    pub fn clear(&mut self) {
        self.counts.fill([0; TcpState::COUNT]);
    }

    /// Index of the most specific network holding the remote address, or
    /// the `other` index.
    fn classify(&self, family: Family, remote: &[u8; 16]) -> usize {
        let v6 = u128::from_be_bytes(*remote);
        let v4 = match family {
            Family::Ipv4 => Some(u128::from(u32::from_be_bytes([
                remote[0], remote[1], remote[2], remote[3],
            ]))),
            Family::Ipv6 if v6 >> 32 == 0xffff => Some(v6 & 0xffff_ffff),
            Family::Ipv6 => None,
        };
        self.by_specificity
            .iter()
            .copied()
            .find(|&i| {
                let n = &self.networks[i];
                match (n.v4, v4) {
                    (true, Some(a)) => n.contains(true, a),
                    (false, _) if family == Family::Ipv6 => n.contains(false, v6),
                    _ => false,
                }
            })
            .unwrap_or(self.networks.len())
    }

    #[inline]
    pub fn add(&mut self, msg: &InetDiagMsg<'_>, family: Family, state: TcpState) {
        if self.networks.is_empty() || state == TcpState::Listen {
            return;
        }
        let i = self.classify(family, &msg.remote_address());
        self.counts[i][state as usize] += 1;
    }

    /// Rows of (network label, counts by state), listed networks in list
    /// order, then `other`.
    pub fn rows(&self) -> impl Iterator<Item = (String, &[u64; TcpState::COUNT])> + '_ {
        self.networks
            .iter()
            .map(|n| n.to_string())
            .chain(std::iter::once("other".to_string()))
            .zip(self.counts.iter())
    }

    pub fn families(&self, out: &mut Families, ns: Ns<'_>) {
        if self.is_empty() {
            return;
        }
        for (network, counts) in self.rows() {
            for state in TcpState::ALL {
                if state == TcpState::Listen {
                    continue;
                }
                out.int(
                    &REMOTE_NETWORK_SOCKETS,
                    &[&network, state.label()],
                    ns,
                    counts[state as usize],
                );
            }
        }
    }

    pub fn table(&self, out: &mut String) {
        if self.is_empty() {
            return;
        }
        out.push('\n');
        let shown = [
            TcpState::Established,
            TcpState::SynSent,
            TcpState::TimeWait,
            TcpState::CloseWait,
        ];
        let mut header = vec!["Remote network".to_string()];
        header.extend(shown.iter().map(|s| s.label().to_string()));
        header.push("all".to_string());
        let mut rows = vec![header];
        for (network, counts) in self.rows() {
            let mut r = vec![network];
            r.extend(shown.iter().map(|s| counts[*s as usize].to_string()));
            r.push(counts.iter().sum::<u64>().to_string());
            rows.push(r);
        }
        out.push_str(&columns(&rows.into_iter().map(row).collect::<Vec<_>>(), 1));
    }
}

pub static REMOTE_NETWORK_SOCKETS: Spec = Spec {
    kind: Type::Gauge,
    name: "sockdiag_remote_network_sockets",
    help: "TCP sockets (listeners excepted) by the most specific network of --collector.tcp.remote-networks holding their remote address, other for the rest, and state; every listed network always present. IPv4-mapped IPv6 remotes match IPv4 networks.",
    labels: &["network", "state"],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::diag::{AF_INET, AF_INET6};
    use crate::kernel::parse::tests::{inet_diag_msg, v4};

    fn socket(family: u8, state: u8, dst: [u8; 16]) -> Vec<u8> {
        let mut m = inet_diag_msg(family, state, v4([127, 0, 0, 1]), 40000, 80, 0, 0, 1);
        m[24..40].copy_from_slice(&dst);
        m
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    fn add(r: &mut RemoteNetworks, m: &[u8]) {
        let msg = InetDiagMsg::new(m).unwrap();
        let family = Family::from_kernel(msg.family()).unwrap();
        r.add(&msg, family, TcpState::from_kernel(msg.state()).unwrap());
    }

    #[test]
    fn counts_under_the_most_specific_network() {
        let list = Networks::parse("10.0.0.0/8,10.1.0.0/16,2001:db8::/32,192.0.2.0/24").unwrap();
        let mut r = RemoteNetworks::new(&list);
        for (family, state, dst) in [
            (AF_INET, 1, v4([10, 1, 2, 3])),      // 10.1.0.0/16, not /8
            (AF_INET, 6, v4([10, 2, 0, 1])),      // 10.0.0.0/8, time_wait
            (AF_INET6, 1, v6("::ffff:10.1.9.9")), // mapped: 10.1.0.0/16
            (AF_INET6, 1, v6("2001:db8:1::5")),   // 2001:db8::/32
            (AF_INET6, 1, v6("2001:db9::5")),     // other
            (AF_INET, 1, v4([8, 8, 8, 8])),       // other
            (AF_INET, 10, v4([0, 0, 0, 0])),      // listener: not counted
        ] {
            add(&mut r, &socket(family, state, dst));
        }
        let est = TcpState::Established as usize;
        let rows: Vec<(String, u64, u64)> = r
            .rows()
            .map(|(n, c)| (n, c[est], c[TcpState::TimeWait as usize]))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("10.0.0.0/8".to_string(), 0, 1),
                ("10.1.0.0/16".to_string(), 2, 0),
                ("2001:db8::/32".to_string(), 1, 0),
                ("192.0.2.0/24".to_string(), 0, 0),
                ("other".to_string(), 2, 0),
            ]
        );
        let mut out = Families::default();
        r.families(&mut out, None);
        let text = out.encode(&[]);
        // 5 rows x 10 states (listen left out), zeros included.
        assert_eq!(
            text.matches("sockdiag_remote_network_sockets{").count(),
            50,
            "{text}"
        );
        assert!(text.contains(
            "sockdiag_remote_network_sockets{network=\"192.0.2.0/24\",state=\"established\"} 0\n"
        ));
        assert!(text.contains(
            "sockdiag_remote_network_sockets{network=\"other\",state=\"established\"} 2\n"
        ));
        r.clear();
        assert!(r.rows().all(|(_, c)| c.iter().all(|n| *n == 0)));
    }

    #[test]
    fn nothing_without_networks() {
        let mut r = RemoteNetworks::new(&Networks::default());
        add(&mut r, &socket(AF_INET, 1, v4([10, 0, 0, 1])));
        let mut out = Families::default();
        r.families(&mut out, None);
        assert!(out.encode(&[]).is_empty());
    }
}

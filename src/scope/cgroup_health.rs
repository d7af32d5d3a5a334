//! TCP health per cgroup (`--collector.tcp.info` with `--collector.cgroup`):
//! turns each namespace's per-cgroup-id health (from
//! [`tcp_health`](crate::collectors::tcp_health)) into rows by cgroup label,
//! and keeps the retransmission counter of every label.
//!
//! Why here and not in the collector: labels only exist after attribution
//! (ids resolved to paths, truncated to a depth, capped), and one label can
//! stand for different ids from one collection to the next: a deleted
//! cgroup's sockets become `unknown`, a truncated path sums several ids, and
//! a cgroup that falls under the cap goes to `other`. So a label's counter
//! cannot be recomputed from the current sockets (it would fall whenever a
//! socket closes or an id moves to another label): each collection adds the
//! growth booked to each id since the last one to the label that id falls
//! in now, and [`Totals`] keeps those sums per (namespace, label).
//!
//! Bounded: a namespace has at most `--collector.cgroup.max-series` path
//! rows plus `none`, `unknown` and `other` per collection, and a label's
//! total is forgotten once it has been absent from [`FORGET_AFTER`]
//! collections in a row (its series is gone from the output from the first
//! of them; if it comes back, its counter restarts from 0, which
//! Prometheus' rate() reads as a counter reset). A namespace no longer
//! collected takes its totals with it. So at most `FORGET_AFTER x (max +
//! 3)` totals per collected namespace.

use std::collections::HashMap;

use crate::collectors::tcp::TcpStats;
use crate::collectors::tcp_health::Health;
use crate::kernel::diag::TcpState;
use crate::scope::cgroup_attribution::{Attribution, Capped, CgroupRows};

/// Collections a label may be absent from before its total is forgotten.
pub const FORGET_AFTER: u64 = 10;

/// One id's or one label's values of one collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Row {
    /// Sockets by state (what `sockdiag_cgroup_sockets` serves).
    pub counts: [u64; TcpState::COUNT],
    /// Health sums of the established sockets.
    pub health: Health,
    /// Retransmitted segments booked since the last collection.
    pub growth: u64,
}

impl Row {
    fn merge(&mut self, other: Row) {
        self.counts
            .iter_mut()
            .zip(other.counts)
            .for_each(|(a, b)| *a += b);
        self.health.merge(&other.health);
        self.growth += other.growth;
    }
}

/// One namespace's per-cgroup health after the cap: label, this
/// collection's sums and the label's counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRows {
    pub rows: Vec<(String, Health, u64)>,
    /// Cgroups summed into `other`.
    pub dropped: usize,
}

/// The per-id rows of one namespace's tcp collection: every id with
/// sockets, plus ids with retransmission growth but no socket now (a
/// retried dump no longer saw it). Without tcp_info health, growth and
/// health are zeros.
pub fn per_id(tcp: &TcpStats) -> Vec<(Option<u64>, Row)> {
    let Some(health) = tcp.health() else {
        return tcp
            .by_cgroup()
            .map(|(id, counts)| {
                let counts = *counts;
                (
                    id,
                    Row {
                        counts,
                        ..Row::default()
                    },
                )
            })
            .collect();
    };
    let mut rows: Vec<(Option<u64>, Row)> = tcp
        .by_cgroup()
        .map(|(id, counts)| {
            let (health, growth) = health.cgroup(id);
            let counts = *counts;
            (
                id,
                Row {
                    counts,
                    health,
                    growth,
                },
            )
        })
        .collect();
    for id in health.cgroups_with_growth() {
        if !tcp.has_cgroup(id) {
            let (health, growth) = health.cgroup(id);
            rows.push((
                id,
                Row {
                    health,
                    growth,
                    ..Row::default()
                },
            ));
        }
    }
    rows
}

/// Attributes one namespace's per-id rows: the same labels, cap and cut as
/// [`Attribution::rows`] on the counts alone (the cap weighs sockets).
pub fn attribute(attribution: &mut Attribution, per_id: Vec<(Option<u64>, Row)>) -> Capped<Row> {
    attribution.rows_by(per_id, |r| r.counts.iter().sum(), Row::merge)
}

/// The socket counts of attributed rows (`sockdiag_cgroup_sockets`).
pub fn counts(rows: &Capped<Row>) -> CgroupRows {
    Capped {
        rows: rows
            .rows
            .iter()
            .map(|(label, r)| (label.clone(), r.counts))
            .collect(),
        dropped: rows.dropped,
    }
}

#[derive(Debug, Clone, Copy)]
struct Kept {
    total: u64,
    /// The collection that last served the label.
    seen: u64,
}

/// The retransmission counter of every (namespace, cgroup label), kept for
/// the exporter's life within the bounds of the module doc.
#[derive(Debug, Default)]
pub struct Totals {
    by_ns: HashMap<String, HashMap<String, Kept>>,
    collection: u64,
}

impl Totals {
    /// Starts a collection.
    pub fn start(&mut self) {
        self.collection += 1;
    }

    /// Adds one namespace's attributed rows to its labels' totals and
    /// returns the health rows to serve.
    pub fn add(&mut self, netns: &str, rows: &Capped<Row>) -> HealthRows {
        let now = self.collection;
        let kept = self.by_ns.entry(netns.to_string()).or_default();
        let out = rows
            .rows
            .iter()
            .map(|(label, r)| {
                let k = kept.entry(label.clone()).or_insert(Kept {
                    total: 0,
                    seen: now,
                });
                k.total += r.growth;
                k.seen = now;
                (label.clone(), r.health, k.total)
            })
            .collect();
        kept.retain(|_, k| now - k.seen < FORGET_AFTER);
        HealthRows {
            rows: out,
            dropped: rows.dropped,
        }
    }

    /// After a collection: forgets namespaces absent from it (`seen`: the
    /// namespaces whose rows were added).
    pub fn finish<'a>(&mut self, seen: impl IntoIterator<Item = &'a str>) {
        let seen: Vec<&str> = seen.into_iter().collect();
        self.by_ns.retain(|ns, _| seen.contains(&ns.as_str()));
    }

    /// Totals kept (all namespaces).
    pub fn len(&self) -> usize {
        self.by_ns.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::cgroup::{OTHER, UNKNOWN};
    use crate::scope::cgroup_attribution::tests::Tree;
    use std::fs;

    /// An id's row: `n` established sockets with RTT `rtt` µs each (one
    /// retransmitting when `growth` > 0) and `growth` retransmissions.
    fn row(n: u64, rtt: u64, growth: u64) -> Row {
        let mut r = Row::default();
        r.counts[TcpState::Established as usize] = n;
        r.health.rtt_buckets[0] = n;
        r.health.rtt_sum_us = n * rtt;
        r.health.retransmitting = u64::from(growth > 0);
        r.growth = growth;
        r
    }

    /// Label -> (sockets, retransmitting, counter) of one collection.
    fn served(
        totals: &mut Totals,
        a: &mut Attribution,
        per_id: Vec<(Option<u64>, Row)>,
    ) -> Vec<(String, u64, u64, u64)> {
        a.start_collection();
        totals.start();
        let rows = attribute(a, per_id);
        let out = totals.add("host", &rows);
        totals.finish(["host"]);
        assert_eq!(out.dropped, rows.dropped);
        out.rows
            .into_iter()
            .map(|(l, h, t)| (l, h.sockets(), h.retransmitting, t))
            .collect()
    }

    fn r(label: &str, sockets: u64, retransmitting: u64, total: u64) -> (String, u64, u64, u64) {
        (label.to_string(), sockets, retransmitting, total)
    }

    #[test]
    fn a_label_counter_adds_growth_and_never_falls_when_ids_move() {
        let tree = Tree::new("health", &["a/x", "a/y", "b"]);
        let stat = tree.0.join("cgroup.stat");
        fs::write(&stat, "nr_descendants 4\nnr_dying_descendants 0\n").unwrap();
        let (x, y, b) = (tree.id("a/x"), tree.id("a/y"), tree.id("b"));
        // Depth 1: /a/x and /a/y are one label, /a.
        let mut a = Attribution::new(tree.mount(), 1, 100);
        let mut totals = Totals::default();
        let got = served(
            &mut totals,
            &mut a,
            vec![(x, row(1, 60, 2)), (y, row(2, 60, 3)), (b, row(1, 60, 0))],
        );
        assert_eq!(got, vec![r("/a", 3, 2, 5), r("/b", 1, 0, 0)]);
        // x's socket closes, y's grows by 1 and b's by 4.
        let got = served(
            &mut totals,
            &mut a,
            vec![(y, row(2, 60, 1)), (b, row(1, 60, 4))],
        );
        assert_eq!(
            got,
            vec![r("/a", 2, 1, 6), r("/b", 1, 1, 4)],
            "not 1: x's 2 stay in /a"
        );
        // /a/y is removed while its socket lives on: it resolves to
        // unknown, whose counter starts with its growth from now on; /a
        // keeps its total while it is served (x is back with no growth).
        fs::remove_dir(tree.0.join("a/y")).unwrap();
        fs::write(&stat, "nr_descendants 3\nnr_dying_descendants 1\n").unwrap();
        let got = served(
            &mut totals,
            &mut a,
            vec![(x, row(1, 60, 0)), (y, row(2, 60, 2)), (b, row(1, 60, 0))],
        );
        assert_eq!(
            got,
            vec![r("/a", 1, 0, 6), r("/b", 1, 0, 4), r(UNKNOWN, 2, 1, 2)]
        );
    }

    #[test]
    fn the_cap_sums_cut_cgroups_into_other_and_totals_are_bounded() {
        let tree = Tree::new("health-cap", &["a", "b", "c"]);
        let (ia, ib, ic) = (tree.id("a"), tree.id("b"), tree.id("c"));
        // Two rows at most: the heaviest path and `other`.
        let mut a = Attribution::new(tree.mount(), 0, 2);
        let mut totals = Totals::default();
        let per_id = |ga, gb, gc| {
            vec![
                (ia, row(5, 60, ga)),
                (ib, row(1, 60, gb)),
                (ic, row(2, 60, gc)),
            ]
        };
        let got = served(&mut totals, &mut a, per_id(1, 2, 3));
        assert_eq!(got, vec![r("/a", 5, 1, 1), r(OTHER, 3, 2, 5)]);
        a.start_collection();
        assert_eq!(attribute(&mut a, per_id(0, 0, 0)).dropped, 2);
        let got = served(&mut totals, &mut a, per_id(0, 1, 0));
        assert_eq!(got, vec![r("/a", 5, 0, 1), r(OTHER, 3, 1, 6)]);
        // /a's sockets close: /a is no longer served; its total is kept
        // for FORGET_AFTER collections (a flap does not reset it), then
        // forgotten. Two paths now fit without a cut.
        let rest = || vec![(ib, row(1, 60, 0)), (ic, row(2, 60, 0))];
        assert_eq!(
            served(&mut totals, &mut a, rest()),
            vec![r("/b", 1, 0, 0), r("/c", 2, 0, 0)]
        );
        assert_eq!(totals.len(), 4, "/a, /b, /c and other");
        let got = served(&mut totals, &mut a, vec![(ia, row(9, 60, 0))]);
        assert_eq!(got, vec![r("/a", 9, 0, 1)], "back within the window");
        for _ in 0..FORGET_AFTER {
            served(&mut totals, &mut a, rest());
        }
        assert_eq!(totals.len(), 2, "only /b and /c");
        let got = served(&mut totals, &mut a, vec![(ia, row(9, 60, 0))]);
        assert_eq!(got, vec![r("/a", 9, 0, 0)], "forgotten: restarts at 0");
        // A namespace no longer collected takes its totals with it.
        totals.finish(["elsewhere"]);
        assert!(totals.is_empty());
    }
}

//! Cardinality caps: the one way any list of labelled rows is cut down to a
//! bounded number, for the served series (listeners, unix paths, per-port
//! series, cgroups) and for the table's "fullest" and "most sockets" lists.
//!
//! A cap keeps either the first rows by key (stable, cheap: the rows the
//! user named first stay) or the heaviest rows by a value order (the rows
//! that matter most stay; ties go by key, so the choice does not flap from
//! one collection to the next). What was cut is never silent: [`Capped`]
//! says how many rows went, and where a metric has a bucket for the rest
//! (`other`), [`Capped::merge_rest`] sums them into it. The caller counts
//! `dropped` in `sockdiag_series_dropped`.

use std::cmp::Ordering;

/// Rows after a cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped<K, V> {
    /// The kept rows: sorted by key, or heaviest first for [`ranked`].
    pub rows: Vec<(K, V)>,
    /// The cut rows summed, once [`Capped::merge_rest`] made a bucket and
    /// something was cut.
    pub other: Option<V>,
    /// How many rows were cut.
    pub dropped: usize,
    /// The cut rows themselves, until [`Capped::merge_rest`] sums them.
    cut: Vec<(K, V)>,
}

impl<K, V> Capped<K, V> {
    fn new(rows: Vec<(K, V)>, cut: Vec<(K, V)>) -> Capped<K, V> {
        Capped {
            dropped: cut.len(),
            rows,
            other: None,
            cut,
        }
    }

    /// Sums the cut rows into one bucket value (`other`), starting from the
    /// first cut row; no bucket when nothing was cut.
    pub fn merge_rest(mut self, mut merge: impl FnMut(&mut V, V)) -> Capped<K, V> {
        let mut cut = std::mem::take(&mut self.cut).into_iter();
        if let Some((_, mut other)) = cut.next() {
            for (_, v) in cut {
                merge(&mut other, v);
            }
            self.other = Some(other);
        }
        self
    }

    /// The kept rows and the total before the cap (`kept of total`).
    pub fn total(&self) -> usize {
        self.rows.len() + self.dropped
    }
}

/// Keeps the first `max` rows by key, sorted by key.
pub fn first<K: Ord, V>(rows: impl IntoIterator<Item = (K, V)>, max: usize) -> Capped<K, V> {
    let mut rows: Vec<(K, V)> = rows.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let cut = rows.split_off(max.min(rows.len()));
    Capped::new(rows, cut)
}

/// Keeps the `max` heaviest rows (`heavier(a, b)` is `Less` when `a` is
/// heavier; ties go by key), in rank order, heaviest first.
pub fn ranked<K: Ord, V>(
    rows: impl IntoIterator<Item = (K, V)>,
    max: usize,
    heavier: impl Fn(&V, &V) -> Ordering,
) -> Capped<K, V> {
    let mut rows: Vec<(K, V)> = rows.into_iter().collect();
    rows.sort_by(|a, b| heavier(&a.1, &b.1).then_with(|| a.0.cmp(&b.0)));
    let cut = rows.split_off(max.min(rows.len()));
    Capped::new(rows, cut)
}

/// Keeps the `max` heaviest rows, sorted by key.
pub fn heaviest<K: Ord, V>(
    rows: impl IntoIterator<Item = (K, V)>,
    max: usize,
    heavier: impl Fn(&V, &V) -> Ordering,
) -> Capped<K, V> {
    let mut capped = ranked(rows, max, heavier);
    capped.rows.sort_by(|a, b| a.0.cmp(&b.0));
    capped
}

/// [`heaviest`] for a metric whose bucket for the rest counts against the
/// cap: at most `max` rows in all (at least 1), so when rows are cut, only
/// `max - 1` are kept and the bucket is the last.
pub fn heaviest_with_bucket<K: Ord, V>(
    rows: impl IntoIterator<Item = (K, V)>,
    max: usize,
    heavier: impl Fn(&V, &V) -> Ordering,
) -> Capped<K, V> {
    let rows: Vec<(K, V)> = rows.into_iter().collect();
    let max = max.max(1);
    let keep = if rows.len() > max { max - 1 } else { max };
    heaviest(rows, keep, heavier)
}

/// Heavier first by a numeric weight (for [`heaviest`] and [`ranked`]).
pub fn by_weight<V>(weight: impl Fn(&V) -> u64) -> impl Fn(&V, &V) -> Ordering {
    move |a, b| weight(b).cmp(&weight(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn first_keeps_the_lowest_keys_and_counts_the_rest() {
        let capped = first(rows(&[("c", 1), ("a", 9), ("b", 5)]), 2);
        assert_eq!(capped.rows, rows(&[("a", 9), ("b", 5)]));
        assert_eq!((capped.dropped, capped.other, capped.total()), (1, None, 3));
        let all = first(rows(&[("b", 1), ("a", 2)]), 5);
        assert_eq!((all.rows, all.dropped), (rows(&[("a", 2), ("b", 1)]), 0));
        assert_eq!(first(rows(&[("a", 1)]), 0).dropped, 1);
    }

    #[test]
    fn heaviest_keeps_the_largest_ties_by_key_sorted_by_key() {
        let input = rows(&[("d", 1), ("c", 5), ("b", 5), ("a", 2)]);
        let capped = heaviest(input.clone(), 2, by_weight(|v: &u64| *v));
        assert_eq!(capped.rows, rows(&[("b", 5), ("c", 5)]));
        assert_eq!(capped.dropped, 2);
        let ranked = ranked(input, 3, by_weight(|v: &u64| *v));
        assert_eq!(ranked.rows, rows(&[("b", 5), ("c", 5), ("a", 2)]));
    }

    #[test]
    fn merge_rest_sums_only_what_was_cut() {
        let capped = first(rows(&[("a", 1), ("b", 2), ("c", 4)]), 1).merge_rest(|a, b| *a += b);
        assert_eq!((capped.other, capped.dropped), (Some(6), 2));
        let uncut = first(rows(&[("a", 1)]), 1).merge_rest(|a, b| *a += b);
        assert_eq!((uncut.other, uncut.dropped), (None, 0));
    }

    #[test]
    fn a_bucket_counts_against_the_cap() {
        let w = || by_weight(|v: &u64| *v);
        let input = rows(&[("a", 1), ("b", 3), ("c", 2)]);
        let two = heaviest_with_bucket(input.clone(), 2, w()).merge_rest(|a, b| *a += b);
        assert_eq!(
            (two.rows, two.other, two.dropped),
            (rows(&[("b", 3)]), Some(3), 2)
        );
        let three = heaviest_with_bucket(input.clone(), 3, w());
        assert_eq!((three.rows.len(), three.dropped), (3, 0));
        let zero = heaviest_with_bucket(input, 0, w()).merge_rest(|a, b| *a += b);
        assert_eq!((zero.rows.len(), zero.other, zero.dropped), (0, Some(6), 3));
    }
}

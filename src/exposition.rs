//! The Prometheus text exposition of one collection: metric definitions
//! ([`Spec`]), the families built afresh from each collection's results
//! ([`Families`]), and their encoding.
//!
//! Nothing here outlives a collection: a series that the collection did
//! not set (a failed collector, a namespace that is gone) is simply absent.
//! The encoding is prometheus' text format 0.0.4: families sorted by name,
//! empty families left out, series sorted by their label values, labels by
//! name.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::sync::Arc;

use prometheus::proto::MetricFamily;
use prometheus::TextEncoder;

/// Gauge, counter or histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Gauge,
    Counter,
    /// Set with [`Families::histogram`] only; its `_bucket`, `_sum` and
    /// `_count` series come from one [`Hist`].
    Histogram,
}

/// One histogram series: cumulative counts at each upper bound (`le`,
/// ascending; `+Inf` is implied by `count`), the sample count and sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// One metric's definition: declared once, next to what produces it.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Type,
    pub labels: &'static [&'static str],
}

/// The `netns` label value of the series being set; None without
/// `--collector.netns` (no such label then).
pub type Ns<'a> = Option<&'a str>;

/// Labels a series can have: a spec's own (at most 4 in the catalogue)
/// plus `netns`.
pub const MAX_LABELS: usize = 5;

/// A series' label values as ids into [`Families`]' interned strings, in
/// label-name order; slots past the family's label count are 0.
///
/// With `--collector.netns` a collection has tens of thousands of series
/// (about 126 per empty namespace) whose label values are a few hundred
/// distinct strings (states, families, collectors, namespace names): a
/// heap `String` per value per series cost more than the text itself.
type Key = [u32; MAX_LABELS];

/// One `set` or `add` of a series, in the order they were made.
#[derive(Debug, Clone, Copy)]
struct Op {
    key: Key,
    value: f64,
    /// Adds `value` to the series (created at 0) instead of setting it.
    add: bool,
}

/// One family's series: label values (in label-name order) to value.
#[derive(Clone)]
struct Family {
    spec: &'static Spec,
    /// Label names, sorted, and for each the index of its value in the
    /// order the caller gives them (spec order, then `netns`).
    names: Vec<(&'static str, usize)>,
    /// Every set and add in order (32 bytes each; a `BTreeMap` of the
    /// series cost about 55 per series, its nodes half full), sorted and
    /// folded into one value per series by [`Family::fold`] before writing.
    series: Vec<Op>,
    /// Histogram families' series (the value in `series` is unused).
    histograms: BTreeMap<Key, Hist>,
}

/// The families of one collection, built series by series.
#[derive(Default, Clone)]
pub struct Families {
    families: BTreeMap<&'static str, Family>,
    /// Every label value once; a [`Key`] holds indices into `values`.
    values: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
    /// Operations each family is expected to get (see [`Sizes`]).
    hints: Sizes,
}

/// How many operations each family got in a collection: the next
/// collection's families reserve that much (plus 1/32) up front. With
/// 500 namespaces a family gets tens of thousands of operations, and a
/// `Vec` grown by doubling holds up to twice that, copied at each step:
/// reserving from the last collection's sizes took about 1.5 MB off the
/// server's peak RSS.
pub type Sizes = HashMap<&'static str, usize>;

impl Families {
    /// Families that reserve, for each family, the operations `hints`
    /// gives it (the last collection's [`sizes`](Self::sizes)).
    pub fn with_hints(hints: Sizes) -> Families {
        Families {
            hints,
            ..Families::default()
        }
    }

    /// How many operations each family got.
    pub fn sizes(&self) -> Sizes {
        self.families
            .iter()
            .map(|(name, family)| (*name, family.series.len()))
            .collect()
    }

    /// The id of `value` in `values`, added if new.
    fn intern(values: &mut Vec<Arc<str>>, ids: &mut HashMap<Arc<str>, u32>, value: &str) -> u32 {
        if let Some(&id) = ids.get(value) {
            return id;
        }
        let id = u32::try_from(values.len()).expect("fewer than 2^32 label values");
        let value: Arc<str> = Arc::from(value);
        values.push(Arc::clone(&value));
        ids.insert(value, id);
        id
    }

    /// The family of `spec` (created empty) and the key of one of its
    /// series. `values` follow `spec.labels`; `ns`, when given, is the
    /// `netns` label.
    fn key(&mut self, spec: &'static Spec, values: &[&str], ns: Ns<'_>) -> (&mut Family, Key) {
        debug_assert_eq!(values.len(), spec.labels.len(), "{}", spec.name);
        let family = self.families.entry(spec.name).or_insert_with(|| {
            let mut names: Vec<(&'static str, usize)> =
                spec.labels.iter().copied().zip(0..).collect();
            if ns.is_some() {
                names.push(("netns", spec.labels.len()));
            }
            assert!(
                names.len() <= MAX_LABELS,
                "{}: more than {MAX_LABELS} labels",
                spec.name
            );
            names.sort_unstable();
            let hint = self.hints.get(spec.name).map_or(0, |n| n + n / 32);
            Family {
                spec,
                names,
                series: Vec::with_capacity(hint),
                histograms: BTreeMap::new(),
            }
        });
        let mut key = [0; MAX_LABELS];
        for (slot, &(_, i)) in key.iter_mut().zip(&family.names) {
            let value = match values.get(i) {
                Some(v) => v,
                None => ns.unwrap_or_default(),
            };
            *slot = Self::intern(&mut self.values, &mut self.ids, value);
        }
        (family, key)
    }

    /// Sets (or with `add`, adds to) one series, created at 0.
    fn op(&mut self, spec: &'static Spec, values: &[&str], ns: Ns<'_>, value: f64, add: bool) {
        let (family, key) = self.key(spec, values, ns);
        family.series.push(Op { key, value, add });
    }

    /// Sets one histogram series (`spec.kind` must be
    /// [`Type::Histogram`]).
    pub fn histogram(&mut self, spec: &'static Spec, values: &[&str], ns: Ns<'_>, hist: Hist) {
        debug_assert_eq!(spec.kind, Type::Histogram, "{}", spec.name);
        let (family, key) = self.key(spec, values, ns);
        family.series.push(Op {
            key,
            value: 0.0,
            add: true,
        });
        family.histograms.insert(key, hist);
    }

    /// Sets one series.
    pub fn set(&mut self, spec: &'static Spec, values: &[&str], ns: Ns<'_>, value: f64) {
        self.op(spec, values, ns, value, false);
    }

    /// Adds to one series (created at 0).
    pub fn add(&mut self, spec: &'static Spec, values: &[&str], ns: Ns<'_>, value: f64) {
        self.op(spec, values, ns, value, true);
    }

    /// Sets an integer series (the kernel's u64 counts are exact in f64 up
    /// to 2^53).
    pub fn int(&mut self, spec: &'static Spec, values: &[&str], ns: Ns<'_>, value: u64) {
        self.set(spec, values, ns, value as f64);
    }

    /// The text exposition: these families plus `extra` collectors' (the
    /// process metrics), families sorted by name. Works on a copy (for
    /// tests and readers that keep the families); a collection uses
    /// [`into_text`](Self::into_text) or [`write_to`](Self::write_to).
    pub fn encode(&self, extra: &[&dyn prometheus::core::Collector]) -> String {
        self.clone().into_text(extra)
    }

    /// [`encode`](Self::encode), freeing each family once it is written.
    ///
    /// Our families are written by hand (the same bytes as the prometheus
    /// crate's `TextEncoder`, checked in the tests) straight into one
    /// buffer of the exact size, measured by a first pass. The crate's
    /// encoder wants each family as a `MetricFamily` proto (several hundred
    /// bytes per series) and its `String` grows by doubling and copying:
    /// with 500 empty namespaces (5.5 MB of text) that peaked at 35 MiB.
    /// Now the heap peak is the text plus the families' compact form (a
    /// 32-byte entry per series), which are freed as they are written.
    pub fn into_text(mut self, extra: &[&dyn prometheus::core::Collector]) -> String {
        self.fold();
        let extra = extra_texts(extra);
        let mut size = Counter(0);
        self.write(&extra, &mut size).expect("counting cannot fail");
        let mut out = String::with_capacity(size.0);
        self.drain(extra, &mut out)
            .expect("writing to a String cannot fail");
        debug_assert_eq!(out.len(), size.0);
        out
    }

    /// [`into_text`](Self::into_text) written to `out` as it is made (for
    /// `dump`, which needs no copy of the whole text in memory).
    pub fn write_to(
        mut self,
        extra: &[&dyn prometheus::core::Collector],
        out: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        self.fold();
        let mut out = IoWriter {
            inner: std::io::BufWriter::with_capacity(64 * 1024, out),
            error: None,
        };
        match self.drain(extra_texts(extra), &mut out) {
            Ok(()) => out.inner.flush(),
            Err(fmt::Error) => Err(out
                .error
                .unwrap_or_else(|| std::io::Error::other("formatting failed"))),
        }
    }

    /// Writes and frees the families one at a time, sorted by name, with
    /// `extra`'s (already text, by name) among them.
    fn drain(mut self, extra: BTreeMap<String, String>, out: &mut impl fmt::Write) -> fmt::Result {
        let mut extra = extra.into_iter().peekable();
        while let Some((name, family)) = self.families.pop_first() {
            while let Some((_, text)) = extra.next_if(|(n, _)| n.as_str() < name) {
                out.write_str(&text)?;
            }
            // As before: a name both here and in `extra` is served from `extra`.
            if let Some((_, text)) = extra.next_if(|(n, _)| n.as_str() == name) {
                out.write_str(&text)?;
                continue;
            }
            write_family(&family, &self.values, out)?;
        }
        for (_, text) in extra {
            out.write_str(&text)?;
        }
        Ok(())
    }

    /// Folds every family's operations into its series.
    fn fold(&mut self) {
        for family in self.families.values_mut() {
            family.fold(&self.values);
        }
    }

    /// Writes every family (folded), ours and `extra`'s (already text, by
    /// name), sorted by name.
    fn write(&self, extra: &BTreeMap<String, String>, out: &mut impl fmt::Write) -> fmt::Result {
        let mut extra = extra.iter().peekable();
        for (&name, family) in &self.families {
            while let Some((_, text)) = extra.next_if(|(n, _)| n.as_str() < name) {
                out.write_str(text)?;
            }
            if let Some((_, text)) = extra.next_if(|(n, _)| n.as_str() == name) {
                out.write_str(text)?;
                continue;
            }
            write_family(family, &self.values, out)?;
        }
        for (_, text) in extra {
            out.write_str(text)?;
        }
        Ok(())
    }
}

/// The `extra` collectors' non-empty families, each encoded by the
/// prometheus crate's encoder, by name.
fn extra_texts(extra: &[&dyn prometheus::core::Collector]) -> BTreeMap<String, String> {
    extra
        .iter()
        .flat_map(|c| c.collect())
        .filter(|family: &MetricFamily| !family.get_metric().is_empty())
        .map(|family| {
            let text = TextEncoder::new()
                .encode_to_string(std::slice::from_ref(&family))
                .expect("writing to a String cannot fail");
            (family.name().to_string(), text)
        })
        .collect()
}

/// `fmt::Write` onto an `io::Write`, keeping the I/O error.
struct IoWriter<W: std::io::Write> {
    inner: W,
    error: Option<std::io::Error>,
}

impl<W: std::io::Write> fmt::Write for IoWriter<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.inner.write_all(s.as_bytes()).map_err(|e| {
            self.error = Some(e);
            fmt::Error
        })
    }
}

/// Counts the bytes written to it.
struct Counter(usize);

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

impl Family {
    /// Sorts the operations by the label value strings (stably: in the
    /// order they were made within a series) and folds each series'
    /// into one: a set replaces the value, an add adds to it.
    fn fold(&mut self, values: &[Arc<str>]) {
        let n = self.names.len();
        self.series
            .sort_by(|a, b| compare(&a.key[..n], &b.key[..n], values));
        let mut previous: Option<Key> = None;
        for op in &mut self.series {
            // A series' first add starts from 0 (0 + -0 is 0, as before).
            if previous != Some(op.key) && op.add {
                op.value += 0.0;
            }
            previous = Some(op.key);
        }
        self.series.dedup_by(|later, kept| {
            if later.key != kept.key {
                return false;
            }
            match later.add {
                true => kept.value += later.value,
                false => kept.value = later.value,
            }
            true
        });
    }
}

/// One family in text format 0.0.4, exactly as the prometheus crate's
/// `TextEncoder` writes it; nothing for a family without series. The
/// family must be folded ([`Family::fold`]): one value per series, sorted
/// by label values compared as strings.
fn write_family(family: &Family, values: &[Arc<str>], out: &mut impl fmt::Write) -> fmt::Result {
    if family.series.is_empty() {
        return Ok(());
    }
    let spec = family.spec;
    let name = spec.name;
    if !spec.help.is_empty() {
        out.write_str("# HELP ")?;
        out.write_str(name)?;
        out.write_char(' ')?;
        escape(spec.help, false, out)?;
        out.write_char('\n')?;
    }
    out.write_str("# TYPE ")?;
    out.write_str(name)?;
    out.write_str(match spec.kind {
        Type::Gauge => " gauge\n",
        Type::Counter => " counter\n",
        Type::Histogram => " histogram\n",
    })?;
    let labels = |key: &Key| Labels {
        names: &family.names,
        key: *key,
        values,
    };
    for &Op { ref key, value, .. } in &family.series {
        match spec.kind {
            Type::Gauge | Type::Counter => sample(out, name, "", labels(key), None, value)?,
            Type::Histogram => {
                let empty = Hist::default();
                let hist = family.histograms.get(key).unwrap_or(&empty);
                let mut inf_seen = false;
                for &(le, count) in &hist.buckets {
                    let le_text = le.to_string();
                    sample(
                        out,
                        name,
                        "_bucket",
                        labels(key),
                        Some(&le_text),
                        count as f64,
                    )?;
                    inf_seen |= le.is_sign_positive() && le.is_infinite();
                }
                if !inf_seen {
                    let count = hist.count as f64;
                    sample(out, name, "_bucket", labels(key), Some("+Inf"), count)?;
                }
                sample(out, name, "_sum", labels(key), None, hist.sum)?;
                sample(out, name, "_count", labels(key), None, hist.count as f64)?;
            }
        }
    }
    Ok(())
}

/// Label value lists compared as the strings they stand for.
fn compare(a: &[u32], b: &[u32], values: &[Arc<str>]) -> Ordering {
    for (&x, &y) in a.iter().zip(b) {
        if x != y {
            match values[x as usize].cmp(&values[y as usize]) {
                Ordering::Equal => {}
                other => return other,
            }
        }
    }
    a.len().cmp(&b.len())
}

/// One series' labels: names (sorted) and the ids of their values.
struct Labels<'a> {
    names: &'a [(&'static str, usize)],
    key: Key,
    values: &'a [Arc<str>],
}

/// One sample line: `name{label="value",...,le="bound"} value`. The value
/// is written with `f64`'s `Display` as the prometheus crate does (`NaN`,
/// `inf`, `-inf`, integers without a fraction).
fn sample(
    out: &mut impl fmt::Write,
    name: &str,
    suffix: &str,
    labels: Labels<'_>,
    le: Option<&str>,
    value: f64,
) -> fmt::Result {
    out.write_str(name)?;
    out.write_str(suffix)?;
    let pairs = labels
        .names
        .iter()
        .zip(labels.key)
        .map(|(&(name, _), id)| (name, &*labels.values[id as usize]));
    let mut separator = '{';
    for (label, value) in pairs.chain(le.map(|le| ("le", le))) {
        out.write_char(separator)?;
        out.write_str(label)?;
        out.write_str("=\"")?;
        escape(value, true, out)?;
        out.write_char('"')?;
        separator = ',';
    }
    if separator == ',' {
        out.write_char('}')?;
    }
    writeln!(out, " {value}")
}

/// Text format 0.0.4 escaping: backslash and newline, and in label values
/// the double quote.
fn escape(text: &str, quote: bool, out: &mut impl fmt::Write) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(|c| c == '\\' || c == '\n' || (quote && c == '"')) {
        out.write_str(&rest[..at])?;
        out.write_str(match rest.as_bytes()[at] {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            _ => "\\\"",
        })?;
        rest = &rest[at + 1..];
    }
    out.write_str(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    static A: Spec = Spec {
        name: "t_a",
        help: "A \"quoted\" help.",
        kind: Type::Gauge,
        labels: &["state", "family"],
    };
    static B: Spec = Spec {
        name: "t_b_total",
        help: "B.",
        kind: Type::Counter,
        labels: &[],
    };
    static EMPTY: Spec = Spec {
        name: "t_empty",
        help: "never set",
        kind: Type::Gauge,
        labels: &["x"],
    };

    #[test]
    fn families_are_sorted_and_labels_by_name() {
        let mut f = Families::default();
        f.int(&B, &[], None, 3);
        f.int(&A, &["listen", "ipv6"], Some("host"), 2);
        f.int(&A, &["close", "ipv6"], Some("host"), 1);
        f.int(&A, &["close", "ipv4"], Some("pod"), 7);
        f.add(&A, &["close", "ipv4"], Some("pod"), 1.0);
        let text = f.encode(&[]);
        assert_eq!(
            text,
            "# HELP t_a A \"quoted\" help.\n\
             # TYPE t_a gauge\n\
             t_a{family=\"ipv4\",netns=\"pod\",state=\"close\"} 8\n\
             t_a{family=\"ipv6\",netns=\"host\",state=\"close\"} 1\n\
             t_a{family=\"ipv6\",netns=\"host\",state=\"listen\"} 2\n\
             # HELP t_b_total B.\n\
             # TYPE t_b_total counter\n\
             t_b_total 3\n"
        );
        let _ = &EMPTY;
    }

    /// The next collection's families reserve what the last one's got,
    /// and write the same text whatever they reserved.
    #[test]
    fn families_reserve_the_last_collections_sizes() {
        let fill = |f: &mut Families| {
            for i in 0..1500 {
                f.int(&A, &["listen", "ipv4"], Some(&format!("ns{i}")), i);
            }
            f.int(&B, &[], None, 3);
        };
        let mut first = Families::default();
        fill(&mut first);
        let sizes = first.sizes();
        assert_eq!(sizes.get("t_a"), Some(&1500));
        assert_eq!(sizes.get("t_b_total"), Some(&1));
        let mut next = Families::with_hints(sizes);
        fill(&mut next);
        let capacity = next.families["t_a"].series.capacity();
        // Doubling would have made it 2048.
        assert!((1500..1600).contains(&capacity), "capacity {capacity}");
        assert_eq!(next.encode(&[]), first.encode(&[]));
    }

    #[test]
    fn histograms_encode_buckets_sum_and_count() {
        static H: Spec = Spec {
            name: "t_h_seconds",
            help: "H.",
            kind: Type::Histogram,
            labels: &["port"],
        };
        let mut f = Families::default();
        let hist = Hist {
            buckets: vec![(0.001, 1), (0.5, 3)],
            count: 4,
            sum: 2.25,
        };
        f.histogram(&H, &["80"], Some("host"), hist);
        assert_eq!(
            f.encode(&[]),
            "# HELP t_h_seconds H.\n\
             # TYPE t_h_seconds histogram\n\
             t_h_seconds_bucket{netns=\"host\",port=\"80\",le=\"0.001\"} 1\n\
             t_h_seconds_bucket{netns=\"host\",port=\"80\",le=\"0.5\"} 3\n\
             t_h_seconds_bucket{netns=\"host\",port=\"80\",le=\"+Inf\"} 4\n\
             t_h_seconds_sum{netns=\"host\",port=\"80\"} 2.25\n\
             t_h_seconds_count{netns=\"host\",port=\"80\"} 4\n"
        );
    }

    #[test]
    fn an_empty_collection_encodes_to_nothing() {
        assert_eq!(Families::default().encode(&[]), "");
    }

    /// What the prometheus crate's encoder writes for one family given as
    /// (label pairs, value or histogram) rows, in row order.
    /// One series for [`crate_text`]: label pairs, and a value or a histogram.
    type Row<'a> = (Vec<(&'a str, &'a str)>, Result<f64, Hist>);

    fn crate_text(spec: &Spec, rows: &[Row<'_>]) -> String {
        use prometheus::proto::{
            Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
        };
        let mut family = MetricFamily::default();
        family.set_name(spec.name.to_string());
        family.set_help(spec.help.to_string());
        family.set_field_type(match spec.kind {
            Type::Gauge => MetricType::GAUGE,
            Type::Counter => MetricType::COUNTER,
            Type::Histogram => MetricType::HISTOGRAM,
        });
        let metrics = rows
            .iter()
            .map(|(labels, value)| {
                let mut metric = Metric::default();
                let pairs = labels
                    .iter()
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(name.to_string());
                        pair.set_value(value.to_string());
                        pair
                    })
                    .collect();
                metric.set_label(pairs);
                match (spec.kind, value) {
                    (Type::Gauge, Ok(v)) => {
                        let mut gauge = Gauge::default();
                        gauge.set_value(*v);
                        metric.set_gauge(gauge);
                    }
                    (Type::Counter, Ok(v)) => {
                        let mut counter = Counter::default();
                        counter.set_value(*v);
                        metric.set_counter(counter);
                    }
                    (_, Err(hist)) => {
                        let mut h = Histogram::default();
                        h.set_sample_count(hist.count);
                        h.set_sample_sum(hist.sum);
                        let buckets = hist
                            .buckets
                            .iter()
                            .map(|&(le, n)| {
                                let mut b = Bucket::default();
                                b.set_upper_bound(le);
                                b.set_cumulative_count(n);
                                b
                            })
                            .collect();
                        h.set_bucket(buckets);
                        metric.set_histogram(h);
                    }
                    _ => unreachable!(),
                }
                metric
            })
            .collect();
        family.set_metric(metrics);
        TextEncoder::new()
            .encode_to_string(&[family])
            .expect("encodes")
    }

    #[test]
    fn the_hand_written_encoder_writes_the_crates_bytes_for_tricky_values() {
        static G: Spec = Spec {
            name: "t_tricky",
            help: "Back\\slash, new\nline and \"quotes\".",
            kind: Type::Gauge,
            labels: &["v"],
        };
        static C: Spec = Spec {
            name: "t_tricky_total",
            help: "",
            kind: Type::Counter,
            labels: &[],
        };
        static H: Spec = Spec {
            name: "t_tricky_seconds",
            help: "h\\",
            kind: Type::Histogram,
            labels: &["port"],
        };
        // Label values sorted as strings, as our encoder sorts them.
        let values: [(&str, f64); 12] = [
            ("", 0.0),
            ("a\nb", f64::NEG_INFINITY),
            ("a\"b", f64::NAN),
            ("a\\b", f64::INFINITY),
            ("big", 9007199254740993.0),
            ("e21", 1e21),
            ("frac", 0.1),
            ("neg", -2.5),
            ("negzero", -0.0),
            ("small", 1.5e-9),
            ("u64max", u64::MAX as f64),
            ("\u{e9}t\u{e9}", 42.0),
        ];
        let mut ours = Families::default();
        // Set out of order: the encoder sorts.
        for &(v, x) in values.iter().rev() {
            ours.set(&G, &[v], None, x);
        }
        ours.int(&C, &[], None, 1 << 60);
        let with_inf = Hist {
            buckets: vec![(0.001, 1), (2.5e-5, 1), (f64::INFINITY, 7)],
            count: 7,
            sum: f64::NAN,
        };
        let plain = Hist {
            buckets: vec![(1.0, 0), (10.0, 3)],
            count: 4,
            sum: 12.75,
        };
        ours.histogram(&H, &["8\"0"], Some("a\\ns"), with_inf.clone());
        ours.histogram(&H, &["80"], Some("host"), plain.clone());
        let expected = crate_text(
            &G,
            &values
                .iter()
                .map(|&(v, x)| (vec![("v", v)], Ok(x)))
                .collect::<Vec<_>>(),
        ) + &crate_text(&C, &[(vec![], Ok((1u64 << 60) as f64))])
            + &crate_text(
                &H,
                &[
                    (vec![("netns", "a\\ns"), ("port", "8\"0")], Err(with_inf)),
                    (vec![("netns", "host"), ("port", "80")], Err(plain)),
                ],
            );
        // Families sorted by name: t_tricky, t_tricky_seconds, t_tricky_total.
        let (g, rest) = expected.split_at(expected.find("# TYPE t_tricky_total").unwrap());
        let (c, h) = rest.split_at(rest.find("# HELP t_tricky_seconds").unwrap());
        let expected = format!("{g}{h}{c}");
        assert_eq!(ours.encode(&[]), expected);
        assert_eq!(ours.into_text(&[]), expected);
    }

    static C: Spec = Spec {
        name: "t_c",
        help: "C.",
        kind: Type::Gauge,
        labels: &[],
    };

    #[test]
    fn sets_and_adds_apply_in_the_order_they_were_made() {
        let mut f = Families::default();
        f.add(&B, &[], None, 5.0);
        f.int(&A, &["x", "y"], None, 9);
        f.set(&B, &[], None, 2.0);
        f.int(&A, &["x", "y"], None, 4);
        f.add(&B, &[], None, 1.0);
        // Created at 0: adding -0 gives 0, not -0.
        f.add(&C, &[], None, -0.0);
        let text = f.encode(&[]);
        assert!(text.contains("t_a{family=\"y\",state=\"x\"} 4\n"), "{text}");
        assert!(text.contains("\nt_b_total 3\n"), "{text}");
        assert_eq!(text.matches("t_a{").count(), 1, "{text}");
        assert!(text.ends_with("\nt_c 0\n"), "{text}");
    }

    #[test]
    fn dump_streaming_writes_the_same_bytes() {
        let mut f = Families::default();
        f.int(&B, &[], None, 3);
        f.int(&A, &["listen", "ipv\n6"], Some("host"), 2);
        let text = f.encode(&[]);
        let mut out = Vec::new();
        f.write_to(&[], &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }
}

//! The scrape cache: every scrape inside the freshness window is served the
//! same rendered snapshot, so any number of scrapers cost one kernel dump.
//!
//! The window is max(--cache.ttl, RATE_FACTOR x the last cycle's own
//! duration), where a cycle is the collection and its encoding (text,
//! summary and gzip, all made on the collection thread): however fast
//! scrapes arrive, collecting never takes more than 1/RATE_FACTOR of one
//! core.
//!
//! An [`Entry`] is immutable and reference counted: every response serving
//! it shares its text or gzip bytes ([`Bytes`]) instead of copying them, so
//! clients that stop reading hold references, not copies of the body.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::{write::GzEncoder, Compression};

use crate::collectors::KindSet;
use crate::cycle::exporter::Snapshot;

/// The minimum spacing of collections, in multiples of their duration.
pub const RATE_FACTOR: u32 = 4;

/// Response bytes shared by every connection that serves them.
///
/// An `Arc<Vec<u8>>` rather than `Arc<[u8]>`: the text is made as a
/// `String` of its exact size and moved in; `Arc<[u8]>` would copy it
/// (with `--collector.netns` and 500 namespaces, 5.5 MB more at the peak).
pub type Bytes = Arc<Vec<u8>>;

/// One collection's output, encoded both ways, shared read-only.
#[derive(Debug)]
pub struct Entry {
    /// The Prometheus text exposition.
    pub text: Bytes,
    /// The same, gzip-compressed.
    pub gzip: Bytes,
    /// The human summary (landing page).
    pub summary: String,
    /// When the collection started (monotonic).
    pub started: Instant,
    /// The whole cycle: collection, encoding and compression.
    pub cycle: Duration,
    /// The collectors it was collected with (its cache key).
    pub set: KindSet,
}

impl Entry {
    /// Encodes a snapshot; `cycle_started` is when its collection began, so
    /// the entry's `cycle` covers the collection and all encoding.
    pub fn encode(snapshot: Snapshot, cycle_started: Instant) -> Entry {
        let text: Bytes = Arc::new(snapshot.text.into_bytes());
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        let gzip = encoder
            .write_all(&text)
            .and_then(|()| encoder.finish())
            .expect("gzip into memory cannot fail");
        Entry {
            text,
            gzip: Arc::from(gzip),
            summary: snapshot.summary,
            started: snapshot.started,
            cycle: cycle_started.elapsed(),
            set: snapshot.set,
        }
    }
}

/// How many collector sets keep an entry at most; the least recently
/// served goes first. With four collectors there are at most 15 sets, so
/// today this bounds nothing but a future registry of many collectors.
pub const MAX_ENTRIES: usize = 16;

/// The entries, one per collector set (see [`KindSet`]): a scrape with a
/// `collect[]` filter is served only from a collection of exactly its set.
pub struct Cache {
    ttl: Duration,
    /// Most recently stored or served first.
    entries: Vec<Arc<Entry>>,
    capacity: usize,
}

impl Cache {
    pub fn new(ttl: Duration) -> Cache {
        Cache::with_capacity(ttl, MAX_ENTRIES)
    }

    /// At most `capacity` (at least 1) collector sets are kept.
    pub fn with_capacity(ttl: Duration, capacity: usize) -> Cache {
        Cache {
            ttl,
            entries: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// How long an entry whose cycle took `cycle` is served.
    pub fn max_age(&self, cycle: Duration) -> Duration {
        self.ttl.max(cycle.saturating_mul(RATE_FACTOR))
    }

    /// A sentence for the landing page and README on how old data can be.
    pub fn freshness(&self) -> String {
        format!(
            "Collections are cached: a scrape is answered with data up to max(--cache.ttl = {:?}, {RATE_FACTOR} x the last collection's duration, encoding included) old, and any number of scrapers inside that window cost one kernel dump; scrapes that arrive while a collection runs wait for it and share it. Scrapes with a collect[] filter are cached per set of collectors, each with its own window. sockdiag_collect_timestamp_seconds tells when the served data was collected.",
            self.ttl
        )
    }

    fn position(&self, set: KindSet) -> Option<usize> {
        self.entries.iter().position(|e| e.set == set)
    }

    /// The entry of `set`, if there is one still inside its window at
    /// `now` (it becomes the most recently used).
    pub fn fresh(&mut self, set: KindSet, now: Instant) -> Option<Arc<Entry>> {
        let at = self.position(set)?;
        let entry = &self.entries[at];
        if now.saturating_duration_since(entry.started) >= self.max_age(entry.cycle) {
            return None;
        }
        let entry = self.entries.remove(at);
        self.entries.insert(0, Arc::clone(&entry));
        Some(entry)
    }

    /// The last entry of `set`, however old.
    pub fn latest(&self, set: KindSet) -> Option<&Arc<Entry>> {
        self.position(set).map(|at| &self.entries[at])
    }

    /// Stores a newly collected entry in place of its set's last one; the
    /// least recently used set's entry goes if there are too many.
    pub fn store(&mut self, entry: Arc<Entry>) {
        if let Some(at) = self.position(entry.set) {
            self.entries.remove(at);
        }
        self.entries.insert(0, entry);
        self.entries.truncate(self.capacity);
    }

    /// How many sets have an entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::Kind;
    use std::io::Read as _;

    const ALL: KindSet = KindSet::ALL;

    fn entry(started: Instant, cycle: Duration, text: &str) -> Arc<Entry> {
        entry_of(ALL, started, cycle, text)
    }

    fn entry_of(set: KindSet, started: Instant, cycle: Duration, text: &str) -> Arc<Entry> {
        let snapshot = Snapshot {
            text: text.into(),
            summary: String::new(),
            started,
            duration: cycle,
            success: true,
            set,
        };
        let mut entry = Entry::encode(snapshot, Instant::now());
        entry.cycle = cycle;
        Arc::new(entry)
    }

    #[test]
    fn serves_one_collection_within_the_ttl() {
        let t0 = Instant::now();
        let mut cache = Cache::new(Duration::from_secs(1));
        assert!(cache.fresh(ALL, t0).is_none() && cache.latest(ALL).is_none());
        cache.store(entry(t0, Duration::from_millis(1), "a"));
        for offset_ms in [0, 10, 500, 999] {
            let now = t0 + Duration::from_millis(offset_ms);
            assert_eq!(&*cache.fresh(ALL, now).expect("fresh").text, b"a");
        }
        let now = t0 + Duration::from_millis(1000);
        assert!(cache.fresh(ALL, now).is_none());
        assert_eq!(&*cache.latest(ALL).unwrap().text, b"a", "kept, stale");
    }

    #[test]
    fn slow_cycles_stretch_the_window() {
        let t0 = Instant::now();
        let mut cache = Cache::new(Duration::ZERO);
        cache.store(entry(t0, Duration::from_millis(700), "slow"));
        // 4 x 700 ms: a scrape 2.7 s later still gets the cached data.
        let later = t0 + Duration::from_millis(2700);
        assert_eq!(&*cache.fresh(ALL, later).expect("fresh").text, b"slow");
        assert!(cache.fresh(ALL, t0 + Duration::from_millis(2800)).is_none());
        assert_eq!(
            cache.max_age(Duration::from_secs(1)),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn the_cycle_counts_encoding_too() {
        // A snapshot whose collection took no time still has a cycle as
        // long as its encoding: measured from the cycle's start.
        let begun = Instant::now() - Duration::from_millis(300);
        let snapshot = Snapshot {
            text: "x 1\n".into(),
            summary: String::new(),
            started: begun,
            duration: Duration::ZERO,
            success: true,
            set: ALL,
        };
        let entry = Entry::encode(snapshot, begun);
        assert!(
            entry.cycle >= Duration::from_millis(300),
            "{:?}",
            entry.cycle
        );
    }

    #[test]
    fn gzip_round_trips() {
        let e = entry(Instant::now(), Duration::ZERO, "metric 1\n");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&e.gzip[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "metric 1\n");
    }

    #[test]
    fn one_entry_per_collector_set_each_with_its_own_window() {
        let t0 = Instant::now();
        let udp = KindSet::of(&[Kind::Udp]);
        let mut cache = Cache::new(Duration::ZERO);
        cache.store(entry_of(ALL, t0, Duration::from_secs(1), "all"));
        assert!(cache.fresh(udp, t0).is_none(), "no udp entry yet");
        cache.store(entry_of(udp, t0, Duration::from_millis(10), "udp"));
        let later = t0 + Duration::from_millis(100);
        assert_eq!(&*cache.fresh(udp, t0).unwrap().text, b"udp");
        assert!(cache.fresh(udp, later).is_none(), "udp: 4 x 10 ms");
        assert_eq!(&*cache.fresh(ALL, later).unwrap().text, b"all", "4 x 1 s");
        // A new udp collection replaces only udp's.
        cache.store(entry_of(udp, later, Duration::from_millis(10), "udp2"));
        assert_eq!(cache.len(), 2);
        assert_eq!(&*cache.latest(udp).unwrap().text, b"udp2");
        assert_eq!(&*cache.latest(ALL).unwrap().text, b"all");
    }

    #[test]
    fn the_least_recently_served_set_is_dropped_first() {
        let t0 = Instant::now();
        let [tcp, udp, unix] = [Kind::Tcp, Kind::Udp, Kind::Unix].map(|k| KindSet::of(&[k]));
        let mut cache = Cache::with_capacity(Duration::from_secs(60), 2);
        cache.store(entry_of(tcp, t0, Duration::ZERO, "tcp"));
        cache.store(entry_of(udp, t0, Duration::ZERO, "udp"));
        assert!(cache.fresh(tcp, t0).is_some(), "tcp served: now the newest");
        cache.store(entry_of(unix, t0, Duration::ZERO, "unix"));
        assert_eq!(cache.len(), 2);
        assert!(cache.latest(udp).is_none(), "udp was the least recent");
        assert!(cache.latest(tcp).is_some() && cache.latest(unix).is_some());
    }
}

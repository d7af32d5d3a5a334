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
        }
    }
}

pub struct Cache {
    ttl: Duration,
    entry: Option<Arc<Entry>>,
}

impl Cache {
    pub fn new(ttl: Duration) -> Cache {
        Cache { ttl, entry: None }
    }

    /// How long an entry whose cycle took `cycle` is served.
    pub fn max_age(&self, cycle: Duration) -> Duration {
        self.ttl.max(cycle.saturating_mul(RATE_FACTOR))
    }

    /// A sentence for the landing page and README on how old data can be.
    pub fn freshness(&self) -> String {
        format!(
            "Collections are cached: a scrape is answered with data up to max(--cache.ttl = {:?}, {RATE_FACTOR} x the last collection's duration, encoding included) old, and any number of scrapers inside that window cost one kernel dump; scrapes that arrive while a collection runs wait for it and share it. sockdiag_collect_timestamp_seconds tells when the served data was collected.",
            self.ttl
        )
    }

    /// The entry, if there is one still inside its window at `now`.
    pub fn fresh(&self, now: Instant) -> Option<&Arc<Entry>> {
        self.entry
            .as_ref()
            .filter(|e| now.saturating_duration_since(e.started) < self.max_age(e.cycle))
    }

    /// The last entry, however old.
    pub fn latest(&self) -> Option<&Arc<Entry>> {
        self.entry.as_ref()
    }

    /// Replaces the entry with a newly collected one.
    pub fn store(&mut self, entry: Arc<Entry>) {
        self.entry = Some(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn entry(started: Instant, cycle: Duration, text: &str) -> Arc<Entry> {
        let snapshot = Snapshot {
            text: text.into(),
            summary: String::new(),
            started,
            duration: cycle,
            success: true,
        };
        let mut entry = Entry::encode(snapshot, Instant::now());
        entry.cycle = cycle;
        Arc::new(entry)
    }

    #[test]
    fn serves_one_collection_within_the_ttl() {
        let t0 = Instant::now();
        let mut cache = Cache::new(Duration::from_secs(1));
        assert!(cache.fresh(t0).is_none() && cache.latest().is_none());
        cache.store(entry(t0, Duration::from_millis(1), "a"));
        for offset_ms in [0, 10, 500, 999] {
            let now = t0 + Duration::from_millis(offset_ms);
            assert_eq!(&*cache.fresh(now).expect("fresh").text, b"a");
        }
        let now = t0 + Duration::from_millis(1000);
        assert!(cache.fresh(now).is_none());
        assert_eq!(&*cache.latest().unwrap().text, b"a", "kept, stale");
    }

    #[test]
    fn slow_cycles_stretch_the_window() {
        let t0 = Instant::now();
        let mut cache = Cache::new(Duration::ZERO);
        cache.store(entry(t0, Duration::from_millis(700), "slow"));
        // 4 x 700 ms: a scrape 2.7 s later still gets the cached data.
        let later = t0 + Duration::from_millis(2700);
        assert_eq!(&*cache.fresh(later).expect("fresh").text, b"slow");
        assert!(cache.fresh(t0 + Duration::from_millis(2800)).is_none());
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
}

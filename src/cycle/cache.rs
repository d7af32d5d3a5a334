//! The scrape cache: every scrape inside the freshness window is served the
//! same rendered snapshot, so any number of scrapers cost one kernel dump.
//!
//! The window is max(--cache.ttl, RATE_FACTOR x the last collection's own
//! duration): however fast scrapes arrive, dumping never takes more than
//! 1/RATE_FACTOR of one core.

use std::io::Write as _;
use std::time::{Duration, Instant};

use flate2::{write::GzEncoder, Compression};

use crate::cycle::exporter::Snapshot;

/// The minimum spacing of collections, in multiples of their duration.
pub const RATE_FACTOR: u32 = 4;

/// A snapshot with its gzip encoding, made on first demand.
pub struct Entry {
    pub snapshot: Snapshot,
    gzip: Option<Vec<u8>>,
}

impl Entry {
    /// The exposition text, gzip-compressed once per snapshot.
    pub fn gzip(&mut self) -> &[u8] {
        let text = &self.snapshot.text;
        self.gzip.get_or_insert_with(|| {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
            encoder
                .write_all(text.as_bytes())
                .and_then(|()| encoder.finish())
                .expect("gzip into memory cannot fail")
        })
    }
}

pub struct Cache {
    ttl: Duration,
    entry: Option<Entry>,
}

impl Cache {
    pub fn new(ttl: Duration) -> Cache {
        Cache { ttl, entry: None }
    }

    /// How long a snapshot that took `duration` to collect is served.
    pub fn max_age(&self, duration: Duration) -> Duration {
        self.ttl.max(duration.saturating_mul(RATE_FACTOR))
    }

    /// A sentence for the landing page and README on how old data can be.
    pub fn freshness(&self) -> String {
        format!(
            "Collections are cached: a scrape is answered with data up to max(--cache.ttl = {:?}, {RATE_FACTOR} x the last collection's duration) old, and any number of scrapers inside that window cost one kernel dump. sockdiag_collect_timestamp_seconds tells when the served data was collected.",
            self.ttl
        )
    }

    /// The current entry, refreshed first if it is missing or stale at `now`.
    pub fn get(&mut self, now: Instant, refresh: impl FnOnce() -> Snapshot) -> &mut Entry {
        let stale = match &self.entry {
            None => true,
            Some(e) => {
                now.saturating_duration_since(e.snapshot.started)
                    >= self.max_age(e.snapshot.duration)
            }
        };
        if stale {
            self.entry = Some(Entry {
                snapshot: refresh(),
                gzip: None,
            });
        }
        self.entry.as_mut().expect("just filled")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn snapshot(started: Instant, duration: Duration, text: &str) -> Snapshot {
        Snapshot {
            text: text.into(),
            summary: String::new(),
            started,
            duration,
            success: true,
        }
    }

    #[test]
    fn serves_one_collection_within_the_ttl() {
        let t0 = Instant::now();
        let mut cache = Cache::new(Duration::from_secs(1));
        let mut refreshes = 0;
        for offset_ms in [0, 10, 500, 999] {
            let now = t0 + Duration::from_millis(offset_ms);
            cache.get(now, || {
                refreshes += 1;
                snapshot(now, Duration::from_millis(1), "a")
            });
        }
        assert_eq!(refreshes, 1);
        let now = t0 + Duration::from_millis(1000);
        cache.get(now, || {
            refreshes += 1;
            snapshot(now, Duration::from_millis(1), "b")
        });
        assert_eq!(refreshes, 2);
    }

    #[test]
    fn slow_collections_stretch_the_window() {
        let t0 = Instant::now();
        let mut cache = Cache::new(Duration::ZERO);
        cache.get(t0, || snapshot(t0, Duration::from_millis(700), "slow"));
        // 4 x 700 ms: a scrape 2.7 s later still gets the cached data.
        let later = t0 + Duration::from_millis(2700);
        let entry = cache.get(later, || panic!("must not dump again yet"));
        assert_eq!(entry.snapshot.text, "slow");
        let mut refreshed = false;
        cache.get(t0 + Duration::from_millis(2800), || {
            refreshed = true;
            snapshot(t0, Duration::ZERO, "new")
        });
        assert!(refreshed);
        assert_eq!(
            cache.max_age(Duration::from_secs(1)),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn gzip_round_trips_and_is_made_once() {
        let t0 = Instant::now();
        let mut cache = Cache::new(Duration::from_secs(60));
        let entry = cache.get(t0, || snapshot(t0, Duration::ZERO, "metric 1\n"));
        let first = entry.gzip().to_vec();
        assert_eq!(entry.gzip(), &first[..]);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&first[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "metric 1\n");
    }
}

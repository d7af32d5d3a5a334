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
//! it shares its gzip bytes ([`Bytes`]) instead of copying them, so clients
//! that stop reading hold references, not copies of the body.
//!
//! An entry keeps the text only gzip-compressed: the collection writes the
//! text straight into the compressor ([`Entry::encode_with`]), so the whole
//! text is never in memory, and a scrape without gzip is sent the text
//! inflated a window at a time (`web::body`). With `--collector.netns` and
//! 500 namespaces the text is about 5.5 MB and its gzip about 0.3 MB: a
//! plain copy next to the gzip one, and a second one while the next
//! collection is made, would not fit in the 12 MiB peak RSS of issue 16.

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::{write::GzEncoder, Compression};

use crate::collectors::KindSet;
use crate::cycle::exporter::Snapshot;

/// The minimum spacing of collections, in multiples of their duration.
pub const RATE_FACTOR: u32 = 4;

/// Response bytes shared by every connection that serves them.
///
/// An `Arc<Vec<u8>>` rather than `Arc<[u8]>`: the gzip body is made as a
/// `Vec` and moved in; `Arc<[u8]>` would copy it.
pub type Bytes = Arc<Vec<u8>>;

/// Text kept only gzip-compressed, and its length.
#[derive(Debug)]
pub struct Packed {
    /// The gzip bytes, shared by every response that sends them.
    pub gzip: Bytes,
    /// The length of the text itself (a plain response's Content-Length).
    pub len: usize,
}

impl Packed {
    /// Compresses `text` (tests, the fuzzer, a snapshot's summary).
    pub fn of(text: &str) -> Packed {
        let mut packer = Packer::new();
        packer
            .write_all(text.as_bytes())
            .expect("gzip into memory cannot fail");
        packer.finish()
    }

    /// The text, inflated as it is read.
    pub fn reader(&self) -> impl BufRead + '_ {
        io::BufReader::with_capacity(16 * 1024, flate2::bufread::GzDecoder::new(&self.gzip[..]))
    }

    /// Calls `each` with every line of the text (without its newline), in
    /// order, inflating it as it goes: a few tens of KB, whatever the size
    /// of the text.
    pub fn for_each_line(&self, each: &mut dyn FnMut(&str)) {
        let mut reader = self.reader();
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => each(line.strip_suffix('\n').unwrap_or(&line)),
                // Our own gzip of our own UTF-8 text: cannot happen.
                Err(e) => panic!("reading back a cached text: {e}"),
            }
        }
    }

    /// The whole text (tests).
    pub fn text(&self) -> String {
        let mut text = String::with_capacity(self.len);
        io::Read::read_to_string(&mut self.reader(), &mut text)
            .expect("our own gzip of our own text");
        text
    }
}

/// Compresses a text as it is written, counting it: as `io::Write` (the
/// exposition) or `fmt::Write` (the summary).
pub struct Packer {
    gzip: GzEncoder<Vec<u8>>,
    len: usize,
}

impl Packer {
    pub fn new() -> Packer {
        Packer {
            gzip: GzEncoder::new(Vec::new(), Compression::fast()),
            len: 0,
        }
    }

    pub fn finish(self) -> Packed {
        let mut gzip = self.gzip.finish().expect("gzip into memory cannot fail");
        gzip.shrink_to_fit();
        Packed {
            gzip: Arc::new(gzip),
            len: self.len,
        }
    }
}

impl Default for Packer {
    fn default() -> Packer {
        Packer::new()
    }
}

impl Write for Packer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.gzip.write(bytes)?;
        self.len += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.gzip.flush()
    }
}

impl std::fmt::Write for Packer {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.write_all(s.as_bytes()).map_err(|_| std::fmt::Error)
    }
}

/// One collection's output, shared read-only.
#[derive(Debug)]
pub struct Entry {
    /// The Prometheus text exposition (the only copy).
    pub text: Packed,
    /// The human summary (landing page).
    pub summary: Packed,
    /// When the collection started (monotonic).
    pub started: Instant,
    /// The whole cycle: collection, encoding and compression.
    pub cycle: Duration,
    /// The collectors it was collected with (its cache key).
    pub set: KindSet,
}

impl Entry {
    /// Encodes a snapshot whose text and summary are in it (tests, the
    /// fuzzer); `cycle_started` is when its collection began, so the
    /// entry's `cycle` covers the collection and all encoding.
    pub fn encode(mut snapshot: Snapshot, cycle_started: Instant) -> Entry {
        let text = std::mem::take(&mut snapshot.text);
        let summary = Packed::of(&std::mem::take(&mut snapshot.summary));
        Entry::encode_with(snapshot, summary, cycle_started, |out| {
            out.write_all(text.as_bytes())
        })
    }

    /// Encodes a snapshot (its own `text` and `summary` are ignored) whose
    /// text `write` writes, straight into the compressor, so the whole text
    /// is never held in memory; `summary` was packed as it was made.
    pub fn encode_with(
        snapshot: Snapshot,
        summary: Packed,
        cycle_started: Instant,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Entry {
        let mut out = Packer::new();
        write(&mut out).expect("writing the text into memory cannot fail");
        Entry {
            text: out.finish(),
            summary,
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
            assert_eq!(cache.fresh(ALL, now).expect("fresh").text.text(), "a");
        }
        let now = t0 + Duration::from_millis(1000);
        assert!(cache.fresh(ALL, now).is_none());
        assert_eq!(cache.latest(ALL).unwrap().text.text(), "a", "kept, stale");
    }

    #[test]
    fn slow_cycles_stretch_the_window() {
        let t0 = Instant::now();
        let mut cache = Cache::new(Duration::ZERO);
        cache.store(entry(t0, Duration::from_millis(700), "slow"));
        // 4 x 700 ms: a scrape 2.7 s later still gets the cached data.
        let later = t0 + Duration::from_millis(2700);
        assert_eq!(cache.fresh(ALL, later).expect("fresh").text.text(), "slow");
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
        flate2::read::GzDecoder::new(&e.text.gzip[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "metric 1\n");
    }

    /// The text written piece by piece into the compressor (as the
    /// collection writes it) is exactly the text, in gzip, and is read
    /// back line by line the same.
    #[test]
    fn a_streamed_text_is_packed_exactly() {
        let text: String = (0..20_000)
            .map(|i| format!("m{{netns=\"ns{}\",x=\"{i}\"}} {}\n", i % 500, i * 7))
            .collect();
        let snapshot = Snapshot {
            text: String::new(),
            summary: String::new(),
            started: Instant::now(),
            duration: Duration::ZERO,
            success: true,
            set: ALL,
        };
        let entry = Entry::encode_with(snapshot, Packed::of("s\n"), Instant::now(), |out| {
            for piece in text.as_bytes().chunks(977) {
                out.write_all(piece)?;
            }
            Ok(())
        });
        assert_eq!(entry.text.len, text.len());
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&entry.text.gzip[..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert!(inflated == text.as_bytes(), "gzip differs from the text");
        assert!(entry.text.gzip.len() < text.len() / 4, "compressed");
        let mut lines = Vec::new();
        entry.text.for_each_line(&mut |l| lines.push(l.to_string()));
        assert_eq!(lines, text.lines().collect::<Vec<_>>());
        assert_eq!(entry.summary.text(), "s\n");
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
        assert_eq!(cache.fresh(udp, t0).unwrap().text.text(), "udp");
        assert!(cache.fresh(udp, later).is_none(), "udp: 4 x 10 ms");
        assert_eq!(
            cache.fresh(ALL, later).unwrap().text.text(),
            "all",
            "4 x 1 s"
        );
        // A new udp collection replaces only udp's.
        cache.store(entry_of(udp, later, Duration::from_millis(10), "udp2"));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.latest(udp).unwrap().text.text(), "udp2");
        assert_eq!(cache.latest(ALL).unwrap().text.text(), "all");
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

//! Basic auth against the `basic_auth_users` of `--web.config.file`, with
//! the bcrypt verdicts cached.
//!
//! A bcrypt check at cost 10 takes tens of milliseconds of CPU on the one
//! serving thread, and Prometheus sends the same credentials on every scrape,
//! so verdicts are remembered: keyed by a salted SHA-256 of user and
//! password (the password itself is never stored), in two bounded caches,
//! one for good and one for bad credentials, so a client cycling through bad
//! passwords cannot push the good entries out. A wrong password is never
//! remembered as good; the set of users cannot change while we run (the file
//! is read once), so a remembered verdict stays true. An unknown user is
//! checked against a real user's hash and refused, so it costs the same
//! bcrypt work as a known one.
//!
//! Checks that are not remembered run on one `Verifier` thread, never on
//! the serving loop, and at most MAX_QUEUED wait: a client trying password
//! after password costs that thread's time, and scrapes with remembered
//! credentials are answered at once all the same.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::thread;

use base64::Engine as _;
use ring::digest;

use crate::web::webconfig::Users;

/// Remembered good credentials at most (one per scraper, in practice).
const GOOD_ENTRIES: usize = 32;
/// Remembered bad credentials at most.
const BAD_ENTRIES: usize = 256;

/// A bounded map from key to nothing, oldest out first.
struct Bounded {
    cap: usize,
    keys: HashMap<[u8; 32], ()>,
    order: VecDeque<[u8; 32]>,
}

impl Bounded {
    fn new(cap: usize) -> Bounded {
        Bounded {
            cap,
            keys: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        self.keys.contains_key(key)
    }

    fn insert(&mut self, key: [u8; 32]) {
        if self.keys.insert(key, ()).is_some() {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

/// The credential check for one server.
pub struct BasicAuth {
    users: Arc<Users>,
    salt: [u8; 16],
    good: Bounded,
    bad: Bounded,
    /// bcrypt checks run so far (cache misses), for tests and debugging.
    bcrypt_runs: u64,
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// No or malformed Authorization header.
    Missing,
    /// Wrong user or password.
    Deny,
    /// Too many bcrypt checks queued: try again later (503).
    Busy,
}

/// What a lookup found.
pub enum Lookup {
    Done(Verdict),
    Bcrypt(Job),
}

/// One bcrypt check, self-contained so it can run on another thread.
pub struct Job {
    key: [u8; 32],
    password: String,
    hash: String,
    /// false: an unknown user, checked against a decoy hash and refused.
    known: bool,
}

impl Job {
    /// Runs bcrypt; true if the credentials are good.
    pub fn run(&self) -> bool {
        let matches = bcrypt::verify(self.password.as_bytes(), &self.hash).unwrap_or(false);
        self.known && matches
    }

    pub fn key(&self) -> [u8; 32] {
        self.key
    }
}

/// Checks queued on the verifier thread at most; beyond it a request gets
/// 503. Remembered credentials never queue, so a flood of new passwords
/// cannot keep a scraper whose credentials are remembered waiting.
pub const MAX_QUEUED: usize = 8;

/// A finished check: (job id, cache key, allowed).
pub type Finished = (u64, [u8; 32], bool);

/// One thread that runs bcrypt checks in order, so the serving loop never
/// spends a bcrypt's CPU time itself. It wakes the loop through a socket
/// pair whose read end the loop polls.
pub struct Verifier {
    jobs: Option<mpsc::Sender<(u64, Job)>>,
    done: mpsc::Receiver<Finished>,
    wake: UnixStream,
    thread: Option<thread::JoinHandle<()>>,
    next_id: u64,
    queued: usize,
}

impl Verifier {
    pub fn start() -> io::Result<Verifier> {
        let (wake, mut wake_writer) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_writer.set_nonblocking(true)?;
        let (jobs, inbox) = mpsc::channel::<(u64, Job)>();
        let (outbox, done) = mpsc::channel::<Finished>();
        let thread = thread::Builder::new()
            .name("bcrypt".into())
            .spawn(move || {
                for (id, job) in inbox {
                    let allowed = job.run();
                    if outbox.send((id, job.key, allowed)).is_err() {
                        return;
                    }
                    // A full pipe already holds a wake-up: ignore WouldBlock.
                    let _ = wake_writer.write(&[1]);
                }
            })?;
        Ok(Verifier {
            jobs: Some(jobs),
            done,
            wake,
            thread: Some(thread),
            next_id: 0,
            queued: 0,
        })
    }

    /// The fd to poll for readability: checks have finished.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Queues a check; its id, or None when MAX_QUEUED are already queued.
    pub fn submit(&mut self, job: Job) -> Option<u64> {
        if self.queued >= MAX_QUEUED {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.jobs.as_ref()?.send((id, job)).ok()?;
        self.queued += 1;
        Some(id)
    }

    /// The checks finished since the last call.
    pub fn finished(&mut self) -> Vec<Finished> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        let out: Vec<Finished> = self.done.try_iter().collect();
        self.queued -= out.len().min(self.queued);
        out
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        // Closing the queue ends the thread after its current check.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl BasicAuth {
    pub fn new(users: Arc<Users>) -> BasicAuth {
        let mut salt = [0u8; 16];
        // The salt only keeps cache keys from being plain password hashes;
        // if the system RNG failed we would still work, just less well hidden.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
        BasicAuth {
            users,
            salt,
            good: Bounded::new(GOOD_ENTRIES),
            bad: Bounded::new(BAD_ENTRIES),
            bcrypt_runs: 0,
        }
    }

    pub fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs
    }

    fn key(&self, user: &[u8], password: &[u8]) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.salt);
        ctx.update(&(user.len() as u64).to_be_bytes());
        ctx.update(user);
        ctx.update(password);
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    /// Looks the credentials up: a verdict when no bcrypt work is needed
    /// (missing header, or remembered), else the bcrypt check to run.
    pub fn lookup(&self, authorization: Option<&str>) -> Lookup {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return Lookup::Done(Verdict::Missing);
        };
        let key = self.key(user.as_bytes(), password.as_bytes());
        if self.good.contains(&key) {
            return Lookup::Done(Verdict::Allow);
        }
        if self.bad.contains(&key) {
            return Lookup::Done(Verdict::Deny);
        }
        let (hash, known) = match self.users.hash(&user) {
            Some(hash) => (hash, true),
            None => (self.users.decoy_hash(), false),
        };
        Lookup::Bcrypt(Job {
            key,
            password,
            hash: hash.to_string(),
            known,
        })
    }

    /// Remembers the outcome of a bcrypt check; returns the verdict.
    pub fn record(&mut self, key: [u8; 32], allowed: bool) -> Verdict {
        self.bcrypt_runs += 1;
        if allowed {
            self.good.insert(key);
            Verdict::Allow
        } else {
            self.bad.insert(key);
            Verdict::Deny
        }
    }

    /// Checks the value of an Authorization header (None: absent), running
    /// bcrypt on this thread if needed.
    pub fn check(&mut self, authorization: Option<&str>) -> Verdict {
        match self.lookup(authorization) {
            Lookup::Done(verdict) => verdict,
            Lookup::Bcrypt(job) => {
                let allowed = job.run();
                self.record(job.key, allowed)
            }
        }
    }

    /// (good, bad) entries remembered.
    pub fn cached(&self) -> (usize, usize) {
        (self.good.len(), self.bad.len())
    }
}

/// `Basic base64(user:password)` -> (user, password). The scheme name is
/// case-insensitive; user and password are taken as UTF-8 (lossily), as Go
/// does, and split at the first ':'.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8_lossy(&decoded);
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::webconfig;

    fn header(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    fn auth() -> BasicAuth {
        // Cost 4 keeps the unit test fast; the logic does not depend on it.
        let hash = bcrypt::hash("secret", 4).unwrap();
        let other = bcrypt::hash("other", 4).unwrap();
        let yaml = format!("basic_auth_users:\n  alice: {hash}\n  bob: {other}\n");
        let web = webconfig::parse(&yaml, std::path::Path::new(".")).unwrap();
        BasicAuth::new(web.users.unwrap())
    }

    #[test]
    fn parses_basic_headers() {
        assert_eq!(
            parse_basic(&header("alice", "a:b")),
            Some(("alice".into(), "a:b".into()))
        );
        assert_eq!(
            parse_basic("basic YTpi"),
            Some(("a".into(), "b".into())),
            "scheme is case-insensitive"
        );
        for bad in ["", "Basic", "Bearer YTpi", "Basic !!!", "Basic YWI="] {
            assert_eq!(parse_basic(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn good_credentials_are_checked_once() {
        let mut a = auth();
        assert_eq!(a.check(Some(&header("alice", "secret"))), Verdict::Allow);
        assert_eq!(a.check(Some(&header("alice", "secret"))), Verdict::Allow);
        assert_eq!(a.bcrypt_runs(), 1, "the second check is cached");
        assert_eq!(a.check(Some(&header("bob", "other"))), Verdict::Allow);
        assert_eq!(a.cached(), (2, 0));
    }

    #[test]
    fn bad_credentials_are_denied_and_never_remembered_as_good() {
        let mut a = auth();
        assert_eq!(a.check(None), Verdict::Missing);
        assert_eq!(a.check(Some("Basic garbage")), Verdict::Missing);
        for _ in 0..2 {
            assert_eq!(a.check(Some(&header("alice", "wrong"))), Verdict::Deny);
            // Bob's password for Alice, and Alice's password for an unknown
            // user (checked against a real hash): both wrong.
            assert_eq!(a.check(Some(&header("alice", "other"))), Verdict::Deny);
            assert_eq!(a.check(Some(&header("mallory", "secret"))), Verdict::Deny);
            assert_eq!(a.check(Some(&header("", ""))), Verdict::Deny);
        }
        assert_eq!(a.bcrypt_runs(), 4, "each bad pair costs one bcrypt");
        assert_eq!(a.cached(), (0, 4));
        // The right password still works after the wrong ones.
        assert_eq!(a.check(Some(&header("alice", "secret"))), Verdict::Allow);
    }

    #[test]
    fn verifier_runs_checks_off_thread_and_bounds_its_queue() {
        let mut a = auth();
        let mut v = Verifier::start().unwrap();
        let job = |a: &BasicAuth, user: &str, pw: &str| match a.lookup(Some(&header(user, pw))) {
            Lookup::Bcrypt(job) => job,
            Lookup::Done(v) => panic!("{user}: already {v:?}"),
        };
        let good = v.submit(job(&a, "alice", "secret")).unwrap();
        let bad = v.submit(job(&a, "alice", "nope")).unwrap();
        let mut results = Vec::new();
        for _ in 0..500 {
            results.extend(v.finished());
            if results.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(results.len(), 2, "checks did not finish in 5 s");
        for (id, key, allowed) in results {
            assert_eq!(allowed, id == good, "job {id} (good {good}, bad {bad})");
            a.record(key, allowed);
        }
        assert!(matches!(
            a.lookup(Some(&header("alice", "secret"))),
            Lookup::Done(Verdict::Allow)
        ));
        assert!(matches!(
            a.lookup(Some(&header("alice", "nope"))),
            Lookup::Done(Verdict::Deny)
        ));
        // The queue is bounded.
        let accepted = (0..MAX_QUEUED + 3)
            .filter_map(|i| v.submit(job(&a, "bob", &format!("guess{i}"))))
            .count();
        assert_eq!(accepted, MAX_QUEUED, "queued checks");
        drop(v); // joins the thread
    }

    #[test]
    fn caches_are_bounded_and_bad_entries_cannot_evict_good_ones() {
        let mut a = auth();
        assert_eq!(a.check(Some(&header("alice", "secret"))), Verdict::Allow);
        let mut cache = Bounded::new(3);
        for i in 0..10u8 {
            cache.insert([i; 32]);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.contains(&[9; 32]) && !cache.contains(&[6; 32]));
        // Flood the bad cache directly (bcrypt per entry would be slow).
        for i in 0..(BAD_ENTRIES as u32 + 10) {
            a.bad.insert(a.key(b"x", &i.to_be_bytes()));
        }
        assert_eq!(a.cached(), (1, BAD_ENTRIES));
        let runs = a.bcrypt_runs();
        assert_eq!(a.check(Some(&header("alice", "secret"))), Verdict::Allow);
        assert_eq!(a.bcrypt_runs(), runs, "still cached");
    }
}

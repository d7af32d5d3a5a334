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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use ring::digest;

use crate::webconfig::Users;

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

    /// Checks the value of an Authorization header (None: absent).
    pub fn check(&mut self, authorization: Option<&str>) -> Verdict {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return Verdict::Missing;
        };
        let key = self.key(user.as_bytes(), password.as_bytes());
        if self.good.contains(&key) {
            return Verdict::Allow;
        }
        if self.bad.contains(&key) {
            return Verdict::Deny;
        }
        let (hash, known) = match self.users.hash(&user) {
            Some(hash) => (hash, true),
            None => (self.users.decoy_hash(), false),
        };
        self.bcrypt_runs += 1;
        let matches = bcrypt::verify(password.as_bytes(), hash).unwrap_or(false);
        if known && matches {
            self.good.insert(key);
            Verdict::Allow
        } else {
            self.bad.insert(key);
            Verdict::Deny
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
    use crate::webconfig;

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

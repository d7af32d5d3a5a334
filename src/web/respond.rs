//! How a request is answered: the serving settings ([`Config`]), the
//! serving state ([`Http`]: the scrape cache, the collection thread behind
//! it, basic auth and its bcrypt verifier), the routes (the metrics, the
//! landing page, 401/404/405/413/503), gzip negotiation, and the response
//! head, which tiny_http serializes (its server is not used, only its
//! types).
//!
//! A [`Response`] is a small per-request head and its [`Body`]: a gzip
//! scrape's body is the cached collection's own bytes, shared by every
//! connection sending it, never copied per connection; a plain scrape's is
//! the same bytes inflated a window at a time (see `body`).
//!
//! Basic auth (see `auth`) is checked before anything else is answered;
//! a bcrypt check that is not cached runs off the serving thread, and the
//! request waits for it ([`Step::Check`]). A scrape that finds no fresh
//! collection starts one on the collection thread (unless one runs) and
//! waits for it ([`Step::Collect`]); everything else is answered at once,
//! the landing page from the last collection, or saying that the first one
//! is still running.
//!
//! A scrape's `collect[]`/`exclude[]` parameters (see `filter`) pick the
//! collectors it runs: a bad filter is a 400 naming what is wrong, and a
//! good one is served only from a collection of exactly that set (the
//! cache keeps one entry per set, each with its own window).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tiny_http::{HTTPVersion, Header, Method, Response as TinyResponse, StatusCode};

use crate::collectors::KindSet;
use crate::cycle::cache::{Bytes, Cache, Entry};
use crate::cycle::collector_thread::Collections;
use crate::log::{self, Level};
use crate::web::auth::{BasicAuth, Lookup, Verdict, Verifier};
use crate::web::body::Body;
use crate::web::filter::{self, Refused};
use crate::web::landing;
use crate::web::request::{Head, HeadError};
use crate::web::webconfig::WebConfig;

/// Serving settings and the limits every client is held to.
#[derive(Debug, Clone)]
pub struct Config {
    pub telemetry_path: String,
    pub cache_ttl: Duration,
    /// A whole request head must arrive within this; also the keep-alive
    /// idle time.
    pub read_timeout: Duration,
    /// A whole response must be taken within this.
    pub write_timeout: Duration,
    /// Open connections at most; at the cap a new connection takes the
    /// place of one that has no request in progress (see `conn`).
    pub max_connections: usize,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// TLS, basic auth and extra headers from --web.config.file.
    pub web: WebConfig,
}

pub(super) fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

/// Does the Accept-Encoding header allow gzip? (`gzip` or `*`, q not 0)
pub fn accepts_gzip(request_headers: &[Header]) -> bool {
    request_headers
        .iter()
        .filter(|h| h.field.equiv("Accept-Encoding"))
        .flat_map(|h| h.value.as_str().split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
}

/// One response: its head, made per request, and its body.
#[derive(Debug)]
pub struct Response {
    pub head: Vec<u8>,
    /// Empty for HEAD requests.
    pub body: Body,
    /// Whether the connection stays open after it.
    pub keep: bool,
}

/// What became of a request.
pub enum Step {
    /// Answered.
    Ready(Response),
    /// Waiting for the bcrypt check with this id.
    Check(u64),
    /// Waiting for the collection in progress.
    Collect,
}

/// The serving state: limits, cache and the collections behind them.
pub struct Http<'a> {
    pub(super) config: &'a Config,
    pub(super) cache: Cache,
    /// The collection thread; None where a test or the fuzzer fills the
    /// cache itself.
    pub(super) collections: Option<Collections>,
    pub(super) auth: Option<BasicAuth>,
    /// Runs bcrypt checks off this thread (with `auth`).
    pub(super) verifier: Option<Verifier>,
    /// Headers from http_server_config.headers, on every response.
    pub(super) extra_headers: Vec<Header>,
    /// Every scrape waits as if a collection were running (see
    /// [`Http::defer_scrapes`]).
    defer_scrapes: bool,
    /// The collectors the flags enabled: an unfiltered scrape's set.
    enabled: KindSet,
}

/// The static bodies of the error answers.
fn body(text: &'static str) -> Bytes {
    Arc::new(text.as_bytes().to_vec())
}

impl<'a> Http<'a> {
    /// The serving state for `config`, with basic auth from its web
    /// configuration (and a verifier thread when `verify_on_thread`).
    pub fn new(
        config: &'a Config,
        collections: Option<Collections>,
        verify_on_thread: bool,
    ) -> std::io::Result<Http<'a>> {
        Ok(Http {
            config,
            cache: Cache::new(config.cache_ttl),
            auth: config.web.users.clone().map(BasicAuth::new),
            verifier: match (&config.web.users, verify_on_thread) {
                (Some(_), true) => Some(Verifier::start()?),
                _ => None,
            },
            extra_headers: config
                .web
                .headers
                .iter()
                .map(|(name, value)| header(name, value))
                .collect(),
            defer_scrapes: false,
            enabled: collections
                .as_ref()
                .map_or_else(KindSet::all, Collections::enabled),
            collections,
        })
    }

    /// The collectors a scrape with this head runs (its `collect[]` or
    /// `exclude[]` filter, or every enabled one), or why the filter is
    /// refused.
    pub fn selection(&self, head: &Head) -> Result<KindSet, Refused> {
        filter::selection(&head.query, self.enabled)
    }

    /// For the fuzzer and tests without a collection thread: every scrape
    /// waits (Step::Collect) as if a collection were running, until the
    /// caller answers it with `Session::collected`.
    pub fn defer_scrapes(&mut self) {
        self.defer_scrapes = true;
    }

    /// Puts a collection in the cache (the collection thread's, or a
    /// test's).
    pub fn store(&mut self, entry: Arc<Entry>) {
        self.cache.store(entry);
    }

    /// Answers `head` (Step::Ready), or queues its bcrypt check
    /// (Step::Check) or waits for a collection (Step::Collect).
    pub fn respond(&mut self, head: &Head) -> Step {
        let verdict = match &mut self.auth {
            None => Verdict::Allow,
            Some(auth) => match auth.lookup(head.header("Authorization")) {
                Lookup::Done(verdict) => verdict,
                Lookup::Bcrypt(job) => match &mut self.verifier {
                    Some(verifier) => match verifier.submit(job) {
                        Some(id) => return Step::Check(id),
                        None => Verdict::Busy,
                    },
                    None => {
                        let allowed = job.run();
                        auth.record(job.key(), allowed)
                    }
                },
            },
        };
        self.answer(head, verdict)
    }

    /// Records a finished bcrypt check; its verdict.
    pub(super) fn checked(&mut self, key: [u8; 32], allowed: bool) -> Verdict {
        let Some(auth) = self.auth.as_mut() else {
            return Verdict::Deny;
        };
        let verdict = auth.record(key, allowed);
        let (good, bad) = auth.cached();
        log::log(
            Level::Debug,
            "basic auth checked with bcrypt (not cached)",
            &[
                ("allowed", &allowed),
                ("cached_good", &good),
                ("cached_bad", &bad),
            ],
        );
        verdict
    }

    /// The answer to `head` given the auth verdict: ready, or (a scrape
    /// with no fresh collection) waiting for a collection.
    pub fn answer(&mut self, head: &Head, verdict: Verdict) -> Step {
        let readable = matches!(head.method, Method::Get | Method::Head);
        let is_metrics = head.path == self.config.telemetry_path;
        let selection = is_metrics.then(|| self.selection(head));
        let text = "text/plain; charset=utf-8";
        let (status, headers, payload) = if verdict == Verdict::Busy {
            (
                503,
                vec![header("Content-Type", text), header("Retry-After", "1")],
                body("503 too many password checks queued, try again\n"),
            )
        } else if verdict != Verdict::Allow {
            // Every path needs credentials, as with exporter-toolkit.
            (
                401,
                vec![
                    header("Content-Type", text),
                    header("WWW-Authenticate", "Basic"),
                ],
                body("401 Unauthorized\n"),
            )
        } else if head.has_body() {
            (
                413,
                vec![header("Content-Type", text)],
                body("413 request bodies are not accepted\n"),
            )
        } else if !is_metrics && head.path != "/" {
            (
                404,
                vec![header("Content-Type", text)],
                body("404 page not found\n"),
            )
        } else if !readable {
            (
                405,
                vec![header("Content-Type", text), header("Allow", "GET, HEAD")],
                body("405 method not allowed\n"),
            )
        } else if let Some(Err(why)) = &selection {
            log::log(
                Level::Debug,
                "scrape refused: bad collector filter",
                &[("query", &head.query), ("err", &why)],
            );
            (
                400,
                vec![header("Content-Type", text)],
                Arc::from(format!("400 {why}\n").into_bytes()),
            )
        } else if is_metrics {
            let set = match selection {
                Some(Ok(set)) => set,
                _ => unreachable!("a metrics path's filter is checked just above"),
            };
            let now = Instant::now();
            if self.defer_scrapes {
                return Step::Collect;
            }
            if let Some(entry) = self.cache.fresh(set, now) {
                return Step::Ready(self.metrics(head, &entry));
            }
            // Wait for the collection in progress, or a new one (queued
            // behind the running one if that is of another set).
            if self.collections.as_mut().is_some_and(|c| c.request(set)) {
                return Step::Collect;
            }
            match self.cache.latest(set).cloned() {
                // No collection thread (tests, the fuzzer): the last.
                Some(entry) => return Step::Ready(self.metrics(head, &entry)),
                None => (
                    503,
                    vec![header("Content-Type", text), header("Retry-After", "1")],
                    body("503 no collection available\n"),
                ),
            }
        } else {
            (
                200,
                vec![header("Content-Type", "text/html; charset=utf-8")],
                self.landing_page(),
            )
        };
        Step::Ready(self.response(head, status, headers, payload))
    }

    /// The landing page, never waiting: the last collection's summary (a
    /// stale cache starts a new collection for the next visit), or a note
    /// that the first collection is still running.
    fn landing_page(&mut self) -> Bytes {
        let now = Instant::now();
        let set = self.enabled;
        if self.cache.fresh(set, now).is_none() {
            if let Some(collections) = self.collections.as_mut() {
                collections.request(set);
            }
        }
        let freshness = self.cache.freshness();
        let page = match self.cache.latest(set) {
            Some(entry) => landing::page(
                &self.config.telemetry_path,
                &freshness,
                &|each| entry.text.for_each_line(each),
                &|each| entry.summary.for_each_line(each),
            ),
            None => landing::page(&self.config.telemetry_path, &freshness, &|_| {}, &|each| {
                each(
                    "No collection has finished yet: the first one is running. \
                         Reload in a moment.",
                )
            }),
        };
        Arc::from(page.into_bytes())
    }

    /// A scrape's answer from `entry` (fresh, or the collection it waited
    /// for): the entry's own gzip bytes, or its text inflated from them as
    /// it is sent.
    pub fn metrics(&self, head: &Head, entry: &Arc<Entry>) -> Response {
        let mut headers = vec![
            header("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
            header("Vary", "Accept-Encoding"),
        ];
        let gzip = Arc::clone(&entry.text.gzip);
        if accepts_gzip(&head.headers) {
            headers.push(header("Content-Encoding", "gzip"));
            let len = gzip.len();
            self.response_of(head, 200, headers, len, || Body::Shared(gzip))
        } else {
            let len = entry.text.len;
            self.response_of(head, 200, headers, len, || Body::inflating(gzip, len))
        }
    }

    fn response(&self, head: &Head, status: u16, headers: Vec<Header>, payload: Bytes) -> Response {
        let len = payload.len();
        self.response_of(head, status, headers, len, || Body::Shared(payload))
    }

    /// A response whose body of `len` bytes `body` makes (not called for a
    /// HEAD request).
    fn response_of(
        &self,
        head: &Head,
        status: u16,
        mut headers: Vec<Header>,
        len: usize,
        body: impl FnOnce() -> Body,
    ) -> Response {
        let keep = head.keep_alive() && !head.has_body();
        headers.extend(self.extra_headers.iter().cloned());
        let head_only = head.method == Method::Head;
        let head_bytes = write_head(status, headers, len, head.version.clone(), keep);
        Response {
            head: head_bytes,
            body: if head_only { Body::default() } else { body() },
            keep,
        }
    }
}

/// Serializes a response head with tiny_http (status line, Server, Date,
/// the headers, Content-Length), plus a `Connection` header (tiny_http
/// drops those from responses, since its server manages connections
/// itself; ours does). The body, `len` bytes, follows separately.
fn write_head(
    status: u16,
    headers: Vec<Header>,
    len: usize,
    version: HTTPVersion,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // No body here, and always Content-Length: never chunked, whatever the
    // size or the request's TE header (no request headers are given).
    let response = TinyResponse::new(StatusCode(status), headers, &[][..], Some(len), None)
        .with_chunked_threshold(usize::MAX);
    response
        .raw_print(&mut out, version, &[], true, None)
        .expect("writing to memory cannot fail");
    let connection: &[u8] = if keep_alive {
        b"Connection: keep-alive\r\n"
    } else {
        b"Connection: close\r\n"
    };
    let status_line_end = out
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(out.len(), |at| at + 2);
    out.splice(status_line_end..status_line_end, connection.iter().copied());
    out
}

/// An error answer for a head we could not parse; the connection closes.
pub fn refuse(error: &HeadError) -> Response {
    let (status, message) = error.answer();
    let headers = vec![header("Content-Type", "text/plain; charset=utf-8")];
    let payload: Bytes = Arc::from(message.into_bytes());
    let head = write_head(status, headers, payload.len(), HTTPVersion(1, 1), false);
    Response {
        head,
        body: Body::Shared(payload),
        keep: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        let h = |v: &str| vec![header("Accept-Encoding", v)];
        assert!(accepts_gzip(&h("gzip")));
        assert!(accepts_gzip(&h("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(&h("*")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("identity")));
        assert!(!accepts_gzip(&[]));
    }
}

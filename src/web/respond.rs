//! How a request is answered: the serving settings ([`Config`]), the
//! serving state ([`Http`]: the scrape cache, the exporter behind it, basic
//! auth and its bcrypt verifier), the routes (the metrics, the landing page,
//! 401/404/405/413/503), gzip negotiation, and the response bytes, which
//! tiny_http serializes (its server is not used, only its types).
//!
//! Basic auth (see `auth`) is checked before anything else is answered;
//! a bcrypt check that is not cached runs off the serving thread, and the
//! request waits for it ([`Step::Wait`]).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use tiny_http::{HTTPVersion, Header, Method, Response, StatusCode};

use crate::cycle::cache::Cache;
use crate::cycle::exporter::Exporter;
use crate::kernel::transport::Transport;
use crate::log::{self, Level};
use crate::web::auth::{BasicAuth, Lookup, Verdict, Verifier};
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
    /// Open connections at most; the oldest one waiting for a request is
    /// closed to make room for a new one.
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

/// What became of a request.
pub(super) enum Step {
    /// Answered; whether the connection stays open.
    Done(bool),
    /// Waiting for the bcrypt check with this id.
    Wait(u64),
}

/// The serving state: limits, cache and the exporter behind them.
pub(super) struct Http<'a, T> {
    pub(super) config: &'a Config,
    pub(super) cache: Cache,
    pub(super) exporter: &'a mut Exporter<T>,
    pub(super) auth: Option<BasicAuth>,
    /// Runs bcrypt checks off this thread (with `auth`).
    pub(super) verifier: Option<Verifier>,
    /// Headers from http_server_config.headers, on every response.
    pub(super) extra_headers: Vec<Header>,
}

impl<T: Transport> Http<'_, T> {
    /// Answers `head` into `out` (Step::Done, with whether the connection
    /// stays open), or queues its bcrypt check (Step::Wait).
    pub(super) fn respond(&mut self, head: &Head, out: &mut Vec<u8>) -> Step {
        let verdict = match &mut self.auth {
            None => Verdict::Allow,
            Some(auth) => match auth.lookup(head.header("Authorization")) {
                Lookup::Done(verdict) => verdict,
                Lookup::Bcrypt(job) => match &mut self.verifier {
                    Some(verifier) => match verifier.submit(job) {
                        Some(id) => return Step::Wait(id),
                        None => Verdict::Busy,
                    },
                    None => {
                        let allowed = job.run();
                        auth.record(job.key(), allowed)
                    }
                },
            },
        };
        Step::Done(self.answer(head, verdict, out))
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

    /// Appends the response to `head`, given the auth verdict, to `out`;
    /// returns whether the connection stays open.
    pub(super) fn answer(&mut self, head: &Head, verdict: Verdict, out: &mut Vec<u8>) -> bool {
        let keep_alive = head.keep_alive() && !head.has_body();
        let readable = matches!(head.method, Method::Get | Method::Head);
        let is_metrics = head.path == self.config.telemetry_path;
        let text = "text/plain; charset=utf-8";
        let (status, mut headers, body): (u16, Vec<Header>, Cow<[u8]>) = if verdict == Verdict::Busy
        {
            (
                503,
                vec![header("Content-Type", text), header("Retry-After", "1")],
                Cow::Borrowed(b"503 too many password checks queued, try again\n"),
            )
        } else if verdict != Verdict::Allow {
            // Every path needs credentials, as with exporter-toolkit.
            (
                401,
                vec![
                    header("Content-Type", text),
                    header("WWW-Authenticate", "Basic"),
                ],
                Cow::Borrowed(b"401 Unauthorized\n"),
            )
        } else if head.has_body() {
            (
                413,
                vec![header("Content-Type", text)],
                Cow::Borrowed(b"413 request bodies are not accepted\n"),
            )
        } else if !is_metrics && head.path != "/" {
            (
                404,
                vec![header("Content-Type", text)],
                Cow::Borrowed(b"404 page not found\n"),
            )
        } else if !readable {
            (
                405,
                vec![header("Content-Type", text), header("Allow", "GET, HEAD")],
                Cow::Borrowed(b"405 method not allowed\n"),
            )
        } else {
            let freshness = self.cache.freshness();
            let exporter = &mut *self.exporter;
            let entry = self.cache.get(Instant::now(), || exporter.refresh());
            if is_metrics {
                let mut headers = vec![
                    header("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                    header("Vary", "Accept-Encoding"),
                ];
                let body = if accepts_gzip(&head.headers) {
                    headers.push(header("Content-Encoding", "gzip"));
                    Cow::Borrowed(entry.gzip())
                } else {
                    Cow::Borrowed(entry.snapshot.text.as_bytes())
                };
                (200, headers, body)
            } else {
                let page = landing::page(&self.config.telemetry_path, &freshness, &entry.snapshot);
                (
                    200,
                    vec![header("Content-Type", "text/html; charset=utf-8")],
                    Cow::Owned(page.into_bytes()),
                )
            }
        };
        headers.extend(self.extra_headers.iter().cloned());
        let head_only = head.method == Method::Head;
        let version = head.version.clone();
        write_response(out, status, headers, &body, version, head_only, keep_alive);
        keep_alive
    }
}

/// Serializes a response with tiny_http into `out`, plus a `Connection`
/// header (tiny_http drops those from responses, since its server manages
/// connections itself; ours does).
fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: Vec<Header>,
    body: &[u8],
    version: HTTPVersion,
    head_only: bool,
    keep_alive: bool,
) {
    let start = out.len();
    let response = Response::new(StatusCode(status), headers, body, Some(body.len()), None);
    response
        .raw_print(&mut *out, version, &[], head_only, None)
        .expect("writing to memory cannot fail");
    let connection: &[u8] = if keep_alive {
        b"Connection: keep-alive\r\n"
    } else {
        b"Connection: close\r\n"
    };
    let status_line_end = out[start..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(out.len(), |at| start + at + 2);
    out.splice(status_line_end..status_line_end, connection.iter().copied());
}

/// An error answer for a head we could not parse; the connection closes.
pub(super) fn refuse(out: &mut Vec<u8>, error: &HeadError) {
    let (status, message) = match error {
        HeadError::TooLarge => (431, "431 request header fields too large\n".to_string()),
        HeadError::Malformed(why) => (400, format!("400 bad request: {why}\n")),
    };
    let headers = vec![header("Content-Type", "text/plain; charset=utf-8")];
    let body = message.as_bytes();
    write_response(out, status, headers, body, HTTPVersion(1, 1), false, false);
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

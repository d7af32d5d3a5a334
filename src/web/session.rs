//! One connection's HTTP protocol, free of I/O and clocks: bytes in
//! ([`Session::received`]), responses out ([`Session::pending`] and
//! [`Session::wrote`]), one request at a time. `conn` drives it with
//! sockets, TLS and deadlines; the fuzz harness drives it with arbitrary
//! bytes split at arbitrary points, and checks what comes out.
//!
//! The rules it keeps: a request is answered only once its whole head has
//! arrived, and with exactly one response; the next (pipelined) request is
//! parsed only once that response is fully handed on; a request body is
//! never read (a request announcing one gets 413, or 400 when its framing
//! is invalid, and the connection closes after the answer); a head that
//! cannot be parsed gets 400 or 431 and the connection closes; a request
//! that waits (a bcrypt check, a collection) holds everything behind it.

use std::sync::Arc;

use crate::cycle::cache::Entry;
use crate::web::auth::Verdict;
use crate::web::body::Body;
use crate::web::request::{parse_head, Head};
use crate::web::respond::{refuse, Http, Response, Step};

/// What a request is waiting for before it can be answered.
#[derive(Debug)]
pub enum Wait {
    /// The bcrypt check with this id.
    Check(u64, Head),
    /// The collection in progress.
    Collection(Head),
}

/// The protocol state of one connection.
#[derive(Debug, Default)]
pub struct Session {
    /// Plaintext received and not yet answered.
    input: Vec<u8>,
    /// The response being handed on, and how much of it is.
    out: Option<(Response, usize)>,
    /// Close once the output is handed on.
    close_after: bool,
    waiting: Option<Wait>,
    /// Responses fully handed on.
    served: u64,
}

/// What [`Session::process`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing to do until more bytes arrive (or none: it is idle).
    NeedMore,
    /// A response is queued.
    Respond,
    /// The request waits (see [`Wait`]).
    Wait,
    /// Busy with an earlier response, a wait, or closing.
    Busy,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// Bytes from the client (decrypted, with TLS).
    pub fn received(&mut self, bytes: &[u8]) {
        if !self.close_after {
            self.input.extend_from_slice(bytes);
        }
    }

    /// Bytes of a request head received and not yet answered.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    pub fn waiting(&self) -> Option<&Wait> {
        self.waiting.as_ref()
    }

    /// Is a response being handed on?
    pub fn responding(&self) -> bool {
        self.out.is_some()
    }

    /// Whether the response being sent cannot be finished (its body could
    /// not be inflated): the connection must be closed.
    pub fn broken(&self) -> bool {
        self.out
            .as_ref()
            .is_some_and(|(response, _)| response.body.failed())
    }

    /// Will the connection close once the output is handed on?
    pub fn closing(&self) -> bool {
        self.close_after
    }

    /// Responses fully handed on so far.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// The response bytes still to hand on: the rest of the head, and the
    /// rest of the body (shared with every other connection sending it).
    pub fn pending(&self) -> [&[u8]; 2] {
        match &self.out {
            None => [&[], &[]],
            Some((response, done)) => {
                let head = &response.head;
                let at = (*done).min(head.len());
                let body_at = done.saturating_sub(head.len());
                [&head[at..], response.body.ready(body_at)]
            }
        }
    }

    /// `n` more bytes were handed on. True when that finished the response
    /// (then, unless [`closing`](Self::closing), the next request may be
    /// processed).
    pub fn wrote(&mut self, n: usize) -> bool {
        let Some((response, done)) = &mut self.out else {
            return false;
        };
        *done += n;
        let total = response.head.len() + response.body.len();
        assert!(*done <= total, "wrote past the end of the response");
        if *done < total {
            // An inflating body inflates its next window once the last
            // one is taken.
            response.body.sent(done.saturating_sub(response.head.len()));
            return false;
        }
        self.out = None;
        self.served += 1;
        true
    }

    /// Replaces everything with a fixed answer, then close (plain HTTP on
    /// the TLS port).
    pub fn answer_and_close(&mut self, bytes: &'static [u8]) {
        self.input.clear();
        self.waiting = None;
        let response = Response {
            head: bytes.to_vec(),
            body: Body::default(),
            keep: false,
        };
        self.out = Some((response, 0));
        self.close_after = true;
    }

    fn queue(&mut self, response: Response) {
        if !response.keep {
            self.close_after = true;
            self.input.clear();
        }
        self.out = Some((response, 0));
    }

    /// Parses and answers the next request, if its whole head is buffered
    /// and nothing is in the way.
    pub fn process(&mut self, http: &mut Http<'_>) -> Progress {
        if self.out.is_some() || self.waiting.is_some() || self.close_after {
            return Progress::Busy;
        }
        match parse_head(&self.input, http.config.max_header_bytes) {
            Ok(None) => Progress::NeedMore,
            Ok(Some((head, len))) => {
                self.input.drain(..len);
                match http.respond(&head) {
                    Step::Ready(response) => {
                        self.queue(response);
                        Progress::Respond
                    }
                    Step::Check(id) => {
                        self.waiting = Some(Wait::Check(id, head));
                        Progress::Wait
                    }
                    Step::Collect => {
                        self.waiting = Some(Wait::Collection(head));
                        Progress::Wait
                    }
                }
            }
            Err(error) => {
                self.queue(refuse(&error));
                Progress::Respond
            }
        }
    }

    /// The bcrypt check with this id finished: answers the request waiting
    /// for it (which may go on to wait for a collection). False if this
    /// session was not waiting for it.
    pub fn checked(&mut self, id: u64, verdict: Verdict, http: &mut Http<'_>) -> bool {
        if !matches!(&self.waiting, Some(Wait::Check(w, _)) if *w == id) {
            return false;
        }
        let Some(Wait::Check(_, head)) = self.waiting.take() else {
            unreachable!("just matched");
        };
        match http.answer(&head, verdict) {
            Step::Ready(response) => self.queue(response),
            Step::Collect => self.waiting = Some(Wait::Collection(head)),
            Step::Check(_) => unreachable!("answer never queues a check"),
        }
        true
    }

    /// A collection finished: answers the scrape waiting for it with it,
    /// if it is of the collector set the scrape asked for (`collect[]`);
    /// else the scrape waits on for its own set's collection.
    pub fn collected(&mut self, entry: &Arc<Entry>, http: &Http<'_>) -> bool {
        let Some(Wait::Collection(head)) = &self.waiting else {
            return false;
        };
        if http.selection(head).ok() != Some(entry.set) {
            return false;
        }
        let Some(Wait::Collection(head)) = self.waiting.take() else {
            unreachable!("just matched");
        };
        self.queue(http.metrics(&head, entry));
        true
    }

    /// A bcrypt check did not finish in time: 503.
    pub fn check_late(&mut self, http: &mut Http<'_>) -> bool {
        if !matches!(self.waiting, Some(Wait::Check(..))) {
            return false;
        }
        let Some(Wait::Check(_, head)) = self.waiting.take() else {
            unreachable!("just matched");
        };
        match http.answer(&head, Verdict::Busy) {
            Step::Ready(response) => self.queue(response),
            _ => unreachable!("Busy is answered at once"),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::{Kind, KindSet};
    use crate::cycle::exporter::Snapshot;
    use crate::web::respond::Config;
    use crate::web::webconfig::WebConfig;
    use std::time::{Duration, Instant};

    fn config() -> Config {
        Config {
            telemetry_path: "/metrics".into(),
            cache_ttl: Duration::from_secs(3600),
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(3),
            max_connections: 64,
            max_header_bytes: 1024,
            web: WebConfig::default(),
        }
    }

    fn entry(text: &str) -> Arc<Entry> {
        entry_of(KindSet::ALL, text)
    }

    fn entry_of(set: KindSet, text: &str) -> Arc<Entry> {
        let snapshot = Snapshot {
            text: text.into(),
            summary: String::new(),
            started: Instant::now(),
            duration: Duration::ZERO,
            success: true,
            set,
        };
        Arc::new(Entry::encode(snapshot, Instant::now()))
    }

    /// Takes everything pending, `step` bytes at a time.
    fn drain(session: &mut Session, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while session.responding() {
            let [head, body] = session.pending();
            let part = if head.is_empty() { body } else { head };
            let n = part.len().min(step);
            out.extend_from_slice(&part[..n]);
            session.wrote(n);
        }
        out
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn pipelined_requests_are_answered_one_at_a_time_in_order() {
        let config = config();
        let mut http = Http::new(&config, None, false).unwrap();
        http.store(entry("m 1\n"));
        let mut session = Session::new();
        session.received(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nHEAD /nope HTTP/1.1\r\nHost: a\r\n\r\nGET / HT");
        assert_eq!(session.process(&mut http), Progress::Respond);
        // The second is not parsed until the first is handed on.
        assert_eq!(session.process(&mut http), Progress::Busy);
        let first = text(&drain(&mut session, 5));
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
        assert!(first.ends_with("\r\n\r\nm 1\n"), "{first}");
        assert!(first.contains("Content-Length: 4\r\n"), "{first}");
        assert_eq!(session.process(&mut http), Progress::Respond);
        let second = text(&drain(&mut session, 1000));
        assert!(second.starts_with("HTTP/1.1 404 Not Found\r\n"), "{second}");
        assert!(second.ends_with("\r\n\r\n"), "HEAD: no body: {second}");
        assert_eq!(session.process(&mut http), Progress::NeedMore);
        assert_eq!(session.served(), 2);
        session.received(b"TP/1.1\r\nConnection: close\r\n\r\nGET /");
        assert_eq!(session.process(&mut http), Progress::Respond);
        assert!(session.closing());
        assert_eq!(session.buffered(), 0, "nothing after a closing request");
        session.received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(session.buffered(), 0, "nothing read once closing");
    }

    #[test]
    fn scrapes_wait_for_the_collection_and_hold_what_follows() {
        let config = config();
        let mut http = Http::new(&config, None, false).unwrap();
        http.defer_scrapes();
        let mut session = Session::new();
        session.received(
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        assert_eq!(session.process(&mut http), Progress::Wait);
        assert!(matches!(session.waiting(), Some(Wait::Collection(_))));
        assert_eq!(session.process(&mut http), Progress::Busy);
        assert!(!session.responding());
        let shared = entry("shared 1\n");
        assert!(session.collected(&shared, &http));
        assert!(!session.collected(&shared, &http), "answered once");
        let [_, body] = session.pending();
        assert!(
            std::ptr::eq(body.as_ptr(), shared.text.gzip.as_ptr()),
            "the body is the entry's own bytes"
        );
        drain(&mut session, 1000);
        assert_eq!(session.process(&mut http), Progress::Respond);
    }

    #[test]
    fn a_request_with_a_body_is_answered_and_closed() {
        let config = config();
        let mut http = Http::new(&config, None, false).unwrap();
        let mut session = Session::new();
        session.received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(session.process(&mut http), Progress::Respond);
        assert!(session.closing());
        let out = text(&drain(&mut session, 1000));
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert_eq!(session.process(&mut http), Progress::Busy);
        assert_eq!(session.served(), 1);
    }

    #[test]
    fn bad_and_oversized_heads_get_one_answer_then_close() {
        let config = config();
        let mut http = Http::new(&config, None, false).unwrap();
        let mut session = Session::new();
        // A request line that does not end within the limit: 414.
        session.received(&[b'a'; 1025]);
        assert_eq!(session.process(&mut http), Progress::Respond);
        assert!(text(&drain(&mut session, 1000)).starts_with("HTTP/1.1 414 "));
        assert!(session.closing());
        // A head that does not end within it: 431.
        let mut session = Session::new();
        session.received(b"GET / HTTP/1.1\r\nHost: a\r\nX: ");
        session.received(&[b'a'; 1025]);
        assert_eq!(session.process(&mut http), Progress::Respond);
        assert!(text(&drain(&mut session, 1000)).starts_with("HTTP/1.1 431 "));
        assert!(session.closing());
        let mut session = Session::new();
        session.received(b"GET / HTTP/2.0\r\n\r\n");
        assert_eq!(session.process(&mut http), Progress::Respond);
        assert!(text(&drain(&mut session, 1000)).starts_with("HTTP/1.1 505 "));
        assert_eq!(session.process(&mut http), Progress::Busy);
    }

    #[test]
    fn a_filtered_scrape_waits_for_a_collection_of_its_own_set() {
        let config = config();
        let mut http = Http::new(&config, None, false).unwrap();
        http.defer_scrapes();
        let mut session = Session::new();
        session.received(b"GET /metrics?collect%5B%5D=udp HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(session.process(&mut http), Progress::Wait);
        assert!(
            !session.collected(&entry("all 1\n"), &http),
            "another set's"
        );
        let both = entry_of(KindSet::of(&[Kind::Udp, Kind::Unix]), "both 1\n");
        assert!(
            !session.collected(&both, &http),
            "a superset is not it either"
        );
        assert!(session.collected(&entry_of(KindSet::of(&[Kind::Udp]), "udp 1\n"), &http));
        assert!(text(&drain(&mut session, 1000)).ends_with("\r\n\r\nudp 1\n"));
    }

    #[test]
    fn a_bad_filter_is_answered_400_naming_it() {
        let config = config();
        let mut http = Http::new(&config, None, false).unwrap();
        http.store(entry("m 1\n"));
        let mut session = Session::new();
        session.received(b"GET /metrics?collect[]=nope&collect[]=netns HTTP/1.1\r\nHost: a\r\n\r\nGET /?collect[]=nope HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(session.process(&mut http), Progress::Respond);
        let out = text(&drain(&mut session, 1000));
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(
            out.contains(r#"unknown collector in collect[]: "nope""#),
            "{out}"
        );
        assert!(
            out.contains(r#"not a collector in collect[]: "netns""#),
            "{out}"
        );
        assert!(
            !session.closing(),
            "a 400 for a filter keeps the connection"
        );
        // Only the metrics path reads the filter.
        assert_eq!(session.process(&mut http), Progress::Respond);
        assert!(text(&drain(&mut session, 100000)).starts_with("HTTP/1.1 200 "));
    }
}

//! A response body: bytes shared by every connection that sends them (a
//! gzip scrape, the error answers), or a scrape's plain text, inflated from
//! the cached collection's shared gzip bytes a window at a time.
//!
//! The cache keeps a collection's text only gzip-compressed (see
//! `cycle::cache`: with 500 namespaces the text is 5.5 MB, its gzip 0.3
//! MB). A scrape without gzip gets the text through an [`Inflating`]
//! body: it holds a reference to the shared gzip bytes, the inflater's
//! state and one window ([`WINDOW`]) of text, refilled as the client takes
//! it. So a plain response costs its connection about 80 KB while in
//! flight, however large the text, and no client, stalled or not, holds a
//! copy of the whole text.

use std::io::{self, Read};

use flate2::bufread::GzDecoder;

use crate::cycle::cache::Bytes;

/// Text bytes inflated at a time for a plain response.
pub const WINDOW: usize = 32 * 1024;

/// The shared gzip bytes as a reader's input.
struct Shared(Bytes);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A plain response being inflated from shared gzip bytes.
pub struct Inflating {
    decoder: GzDecoder<io::Cursor<Shared>>,
    /// The text's length.
    len: usize,
    /// Where `window` starts in the text.
    start: usize,
    window: Vec<u8>,
    /// Inflating failed: nothing more is ready, and the connection is
    /// closed rather than sent a wrong or short text.
    failed: bool,
}

impl Inflating {
    /// Inflates the next window, from `start + window.len()` on.
    fn refill(&mut self) {
        self.start += self.window.len();
        self.window.clear();
        let want = WINDOW.min(self.len - self.start);
        self.window.resize(want, 0);
        // Our own gzip of a text of exactly `len` bytes: it cannot fail or
        // end early, but if it ever did, the response stops here.
        if let Err(e) = self.decoder.read_exact(&mut self.window) {
            crate::log::log(
                crate::log::Level::Error,
                "cannot inflate the cached text for a plain scrape; closing the connection",
                &[("err", &e), ("at", &self.start), ("len", &self.len)],
            );
            self.window.clear();
            self.failed = true;
        }
    }
}

/// A response's body.
pub enum Body {
    Shared(Bytes),
    Inflating(Box<Inflating>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Shared(bytes) => write!(f, "Shared({} bytes)", bytes.len()),
            Body::Inflating(i) => write!(f, "Inflating({} of {} bytes)", i.start, i.len),
        }
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::Shared(Bytes::default())
    }
}

impl Body {
    /// The text of `len` bytes whose gzip is `gzip`, inflated as it is
    /// sent; the first window is inflated here.
    pub fn inflating(gzip: Bytes, len: usize) -> Body {
        let mut body = Inflating {
            decoder: GzDecoder::new(io::Cursor::new(Shared(gzip))),
            len,
            start: 0,
            window: Vec::with_capacity(WINDOW.min(len)),
            failed: false,
        };
        body.refill();
        Body::Inflating(Box::new(body))
    }

    /// The whole body's length.
    pub fn len(&self) -> usize {
        match self {
            Body::Shared(bytes) => bytes.len(),
            Body::Inflating(i) => i.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes from `at` on that are ready to send (an inflating body's
    /// rest of its window; empty once all is sent).
    pub fn ready(&self, at: usize) -> &[u8] {
        match self {
            Body::Shared(bytes) => &bytes[at.min(bytes.len())..],
            Body::Inflating(i) => {
                let from = at.saturating_sub(i.start).min(i.window.len());
                &i.window[from..]
            }
        }
    }

    /// Whether the body cannot be sent whole (inflating failed): the
    /// connection is to be closed.
    pub fn failed(&self) -> bool {
        matches!(self, Body::Inflating(i) if i.failed)
    }

    /// Everything before `at` is sent: an inflating body whose window is
    /// used up inflates the next one.
    pub fn sent(&mut self, at: usize) {
        if let Body::Inflating(i) = self {
            if at >= i.start + i.window.len() && at < i.len {
                debug_assert_eq!(at, i.start + i.window.len(), "sent past the window");
                i.refill();
            }
        }
    }

    /// The shared bytes, if this body is shared (tests).
    pub fn shared(&self) -> Option<&Bytes> {
        match self {
            Body::Shared(bytes) => Some(bytes),
            Body::Inflating(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::Arc;

    fn gzip(text: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text).unwrap();
        Arc::new(e.finish().unwrap())
    }

    /// Takes the body `step` bytes at a time, as a slow socket would.
    fn take(body: &mut Body, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let ready = body.ready(out.len());
            if ready.is_empty() {
                break;
            }
            let n = ready.len().min(step);
            out.extend_from_slice(&ready[..n]);
            body.sent(out.len());
        }
        out
    }

    #[test]
    fn an_inflating_body_is_the_text_in_windows() {
        // Several windows and a partial last one, of varied bytes.
        let text: Vec<u8> = (0..3 * WINDOW + 1234)
            .map(|i| b"abcdefgh 0123\n"[i % 14] ^ ((i / 977) as u8 % 3))
            .collect();
        let z = gzip(&text);
        for step in [1, 1000, WINDOW - 1, WINDOW, 10 * WINDOW] {
            let mut body = Body::inflating(Arc::clone(&z), text.len());
            assert_eq!(body.len(), text.len());
            assert!(body.ready(0).len() <= WINDOW);
            let got = take(&mut body, step);
            assert!(got == text, "step {step}: differs");
        }
        // The gzip bytes are shared, not copied.
        let body = Body::inflating(Arc::clone(&z), text.len());
        assert_eq!(Arc::strong_count(&z), 2);
        drop(body);
        assert_eq!(Arc::strong_count(&z), 1);
    }

    #[test]
    fn a_body_that_cannot_be_inflated_stops_short_and_says_so() {
        // Not gzip at all, and a gzip shorter than the length claimed.
        for (bytes, len) in [(Arc::new(b"not gzip".to_vec()), 100), (gzip(b"short"), 10)] {
            let mut body = Body::inflating(bytes, len);
            assert!(body.failed(), "len {len}");
            assert!(take(&mut body, 3).is_empty());
        }
        let text = vec![b'x'; WINDOW + 10];
        let mut body = Body::inflating(gzip(&text), text.len() + 5);
        assert!(!body.failed());
        assert_eq!(take(&mut body, WINDOW).len(), WINDOW);
        assert!(body.failed(), "the second window is short");
    }

    #[test]
    fn empty_and_shared_bodies() {
        let mut empty = Body::inflating(gzip(b""), 0);
        assert!(empty.is_empty() && take(&mut empty, 10).is_empty());
        assert!(!empty.failed());
        let bytes: Bytes = Arc::new(b"hello".to_vec());
        let mut shared = Body::Shared(Arc::clone(&bytes));
        assert_eq!(take(&mut shared, 2), b"hello");
        assert!(std::ptr::eq(
            shared.shared().unwrap().as_ptr(),
            bytes.as_ptr()
        ));
    }
}

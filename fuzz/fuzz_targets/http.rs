//! libFuzzer entry point for the HTTP layer: arbitrary client bytes, split
//! at arbitrary points, through the connection's protocol state machine,
//! plain or through rustls; the checks are in http_harness.rs, shared with
//! the corpus replay in `cargo test`.
#![no_main]

#[path = "../http_harness.rs"]
mod http_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| http_harness::http(data));

//! libFuzzer entry point for netlink answer parsing and aggregation through
//! `Collector::collect`; the checks are in harness.rs, shared with the
//! corpus replay in `cargo test`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::netlink(data));

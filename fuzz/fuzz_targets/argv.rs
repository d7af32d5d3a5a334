//! libFuzzer entry point for argv translation and flag parsing; the checks
//! are in harness.rs, shared with the corpus replay in `cargo test`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::argv(data));

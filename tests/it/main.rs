//! The integration tests: one test binary (`cargo test --test it`), one
//! module per topic, helpers in `support` (split by topic). Run a topic with
//! `cargo test --test it kernel::`, one test with its full path.
//!
//! Tests that change process-wide state do it per thread: a private network
//! namespace (`unshare(CLONE_NEWNET)`) or working directory
//! (`unshare(CLONE_FS)`) belongs to the test's own thread. Helper processes
//! and the skip self-test run this binary again on one test (`--exact`).

mod support;

mod cli;
mod collect_filter;
mod collectors;
mod conventions;
mod e2e_prometheus;
mod ephemeral;
mod faults;
mod fuzz_corpus;
mod golden;
mod hostile;
mod http;
mod http_conformance;
mod http_limits;
mod http_loop;
mod kernel;
mod netns_cgroup;
mod netns_exporter;
mod netns_scale;
mod packaging;
mod skips;
mod tcp_info;
mod tls;

/// Not a test: the body of helper processes, which are this binary run
/// again on this test alone (`support::netns::Helper`, `support::netns::ENTRY`).
/// At the top of the binary so its name has no module prefix. In a normal
/// run it returns at once.
#[test]
fn helper_process_entry() {
    support::netns::run_helper_if_asked();
}

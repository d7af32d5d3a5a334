//! sockdiag_exporter: Linux socket states and queue sizes, read over netlink
//! sock_diag and served as Prometheus metrics.
//!
//! Data flow, one module per step:
//! `transport` (netlink dump) -> `parse` -> `aggregate` -> `collect` ->
//! `metrics` (catalogue) -> `render` -> `cache` -> `serve` / `dump`.
//! `diag` models the kernel structs once; `cli` and `log` sit around it.

pub mod aggregate;
pub mod cache;
pub mod collect;
pub mod diag;
pub mod exporter;
pub mod log;
pub mod metrics;
pub mod netns;
pub mod parse;
pub mod render;
pub mod transport;

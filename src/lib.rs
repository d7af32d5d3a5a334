//! sockdiag_exporter: Linux socket states and queue sizes, read over netlink
//! sock_diag and served as Prometheus metrics.
//!
//! Data flow, one module per step:
//! netlink dump -> aggregate -> metrics catalogue -> render -> cache -> serve / dump.

pub mod netns;

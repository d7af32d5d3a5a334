//! Pieces of the `collect` benchmark: the socket load generator, the
//! comparison programs (run as helper-mode subprocesses), subprocess
//! measurement, and node_exporter.

pub mod load;
// Shared with the netns bench, which uses parts this one does not.
#[allow(dead_code)]
pub mod measure;
pub mod nodeexp;
pub mod probes;

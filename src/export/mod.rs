//! What a collection becomes for its readers: the Prometheus series
//! (`metrics`, around the collectors' own), the same series read back as
//! data and written as JSON (`structured`), and the human summary and
//! landing page (`render`).

pub mod metrics;
pub mod render;
pub mod structured;

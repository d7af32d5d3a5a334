//! One collection cycle (`exporter`: collect, log outcomes, build the text
//! and the summary) and the scrape cache that shares it between scrapers
//! (`cache`).

pub mod cache;
pub mod exporter;

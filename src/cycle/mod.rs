//! One collection cycle (`exporter`: collect, log outcomes, build the text
//! and the summary), the thread that runs cycles off the serving loop
//! (`collector_thread`), and the scrape cache that shares a cycle's output
//! between scrapers (`cache`).

pub mod cache;
pub mod collector_thread;
pub mod exporter;

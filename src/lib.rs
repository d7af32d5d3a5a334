//! sockdiag_exporter: Linux socket states and queue sizes, read over netlink
//! sock_diag and served as Prometheus metrics.
//!
//! Data flow, one module per step:
//! `transport` (netlink dump) -> `parse` -> `aggregate` -> `collect` ->
//! `metrics` (catalogue) -> `render` -> `exporter` (one cycle) -> `cache` ->
//! `serve` (HTTP) or [`dump`] (one shot). `diag` models the kernel structs
//! once; `cli` and `log` sit around it.

// The data flow, one layer each; a layer uses only the layers above it.
pub mod collectors;
pub mod cycle;
pub mod export;
pub mod kernel;
pub mod scope;
pub mod web;

// Used by every layer: leaf utilities with no crate dependencies.
pub mod cap;
pub mod config;
pub mod exposition;
pub mod json;
pub mod log;
pub mod outcome;
pub mod table;

// Flags, resolved into each layer's configuration.
pub mod cli;

use std::error::Error;
use std::io::{self, Write as _};
use std::path::Path;

use cli::{Args, Config, Format, Mode};
use collectors::Collector;
use cycle::exporter::{Cgroups, Exporter};
use export::metrics::{self, Metrics};
use kernel::fixture::Fixture;
use kernel::recorder::Recorder;
use kernel::transport::{Netlink, Transport};
use scope::namespaces::Fleet;
use web::{activation, respond, serve, webconfig};

pub type BoxError = Box<dyn Error + Send + Sync>;

/// Runs what the flags ask for: resolves them once into a [`Config`], then
/// serves, dumps or prints the version.
pub fn run(args: Args) -> Result<(), BoxError> {
    let config = Config::from_args(args)?;
    match &config.mode {
        Mode::Version => {
            let version = format!(
                "sockdiag_exporter {} (revision {})\n",
                metrics::VERSION,
                metrics::REVISION
            );
            Ok(print_stdout(&version)?)
        }
        Mode::Dump { format, record } => {
            // With --collector.netns, dump runs the same pool as the server
            // (issue 16's 12 MiB at 500 namespaces is measured on dump); the
            // default path keeps glibc's defaults.
            if config.netns.is_some() {
                tune_allocator();
            }
            dump(&config, *format, record.as_deref())
        }
        Mode::Serve => serve_forever(config),
    }
}

fn serve_forever(config: Config) -> Result<(), BoxError> {
    tune_allocator();
    log::set_level(config.log_level);
    log::set_format(config.log_format);
    let web = match &config.web_config_file {
        Some(path) => webconfig::load(path)
            .map_err(|e| format!("--web.config.file {}: {e}", path.display()))?,
        None => webconfig::WebConfig::default(),
    };
    serve::install_signal_handlers()?;
    let listener = if config.systemd_socket {
        activation::listener().map_err(|e| format!("--web.systemd-socket: {e}"))?
    } else {
        serve::bind(&config.listen_address).map_err(|e| {
            format!(
                "cannot listen on --web.listen-address {}: {e}",
                config.listen_address
            )
        })?
    };
    let transport = source(&config)?;
    let collector = with_side(
        Collector::new(transport, config.collectors.clone()),
        &config,
    )?;
    let exporter = exporter(&config, collector);
    let server = respond::Config {
        web,
        ..config.server
    };
    serve::serve(listener, &server, exporter)
}

/// Keeps the server's peak RSS from creeping up collection after
/// collection (issue 16: at most 12 MiB with 500 namespaces), and a
/// `dump --collector.netns` peak down, by two glibc
/// malloc settings, unless the environment sets its own (GLIBC_TUNABLES,
/// MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_):
/// - one arena: the collection thread and the namespace pool's threads
///   otherwise each get an arena, and memory one of them frees is never
///   reused by another;
/// - a fixed 128 KiB mmap threshold: glibc raises it after the first large
///   free (up to 32 MiB), after which each collection's large buffers (the
///   families' series, a few hundred KB each with 500 namespaces) come from
///   the heap, grow by copying and leave it fragmented.
///
/// With 500 empty namespaces (and 100 busy ones on the host) VmHWM went
/// from 11.6 MiB after the first collection to 13.8 MiB after the third
/// without them; with them (and the families' size hints) it is 10.0 MiB
/// after the first and 11.1 MiB after 30 (BENCHMARKS.md).
/// Called before any thread starts.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name| std::env::var_os(name).is_some();
        if set("GLIBC_TUNABLES") || set("MALLOC_ARENA_MAX") || set("MALLOC_MMAP_THRESHOLD_") {
            return;
        }
        // SAFETY: mallopt only changes the allocator's parameters; no other
        // thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

/// The own namespace's collector, plus every other namespace's with
/// `--collector.netns`, and cgroup attribution with `--collector.cgroup`.
fn exporter<T: Transport>(config: &Config, own: Collector<T>) -> Exporter<T> {
    let exporter = Exporter::new(
        Fleet::new(own, config.netns),
        Metrics::new(config.shape.clone()),
    );
    match config.cgroup {
        Some(cgroup) => exporter.with_cgroups(Cgroups::detect(cgroup.depth, cgroup.max_series)),
        None => exporter,
    }
}

/// Where dumps are answered: the kernel, or a fixture (`--source.fixture`).
/// Each call opens a new one: a second netlink socket, or a second copy of
/// the fixture, which answers only the requests sent to it.
fn source(config: &Config) -> Result<Box<dyn Transport + Send>, BoxError> {
    Ok(match &config.fixture {
        Some(path) => Box::new(Fixture::load(path)?),
        None => Box::new(
            Netlink::open(config.collectors.deadline)
                .map_err(|e| format!("cannot open a NETLINK_SOCK_DIAG socket: {e}"))?,
        ),
    })
}

/// Gives the side collectors a second transport from [`source`], so that
/// they run while tcp does (see `collectors`), when the flags enable both.
fn with_side<T: Transport>(
    collector: Collector<T>,
    config: &Config,
) -> Result<Collector<T>, BoxError> {
    Ok(if collector.options().wants_side() {
        collector.with_side(source(config)?)
    } else {
        collector
    })
}

/// `dump`: one collection, printed to stdout.
fn dump(config: &Config, format: Format, record: Option<&Path>) -> Result<(), BoxError> {
    log::set_level(config.log_level);
    log::set_format(config.log_format);
    let source = source(config)?;
    let source: Box<dyn Transport> = match record {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| format!("cannot create --record file {}: {e}", path.display()))?;
            Box::new(Recorder::new(source, io::BufWriter::new(file))?)
        }
        None => source,
    };
    // A recording is one socket's conversation: with --record everything
    // runs one after another through the recorder, without a side socket.
    let collector = match record {
        Some(_) => Collector::new(source, config.collectors.clone()),
        None => with_side(Collector::new(source, config.collectors.clone()), config)?,
    };
    let mut exporter = exporter(config, collector).quiet();
    // The text format is written as it is made, with no copy of the whole
    // text in memory (--collector.netns: 11 KB per namespace).
    let snapshot = match format {
        Format::Prometheus => exporter.record(false),
        Format::Json | Format::Table => exporter.refresh(),
    };
    let error = exporter.last_error();
    let print = |exporter: &Exporter<_>| -> io::Result<()> {
        match format {
            Format::Prometheus => {
                let mut stdout = io::stdout().lock();
                ignore_broken_pipe(exporter.write_text(&mut stdout))
            }
            Format::Json => {
                print_stdout(&export::structured::to_json(&snapshot.text).map_err(|e| {
                    io::Error::other(format!("cannot read back the collection's series: {e}"))
                })?)
            }
            Format::Table => print_stdout(&snapshot.summary),
        }
    };
    let result = match error {
        // One namespace failing must not hide the others: print what was
        // collected (the failed collectors' series are left out, their
        // success series say 0), then fail.
        Some(error) if config.netns.is_some() => {
            print(&exporter)?;
            Err(format!("collection failed: {error}").into())
        }
        Some(error) => Err(format!("collection failed: {error}").into()),
        None => Ok(print(&exporter)?),
    };
    drop(exporter); // flushes a recording
    result
}

pub fn print_stdout(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    ignore_broken_pipe(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    )
}

/// A reader that went away (`dump | head`) is not an error.
fn ignore_broken_pipe(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}

/// Formats an error and its sources as `outer: inner: innermost`, skipping
/// sources whose text the outer message already includes.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = inner.source();
    }
    out
}

#[cfg(test)]
mod layout {
    //! The module graph of `src/` has no cycle: dependencies point one way
    //! (kernel wire format -> collectors -> scope -> export -> cycle -> web),
    //! so a module can be read, tested and replaced without its users.

    use std::collections::BTreeMap;
    use std::path::Path;

    /// Module path (`a` or `a::b`) -> the source before its unit tests.
    fn modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let name = match (prefix, stem.as_str()) {
                ("", "lib" | "main") | (_, "tests") => continue,
                (_, "mod") => prefix.to_string(),
                ("", _) => stem.clone(),
                _ => format!("{prefix}::{stem}"),
            };
            if path.is_dir() {
                modules(&path, &name, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = match text.find("#[cfg(test)]\nmod tests") {
                    Some(at) => text[..at].to_string(),
                    None => text,
                };
                out.insert(name, code);
            }
        }
    }

    /// Edges to the longest known module each `crate::…` path names.
    fn graph(sources: &BTreeMap<String, String>) -> BTreeMap<&str, Vec<&str>> {
        let mut graph = BTreeMap::new();
        for (name, code) in sources {
            let mut deps: Vec<&str> = Vec::new();
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let target = sources
                    .keys()
                    .filter(|m| path == **m || path.starts_with(&format!("{m}::")))
                    .max_by_key(|m| m.len());
                if let Some(t) = target {
                    if t != name
                        && !name.starts_with(&format!("{t}::"))
                        && !deps.contains(&t.as_str())
                    {
                        deps.push(t);
                    }
                }
            }
            graph.insert(name.as_str(), deps);
        }
        graph
    }

    /// A cycle as a path `a -> b -> a`, if there is one.
    fn find_cycle<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
        fn visit<'a>(
            at: &'a str,
            graph: &BTreeMap<&'a str, Vec<&'a str>>,
            stack: &mut Vec<&'a str>,
            done: &mut Vec<&'a str>,
        ) -> Option<Vec<&'a str>> {
            if let Some(i) = stack.iter().position(|m| *m == at) {
                let mut cycle = stack[i..].to_vec();
                cycle.push(at);
                return Some(cycle);
            }
            if done.contains(&at) {
                return None;
            }
            stack.push(at);
            for next in graph.get(at).into_iter().flatten() {
                if let Some(c) = visit(next, graph, stack, done) {
                    return Some(c);
                }
            }
            stack.pop();
            done.push(at);
            None
        }
        let mut done = Vec::new();
        graph
            .keys()
            .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
    }

    /// The layer of a module: the data flow's order, leaf utilities at 0.
    fn layer(module: &str) -> usize {
        const FLOW: [&str; 7] = [
            "kernel",
            "collectors",
            "scope",
            "export",
            "cycle",
            "web",
            "cli",
        ];
        let top = module.split("::").next().unwrap_or(module);
        FLOW.iter().position(|l| *l == top).map_or(0, |i| i + 1)
    }

    /// Edges that point against the data flow: a module using one of a
    /// later layer, or a leaf utility using any layer.
    fn against_the_flow<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<String> {
        let mut wrong = Vec::new();
        for (from, deps) in graph {
            for to in deps {
                let same_group = from.split("::").next() == to.split("::").next();
                let (lf, lt) = (layer(from), layer(to));
                if !same_group && (lt > lf || (lf == 0 && lt != 0)) {
                    wrong.push(format!("{from} (layer {lf}) uses {to} (layer {lt})"));
                }
            }
        }
        wrong
    }

    #[test]
    fn dependencies_follow_the_data_flow() {
        let mut sources = BTreeMap::new();
        modules(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            "",
            &mut sources,
        );
        let wrong = against_the_flow(&graph(&sources));
        assert!(
            wrong.is_empty(),
            "against the data flow:\n{}",
            wrong.join("\n")
        );
        let sample: BTreeMap<String, String> = [
            ("kernel::diag", ""),
            ("collectors::tcp", "use crate::kernel::diag;"),
            ("scope::netns", "use crate::export::metrics;"),
            ("export::metrics", "use crate::log;"),
            ("log", "use crate::collectors::tcp;"),
        ]
        .into_iter()
        .map(|(m, c)| (m.to_string(), c.to_string()))
        .collect();
        assert_eq!(
            against_the_flow(&graph(&sample)),
            [
                "log (layer 0) uses collectors::tcp (layer 2)",
                "scope::netns (layer 3) uses export::metrics (layer 4)",
            ]
        );
    }

    #[test]
    fn no_import_cycle_in_src() {
        let mut sources = BTreeMap::new();
        modules(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            "",
            &mut sources,
        );
        assert!(sources.contains_key("kernel::diag"), "{:?}", sources.keys());
        let graph = graph(&sources);
        if let Some(cycle) = find_cycle(&graph) {
            panic!("import cycle in src/: {}", cycle.join(" -> "));
        }
    }

    #[test]
    fn a_cycle_is_found() {
        let sources: BTreeMap<String, String> = [
            ("a", "use crate::b::X;"),
            ("b", "fn f() { crate::c::g() }"),
            ("c", "use crate::a;"),
            ("d", "use crate::a;"),
        ]
        .into_iter()
        .map(|(m, c)| (m.to_string(), c.to_string()))
        .collect();
        let cycle = find_cycle(&graph(&sources)).expect("a -> b -> c -> a");
        assert_eq!(cycle, ["a", "b", "c", "a"]);
        let acyclic: BTreeMap<String, String> = [("a", "use crate::b;"), ("b", "")]
            .into_iter()
            .map(|(m, c)| (m.to_string(), c.to_string()))
            .collect();
        assert_eq!(find_cycle(&graph(&acyclic)), None);
    }
}

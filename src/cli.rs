//! Command-line flags: argh structs, Prometheus-style durations, and the
//! translation between the dotted names users type (`--web.listen-address`)
//! and the dashed names argh accepts (`--web-listen-address`), in argv
//! (`--flag value` and `--flag=value`) and back again in help and errors.

use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

use crate::collect::DumpMode;
use crate::log::Level;
use crate::serve::ListenAddr;

/// The flags users write with dots. argh derives each dashed name from the
/// field name (`web_listen_address` -> `--web-listen-address`).
pub const DOTTED_FLAGS: &[&str] = &[
    "--web.listen-address",
    "--web.telemetry-path",
    "--web.write-timeout",
    "--web.read-timeout",
    "--web.max-connections",
    "--web.max-header-bytes",
    "--web.config.file",
    "--cache.ttl",
    "--log.level",
    "--collector.tcp.dump",
    "--collector.timeout",
    "--source.fixture",
];

pub const DEFAULT_LISTEN_ADDRESS: &str = ":19275";

#[derive(FromArgs, Debug)]
/// Prometheus exporter for Linux TCP socket states and queues, read over
/// netlink sock_diag. Without a subcommand it serves metrics over HTTP.
pub struct Args {
    /// address to serve HTTP on: ":PORT" (all addresses), "HOST:PORT" or
    /// "[IPv6]:PORT" (default ":19275")
    #[argh(
        option,
        arg_name = "address",
        default = "ListenAddr::AnyHost(19275)",
        from_str_fn(listen_address)
    )]
    pub web_listen_address: ListenAddr,

    /// path under which to serve metrics (default "/metrics")
    #[argh(
        option,
        arg_name = "path",
        default = "String::from(\"/metrics\")",
        from_str_fn(telemetry_path)
    )]
    pub web_telemetry_path: String,

    /// close a connection that has not sent a whole request head within this
    /// long; also how long an idle keep-alive connection stays open (default 5s)
    #[argh(
        option,
        arg_name = "duration",
        default = "Duration::from_secs(5)",
        from_str_fn(duration)
    )]
    pub web_read_timeout: Duration,

    /// open connections at most; the oldest one waiting for a request is
    /// closed to make room for a new one (default 64)
    #[argh(option, arg_name = "count", default = "64", from_str_fn(positive))]
    pub web_max_connections: usize,

    /// largest request head (request line and headers) accepted; larger
    /// ones get 431 (default 16384)
    #[argh(option, arg_name = "bytes", default = "16384", from_str_fn(positive))]
    pub web_max_header_bytes: usize,

    /// exporter-toolkit web configuration file (YAML) that turns on TLS
    /// and/or basic auth
    #[argh(option, arg_name = "file")]
    pub web_config_file: Option<PathBuf>,

    /// close a connection that has not taken its whole response within this
    /// long, so it cannot hold resources (default 3s)
    #[argh(
        option,
        arg_name = "duration",
        default = "Duration::from_secs(3)",
        from_str_fn(duration)
    )]
    pub web_write_timeout: Duration,

    /// serve a collection for this long before a scrape triggers a new one;
    /// collections are also never closer than 4x their own duration
    /// (default 1s)
    #[argh(
        option,
        arg_name = "duration",
        default = "Duration::from_secs(1)",
        from_str_fn(duration)
    )]
    pub cache_ttl: Duration,

    /// log level: debug, info, warn or error (default info)
    #[argh(
        option,
        arg_name = "level",
        default = "Level::Info",
        from_str_fn(level)
    )]
    pub log_level: Level,

    /// TCP dump requests: auto (one legacy AF_UNSPEC dump, per-family dumps
    /// if the kernel refuses it), legacy, or by-family (default auto)
    #[argh(
        option,
        arg_name = "mode",
        default = "DumpMode::Auto",
        from_str_fn(dump_mode)
    )]
    pub collector_tcp_dump: DumpMode,

    /// give up on a dump that has not finished after this long (default 10s)
    #[argh(
        option,
        arg_name = "duration",
        default = "Duration::from_secs(10)",
        from_str_fn(duration)
    )]
    pub collector_timeout: Duration,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,

    #[argh(subcommand)]
    pub command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Dump(DumpArgs),
}

// argh has no way to share fields between commands, so the collection flags
// (--collector.tcp.dump, --collector.timeout, --log.level) are declared on
// both `Args` and `DumpArgs`, with the same parsers and defaults.
#[derive(FromArgs, Debug)]
/// Collect once and print the result to stdout.
#[argh(subcommand, name = "dump")]
pub struct DumpArgs {
    /// output format: prometheus (exactly what the server serves) or table
    /// (a human summary) (default prometheus)
    #[argh(
        option,
        arg_name = "format",
        default = "Format::Prometheus",
        from_str_fn(format)
    )]
    pub format: Format,

    /// TCP dump requests: auto, legacy or by-family (default auto)
    #[argh(
        option,
        arg_name = "mode",
        default = "DumpMode::Auto",
        from_str_fn(dump_mode)
    )]
    pub collector_tcp_dump: DumpMode,

    /// give up on a dump that has not finished after this long (default 10s)
    #[argh(
        option,
        arg_name = "duration",
        default = "Duration::from_secs(10)",
        from_str_fn(duration)
    )]
    pub collector_timeout: Duration,

    /// read recorded netlink answers from this fixture file instead of the
    /// kernel (see tests/fixtures)
    #[argh(option, arg_name = "file")]
    pub source_fixture: Option<PathBuf>,

    /// also write the netlink answers received to this file, as a fixture
    #[argh(option, arg_name = "file")]
    pub record: Option<PathBuf>,

    /// log level: debug, info, warn or error (default info)
    #[argh(
        option,
        arg_name = "level",
        default = "Level::Info",
        from_str_fn(level)
    )]
    pub log_level: Level,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    Table,
}

fn format(s: &str) -> Result<Format, String> {
    match s {
        "prometheus" => Ok(Format::Prometheus),
        "table" => Ok(Format::Table),
        _ => Err(format!(
            "unknown format {s:?}, expected prometheus or table"
        )),
    }
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number above 0")),
    }
}

fn listen_address(s: &str) -> Result<ListenAddr, String> {
    ListenAddr::parse(s)
}

fn telemetry_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s == "/" || s.contains(['?', '#', ' ']) {
        return Err(format!(
            "{s:?} must be a path starting with / other than / itself, without ?, # or spaces"
        ));
    }
    Ok(s.to_string())
}

fn level(s: &str) -> Result<Level, String> {
    Level::parse(s)
}

fn dump_mode(s: &str) -> Result<DumpMode, String> {
    DumpMode::parse(s)
}

/// Parses a Prometheus duration: one or more number+unit pairs from largest
/// to smallest unit, e.g. `500ms`, `5s`, `1m30s`, `2h`, `1d`, `0s`.
pub fn duration(s: &str) -> Result<Duration, String> {
    const UNITS: &[(&str, u64)] = &[
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let bad = || {
        format!("invalid duration {s:?}: expected a number and a unit (ms, s, m, h, d, w, y), e.g. 500ms, 5s or 1m30s")
    };
    let mut rest = s;
    let mut total_ms: u64 = 0;
    let mut last_unit = usize::MAX;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let index = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        // Units must go from larger to smaller, each used once (as Prometheus).
        if last_unit != usize::MAX && index <= last_unit {
            return Err(bad());
        }
        last_unit = index;
        total_ms = number
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_millis(total_ms))
}

/// A parse that ended early: help text (status 0) or an error (status 2).
#[derive(Debug)]
pub struct Exit {
    pub output: String,
    pub status: u8,
}

fn dashed(dotted: &str) -> String {
    dotted.replace('.', "-")
}

/// Rewrites dotted flag names to argh's dashed ones, and splits
/// `--flag=value` into two arguments. Everything after `--` is left alone.
pub fn translate_argv(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut rest = args.iter();
    for arg in rest.by_ref() {
        if arg == "--" {
            out.push(arg.clone());
            break;
        }
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (arg.as_str(), None),
        };
        let known = DOTTED_FLAGS.iter().any(|f| *f == name || dashed(f) == name)
            || matches!(name, "--format" | "--record");
        match value {
            Some(value) if known => {
                out.push(dashed(name));
                out.push(value.to_string());
            }
            None if known => out.push(dashed(name)),
            _ => out.push(arg.clone()),
        }
    }
    out.extend(rest.cloned());
    out
}

/// Rewrites argh's dashed names back to the dotted ones in its output.
fn restore_dotted(text: &str) -> String {
    let mut flags: Vec<&str> = DOTTED_FLAGS.to_vec();
    flags.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let mut out = text.to_string();
    for flag in flags {
        out = out.replace(&dashed(flag), flag);
    }
    out
}

/// Parses argv (program name first).
pub fn parse(argv: &[String]) -> Result<Args, Exit> {
    let program = argv
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_else(|| "sockdiag_exporter".into());
    let translated = translate_argv(argv.get(1..).unwrap_or(&[]));
    let refs: Vec<&str> = translated.iter().map(String::as_str).collect();
    Args::from_args(&[&program], &refs).map_err(|early| match early.status {
        Ok(()) => Exit {
            output: restore_dotted(&early.output),
            status: 0,
        },
        Err(()) => {
            // One line naming the flag.
            let first = early.output.lines().next().unwrap_or("invalid arguments");
            Exit {
                output: format!("{program}: {}", restore_dotted(first.trim())),
                status: 2,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        std::iter::once("sockdiag_exporter")
            .chain(args.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn durations() {
        let ms = |n| Duration::from_millis(n);
        assert_eq!(duration("500ms"), Ok(ms(500)));
        assert_eq!(duration("5s"), Ok(ms(5000)));
        assert_eq!(duration("1m"), Ok(ms(60_000)));
        assert_eq!(duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(duration("1h1ms"), Ok(ms(3_600_001)));
        assert_eq!(duration("0s"), Ok(ms(0)));
        assert_eq!(duration("2d"), Ok(ms(172_800_000)));
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "-1s",
            "1.5s",
            "5s1m",
            "1s1s",
            " 5s",
            "99999999999999999999y",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(duration("5x").unwrap_err().contains("\"5x\""));
    }

    #[test]
    fn dotted_flags_in_both_forms() {
        let args = parse(&argv(&[
            "--web.listen-address=127.0.0.1:0",
            "--web.telemetry-path",
            "/m",
            "--cache.ttl=250ms",
            "--log.level",
            "debug",
            "--collector.tcp.dump=by-family",
        ]))
        .unwrap();
        assert_eq!(
            args.web_listen_address,
            ListenAddr::Host("127.0.0.1".into(), 0)
        );
        assert_eq!(args.web_telemetry_path, "/m");
        assert_eq!(args.cache_ttl, Duration::from_millis(250));
        assert_eq!(args.log_level, Level::Debug);
        assert_eq!(args.collector_tcp_dump, DumpMode::ByFamily);
        assert!(args.command.is_none());
    }

    #[test]
    fn defaults() {
        let args = parse(&argv(&[])).unwrap();
        assert_eq!(args.web_listen_address, ListenAddr::AnyHost(19275));
        assert_eq!(args.web_telemetry_path, "/metrics");
        assert_eq!(args.cache_ttl, Duration::from_secs(1));
        assert_eq!(args.collector_tcp_dump, DumpMode::Auto);
    }

    #[test]
    fn dump_subcommand() {
        let args = parse(&argv(&[
            "dump",
            "--format=table",
            "--collector.tcp.dump",
            "legacy",
        ]))
        .unwrap();
        let Some(Command::Dump(dump)) = args.command else {
            panic!("no dump")
        };
        assert_eq!(dump.format, Format::Table);
        assert_eq!(dump.collector_tcp_dump, DumpMode::Legacy);
    }

    #[test]
    fn errors_name_the_dotted_flag_on_one_line() {
        let err = parse(&argv(&["--cache.ttl", "5x"])).unwrap_err();
        assert_eq!(err.status, 2);
        let first = err.output.lines().next().unwrap();
        assert!(first.contains("--cache.ttl"), "{first}");
        assert!(first.contains("5x"), "{first}");
        assert!(!err.output.contains("--cache-ttl"));

        let err = parse(&argv(&["--web.listen-address", "nope"])).unwrap_err();
        assert!(
            err.output.contains("--web.listen-address"),
            "{}",
            err.output
        );
        let err = parse(&argv(&["--bogus"])).unwrap_err();
        assert!(err.output.contains("--bogus"), "{}", err.output);
        assert_eq!(err.status, 2);
        let err = parse(&argv(&["dump", "--format", "xml"])).unwrap_err();
        assert!(err.output.contains("--format"), "{}", err.output);
    }

    #[test]
    fn help_shows_dotted_names() {
        let help = parse(&argv(&["--help"])).unwrap_err();
        assert_eq!(help.status, 0);
        for flag in DOTTED_FLAGS.iter().filter(|f| **f != "--source.fixture") {
            assert!(
                help.output.contains(flag),
                "{flag} missing:\n{}",
                help.output
            );
        }
        assert!(!help.output.contains("--web-listen-address"));
        let help = parse(&argv(&["dump", "--help"])).unwrap_err();
        assert!(help.output.contains("--source.fixture"), "{}", help.output);
    }

    #[test]
    fn values_after_double_dash_are_untouched() {
        let out = translate_argv(&["--".into(), "--cache.ttl=1s".into()]);
        assert_eq!(out, vec!["--", "--cache.ttl=1s"]);
        let out = translate_argv(&["--unknown=1".into()]);
        assert_eq!(out, vec!["--unknown=1"]);
    }
}

//! Command-line flags: argh structs, Prometheus-style durations, and the
//! translation between the dotted names users type (`--web.listen-address`)
//! and the dashed names argh accepts (`--web-listen-address`), in argv
//! (`--flag value` and `--flag=value`) and back again in help and errors.
//! [`Config`] is what the flags mean, resolved once for the rest to read.

mod argv;
mod resolve;

pub use argv::{collector_switches, dotted_flags, translate_argv};
pub use resolve::{CgroupConfig, Config, Mode};

use argv::{restore_dotted, to_collector_options, with_collector_help};

use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

use crate::collectors::tcp::DumpMode;
use crate::config::{duration, ListenAddr};
use crate::config::{Networks, PortSet};
use crate::log::{Format as LogFormat, Level};

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

    /// open connections at most; at the cap a new connection takes the
    /// place of a slow client, a client sending requests back to back, or a
    /// client that stopped reading, never one with a request in progress,
    /// and new connections wait when none can make room (default 64)
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

    /// log line format: logfmt or json (default logfmt)
    #[argh(
        option,
        arg_name = "format",
        default = "LogFormat::Logfmt",
        from_str_fn(log_format)
    )]
    pub log_format: LogFormat,

    /// leave out the exporter's own process metrics (process_*), as
    /// node_exporter does; the sockdiag_* health series stay
    #[argh(switch)]
    pub web_disable_exporter_metrics: bool,

    /// listen on the socket systemd passes (socket activation: LISTEN_FDS,
    /// LISTEN_PID) instead of --web.listen-address
    #[argh(switch)]
    pub web_systemd_socket: bool,

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
        from_str_fn(positive_duration)
    )]
    pub collector_timeout: Duration,

    /// break TCP sockets down by state for these ports, as local port and
    /// as remote port: a list like 22,443,5432,8000-8100 (default none)
    #[argh(
        option,
        arg_name = "ports",
        default = "PortSet::default()",
        from_str_fn(ports)
    )]
    pub collector_tcp_ports: PortSet,

    /// also read struct tcp_info (INET_DIAG_INFO) in the tcp dump: RTT
    /// histogram, retransmissions and unsent bytes of established sockets,
    /// host-wide and per port of --collector.tcp.ports (default off; costs
    /// about 20% more kernel time per socket)
    #[argh(switch)]
    pub collector_tcp_info: bool,
    /// do not read tcp_info (the default)
    #[argh(switch)]
    pub no_collector_tcp_info: bool,

    /// destinations (source address, remote address and port) with their
    /// own sockdiag_ephemeral_ports_used series, the busiest first; 0
    /// keeps only the maximum (default 10)
    #[argh(option, arg_name = "count", default = "10", from_str_fn(whole))]
    pub collector_tcp_ephemeral_top: usize,

    /// count TCP sockets by the most specific of these networks holding
    /// the remote address, the rest as other: a list like
    /// 10.0.0.0/8,192.168.0.0/16,2001:db8::/32 (default none)
    #[argh(
        option,
        arg_name = "cidrs",
        default = "Networks::default()",
        from_str_fn(networks)
    )]
    pub collector_tcp_remote_networks: Networks,

    /// the same per-port view for UDP, plus receive drops per local port
    /// (default none)
    #[argh(
        option,
        arg_name = "ports",
        default = "PortSet::default()",
        from_str_fn(ports)
    )]
    pub collector_udp_ports: PortSet,

    /// TCP listeners reported at most; the rest are counted in
    /// sockdiag_series_dropped (default 1000)
    #[argh(option, arg_name = "count", default = "1000", from_str_fn(positive))]
    pub collector_listeners_max: usize,

    /// unix listener paths reported at most; the rest are summed as @other
    /// (default 200)
    #[argh(option, arg_name = "count", default = "200", from_str_fn(positive))]
    pub collector_unix_max_listeners: usize,

    /// per-port series per protocol at most; the rest are counted in
    /// sockdiag_series_dropped (default 2000)
    #[argh(option, arg_name = "count", default = "2000", from_str_fn(positive))]
    pub collector_ports_max_series: usize,

    /// socket collectors turned on by --collector.NAME (the switches are
    /// listed in the help from the collector list)
    #[argh(option, hidden_help)]
    pub collector_on: Vec<String>,
    /// socket collectors turned off by --no-collector.NAME
    #[argh(option, hidden_help)]
    pub collector_off: Vec<String>,
    /// collect from every network namespace on the host, each with its own
    /// netns label (needs CAP_SYS_ADMIN and CAP_SYS_PTRACE; default off)
    #[argh(switch)]
    pub collector_netns: bool,
    /// collect from the own network namespace only (the default)
    #[argh(switch)]
    pub no_collector_netns: bool,
    /// network namespaces collected at most (the own one first, then named
    /// ones, then the rest by inode); the rest are counted in
    /// sockdiag_netns_skipped (default 512)
    #[argh(option, arg_name = "count", default = "512", from_str_fn(positive))]
    pub collector_netns_max: usize,
    /// threads collecting the other network namespaces at most (default:
    /// the CPUs this process may run on)
    #[argh(option, arg_name = "count", from_str_fn(positive))]
    pub collector_netns_parallel: Option<usize>,
    /// no further network namespace is started this long after a collection
    /// began; the ones not reached keep their last series and go first next
    /// time, counted in sockdiag_netns_stale (default 8s)
    #[argh(
        option,
        arg_name = "duration",
        default = "Duration::from_secs(8)",
        from_str_fn(duration)
    )]
    pub collector_netns_budget: Duration,
    /// count TCP sockets by the cgroup v2 path of their owner, as
    /// sockdiag_cgroup_sockets (default off)
    #[argh(switch)]
    pub collector_cgroup: bool,
    /// do not count sockets by cgroup (the default)
    #[argh(switch)]
    pub no_collector_cgroup: bool,
    /// sum cgroups into their first N path components, e.g. 2 for
    /// /kubepods.slice/kubepods-burstable.slice (default: whole paths)
    #[argh(option, arg_name = "N", from_str_fn(positive))]
    pub collector_cgroup_depth: Option<usize>,
    /// cgroup series per namespace at most; the lightest cgroups are summed
    /// as "other" and counted in sockdiag_series_dropped (default 500)
    #[argh(option, arg_name = "count", default = "500", from_str_fn(positive))]
    pub collector_cgroup_max_series: usize,

    /// also serve node_exporter's node_tcp_connection_states{state}, so
    /// existing tcpstat dashboards keep working
    #[argh(switch)]
    pub compat_node_exporter: bool,

    /// read recorded netlink answers from this fixture file instead of the
    /// kernel (tests and demos; see tests/fixtures)
    #[argh(option, arg_name = "file")]
    pub source_fixture: Option<PathBuf>,

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

#[derive(FromArgs, Debug)]
/// Collect once and print the result to stdout. Every flag of the main
/// command that shapes a collection (--collector.*, --compat.node-exporter,
/// --source.fixture, --log.level) works here too, before or after `dump`.
#[argh(subcommand, name = "dump")]
pub struct DumpArgs {
    /// output format: prometheus (exactly what the server serves), json
    /// (the same series grouped by collector) or table (a human summary)
    /// (default prometheus)
    #[argh(
        option,
        arg_name = "format",
        default = "Format::Prometheus",
        from_str_fn(format)
    )]
    pub format: Format,

    /// also write the netlink answers received to this file, as a fixture
    #[argh(option, arg_name = "file")]
    pub record: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    Json,
    Table,
}

fn format(s: &str) -> Result<Format, String> {
    match s {
        "prometheus" => Ok(Format::Prometheus),
        "json" => Ok(Format::Json),
        "table" => Ok(Format::Table),
        _ => Err(format!(
            "unknown format {s:?}, expected prometheus, json or table"
        )),
    }
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number above 0")),
    }
}

/// A whole number, 0 included.
fn whole(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

fn networks(s: &str) -> Result<Networks, String> {
    Networks::parse(s)
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

fn log_format(s: &str) -> Result<LogFormat, String> {
    LogFormat::parse(s)
}

fn dump_mode(s: &str) -> Result<DumpMode, String> {
    DumpMode::parse(s)
}

fn ports(s: &str) -> Result<PortSet, String> {
    PortSet::parse(s)
}

/// A duration above zero (a zero timeout would fail every collection).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} must be longer than 0")),
        d => Ok(d),
    }
}

/// A parse that ended early: help text (status 0) or an error (status 2).
#[derive(Debug)]
pub struct Exit {
    pub output: String,
    pub status: u8,
}

/// Parses argv (program name first).
pub fn parse(argv: &[String]) -> Result<Args, Exit> {
    let program = argv
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_else(|| "sockdiag_exporter".into());
    let translated = to_collector_options(translate_argv(argv.get(1..).unwrap_or(&[])));
    let refs: Vec<&str> = translated.iter().map(String::as_str).collect();
    Args::from_args(&[&program], &refs).map_err(|early| match early.status {
        Ok(()) => Exit {
            output: with_collector_help(&restore_dotted(&early.output)),
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
    use super::argv::{dashed, is_switch};
    use super::*;
    use crate::collectors::Kind;

    fn argv(args: &[&str]) -> Vec<String> {
        std::iter::once("sockdiag_exporter")
            .chain(args.iter().copied())
            .map(String::from)
            .collect()
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
        assert_eq!(args.collector_tcp_dump, DumpMode::Legacy);
        let Some(Command::Dump(dump)) = args.command else {
            panic!("no dump")
        };
        assert_eq!(dump.format, Format::Table);
    }

    #[test]
    fn collector_switches_last_one_wins() {
        let options = Config::from_args(parse(&argv(&[])).unwrap())
            .unwrap()
            .collectors;
        assert_eq!(options.enabled, Kind::ALL);
        let args = parse(&argv(&[
            "--no-collector.udp",
            "--collector.udp",
            "--collector.unix",
            "--no-collector.unix",
            "dump",
            "--no-collector.listeners",
            "--format",
            "table",
        ]))
        .unwrap();
        let config = Config::from_args(args).unwrap();
        assert_eq!(config.collectors.enabled, [Kind::Tcp, Kind::Udp]);
        assert!(matches!(config.mode, Mode::Dump { .. }));
    }

    #[test]
    fn port_lists_caps_and_compat() {
        let args = parse(&argv(&[
            "--collector.tcp.ports=22,5432,8000-8002",
            "--collector.udp.ports",
            "53",
            "--collector.ports.max-series=50",
            "--compat.node-exporter",
        ]))
        .unwrap();
        let config = Config::from_args(args).unwrap();
        let options = &config.collectors;
        assert!(options.tcp_ports.contains(8001));
        assert!(!options.tcp_ports.contains(8003));
        assert_eq!(options.tcp_ports.singles(), &[22, 5432]);
        assert!(options.udp_ports.contains(53));
        assert!(config.shape.compat_node_exporter);
        assert_eq!(options.max_port_series, 50);
        for bad in ["0", "70000", "80-79", "22,,80", "x", ""] {
            let err = parse(&argv(&["--collector.tcp.ports", bad])).unwrap_err();
            assert_eq!(err.status, 2, "{bad}");
            assert!(
                err.output.contains("--collector.tcp.ports"),
                "{}",
                err.output
            );
        }
    }

    /// Flags that cannot be combined are refused, except with `--version`,
    /// which prints the version whatever else is given.
    #[test]
    fn conflicts_are_refused_but_not_with_version() {
        for (flags, what) in [
            (
                &["--collector.netns", "--source.fixture", "x"][..],
                "--source.fixture",
            ),
            (
                &["--collector.cgroup", "--no-collector.tcp"][..],
                "--no-collector.tcp",
            ),
            (
                &["--collector.netns", "dump", "--record", "x"][..],
                "dump --record",
            ),
        ] {
            let err = Config::from_args(parse(&argv(flags)).unwrap()).unwrap_err();
            assert!(
                err.contains(what) && err.contains("cannot be combined"),
                "{err}"
            );
            let mut with_version = flags.to_vec();
            with_version.push("--version");
            let config = Config::from_args(parse(&argv(&with_version)).unwrap()).unwrap();
            assert_eq!(config.mode, Mode::Version, "{flags:?}");
        }
    }

    /// The switch pair of every registered collector works and is in the
    /// help, in both forms, from the collector list alone.
    #[test]
    fn every_registered_collector_has_its_switch_pair() {
        let help = parse(&argv(&["--help"])).unwrap_err().output;
        for (kind, on, off) in collector_switches() {
            assert!(help.contains(&on) && help.contains(&off), "{on}:\n{help}");
            for form in [off.clone(), dashed(&off)] {
                let config = Config::from_args(parse(&argv(&[&form])).unwrap()).unwrap();
                let want: Vec<Kind> = Kind::ALL.into_iter().filter(|k| *k != kind).collect();
                assert_eq!(config.collectors.enabled, want, "{form}");
            }
            let back = parse(&argv(&[&off, "dump", &on])).unwrap();
            assert_eq!(
                Config::from_args(back).unwrap().collectors.enabled,
                Kind::ALL
            );
        }
        let bogus = parse(&argv(&["--collector-off", "nope"])).unwrap();
        let err = Config::from_args(bogus).unwrap_err();
        assert!(err.contains("unknown collector \"nope\""), "{err}");
    }

    #[test]
    fn switches_take_no_value() {
        for switch in ["--collector-netns", "--no-collector-cgroup", "--version"] {
            assert!(is_switch(switch), "{switch}");
        }
        for option in [
            "--collector-netns-max",
            "--collector-tcp-ports",
            "--no-collector-x",
        ] {
            assert!(!is_switch(option), "{option}");
        }
        // A switch after `dump` is hoisted without taking `--format` along.
        let out =
            translate_argv(&["dump", "--collector.netns", "--format", "table"].map(String::from));
        assert_eq!(out, ["--collector-netns", "dump", "--format", "table"]);
    }

    /// The exporter-toolkit flags: absent they keep the old behaviour,
    /// given they change it, and a wrong value names the flag.
    #[test]
    fn log_format_and_exporter_toolkit_switches() {
        let config = Config::from_args(parse(&argv(&[])).unwrap()).unwrap();
        assert_eq!(config.log_format, LogFormat::Logfmt);
        assert!(config.shape.process);
        assert!(!config.systemd_socket);
        let config = Config::from_args(
            parse(&argv(&[
                "--log.format=json",
                "--web.disable-exporter-metrics",
                "--web.systemd-socket",
            ]))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(!config.shape.process);
        assert!(config.systemd_socket);
        // After `dump` too, hoisted in front of it.
        let args = parse(&argv(&[
            "dump",
            "--web.disable-exporter-metrics",
            "--format",
            "json",
            "--log.format",
            "json",
        ]))
        .unwrap();
        assert!(args.web_disable_exporter_metrics);
        assert_eq!(args.log_format, LogFormat::Json);
        let Some(Command::Dump(dump)) = args.command else {
            panic!("no dump")
        };
        assert_eq!(dump.format, Format::Json);
        let err = parse(&argv(&["--log.format", "xml"])).unwrap_err();
        assert_eq!(err.status, 2);
        assert!(err.output.contains("--log.format"), "{}", err.output);
        assert!(err.output.contains("\"xml\""), "{}", err.output);
    }

    #[test]
    fn a_zero_collector_timeout_is_refused() {
        let err = parse(&argv(&["--collector.timeout", "0s"])).unwrap_err();
        assert_eq!(err.status, 2);
        assert!(err.output.contains("--collector.timeout"), "{}", err.output);
        assert!(err.output.contains("longer than 0"), "{}", err.output);
        assert!(parse(&argv(&["--collector.timeout", "1ms"])).is_ok());
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
        for flag in dotted_flags() {
            assert!(
                help.output.contains(flag.as_str()),
                "{flag} missing:\n{}",
                help.output
            );
        }
        assert!(!help.output.contains("--web-listen-address"));
        let help = parse(&argv(&["dump", "--help"])).unwrap_err();
        assert!(help.output.contains("--format"), "{}", help.output);
        assert!(help.output.contains("--collector.*"), "{}", help.output);
    }

    #[test]
    fn double_dash_stays_where_it_was() {
        // Found by fuzzing: `--` after a value-less flag behind `dump` was
        // hoisted in front of `dump` as that flag's value.
        let argv: Vec<String> = ["dump", "--cache.ttl", "--", "x"]
            .map(String::from)
            .to_vec();
        assert_eq!(translate_argv(&argv), ["--cache-ttl", "dump", "--", "x"]);
    }

    #[test]
    fn values_after_double_dash_are_untouched() {
        let out = translate_argv(&["--".into(), "--cache.ttl=1s".into()]);
        assert_eq!(out, vec!["--", "--cache.ttl=1s"]);
        let out = translate_argv(&["--unknown=1".into()]);
        assert_eq!(out, vec!["--unknown=1"]);
    }
}

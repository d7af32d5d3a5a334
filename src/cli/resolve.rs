//! The flags resolved once into what each layer reads: the collectors'
//! options, the series' shape, the namespace and cgroup scopes, the
//! server's settings and what to do (serve, dump, print the version).
//! Flags that cannot be combined are refused here, before anything runs.

use std::path::PathBuf;

use super::{Args, Command, DumpArgs, Format};
use crate::collectors::{Kind, Options};
use crate::config::ListenAddr;
use crate::export::metrics::Shape;
use crate::log::{Format as LogFormat, Level};
use crate::scope::namespaces::NetnsConfig;
use crate::web::respond;
use crate::web::webconfig::WebConfig;

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Print the version.
    Version,
    /// Serve metrics over HTTP.
    Serve,
    /// Collect once and print.
    Dump {
        format: Format,
        /// Also record the netlink answers to this file.
        record: Option<PathBuf>,
    },
}

/// `--collector.cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupConfig {
    /// Path components kept, 0 for whole paths (`--collector.cgroup.depth`).
    pub depth: usize,
    /// Rows at most per namespace (`--collector.cgroup.max-series`).
    pub max_series: usize,
}

/// The configuration the exporter runs with.
#[derive(Debug)]
pub struct Config {
    pub mode: Mode,
    pub log_level: Level,
    /// `--log.format`.
    pub log_format: LogFormat,
    /// `--source.fixture`: answer dumps from this file instead of the kernel.
    pub fixture: Option<PathBuf>,
    pub collectors: Options,
    pub shape: Shape,
    /// `--collector.netns`.
    pub netns: Option<NetnsConfig>,
    /// `--collector.cgroup`.
    pub cgroup: Option<CgroupConfig>,
    pub listen_address: ListenAddr,
    /// `--web.systemd-socket`: serve on the socket systemd passes instead.
    pub systemd_socket: bool,
    /// `--web.config.file`, loaded when the server starts.
    pub web_config_file: Option<PathBuf>,
    /// The server's settings (its `web` part comes from the file above).
    pub server: respond::Config,
}

impl Config {
    /// Resolves the flags; Err names the flags that cannot be combined.
    pub fn from_args(args: Args) -> Result<Config, String> {
        let netns = args.collector_netns && !args.no_collector_netns;
        let cgroup = args.collector_cgroup && !args.no_collector_cgroup;
        let tcp_info = args.collector_tcp_info && !args.no_collector_tcp_info;
        let collectors = Options {
            enabled: enabled_collectors(&args)?,
            tcp_dump: args.collector_tcp_dump,
            tcp_ports: args.collector_tcp_ports.clone(),
            udp_ports: args.collector_udp_ports.clone(),
            tcp_info,
            cgroup,
            deadline: args.collector_timeout,
            max_listeners: args.collector_listeners_max,
            max_unix_listeners: args.collector_unix_max_listeners,
            max_port_series: args.collector_ports_max_series,
            ephemeral_top: args.collector_tcp_ephemeral_top,
            remote_networks: args.collector_tcp_remote_networks.clone(),
        };
        let mode = match (&args.command, args.version) {
            (_, true) => Mode::Version,
            (None, false) => Mode::Serve,
            (Some(Command::Dump(DumpArgs { format, record })), false) => Mode::Dump {
                format: *format,
                record: record.clone(),
            },
        };
        // `--version` prints the version whatever else is given.
        let conflicts_matter = mode != Mode::Version;
        if conflicts_matter && cgroup && !collectors.enabled(Kind::Tcp) {
            return Err("--collector.cgroup counts the tcp collector's sockets; it cannot be combined with --no-collector.tcp".into());
        }
        if conflicts_matter && tcp_info && !collectors.enabled(Kind::Tcp) {
            return Err("--collector.tcp.info reads the tcp collector's dump; it cannot be combined with --no-collector.tcp".into());
        }
        if conflicts_matter && netns && args.source_fixture.is_some() {
            return Err("--collector.netns reads the kernel's namespaces; it cannot be combined with --source.fixture".into());
        }
        if netns
            && matches!(
                mode,
                Mode::Dump {
                    record: Some(_),
                    ..
                }
            )
        {
            return Err("dump --record records the own namespace's dumps only; it cannot be combined with --collector.netns".into());
        }
        Ok(Config {
            log_level: args.log_level,
            log_format: args.log_format,
            fixture: args.source_fixture,
            shape: Shape {
                // node_exporter drops its go_*, process_* and promhttp_*
                // families; of ours only process_* are of that kind.
                process: !args.web_disable_exporter_metrics,
                compat_node_exporter: args.compat_node_exporter,
                netns,
                cgroup,
            },
            netns: netns.then(|| {
                let mut config = NetnsConfig::new(args.collector_netns_max, args.collector_timeout);
                if let Some(parallel) = args.collector_netns_parallel {
                    config.parallel = parallel;
                }
                config.budget = args.collector_netns_budget;
                config
            }),
            cgroup: cgroup.then_some(CgroupConfig {
                depth: args.collector_cgroup_depth.unwrap_or(0),
                max_series: args.collector_cgroup_max_series,
            }),
            listen_address: args.web_listen_address,
            systemd_socket: args.web_systemd_socket,
            web_config_file: args.web_config_file,
            server: respond::Config {
                telemetry_path: args.web_telemetry_path,
                cache_ttl: args.cache_ttl,
                read_timeout: args.web_read_timeout,
                write_timeout: args.web_write_timeout,
                max_connections: args.web_max_connections,
                max_header_bytes: args.web_max_header_bytes,
                web: WebConfig::default(),
            },
            collectors,
            mode,
        })
    }
}

/// The socket collectors on after `--[no-]collector.NAME` (of a pair only
/// the last given counts; the argv translation keeps only that one).
fn enabled_collectors(args: &Args) -> Result<Vec<Kind>, String> {
    let kind = |name: &String| {
        Kind::ALL
            .into_iter()
            .find(|k| k.label() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.into_iter().map(Kind::label).collect();
                format!("unknown collector {name:?} (known: {})", known.join(", "))
            })
    };
    let off = args
        .collector_off
        .iter()
        .map(kind)
        .collect::<Result<Vec<_>, _>>()?;
    args.collector_on
        .iter()
        .try_for_each(|name| kind(name).map(drop))?;
    Ok(Kind::ALL.into_iter().filter(|k| !off.contains(k)).collect())
}

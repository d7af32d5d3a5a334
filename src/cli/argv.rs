//! The argv the user typed, made into what argh parses, and argh's output
//! made into what the user reads: dotted flag names (`--web.listen-address`)
//! to argh's dashed ones and back, `--flag=value` split, main-command flags
//! after `dump` moved in front of it, the last of a switch pair kept, and
//! the socket collectors' switches, which come from the collector list.

use std::sync::OnceLock;

use crate::collectors::Kind;

/// The flags users write with dots, besides the socket collectors' switch
/// pairs ([`collector_switches`]). argh derives each dashed name from the
/// field name (`web_listen_address` -> `--web-listen-address`).
pub(super) const STATIC_DOTTED_FLAGS: &[&str] = &[
    "--web.listen-address",
    "--web.telemetry-path",
    "--web.write-timeout",
    "--web.read-timeout",
    "--web.max-connections",
    "--web.max-header-bytes",
    "--web.config.file",
    "--cache.ttl",
    "--log.level",
    "--log.format",
    "--web.disable-exporter-metrics",
    "--web.systemd-socket",
    "--collector.tcp.dump",
    "--collector.tcp.ports",
    "--collector.tcp.ephemeral.top",
    "--collector.tcp.remote-networks",
    "--collector.udp.ports",
    "--collector.listeners.max",
    "--collector.unix.max-listeners",
    "--collector.ports.max-series",
    "--collector.timeout",
    "--collector.netns.max",
    "--collector.netns.parallel",
    "--collector.netns.budget",
    "--collector.cgroup.depth",
    "--collector.cgroup.max-series",
    "--compat.node-exporter",
    "--source.fixture",
    // Scope switches, each with a --no- form.
    "--collector.netns",
    "--collector.cgroup",
    "--no-collector.netns",
    "--no-collector.cgroup",
    // The tcp collector's INET_DIAG_INFO option, with its --no- form.
    "--collector.tcp.info",
    "--no-collector.tcp.info",
];

/// `--collector.NAME` and `--no-collector.NAME` for every registered socket
/// collector ([`Kind::ALL`]): the switches come from the collector list.
pub fn collector_switches() -> impl Iterator<Item = (Kind, String, String)> {
    Kind::ALL.into_iter().map(|kind| {
        let name = kind.label();
        (
            kind,
            format!("--collector.{name}"),
            format!("--no-collector.{name}"),
        )
    })
}

/// Every flag users write with dots: the static ones and the collector
/// switch pairs.
pub fn dotted_flags() -> &'static [String] {
    static FLAGS: OnceLock<Vec<String>> = OnceLock::new();
    FLAGS.get_or_init(|| {
        let mut flags: Vec<String> = STATIC_DOTTED_FLAGS.iter().map(|f| f.to_string()).collect();
        for (_, on, off) in collector_switches() {
            flags.push(on);
            flags.push(off);
        }
        flags
    })
}

/// Whether a (dashed) flag takes no value: the collector switch pairs,
/// `--compat.node-exporter`, `--web.disable-exporter-metrics`,
/// `--web.systemd-socket` and `--version`; every other flag in
/// [`dotted_flags`] takes one.
pub(super) fn is_switch(arg: &str) -> bool {
    let collector = arg
        .strip_prefix("--no-collector-")
        .or_else(|| arg.strip_prefix("--collector-"));
    collector.is_some_and(|name| switched().any(|s| s == name))
        || arg == "--compat-node-exporter"
        || arg == "--web-disable-exporter-metrics"
        || arg == "--web-systemd-socket"
        || arg == "--version"
}

/// The names with an on/off switch pair: every socket collector, the
/// netns and cgroup scopes, and tcp's INET_DIAG_INFO option.
pub(super) fn switched() -> impl Iterator<Item = &'static str> {
    Kind::ALL
        .into_iter()
        .map(Kind::label)
        .chain(["netns", "cgroup", "tcp-info"])
}

/// The `dump` subcommand's own flags; any other flag given after `dump` is
/// a main-command flag and is moved in front of it.
pub(super) const DUMP_FLAGS: &[&str] = &["--format", "--record", "--help", "-h"];

pub(super) fn dashed(dotted: &str) -> String {
    dotted.replace('.', "-")
}

/// Rewrites dotted flag names to argh's dashed ones, and splits
/// `--flag=value` into two arguments. Everything after `--` is left alone.
/// Main-command flags given after `dump` are moved in front of it, and of a
/// `--collector.X` / `--no-collector.X` pair only the last one given counts.
pub fn translate_argv(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 2);
    // `--` and what follows it stay out of the rewriting below, so hoisting
    // cannot take `--` as a flag's value and move it in front of `dump`.
    let mut tail = Vec::new();
    let mut rest = args.iter();
    for arg in rest.by_ref() {
        if arg == "--" {
            tail.push(arg.clone());
            break;
        }
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (arg.as_str(), None),
        };
        let known = dotted_flags()
            .iter()
            .any(|f| f == name || dashed(f) == name)
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
    tail.extend(rest.cloned());
    let mut out = hoist_after_dump(out);
    last_switch_wins(&mut out);
    out.extend(tail);
    out
}

/// Rewrites each socket collector's switch (`--collector-NAME`,
/// `--no-collector-NAME`) into the hidden options argh parses
/// (`--collector-on NAME`, `--collector-off NAME`), so that `Args` needs no
/// field per collector.
pub(super) fn to_collector_options(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    for arg in args.by_ref() {
        if arg == "--" {
            out.push(arg);
            break;
        }
        let switch = collector_switches().find_map(|(kind, on, off)| {
            if arg == dashed(&on) {
                Some(("--collector-on", kind))
            } else if arg == dashed(&off) {
                Some(("--collector-off", kind))
            } else {
                None
            }
        });
        match switch {
            Some((option, kind)) => {
                out.push(option.to_string());
                out.push(kind.label().to_string());
            }
            None => out.push(arg),
        }
    }
    out.extend(args);
    out
}

/// Moves main-command flags (and their values) from after `dump` to before it.
pub(super) fn hoist_after_dump(args: Vec<String>) -> Vec<String> {
    let Some(at) = args.iter().position(|a| a == "dump") else {
        return args;
    };
    let (mut before, mut dump) = (args[..at].to_vec(), vec![args[at].clone()]);
    let mut i = at + 1;
    while i < args.len() {
        let arg = &args[i];
        let main_flag = arg.starts_with("--")
            && !DUMP_FLAGS.contains(&arg.as_str())
            && (dotted_flags().iter().any(|f| dashed(f) == *arg) || arg == "--version");
        if main_flag {
            before.push(arg.clone());
            let switch = is_switch(arg);
            if !switch && i + 1 < args.len() {
                before.push(args[i + 1].clone());
                i += 1;
            }
        } else {
            dump.push(arg.clone());
            if DUMP_FLAGS[..2].contains(&arg.as_str()) && i + 1 < args.len() {
                dump.push(args[i + 1].clone());
                i += 1;
            }
        }
        i += 1;
    }
    before.extend(dump);
    before
}

/// Drops every `--collector-X` / `--no-collector-X` but the last of each pair.
pub(super) fn last_switch_wins(args: &mut Vec<String>) {
    for name in switched() {
        let on = format!("--collector-{name}");
        let off = format!("--no-collector-{name}");
        if let Some(last) = args.iter().rposition(|a| *a == on || *a == off) {
            let mut i = 0;
            args.retain(|a| {
                let keep = i == last || (*a != on && *a != off);
                i += 1;
                keep
            });
        }
    }
}

/// Rewrites argh's dashed names back to the dotted ones in its output.
pub(super) fn restore_dotted(text: &str) -> String {
    let mut flags: Vec<&String> = dotted_flags().iter().collect();
    flags.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let mut out = text.to_string();
    for flag in flags {
        out = out.replace(&dashed(flag), flag);
    }
    out
}

/// The main help with the socket collectors' switches, from the collector
/// list, before its "Commands:" section (the `dump` help is left alone).
pub(super) fn with_collector_help(help: &str) -> String {
    let Some(at) = help.find("\nCommands:") else {
        return help.to_string();
    };
    let mut section = String::from("\nCollectors (each on by default):\n");
    // Laid out as argh lays out its options: the text at column 20, on the
    // next line when the flag is longer.
    let mut line = |flag: &str, text: String| match flag.len() {
        0..=16 => section.push_str(&format!("  {flag:<18}{text}\n")),
        _ => section.push_str(&format!("  {flag}\n{:20}{text}\n", "")),
    };
    for (kind, on, off) in collector_switches() {
        let name = kind.label();
        line(&on, format!("enable the {name} collector: {}", kind.help()));
        line(&off, format!("disable the {name} collector"));
    }
    format!("{}{section}{}", &help[..at], &help[at..])
}

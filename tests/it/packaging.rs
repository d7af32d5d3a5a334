//! Packaging checks that need only the built binary and the files under
//! `packaging/`: the hand-written man page documents every long flag that
//! `--help` and `dump --help` print, so it stays complete as flags are added.
//! The install tests (deb, rpm, unit, Kubernetes, Prometheus, Grafana) are in
//! `tests/package/` and run from `make package-test`.

use std::collections::BTreeSet;
use std::process::Command;

const MAN_PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/sockdiag_exporter.1");

/// The long flags (`--name`, dotted or dashed) in a help text.
fn long_flags(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for (start, _) in text.match_indices("--") {
        let name: String = text[start + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .collect();
        // `--collector.*` in prose is a pattern, not a flag.
        let wildcard = text[start + 2 + name.len()..].starts_with('*');
        let name = name.trim_end_matches(['.', '-']);
        if !wildcard && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
            flags.insert(format!("--{name}"));
        }
    }
    flags
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sockdiag_exporter"))
        .args(args)
        .output()
        .expect("run sockdiag_exporter");
    assert!(
        out.status.success(),
        "sockdiag_exporter {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The man page source with roff's escaped hyphens (`\-`) made plain.
fn man_page_text() -> String {
    std::fs::read_to_string(MAN_PAGE)
        .unwrap_or_else(|e| panic!("read {MAN_PAGE}: {e}"))
        .replace("\\-", "-")
}

#[test]
fn man_page_documents_every_long_flag() {
    let man = long_flags(&man_page_text());
    let mut missing = Vec::new();
    for args in [&["--help"][..], &["dump", "--help"][..]] {
        let flags = long_flags(&help(args));
        assert!(
            flags.contains("--help"),
            "found no flags in `sockdiag_exporter {}`; the parser in this test is wrong",
            args.join(" ")
        );
        for flag in flags {
            if !man.contains(&flag) {
                missing.push(format!(
                    "{flag} (from `sockdiag_exporter {}`)",
                    args.join(" ")
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "packaging/sockdiag_exporter.1 does not document these flags; add an entry for each \
         under OPTIONS (or DUMP for the dump subcommand):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn long_flag_parser_finds_dotted_and_dashed_names() {
    let flags = long_flags(
        "  --web.listen-address <address>\n  --help, -h  display\n  see --cache.ttl. and -- end, --collector.* too",
    );
    let want: BTreeSet<String> = ["--web.listen-address", "--help", "--cache.ttl"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(flags, want);
}

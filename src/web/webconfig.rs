//! `--web.config.file`: the Prometheus exporter-toolkit web configuration
//! (YAML), read once at start-up and turned into what the server needs: a
//! rustls `ServerConfig` for TLS, the basic-auth users, and extra response
//! headers.
//!
//! Field names and meanings are exporter-toolkit's, so a file written for
//! node_exporter works here. Decoding is strict, as exporter-toolkit's is: an
//! unknown field or a bad value stops start-up with a message that names the
//! field. Settings that rustls cannot honour (TLS 1.0/1.1, CBC cipher suites,
//! curve P-521) and toolkit features this exporter does not implement
//! (`client_allowed_sans`, `rate_limit`) are refused by name rather than
//! silently ignored. Relative file names are taken relative to the config
//! file's directory, as exporter-toolkit does.
//!
//! The `tls_server_config` section, which becomes the rustls server config,
//! is `tls`'s; this module owns the file as a whole, the basic-auth users
//! and the extra headers.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::ServerConfig;
use serde::Deserialize;

use crate::web::tls::{tls_config, RawTls};

/// What the server takes from the file.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// TLS is on when this is set.
    pub tls: Option<Arc<ServerConfig>>,
    /// Basic auth is required when this is set (user -> bcrypt hash).
    pub users: Option<Arc<Users>>,
    /// `http_server_config.headers`, added to every response.
    pub headers: Vec<(String, String)>,
}

/// The basic-auth users: name -> bcrypt hash, all checked at load time.
#[derive(Clone, PartialEq, Eq)]
pub struct Users {
    hashes: BTreeMap<String, String>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the hashes.
        f.debug_list().entries(self.hashes.keys()).finish()
    }
}

impl Users {
    /// The user's bcrypt hash.
    pub fn hash(&self, user: &str) -> Option<&str> {
        self.hashes.get(user).map(String::as_str)
    }

    /// A real hash to verify against when the user is unknown, so a request
    /// for an unknown user costs the same bcrypt work as one for a known user.
    pub fn decoy_hash(&self) -> &str {
        self.hashes.values().next().map_or("", String::as_str)
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

// ---------------------------------------------------------------------------
// The file format (exporter-toolkit's field names)
// ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<RawRateLimit>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    interval: Option<serde_norway::Value>,
    burst: Option<i64>,
}

/// Headers exporter-toolkit lets a file set, with their allowed values
/// (empty: any value).
const HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Reads and checks the file, including the certificate and key files it
/// names. Every error names the field it is about.
pub fn load(path: &Path) -> Result<WebConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir)
}

/// Parses file contents; relative file names are joined to `dir`.
pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
    // An empty file (or only comments) is a valid, empty configuration.
    let raw: RawConfig = match serde_norway::from_str::<Option<RawConfig>>(text) {
        Ok(raw) => raw.unwrap_or_default(),
        Err(e) => return Err(e.to_string()),
    };
    let mut web = WebConfig::default();
    if let Some(rate) = &raw.rate_limit {
        let off = match &rate.interval {
            None | Some(serde_norway::Value::Null) => true,
            Some(serde_norway::Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(serde_norway::Value::String(s)) => {
                crate::config::duration(s).is_ok_and(|d| d.is_zero())
            }
            Some(_) => false,
        };
        let _ = rate.burst;
        if !off {
            return Err(
                "rate_limit: not supported by sockdiag_exporter (remove it, or set interval: 0)"
                    .into(),
            );
        }
    }
    if let Some(http) = raw.http_server_config {
        // http2: this server speaks HTTP/1.1 only; Prometheus falls back to
        // it through ALPN, so the setting is accepted and has no effect.
        let _ = http.http2;
        for (name, value) in http.headers.unwrap_or_default() {
            let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| *n == name) else {
                return Err(format!(
                    "http_server_config.headers: HTTP header {name:?} can not be configured (allowed: {})",
                    HEADERS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(format!(
                    "http_server_config.headers.{name}: invalid value {value:?}, expected one of {}",
                    allowed.join(", ")
                ));
            }
            if value.bytes().any(|b| b.is_ascii_control()) {
                return Err(format!(
                    "http_server_config.headers.{name}: control characters are not allowed"
                ));
            }
            if !value.is_empty() {
                web.headers.push((name, value));
            }
        }
    }
    if let Some(users) = raw.basic_auth_users {
        for (user, hash) in &users {
            if let Err(e) = bcrypt::HashParts::from_str(hash) {
                return Err(format!(
                    "basic_auth_users.{user}: not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                ));
            }
            if user.contains(':') {
                return Err(format!(
                    "basic_auth_users.{user}: a user name cannot contain ':' (basic auth splits on it)"
                ));
            }
        }
        if !users.is_empty() {
            web.users = Some(Arc::new(Users { hashes: users }));
        }
    }
    if let Some(tls) = raw.tls_server_config {
        web.tls = tls_config(tls, dir)?.map(Arc::new);
    }
    Ok(web)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str, dir: &Path) -> String {
        match parse(yaml, dir) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_files_and_sections_mean_plain_http() {
        for yaml in [
            "",
            "# nothing\n",
            "tls_server_config:\n",
            "tls_server_config:\n  min_version: TLS13\n",
        ] {
            let web = parse(yaml, Path::new(".")).unwrap();
            assert!(web.tls.is_none() && web.users.is_none(), "{yaml:?}");
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = err("tls_server_config:\n  cert_fil: x\n", Path::new("."));
        assert!(e.contains("cert_fil"), "{e}");
        let e = err("basic_auth_user:\n  a: b\n", Path::new("."));
        assert!(e.contains("basic_auth_user"), "{e}");
        let e = err("http_server_config:\n  http3: true\n", Path::new("."));
        assert!(e.contains("http3"), "{e}");
        let e = err("tls_server_config: [1, 2]\n", Path::new("."));
        assert!(e.contains("tls_server_config"), "{e}");
    }

    /// Allowed values are listed as the user writes them, not as a Rust
    /// slice (`["deny", "sameorigin"]`).
    #[test]
    fn a_bad_header_value_lists_the_allowed_ones_plainly() {
        let e = err(
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            Path::new("."),
        );
        assert!(
            e.ends_with("invalid value \"allow\", expected one of deny, sameorigin"),
            "{e}"
        );
    }

    #[test]
    fn users_headers_and_rate_limit() {
        let hash = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";
        let web = parse(
            &format!("basic_auth_users:\n  alice: {hash}\n"),
            Path::new("."),
        )
        .unwrap();
        let users = web.users.unwrap();
        assert_eq!(users.hash("alice"), Some(hash));
        assert_eq!(users.decoy_hash(), hash);
        assert!(!format!("{users:?}").contains(hash), "Debug hides hashes");
        let e = err("basic_auth_users:\n  bob: plaintext\n", Path::new("."));
        assert!(
            e.starts_with("basic_auth_users.bob: not a bcrypt hash"),
            "{e}"
        );
        assert!(!e.contains("plaintext"), "the secret is not echoed: {e}");
        assert!(parse("basic_auth_users: {}\n", Path::new("."))
            .unwrap()
            .users
            .is_none());

        let web = parse(
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: \"\"\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            web.headers,
            vec![("X-Frame-Options".to_string(), "deny".to_string())]
        );
        let e = err(
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            Path::new("."),
        );
        assert!(
            e.contains("http_server_config.headers.X-Frame-Options"),
            "{e}"
        );
        let e = err(
            "http_server_config:\n  headers:\n    Server: me\n",
            Path::new("."),
        );
        assert!(e.contains("\"Server\" can not be configured"), "{e}");

        assert!(parse("rate_limit:\n  interval: 0s\n  burst: 5\n", Path::new(".")).is_ok());
        let e = err("rate_limit:\n  interval: 1s\n  burst: 5\n", Path::new("."));
        assert!(e.starts_with("rate_limit: not supported"), "{e}");
    }
}

//! The `tls_server_config` section of `--web.config.file`, turned into a
//! rustls `ServerConfig`: the certificate and key (inline PEM or files,
//! relative to the config file's directory), the client-auth policy and
//! its verifier, and exporter-toolkit's (Go's) names for TLS versions,
//! cipher suites and curves mapped to rustls's.
//!
//! Settings that rustls cannot honour (TLS 1.0/1.1, CBC cipher suites,
//! curve P-521) and `client_allowed_sans` are refused by name rather than
//! silently ignored; every error names the field it is about.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{ring as provider, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

/// exporter-toolkit's client_auth_type values (Go's tls.ClientAuthType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    const NAMES: &'static str = "NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert";

    fn parse(s: &str) -> Option<ClientAuth> {
        Some(match s {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // "RequireClientCert" is exporter-toolkit's old spelling.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

fn join(dir: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Reads a PEM input given either inline (`inline_field`) or as a file
/// (`file_field`, which wins, as in exporter-toolkit).
fn pem_input(
    inline: Option<&str>,
    inline_field: &str,
    file: Option<&str>,
    file_field: &str,
    dir: &Path,
) -> Result<Option<(Vec<u8>, String)>, String> {
    if let Some(file) = file {
        let path = join(dir, file);
        let data = std::fs::read(&path).map_err(|e| {
            format!(
                "tls_server_config.{file_field}: cannot read {}: {e}",
                path.display()
            )
        })?;
        return Ok(Some((
            data,
            format!("tls_server_config.{file_field} {}", path.display()),
        )));
    }
    Ok(inline.map(|text| {
        (
            text.as_bytes().to_vec(),
            format!("tls_server_config.{inline_field}"),
        )
    }))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate found"));
    }
    Ok(certs)
}

fn version(field: &str, s: &str) -> Result<&'static SupportedProtocolVersion, String> {
    match s {
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS11" | "TLS10" => Err(format!(
            "tls_server_config.{field}: {s} is not supported: rustls implements TLS12 and TLS13 only"
        )),
        _ => Err(format!(
            "tls_server_config.{field}: unknown TLS version: {s} (expected TLS12 or TLS13)"
        )),
    }
}

/// Go's names for the TLS 1.2 suites (tls.CipherSuites()) that rustls
/// implements, plus Go's TLS 1.3 names (accepted and, as in Go, without
/// effect: TLS 1.3 suites are not configurable).
fn cipher_suite(name: &str) -> Result<Option<SupportedCipherSuite>, String> {
    use provider::cipher_suite as cs;
    Ok(Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            return Ok(None)
        }
        // Known to Go, not implemented by rustls (CBC, RSA key exchange, 3DES, RC4).
        _ if name.starts_with("TLS_") && (name.contains("_CBC_") || name.contains("_RC4_")
            || name.starts_with("TLS_RSA_WITH_")) => {
            return Err(format!(
                "tls_server_config.cipher_suites: {name} is not supported by rustls (it implements only AEAD suites with ECDHE: {})",
                TLS12_NAMES.join(", ")
            ))
        }
        _ => return Err(format!("tls_server_config.cipher_suites: unknown cipher: {name}")),
    }))
}

const TLS12_NAMES: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

fn curve(name: &str) -> Result<&'static dyn SupportedKxGroup, String> {
    use provider::kx_group;
    match name {
        "X25519" => Ok(kx_group::X25519),
        "CurveP256" => Ok(kx_group::SECP256R1),
        "CurveP384" => Ok(kx_group::SECP384R1),
        "CurveP521" => Err(
            "tls_server_config.curve_preferences: CurveP521 is not supported by rustls (use X25519, CurveP256 or CurveP384)"
                .into(),
        ),
        _ => Err(format!(
            "tls_server_config.curve_preferences: unknown curve: {name}"
        )),
    }
}

/// Builds the rustls server config; Ok(None) when the section does not turn
/// TLS on (exporter-toolkit then serves plain HTTP).
pub(super) fn tls_config(t: RawTls, dir: &Path) -> Result<Option<ServerConfig>, String> {
    let enabled = [
        &t.cert,
        &t.key,
        &t.cert_file,
        &t.key_file,
        &t.client_ca,
        &t.client_ca_file,
        &t.client_auth_type,
    ]
    .iter()
    .any(|f| nonempty(f).is_some());
    if !enabled {
        return Ok(None);
    }
    if nonempty(&t.cert).is_none() && nonempty(&t.cert_file).is_none() {
        return Err("tls_server_config: missing one of cert or cert_file".into());
    }
    if nonempty(&t.key).is_none() && nonempty(&t.key_file).is_none() {
        return Err("tls_server_config: missing one of key or key_file".into());
    }
    if t.client_allowed_sans.is_some() {
        return Err("tls_server_config.client_allowed_sans: not supported by sockdiag_exporter (use a client CA that issues only the allowed clients' certificates)".into());
    }

    let (cert_pem, cert_what) = pem_input(
        nonempty(&t.cert),
        "cert",
        nonempty(&t.cert_file),
        "cert_file",
        dir,
    )?
    .expect("checked above");
    let (key_pem, key_what) = pem_input(
        nonempty(&t.key),
        "key",
        nonempty(&t.key_file),
        "key_file",
        dir,
    )?
    .expect("checked above");
    let certs = certificates(&cert_pem, &cert_what)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{key_what}: no usable PEM private key: {e}"))?;

    let auth_name = t.client_auth_type.clone().unwrap_or_default();
    let auth = ClientAuth::parse(&auth_name).ok_or_else(|| {
        format!(
            "tls_server_config.client_auth_type: invalid value {auth_name:?} (expected one of {})",
            ClientAuth::NAMES
        )
    })?;
    let ca = match pem_input(
        nonempty(&t.client_ca),
        "client_ca",
        nonempty(&t.client_ca_file),
        "client_ca_file",
        dir,
    )? {
        Some((pem, what)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(&pem, &what)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{what}: unusable CA certificate: {e}"))?;
            }
            Some(roots)
        }
        None => None,
    };
    if ca.is_some() && auth == ClientAuth::NoClientCert {
        return Err("tls_server_config: client CA's have been configured without a Client Auth Policy (set client_auth_type, e.g. RequireAndVerifyClientCert)".into());
    }
    if auth.verifies() && ca.is_none() {
        return Err(format!(
            "tls_server_config.client_ca_file: required with client_auth_type {auth_name} (the CA that signs client certificates)"
        ));
    }

    let min = version("min_version", t.min_version.as_deref().unwrap_or("TLS12"))?;
    let max = version("max_version", t.max_version.as_deref().unwrap_or("TLS13"))?;
    let versions: Vec<&'static SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                let rank = |v: &SupportedProtocolVersion| u16::from(v.version);
                rank(v) >= rank(min) && rank(v) <= rank(max)
            })
            .collect();
    if versions.is_empty() {
        return Err(format!(
            "tls_server_config.min_version: {} is above max_version {}",
            t.min_version.as_deref().unwrap_or("TLS12"),
            t.max_version.as_deref().unwrap_or("TLS13")
        ));
    }

    let mut crypto = provider::default_provider();
    if let Some(names) = &t.cipher_suites {
        let mut tls12 = Vec::new();
        for name in names {
            if let Some(suite) = cipher_suite(name)? {
                if !tls12.contains(&suite) {
                    tls12.push(suite);
                }
            }
        }
        if !tls12.is_empty() {
            let mut suites: Vec<SupportedCipherSuite> = crypto
                .cipher_suites
                .iter()
                .copied()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .collect();
            suites.extend(tls12);
            crypto.cipher_suites = suites;
        }
    }
    if let Some(names) = &t.curve_preferences {
        let mut groups: Vec<&'static dyn SupportedKxGroup> = Vec::new();
        for name in names {
            let group = curve(name)?;
            if !groups.iter().any(|g| g.name() == group.name()) {
                groups.push(group);
            }
        }
        if !groups.is_empty() {
            crypto.kx_groups = groups;
        }
    }
    let crypto = Arc::new(crypto);

    let builder = ServerConfig::builder_with_provider(crypto.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let verifier: Arc<dyn ClientCertVerifier> = match (auth, ca) {
        (ClientAuth::NoClientCert, _) => WebPkiClientVerifier::no_client_auth(),
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, ca) => {
            Arc::new(AnyClientCert {
                mandatory: auth == ClientAuth::RequireAnyClientCert,
                hints: ca.map(|r| r.subjects()).unwrap_or_default(),
                crypto: crypto.clone(),
            })
        }
        (_, Some(roots)) => {
            let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto.clone());
            let b = if auth == ClientAuth::VerifyClientCertIfGiven {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?
        }
        (_, None) => unreachable!("checked above"),
    };
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!("{cert_what} and {key_what} do not make a usable certificate and key: {e}")
        })?;
    // exporter-toolkit's default is true; Go itself ignores it since 1.18.
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    // HTTP/1.1 only: a client that also offers h2 (Prometheus) picks this.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(config))
}

/// RequestClientCert / RequireAnyClientCert: the client's certificate is
/// asked for (and for the second, required) but not checked against any CA,
/// exactly as Go does. The handshake signature is still verified, so the
/// client does hold the key of the certificate it sent.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    crypto: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        ParsedCertificate::try_from(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.crypto.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.crypto.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.crypto
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::webconfig::parse;

    /// A self-signed certificate and key, written to a fresh directory.
    fn cert_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sockdiag-webconfig-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        dir
    }
    fn err(yaml: &str, dir: &Path) -> String {
        match parse(yaml, dir) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e,
        }
    }

    #[test]
    fn tls_section_errors_name_the_field() {
        let dir = cert_dir("errors");
        let d = dir.as_path();
        let base = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
        assert!(parse(base, d).unwrap().tls.is_some());
        let cases: &[(&str, &str)] = &[
            (
                "tls_server_config:\n  cert_file: cert.pem\n",
                "missing one of key or key_file",
            ),
            (
                "tls_server_config:\n  key_file: key.pem\n",
                "missing one of cert or cert_file",
            ),
            (
                "tls_server_config:\n  cert_file: nope.pem\n  key_file: key.pem\n",
                "cert_file: cannot read",
            ),
            (
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: nope.pem\n",
                "key_file: cannot read",
            ),
            (
                "tls_server_config:\n  cert_file: key.pem\n  key_file: key.pem\n",
                "no PEM certificate",
            ),
            (
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: cert.pem\n",
                "key_file",
            ),
            (
                "  client_auth_type: Sometimes\n",
                "client_auth_type: invalid value \"Sometimes\"",
            ),
            (
                "  client_ca_file: cert.pem\n",
                "without a Client Auth Policy",
            ),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n",
                "client_ca_file: required",
            ),
            (
                "  client_auth_type: VerifyClientCertIfGiven\n",
                "client_ca_file: required",
            ),
            (
                "  min_version: TLS10\n",
                "min_version: TLS10 is not supported",
            ),
            (
                "  max_version: TLS11\n",
                "max_version: TLS11 is not supported",
            ),
            ("  min_version: TLS14\n", "min_version: unknown TLS version"),
            (
                "  min_version: TLS13\n  max_version: TLS12\n",
                "min_version: TLS13 is above max_version TLS12",
            ),
            (
                "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n",
                "cipher_suites: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA is not supported",
            ),
            (
                "  cipher_suites: [TLS_MADE_UP]\n",
                "cipher_suites: unknown cipher: TLS_MADE_UP",
            ),
            (
                "  curve_preferences: [CurveP521]\n",
                "curve_preferences: CurveP521 is not supported",
            ),
            (
                "  curve_preferences: [Curve9]\n",
                "curve_preferences: unknown curve: Curve9",
            ),
            (
                "  client_allowed_sans: [a]\n",
                "client_allowed_sans: not supported",
            ),
            (
                "  prefer_server_cipher_suites: maybe\n",
                "prefer_server_cipher_suites",
            ),
        ];
        for (yaml, want) in cases {
            let yaml = if yaml.starts_with("  ") {
                format!("{base}{yaml}")
            } else {
                yaml.to_string()
            };
            let e = err(&yaml, d);
            assert!(e.contains(want), "{yaml}\n-> {e}\nwant {want:?}");
        }
        // A missing file is named with its full path.
        let e = err(
            "tls_server_config:\n  cert_file: nope.pem\n  key_file: key.pem\n",
            d,
        );
        assert!(e.contains(&d.join("nope.pem").display().to_string()), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn supported_tls_settings_build() {
        let dir = cert_dir("good");
        let d = dir.as_path();
        let cert = d.join("cert.pem").display().to_string();
        for extra in [
            "  client_auth_type: NoClientCert\n",
            "  client_auth_type: RequestClientCert\n",
            "  client_auth_type: RequireAnyClientCert\n",
            "  client_auth_type: RequireClientCert\n",
            "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: cert.pem\n",
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: cert.pem\n",
            "  min_version: TLS13\n",
            "  max_version: TLS12\n",
            "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n  prefer_server_cipher_suites: false\n",
            "  curve_preferences: [CurveP256, X25519]\n",
        ] {
            // Absolute paths work as well as relative ones.
            let yaml = format!("tls_server_config:\n  cert_file: {cert}\n  key_file: key.pem\n{extra}");
            let web = parse(&yaml, d).unwrap_or_else(|e| panic!("{yaml}\n-> {e}"));
            let tls = web.tls.expect("TLS on");
            assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
        }
        // Inline PEM (cert/key) is accepted too.
        let pem = |f: &str| {
            std::fs::read_to_string(d.join(f))
                .unwrap()
                .replace('\n', "\n    ")
        };
        let yaml = format!(
            "tls_server_config:\n  cert: |\n    {}\n  key: |\n    {}\n",
            pem("cert.pem"),
            pem("key.pem")
        );
        assert!(parse(&yaml, d).unwrap().tls.is_some());
        std::fs::remove_dir_all(d).unwrap();
    }
}

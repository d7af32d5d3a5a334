//! TLS: a throwaway PKI made at test time (`Pki`), a rustls client, and
//! basic-auth helpers.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::*;

/// A throwaway PKI in a fresh temp directory (removed on drop): a CA, a
/// server certificate for `localhost` and 127.0.0.1 signed by it, a client
/// certificate signed by it, and a "rogue" client certificate signed by
/// another CA. All PEM files; nothing is checked in.
pub struct Pki {
    pub dir: std::path::PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = std::env::temp_dir().join(format!(
            "sockdiag-pki-{name}-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, pem: String| std::fs::write(dir.join(file), pem).unwrap();
        let ca = |cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).unwrap();
            (cert, Issuer::new(params, key))
        };
        let leaf = |issuer: &Issuer<'_, KeyPair>,
                    cn: &str,
                    names: Vec<String>,
                    eku: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![eku];
            let cert = params.signed_by(&key, issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (ca_cert, ca_issuer) = ca("sockdiag test CA");
        write("ca.pem", ca_cert.pem());
        let (cert, key) = leaf(
            &ca_issuer,
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write("server.pem", cert);
        write("server.key", key);
        let (cert, key) = leaf(
            &ca_issuer,
            "scraper",
            vec!["scraper".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write("client.pem", cert);
        write("client.key", key);
        let (rogue_ca, rogue_issuer) = ca("someone else's CA");
        write("rogue-ca.pem", rogue_ca.pem());
        let (cert, key) = leaf(
            &rogue_issuer,
            "rogue",
            vec!["rogue".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write("rogue.pem", cert);
        write("rogue.key", key);
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.join(file)
    }

    /// Writes a web config file into the PKI directory; returns its path.
    pub fn web_config(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, yaml).unwrap();
        path.display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which client certificate a test client presents.
#[derive(Clone, Copy, Debug)]
pub enum ClientCert {
    None,
    /// Signed by the test CA.
    Good,
    /// Signed by another CA.
    Rogue,
}

/// A rustls client that trusts the test CA, with the given protocol
/// versions and client certificate.
pub fn tls_client(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    cert: ClientCert,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let pair = |c: &str, k: &str| {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path(c))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (certs, PrivateKeyDer::from_pem_file(pki.path(k)).unwrap())
    };
    let config = match cert {
        ClientCert::None => builder.with_no_client_auth(),
        ClientCert::Good => {
            let (c, k) = pair("client.pem", "client.key");
            builder.with_client_auth_cert(c, k).unwrap()
        }
        ClientCert::Rogue => {
            let (c, k) = pair("rogue.pem", "rogue.key");
            builder.with_client_auth_cert(c, k).unwrap()
        }
    };
    Arc::new(config)
}

/// One HTTPS request (`Connection: close`) to `addr` as `localhost`; every
/// step bounded by 10 s socket timeouts. A refused handshake is an Err.
pub fn tls_request(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<HttpResponse> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes())?;
    tls.flush()?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw)?;
    parse_response_bytes(&raw)
}

/// A bcrypt hash of `password` (cost 4: quick, and the server treats every
/// cost alike).
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// `Authorization: Basic ...` for user and password.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

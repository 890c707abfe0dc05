//! HTTPS for the public listener: the rustls server configuration (TLS 1.2 and 1.3
//! only, ALPN h2 then http/1.1), its reload on SIGHUP, and `medialink dev-cert`.
//!
//! Reload swaps an `Arc<ServerConfig>` that the accept loop reads once per accepted
//! connection: connections already open keep the configuration they were accepted
//! with, so a reload never drops one. A reload that fails (half-written file, key that
//! does not match) keeps the old configuration and says why in the log.
//!
//! Deliberately does not: accept connections or bound the handshake's duration; the
//! accept loop in `server` does both.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN, in our order of preference: HTTP/2 when the client speaks it.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The SANs `medialink dev-cert` puts in a certificate when no `--host` is given.
pub const DEV_CERT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: not PEM this server can read: {source}")]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0}: no certificate found (expected PEM `BEGIN CERTIFICATE` blocks)")]
    NoCertificate(PathBuf),
    #[error("the certificate and key do not make a usable TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Where the certificate chain and its key are read from (and re-read on SIGHUP).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads both files and builds the server configuration.
    pub fn load(&self) -> Result<ServerConfig, TlsError> {
        let chain = read(&self.cert)?;
        let certs = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                path: self.cert.clone(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(self.cert.clone()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(&read(&self.key)?).map_err(|source| TlsError::Pem {
                path: self.key.clone(),
                source,
            })?;
        server_config(certs, key)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// TLS 1.3 and 1.2 only (rustls speaks nothing older), with the process's one crypto
/// provider, aws-lc-rs (DESIGN §11), named explicitly so that no second provider in
/// the tree can make rustls refuse to pick one.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The served configuration, swappable while connections are open.
pub struct Reloadable {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
}

impl Reloadable {
    /// Loads the files once; a failure here stops the server from starting.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = files.load()?;
        Ok(Self {
            files,
            current: ArcSwap::from_pointee(config),
        })
    }

    /// The configuration for the connection being accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Re-reads the files; on failure the configuration served so far stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = self.files.load()?;
        self.current.store(Arc::new(config));
        Ok(())
    }
}

/// Reloads `tls` on every SIGHUP, until the task is aborted (the server does so when
/// it stops).
///
/// The handler is installed when this is called, not when the future is first polled:
/// SIGHUP's default action ends the process, so it must be caught before the server
/// says it is listening. Call it inside the runtime.
pub fn reload_on_sighup(tls: Arc<Reloadable>) -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let mut hup = match hup {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP: the certificate will not be reloaded");
                    return;
                }
            };
            while hup.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %tls.files.cert.display(), "TLS certificate reloaded")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS reload failed; still serving the previous certificate")
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tls;
            std::future::pending::<()>().await;
        }
    }
}

/// `medialink dev-cert`: a self-signed pair for local HTTPS.
#[derive(clap::Args, Debug)]
pub struct DevCertArgs {
    /// Directory to write cert.pem and key.pem into.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// A name or IP address the certificate is for (repeatable).
    #[arg(long = "host", default_values_t = DEV_CERT_HOSTS.map(String::from))]
    pub hosts: Vec<String>,
}

/// A self-signed certificate and its key, as PEM.
pub struct DevCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Makes a self-signed certificate for `hosts` (names and IP addresses become DNS and
/// IP SANs), for local HTTPS only: nothing trusts it unless told to.
pub fn dev_cert(hosts: &[String]) -> Result<DevCert, TlsError> {
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "medialink dev certificate");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(DevCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl DevCert {
    /// Writes `cert.pem` and `key.pem` into `dir` (the key readable by its owner only)
    /// and returns their paths.
    pub fn write(&self, dir: &Path) -> Result<TlsFiles, TlsError> {
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(write_err(dir))?;
        std::fs::write(&files.cert, &self.cert_pem).map_err(write_err(&files.cert))?;
        write_private(&files.key, self.key_pem.as_bytes()).map_err(write_err(&files.key))?;
        Ok(files)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        DEV_CERT_HOSTS.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn dev_cert_loads_with_alpn_and_modern_versions_only() {
        let dir = tempfile::tempdir().unwrap();
        let files = dev_cert(&hosts()).unwrap().write(dir.path()).unwrap();
        let config = files.load().unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn failed_reload_keeps_the_served_config() {
        let dir = tempfile::tempdir().unwrap();
        let files = dev_cert(&hosts()).unwrap().write(dir.path()).unwrap();
        let tls = Reloadable::load(files.clone()).unwrap();
        let before = tls.current();
        std::fs::write(&files.cert, "not a certificate").unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::NoCertificate(_))));
        assert!(Arc::ptr_eq(&before, &tls.current()));
        // A key that does not match the chain is refused too.
        let other = dev_cert(&hosts()).unwrap();
        std::fs::write(&files.cert, &other.cert_pem).unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::Config(_))));
        assert!(Arc::ptr_eq(&before, &tls.current()));
        other.write(dir.path()).unwrap();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.current()));
    }

    #[test]
    fn missing_files_name_the_path() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let err = files.load().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}

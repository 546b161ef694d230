//! rustls server configuration from the device identity on DATA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Largest PEM file we read for an identity (a cert chain is a few KiB).
const MAX_PEM_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_PEM_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: no usable PEM {what} in it")]
    Pem { path: PathBuf, what: &'static str },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// Paths of the device identity (relative to the DATA mount).
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Identity {
    pub fn in_data_dir(data: &Path) -> Self {
        let dir = data.join("identity");
        Self {
            cert: dir.join("device.crt"),
            key: dir.join("device.key"),
            ca: dir.join("ca.crt"),
        }
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge { path: path.into() });
    }
    Ok(bytes)
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_bounded(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The crypto provider: ring, X25519 only (the smallest key share; every
/// client of ours offers it).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = provider::default_provider();
    p.kx_groups = vec![provider::kx_group::X25519];
    Arc::new(p)
}

/// TLS 1.3 server config that requires a client certificate from the site CA.
pub fn server_config(id: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let mut roots = RootCertStore::empty();
    for ca in certs(&id.ca)? {
        roots.add(ca)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let key_bytes = read_bounded(&id.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|_| TlsError::Pem {
        path: id.key.clone(),
        what: "private key",
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&id.cert)?, key)?;
    // One ticket per handshake: enough to resume once after a dropped link,
    // and each ticket costs bytes on a metered link.
    config.send_tls13_tickets = 1;
    config.ticketer = provider::Ticketer::new()?;
    Ok(Arc::new(config))
}

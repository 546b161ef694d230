//! rustls server configuration from the device identity on DATA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::site_clients::{Sessions, SiteClients};
use crate::device::revocation::Revocations;
use rustls::{RootCertStore, ServerConfig};

/// Resumable sessions kept (each a few hundred bytes: the peer's chain).
const SESSION_CACHE: usize = 32;
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

pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
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

pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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

/// Ed25519 is the only signature algorithm the device needs: the site PKI
/// issues Ed25519 certificates (smallest on the wire: 32-byte keys, 64-byte
/// signatures). Naming only it lets the linker drop ring's P-256 tables and
/// RSA code (~200 KiB of outpost-init).
static SIGNATURE_ALGORITHMS: rustls::crypto::WebPkiSupportedAlgorithms =
    rustls::crypto::WebPkiSupportedAlgorithms {
        all: &[webpki::ring::ED25519],
        mapping: &[(rustls::SignatureScheme::ED25519, &[webpki::ring::ED25519])],
    };

/// Loads only Ed25519 (PKCS#8) private keys, for the same reason.
#[derive(Debug)]
struct Ed25519Keys;

impl rustls::crypto::KeyProvider for Ed25519Keys {
    fn load_private_key(
        &self,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        match key {
            PrivateKeyDer::Pkcs8(der) => provider::sign::any_eddsa_type(&der).map_err(|e| {
                rustls::Error::General(format!(
                    "device key is not an Ed25519 key ({e}); re-issue it with `outpost gen device`"
                ))
            }),
            _ => Err(rustls::Error::General(
                "device key must be an Ed25519 PKCS#8 key".into(),
            )),
        }
    }
}

/// The crypto provider: ring; TLS 1.3 with ChaCha20-Poly1305 first (Pi 3/4
/// cores have no AES instructions) and AES-128-GCM; X25519 only (the
/// smallest key share; every client of ours offers it); Ed25519 only.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            provider::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![provider::kx_group::X25519],
        signature_verification_algorithms: SIGNATURE_ALGORITHMS,
        secure_random: &Ed25519Random,
        key_provider: &Ed25519Keys,
    })
}

/// ring's system RNG (the provider's own `Ring` value is not public).
#[derive(Debug)]
struct Ed25519Random;

impl rustls::crypto::SecureRandom for Ed25519Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

/// TLS 1.3 server config that requires a client certificate from the site CA
/// and not on its revocation list (`site_clients`). Certificate validity and
/// ticket ages are judged by `time`: the device's own clock (restored and
/// SNTP-synced), not whatever the kernel booted with.
pub fn server_config(
    id: &Identity,
    time: Arc<dyn rustls::time_provider::TimeProvider>,
    revocations: Arc<Revocations>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let mut roots = RootCertStore::empty();
    for ca in certs(&id.ca)? {
        roots.add(ca)?;
    }
    let verifier = SiteClients::new(roots, provider.clone(), revocations.clone())
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let key_bytes = read_bounded(&id.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|_| TlsError::Pem {
        path: id.key.clone(),
        what: "private key",
    })?;
    let mut config = ServerConfig::builder_with_details(provider, time)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(certs(&id.cert)?, key)?;
    // Stateful resumption: the ticket is a 32-byte key into a small cache on
    // the device, not the whole encrypted session (which carries the client's
    // certificate chain): ~400 bytes less per handshake on a metered link.
    // One ticket per handshake is enough to resume after a dropped link.
    config.session_storage = Arc::new(Sessions::new(SESSION_CACHE, revocations));
    config.send_tls13_tickets = 1;
    // A client with several endpoints (links) asks for two (RFC 9149): an
    // attempt on a dead path burns the ticket it offers, the second resumes.
    config.max_tls13_tickets = 2;
    Ok(Arc::new(config))
}

/// TLS 1.3 client config for calling home: the device certificate as the
/// client certificate, the broker's certificate checked against the site CA
/// (by the device's own clock, as the server side).
pub fn client_config(
    id: &Identity,
    time: Arc<dyn rustls::time_provider::TimeProvider>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certs(&id.ca)? {
        roots.add(ca)?;
    }
    let key_bytes = read_bounded(&id.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|_| TlsError::Pem {
        path: id.key.clone(),
        what: "private key",
    })?;
    let config = rustls::ClientConfig::builder_with_details(crypto_provider(), time)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs(&id.cert)?, key)?;
    Ok(Arc::new(config))
}

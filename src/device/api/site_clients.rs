//! Who may open an API session: a client certificate from the site CA that
//! is not on the site's revocation list. A list installed while the device
//! runs takes effect at the next handshake: the webpki verifier is rebuilt
//! with it, and the TLS sessions resumable under the old list are forgotten
//! (a revoked client must not come back on a ticket).

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::device::revocation::Revocations;

pub struct SiteClients {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    revocations: Arc<Revocations>,
    /// The verifier for the list of that generation.
    built: Mutex<(u64, Arc<dyn ClientCertVerifier>)>,
    hints: Vec<DistinguishedName>,
}

impl std::fmt::Debug for SiteClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SiteClients")
    }
}

impl SiteClients {
    pub fn new(
        roots: RootCertStore,
        provider: Arc<CryptoProvider>,
        revocations: Arc<Revocations>,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let roots = Arc::new(roots);
        let first = build(&roots, &provider, &revocations)?;
        Ok(Self {
            hints: first.1.root_hint_subjects().to_vec(),
            built: Mutex::new(first),
            roots,
            provider,
            revocations,
        })
    }

    /// The verifier for the list in force now.
    fn current(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if built.0 != self.revocations.generation() {
            *built = build(&self.roots, &self.provider, &self.revocations)
                .map_err(|e| rustls::Error::General(format!("client verifier: {e}")))?;
        }
        Ok(built.1.clone())
    }
}

fn build(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    revocations: &Revocations,
) -> Result<(u64, Arc<dyn ClientCertVerifier>), rustls::server::VerifierBuilderError> {
    let list = revocations.current();
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    if let Some(list) = &list {
        // The site CA's list speaks for every certificate it issued; its
        // age is not held against it (a board offline for a year still
        // refuses what was revoked).
        builder = builder
            .with_crls([list.der.clone()])
            .only_check_end_entity_revocation();
    }
    Ok((list.map_or(0, |l| l.generation), builder.build()?))
}

impl ClientCertVerifier for SiteClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// The server's resumable sessions, forgotten whenever the list changes.
pub struct Sessions {
    revocations: Arc<Revocations>,
    size: usize,
    cache: Mutex<(u64, Arc<ServerSessionMemoryCache>)>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

impl Sessions {
    pub fn new(size: usize, revocations: Arc<Revocations>) -> Self {
        let cache = (
            revocations.generation(),
            ServerSessionMemoryCache::new(size),
        );
        Self {
            revocations,
            size,
            cache: Mutex::new(cache),
        }
    }

    fn cache(&self) -> Arc<ServerSessionMemoryCache> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.revocations.generation();
        if cache.0 != now {
            *cache = (now, ServerSessionMemoryCache::new(self.size));
        }
        cache.1.clone()
    }
}

impl StoresServerSessions for Sessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.cache().put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache().get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache().take(key)
    }
    fn can_cache(&self) -> bool {
        true
    }
}

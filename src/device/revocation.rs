//! The site's revocation list on the board (`DATA/identity/revoked.crl`,
//! DER): read at start, replaced by an `InstallRevocations` request (admin)
//! with a list the site CA signed that is not older than the one held. API clients
//! (TCP, serial) and operator commands through the broker whose certificate
//! is on it are refused.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::time_provider::TimeProvider;

use super::api::tls::{self, Identity};
pub use crate::wire::revocation::CRL_FILE;
use crate::wire::revocation::{crl_issued, MAX_CRL_BYTES};
use crate::wire::RevocationInfo;

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("not a revocation list: {0}")]
    Malformed(String),
    #[error("revocation list is {0} bytes, more than the {MAX_CRL_BYTES} a board takes")]
    TooLarge(usize),
    #[error("revocation list not signed by this site's CA")]
    NotSigned,
    #[error("revocation list not issued by this site's CA")]
    NotOurs,
    #[error("revocation list issued {offered} is older than the one this board holds ({held})")]
    Older { offered: String, held: String },
    #[error("a different revocation list issued at the same time ({0}) is already held")]
    Conflict(String),
    #[error("checking the revocation list: {0}")]
    Check(String),
    #[error("{0}")]
    Io(String),
}

/// A list the board took.
#[derive(Debug)]
pub struct List {
    pub der: CertificateRevocationListDer<'static>,
    /// Parsed once, when taken: every handshake and command checks it.
    pub crl: webpki::CertRevocationList<'static>,
    /// Its `thisUpdate`, `YYYYMMDDHHMMSSZ`.
    pub issued: String,
    pub count: u32,
    /// Bumped with every list taken: verifiers rebuild, TLS sessions of
    /// the old list are forgotten.
    pub generation: u64,
}

impl List {
    pub fn info(&self) -> RevocationInfo {
        RevocationInfo {
            issued: self.issued.clone(),
            revoked: self.count,
        }
    }
}

/// The list in force, shared by the API's verifiers and call home.
pub struct Revocations {
    path: PathBuf,
    identity: Identity,
    time: Arc<dyn TimeProvider>,
    current: RwLock<Option<Arc<List>>>,
    /// Held for a whole install: two at once (they run on blocking
    /// threads) must not both pass the age check and write in either order.
    installing: Mutex<()>,
    /// Notified when a new list is in force.
    changed: event_listener::Event,
}

impl Revocations {
    /// The list on DATA, if any. One that does not check out is logged and
    /// not used (nothing is refused for it; an admin can install a good one).
    pub fn load(data: &Path, time: Arc<dyn TimeProvider>) -> Self {
        let me = Self {
            path: data.join(CRL_FILE),
            identity: Identity::in_data_dir(data),
            time,
            current: RwLock::new(None),
            installing: Mutex::new(()),
            changed: event_listener::Event::new(),
        };
        match std::fs::read(&me.path) {
            Ok(der) => match me.check(&der, 1) {
                Ok(list) => {
                    tracing::info!(
                        "revocations: list of {} ({} certificates) in force",
                        list.issued,
                        list.count
                    );
                    me.set(list);
                }
                Err(e) => tracing::error!("revocations: {}: {e}; not used", me.path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!("revocations: reading {}: {e}", me.path.display()),
        }
        me
    }

    /// The list in force.
    pub fn current(&self) -> Option<Arc<List>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The generation of the list in force (0: none).
    pub fn generation(&self) -> u64 {
        self.current().map_or(0, |l| l.generation)
    }

    /// Whether the list in force names the certificate `cert` (DER).
    pub fn revokes(&self, cert: &[u8]) -> bool {
        let Some(list) = self.current() else {
            return false;
        };
        let Ok(serial) = crate::wire::revocation::cert_serial(cert) else {
            return false;
        };
        matches!(list.crl.find_serial(serial), Ok(Some(_)))
    }

    /// Resolves once a newer list is in force (listen before checking the
    /// generation: a list installed in between still wakes it).
    pub fn changed(&self) -> event_listener::EventListener {
        self.changed.listen()
    }

    fn set(&self, list: List) -> Arc<List> {
        let list = Arc::new(list);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(list.clone());
        self.changed.notify(usize::MAX);
        list
    }

    /// Take `der` if the site CA signed it and it is not older than the list
    /// held; written durably before it is used. The same list again is fine.
    pub fn install(&self, der: &[u8]) -> Result<Arc<List>, RevocationError> {
        let _one_at_a_time = self
            .installing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = self.current();
        let generation = held.as_ref().map_or(1, |h| h.generation + 1);
        let list = self.check(der, generation)?;
        if let Some(held) = held {
            if list.issued < held.issued {
                return Err(RevocationError::Older {
                    offered: list.issued,
                    held: held.issued.clone(),
                });
            }
            if list.issued == held.issued {
                return match held.der.as_ref() == der {
                    true => Ok(held),
                    false => Err(RevocationError::Conflict(list.issued)),
                };
            }
        }
        super::durable::write_durably(&self.path, der)
            .map_err(|e| RevocationError::Io(format!("writing {}: {e}", self.path.display())))?;
        tracing::info!(
            "revocations: list of {} ({} certificates) installed",
            list.issued,
            list.count
        );
        Ok(self.set(list))
    }

    /// Parse `der` and check it is the site CA's: the board's own
    /// certificate (issued by that CA) is checked against it, which makes
    /// webpki find the list authoritative and verify its signature.
    fn check(&self, der: &[u8], generation: u64) -> Result<List, RevocationError> {
        if der.len() > MAX_CRL_BYTES {
            return Err(RevocationError::TooLarge(der.len()));
        }
        let malformed = |e: &dyn std::fmt::Display| RevocationError::Malformed(e.to_string());
        let issued = crl_issued(der).map_err(|e| malformed(&e))?;
        let parsed =
            webpki::BorrowedCertRevocationList::from_der(der).map_err(|e| malformed(&e))?;
        let count = u32::try_from((&parsed).into_iter().count()).unwrap_or(u32::MAX);
        let crl = webpki::CertRevocationList::from(parsed.to_owned().map_err(|e| malformed(&e))?);
        let roots =
            tls::certs(&self.identity.ca).map_err(|e| RevocationError::Io(e.to_string()))?;
        let own =
            tls::certs(&self.identity.cert).map_err(|e| RevocationError::Io(e.to_string()))?;
        let own = own
            .first()
            .ok_or_else(|| RevocationError::Io("no device certificate".into()))?;
        // The board's clock: what it judges every client certificate by.
        let now = self.time.current_time().unwrap_or(UnixTime::now());
        match check_chain(own, &roots, now, &[&crl]) {
            Ok(()) => {}
            Err(webpki::Error::CertRevoked) => {
                tracing::warn!("revocations: this board's own certificate is on the list")
            }
            Err(webpki::Error::InvalidCrlSignatureForPublicKey)
            | Err(webpki::Error::UnsupportedCrlSignatureAlgorithmContext(_))
            | Err(webpki::Error::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)) => {
                return Err(RevocationError::NotSigned)
            }
            Err(webpki::Error::UnknownRevocationStatus) => return Err(RevocationError::NotOurs),
            Err(e) => return Err(RevocationError::Check(format!("{e:?}"))),
        }
        Ok(List {
            der: CertificateRevocationListDer::from(der.to_vec()),
            crl,
            issued,
            count,
            generation,
        })
    }
}

/// The board's certificate checked against the site CA with `crls` (which
/// must speak for it). Also what call home uses for operators' certificates.
pub fn check_chain(
    cert: &CertificateDer<'_>,
    roots: &[CertificateDer<'_>],
    now: UnixTime,
    crls: &[&webpki::CertRevocationList<'_>],
) -> Result<(), webpki::Error> {
    let ee = webpki::EndEntityCert::try_from(cert)?;
    crate::wire::envelope::verify_chain(&ee, roots, now, webpki::KeyUsage::server_auth(), crls)
}

/// A board's DATA for tests: the site CA and the board's own certificate,
/// and the site's list issued after revoking `revoke` (PEM certificates).
#[cfg(all(test, feature = "host"))]
#[allow(clippy::unwrap_used)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    use crate::host::pki::Site;

    pub(crate) fn board_data(site: &Site, dir: &Path) -> PathBuf {
        site.issue_device("edge-1", 50000).unwrap();
        let identity = dir.join("identity");
        std::fs::create_dir_all(&identity).unwrap();
        std::fs::copy(site.ca_cert(), identity.join("ca.crt")).unwrap();
        let own = site.device_dir("edge-1").join("device.crt");
        std::fs::copy(own, identity.join("device.crt")).unwrap();
        dir.to_path_buf()
    }

    /// The site's list (DER) after putting `cert` (DER) on it.
    pub(crate) fn revoke(site: &Site, cert: &[u8]) -> Vec<u8> {
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec()));
        let done = crate::host::revoke::revoke(site, pem.as_bytes(), "test").unwrap();
        crate::host::revoke::read_crl(&done.crl).unwrap()
    }
}

#[cfg(all(test, feature = "host"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testing::{board_data, revoke};
    use super::*;
    use crate::host::pki::Site;

    fn clock() -> Arc<dyn TimeProvider> {
        Arc::new(rustls::time_provider::DefaultTimeProvider)
    }

    fn client(site: &Site, name: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        let (crt, _) = site.issue_client(name, "reader").unwrap();
        CertificateDer::from_pem_file(crt).unwrap().to_vec()
    }

    #[test]
    fn a_newer_list_of_the_site_is_taken_kept_and_never_rolled_back() {
        let tmp = tempfile::tempdir().unwrap();
        let site = Site::create(&tmp.path().join("s"), "lab").unwrap();
        let data = board_data(&site, &tmp.path().join("data"));
        let first = revoke(&site, &client(&site, "alice"));
        let second = revoke(&site, &client(&site, "bob"));

        let r = Revocations::load(&data, clock());
        assert!(r.current().is_none());
        let took = r.install(&first).unwrap();
        assert_eq!((took.count, took.generation), (1, 1));
        // The same list again changes nothing.
        assert_eq!(r.install(&first).unwrap().generation, 1);
        assert_eq!(r.install(&second).unwrap().info().revoked, 2);
        match r.install(&first) {
            Err(RevocationError::Older { .. }) => {}
            other => panic!("{other:?}"),
        }
        // Kept on DATA: a restart starts with the newest.
        let again = Revocations::load(&data, clock());
        assert_eq!(again.current().unwrap().der.as_ref(), second.as_slice());
    }

    #[test]
    fn lists_not_signed_by_the_site_ca_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let site = Site::create(&tmp.path().join("s"), "lab").unwrap();
        let other = Site::create(&tmp.path().join("o"), "lab").unwrap();
        let data = board_data(&site, &tmp.path().join("data"));
        let r = Revocations::load(&data, clock());
        // Another site with the same name: same issuer name, other key.
        let foreign = revoke(&other, &client(&other, "alice"));
        match r.install(&foreign) {
            Err(RevocationError::NotSigned) => {}
            other => panic!("{other:?}"),
        }
        let mut good = revoke(&site, &client(&site, "alice"));
        let last = good.len() - 1;
        good[last] ^= 1; // the signature's last byte
        match r.install(&good) {
            Err(RevocationError::NotSigned) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.install(b"junk"),
            Err(RevocationError::Malformed(_))
        ));
        assert!(matches!(
            r.install(&vec![0x30; MAX_CRL_BYTES + 1]),
            Err(RevocationError::TooLarge(_))
        ));
        assert!(r.current().is_none());
        assert!(!data.join(CRL_FILE).exists());
    }
}

//! What the CLI trusts: the site CA (a context's `ca`) and, when the site has
//! one, its revocation list beside it (`crl.pem` in the CA's directory, as
//! `outpost gen revoke` writes it). A revoked board — a stolen one — is then
//! refused by the CLI too: at the TLS handshake (direct API, and the
//! broker's own certificate) and for what it publishes through the broker.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};

use crate::wire::envelope;

pub struct SiteTrust {
    pub roots: Vec<CertificateDer<'static>>,
    /// The list as read (for rustls's verifier)...
    pub crl: Option<CertificateRevocationListDer<'static>>,
    /// ...and parsed once, for every device certificate checked against it
    /// (a fan-out to a thousand boards checks a thousand).
    parsed: Option<webpki::CertRevocationList<'static>>,
}

/// The revocation list of the site whose CA is `ca`.
pub fn crl_beside(ca: &Path) -> PathBuf {
    super::revoke::crl_path_in(ca.parent().unwrap_or(Path::new(".")))
}

impl SiteTrust {
    pub fn load(ca: &Path) -> Result<Self> {
        let roots = CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", ca.display()))?;
        let crl_path = crl_beside(ca);
        if !crl_path.is_file() {
            return Ok(Self::without_list(roots));
        }
        let der = super::revoke::read_crl(&crl_path)?;
        let parsed = webpki::OwnedCertRevocationList::from_der(&der)
            .map_err(|e| anyhow!("{}: not a revocation list: {e:?}", crl_path.display()))?;
        Ok(Self {
            roots,
            crl: Some(CertificateRevocationListDer::from(der)),
            parsed: Some(webpki::CertRevocationList::from(parsed)),
        })
    }

    /// Trust in `roots` alone: a site that has revoked nothing.
    pub fn without_list(roots: Vec<CertificateDer<'static>>) -> Self {
        Self {
            roots,
            crl: None,
            parsed: None,
        }
    }

    /// A device's certificate (from its retained `/cert` topic) must chain
    /// to the site CA, not be on the site's list, and name the device.
    pub fn check_device_cert(&self, der: &[u8], device: &str) -> Result<()> {
        let der = CertificateDer::from(der);
        let cert = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| anyhow!("{device}: certificate does not parse: {e:?}"))?;
        let crls: Vec<_> = self.parsed.iter().collect();
        let usage = webpki::KeyUsage::server_auth();
        envelope::verify_chain(&cert, &self.roots, UnixTime::now(), usage, &crls).map_err(|e| {
            match e {
                webpki::Error::CertRevoked => {
                    anyhow!("{device}: its certificate is on the site's revocation list")
                }
                e => anyhow!("{device}: certificate not from the site CA: {e:?}"),
            }
        })?;
        let name = ServerName::try_from(device.to_owned())
            .with_context(|| format!("bad device name {device}"))?;
        cert.verify_is_valid_for_subject_name(&name)
            .map_err(|e| anyhow!("certificate is not {device}'s: {e:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::pki::Site;

    #[test]
    fn a_revoked_board_is_refused_and_the_others_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        let site = Site::create(&tmp.path().join("s"), "s").unwrap();
        let cert = |host: &str| {
            let dir = site.issue_device(host, 50000).unwrap();
            std::fs::read(dir.join("device.crt")).unwrap()
        };
        let (stolen, kept) = (cert("edge-1"), cert("edge-2"));
        let der = |pem: &[u8]| CertificateDer::from_pem_slice(pem).unwrap();
        let before = SiteTrust::load(&site.ca_cert()).unwrap();
        assert!(before.crl.is_none());
        before.check_device_cert(&der(&stolen), "edge-1").unwrap();
        crate::host::revoke::revoke(&site, &stolen, "edge-1").unwrap();
        let after = SiteTrust::load(&site.ca_cert()).unwrap();
        let err = after
            .check_device_cert(&der(&stolen), "edge-1")
            .unwrap_err();
        assert!(format!("{err:#}").contains("revocation list"), "{err:#}");
        after.check_device_cert(&der(&kept), "edge-2").unwrap();
        // A damaged list is reported when it is read, by path.
        std::fs::write(
            crl_beside(&site.ca_cert()),
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .unwrap();
        let err = SiteTrust::load(&site.ca_cert()).err().unwrap();
        assert!(format!("{err:#}").contains("crl.pem"), "{err:#}");
    }
}

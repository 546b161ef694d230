//! The site's revocation list: `SITE/revoked.toml` records what was revoked,
//! `SITE/crl.pem` is the X.509 CRL the site CA signs from it. Boards take the
//! CRL (`outpost revocations SITE/crl.pem`, and every image built afterwards
//! carries it); mosquitto can take the same file as its `crlfile`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::pki::Site;
use crate::bundle::hex;
use crate::config::validate_hostname;
use crate::wire::envelope::verify_chain;
use crate::wire::revocation::{cert_serial, MAX_CRL_BYTES};

/// SITE/revoked.toml.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokedFile {
    /// When the list was last issued (Unix seconds). Each issue is at least
    /// a second later: boards take no list older than the one they hold.
    #[serde(default)]
    issued: i64,
    #[serde(default)]
    revoked: Vec<Revoked>,
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// The certificate's serial number, hex.
    pub serial: String,
    /// What it was (`client alice`, or the file it came from).
    pub what: String,
    /// When it was revoked (Unix seconds).
    pub at: i64,
}

/// What `revoke` did.
#[derive(Debug)]
pub struct Outcome {
    pub entry: Revoked,
    /// False when the certificate was already on the list.
    pub added: bool,
    pub crl: PathBuf,
    /// Certificates on the list now.
    pub count: usize,
}

fn list_path(site: &Site) -> PathBuf {
    site.dir.join("revoked.toml")
}

/// Where the signed list is.
pub fn crl_path(site: &Site) -> PathBuf {
    crl_path_in(&site.dir)
}

/// Where the signed list of the site in `dir` is.
pub fn crl_path_in(dir: &Path) -> PathBuf {
    dir.join("crl.pem")
}

/// Put the site's client `name` (SITE/clients/NAME.crt) on the list.
pub fn revoke_client(site: &Site, name: &str) -> Result<Outcome> {
    // The name becomes a path: no `/`, no `..`.
    validate_hostname(name).map_err(|_| {
        anyhow!("client name `{name}` may contain only letters, digits, '-' and '.'")
    })?;
    let crt = site.client_paths(name).0;
    let pem = match fs::read(&crt) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "site `{}` has no client `{name}` ({} does not exist); \
             `--cert FILE` revokes a certificate kept elsewhere",
            site.name,
            crt.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", crt.display())),
    };
    revoke(site, &pem, &format!("client {name}"))
}

/// Put the certificate `cert_pem` on the site's list and sign the list again.
/// Only a certificate the site's CA issued can be: another site's serial
/// on this list would revoke nothing, or by chance one of this site's.
pub fn revoke(site: &Site, cert_pem: &[u8], what: &str) -> Result<Outcome> {
    let cert = CertificateDer::from_pem_slice(cert_pem)
        .map_err(|e| anyhow!("{what} is not a PEM certificate: {e:?}"))?;
    check_issued_by(site, &cert, what)?;
    let serial = hex(cert_serial(&cert).with_context(|| format!("reading {what}"))?);
    let path = list_path(site);
    let mut list: RevokedFile = match fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RevokedFile::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (entry, added) = match list.revoked.iter().find(|r| r.serial == serial) {
        Some(known) => (known.clone(), false),
        None => {
            let entry = Revoked {
                serial,
                what: what.to_owned(),
                at: now,
            };
            list.revoked.push(entry.clone());
            (entry, true)
        }
    };
    list.issued = now.max(list.issued + 1);
    let pem = sign(site, &list)?;
    if pem.len() > MAX_CRL_BYTES {
        bail!(
            "the revocation list would be {} bytes, over the {MAX_CRL_BYTES} a board takes",
            pem.len()
        );
    }
    // The record first: a list signed from it can always be made again.
    fs::write(&path, toml::to_string(&list)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let crl = crl_path(site);
    fs::write(&crl, pem).with_context(|| format!("writing {}", crl.display()))?;
    Ok(Outcome {
        entry,
        added,
        crl,
        count: list.revoked.len(),
    })
}

/// `cert` chains to the site's CA, as a client's or as a board's (or
/// broker's) certificate, and is valid now: an expired one is refused by
/// every board already.
fn check_issued_by(site: &Site, cert: &CertificateDer<'_>, what: &str) -> Result<()> {
    let ca = site.ca_cert();
    let root = CertificateDer::from_pem_file(&ca)
        .map_err(|e| anyhow!("reading the site CA {}: {e:?}", ca.display()))?;
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| anyhow!("{what}: the certificate does not parse: {e:?}"))?;
    let now = rustls::pki_types::UnixTime::now();
    let check = |usage| verify_chain(&ee, std::slice::from_ref(&root), now, usage, &[]);
    let err = match check(webpki::KeyUsage::client_auth()) {
        Ok(()) => return Ok(()),
        Err(e) => match check(webpki::KeyUsage::server_auth()) {
            Ok(()) => return Ok(()),
            // Report what the client check found unless that was only the
            // certificate's purpose (a board's certificate is no client's).
            Err(server) if is_purpose(&e) => server,
            Err(_) => e,
        },
    };
    bail!(
        "{what} is not a certificate of site `{}` that is valid now ({err:?}); \
         a certificate of another site is that site's to revoke, an expired one \
         is refused already",
        site.name
    )
}

fn is_purpose(e: &webpki::Error) -> bool {
    matches!(e, webpki::Error::RequiredEkuNotFoundContext(_))
}

/// The CRL for `list`, signed by the site CA, as PEM.
fn sign(site: &Site, list: &RevokedFile) -> Result<String> {
    let (ca, ca_key) = site.ca()?;
    let time = |secs: i64| {
        OffsetDateTime::from_unix_timestamp(secs).context("a time on the revocation list")
    };
    let this_update = time(list.issued)?;
    let mut revoked = Vec::with_capacity(list.revoked.len());
    for r in &list.revoked {
        let serial = crate::bundle::unhex(&r.serial)
            .with_context(|| format!("serial `{}` in revoked.toml is not hex", r.serial))?;
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: time(r.at)?,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update,
        // Boards do not hold a list's age against it (one that has been
        // offline for a year still refuses what was revoked), but webpki
        // wants the field.
        next_update: this_update + Duration::days(365 * 10),
        crl_number: SerialNumber::from(u64::try_from(list.issued).unwrap_or_default()),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(&ca, &ca_key)?.pem()?)
}

/// The CRL in `path` (PEM, as `revoke` writes it), as DER for a board.
pub fn read_crl(path: &Path) -> Result<Vec<u8>> {
    let text = super::debian::read_small(path, MAX_CRL_BYTES as u64 * 2)?;
    let der = CertificateRevocationListDer::from_pem_slice(text.as_bytes())
        .map_err(|e| anyhow!("{} is not a PEM revocation list: {e:?}", path.display()))?;
    Ok(der.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::revocation::crl_issued;

    #[test]
    fn a_revoked_client_is_on_a_list_signed_by_the_site_ca_and_later_each_time() {
        let tmp = tempfile::tempdir().unwrap();
        let site = Site::create(&tmp.path().join("s"), "s").unwrap();
        site.issue_client("alice", "operator").unwrap();
        let pem = |name| fs::read(site.client_paths(name).0).unwrap();
        let first = revoke(&site, &pem("alice"), "client alice").unwrap();
        assert!(first.added && first.count == 1);
        let der1 = read_crl(&first.crl).unwrap();
        let again = revoke(&site, &pem("alice"), "client alice").unwrap();
        assert!(!again.added && again.count == 1);
        let der2 = read_crl(&again.crl).unwrap();
        assert!(crl_issued(&der1).unwrap() < crl_issued(&der2).unwrap());
        let alice = CertificateDer::from_pem_slice(&pem("alice")).unwrap();
        let admin = CertificateDer::from_pem_slice(&pem("admin")).unwrap();
        let crl = webpki::BorrowedCertRevocationList::from_der(&der2).unwrap();
        let crl = webpki::CertRevocationList::from(crl);
        let serial = |c: &CertificateDer| cert_serial(c).unwrap().to_vec();
        assert!(crl.find_serial(&serial(&alice)).unwrap().is_some());
        assert!(crl.find_serial(&serial(&admin)).unwrap().is_none());
        assert!(revoke(&site, b"not a certificate", "junk").is_err());
        // A file that is no CRL (here: a certificate) is refused by name.
        let err = read_crl(&site.ca_cert()).unwrap_err();
        assert!(
            format!("{err:#}").contains("is not a PEM revocation list"),
            "{err:#}"
        );
    }

    #[test]
    fn only_this_sites_certificates_and_clients_are_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let site = Site::create(&tmp.path().join("s"), "s").unwrap();
        let other = Site::create(&tmp.path().join("o"), "o").unwrap();
        // A board of this site is taken by its file.
        let board = fs::read(
            site.issue_device("edge-1", 50000)
                .unwrap()
                .join("device.crt"),
        )
        .unwrap();
        assert!(revoke(&site, &board, "edge-1").unwrap().added);
        // Another site's client and board are not, and the list is unchanged.
        let theirs = fs::read(other.client_paths("admin").0).unwrap();
        let err = format!("{:#}", revoke(&site, &theirs, "o-admin").unwrap_err());
        assert!(
            err.contains("not a certificate of site `s`") && err.contains("UnknownIssuer"),
            "{err}"
        );
        let their_board = fs::read(
            other
                .issue_device("edge-9", 50000)
                .unwrap()
                .join("device.crt"),
        )
        .unwrap();
        assert!(revoke(&site, &their_board, "o-edge-9").is_err());
        let listed = fs::read_to_string(site.dir.join("revoked.toml")).unwrap();
        assert_eq!(listed.matches("serial").count(), 1, "{listed}");
        // Clients by name: a name that is no name, and one the site never issued.
        let err = format!(
            "{:#}",
            revoke_client(&site, "../o/clients/admin").unwrap_err()
        );
        assert!(err.contains("may contain only"), "{err}");
        let err = format!("{:#}", revoke_client(&site, "bob").unwrap_err());
        assert!(err.contains("site `s` has no client `bob`"), "{err}");
        assert_eq!(revoke_client(&site, "admin").unwrap().count, 2);
    }
}

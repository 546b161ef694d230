//! Site PKI: a site CA, client certificates with a role, device identities.
//!
//! Layout of a site directory:
//! ```text
//! SITE/site.toml                 name of the site (the CA's subject)
//! SITE/ca.crt, SITE/ca.key       the site CA (ca.key never leaves this directory)
//! SITE/release.key, release.pub  the bundle signing key (Ed25519); images trust release.pub
//! SITE/clients/NAME.{crt,key}    operator certificates (role in the subject's O)
//! SITE/revoked.toml, crl.pem     what the site revoked, and the CA-signed list (`revoke`)
//! SITE/devices/HOST/device.{crt,key}, machine.toml
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ED25519,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::config::{validate_hostname, MachineConfig};

/// Roles carried in a client certificate (like Talos's os:admin/os:operator/os:reader);
/// `wire::Role` is what the device reads back.
pub const ROLES: [&str; 3] = ["admin", "operator", "reader"];
/// Prefix of the role in the certificate subject's Organization.
pub const ROLE_PREFIX: &str = "os:";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    name: String,
    /// When the site (its CA) was made, Unix seconds; absent in sites made
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<u64>,
}

/// An existing site directory.
pub struct Site {
    pub dir: PathBuf,
    pub name: String,
    /// Unix seconds when the site was made (see [`Site::client_not_before`]).
    pub created: Option<u64>,
}

impl Site {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn client_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.join("clients");
        (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        )
    }
    pub fn device_dir(&self, hostname: &str) -> PathBuf {
        self.dir.join("devices").join(hostname)
    }

    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("site.toml");
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "{} is not a site directory (run `outpost gen site {}`)",
                dir.display(),
                dir.display()
            )
        })?;
        let file: SiteFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            name: file.name,
            created: file.created,
        })
    }

    /// Create a new site: CA and an admin client certificate.
    pub fn create(dir: &Path, name: &str) -> Result<Self> {
        if dir.join("site.toml").exists() || dir.join("ca.key").exists() {
            bail!(
                "{} already holds a site; refusing to overwrite its CA",
                dir.display()
            );
        }
        if name.is_empty() || name.len() > 64 || name.contains(['/', '\0']) {
            bail!("site name `{name}` must be 1 to 64 characters without '/'");
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let created = OffsetDateTime::now_utc().unix_timestamp();
        let site = Self {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            created: u64::try_from(created).ok(),
        };
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let cert = site.ca_params().self_signed(&key)?;
        write_secret(&site.ca_key(), &key.serialize_pem())?;
        write_file(&site.ca_cert(), &cert.pem())?;
        let site_file = toml::to_string(&SiteFile {
            name: name.to_owned(),
            created: site.created,
        })?;
        write_file(&dir.join("site.toml"), &site_file)?;
        site.create_release_key()?;
        site.issue_client("admin", "admin")?;
        Ok(site)
    }

    /// The release key signs bundles; it is separate from the CA so that
    /// whoever issues operator certificates cannot also ship an OS.
    fn create_release_key(&self) -> Result<()> {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("generating the release key"))?;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("release key"))?;
        write_secret(
            &self.dir.join("release.key"),
            &pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec())),
        )?;
        let hex = crate::bundle::hex(pair.public_key().as_ref());
        write_file(
            &self.dir.join("release.pub"),
            &format!("# Outpost release key of site {}\n{hex}\n", self.name),
        )
    }

    /// The release signing key.
    pub fn release_key(&self) -> Result<ring::signature::Ed25519KeyPair> {
        let path = self.dir.join("release.key");
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (sites made before release keys: see docs/upgrades.md)",
                path.display()
            )
        })?;
        let der = pem_decode(&text)
            .with_context(|| format!("{} is not a PEM private key", path.display()))?;
        ring::signature::Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key", path.display()))
    }

    /// The release public keys file (hex lines) that images trust.
    pub fn release_pub(&self) -> PathBuf {
        self.dir.join("release.pub")
    }

    /// The CA's parameters are a pure function of the site name, so the CA
    /// certificate can be re-derived from its key to sign with (rcgen needs a
    /// `Certificate` as issuer; its subject and key are what chains).
    fn ca_params(&self) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("Outpost site CA {}", self.name), None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365 * 20);
        params
    }

    pub(crate) fn ca(&self) -> Result<(Certificate, KeyPair)> {
        let pem = fs::read_to_string(self.ca_key())
            .with_context(|| format!("reading {}", self.ca_key().display()))?;
        let key = KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a private key", self.ca_key().display()))?;
        let cert = self.ca_params().self_signed(&key)?;
        Ok((cert, key))
    }

    /// When operator certificates become valid: a day before the site was
    /// made, however long after that they are issued. A board with no RTC
    /// that has not synced yet knows only that it is later than its image's
    /// build time, and every image of a site is built after the site's CA;
    /// a `notBefore` of "now" would make a certificate issued after the
    /// image "not yet valid" there and lock the operator out. (Sites made
    /// before `created` was recorded: a day before now, as before.)
    pub fn client_not_before(&self, now: OffsetDateTime) -> OffsetDateTime {
        let created = self
            .created
            .and_then(|s| i64::try_from(s).ok())
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .unwrap_or(now);
        created.min(now) - Duration::days(1)
    }

    /// Issue an operator certificate with `role`, written to SITE/clients/.
    pub fn issue_client(&self, name: &str, role: &str) -> Result<(PathBuf, PathBuf)> {
        let now = OffsetDateTime::now_utc();
        let (cert, key) = self.client_pem(
            name,
            role,
            self.client_not_before(now),
            now + Duration::days(365 * 10),
        )?;
        let (crt_path, key_path) = self.client_paths(name);
        fs::create_dir_all(self.dir.join("clients"))?;
        write_secret(&key_path, &key)?;
        write_file(&crt_path, &cert)?;
        Ok((crt_path, key_path))
    }

    /// An operator certificate and key (PEM) valid from `not_before` to `not_after`.
    pub fn client_pem(
        &self,
        name: &str,
        role: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(String, String)> {
        if !ROLES.contains(&role) {
            bail!("unknown role `{role}`: use one of {}", ROLES.join(", "));
        }
        validate_hostname(name).map_err(|_| {
            anyhow::anyhow!("client name `{name}` may contain only letters, digits, '-' and '.'")
        })?;
        let (ca, ca_key) = self.ca()?;
        let mut params = leaf_params(vec![])?;
        params.not_before = not_before;
        params.not_after = not_after;
        params.distinguished_name = dn(name, Some(&format!("{ROLE_PREFIX}{role}")));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Create a device identity and its default machine config.
    pub fn issue_device(&self, hostname: &str, api_port: u16) -> Result<PathBuf> {
        let mut config = MachineConfig::new(hostname);
        config.api.port = api_port;
        config.validate()?;
        let dir = self.device_dir(hostname);
        if dir.join("device.key").exists() {
            bail!(
                "device `{hostname}` already exists in {}; remove that directory to re-issue",
                dir.display()
            );
        }
        let (ca, ca_key) = self.ca()?;
        let mut params = leaf_params(vec![hostname.to_owned()])?;
        params.distinguished_name = dn(hostname, Some("os:device"));
        // ClientAuth too: a device that calls home presents the same identity.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_secret(&dir.join("device.key"), &key.serialize_pem())?;
        write_file(&dir.join("device.crt"), &cert.pem())?;
        write_file(&dir.join("machine.toml"), &config.to_toml())?;
        Ok(dir)
    }
}

impl Site {
    /// A server certificate for an MQTT broker that boards call home to
    /// (docs/callhome.md), signed by the site CA: boards check it against
    /// the CA they already hold. `sans`: the names and IP addresses boards
    /// dial (their `[callhome] server_name`, or the broker address).
    /// Written to SITE/brokers/NAME.{crt,key}; existing files are kept.
    pub fn issue_broker(&self, name: &str, sans: &[String]) -> Result<(PathBuf, PathBuf)> {
        validate_hostname(name).map_err(|_| {
            anyhow::anyhow!("broker name `{name}` may contain only letters, digits, '-' and '.'")
        })?;
        if sans.is_empty() {
            bail!("a broker certificate needs at least one name or address (--san)");
        }
        let dir = self.dir.join("brokers");
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        if key.exists() {
            return Ok((crt, key));
        }
        let (ca, ca_key) = self.ca()?;
        let mut params = leaf_params(sans.to_vec())?;
        params.distinguished_name = dn(name, Some("os:broker"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let pair = KeyPair::generate_for(&PKCS_ED25519)?;
        let cert = params.signed_by(&pair, &ca, &ca_key)?;
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // OpenSSL (mosquitto) reads only version-1 PKCS#8 Ed25519 keys.
        let der = pkcs8_v1_ed25519(&pair.serialize_der())?;
        write_secret(&key, &pem::encode(&pem::Pem::new("PRIVATE KEY", der)))?;
        write_file(&crt, &cert.pem())?;
        Ok((crt, key))
    }
}

/// ring (and so rcgen) writes Ed25519 keys as PKCS#8 v2 (RFC 5958, with the
/// public key); OpenSSL 3.0 refuses those. The v1 form is the same seed.
fn pkcs8_v1_ed25519(v2: &[u8]) -> Result<Vec<u8>> {
    // SEQUENCE { INTEGER 1, AlgorithmIdentifier Ed25519, OCTET STRING { OCTET STRING seed } ...
    const V2_BODY: [u8; 14] = [
        0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let seed = v2
        .get(2..)
        .and_then(|rest| rest.strip_prefix(&V2_BODY))
        .and_then(|rest| rest.get(..32))
        .filter(|_| v2.first() == Some(&0x30))
        .ok_or_else(|| anyhow::anyhow!("not a ring Ed25519 PKCS#8 key"))?;
    let mut out = V1_PREFIX.to_vec();
    out.extend_from_slice(seed);
    Ok(out)
}

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn leaf_params(sans: Vec<String>) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(sans)?;
    let now = OffsetDateTime::now_utc();
    // A day of slack for boards whose clock lags; ten years because nobody
    // visits an edge site to renew a certificate.
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(365 * 10);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

fn pem_decode(text: &str) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(der.secret_pkcs8_der().to_vec())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificates_are_valid_from_before_the_site_was_made() {
        let tmp = tempfile::tempdir().unwrap();
        let site = Site::create(&tmp.path().join("s"), "lab").unwrap();
        let created = site.created.unwrap();
        let reopened = Site::open(&site.dir).unwrap();
        assert_eq!(reopened.created, Some(created));
        let later = OffsetDateTime::now_utc() + Duration::days(90);
        let nb = reopened.client_not_before(later).unix_timestamp();
        assert_eq!(nb, created as i64 - 86_400);
        // A site from before `created` was recorded: a day before now.
        std::fs::write(site.dir.join("site.toml"), "name = \"lab\"\n").unwrap();
        let old = Site::open(&site.dir).unwrap();
        assert_eq!(old.created, None);
        assert_eq!(
            old.client_not_before(later).unix_timestamp(),
            later.unix_timestamp() - 86_400
        );
    }

    #[test]
    fn site_device_and_client_chain_to_the_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let site = Site::create(&tmp.path().join("s"), "lab").unwrap();
        assert!(
            Site::create(&site.dir, "lab").is_err(),
            "must not overwrite a CA"
        );
        let dev = site.issue_device("edge-1", 50000).unwrap();
        assert!(site.issue_device("edge-1", 50000).is_err());
        assert!(site.issue_client("ro", "superuser").is_err());
        site.issue_client("ro", "reader").unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(site.dir.join("ca.key")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let config =
            MachineConfig::from_toml(&fs::read_to_string(dev.join("machine.toml")).unwrap())
                .unwrap();
        assert_eq!(config.hostname, "edge-1");
        assert!(Site::open(&site.dir).is_ok());
        // The release key signs; its public half is in release.pub as hex.
        let key = site.release_key().unwrap();
        let pub_text = fs::read_to_string(site.release_pub()).unwrap();
        let hex = pub_text.lines().find(|l| !l.starts_with('#')).unwrap();
        let raw: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let sig = key.sign(b"bundle");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &raw)
            .verify(b"bundle", sig.as_ref())
            .unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(site.dir.join("release.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(Site::open(tmp.path()).is_err());
    }
}

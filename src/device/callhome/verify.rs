//! Is a command from the broker really an operator's, for us, and still
//! valid? The broker's ACLs are the outer wall; this is the authority: the
//! operator's certificate chains to the site CA (client-auth usage, valid
//! now, not on the site's revocation list), its key signed the command, its subject names a role, and the
//! command names this device (or one of its groups), the topic it came on
//! and an expiry not yet passed. Replays are the caller's next check.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};

use super::replay::KeyId;
use crate::device::api::auth;
use crate::device::revocation::Revocations;
use crate::wire::envelope::{self, Body, CertRef, Command, SignedCommand, Target, COMMAND_CONTEXT};
use crate::wire::Role;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("envelope does not decode")]
    Malformed,
    #[error("operator certificate not accepted: {0:?}")]
    Certificate(webpki::Error),
    #[error("signature does not verify")]
    Signature,
    #[error("certificate names no role")]
    NoRole,
    #[error("addressed to another device or a group this device is not in")]
    NotForUs,
    #[error("signed for another topic")]
    WrongTopic,
    #[error("expired {0} s ago")]
    Expired(u64),
    #[error("{0}")]
    Replayed(#[from] super::replay::Replayed),
    /// A `Known` certificate this boot has not seen; `seq` is the
    /// (unverified) command's, so the CLI can send it again whole.
    #[error("{}", envelope::UNKNOWN_CERT)]
    UnknownCertificate { seq: u64 },
    /// `[callhome] require_sealed` and a plain command.
    #[error("{}", envelope::SEALED_ONLY)]
    NotSealed { seq: u64 },
    /// Sealed to another key (an old one, or another device's), or altered.
    #[error("sealed request does not open (sealed to another seal key?)")]
    DoesNotOpen { seq: u64 },
}

impl Refusal {
    /// Whether the sender proved who it is (worth an answer on `/events`).
    pub fn authentic(&self) -> bool {
        matches!(
            self,
            Refusal::Expired(_)
                | Refusal::Replayed(_)
                | Refusal::UnknownCertificate { .. }
                | Refusal::NotSealed { .. }
                | Refusal::DoesNotOpen { .. }
        )
    }

    /// The refused command's `seq`, for the `Refused` event (0: unknown).
    pub fn seq(&self) -> u64 {
        match self {
            Refusal::Replayed(r) => r.seq,
            Refusal::UnknownCertificate { seq }
            | Refusal::NotSealed { seq }
            | Refusal::DoesNotOpen { seq } => *seq,
            _ => 0,
        }
    }
}

/// A command that passed every check but the replay check.
#[derive(Debug)]
pub struct Verified<'a> {
    pub role: Role,
    pub key: KeyId,
    pub seq: u64,
    /// One `RequestFrame`, plain or sealed (within the caps).
    pub body: Body<'a>,
}

/// Operator certificates remembered for `CertRef::Known` (a site has a
/// handful of operators; each entry is ~400 bytes).
const CERT_CACHE: usize = 8;

pub struct Authority {
    device: String,
    groups: Vec<String>,
    roots: Vec<CertificateDer<'static>>,
    /// Certificates that passed, newest last; checked again on each use.
    known: Vec<(KeyId, Vec<u8>)>,
    /// The site's revocation list, when the board has one.
    revocations: Option<Arc<Revocations>>,
}

impl Authority {
    pub fn new(device: &str, groups: &[String], roots: Vec<CertificateDer<'static>>) -> Self {
        Self {
            device: device.to_owned(),
            groups: groups.to_vec(),
            roots,
            known: Vec::new(),
            revocations: None,
        }
    }

    /// Refuse operators whose certificate is on the site's list.
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    pub fn verify<'a>(
        &mut self,
        payload: &'a [u8],
        topic: &str,
        now: UnixTime,
    ) -> Result<Verified<'a>, Refusal> {
        let signed: SignedCommand = envelope::decode(payload).map_err(|_| Refusal::Malformed)?;
        let cached;
        let cert_der: &[u8] = match signed.cert {
            CertRef::Full(der) => der,
            CertRef::Known(id) => match self.known.iter().find(|(k, _)| *k == id) {
                Some((_, der)) => {
                    cached = der.clone();
                    &cached
                }
                None => {
                    let seq = envelope::decode::<Command>(signed.command)
                        .map(|c| c.seq)
                        .unwrap_or(0);
                    return Err(Refusal::UnknownCertificate { seq });
                }
            },
        };
        if cert_der.len() > envelope::MAX_ENVELOPE_CERT {
            return Err(Refusal::Malformed);
        }
        let der = CertificateDer::from(cert_der);
        let cert = webpki::EndEntityCert::try_from(&der).map_err(Refusal::Certificate)?;
        let list = self.revocations.as_ref().and_then(|r| r.current());
        let crls: Vec<_> = list.iter().map(|l| &l.crl).collect();
        envelope::verify_chain(
            &cert,
            &self.roots,
            now,
            webpki::KeyUsage::client_auth(),
            &crls,
        )
        .map_err(Refusal::Certificate)?;
        let input = envelope::signing_input(COMMAND_CONTEXT, signed.command);
        cert.verify_signature(webpki::ring::ED25519, &input, signed.sig)
            .map_err(|_| Refusal::Signature)?;
        let role = auth::role_of(cert_der).map_err(|_| Refusal::NoRole)?;
        let command: Command = envelope::decode(signed.command).map_err(|_| Refusal::Malformed)?;
        if !command.request.within_caps() {
            return Err(Refusal::Malformed);
        }
        let expected = match command.target {
            Target::Device(d) if d == self.device => envelope::topic::req(d),
            Target::Group(g) if self.groups.iter().any(|m| m == g) => envelope::topic::group_req(g),
            _ => return Err(Refusal::NotForUs),
        };
        if command.topic != expected || topic != expected {
            return Err(Refusal::WrongTopic);
        }
        let now_secs = now.as_secs();
        if now_secs > command.expires {
            return Err(Refusal::Expired(now_secs - command.expires));
        }
        let key = envelope::cert_id(cert_der);
        if matches!(signed.cert, CertRef::Full(_)) && !self.known.iter().any(|(k, _)| *k == key) {
            if self.known.len() >= CERT_CACHE {
                self.known.remove(0);
            }
            self.known.push((key, cert_der.to_vec()));
        }
        Ok(Verified {
            role,
            key,
            seq: command.seq,
            body: command.request,
        })
    }
}

// Certificates come from the host-side PKI (rcgen).
#[cfg(all(test, feature = "host"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::host::pki::Site;
    use crate::wire::{Request, RequestFrame};

    struct Op {
        cert: Vec<u8>,
        key: ring::signature::Ed25519KeyPair,
    }

    fn operator(site: &Site, role: &str) -> Op {
        let now = time::OffsetDateTime::now_utc();
        let (cert, key) = site
            .client_pem(
                "alice",
                role,
                now - time::Duration::days(1),
                now + time::Duration::days(1),
            )
            .unwrap();
        use rustls::pki_types::pem::PemObject;
        let cert = CertificateDer::from_pem_slice(cert.as_bytes())
            .unwrap()
            .to_vec();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(key.secret_pkcs8_der()).unwrap();
        Op { cert, key }
    }

    fn sign(op: &Op, target: Target, topic: &str, expires: u64) -> Vec<u8> {
        let request = RequestFrame {
            id: 1,
            body: Request::Status,
        }
        .encode();
        let command = envelope::encode(&Command {
            target,
            topic,
            seq: 7,
            expires,
            request: Body::Plain(&request),
        });
        let sig = op
            .key
            .sign(&envelope::signing_input(COMMAND_CONTEXT, &command));
        envelope::encode(&SignedCommand {
            cert: CertRef::Full(&op.cert),
            command: &command,
            sig: sig.as_ref(),
        })
    }

    #[test]
    fn a_known_certificate_is_used_by_its_id_once_seen() {
        let (_t, site, mut auth) = setup();
        let op = operator(&site, "reader");
        let topic = "outpost/edge-1/req";
        let full = sign(&op, Target::Device("edge-1"), topic, now().as_secs() + 60);
        let signed: SignedCommand = envelope::decode(&full).unwrap();
        let short = envelope::encode(&SignedCommand {
            cert: CertRef::Known(envelope::cert_id(&op.cert)),
            ..signed.clone()
        });
        assert!(full.len() - short.len() >= op.cert.len() - 17);
        assert_eq!(
            auth.verify(&short, topic, now()).unwrap_err(),
            Refusal::UnknownCertificate { seq: 7 }
        );
        auth.verify(&full, topic, now()).unwrap();
        assert_eq!(
            auth.verify(&short, topic, now()).unwrap().role,
            Role::Reader
        );
        // The id names the certificate; the signature must still be its key's.
        let other = operator(&site, "admin");
        let forged = envelope::encode(&SignedCommand {
            cert: CertRef::Known(envelope::cert_id(&op.cert)),
            sig: other.key.sign(b"x").as_ref(),
            ..signed
        });
        assert_eq!(
            auth.verify(&forged, topic, now()).unwrap_err(),
            Refusal::Signature
        );
    }

    fn setup() -> (tempfile::TempDir, Site, Authority) {
        use rustls::pki_types::pem::PemObject;
        let tmp = tempfile::tempdir().unwrap();
        let site = Site::create(&tmp.path().join("s"), "lab").unwrap();
        let ca = CertificateDer::pem_file_iter(site.ca_cert())
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let auth = Authority::new("edge-1", &["north".into()], ca);
        (tmp, site, auth)
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn an_operator_on_the_site_revocation_list_is_refused() {
        use crate::device::revocation::testing::{board_data, revoke};
        let (tmp, site, auth) = setup();
        let (alice, bob) = (operator(&site, "admin"), operator(&site, "admin"));
        let data = board_data(&site, &tmp.path().join("data"));
        let list = revoke(&site, &alice.cert);
        let clock = Arc::new(rustls::time_provider::DefaultTimeProvider);
        let revocations = Arc::new(Revocations::load(&data, clock));
        let topic = "outpost/edge-1/req";
        let later = now().as_secs() + 60;
        let mut auth = auth.with_revocations(revocations.clone());
        // Accepted (and its certificate cached) before the list arrives.
        let from_alice = sign(&alice, Target::Device("edge-1"), topic, later);
        auth.verify(&from_alice, topic, now()).unwrap();
        revocations.install(&list).unwrap();
        assert_eq!(
            auth.verify(&from_alice, topic, now()).unwrap_err(),
            Refusal::Certificate(webpki::Error::CertRevoked)
        );
        let from_bob = sign(&bob, Target::Device("edge-1"), topic, later);
        assert_eq!(
            auth.verify(&from_bob, topic, now()).unwrap().role,
            Role::Admin
        );
    }

    #[test]
    fn a_signed_command_for_us_passes_with_its_role() {
        let (_t, site, mut auth) = setup();
        let op = operator(&site, "operator");
        let later = now().as_secs() + 60;
        let msg = sign(&op, Target::Device("edge-1"), "outpost/edge-1/req", later);
        let v = auth.verify(&msg, "outpost/edge-1/req", now()).unwrap();
        assert_eq!((v.role, v.seq), (Role::Operator, 7));
        assert!(matches!(v.body, Body::Plain(r) if RequestFrame::decode(r).is_ok()));
        let group = sign(
            &op,
            Target::Group("north"),
            "outpost/group/north/req",
            later,
        );
        assert!(auth
            .verify(&group, "outpost/group/north/req", now())
            .is_ok());
    }

    #[test]
    fn forged_misdirected_and_expired_commands_are_refused() {
        let (_t, site, mut auth) = setup();
        let op = operator(&site, "admin");
        let later = now().as_secs() + 60;
        let topic = "outpost/edge-1/req";
        let good = sign(&op, Target::Device("edge-1"), topic, later);
        // A flipped byte anywhere: refused, never a panic.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(auth.verify(&bad, topic, now()).is_err(), "byte {i}");
        }
        for n in 0..good.len() {
            assert!(auth.verify(&good[..n], topic, now()).is_err());
        }
        // Moved to another topic, or meant for another device or group.
        assert_eq!(
            auth.verify(&good, "outpost/group/north/req", now())
                .unwrap_err(),
            Refusal::WrongTopic
        );
        let other = sign(&op, Target::Device("edge-2"), "outpost/edge-2/req", later);
        assert_eq!(
            auth.verify(&other, "outpost/edge-2/req", now())
                .unwrap_err(),
            Refusal::NotForUs
        );
        let south = sign(
            &op,
            Target::Group("south"),
            "outpost/group/south/req",
            later,
        );
        assert_eq!(
            auth.verify(&south, "outpost/group/south/req", now())
                .unwrap_err(),
            Refusal::NotForUs
        );
        let old = sign(&op, Target::Device("edge-1"), topic, now().as_secs() - 5);
        assert!(matches!(
            auth.verify(&old, topic, now()),
            Err(Refusal::Expired(_))
        ));
        // Signed by a key of another site.
        let tmp = tempfile::tempdir().unwrap();
        let stranger = Site::create(&tmp.path().join("x"), "evil").unwrap();
        let forged = sign(
            &operator(&stranger, "admin"),
            Target::Device("edge-1"),
            topic,
            later,
        );
        assert!(matches!(
            auth.verify(&forged, topic, now()),
            Err(Refusal::Certificate(_))
        ));
        // Our operator's certificate with someone else's signature.
        let signed: SignedCommand = envelope::decode(&forged).unwrap();
        let spliced = envelope::encode(&SignedCommand {
            cert: CertRef::Full(&op.cert),
            ..signed
        });
        assert_eq!(
            auth.verify(&spliced, topic, now()).unwrap_err(),
            Refusal::Signature
        );
    }
}

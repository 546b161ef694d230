//! Who is calling: the role from the client certificate's subject
//! Organization (`O=os:admin|os:operator|os:reader`, as Talos does), read with
//! a minimal DER walk. The certificate was already verified by rustls against
//! the site CA; this only reads a field of it.

use crate::wire::Role;

/// A certificate is a few hundred bytes; refuse to walk anything absurd.
const MAX_CERT_BYTES: usize = 16 * 1024;
/// id-at-organizationName (2.5.4.10).
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];
/// Prefix of the role in the Organization value.
const ROLE_PREFIX: &str = "os:";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("client certificate is malformed DER")]
    Malformed,
    #[error("client certificate names no role (subject O=os:admin|os:operator|os:reader)")]
    NoRole,
}

/// One DER cursor: every read is bounds-checked, nothing indexes raw bytes.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], AuthError> {
        if n > self.rest.len() {
            return Err(AuthError::Malformed);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, AuthError> {
        self.take(1)?.first().copied().ok_or(AuthError::Malformed)
    }

    /// Read one TLV; returns (tag, contents).
    fn tlv(&mut self) -> Result<(u8, &'a [u8]), AuthError> {
        let tag = self.byte()?;
        let first = self.byte()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            // Lengths of up to 4 bytes; 0x80 (indefinite) is not DER.
            if n == 0 || n > 4 {
                return Err(AuthError::Malformed);
            }
            self.take(n)?
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        Ok((tag, self.take(len)?))
    }

    fn expect(&mut self, tag: u8) -> Result<&'a [u8], AuthError> {
        match self.tlv()? {
            (t, body) if t == tag => Ok(body),
            _ => Err(AuthError::Malformed),
        }
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const EXPLICIT_0: u8 = 0xa0;

/// The role named in a DER certificate's subject.
pub fn role_of(cert_der: &[u8]) -> Result<Role, AuthError> {
    if cert_der.len() > MAX_CERT_BYTES {
        return Err(AuthError::Malformed);
    }
    let mut cert = Der::new(Der::new(cert_der).expect(SEQUENCE)?);
    let mut tbs = Der::new(cert.expect(SEQUENCE)?);
    // version [0] EXPLICIT is optional (absent means v1).
    let (mut tag, _) = tbs.tlv()?;
    if tag == EXPLICIT_0 {
        (tag, _) = tbs.tlv()?; // serialNumber
    }
    let _ = tag;
    tbs.expect(SEQUENCE)?; // signature algorithm
    tbs.expect(SEQUENCE)?; // issuer
    tbs.expect(SEQUENCE)?; // validity
    let mut subject = Der::new(tbs.expect(SEQUENCE)?);
    while !subject.is_empty() {
        let mut rdn = Der::new(subject.expect(SET)?);
        while !rdn.is_empty() {
            let mut atv = Der::new(rdn.expect(SEQUENCE)?);
            let oid = atv.expect(OID)?;
            let (_string_tag, value) = atv.tlv()?;
            if oid == OID_ORGANIZATION {
                if let Some(role) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.strip_prefix(ROLE_PREFIX))
                    .and_then(Role::parse)
                {
                    return Ok(role);
                }
            }
        }
    }
    Err(AuthError::NoRole)
}

// The tests build certificates with rcgen, a host-side crate.
#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;

    #[allow(clippy::unwrap_used)]
    fn cert_with_org(org: Option<&str>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        if let Some(org) = org {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, org);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn malformed_der_is_an_error_never_a_panic() {
        assert_eq!(role_of(&[]), Err(AuthError::Malformed));
        assert_eq!(role_of(&[0x30]), Err(AuthError::Malformed));
        assert_eq!(
            role_of(&[0x30, 0x85, 1, 1, 1, 1, 1]),
            Err(AuthError::Malformed)
        );
        assert_eq!(role_of(&[0x30, 0x80, 0, 0]), Err(AuthError::Malformed));
        assert_eq!(
            role_of(&[0x30, 0x05, 0x30, 0x10, 0, 0, 0]),
            Err(AuthError::Malformed)
        );
        let good = cert_with_org(Some("os:operator"));
        for n in 0..good.len() {
            assert!(role_of(&good[..n]).is_err(), "prefix {n}");
        }
        let mut rng = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..4 {
                rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (rng as usize >> 8) % bytes.len();
                bytes[i] ^= (rng >> 24) as u8 | 1;
            }
            let _ = role_of(&bytes);
        }
    }

    #[test]
    fn roles_are_read_from_the_subject_organization() {
        assert_eq!(role_of(&cert_with_org(Some("os:admin"))), Ok(Role::Admin));
        assert_eq!(
            role_of(&cert_with_org(Some("os:operator"))),
            Ok(Role::Operator)
        );
        assert_eq!(role_of(&cert_with_org(Some("os:reader"))), Ok(Role::Reader));
        assert_eq!(
            role_of(&cert_with_org(Some("os:root"))),
            Err(AuthError::NoRole)
        );
        assert_eq!(
            role_of(&cert_with_org(Some("admin"))),
            Err(AuthError::NoRole)
        );
        assert_eq!(role_of(&cert_with_org(None)), Err(AuthError::NoRole));
    }
}

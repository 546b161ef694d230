//! The site's certificate revocation list as both sides read it: a standard
//! X.509 CRL (RFC 5280) signed by the site CA, which the board checks with
//! webpki (TLS clients, operator commands through the broker) and mosquitto
//! can take as its `crlfile`. What webpki does not expose is read here with
//! a few lines of DER: when a list was issued (a board takes no list older
//! than the one it holds) and a certificate's serial number (what the CLI
//! puts on the list).

/// Where a board keeps the list, under DATA (DER); images are built with it.
pub const CRL_FILE: &str = "identity/revoked.crl";

/// Largest list a board takes: ~200 bytes and 40 per revoked certificate,
/// so ~300 certificates, under a request frame (16 KiB).
pub const MAX_CRL_BYTES: usize = 12 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DerError {
    #[error("not DER: {0}")]
    Malformed(&'static str),
}

/// One DER element: its tag, its contents, and what follows it.
fn element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError::Malformed("empty"))?;
    let (&first, rest) = rest.split_first().ok_or(DerError::Malformed("no length"))?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        0x81..=0x83 => {
            let n = usize::from(first & 0x7f);
            let (bytes, rest) = rest
                .split_at_checked(n)
                .ok_or(DerError::Malformed("short length"))?;
            let len = bytes.iter().fold(0usize, |l, b| (l << 8) | usize::from(*b));
            (len, rest)
        }
        _ => return Err(DerError::Malformed("length")),
    };
    let (value, rest) = rest
        .split_at_checked(len)
        .ok_or(DerError::Malformed("truncated"))?;
    Ok((tag, value, rest))
}

/// The contents of the element with `tag` at the start of `input`, and the rest.
fn expect<'a>(
    tag: u8,
    input: &'a [u8],
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), DerError> {
    match element(input)? {
        (t, value, rest) if t == tag => Ok((value, rest)),
        _ => Err(DerError::Malformed(what)),
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const EXPLICIT_0: u8 = 0xa0;

/// When a CRL was issued (its `thisUpdate`), as `YYYYMMDDHHMMSSZ`: these
/// compare in time order as strings.
pub fn crl_issued(crl: &[u8]) -> Result<String, DerError> {
    let (list, _) = expect(SEQUENCE, crl, "CertificateList")?;
    let (tbs, _) = expect(SEQUENCE, list, "TBSCertList")?;
    let mut rest = tbs;
    if let Ok((INTEGER, _, after)) = element(rest) {
        rest = after; // version
    }
    let (_, rest) = expect(SEQUENCE, rest, "signature algorithm")?;
    let (_, rest) = expect(SEQUENCE, rest, "issuer")?;
    let (tag, time, _) = element(rest)?;
    let time = std::str::from_utf8(time).map_err(|_| DerError::Malformed("thisUpdate"))?;
    let ok = |len| time.len() == len && time.ends_with('Z');
    match tag {
        // RFC 5280 4.1.2.5.1: two-digit years 50..99 are 19xx.
        UTC_TIME if ok(13) => {
            let century = if time < "50" { "20" } else { "19" };
            Ok(format!("{century}{time}"))
        }
        GENERALIZED_TIME if ok(15) => Ok(time.to_owned()),
        _ => Err(DerError::Malformed("thisUpdate")),
    }
}

/// A certificate's serial number (the INTEGER's content bytes).
pub fn cert_serial(cert: &[u8]) -> Result<&[u8], DerError> {
    let (certificate, _) = expect(SEQUENCE, cert, "Certificate")?;
    let (tbs, _) = expect(SEQUENCE, certificate, "TBSCertificate")?;
    let rest = match element(tbs)? {
        (EXPLICIT_0, _, after) => after, // version
        _ => tbs,
    };
    let (serial, _) = expect(INTEGER, rest, "serialNumber")?;
    Ok(serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match value.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(value);
        out
    }

    fn crl_with(time_tag: u8, time: &str) -> Vec<u8> {
        let tbs = [
            tlv(INTEGER, &[1]),
            tlv(SEQUENCE, &[0x06, 0x03, 0x2b, 0x65, 0x70]),
            tlv(SEQUENCE, &[0u8; 200]),
            tlv(time_tag, time.as_bytes()),
        ]
        .concat();
        tlv(
            SEQUENCE,
            &[tlv(SEQUENCE, &tbs), tlv(SEQUENCE, &[])].concat(),
        )
    }

    #[test]
    fn issued_times_compare_in_order_whatever_their_encoding() {
        let utc = crl_issued(&crl_with(UTC_TIME, "261207120000Z")).unwrap();
        assert_eq!(utc, "20261207120000Z");
        let old = crl_issued(&crl_with(UTC_TIME, "991231235959Z")).unwrap();
        assert_eq!(old, "19991231235959Z");
        let far = crl_issued(&crl_with(GENERALIZED_TIME, "20510101000000Z")).unwrap();
        assert!(old < utc && utc < far);
    }

    #[test]
    fn truncated_or_odd_input_is_an_error_not_a_panic() {
        let good = crl_with(UTC_TIME, "261207120000Z");
        for cut in 0..good.len() {
            assert!(crl_issued(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(crl_issued(&crl_with(UTC_TIME, "2612071200Z")).is_err());
        assert!(crl_issued(&crl_with(INTEGER, "261207120000Z")).is_err());
        assert!(crl_issued(&[0x30, 0x84, 1, 2, 3, 4]).is_err());
        assert!(cert_serial(&[0x30, 0x02, 0x30, 0x00]).is_err());
    }
}

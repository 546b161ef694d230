//! Call-home envelopes: the protocol's request and response frames carried
//! through an MQTT broker, signed end to end. The broker only routes; the
//! authority is the operator's signature (key bound to a site-CA client
//! certificate whose subject names the role) and the device's answer
//! signature. Byte layout and rules: docs/callhome.md. Append-only, as the
//! rest of the wire.

use serde::{Deserialize, Serialize};

use super::error::DecodeError;
use super::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};

/// Signatures cover this prefix and then the signed bytes, so a signature
/// made for one purpose (a TLS handshake, a bundle, an answer) never passes
/// for another.
pub const COMMAND_CONTEXT: &[u8] = b"outpost call-home command v1\0";
pub const DEVICE_CONTEXT: &[u8] = b"outpost call-home device v1\0";
/// Largest operator certificate carried in a command: an Ed25519 client
/// certificate from the site CA is ~400 bytes; RSA chains are not ours.
pub const MAX_ENVELOPE_CERT: usize = 2048;
/// Room for an envelope's own fields (names, topic, seq, expiry, signature).
const ENVELOPE_OVERHEAD: usize = 1024;
/// Largest signed command (MQTT payload) a device accepts.
pub const MAX_COMMAND_PAYLOAD: usize = MAX_REQUEST_FRAME + MAX_ENVELOPE_CERT + ENVELOPE_OVERHEAD;
/// Largest signed device message (MQTT payload) a CLI accepts.
pub const MAX_DEVICE_PAYLOAD: usize = MAX_RESPONSE_FRAME + ENVELOPE_OVERHEAD;

/// Whom a command is for: one device by name, or every member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target<'a> {
    /// Tag 0.
    Device(&'a str),
    /// Tag 1.
    Group(&'a str),
}

/// What an operator signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command<'a> {
    #[serde(borrow)]
    pub target: Target<'a>,
    /// The topic it is published on (a copy moved to another topic is refused).
    pub topic: &'a str,
    /// Strictly increasing per operator certificate (the CLI uses Unix
    /// microseconds); the device keeps the highest seen on DATA.
    pub seq: u64,
    /// Unix seconds after which the device refuses it.
    pub expires: u64,
    /// One `RequestFrame`, as on the direct API, in the clear or sealed.
    #[serde(borrow)]
    pub request: Body<'a>,
}

/// A command's request frame: readable by the broker, or sealed to the
/// device's seal key (docs/callhome.md "Sealed commands").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body<'a> {
    /// Tag 0: the `RequestFrame` bytes.
    Plain(#[serde(borrow, with = "bytes")] &'a [u8]),
    /// Tag 1: ChaCha20-Poly1305 of the `RequestFrame` bytes under the
    /// request key agreed between `ephemeral` and the device's seal key.
    Sealed {
        ephemeral: [u8; 32],
        #[serde(borrow, with = "bytes")]
        ciphertext: &'a [u8],
    },
}

impl Body<'_> {
    /// Within the caps: a plain frame up to `MAX_REQUEST_FRAME`, a sealed
    /// one up to that and its tag.
    pub fn within_caps(&self) -> bool {
        match self {
            Body::Plain(b) => b.len() <= MAX_REQUEST_FRAME,
            Body::Sealed { ciphertext, .. } => {
                ciphertext.len() <= MAX_REQUEST_FRAME + super::seal::TAG_LEN
            }
        }
    }
}

/// Which certificate signed a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertRef<'a> {
    /// Tag 0: the operator's certificate (DER), chaining to the site CA.
    Full(#[serde(borrow, with = "bytes")] &'a [u8]),
    /// Tag 1: `cert_id` of a certificate this device accepted earlier in
    /// this boot (~400 bytes less per command on the board's link). A
    /// device that does not know it answers `Refused`; the CLI sends the
    /// command again with `Full`.
    Known(CertId),
}

/// A certificate's id: the first 16 bytes of the SHA-256 of its DER.
pub type CertId = [u8; 16];

pub fn cert_id(der: &[u8]) -> CertId {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut id = CertId::default();
    id.copy_from_slice(digest.as_ref().get(..16).unwrap_or(&[0; 16]));
    id
}

/// Check that an Ed25519 end-entity certificate chains to one of `roots`
/// and is valid at `now` for `usage`: the operator's (client auth) on the
/// board, the board's (server auth) on the CLI.
#[cfg(any(feature = "device", feature = "host"))]
pub fn verify_chain(
    cert: &webpki::EndEntityCert<'_>,
    roots: &[rustls::pki_types::CertificateDer<'_>],
    now: rustls::pki_types::UnixTime,
    usage: webpki::KeyUsage,
    crls: &[&webpki::CertRevocationList<'_>],
) -> Result<(), webpki::Error> {
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    // The site's list speaks for every certificate its CA issued; its age
    // is not held against it (a board offline for a year still refuses).
    let revocation = webpki::RevocationOptionsBuilder::new(crls).ok().map(|b| {
        b.with_depth(webpki::RevocationCheckDepth::EndEntity)
            .with_status_policy(webpki::UnknownStatusPolicy::Deny)
            .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
            .build()
    });
    cert.verify_for_usage(
        &[webpki::ring::ED25519],
        &anchors,
        &[],
        now,
        usage,
        revocation,
        None,
    )
    .map(|_| ())
}

/// What a device answers (in `Refused`) to a `Known` certificate it does not have.
pub const UNKNOWN_CERT: &str = "unknown certificate: send it whole";
/// What a device with `[callhome] require_sealed` answers (in `Refused`) to a
/// plain command.
pub const SEALED_ONLY: &str = "this device takes sealed commands only (send with --seal)";

/// A command as published on `outpost/<device>/req` or `outpost/group/<g>/req`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommand<'a> {
    #[serde(borrow)]
    pub cert: CertRef<'a>,
    /// A postcard `Command`.
    #[serde(with = "bytes")]
    pub command: &'a [u8],
    /// Ed25519 over `COMMAND_CONTEXT || command`.
    #[serde(with = "bytes")]
    pub sig: &'a [u8],
}

/// What a device says through the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceMessage<'a> {
    /// Tag 0: the answer to the command with `seq`: one `ResponseFrame`.
    Answer {
        seq: u64,
        #[serde(borrow, with = "bytes")]
        response: &'a [u8],
    },
    /// Tag 1: connected to the broker (on `/events`, each connect).
    Online {
        boot_id: &'a str,
        version: &'a str,
        slot: &'a str,
    },
    /// Tag 2: an authentic command refused (expired, replayed), on `/events`.
    Refused { seq: u64, reason: &'a str },
    /// Tag 3: retained on `/presence`: `online` when a session is up; the
    /// broker publishes the `online: false` copy (the session's last will)
    /// when the session dies without a goodbye. `since`: Unix seconds by
    /// the board's clock when that session began.
    Presence {
        online: bool,
        boot_id: &'a str,
        version: &'a str,
        slot: &'a str,
        since: u64,
    },
    /// Tag 4: the device's X25519 seal key (retained on `/seal`, each connect).
    SealKey { public: [u8; 32] },
    /// Tag 5: the answer to the sealed command with `seq`: one `ResponseFrame`
    /// sealed with that command's answer key.
    SealedAnswer {
        seq: u64,
        #[serde(borrow, with = "bytes")]
        ciphertext: &'a [u8],
    },
    /// Tag 6: stream message `n` (1, 2, …) answering the sealed command
    /// with `seq` (`logs --follow`): one `ResponseFrame` sealed with that
    /// command's stream key and nonce `n`.
    SealedStream {
        seq: u64,
        n: u32,
        #[serde(borrow, with = "bytes")]
        ciphertext: &'a [u8],
    },
}

/// The signed part of a device message: who says it, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSays<'a> {
    pub device: &'a str,
    #[serde(borrow)]
    pub message: DeviceMessage<'a>,
}

/// A device message as published on `outpost/<device>/resp` or `/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedByDevice<'a> {
    /// A postcard `DeviceSays`.
    #[serde(borrow, with = "bytes")]
    pub says: &'a [u8],
    /// Ed25519 by the device key over `DEVICE_CONTEXT || says`.
    #[serde(with = "bytes")]
    pub sig: &'a [u8],
}

/// The bytes a signature covers: `context || signed`.
pub fn signing_input(context: &[u8], signed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(context.len() + signed.len());
    out.extend_from_slice(context);
    out.extend_from_slice(signed);
    out
}

/// Encode any envelope type (our own in-memory values cannot fail to encode).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decode exactly one envelope value; trailing bytes are an error.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    super::error::decode_exact(bytes, "call-home envelope")
}

/// Topics: `outpost/<device>/{req,resp,events,cert,presence,seal}`, `outpost/group/<g>/req`.
pub mod topic {
    pub const PREFIX: &str = "outpost";
    pub fn req(device: &str) -> String {
        format!("{PREFIX}/{device}/req")
    }
    pub fn resp(device: &str) -> String {
        format!("{PREFIX}/{device}/resp")
    }
    pub fn events(device: &str) -> String {
        format!("{PREFIX}/{device}/events")
    }
    /// Retained: the device's certificate (DER), so a CLI can check answers.
    pub fn cert(device: &str) -> String {
        format!("{PREFIX}/{device}/cert")
    }
    /// Retained: the device's last `Presence` (online, or its last will).
    pub fn presence(device: &str) -> String {
        format!("{PREFIX}/{device}/presence")
    }
    /// Retained: the device's signed `SealKey`, for sealed commands.
    pub fn seal(device: &str) -> String {
        format!("{PREFIX}/{device}/seal")
    }
    pub fn group_req(group: &str) -> String {
        format!("{PREFIX}/group/{group}/req")
    }
    /// Retained: the site's revocation list (DER CRL, signed by the site
    /// CA, so it needs no other signature). `_` is in no hostname: no
    /// board's own `outpost/<name>/…` topics can reach it.
    pub const SITE_CRL: &str = "outpost/_site/crl";
}

/// `&[u8]` as a postcard byte string (varint length + bytes), borrowed.
mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(data: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }
    pub(super) fn deserialize<'de: 'a, 'a, D: Deserializer<'de>>(
        d: D,
    ) -> Result<&'a [u8], D::Error> {
        <&[u8]>::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_envelopes_are_errors() {
        assert!(decode::<SignedCommand>(&[]).is_err());
        assert!(decode::<SignedCommand>(&[5, 1]).is_err());
        assert!(decode::<SignedCommand>(&[0, 0, 0, 0]).is_ok());
        assert!(
            decode::<Command>(&[0, 0, 0, 0, 0, 2, 0]).is_err(),
            "unknown body tag"
        );
        assert!(
            decode::<SignedCommand>(&[0, 0, 0, 0, 0]).is_err(),
            "trailing"
        );
        assert!(
            decode::<SignedCommand>(&[2, 0, 0, 0]).is_err(),
            "unknown cert tag"
        );
        assert!(decode::<Command>(&[2, 0]).is_err(), "unknown target tag");
        assert!(decode::<DeviceSays>(&[1, b'd', 9]).is_err());
    }

    #[test]
    fn bodies_over_their_caps_are_caught() {
        let tag = crate::wire::seal::TAG_LEN;
        let big = vec![0u8; MAX_REQUEST_FRAME + tag + 1];
        assert!(Body::Plain(&big[..MAX_REQUEST_FRAME]).within_caps());
        assert!(!Body::Plain(&big[..MAX_REQUEST_FRAME + 1]).within_caps());
        let sealed = |n: usize| Body::Sealed {
            ephemeral: [0; 32],
            ciphertext: &big[..n],
        };
        assert!(sealed(MAX_REQUEST_FRAME + tag).within_caps());
        assert!(!sealed(MAX_REQUEST_FRAME + tag + 1).within_caps());
    }

    #[test]
    fn sizes_fit_the_caps() {
        let sealed = [0u8; MAX_REQUEST_FRAME + crate::wire::seal::TAG_LEN];
        let topic = format!("outpost/{}/req", "h".repeat(253));
        let cmd = encode(&Command {
            target: Target::Device(&"h".repeat(253)),
            topic: &topic,
            seq: u64::MAX,
            expires: u64::MAX,
            request: Body::Sealed {
                ephemeral: [0xff; 32],
                ciphertext: &sealed,
            },
        });
        let signed = encode(&SignedCommand {
            cert: CertRef::Full(&[0; MAX_ENVELOPE_CERT]),
            command: &cmd,
            sig: &[0; 64],
        });
        assert!(signed.len() <= MAX_COMMAND_PAYLOAD, "{}", signed.len());
        let answer = encode(&DeviceSays {
            device: &"h".repeat(253),
            message: DeviceMessage::SealedAnswer {
                seq: u64::MAX,
                ciphertext: &[0; MAX_RESPONSE_FRAME + crate::wire::seal::TAG_LEN],
            },
        });
        let by_device = encode(&SignedByDevice {
            says: &answer,
            sig: &[0; 64],
        });
        assert!(by_device.len() <= MAX_DEVICE_PAYLOAD, "{}", by_device.len());
    }
}

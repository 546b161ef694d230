//! The signed bundle: one file that carries a slot image to a device.
//!
//! ```text
//! "OUTPOSTB" | format: u8 = 2 | header_len: u32 LE | header (postcard BundleHeader)
//!            | signature: 64 bytes Ed25519 over everything before it | payload
//! ```
//! The slot image is cut into content-defined chunks (FastCDC, by the host):
//! an unchanged file gives the same chunks in the next release even when it
//! moved. The header lists every chunk's SHA-256, length and compressed
//! length; the payload is the chunks in order, each raw-deflated on its own
//! (or stored when that does not shrink it: `clen == len`), so a chunk's
//! bytes do not depend on its neighbours. The same bundle serves a full
//! install (every chunk from the payload) and a delta one (see `delta`: the
//! device takes the chunks it already holds from its slots).
//! Nothing in a bundle is trusted before the signature checks out against a
//! release key the device already has; each chunk is checked before it is
//! written, and the whole image after.

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"OUTPOSTB";
/// 2: content-defined chunks compressed one by one (1 was one deflate stream
/// over fixed 64 KiB chunks; devices of this build no longer read it).
pub const FORMAT_VERSION: u8 = 2;
/// Bytes before the header: magic, format, header length.
pub const PREAMBLE_LEN: usize = 8 + 1 + 4;
pub const SIGNATURE_LEN: usize = 64;
/// A header is the manifest plus ~38 bytes per chunk: 1 MiB allows ~27k
/// chunks (a ~400 MiB image at 16 KiB), far beyond any slot; a larger claim
/// is refused before allocating.
pub const MAX_HEADER_LEN: usize = 1024 * 1024;
/// Chunk lengths allowed: small enough to verify before writing without much
/// memory, large enough that the hash list stays small.
pub const MIN_CHUNK: u32 = 1;
pub const MAX_CHUNK: u32 = 1024 * 1024;
/// Largest slot image a bundle may carry.
pub const MAX_IMAGE: u64 = 1 << 30;

/// One content-defined chunk of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// SHA-256 of the uncompressed chunk: its name.
    pub sha256: [u8; 32],
    /// Uncompressed length.
    pub len: u32,
    /// Length in the payload; equal to `len` means stored, not deflated.
    pub clen: u32,
}

impl ChunkEntry {
    pub fn stored(&self) -> bool {
        self.clen == self.len
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    pub board: String,
    pub version: String,
    /// The oldest running version this bundle may replace (older devices must
    /// take an intermediate release first) unless forced.
    pub min_version: String,
    pub build_time: u64,
    pub image_size: u64,
    pub image_sha256: [u8; 32],
    pub chunks: Vec<ChunkEntry>,
    pub payload_size: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not an Outpost bundle (bad magic)")]
    Magic,
    #[error("bundle format {0} is not supported (this build reads format {FORMAT_VERSION})")]
    Format(u8),
    #[error("bundle is truncated: {0}")]
    Truncated(&'static str),
    #[error("bundle header of {0} bytes exceeds the limit of {MAX_HEADER_LEN}")]
    HeaderTooLarge(usize),
    #[error("bundle header is malformed: {0}")]
    Header(String),
    #[error("bundle signature does not verify with any trusted release key")]
    Signature,
    #[error("bundle is for board `{bundle}`, this device is `{device}`")]
    Board { bundle: String, device: String },
    #[error(
        "bundle version {bundle} is older than the running {running}; use --force to downgrade"
    )]
    Downgrade { bundle: String, running: String },
    #[error(
        "bundle needs at least version {min} running (this device runs {running}); use --force"
    )]
    TooOld { min: String, running: String },
    #[error("chunk {index} does not match its hash")]
    Chunk { index: usize },
    #[error("image does not match its hash")]
    Image,
}

impl BundleHeader {
    /// Structural checks that need no key: sizes and counts agree and are capped.
    pub fn validate(&self) -> Result<(), BundleError> {
        let bad = |m: String| Err(BundleError::Header(m));
        if self.image_size == 0 || self.image_size > MAX_IMAGE {
            return bad(format!(
                "image size {} is outside 1..={MAX_IMAGE}",
                self.image_size
            ));
        }
        let (mut image, mut payload) = (0u64, 0u64);
        for (i, c) in self.chunks.iter().enumerate() {
            if !(MIN_CHUNK..=MAX_CHUNK).contains(&c.len) || c.clen == 0 || c.clen > c.len {
                return bad(format!(
                    "chunk {i}: length {} / {} compressed is outside 1..={MAX_CHUNK}",
                    c.len, c.clen
                ));
            }
            image += u64::from(c.len);
            payload += u64::from(c.clen);
        }
        if image != self.image_size || payload != self.payload_size {
            return bad(format!(
                "chunks add up to {image} bytes ({payload} compressed), the header says {} ({})",
                self.image_size, self.payload_size
            ));
        }
        for (what, v) in [
            ("board", &self.board),
            ("version", &self.version),
            ("min_version", &self.min_version),
        ] {
            if v.is_empty() || v.len() > 64 {
                return bad(format!("{what} must be 1 to 64 characters"));
            }
        }
        Ok(())
    }

    /// Where each chunk starts in the image and in the payload.
    pub fn offsets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.chunks.iter().scan((0u64, 0u64), |at, c| {
            let here = *at;
            at.0 += u64::from(c.len);
            at.1 += u64::from(c.clen);
            Some(here)
        })
    }

    /// The header alone (postcard), as the signed part carries it.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// Decode the header of a signed part *without* checking its signature:
/// for the chunk list a device keeps of a slot (a hint: every chunk read
/// through it is checked against a signed header before it is used).
pub fn parse_unsigned(start: &[u8]) -> Result<BundleHeader, BundleError> {
    let signed_len = signed_part_len(start)?;
    decode_header(
        start
            .get(PREAMBLE_LEN..signed_len)
            .ok_or(BundleError::Truncated("header"))?,
    )
}

fn decode_header(body: &[u8]) -> Result<BundleHeader, BundleError> {
    let (header, rest): (BundleHeader, _) =
        postcard::take_from_bytes(body).map_err(|e| BundleError::Header(e.to_string()))?;
    if !rest.is_empty() {
        return Err(BundleError::Header(
            "trailing bytes after the header".into(),
        ));
    }
    header.validate()?;
    Ok(header)
}

/// Serialize the signed part (preamble + header); the caller signs it.
pub fn encode_signed_part(header: &BundleHeader) -> Vec<u8> {
    let body = header.encode();
    let mut out = Vec::with_capacity(PREAMBLE_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// How long the signed part is, from the preamble alone (read that many
/// bytes, plus the signature, before calling `parse`).
pub fn signed_part_len(preamble: &[u8]) -> Result<usize, BundleError> {
    let magic = preamble
        .get(..8)
        .ok_or(BundleError::Truncated("preamble"))?;
    if magic != MAGIC {
        return Err(BundleError::Magic);
    }
    let format = *preamble.get(8).ok_or(BundleError::Truncated("preamble"))?;
    if format != FORMAT_VERSION {
        return Err(BundleError::Format(format));
    }
    let len_bytes: [u8; 4] = preamble
        .get(9..13)
        .and_then(|b| b.try_into().ok())
        .ok_or(BundleError::Truncated("preamble"))?;
    let len = usize::try_from(u32::from_le_bytes(len_bytes)).unwrap_or(usize::MAX);
    if len > MAX_HEADER_LEN {
        return Err(BundleError::HeaderTooLarge(len));
    }
    Ok(PREAMBLE_LEN + len)
}

/// Parse and verify the start of a bundle (`signed part ‖ signature`, at
/// least): the signature must verify with one of `keys` (raw 32-byte
/// Ed25519 public keys) before the header is even decoded.
/// Returns the header and the offset where the payload starts.
pub fn parse(start: &[u8], keys: &[[u8; 32]]) -> Result<(BundleHeader, usize), BundleError> {
    let signed_len = signed_part_len(start)?;
    let signed = start
        .get(..signed_len)
        .ok_or(BundleError::Truncated("header"))?;
    let signature = start
        .get(signed_len..signed_len + SIGNATURE_LEN)
        .ok_or(BundleError::Truncated("signature"))?;
    let trusted = keys.iter().any(|key| {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
            .verify(signed, signature)
            .is_ok()
    });
    if !trusted {
        return Err(BundleError::Signature);
    }
    let body = signed
        .get(PREAMBLE_LEN..)
        .ok_or(BundleError::Truncated("header"))?;
    Ok((decode_header(body)?, signed_len + SIGNATURE_LEN))
}

/// Compare dotted numeric versions ("1.10.0" > "1.9.3"); non-numeric parts
/// compare as text. Good enough for release versions we mint ourselves.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let mut pa = a.split(['.', '-', '+']);
    let mut pb = b.split(['.', '-', '+']);
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// May a device running `running` (on `board`) install this bundle?
pub fn check_install(
    header: &BundleHeader,
    board: &str,
    running: &str,
    force: bool,
) -> Result<(), BundleError> {
    if header.board != board {
        return Err(BundleError::Board {
            bundle: header.board.clone(),
            device: board.to_owned(),
        });
    }
    if force {
        return Ok(());
    }
    if version_cmp(&header.version, running).is_lt() {
        return Err(BundleError::Downgrade {
            bundle: header.version.clone(),
            running: running.to_owned(),
        });
    }
    if version_cmp(running, &header.min_version).is_lt() {
        return Err(BundleError::TooOld {
            min: header.min_version.clone(),
            running: running.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    fn key() -> ring::signature::Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn header() -> BundleHeader {
        BundleHeader {
            board: "qemu-virt".into(),
            version: "1.2.0".into(),
            min_version: "1.0.0".into(),
            build_time: 1,
            image_size: 10_000,
            image_sha256: [1; 32],
            chunks: vec![
                ChunkEntry {
                    sha256: [2; 32],
                    len: 4000,
                    clen: 2,
                },
                ChunkEntry {
                    sha256: [3; 32],
                    len: 6000,
                    clen: 3,
                },
            ],
            payload_size: 5,
        }
    }

    fn signed(h: &BundleHeader, k: &ring::signature::Ed25519KeyPair) -> Vec<u8> {
        let mut out = encode_signed_part(h);
        let sig = k.sign(&out);
        out.extend_from_slice(sig.as_ref());
        out.extend_from_slice(b"abcde");
        out
    }

    fn pubkey(k: &ring::signature::Ed25519KeyPair) -> [u8; 32] {
        k.public_key().as_ref().try_into().unwrap()
    }

    #[test]
    fn malformed_bundles_are_refused() {
        let k = key();
        let good = signed(&header(), &k);
        let keys = [pubkey(&k)];
        assert_eq!(
            parse(b"NOTABUND\x01\0\0\0\0", &keys),
            Err(BundleError::Magic)
        );
        let mut v1 = good.clone();
        v1[8] = 1;
        assert_eq!(parse(&v1, &keys), Err(BundleError::Format(1)));
        let mut huge = good.clone();
        huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse(&huge, &keys),
            Err(BundleError::HeaderTooLarge(_))
        ));
        for n in 0..good.len() - 5 {
            assert!(parse(&good[..n], &keys).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn signature_is_checked_before_the_header_is_trusted() {
        let (k, other) = (key(), key());
        let good = signed(&header(), &k);
        let (h, payload_at) = parse(&good, &[pubkey(&other), pubkey(&k)]).unwrap();
        assert_eq!(h, header());
        assert_eq!(&good[payload_at..], b"abcde");
        assert_eq!(h.offsets().collect::<Vec<_>>(), [(0, 0), (4000, 2)]);
        assert_eq!(parse_unsigned(&good).unwrap(), h);
        assert_eq!(parse(&good, &[pubkey(&other)]), Err(BundleError::Signature));
        assert_eq!(parse(&good, &[]), Err(BundleError::Signature));
        let mut tampered = good.clone();
        tampered[PREAMBLE_LEN + 2] ^= 1;
        assert_eq!(parse(&tampered, &[pubkey(&k)]), Err(BundleError::Signature));
    }

    #[test]
    fn inconsistent_headers_are_refused_even_when_signed() {
        let k = key();
        let mut h = header();
        h.chunks.pop();
        assert!(matches!(
            parse(&signed(&h, &k), &[pubkey(&k)]),
            Err(BundleError::Header(_))
        ));
        let mut h = header();
        h.chunks[1].clen = 7000;
        assert!(matches!(
            parse(&signed(&h, &k), &[pubkey(&k)]),
            Err(BundleError::Header(_))
        ));
    }

    #[test]
    fn versions_and_boards() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("1.10.0", "1.9.3"), Greater);
        assert_eq!(version_cmp("1.2", "1.2.0"), Less);
        assert_eq!(version_cmp("0.1.0", "0.1.0"), Equal);
        let h = header();
        assert!(check_install(&h, "qemu-virt", "1.1.0", false).is_ok());
        assert!(matches!(
            check_install(&h, "rpi4", "1.1.0", true),
            Err(BundleError::Board { .. })
        ));
        assert!(matches!(
            check_install(&h, "qemu-virt", "1.3.0", false),
            Err(BundleError::Downgrade { .. })
        ));
        assert!(check_install(&h, "qemu-virt", "1.3.0", true).is_ok());
        assert!(matches!(
            check_install(&h, "qemu-virt", "0.9.0", false),
            Err(BundleError::TooOld { .. })
        ));
    }
}

//! Sealed call-home payloads: confidentiality from the broker operator.
//! The CLI agrees an X25519 secret between a fresh ephemeral key and the
//! device's static seal key; HKDF-SHA256 turns it into two ChaCha20-Poly1305
//! keys, one for the request and one for its answer. Each key encrypts
//! exactly one message, so the nonce is a constant zero. The X25519 step
//! itself is each side's (ring's ephemeral agreement on the CLI, a static
//! secret on the device); this module is the shared rest. docs/callhome.md
//! "Sealed commands".

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf::{KeyType, Salt, HKDF_SHA256};

/// X25519 public keys and shared secrets.
pub const KEY_LEN: usize = 32;
/// The Poly1305 tag a sealed body is longer than its plaintext.
pub const TAG_LEN: usize = 16;
/// HKDF info prefix: versioned, so a later scheme never derives the same keys.
pub const SEAL_INFO: &[u8] = b"outpost call-home seal v1\0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// Wrong key, tampered bytes, or a request body opened as an answer.
    #[error("sealed body does not open (sealed to another key, or altered)")]
    Open,
    #[error("sealed body of {0} bytes is over the cap")]
    TooLarge(usize),
    /// A low-order peer key gives an all-zero secret an observer can compute.
    #[error("key agreement failed (not a usable X25519 public key)")]
    Agreement,
}

/// One 32-byte ChaCha20-Poly1305 key, used for exactly one message:
/// `seal` takes it by value and it is not `Clone`, so a second message can
/// never go out under the same key and nonce. (A stream of answers to one
/// command would need keys of its own, not this one.)
pub struct OneUseKey([u8; KEY_LEN]);

impl std::fmt::Debug for OneUseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneUseKey(..)")
    }
}

/// The key of a stream of answers to one sealed command (`logs --follow`):
/// the first answer goes under the one-use answer key, then message `n`
/// (1, 2, …) under this key with nonce `n`. The board counts up and never
/// repeats an `n`, so no (key, nonce) pair is used twice.
pub struct StreamKey([u8; KEY_LEN]);

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(..)")
    }
}

/// The keys of one sealed command.
#[derive(Debug)]
pub struct SealKeys {
    pub request: OneUseKey,
    pub answer: OneUseKey,
    pub stream: StreamKey,
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl SealKeys {
    /// Derive from the X25519 output; salt = ephemeral public ‖ device public,
    /// so the keys are bound to both ends of this one agreement.
    pub fn derive(
        shared: &[u8; KEY_LEN],
        ephemeral: &[u8; KEY_LEN],
        device: &[u8; KEY_LEN],
    ) -> Result<Self, SealError> {
        if shared.iter().all(|b| *b == 0) {
            return Err(SealError::Agreement);
        }
        let mut salt = [0u8; 2 * KEY_LEN];
        let (e, d) = salt.split_at_mut(KEY_LEN);
        e.copy_from_slice(ephemeral);
        d.copy_from_slice(device);
        let prk = Salt::new(HKDF_SHA256, &salt).extract(shared);
        let expand = |what: &[u8]| -> Result<OneUseKey, SealError> {
            let mut key = [0u8; KEY_LEN];
            prk.expand(&[SEAL_INFO, what], Len(KEY_LEN))
                .and_then(|okm| okm.fill(&mut key))
                .map_err(|_| SealError::Agreement)?;
            Ok(OneUseKey(key))
        };
        Ok(Self {
            request: expand(b"request")?,
            answer: expand(b"answer")?,
            stream: StreamKey(expand(b"stream")?.0),
        })
    }
}

impl OneUseKey {
    /// Encrypt; the ciphertext is the plaintext and a 16-byte tag. Uses
    /// the key up.
    pub fn seal(self, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        seal_under(&self.0, zero_nonce(), plain)
    }

    /// Decrypt a body of at most `cap` plaintext bytes (checked first).
    pub fn open(&self, sealed: &[u8], cap: usize) -> Result<Vec<u8>, SealError> {
        open_under(&self.0, zero_nonce(), sealed, cap)
    }
}

impl StreamKey {
    /// Encrypt stream message `n` (the caller never repeats an `n`).
    pub fn seal(&self, n: u32, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        seal_under(&self.0, counter_nonce(n), plain)
    }

    /// Decrypt stream message `n` of at most `cap` plaintext bytes.
    pub fn open(&self, n: u32, sealed: &[u8], cap: usize) -> Result<Vec<u8>, SealError> {
        open_under(&self.0, counter_nonce(n), sealed, cap)
    }
}

fn seal_under(key: &[u8; KEY_LEN], nonce: Nonce, plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut out = plain.to_vec();
    // Fails only past ChaCha20's 256 GiB limit: our caps are KiB.
    aead(key)?
        .seal_in_place_append_tag(nonce, Aad::empty(), &mut out)
        .map_err(|_| SealError::TooLarge(plain.len()))?;
    Ok(out)
}

fn open_under(
    key: &[u8; KEY_LEN],
    nonce: Nonce,
    sealed: &[u8],
    cap: usize,
) -> Result<Vec<u8>, SealError> {
    if sealed.len() > cap.saturating_add(TAG_LEN) {
        return Err(SealError::TooLarge(sealed.len()));
    }
    let mut buf = sealed.to_vec();
    let n = aead(key)?
        .open_in_place(nonce, Aad::empty(), &mut buf)
        .map_err(|_| SealError::Open)?
        .len();
    buf.truncate(n);
    Ok(buf)
}

fn aead(key: &[u8; KEY_LEN]) -> Result<LessSafeKey, SealError> {
    // 32 bytes is ChaCha20-Poly1305's key length: this does not fail.
    UnboundKey::new(&CHACHA20_POLY1305, key)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Agreement)
}

/// Each key seals one message: a fixed nonce never repeats under one key.
fn zero_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0u8; NONCE_LEN])
}

/// Stream message `n`'s nonce: `n` big-endian in the last four bytes.
fn counter_nonce(n: u32) -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[NONCE_LEN - 4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

/// The CLI's side: a fresh ephemeral X25519 key agreed with `device`.
/// Returns the ephemeral public key and the derived keys.
pub fn agree_ephemeral(device: &[u8; KEY_LEN]) -> Result<([u8; KEY_LEN], SealKeys), SealError> {
    use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
    let rng = ring::rand::SystemRandom::new();
    let private = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| SealError::Agreement)?;
    let mut ephemeral = [0u8; KEY_LEN];
    let public = private
        .compute_public_key()
        .map_err(|_| SealError::Agreement)?;
    if public.as_ref().len() != KEY_LEN {
        return Err(SealError::Agreement);
    }
    ephemeral.copy_from_slice(public.as_ref());
    let mut shared = [0u8; KEY_LEN];
    agreement::agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, device), |s| {
        if s.len() == KEY_LEN {
            shared.copy_from_slice(s);
        }
    })
    .map_err(|_| SealError::Agreement)?;
    let keys = SealKeys::derive(&shared, &ephemeral, device)?;
    Ok((ephemeral, keys))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys(shared: u8) -> SealKeys {
        SealKeys::derive(&[shared; 32], &[1; 32], &[2; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_every_kind_of_wrong_key_fails() {
        let k = keys(9);
        let sealed = keys(9).request.seal(b"status please").unwrap();
        assert_eq!(sealed.len(), 13 + TAG_LEN);
        assert!(!sealed.windows(6).any(|w| w == b"status"));
        assert_eq!(k.request.open(&sealed, 100).unwrap(), b"status please");
        // The answer key cannot open the request, nor the reverse.
        assert_eq!(k.answer.open(&sealed, 100), Err(SealError::Open));
        let answer = keys(9).answer.seal(b"ok").unwrap();
        assert_eq!(k.request.open(&answer, 100), Err(SealError::Open));
        assert_eq!(k.answer.open(&answer, 100).unwrap(), b"ok");
        // Another agreement (another device key) derives other keys.
        assert_eq!(keys(8).request.open(&sealed, 100), Err(SealError::Open));
        let other_salt = SealKeys::derive(&[9; 32], &[1; 32], &[3; 32]).unwrap();
        assert_eq!(other_salt.request.open(&sealed, 100), Err(SealError::Open));
        // Any flipped bit, or a cut, is refused.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x80;
            assert_eq!(k.request.open(&bad, 100), Err(SealError::Open), "byte {i}");
        }
        for n in 0..sealed.len() {
            assert!(k.request.open(&sealed[..n], 100).is_err());
        }
        // The cap is checked before anything else.
        assert_eq!(k.request.open(&sealed, 12), Err(SealError::TooLarge(29)));
        assert_eq!(k.request.open(&sealed, 13).unwrap().len(), 13);
    }

    #[test]
    fn stream_messages_open_only_under_their_number_and_key() {
        let k = keys(9);
        let m1 = k.stream.seal(1, b"line one").unwrap();
        let m2 = k.stream.seal(2, b"line one").unwrap();
        assert_ne!(m1, m2, "another nonce, another ciphertext");
        assert_eq!(k.stream.open(1, &m1, 100).unwrap(), b"line one");
        assert_eq!(k.stream.open(2, &m1, 100), Err(SealError::Open));
        assert_eq!(keys(8).stream.open(1, &m1, 100), Err(SealError::Open));
        // Neither one-use key opens a stream message, nor the reverse.
        assert_eq!(k.answer.open(&m1, 100), Err(SealError::Open));
        let first = keys(9).answer.seal(b"tail").unwrap();
        assert_eq!(k.stream.open(0, &first, 100), Err(SealError::Open));
        assert_eq!(k.stream.open(1, &m1, 7), Err(SealError::TooLarge(24)));
    }

    #[test]
    fn an_all_zero_secret_is_refused() {
        assert_eq!(
            SealKeys::derive(&[0; 32], &[1; 32], &[2; 32]).unwrap_err(),
            SealError::Agreement
        );
        // ring refuses a low-order peer key (here: zero) outright.
        assert!(agree_ephemeral(&[0; 32]).is_err());
    }

    #[test]
    fn ephemeral_agreements_are_fresh() {
        let device = [7u8; 32];
        let (e1, k1) = agree_ephemeral(&device).unwrap();
        let (e2, k2) = agree_ephemeral(&device).unwrap();
        assert_ne!(e1, e2);
        let sealed = k1.request.seal(b"x").unwrap();
        assert_eq!(k2.request.open(&sealed, 10), Err(SealError::Open));
        assert_ne!(sealed, k2.request.seal(b"x").unwrap());
    }
}

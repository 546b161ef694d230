//! The board's side of sealed commands: its static X25519 seal key, kept on
//! DATA so CLIs that read the retained key earlier can still seal to it after
//! a reboot, and the opening of a command's body (docs/callhome.md "Sealed
//! commands"). ring offers X25519 only with one-use private keys, so the
//! static key is x25519-dalek's.

use std::borrow::Cow;
use std::path::Path;

use x25519_dalek::{PublicKey, StaticSecret};

use super::verify::{Refusal, Verified};
use crate::wire::envelope::Body;
use crate::wire::seal::{OneUseKey, SealKeys, StreamKey, KEY_LEN};
use crate::wire::MAX_REQUEST_FRAME;

/// What a sealed command's answers are sealed with: its one answer, and the
/// messages of a stream (`logs --follow`).
pub type AnswerKeys = (OneUseKey, StreamKey);

/// The seal key on DATA: 32 random bytes, mode 0600.
pub const KEY_FILE: &str = "state/callhome-x25519.key";

pub struct SealBox {
    /// None only if the system had no randomness for a new key: then no
    /// key is published and sealed commands are refused, never sealed to a
    /// guessable key.
    key: Option<(StaticSecret, [u8; KEY_LEN])>,
    /// `[callhome] require_sealed`: plain commands are refused.
    require: bool,
}

impl SealBox {
    /// The key in `path`, or a new one written there (durably, 0600). A
    /// file of another size is replaced; a key that cannot be written still
    /// serves this boot (CLIs read the new public key at the next connect).
    pub fn load_or_create(path: &Path, require: bool) -> Self {
        let bytes = match read_key(path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("callhome: {}: {e}: making a new seal key", path.display());
                }
                new_key(path)
            }
        };
        let key = bytes.map(|b| {
            let secret = StaticSecret::from(b);
            let public = PublicKey::from(&secret).to_bytes();
            (secret, public)
        });
        Self { key, require }
    }

    /// What the board publishes on `/seal` (none: no key this boot).
    pub fn public(&self) -> Option<[u8; KEY_LEN]> {
        self.key.as_ref().map(|(_, p)| *p)
    }

    /// The request frame of a verified command, and the keys its answers
    /// are sealed with: the first answer's, and a stream's (sealed commands
    /// only).
    pub fn open<'a>(
        &self,
        v: &Verified<'a>,
    ) -> Result<(Cow<'a, [u8]>, Option<AnswerKeys>), Refusal> {
        match v.body {
            Body::Plain(_) if self.require => Err(Refusal::NotSealed { seq: v.seq }),
            Body::Plain(frame) => Ok((Cow::Borrowed(frame), None)),
            Body::Sealed {
                ephemeral,
                ciphertext,
            } => {
                let refused = || Refusal::DoesNotOpen { seq: v.seq };
                let (secret, public) = self.key.as_ref().ok_or_else(refused)?;
                let shared = secret.diffie_hellman(&PublicKey::from(ephemeral));
                if !shared.was_contributory() {
                    return Err(refused());
                }
                let keys = SealKeys::derive(shared.as_bytes(), &ephemeral, public)
                    .map_err(|_| refused())?;
                let frame = keys
                    .request
                    .open(ciphertext, MAX_REQUEST_FRAME)
                    .map_err(|_| refused())?;
                Ok((Cow::Owned(frame), Some((keys.answer, keys.stream))))
            }
        }
    }
}

/// Exactly `KEY_LEN` bytes from `path` (reads at most one byte more).
fn read_key(path: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    use std::io::Read as _;
    let mut buf = Vec::with_capacity(KEY_LEN + 1);
    std::fs::File::open(path)?
        .take(KEY_LEN as u64 + 1)
        .read_to_end(&mut buf)?;
    <[u8; KEY_LEN]>::try_from(buf.as_slice()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a {KEY_LEN}-byte key"),
        )
    })
}

/// 32 fresh random bytes, written to `path` (a failed write is logged).
fn new_key(path: &Path) -> Option<[u8; KEY_LEN]> {
    let mut bytes = [0u8; KEY_LEN];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        tracing::error!("callhome: no randomness for a seal key: sealed commands refused");
        return None;
    }
    if let Err(e) = crate::device::durable::write_private(path, &bytes) {
        tracing::warn!("callhome: writing {}: {e}", path.display());
    }
    Some(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::device::callhome::replay::KeyId;
    use crate::wire::seal::agree_ephemeral;
    use crate::wire::Role;

    fn verified(body: Body<'_>) -> Verified<'_> {
        Verified {
            role: Role::Admin,
            key: KeyId::default(),
            seq: 42,
            body,
        }
    }

    #[test]
    fn a_sealed_request_opens_and_its_answer_key_is_the_clis() {
        let tmp = tempfile::tempdir().unwrap();
        let board = SealBox::load_or_create(&tmp.path().join(KEY_FILE), false);
        let (ephemeral, cli) = agree_ephemeral(&board.public().unwrap()).unwrap();
        let ciphertext = cli.request.seal(b"frame").unwrap();
        let (frame, answer) = board
            .open(&verified(Body::Sealed {
                ephemeral,
                ciphertext: &ciphertext,
            }))
            .unwrap();
        assert_eq!(&*frame, b"frame");
        let (answer, stream) = answer.unwrap();
        let sealed_answer = answer.seal(b"answer").unwrap();
        assert_eq!(cli.answer.open(&sealed_answer, 64).unwrap(), b"answer");
        let line = stream.seal(1, b"line").unwrap();
        assert_eq!(cli.stream.open(1, &line, 64).unwrap(), b"line");
        // Plain commands pass without an answer key, unless sealing is required.
        let (frame, key) = board.open(&verified(Body::Plain(b"p"))).unwrap();
        assert_eq!((&*frame, key.is_none()), (&b"p"[..], true));
        let strict = SealBox::load_or_create(&tmp.path().join(KEY_FILE), true);
        assert_eq!(
            strict.open(&verified(Body::Plain(b"p"))).unwrap_err(),
            Refusal::NotSealed { seq: 42 }
        );
    }

    #[test]
    fn tampered_or_misaddressed_sealed_requests_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let board = SealBox::load_or_create(&tmp.path().join("a"), false);
        let other = SealBox::load_or_create(&tmp.path().join("b"), false);
        let (ephemeral, cli) = agree_ephemeral(&other.public().unwrap()).unwrap();
        let ciphertext = cli.request.seal(b"frame").unwrap();
        let sealed = |c: &[u8], e: [u8; 32]| {
            board
                .open(&verified(Body::Sealed {
                    ephemeral: e,
                    ciphertext: c,
                }))
                .map(|_| ())
        };
        let refused = Err(Refusal::DoesNotOpen { seq: 42 });
        // Sealed to another board's key.
        assert_eq!(sealed(&ciphertext, ephemeral), refused);
        let (ephemeral, cli) = agree_ephemeral(&board.public().unwrap()).unwrap();
        let good = cli.request.seal(b"frame").unwrap();
        assert_eq!(sealed(&good, ephemeral), Ok(()));
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert_eq!(sealed(&bad, ephemeral), refused);
        let mut eph = ephemeral;
        eph[3] ^= 1;
        assert_eq!(sealed(&good, eph), refused);
        // Sealed with the answer key instead of the request key.
        let swapped = cli.answer.seal(b"frame").unwrap();
        assert_eq!(sealed(&swapped, ephemeral), refused);
        // A low-order ephemeral key (all zero) gives no secret.
        assert_eq!(sealed(&good, [0; 32]), refused);
        // Over the cap: refused before any work.
        let huge = vec![0u8; MAX_REQUEST_FRAME + 17];
        assert_eq!(sealed(&huge, ephemeral), refused);
        // No key this boot (no randomness): sealed commands are refused.
        let keyless = SealBox {
            key: None,
            require: false,
        };
        assert_eq!(keyless.public(), None);
        let v = verified(Body::Sealed {
            ephemeral,
            ciphertext: &good,
        });
        assert_eq!(keyless.open(&v).map(|_| ()), refused);
    }

    #[test]
    fn the_key_file_is_made_once_kept_and_a_bad_one_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(KEY_FILE);
        let first = SealBox::load_or_create(&path, false).public();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), KEY_LEN);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(SealBox::load_or_create(&path, false).public(), first);
        // Wrong size: a new key, written whole.
        std::fs::write(&path, b"short").unwrap();
        let again = SealBox::load_or_create(&path, false).public();
        assert_ne!(again, first);
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_LEN);
        assert_eq!(SealBox::load_or_create(&path, false).public(), again);
        // Unwritable place: still a key for this boot, no panic.
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let lost = SealBox::load_or_create(&tmp.path().join("file/key"), false);
        assert_ne!(lost.public().unwrap(), [0; 32]);
        // A huge file is not read whole, and is replaced.
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        assert_ne!(SealBox::load_or_create(&path, false).public(), again);
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_LEN);
    }
}

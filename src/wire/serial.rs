//! The serial link: how the management API's TLS byte stream crosses a UART.
//!
//! Two layers, both sans-io:
//!
//! * **Frames.** `COBS(payload ‖ CRC-32(payload) LE) ‖ 0x00`. COBS removes
//!   every zero byte, so `0x00` marks frame ends and a receiver that starts
//!   mid-frame, or sees garbage, is back in step at the next `0x00`. The CRC
//!   catches what noise does to the bytes in between. [`Decoder`] works in one
//!   fixed buffer and never allocates or panics, whatever it is fed.
//! * **Link messages**, one per frame, first byte = kind: [`LinkMsg::Data`]
//!   carries a piece of the TLS byte stream; `Open`/`Opened`/`Close` give the
//!   connectionless line a start and an end of a session, so a client that
//!   died mid-session does not wedge the line for the next one.
//!
//! The link does not retransmit: TLS needs an ordered, lossless stream, so a
//! frame lost to noise ends the TLS session and the client opens a new one
//! (resuming the TLS session, which costs far fewer bytes than a full
//! handshake). `docs/protocol.md` ("Serial transport") is the spec.

use thiserror::Error;

/// The frame CRC: CRC-32/ISO-HDLC, the one zlib and U-Boot compute (also
/// the boot-state env's, see `bootstate::env`), bytewise with a 1 KiB table.
pub(crate) static CRC32: crc::Crc<u32, crc::Table<1>> =
    crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISO_HDLC);

/// Largest piece of the TLS stream in one `Data` frame. TLS records are up to
/// 16 KiB + 22 bytes; we cut them into 1 KiB link frames so the receiver's
/// buffer stays small (PID 1 holds one per line), a frame takes < 0.1 s at
/// 115 200 baud, and CRC-32 still detects every error of up to 3 flipped bits
/// in it (its Hamming distance is 4 up to ~11 KiB). Overhead: ≤ 11 bytes per
/// full frame (delimiter, kind, CRC, COBS codes), about 1 %.
pub const MAX_LINK_DATA: usize = 1024;
/// Largest frame payload: a kind byte plus the largest body (`Data`).
pub const MAX_LINK_PAYLOAD: usize = 1 + MAX_LINK_DATA;
/// Bytes of CRC after the payload.
pub const CRC_LEN: usize = 4;
/// Largest decoded frame (payload and CRC): the decoder's buffer size.
pub const MAX_LINK_FRAME: usize = MAX_LINK_PAYLOAD + CRC_LEN;
/// Largest frame on the line: COBS adds one code byte per 254 bytes (and one
/// at the start), plus the delimiter.
pub const MAX_ENCODED_FRAME: usize = MAX_LINK_FRAME + MAX_LINK_FRAME / 254 + 2;
/// The byte that ends every frame (and that COBS removes from inside it).
pub const DELIMITER: u8 = 0x00;
/// A COBS block holds at most 254 data bytes (code byte 0xFF).
const MAX_COBS_CODE: u8 = 0xFF;

/// The decoder for link frames: room for the largest frame.
pub type LinkDecoder = Decoder<MAX_LINK_FRAME>;

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BadFrame {
    /// A COBS block announced more bytes than came before the delimiter.
    #[error("frame cut short (COBS block incomplete)")]
    Truncated,
    /// Fewer bytes than a CRC and a one-byte payload.
    #[error("frame too short")]
    Short,
    /// The CRC does not match: bytes were damaged on the line.
    #[error("CRC mismatch")]
    Crc,
}

/// What one [`Decoder::feed`] call produced. Every variant but `Consumed`
/// carries the input not yet looked at: feed it next.
#[derive(Debug, PartialEq, Eq)]
pub enum Feed<'buf, 'input> {
    /// All input consumed, no whole frame yet.
    Consumed,
    /// A whole frame with a good CRC; `payload` excludes the CRC.
    Frame {
        payload: &'buf [u8],
        rest: &'input [u8],
    },
    /// The frame being received outgrew the buffer; it is dropped and the
    /// decoder skips to the next delimiter.
    TooLong { rest: &'input [u8] },
    /// A frame ended but is damaged; it is dropped.
    Bad { why: BadFrame, rest: &'input [u8] },
}

/// Accumulates one frame at a time, decoding COBS as bytes arrive, in a
/// buffer of `N` bytes (payload + CRC). No allocation, no panics.
pub struct Decoder<const N: usize> {
    buf: heapless::Vec<u8, N>,
    /// A byte other than the delimiter has come since the last delimiter.
    started: bool,
    /// Data bytes left in the current COBS block; 0 = next byte is a code.
    left: u8,
    /// The current block's code was < 0xFF: a zero follows its data (written
    /// when the next block starts; the last block's zero is not data).
    zero_pending: bool,
    /// Skipping to the next delimiter after a frame overflowed.
    skipping: bool,
    /// The last call returned a frame that borrows `buf`: clear it first.
    delivered: bool,
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder<N> {
    pub const fn new() -> Self {
        Self {
            buf: heapless::Vec::new(),
            started: false,
            left: 0,
            zero_pending: false,
            skipping: false,
            delivered: false,
        }
    }

    /// Drop any partial frame.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.started = false;
        self.left = 0;
        self.zero_pending = false;
        self.skipping = false;
        self.delivered = false;
    }

    /// Feed bytes from the line; returns at the first frame, error or the end
    /// of the input. A frame borrows the decoder until the next call.
    pub fn feed<'buf, 'input>(&'buf mut self, input: &'input [u8]) -> Feed<'buf, 'input> {
        if self.delivered {
            self.reset();
        }
        let mut rest = input;
        while let Some((&byte, after)) = rest.split_first() {
            rest = after;
            if byte == DELIMITER {
                if self.skipping || !self.started {
                    // The end of a dropped frame, or an empty frame (two
                    // delimiters in a row: idle filler or a resync marker).
                    self.reset();
                    continue;
                }
                return self.finish(rest);
            }
            if self.skipping {
                continue;
            }
            self.started = true;
            let pushed = if self.left == 0 {
                // A code byte; the previous block's implied zero comes first.
                let ok = !self.zero_pending || self.buf.push(0).is_ok();
                self.left = byte.saturating_sub(1); // byte != DELIMITER (0)
                self.zero_pending = byte < MAX_COBS_CODE;
                ok
            } else {
                self.left -= 1;
                self.buf.push(byte).is_ok()
            };
            if !pushed {
                self.reset();
                self.skipping = true;
                return Feed::TooLong { rest };
            }
        }
        Feed::Consumed
    }

    fn finish<'buf, 'input>(&'buf mut self, rest: &'input [u8]) -> Feed<'buf, 'input> {
        let why = if self.left != 0 {
            Some(BadFrame::Truncated)
        } else {
            match self.buf.split_last_chunk::<CRC_LEN>() {
                None => Some(BadFrame::Short),
                Some(([], _)) => Some(BadFrame::Short),
                Some((payload, crc)) if CRC32.checksum(payload) != u32::from_le_bytes(*crc) => {
                    Some(BadFrame::Crc)
                }
                Some(_) => None,
            }
        };
        if let Some(why) = why {
            self.reset();
            return Feed::Bad { why, rest };
        }
        // Cleared on the next call, once the caller is done with the payload.
        self.delivered = true;
        let payload = self
            .buf
            .split_last_chunk::<CRC_LEN>()
            .map_or(&[][..], |(payload, _)| payload);
        Feed::Frame { payload, rest }
    }
}

/// A frame payload larger than [`MAX_LINK_PAYLOAD`], or a link message that
/// does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LinkError {
    #[error("link payload of {len} bytes exceeds the limit of {MAX_LINK_PAYLOAD}")]
    TooLong { len: usize },
    #[error("empty link frame")]
    Empty,
    #[error("unknown link message kind {0}")]
    UnknownKind(u8),
    #[error("malformed link message of kind {0}")]
    Malformed(u8),
}

/// Append one frame, `COBS(payload ‖ CRC-32 LE) ‖ 0x00`, to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
    encode_parts(&[], payload, out)
}

/// [`encode_frame`] of `head ‖ body` without joining them first.
fn encode_parts(head: &[u8], body: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
    let len = head.len() + body.len();
    if len == 0 {
        return Err(LinkError::Empty);
    }
    if len > MAX_LINK_PAYLOAD {
        return Err(LinkError::TooLong { len });
    }
    let mut crc = CRC32.digest();
    crc.update(head);
    crc.update(body);
    let crc = crc.finalize().to_le_bytes();
    out.reserve(len + CRC_LEN + len / 254 + 2);
    let bytes = head.iter().chain(body).chain(crc.iter()).copied();
    cobs_encode(bytes, out);
    out.push(DELIMITER);
    Ok(())
}

/// COBS (Cheshire & Baker) as on Wikipedia: a block of 254 non-zero bytes
/// (code 0xFF) at the very end is not followed by an empty block.
fn cobs_encode(bytes: impl Iterator<Item = u8>, out: &mut Vec<u8>) {
    // Where the open block's code byte goes, and its value so far.
    let mut code_at = Some(out.len());
    out.push(0);
    let mut code: u8 = 1;
    for byte in bytes {
        let at = match code_at {
            Some(at) => at,
            None => {
                let at = out.len();
                out.push(0);
                code = 1;
                code_at = Some(at);
                at
            }
        };
        if byte == 0 {
            set_code(out, at, code);
            code_at = Some(out.len());
            out.push(0);
            code = 1;
        } else {
            out.push(byte);
            code += 1;
            if code == MAX_COBS_CODE {
                set_code(out, at, code);
                code_at = None;
            }
        }
    }
    if let Some(at) = code_at {
        set_code(out, at, code);
    }
}

fn set_code(out: &mut [u8], at: usize, code: u8) {
    if let Some(slot) = out.get_mut(at) {
        *slot = code;
    }
}

/// Link message kinds (the first payload byte). Append only; a receiver
/// ignores kinds it does not know.
mod kind {
    pub(super) const DATA: u8 = 0;
    pub(super) const OPEN: u8 = 1;
    pub(super) const OPENED: u8 = 2;
    pub(super) const CLOSE: u8 = 3;
}

/// One link frame's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMsg<'a> {
    /// Kind 0: the next bytes of the session's TLS stream (1..=1024 bytes).
    Data(&'a [u8]),
    /// Kind 1, client → device: end any session on this line and start a new
    /// one. `nonce` (u32 LE) is echoed in `Opened`.
    Open { nonce: u32 },
    /// Kind 2, device → client: the session asked for with `nonce` has begun;
    /// every `Data` after this belongs to it.
    Opened { nonce: u32 },
    /// Kind 3, either way: the session is over (or there is none).
    Close,
}

impl<'a> LinkMsg<'a> {
    /// Decode a frame payload (after the CRC check).
    pub fn decode(payload: &'a [u8]) -> Result<Self, LinkError> {
        let (&kind, body) = payload.split_first().ok_or(LinkError::Empty)?;
        let nonce = |body: &[u8]| match body.split_first_chunk::<4>() {
            Some((nonce, [])) => Ok(u32::from_le_bytes(*nonce)),
            _ => Err(LinkError::Malformed(kind)),
        };
        match kind {
            kind::DATA if body.is_empty() => Err(LinkError::Malformed(kind)),
            kind::DATA => Ok(Self::Data(body)),
            kind::OPEN => Ok(Self::Open {
                nonce: nonce(body)?,
            }),
            kind::OPENED => Ok(Self::Opened {
                nonce: nonce(body)?,
            }),
            kind::CLOSE if body.is_empty() => Ok(Self::Close),
            kind::CLOSE => Err(LinkError::Malformed(kind)),
            other => Err(LinkError::UnknownKind(other)),
        }
    }

    /// Append this message as one whole frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), LinkError> {
        match *self {
            Self::Data([]) => Err(LinkError::Empty),
            Self::Data(bytes) => encode_parts(&[kind::DATA], bytes, out),
            Self::Open { nonce } => encode_parts(&[kind::OPEN], &nonce.to_le_bytes(), out),
            Self::Opened { nonce } => encode_parts(&[kind::OPENED], &nonce.to_le_bytes(), out),
            Self::Close => encode_parts(&[kind::CLOSE], &[], out),
        }
    }
}

/// Append `bytes` of the TLS stream as `Data` frames of at most
/// [`MAX_LINK_DATA`] bytes each (nothing for an empty slice).
pub fn encode_data(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(MAX_LINK_DATA) {
        // Cannot fail: the chunk is 1..=MAX_LINK_DATA bytes.
        let _ = LinkMsg::Data(chunk).encode(out);
    }
}

/// The whole frame for one control message (`Open`, `Opened`, `Close`).
pub fn control_frame(msg: LinkMsg<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    let _ = msg.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame and error `input` produces, in order (payloads copied).
    fn run<const N: usize>(dec: &mut Decoder<N>, input: &[u8]) -> Vec<Result<Vec<u8>, String>> {
        let mut out = Vec::new();
        let mut input = input;
        loop {
            match dec.feed(input) {
                Feed::Consumed => return out,
                Feed::Frame { payload, rest } => {
                    out.push(Ok(payload.to_vec()));
                    input = rest;
                }
                Feed::TooLong { rest } => {
                    out.push(Err("too long".into()));
                    input = rest;
                }
                Feed::Bad { why, rest } => {
                    out.push(Err(why.to_string()));
                    input = rest;
                }
            }
        }
    }

    fn frames<const N: usize>(dec: &mut Decoder<N>, input: &[u8]) -> Vec<Vec<u8>> {
        run(dec, input).into_iter().filter_map(Result::ok).collect()
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, &mut out).unwrap();
        out
    }

    /// xorshift64*: deterministic "random" bytes without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn byte(&mut self) -> u8 {
            self.next().to_le_bytes()[0]
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.byte()).collect()
        }
    }

    fn cobs(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        cobs_encode(data.iter().copied(), &mut out);
        out
    }

    #[test]
    fn cobs_matches_the_reference_examples() {
        // The examples of the COBS article on Wikipedia (without the delimiter).
        assert_eq!(cobs(&[0x00]), [0x01, 0x01]);
        assert_eq!(cobs(&[0x00, 0x00]), [0x01, 0x01, 0x01]);
        assert_eq!(cobs(&[0x00, 0x11, 0x00]), [0x01, 0x02, 0x11, 0x01]);
        assert_eq!(
            cobs(&[0x11, 0x22, 0x00, 0x33]),
            [0x03, 0x11, 0x22, 0x02, 0x33]
        );
        assert_eq!(
            cobs(&[0x11, 0x22, 0x33, 0x44]),
            [0x05, 0x11, 0x22, 0x33, 0x44]
        );
        assert_eq!(
            cobs(&[0x11, 0x00, 0x00, 0x00]),
            [0x02, 0x11, 0x01, 0x01, 0x01]
        );
        let run: Vec<u8> = (0x01..=0xfe).collect(); // 254 non-zero bytes
        let mut want = vec![0xff];
        want.extend(&run);
        assert_eq!(cobs(&run), want);
        let mut with_zero = vec![0x00];
        with_zero.extend(&run);
        let mut want = vec![0x01, 0xff];
        want.extend(&run);
        assert_eq!(cobs(&with_zero), want);
        let run255: Vec<u8> = (0x01..=0xff).collect();
        let mut want = vec![0xff];
        want.extend(&run255[..254]);
        want.extend([0x02, 0xff]);
        assert_eq!(cobs(&run255), want);
    }

    #[test]
    fn pinned_bytes() {
        // Open { nonce: 0x01020304 }: payload 01 04 03 02 01, CRC-32 0x3357a5b7.
        assert_eq!(
            control_frame(LinkMsg::Open { nonce: 0x0102_0304 }),
            [0x0a, 0x01, 0x04, 0x03, 0x02, 0x01, 0xb7, 0xa5, 0x57, 0x33, 0x00]
        );
        assert_eq!(
            control_frame(LinkMsg::Opened { nonce: 0x0102_0304 }),
            [0x0a, 0x02, 0x04, 0x03, 0x02, 0x01, 0x67, 0xdf, 0xf7, 0x74, 0x00]
        );
        assert_eq!(
            control_frame(LinkMsg::Close),
            [0x06, 0x03, 0x37, 0xbe, 0x0b, 0x4b, 0x00]
        );
        // One zero byte of TLS data: kind 0 and the data byte both become codes.
        let mut data = Vec::new();
        encode_data(&[0x00], &mut data);
        assert_eq!(data, [0x01, 0x01, 0x05, 0xff, 0x12, 0xd9, 0x41, 0x00]);
        let mut dec = LinkDecoder::new();
        assert_eq!(frames(&mut dec, &data), vec![vec![0x00, 0x00]]);
        assert_eq!(
            LinkMsg::decode(&[0x00, 0x00]).unwrap(),
            LinkMsg::Data(&[0x00])
        );
    }

    #[test]
    fn round_trips_whole_byte_by_byte_and_split() {
        let mut rng = Rng(0x5eed);
        let mut lens: Vec<usize> = (1..300).collect();
        lens.extend([
            507,
            508,
            509,
            510,
            1000,
            MAX_LINK_PAYLOAD - 1,
            MAX_LINK_PAYLOAD,
        ]);
        for len in lens {
            // Mix in zeros and 0xff runs, the bytes COBS cares about.
            let payload: Vec<u8> = (0..len)
                .map(|_| match rng.below(4) {
                    0 => 0x00,
                    1 => 0xff,
                    _ => rng.byte(),
                })
                .collect();
            let line = framed(&payload);
            assert!(line.len() <= MAX_ENCODED_FRAME, "{len}");
            assert_eq!(line.iter().filter(|&&b| b == 0).count(), 1);
            let mut dec = LinkDecoder::new();
            assert_eq!(run(&mut dec, &line), vec![Ok(payload.clone())], "{len}");
            // Byte by byte.
            let mut got = Vec::new();
            for b in &line {
                got.extend(run(&mut dec, std::slice::from_ref(b)));
            }
            assert_eq!(got, vec![Ok(payload.clone())], "{len}");
            // Two frames in one read, split at a random point.
            let mut two = line.clone();
            two.extend(&line);
            let cut = rng.below(two.len());
            let mut got = run(&mut dec, &two[..cut]);
            got.extend(run(&mut dec, &two[cut..]));
            assert_eq!(got, vec![Ok(payload.clone()), Ok(payload.clone())]);
        }
    }

    #[test]
    fn zeros_inside_the_payload() {
        for payload in [
            vec![0u8],
            vec![0; 2],
            vec![0; 253],
            vec![0; 254],
            vec![0; 1025],
        ] {
            let line = framed(&payload);
            assert_eq!(line.last(), Some(&0));
            assert!(!line[..line.len() - 1].contains(&0));
            let mut dec = LinkDecoder::new();
            assert_eq!(frames(&mut dec, &line), vec![payload]);
        }
    }

    #[test]
    fn every_truncation_is_dropped_and_the_next_frame_decodes() {
        let mut rng = Rng(7);
        let payload = rng.bytes(600);
        let line = framed(&payload);
        let good = framed(b"next");
        for cut in 0..line.len() - 1 {
            let mut dec = LinkDecoder::new();
            let mut input = line[..cut].to_vec();
            input.push(DELIMITER);
            input.extend(&good);
            let got = run(&mut dec, &input);
            let expect_err = usize::from(cut > 0);
            assert_eq!(got.len(), expect_err + 1, "cut {cut}: {got:?}");
            if cut > 0 {
                assert!(got[0].is_err(), "cut {cut}");
            }
            assert_eq!(got.last(), Some(&Ok(b"next".to_vec())), "cut {cut}");
        }
    }

    #[test]
    fn single_and_double_bit_flips_are_caught() {
        let mut rng = Rng(11);
        let payload = rng.bytes(300);
        let line = framed(&payload);
        let body = line.len() - 1; // not the delimiter
        for bit in 0..body * 8 {
            let mut bad = line.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let mut dec = LinkDecoder::new();
            let got = frames(&mut dec, &bad);
            assert!(got.is_empty(), "flip of bit {bit} went through");
        }
        for _ in 0..2000 {
            let mut bad = line.clone();
            for _ in 0..2 {
                let bit = rng.below(body * 8);
                bad[bit / 8] ^= 1 << (bit % 8);
            }
            if bad == line {
                continue;
            }
            let mut dec = LinkDecoder::new();
            assert!(frames(&mut dec, &bad).is_empty());
        }
    }

    #[test]
    fn random_garbage_never_panics_and_resyncs() {
        let mut rng = Rng(0xdead_beef);
        let good = framed(b"after the noise");
        for round in 0..300 {
            let n = rng.below(3000);
            let mut noise = rng.bytes(n);
            if round % 2 == 0 {
                // Noise without any zero: one long broken frame.
                noise.iter_mut().for_each(|b| *b |= 1);
            }
            let mut dec = Decoder::<64>::new();
            let _ = run(&mut dec, &noise);
            let mut resync = vec![DELIMITER];
            resync.extend(&good);
            let mut dec2 = LinkDecoder::new();
            let _ = run(&mut dec2, &noise);
            let got = frames(&mut dec2, &resync);
            assert_eq!(got, vec![b"after the noise".to_vec()], "round {round}");
        }
    }

    #[test]
    fn garbage_glued_to_a_frame_costs_that_frame_only() {
        let mut dec = LinkDecoder::new();
        let mut input = vec![0x17, 0x42, 0x99];
        input.extend(framed(b"lost"));
        input.extend(framed(b"kept"));
        let got = run(&mut dec, &input);
        assert_eq!(got.len(), 2);
        assert!(got[0].is_err());
        assert_eq!(got[1], Ok(b"kept".to_vec()));
    }

    #[test]
    fn maximum_length_and_one_more() {
        let max = vec![0xab; MAX_LINK_PAYLOAD];
        let mut dec = LinkDecoder::new();
        assert_eq!(frames(&mut dec, &framed(&max)), vec![max.clone()]);
        let mut out = Vec::new();
        assert_eq!(
            encode_frame(&[1; MAX_LINK_PAYLOAD + 1], &mut out),
            Err(LinkError::TooLong {
                len: MAX_LINK_PAYLOAD + 1
            })
        );
        assert_eq!(encode_frame(&[], &mut out), Err(LinkError::Empty));
        assert!(out.is_empty());
        // A peer that sends a longer frame: dropped as soon as it outgrows the
        // buffer, then the decoder skips to the delimiter and goes on.
        let mut long = vec![0xcd; MAX_LINK_PAYLOAD + 1];
        long.extend(crc32fast::hash(&long).to_le_bytes());
        let mut line = cobs(&long);
        line.push(DELIMITER);
        line.extend(framed(b"ok"));
        assert_eq!(
            run(&mut dec, &line),
            vec![Err("too long".into()), Ok(b"ok".to_vec())]
        );
        // Zeros decode into the buffer too: overflow through implied zeros.
        let mut zeros = vec![0u8; MAX_LINK_FRAME + 10];
        let crc = crc32fast::hash(&zeros);
        zeros.extend(crc.to_le_bytes());
        let mut line = cobs(&zeros);
        line.push(DELIMITER);
        assert_eq!(run(&mut dec, &line), vec![Err("too long".into())]);
    }

    #[test]
    fn short_and_empty_frames() {
        let mut dec = LinkDecoder::new();
        // Delimiters alone are idle filler.
        assert!(run(&mut dec, &[0, 0, 0]).is_empty());
        // A CRC without payload, or less.
        for junk in [&[0x01][..], &[0x02, 0x01], &[0x05, 1, 2, 3, 4]] {
            let mut line = junk.to_vec();
            line.push(0);
            assert_eq!(run(&mut dec, &line).len(), 1);
            assert!(run(&mut dec, &line)[0].is_err());
        }
        // The CRC of an empty payload is 0, which COBS writes as 01 01 01 01 01.
        assert_eq!(
            run(&mut dec, &[1, 1, 1, 1, 1, 0]),
            vec![Err(BadFrame::Short.to_string())]
        );
    }

    #[test]
    fn link_messages_round_trip_and_refuse_malformed() {
        for msg in [
            LinkMsg::Open { nonce: 0 },
            LinkMsg::Open { nonce: u32::MAX },
            LinkMsg::Opened { nonce: 77 },
            LinkMsg::Close,
            LinkMsg::Data(&[0, 1, 2]),
            LinkMsg::Data(&[0x5a; MAX_LINK_DATA]),
        ] {
            let mut line = Vec::new();
            msg.encode(&mut line).unwrap();
            let mut dec = LinkDecoder::new();
            match dec.feed(&line) {
                Feed::Frame { payload, rest } => {
                    assert!(rest.is_empty());
                    assert_eq!(LinkMsg::decode(payload).unwrap(), msg);
                }
                other => panic!("{other:?}"),
            }
        }
        let mut out = Vec::new();
        assert_eq!(
            LinkMsg::Data(&[1; MAX_LINK_DATA + 1]).encode(&mut out),
            Err(LinkError::TooLong {
                len: MAX_LINK_PAYLOAD + 1
            })
        );
        assert_eq!(LinkMsg::Data(&[]).encode(&mut out), Err(LinkError::Empty));
        assert_eq!(LinkMsg::decode(&[]), Err(LinkError::Empty));
        assert_eq!(LinkMsg::decode(&[0]), Err(LinkError::Malformed(0)));
        assert_eq!(LinkMsg::decode(&[1, 1, 2, 3]), Err(LinkError::Malformed(1)));
        assert_eq!(
            LinkMsg::decode(&[2, 1, 2, 3, 4, 5]),
            Err(LinkError::Malformed(2))
        );
        assert_eq!(LinkMsg::decode(&[3, 0]), Err(LinkError::Malformed(3)));
        assert_eq!(LinkMsg::decode(&[9, 1]), Err(LinkError::UnknownKind(9)));
    }

    #[test]
    fn a_stream_is_cut_into_link_frames_and_joined_again() {
        let mut rng = Rng(3);
        let stream = rng.bytes(3 * MAX_LINK_DATA + 5);
        let mut line = Vec::new();
        encode_data(&stream, &mut line);
        encode_data(&[], &mut line);
        let mut dec = LinkDecoder::new();
        let payloads = frames(&mut dec, &line);
        assert_eq!(payloads.len(), 4);
        let mut joined = Vec::new();
        for p in &payloads {
            match LinkMsg::decode(p).unwrap() {
                LinkMsg::Data(d) => joined.extend_from_slice(d),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(joined, stream);
        // Overhead of a full data frame: delimiter, kind, CRC, COBS codes.
        let mut one = Vec::new();
        encode_data(&[0x55; MAX_LINK_DATA], &mut one);
        assert!(one.len() - MAX_LINK_DATA <= 11, "{}", one.len());
    }
}

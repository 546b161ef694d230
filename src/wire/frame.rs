//! Stream framing: `varint(len) | payload`, where the varint is postcard's
//! (LEB128, at most 3 bytes for our caps). The decoder is sans-io: callers
//! `feed` it bytes and get whole frames out; it never allocates per frame.

use thiserror::Error;

/// Longest varint we accept for a frame length: 3 bytes cover 2^21 > every cap.
const MAX_LEN_PREFIX: usize = 3;

#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("frame length prefix is malformed")]
    BadLength,
    #[error("empty frame")]
    Empty,
}

/// What one `feed` call produced.
#[derive(Debug, PartialEq, Eq)]
pub enum FeedResult<'buf, 'input> {
    /// All input consumed, no whole frame yet.
    Consumed,
    /// A whole frame; `rest` is the input not yet consumed (feed it next).
    Frame {
        payload: &'buf [u8],
        rest: &'input [u8],
    },
    /// The stream is broken; close the connection.
    Error(FrameError),
}

/// Accumulates one frame at a time in a fixed buffer of `N` bytes.
pub struct FrameDecoder<const N: usize> {
    buf: heapless::Vec<u8, N>,
    len_prefix: heapless::Vec<u8, MAX_LEN_PREFIX>,
    want: Option<usize>,
    max: usize,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new(N)
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// `max` is the largest payload accepted; it is clamped to the buffer size.
    pub fn new(max: usize) -> Self {
        Self {
            buf: heapless::Vec::new(),
            len_prefix: heapless::Vec::new(),
            want: None,
            max: max.min(N),
        }
    }

    /// Feed bytes from the stream. A returned frame borrows the decoder's
    /// buffer; `rest` is the unconsumed input to feed next.
    pub fn feed<'buf, 'input>(&'buf mut self, mut input: &'input [u8]) -> FeedResult<'buf, 'input> {
        // Phase 1: the length prefix.
        while self.want.is_none() {
            let Some((&byte, rest)) = input.split_first() else {
                return FeedResult::Consumed;
            };
            input = rest;
            if self.len_prefix.push(byte).is_err() {
                return self.fail(FrameError::BadLength);
            }
            if byte & 0x80 == 0 {
                let len = match decode_varint(&self.len_prefix) {
                    Some(len) => len,
                    None => return self.fail(FrameError::BadLength),
                };
                if len == 0 {
                    return self.fail(FrameError::Empty);
                }
                if len > self.max {
                    return self.fail(FrameError::TooLong { len, max: self.max });
                }
                self.want = Some(len);
                self.buf.clear();
            }
        }
        // Phase 2: the payload.
        let want = self.want.unwrap_or(0);
        let missing = want - self.buf.len();
        let take = missing.min(input.len());
        let (now, rest) = input.split_at(take);
        // Cannot fail: `want <= max <= N` was checked above.
        if self.buf.extend_from_slice(now).is_err() {
            return self.fail(FrameError::TooLong {
                len: want,
                max: self.max,
            });
        }
        if self.buf.len() < want {
            return FeedResult::Consumed;
        }
        self.want = None;
        self.len_prefix.clear();
        FeedResult::Frame {
            payload: &self.buf,
            rest,
        }
    }

    fn fail(&mut self, err: FrameError) -> FeedResult<'static, 'static> {
        self.want = None;
        self.len_prefix.clear();
        self.buf.clear();
        FeedResult::Error(err)
    }
}

/// Canonical LEB128 only: a final 0x00 byte after others is a longer spelling
/// of a shorter number, which we refuse so that one length has one encoding.
fn decode_varint(bytes: &[u8]) -> Option<usize> {
    if bytes.len() > 1 && bytes.last() == Some(&0) {
        return None;
    }
    let mut value: usize = 0;
    for (i, &b) in bytes.iter().enumerate() {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Prefix `payload` with its length. Fails if it is longer than `max`.
pub fn encode_frame(payload: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    if payload.len() > max {
        return Err(FrameError::TooLong {
            len: payload.len(),
            max,
        });
    }
    let mut out = Vec::with_capacity(payload.len() + MAX_LEN_PREFIX);
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(dec: &mut FrameDecoder<64>, mut input: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        loop {
            match dec.feed(input) {
                FeedResult::Consumed => return Ok(out),
                FeedResult::Frame { payload, rest } => {
                    out.push(payload.to_vec());
                    if rest.is_empty() {
                        return Ok(out);
                    }
                    input = rest;
                }
                FeedResult::Error(e) => return Err(e),
            }
        }
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut dec = FrameDecoder::<64>::new(32);
        assert_eq!(
            frames_of(&mut dec, &[33]),
            Err(FrameError::TooLong { len: 33, max: 32 })
        );
    }

    #[test]
    fn overlong_varint_is_refused() {
        let mut dec = FrameDecoder::<64>::default();
        assert_eq!(
            frames_of(&mut dec, &[0x80, 0x80, 0x80, 0x01]),
            Err(FrameError::BadLength)
        );
    }

    #[test]
    fn non_minimal_length_is_refused() {
        let mut dec = FrameDecoder::<64>::default();
        assert_eq!(
            frames_of(&mut dec, &[0x83, 0x00, 1, 2, 3]),
            Err(FrameError::BadLength)
        );
    }

    #[test]
    fn zero_length_is_refused() {
        let mut dec = FrameDecoder::<64>::default();
        assert_eq!(frames_of(&mut dec, &[0]), Err(FrameError::Empty));
    }

    #[test]
    fn split_and_joined_frames_decode() {
        let mut stream = encode_frame(b"hello", 64).unwrap();
        stream.extend(encode_frame(&[7u8; 40], 64).unwrap());
        // Byte by byte.
        let mut dec = FrameDecoder::<64>::default();
        let mut got = Vec::new();
        for b in &stream {
            got.extend(frames_of(&mut dec, std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![7u8; 40]]);
        // All at once.
        let mut dec = FrameDecoder::<64>::default();
        assert_eq!(frames_of(&mut dec, &stream).unwrap().len(), 2);
    }

    #[test]
    fn two_byte_length_prefix() {
        let payload = vec![1u8; 200];
        let framed = encode_frame(&payload, 1000).unwrap();
        assert_eq!(&framed[..2], &[0xc8, 0x01]);
        let mut dec = FrameDecoder::<256>::default();
        match dec.feed(&framed) {
            FeedResult::Frame { payload: p, rest } => {
                assert_eq!(p, &payload[..]);
                assert!(rest.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn encode_refuses_oversized() {
        assert!(encode_frame(&[0; 10], 9).is_err());
    }
}

//! The one cursor the network codecs read outside bytes through: rtnetlink
//! replies from the kernel ([`super::netlink`]) and DHCP packets from the wire
//! ([`super::dhcp`]). It hands out exactly the bytes asked for or a
//! [`ReadError`]; nothing that parses those bytes indexes a slice or unwraps
//! (rustls `msgs/codec.rs` `Reader` shape).

use std::net::Ipv4Addr;

/// Input that ran short, or was longer than it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("needs {wanted} more bytes, {left} left")]
    Short { wanted: usize, left: usize },
    #[error("{left} trailing bytes")]
    Trailing { left: usize },
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Bytes not yet read.
    pub fn left(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next `n` bytes, or an error (and nothing consumed) if fewer are left.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        let (head, tail) = self.bytes.split_at_checked(n).ok_or(ReadError::Short {
            wanted: n,
            left: self.bytes.len(),
        })?;
        self.bytes = tail;
        Ok(head)
    }

    /// A reader over the next `len` bytes (a length-prefixed part).
    pub fn sub(&mut self, len: usize) -> Result<Reader<'a>, ReadError> {
        self.take(len).map(Reader::new)
    }

    /// Skip up to `n` bytes: alignment padding, which the last item of a
    /// buffer may leave out.
    pub fn skip_padding(&mut self, n: usize) {
        let n = n.min(self.bytes.len());
        self.bytes = self.bytes.get(n..).unwrap_or_default();
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| ReadError::Short {
            wanted: N,
            left: bytes.len(),
        })
    }

    pub fn u8(&mut self) -> Result<u8, ReadError> {
        self.array::<1>().map(|[b]| b)
    }

    /// Host byte order (netlink).
    pub fn u16_ne(&mut self) -> Result<u16, ReadError> {
        self.array().map(u16::from_ne_bytes)
    }

    /// Host byte order (netlink).
    pub fn u32_ne(&mut self) -> Result<u32, ReadError> {
        self.array().map(u32::from_ne_bytes)
    }

    /// Host byte order (netlink).
    pub fn i32_ne(&mut self) -> Result<i32, ReadError> {
        self.array().map(i32::from_ne_bytes)
    }

    /// Network byte order.
    pub fn u16_be(&mut self) -> Result<u16, ReadError> {
        self.array().map(u16::from_be_bytes)
    }

    /// Network byte order.
    pub fn u32_be(&mut self) -> Result<u32, ReadError> {
        self.array().map(u32::from_be_bytes)
    }

    pub fn ipv4(&mut self) -> Result<Ipv4Addr, ReadError> {
        self.array::<4>().map(Ipv4Addr::from)
    }

    /// The end of a part: every byte must have been read.
    pub fn finish(self) -> Result<(), ReadError> {
        match self.bytes.len() {
            0 => Ok(()),
            left => Err(ReadError::Trailing { left }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_an_error_and_consumes_nothing() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32_ne(), Err(ReadError::Short { wanted: 4, left: 3 }));
        assert_eq!(r.left(), 3);
        assert_eq!(r.u16_be(), Ok(0x0102));
        assert!(r.sub(2).is_err());
        let mut sub = r.sub(1).unwrap();
        assert_eq!(sub.u8(), Ok(3));
        assert_eq!(sub.u8(), Err(ReadError::Short { wanted: 1, left: 0 }));
        assert!(r.is_empty());
        r.skip_padding(3);
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn trailing_bytes_are_reported() {
        let mut r = Reader::new(&[10, 0, 2, 15, 0]);
        assert_eq!(r.ipv4(), Ok(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(r.clone().finish(), Err(ReadError::Trailing { left: 1 }));
        assert_eq!(r.rest(), &[0]);
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn huge_lengths_do_not_overflow() {
        let mut r = Reader::new(&[0; 8]);
        assert!(r.take(usize::MAX).is_err());
        assert!(r.sub(usize::MAX).is_err());
        r.skip_padding(usize::MAX);
        assert!(r.is_empty());
    }
}

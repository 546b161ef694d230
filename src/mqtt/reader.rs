//! One cursor over a packet's bytes: every read is bounds-checked.

use super::codec::MqttError;

pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], MqttError> {
        if n > self.rest.len() {
            return Err(MqttError::Malformed("packet ends early"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, MqttError> {
        self.take(1)?
            .first()
            .copied()
            .ok_or(MqttError::Malformed("packet ends early"))
    }

    pub(super) fn u16(&mut self) -> Result<u16, MqttError> {
        let hi = self.u8()?;
        let lo = self.u8()?;
        Ok(u16::from_be_bytes([hi, lo]))
    }

    /// A length-prefixed byte string (u16 length).
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], MqttError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A length-prefixed UTF-8 string (MQTT 1.5.3: no U+0000).
    pub(super) fn str(&mut self) -> Result<&'a str, MqttError> {
        let s = std::str::from_utf8(self.bytes()?)
            .map_err(|_| MqttError::Malformed("string is not UTF-8"))?;
        if s.contains('\0') {
            return Err(MqttError::Malformed("string contains U+0000"));
        }
        Ok(s)
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    pub(super) fn finish(&self) -> Result<(), MqttError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(MqttError::Malformed("trailing bytes in packet"))
        }
    }
}

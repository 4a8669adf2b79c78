//! Checked field readers and writers shared by all message types.
//!
//! Every read is bounds-checked and returns a [`ProtocolError`] instead of
//! panicking; every write of a length-prefixed message goes through
//! [`write_message`], which rolls the buffer back if encoding fails.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;

/// A cursor over a message body.
#[derive(Debug, Clone)]
pub(crate) struct BodyReader {
    buf: Bytes,
}

impl BodyReader {
    pub(crate) fn new(buf: Bytes) -> Self {
        BodyReader { buf }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), ProtocolError> {
        if self.buf.len() < n {
            return Err(ProtocolError::Truncated { what });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, ProtocolError> {
        self.need(2, what)?;
        Ok(self.buf.get_i16())
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, ProtocolError> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, ProtocolError> {
        self.need(8, what)?;
        Ok(self.buf.get_i64())
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }

    /// Exactly `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, ProtocolError> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// A NUL-terminated byte string, without its terminator.
    pub(crate) fn cstr_bytes(&mut self, what: &'static str) -> Result<Bytes, ProtocolError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::MissingNul { what })?;
        let s = self.buf.split_to(end);
        self.buf.advance(1);
        Ok(s)
    }

    /// A NUL-terminated UTF-8 string.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        let bytes = self.cstr_bytes(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtocolError::InvalidUtf8 { what })
    }

    /// A non-negative 16-bit count.
    pub(crate) fn count(&mut self, what: &'static str) -> Result<usize, ProtocolError> {
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| ProtocolError::InvalidValue {
            what,
            value: n.into(),
        })
    }

    /// Fails if any bytes are left.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), ProtocolError> {
        match self.buf.len() {
            0 => Ok(()),
            count => Err(ProtocolError::TrailingBytes { what, count }),
        }
    }
}

/// Appends `s` and a NUL terminator; fails if `s` itself contains NUL.
pub(crate) fn put_cstr(
    buf: &mut BytesMut,
    s: &[u8],
    what: &'static str,
) -> Result<(), ProtocolError> {
    if s.contains(&0) {
        return Err(ProtocolError::InteriorNul { what });
    }
    buf.put_slice(s);
    buf.put_u8(0);
    Ok(())
}

/// Converts a length or count to the `i16` the wire format uses.
pub(crate) fn to_i16(n: usize, what: &'static str) -> Result<i16, ProtocolError> {
    i16::try_from(n).map_err(|_| ProtocolError::InvalidValue {
        what,
        value: i64::try_from(n).unwrap_or(i64::MAX),
    })
}

/// Converts a length to the `i32` the wire format uses.
pub(crate) fn to_i32(n: usize, what: &'static str) -> Result<i32, ProtocolError> {
    i32::try_from(n).map_err(|_| ProtocolError::InvalidValue {
        what,
        value: i64::try_from(n).unwrap_or(i64::MAX),
    })
}

/// Writes a message: the optional type byte, a length word covering itself
/// and the body, then the body produced by `body`. On error nothing is left
/// in `buf`.
pub(crate) fn write_message(
    buf: &mut BytesMut,
    tag: Option<u8>,
    body: impl FnOnce(&mut BytesMut) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    let start = buf.len();
    let result = write_message_inner(buf, tag, body);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

fn write_message_inner(
    buf: &mut BytesMut,
    tag: Option<u8>,
    body: impl FnOnce(&mut BytesMut) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    if let Some(tag) = tag {
        buf.put_u8(tag);
    }
    let len_pos = buf.len();
    buf.put_i32(0);
    body(buf)?;
    let len = to_i32(buf.len() - len_pos, "message length")?;
    buf[len_pos..len_pos + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_is_bounds_checked() {
        let mut r = BodyReader::new(Bytes::from_static(b"ab\0\x00\x01\xff"));
        assert_eq!(r.cstr("s").unwrap(), "ab");
        assert_eq!(r.i16("n").unwrap(), 1);
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.i32("x"), Err(ProtocolError::Truncated { what: "x" }));
        assert_eq!(
            r.finish("m"),
            Err(ProtocolError::TrailingBytes {
                what: "m",
                count: 1
            })
        );
        assert_eq!(r.cstr("s"), Err(ProtocolError::MissingNul { what: "s" }));
        let mut r = BodyReader::new(Bytes::from_static(b"\xff\xff"));
        assert!(matches!(
            r.count("c"),
            Err(ProtocolError::InvalidValue { value: -1, .. })
        ));
        let mut r = BodyReader::new(Bytes::from_static(b"\xc3\0"));
        assert_eq!(r.cstr("s"), Err(ProtocolError::InvalidUtf8 { what: "s" }));
    }

    #[test]
    fn failed_write_leaves_buffer_untouched() {
        let mut buf = BytesMut::from(&b"keep"[..]);
        let err = write_message(&mut buf, Some(b'Q'), |b| put_cstr(b, b"a\0b", "query"));
        assert_eq!(err, Err(ProtocolError::InteriorNul { what: "query" }));
        assert_eq!(&buf[..], b"keep");
        write_message(&mut buf, Some(b'Q'), |b| put_cstr(b, b"ab", "query")).unwrap();
        assert_eq!(&buf[..], b"keepQ\0\0\0\x07ab\0");
    }
}

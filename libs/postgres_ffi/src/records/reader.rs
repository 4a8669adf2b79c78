//! A bounds-checked little-endian cursor over a record's main data.
//!
//! Every read checks the remaining length first and reports a
//! [`RecordDecodeError::Truncated`] naming the field, so decoders never panic on short input.

use utils::lsn::Lsn;

use super::RecordDecodeError;

/// Cursor over the main data of one WAL record (x86-64 little-endian layout).
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at offset 0 of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// Current offset from the start of the main data.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left after the current position.
    pub(crate) fn remaining_bytes(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Takes the next `len_bytes` bytes, or fails naming `what`.
    pub(crate) fn bytes(
        &mut self,
        len_bytes: usize,
        what: &'static str,
    ) -> Result<&'a [u8], RecordDecodeError> {
        let end = self
            .pos
            .checked_add(len_bytes)
            .filter(|end| *end <= self.data.len())
            .ok_or(RecordDecodeError::Truncated {
                need_bytes: self.pos.saturating_add(len_bytes),
                have_bytes: self.data.len(),
                what,
            })?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Skips `len_bytes` bytes (struct padding), or fails naming `what`.
    pub(crate) fn skip(
        &mut self,
        len_bytes: usize,
        what: &'static str,
    ) -> Result<(), RecordDecodeError> {
        self.bytes(len_bytes, what).map(|_| ())
    }

    /// Fails unless at least `len_bytes` bytes remain; reads nothing.
    pub(crate) fn require(
        &self,
        len_bytes: usize,
        what: &'static str,
    ) -> Result<(), RecordDecodeError> {
        if self.remaining_bytes() >= len_bytes {
            return Ok(());
        }
        Err(RecordDecodeError::Truncated {
            need_bytes: self.pos.saturating_add(len_bytes),
            have_bytes: self.data.len(),
            what,
        })
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordDecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, RecordDecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A C `bool` (one byte; any non-zero value is true).
    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, RecordDecodeError> {
        Ok(self.u8(what)? != 0)
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, RecordDecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, RecordDecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, RecordDecodeError> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, RecordDecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, RecordDecodeError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn lsn(&mut self, what: &'static str) -> Result<Lsn, RecordDecodeError> {
        Ok(Lsn(self.u64(what)?))
    }

    /// A C `int` element count: negative values are rejected.
    pub(crate) fn count_i32(&mut self, what: &'static str) -> Result<usize, RecordDecodeError> {
        let n = self.i32(what)?;
        usize::try_from(n).map_err(|_| RecordDecodeError::InvalidCount {
            what,
            count: i64::from(n),
        })
    }

    /// Reads `count` elements of `elem_bytes` bytes each with `read_one`, after checking that
    /// all of them fit (so a corrupt count cannot cause a huge allocation).
    pub(crate) fn vec_of<T>(
        &mut self,
        count: usize,
        elem_bytes: usize,
        what: &'static str,
        mut read_one: impl FnMut(&mut Self) -> Result<T, RecordDecodeError>,
    ) -> Result<Vec<T>, RecordDecodeError> {
        let total_bytes = count
            .checked_mul(elem_bytes)
            .ok_or(RecordDecodeError::InvalidCount {
                what,
                count: i64::try_from(count).unwrap_or(i64::MAX),
            })?;
        self.require(total_bytes, what)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(read_one(self)?);
        }
        Ok(out)
    }

    /// `count` little-endian `u32`s (TransactionId / Oid arrays).
    pub(crate) fn u32_vec(
        &mut self,
        count: usize,
        what: &'static str,
    ) -> Result<Vec<u32>, RecordDecodeError> {
        self.vec_of(count, 4, what, |r| r.u32(what))
    }

    /// `count` little-endian `u16`s (OffsetNumber arrays).
    pub(crate) fn u16_vec(
        &mut self,
        count: usize,
        what: &'static str,
    ) -> Result<Vec<u16>, RecordDecodeError> {
        self.vec_of(count, 2, what, |r| r.u16(what))
    }

    /// A NUL-terminated string; the terminator is consumed but not returned.
    /// Invalid UTF-8 is replaced (names are ASCII in practice).
    pub(crate) fn c_string(&mut self, what: &'static str) -> Result<String, RecordDecodeError> {
        let rest = &self.data[self.pos..];
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(RecordDecodeError::Truncated {
                need_bytes: self.data.len().saturating_add(1),
                have_bytes: self.data.len(),
                what,
            })?;
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.pos += len + 1;
        Ok(s)
    }
}

/// Text of a fixed-size C `char[]` field: up to the first NUL (or the whole field).
pub(crate) fn fixed_c_string(field: &[u8]) -> String {
    let len = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_reports_truncation() {
        let mut r = Reader::new(&[1, 0, 2, 0, 0, 0, 9]);
        assert_eq!(r.u16("a").unwrap(), 1);
        assert_eq!(r.u32("b").unwrap(), 2);
        assert_eq!(
            r.u16("c"),
            Err(RecordDecodeError::Truncated {
                need_bytes: 8,
                have_bytes: 7,
                what: "c"
            })
        );
        assert_eq!(r.u8("d").unwrap(), 9);
        assert_eq!(r.remaining_bytes(), 0);
    }

    #[test]
    fn rejects_negative_and_oversized_counts() {
        let minus_one = (-1i32).to_le_bytes();
        let mut r = Reader::new(&minus_one);
        assert!(matches!(
            r.count_i32("n"),
            Err(RecordDecodeError::InvalidCount { .. })
        ));
        let mut r = Reader::new(&[0u8; 8]);
        assert!(matches!(
            r.u32_vec(usize::MAX, "x"),
            Err(RecordDecodeError::InvalidCount { .. })
        ));
        assert!(matches!(
            r.u32_vec(3, "x"),
            Err(RecordDecodeError::Truncated { .. })
        ));
        assert_eq!(r.u32_vec(2, "x").unwrap(), vec![0, 0]);
    }

    #[test]
    fn c_strings() {
        let mut r = Reader::new(b"ab\0cd");
        assert_eq!(r.c_string("s").unwrap(), "ab");
        assert!(r.c_string("s").is_err());
        assert_eq!(fixed_c_string(b"xy\0z"), "xy");
        assert_eq!(fixed_c_string(b"xyz"), "xyz");
    }
}

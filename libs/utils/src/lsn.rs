//! Log sequence numbers: byte positions in the WAL, printed `X/Y` as PostgreSQL does.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Size of a WAL page (XLOG_BLCKSZ).
pub const XLOG_BLCKSZ: u64 = 8192;

/// A position in the WAL.
#[derive(Clone, Copy, Default, Eq, Ord, PartialEq, PartialOrd, Hash)]
pub struct Lsn(pub u64);

/// Error for a string that is not `X/Y` with two hex numbers of at most 8 digits each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected X/Y with hexadecimal X and Y")]
pub struct LsnParseError(pub String);

impl Lsn {
    /// The invalid LSN (InvalidXLogRecPtr).
    pub const INVALID: Lsn = Lsn(0);
    /// The largest LSN.
    pub const MAX: Lsn = Lsn(u64::MAX);

    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// Number of the WAL segment this LSN falls in.
    pub fn segment_number(self, seg_size_bytes: u64) -> u64 {
        assert!(
            seg_size_bytes.is_power_of_two(),
            "segment size must be a power of two"
        );
        self.0 / seg_size_bytes
    }

    /// Offset of this LSN within its WAL segment.
    pub fn segment_offset(self, seg_size_bytes: u64) -> u64 {
        assert!(
            seg_size_bytes.is_power_of_two(),
            "segment size must be a power of two"
        );
        self.0 % seg_size_bytes
    }

    /// Offset of this LSN within its WAL page.
    pub fn block_offset(self) -> u64 {
        self.0 % XLOG_BLCKSZ
    }

    /// The start of the WAL page containing this LSN.
    pub fn page_start(self) -> Lsn {
        Lsn(self.0 - self.block_offset())
    }

    /// The start of the segment containing this LSN.
    pub fn segment_start(self, seg_size_bytes: u64) -> Lsn {
        Lsn(self.0 - self.segment_offset(seg_size_bytes))
    }

    /// Rounds up to a multiple of `align` (a power of two), e.g. MAXALIGN of record starts.
    pub fn align_up(self, align: u64) -> Lsn {
        assert!(align.is_power_of_two(), "alignment must be a power of two");
        Lsn((self.0 + align - 1) & !(align - 1))
    }

    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    pub fn checked_sub(self, other: Lsn) -> Option<u64> {
        self.0.checked_sub(other.0)
    }

    /// The name of the WAL segment file holding this LSN, on timeline `tli`
    /// (e.g. `000000010000000000000001`).
    pub fn segment_file_name(self, tli: u32, seg_size_bytes: u64) -> String {
        let segno = self.segment_number(seg_size_bytes);
        let segs_per_xlogid = 0x1_0000_0000 / seg_size_bytes;
        format!(
            "{:08X}{:08X}{:08X}",
            tli,
            segno / segs_per_xlogid,
            segno % segs_per_xlogid
        )
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Lsn {
    type Err = LsnParseError;

    /// Parses `X/Y` as pg_lsn does: two hex numbers of 1 to 8 digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || LsnParseError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let part = |p: &str| -> Result<u64, LsnParseError> {
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u64::from_str_radix(p, 16).map_err(|_| err())
        };
        Ok(Lsn((part(hi)? << 32) | part(lo)?))
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(l: Lsn) -> Self {
        l.0
    }
}

impl Add<u64> for Lsn {
    type Output = Lsn;
    fn add(self, rhs: u64) -> Lsn {
        Lsn(self.0.checked_add(rhs).expect("LSN overflow"))
    }
}

impl AddAssign<u64> for Lsn {
    fn add_assign(&mut self, rhs: u64) {
        *self = *self + rhs;
    }
}

impl Sub<Lsn> for Lsn {
    type Output = u64;
    fn sub(self, rhs: Lsn) -> u64 {
        self.0
            .checked_sub(rhs.0)
            .expect("LSN subtraction underflow")
    }
}

impl Sub<u64> for Lsn {
    type Output = Lsn;
    fn sub(self, rhs: u64) -> Lsn {
        Lsn(self.0.checked_sub(rhs).expect("LSN subtraction underflow"))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        for s in [
            "0/0",
            "0/16B5A50",
            "1/0",
            "FFFFFFFF/FFFFFFFF",
            "AB/CDEF0123",
        ] {
            let lsn: Lsn = s.parse().unwrap();
            assert_eq!(lsn.to_string(), s);
        }
        assert_eq!("0/16b5a50".parse::<Lsn>().unwrap(), Lsn(0x16B5A50));
        assert_eq!("1/2".parse::<Lsn>().unwrap(), Lsn((1 << 32) | 2));
    }

    #[test]
    fn parse_rejects_malformed() {
        for s in [
            "",
            "/",
            "0/",
            "/0",
            "0x1/0",
            "1/2/3",
            "G/0",
            "123456789/0",
            " 0/0",
            "0/-1",
        ] {
            assert!(s.parse::<Lsn>().is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn segment_and_page_helpers() {
        let seg = 16 * 1024 * 1024;
        let lsn = Lsn(0x0100_2010);
        assert_eq!(lsn.segment_number(seg), 1);
        assert_eq!(lsn.segment_offset(seg), 0x2010);
        assert_eq!(lsn.block_offset(), 0x10);
        assert_eq!(lsn.page_start(), Lsn(0x0100_2000));
        assert_eq!(lsn.segment_start(seg), Lsn(0x0100_0000));
        assert_eq!(Lsn(0x16B5A4A).align_up(8), Lsn(0x16B5A50));
        assert_eq!(
            Lsn(0x1_0200_0000).segment_file_name(1, seg),
            "000000010000000100000002"
        );
    }

    #[test]
    fn arithmetic() {
        assert_eq!(Lsn(10) + 5, Lsn(15));
        assert_eq!(Lsn(15) - Lsn(10), 5);
        assert_eq!(Lsn(15) - 5u64, Lsn(10));
        assert_eq!(Lsn(1).checked_sub(Lsn(2)), None);
        assert_eq!(Lsn::MAX.checked_add(1), None);
    }
}

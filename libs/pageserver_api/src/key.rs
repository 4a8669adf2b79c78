//! The pageserver's key space: every object a timeline stores (relation blocks and sizes,
//! SLRU pages, relmap files, two-phase files, pg_control, the checkpoint) has an 18-byte key.
//!
//! Layout (big-endian on disk, printed as 36 hex chars): `field1 u8 | field2 u32 | field3 u32 |
//! field4 u32 | field5 u8 | field6 u32`. Keys order by these fields in turn, which is the order
//! of their 18-byte big-endian encoding.

use std::fmt;
use std::str::FromStr;

/// Size of an encoded key.
pub const KEY_SIZE_BYTES: usize = 18;

/// A key of the pageserver's key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub field1: u8,
    pub field2: u32,
    pub field3: u32,
    pub field4: u32,
    pub field5: u8,
    pub field6: u32,
}

/// Error for a string or byte slice that is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("key {0:?} is not 36 hexadecimal characters")]
    BadHex(String),
    #[error("key is {0} bytes, expected 18")]
    BadLength(usize),
}

impl Key {
    pub const MIN: Key = Key {
        field1: 0,
        field2: 0,
        field3: 0,
        field4: 0,
        field5: 0,
        field6: 0,
    };
    pub const MAX: Key = Key {
        field1: u8::MAX,
        field2: u32::MAX,
        field3: u32::MAX,
        field4: u32::MAX,
        field5: u8::MAX,
        field6: u32::MAX,
    };

    /// The 18-byte big-endian encoding (whose byte order is the key order).
    pub fn to_bytes(&self) -> [u8; KEY_SIZE_BYTES] {
        let mut b = [0u8; KEY_SIZE_BYTES];
        b[0] = self.field1;
        b[1..5].copy_from_slice(&self.field2.to_be_bytes());
        b[5..9].copy_from_slice(&self.field3.to_be_bytes());
        b[9..13].copy_from_slice(&self.field4.to_be_bytes());
        b[13] = self.field5;
        b[14..18].copy_from_slice(&self.field6.to_be_bytes());
        b
    }

    pub fn from_slice(b: &[u8]) -> Result<Key, KeyParseError> {
        if b.len() != KEY_SIZE_BYTES {
            return Err(KeyParseError::BadLength(b.len()));
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Ok(Key {
            field1: b[0],
            field2: u32_at(1),
            field3: u32_at(5),
            field4: u32_at(9),
            field5: b[13],
            field6: u32_at(14),
        })
    }

    /// The key as a 144-bit number in a u128 pair would be awkward; as an i128 it does not fit
    /// either, so ordering arithmetic uses the byte form. The next key in order (saturating).
    pub fn next(&self) -> Key {
        self.add(1)
    }

    /// The key `n` positions after this one (saturating at [`Key::MAX`]).
    pub fn add(&self, n: u32) -> Key {
        let mut b = self.to_bytes();
        let mut carry = n as u64;
        for byte in b.iter_mut().rev() {
            if carry == 0 {
                break;
            }
            let sum = *byte as u64 + (carry & 0xff);
            *byte = sum as u8;
            carry = (carry >> 8) + (sum >> 8);
        }
        if carry != 0 {
            return Key::MAX;
        }
        Key::from_slice(&b).expect("18 bytes")
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02X}{:08X}{:08X}{:08X}{:02X}{:08X}",
            self.field1, self.field2, self.field3, self.field4, self.field5, self.field6
        )
    }
}

impl FromStr for Key {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut b = [0u8; KEY_SIZE_BYTES];
        if s.len() != KEY_SIZE_BYTES * 2 {
            return Err(KeyParseError::BadHex(s.to_string()));
        }
        hex::decode_to_slice(s, &mut b).map_err(|_| KeyParseError::BadHex(s.to_string()))?;
        Key::from_slice(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_text_round_trip_and_order() {
        let a = Key {
            field1: 0,
            field2: 1663,
            field3: 5,
            field4: 16384,
            field5: 0,
            field6: 7,
        };
        let b = Key { field6: 8, ..a };
        assert!(a < b);
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(Key::from_slice(&a.to_bytes()).unwrap(), a);
        assert_eq!(a.to_string().parse::<Key>().unwrap(), a);
        assert_eq!(a.to_string().len(), 36);
        assert_eq!(a.next(), b);
        assert_eq!(Key::MAX.next(), Key::MAX);
        let c = Key {
            field6: u32::MAX,
            ..a
        };
        assert_eq!(
            c.next(),
            Key {
                field5: 1,
                field6: 0,
                ..a
            }
        );
    }
}

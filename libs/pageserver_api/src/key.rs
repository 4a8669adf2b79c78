//! The pageserver's key space: every object a timeline stores (relation blocks and sizes,
//! SLRU pages, relmap files, two-phase files, pg_control, the checkpoint) has an 18-byte key.
//!
//! Layout (big-endian on disk, printed as 36 hex chars): `field1 u8 | field2 u32 | field3 u32 |
//! field4 u32 | field5 u8 | field6 u32`. Keys order by these fields in turn, which is the order
//! of their 18-byte big-endian encoding.
//!
//! | object | f1 | f2 | f3 | f4 | f5 | f6 |
//! |---|---|---|---|---|---|---|
//! | DbDir ([`DBDIR_KEY`]) | 00 | 0 | 0 | 0 | 0 | 0 |
//! | relmap file of (spc, db) | 00 | spc | db | 0 | 0 | 0 |
//! | relation directory of (spc, db) | 00 | spc | db | 0 | 0 | 1 |
//! | relation block | 00 | spc | db | rel | fork | blkno |
//! | relation size | 00 | spc | db | rel | fork | FFFFFFFF |
//! | SLRU directory | 01 | kind | 0 | 0 | 0 | 0 |
//! | SLRU block | 01 | kind | 1 | segno | 0 | blkno |
//! | SLRU segment size | 01 | kind | 1 | segno | 0 | FFFFFFFF |
//! | two-phase directory ([`TWOPHASEDIR_KEY`]) | 02 | 0 | 0 | 0 | 0 | 0 |
//! | two-phase file of xid | 02 | 0 | 0 | 0 | 0 | xid |
//! | pg_control ([`CONTROLFILE_KEY`]) | 03 | 0 | 0 | 0 | 0 | 0 |
//! | checkpoint ([`CHECKPOINT_KEY`]) | 03 | 0 | 0 | 0 | 0 | 1 |
//!
//! Relfilenode 0, tablespace 0 and xid 0 are invalid in PostgreSQL; their keys would collide
//! with directory keys, so the classifiers never report them as relation blocks, relmap files or
//! two-phase files. Block number FFFFFFFF (InvalidBlockNumber) is the size key, not a block.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::keyspace::KeySpace;
pub use crate::reltag::{RelTag, SlruKind};

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

/// Error for a key that is not of the kind a conversion expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key {0} is not a relation block key")]
    NotRelBlock(Key),
    #[error("key {0} is not a relation size key")]
    NotRelSize(Key),
    #[error("key {0} is not an SLRU block key")]
    NotSlruBlock(Key),
}

/// `field6` of relation and SLRU segment size keys.
const SIZE_FIELD6: u32 = u32::MAX;

const fn key(field1: u8, field2: u32, field3: u32, field4: u32, field5: u8, field6: u32) -> Key {
    Key {
        field1,
        field2,
        field3,
        field4,
        field5,
        field6,
    }
}

/// The database directory: which (spcnode, dbnode) pairs exist.
pub const DBDIR_KEY: Key = key(0, 0, 0, 0, 0, 0);
/// The two-phase directory: which xids have a prepared-transaction state file.
pub const TWOPHASEDIR_KEY: Key = key(2, 0, 0, 0, 0, 0);
/// The pg_control file.
pub const CONTROLFILE_KEY: Key = key(3, 0, 0, 0, 0, 0);
/// The pageserver-maintained checkpoint (CheckPoint struct).
pub const CHECKPOINT_KEY: Key = key(3, 0, 0, 0, 0, 1);

/// Block `blkno` of a relation fork. `blkno` must not be `u32::MAX` (that is the size key).
pub fn rel_block_to_key(rel: RelTag, blkno: u32) -> Key {
    key(0, rel.spcnode, rel.dbnode, rel.relnode, rel.forknum, blkno)
}

/// The size (number of blocks) of a relation fork.
pub fn rel_size_to_key(rel: RelTag) -> Key {
    rel_block_to_key(rel, SIZE_FIELD6)
}

/// Every key of a relation fork: its blocks and its size key.
pub fn rel_key_range(rel: RelTag) -> Range<Key> {
    rel_block_to_key(rel, 0)..rel_size_to_key(rel).next()
}

/// The block keys of a relation fork (without its size key).
pub fn rel_block_key_range(rel: RelTag) -> Range<Key> {
    rel_block_to_key(rel, 0)..rel_size_to_key(rel)
}

/// The directory of relations of a database.
pub fn rel_dir_to_key(spcnode: u32, dbnode: u32) -> Key {
    key(0, spcnode, dbnode, 0, 0, 1)
}

/// The relmap file (pg_filenode.map) of a database (or of `global` with dbnode 0).
pub fn relmap_file_key(spcnode: u32, dbnode: u32) -> Key {
    key(0, spcnode, dbnode, 0, 0, 0)
}

/// Everything of one database: its relmap file, relation directory, and every block and size
/// of its relations.
pub fn dbdir_key_range(spcnode: u32, dbnode: u32) -> Range<Key> {
    relmap_file_key(spcnode, dbnode)..key(0, spcnode, dbnode, u32::MAX, u8::MAX, u32::MAX).next()
}

/// The blocks and sizes of every relation of one database (not its relmap or directory).
pub fn db_rels_key_range(spcnode: u32, dbnode: u32) -> Range<Key> {
    key(0, spcnode, dbnode, 1, 0, 0)..dbdir_key_range(spcnode, dbnode).end
}

/// The directory of an SLRU: which segments exist.
pub fn slru_dir_to_key(kind: SlruKind) -> Key {
    key(1, kind.as_u32(), 0, 0, 0, 0)
}

/// Block `blkno` of segment `segno` of an SLRU. `blkno` must not be `u32::MAX`.
pub fn slru_block_to_key(kind: SlruKind, segno: u32, blkno: u32) -> Key {
    key(1, kind.as_u32(), 1, segno, 0, blkno)
}

/// The size (number of blocks) of an SLRU segment.
pub fn slru_segment_size_to_key(kind: SlruKind, segno: u32) -> Key {
    slru_block_to_key(kind, segno, SIZE_FIELD6)
}

/// Every key of an SLRU segment: its blocks and its size key.
pub fn slru_segment_key_range(kind: SlruKind, segno: u32) -> Range<Key> {
    slru_block_to_key(kind, segno, 0)..slru_segment_size_to_key(kind, segno).next()
}

/// Every key of an SLRU: its directory and all its segments.
pub fn slru_key_range(kind: SlruKind) -> Range<Key> {
    slru_dir_to_key(kind)..key(1, kind.as_u32(), u32::MAX, u32::MAX, u8::MAX, u32::MAX).next()
}

/// The state file of prepared transaction `xid` (pg_twophase/<xid>).
pub fn twophase_file_key(xid: u32) -> Key {
    key(2, 0, 0, 0, 0, xid)
}

/// Every two-phase key: the directory and all state files.
pub fn twophase_key_range() -> Range<Key> {
    TWOPHASEDIR_KEY..key(2, 0, 0, 0, 0, u32::MAX).next()
}

/// What a key names, decoded from its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    DbDir,
    RelMap {
        spcnode: u32,
        dbnode: u32,
    },
    RelDir {
        spcnode: u32,
        dbnode: u32,
    },
    RelBlock {
        rel: RelTag,
        blkno: u32,
    },
    RelSize {
        rel: RelTag,
    },
    SlruDir {
        kind: SlruKind,
    },
    SlruBlock {
        kind: SlruKind,
        segno: u32,
        blkno: u32,
    },
    SlruSegmentSize {
        kind: SlruKind,
        segno: u32,
    },
    TwoPhaseDir,
    TwoPhaseFile {
        xid: u32,
    },
    ControlFile,
    Checkpoint,
}

impl KeyKind {
    /// The key of this object (inverse of [`Key::kind`]).
    pub fn to_key(self) -> Key {
        match self {
            KeyKind::DbDir => DBDIR_KEY,
            KeyKind::RelMap { spcnode, dbnode } => relmap_file_key(spcnode, dbnode),
            KeyKind::RelDir { spcnode, dbnode } => rel_dir_to_key(spcnode, dbnode),
            KeyKind::RelBlock { rel, blkno } => rel_block_to_key(rel, blkno),
            KeyKind::RelSize { rel } => rel_size_to_key(rel),
            KeyKind::SlruDir { kind } => slru_dir_to_key(kind),
            KeyKind::SlruBlock { kind, segno, blkno } => slru_block_to_key(kind, segno, blkno),
            KeyKind::SlruSegmentSize { kind, segno } => slru_segment_size_to_key(kind, segno),
            KeyKind::TwoPhaseDir => TWOPHASEDIR_KEY,
            KeyKind::TwoPhaseFile { xid } => twophase_file_key(xid),
            KeyKind::ControlFile => CONTROLFILE_KEY,
            KeyKind::Checkpoint => CHECKPOINT_KEY,
        }
    }
}

impl Key {
    pub const MIN: Key = key(0, 0, 0, 0, 0, 0);
    pub const MAX: Key = key(u8::MAX, u32::MAX, u32::MAX, u32::MAX, u8::MAX, u32::MAX);

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

    /// Decodes [`Key::to_bytes`]; `b` must be exactly 18 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Key, KeyParseError> {
        let b: &[u8; KEY_SIZE_BYTES] = b
            .try_into()
            .map_err(|_| KeyParseError::BadLength(b.len()))?;
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

    /// The key as a 144-bit number: (top 16 bits, low 128 bits).
    fn to_parts(self) -> (u16, u128) {
        let b = self.to_bytes();
        let hi = u16::from_be_bytes([b[0], b[1]]);
        let lo = u128::from_be_bytes(b[2..].try_into().expect("16 bytes"));
        (hi, lo)
    }

    fn from_parts(hi: u16, lo: u128) -> Key {
        let mut b = [0u8; KEY_SIZE_BYTES];
        b[..2].copy_from_slice(&hi.to_be_bytes());
        b[2..].copy_from_slice(&lo.to_be_bytes());
        Key::from_slice(&b).expect("18 bytes")
    }

    /// The next key in order (saturating at [`Key::MAX`]).
    pub fn next(&self) -> Key {
        self.add_u64(1)
    }

    /// The key `n` positions after this one (saturating at [`Key::MAX`]).
    pub fn add(&self, n: u32) -> Key {
        self.add_u64(u64::from(n))
    }

    /// The key `n` positions after this one (saturating at [`Key::MAX`]).
    pub fn add_u64(&self, n: u64) -> Key {
        let (hi, lo) = self.to_parts();
        let (lo, carry) = lo.overflowing_add(u128::from(n));
        match hi.checked_add(u16::from(carry)) {
            Some(hi) => Key::from_parts(hi, lo),
            None => Key::MAX,
        }
    }

    /// How many keys lie in `self..end` (0 if `end <= self`), saturating at `u64::MAX`.
    pub fn distance_to(&self, end: &Key) -> u64 {
        if end <= self {
            return 0;
        }
        let (shi, slo) = self.to_parts();
        let (ehi, elo) = end.to_parts();
        let (lo, borrow) = elo.overflowing_sub(slo);
        if ehi - shi - u16::from(borrow) != 0 {
            return u64::MAX;
        }
        u64::try_from(lo).unwrap_or(u64::MAX)
    }

    /// What this key names, or `None` for a key outside the layout of this module.
    pub fn kind(&self) -> Option<KeyKind> {
        match self.field1 {
            0 => self.rel_space_kind(),
            1 => self.slru_space_kind(),
            2 if self.field2 == 0 && self.field3 == 0 && self.field4 == 0 && self.field5 == 0 => {
                Some(match self.field6 {
                    0 => KeyKind::TwoPhaseDir,
                    xid => KeyKind::TwoPhaseFile { xid },
                })
            }
            3 if self.field2 == 0 && self.field3 == 0 && self.field4 == 0 && self.field5 == 0 => {
                match self.field6 {
                    0 => Some(KeyKind::ControlFile),
                    1 => Some(KeyKind::Checkpoint),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Kind of a key with field1 = 0 (databases and relations).
    fn rel_space_kind(&self) -> Option<KeyKind> {
        let (spcnode, dbnode) = (self.field2, self.field3);
        if self.field4 != 0 {
            let rel = RelTag {
                spcnode,
                dbnode,
                relnode: self.field4,
                forknum: self.field5,
            };
            return Some(match self.field6 {
                SIZE_FIELD6 => KeyKind::RelSize { rel },
                blkno => KeyKind::RelBlock { rel, blkno },
            });
        }
        match (spcnode, dbnode, self.field5, self.field6) {
            (0, 0, 0, 0) => Some(KeyKind::DbDir),
            (0, _, _, _) => None,
            (_, _, 0, 0) => Some(KeyKind::RelMap { spcnode, dbnode }),
            (_, _, 0, 1) => Some(KeyKind::RelDir { spcnode, dbnode }),
            _ => None,
        }
    }

    /// Kind of a key with field1 = 1 (SLRUs).
    fn slru_space_kind(&self) -> Option<KeyKind> {
        let kind = SlruKind::from_u32(self.field2)?;
        match (self.field3, self.field4, self.field5, self.field6) {
            (0, 0, 0, 0) => Some(KeyKind::SlruDir { kind }),
            (1, segno, 0, SIZE_FIELD6) => Some(KeyKind::SlruSegmentSize { kind, segno }),
            (1, segno, 0, blkno) => Some(KeyKind::SlruBlock { kind, segno, blkno }),
            _ => None,
        }
    }

    /// Whether this is the key of a relation block.
    pub fn is_rel_block_key(&self) -> bool {
        matches!(self.kind(), Some(KeyKind::RelBlock { .. }))
    }

    /// Whether this is the key of a relation fork's size.
    pub fn is_rel_size_key(&self) -> bool {
        matches!(self.kind(), Some(KeyKind::RelSize { .. }))
    }

    /// Whether this is the key of an SLRU block.
    pub fn is_slru_block_key(&self) -> bool {
        matches!(self.kind(), Some(KeyKind::SlruBlock { .. }))
    }

    /// Whether this is the key of an SLRU segment's size.
    pub fn is_slru_segment_size_key(&self) -> bool {
        matches!(self.kind(), Some(KeyKind::SlruSegmentSize { .. }))
    }

    /// Whether this key holds pageserver metadata rather than a page: directories, relation
    /// and segment sizes, relmap and two-phase files, pg_control and the checkpoint. Keys
    /// outside the layout are neither pages nor metadata.
    pub fn is_metadata_key(&self) -> bool {
        !matches!(
            self.kind(),
            None | Some(KeyKind::RelBlock { .. } | KeyKind::SlruBlock { .. })
        )
    }

    /// The relation fork and block number of a relation block key.
    pub fn to_rel_block(&self) -> Result<(RelTag, u32), KeyError> {
        match self.kind() {
            Some(KeyKind::RelBlock { rel, blkno }) => Ok((rel, blkno)),
            _ => Err(KeyError::NotRelBlock(*self)),
        }
    }

    /// The relation fork of a relation size key.
    pub fn to_rel_size(&self) -> Result<RelTag, KeyError> {
        match self.kind() {
            Some(KeyKind::RelSize { rel }) => Ok(rel),
            _ => Err(KeyError::NotRelSize(*self)),
        }
    }

    /// The SLRU, segment and block number of an SLRU block key.
    pub fn to_slru_block(&self) -> Result<(SlruKind, u32, u32), KeyError> {
        match self.kind() {
            Some(KeyKind::SlruBlock { kind, segno, blkno }) => Ok((kind, segno, blkno)),
            _ => Err(KeyError::NotSlruBlock(*self)),
        }
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

    /// Parses 36 hexadecimal characters (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut b = [0u8; KEY_SIZE_BYTES];
        if s.len() != KEY_SIZE_BYTES * 2 {
            return Err(KeyParseError::BadHex(s.to_string()));
        }
        hex::decode_to_slice(s, &mut b).map_err(|_| KeyParseError::BadHex(s.to_string()))?;
        Key::from_slice(&b)
    }
}

/// Keys are JSON strings of 36 hex characters.
impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;

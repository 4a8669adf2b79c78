//! What a redo request rebuilds: a relation block or an SLRU page, decoded from its key.

use std::fmt;

use pageserver_api::key::Key;

/// Number of forks PostgreSQL 15 has (main, fsm, vm, init).
const FORK_COUNT: u8 = 4;
/// The visibility-map fork.
pub const VISIBILITYMAP_FORKNUM: u8 = 2;
/// Key field1 of relation objects.
const REL_KEY_PREFIX: u8 = 0x00;
/// Key field1 of SLRU objects.
const SLRU_KEY_PREFIX: u8 = 0x01;
/// Key field3 of SLRU block keys (0 is the SLRU directory).
const SLRU_BLOCK_FIELD3: u32 = 1;
/// field6 of size keys (relation size, SLRU segment size): not a block.
const SIZE_KEY_FIELD6: u32 = u32::MAX;
/// Pages per SLRU segment file (SLRU_PAGES_PER_SEGMENT).
pub const SLRU_PAGES_PER_SEGMENT: u32 = 32;

/// A relation block, as the wal-redo process names it (BufferTag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTag {
    pub spcnode: u32,
    pub dbnode: u32,
    pub relnode: u32,
    pub forknum: u8,
    pub blkno: u32,
}

/// Which SLRU an SLRU page belongs to (key field2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlruKind {
    /// pg_xact (commit status).
    Clog,
    /// pg_multixact/members.
    MultiXactMembers,
    /// pg_multixact/offsets.
    MultiXactOffsets,
}

impl SlruKind {
    fn from_key_field(field2: u32) -> Option<SlruKind> {
        match field2 {
            0 => Some(SlruKind::Clog),
            1 => Some(SlruKind::MultiXactMembers),
            2 => Some(SlruKind::MultiXactOffsets),
            _ => None,
        }
    }
}

/// The page a redo request rebuilds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedoTarget {
    /// A block of a relation fork; rebuilt by `postgres --wal-redo` (and Neon's VM records).
    Rel(BufferTag),
    /// A page of an SLRU; only Neon's own records apply to it.
    Slru {
        kind: SlruKind,
        segno: u32,
        blkno: u32,
    },
}

impl RedoTarget {
    /// The target named by `key`, or `None` if the key is not a relation or SLRU block.
    ///
    /// Relation block: field1 0, field2 spcnode, field3 dbnode, field4 relnode (non-zero),
    /// field5 fork, field6 block (not 0xFFFFFFFF, which is the size key).
    /// SLRU block: field1 1, field2 kind (0 clog, 1 members, 2 offsets), field3 1,
    /// field4 segment, field6 block within the segment.
    pub fn from_key(key: &Key) -> Option<RedoTarget> {
        match key.field1 {
            REL_KEY_PREFIX => {
                let is_block =
                    key.field4 != 0 && key.field5 < FORK_COUNT && key.field6 != SIZE_KEY_FIELD6;
                is_block.then_some(RedoTarget::Rel(BufferTag {
                    spcnode: key.field2,
                    dbnode: key.field3,
                    relnode: key.field4,
                    forknum: key.field5,
                    blkno: key.field6,
                }))
            }
            SLRU_KEY_PREFIX => {
                let kind = SlruKind::from_key_field(key.field2)?;
                let is_block = key.field3 == SLRU_BLOCK_FIELD3
                    && key.field5 == 0
                    && key.field6 < SLRU_PAGES_PER_SEGMENT;
                is_block.then_some(RedoTarget::Slru {
                    kind,
                    segno: key.field4,
                    blkno: key.field6,
                })
            }
            _ => None,
        }
    }

    /// The page number within its SLRU (segment × 32 + block), for SLRU targets.
    pub fn slru_pageno(&self) -> Option<u64> {
        match self {
            RedoTarget::Slru { segno, blkno, .. } => {
                Some(u64::from(*segno) * u64::from(SLRU_PAGES_PER_SEGMENT) + u64::from(*blkno))
            }
            RedoTarget::Rel(_) => None,
        }
    }
}

impl fmt::Display for RedoTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedoTarget::Rel(t) => write!(
                f,
                "block {} of relation {}/{}/{} fork {}",
                t.blkno, t.spcnode, t.dbnode, t.relnode, t.forknum
            ),
            RedoTarget::Slru { kind, segno, blkno } => {
                write!(f, "{kind:?} SLRU segment {segno} page {blkno}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(field1: u8, field2: u32, field3: u32, field4: u32, field5: u8, field6: u32) -> Key {
        Key {
            field1,
            field2,
            field3,
            field4,
            field5,
            field6,
        }
    }

    #[test]
    fn relation_block_keys() {
        let t = RedoTarget::from_key(&key(0, 1663, 5, 16384, 2, 7)).unwrap();
        assert_eq!(
            t,
            RedoTarget::Rel(BufferTag {
                spcnode: 1663,
                dbnode: 5,
                relnode: 16384,
                forknum: 2,
                blkno: 7
            })
        );
        // size key, relmap/reldir keys (relnode 0), bad fork
        assert_eq!(
            RedoTarget::from_key(&key(0, 1663, 5, 16384, 0, u32::MAX)),
            None
        );
        assert_eq!(RedoTarget::from_key(&key(0, 1663, 5, 0, 0, 1)), None);
        assert_eq!(RedoTarget::from_key(&key(0, 1663, 5, 16384, 4, 1)), None);
    }

    #[test]
    fn slru_block_keys() {
        let t = RedoTarget::from_key(&key(1, 2, 1, 3, 0, 5)).unwrap();
        assert_eq!(
            t,
            RedoTarget::Slru {
                kind: SlruKind::MultiXactOffsets,
                segno: 3,
                blkno: 5
            }
        );
        assert_eq!(t.slru_pageno(), Some(3 * 32 + 5));
        // directory key, size key, unknown kind, block beyond a segment
        assert_eq!(RedoTarget::from_key(&key(1, 0, 0, 0, 0, 0)), None);
        assert_eq!(RedoTarget::from_key(&key(1, 0, 1, 3, 0, u32::MAX)), None);
        assert_eq!(RedoTarget::from_key(&key(1, 3, 1, 3, 0, 0)), None);
        assert_eq!(RedoTarget::from_key(&key(1, 0, 1, 3, 0, 32)), None);
        assert_eq!(RedoTarget::from_key(&key(2, 0, 0, 0, 0, 0)), None);
    }
}

//! What the pageserver stores under a key at an LSN: a full image, or a WAL record to apply
//! on top of the previous version.

use bytes::Bytes;

/// A stored version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// The whole object (e.g. an 8 KiB page, a relation size, a relmap file).
    Image(Bytes),
    /// A change to apply to the previous version.
    WalRecord(NeonWalRecord),
}

impl Value {
    /// Whether this version can be rebuilt without any older version.
    pub fn will_init(&self) -> bool {
        match self {
            Value::Image(_) => true,
            Value::WalRecord(rec) => rec.will_init(),
        }
    }
}

/// Status of a multixact member (MultiXactStatus).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiXactMember {
    pub xid: u32,
    pub status: u8,
}

/// A change to a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeonWalRecord {
    /// A PostgreSQL WAL record, replayed by `postgres --wal-redo`. `rec` is the whole record
    /// (header and body, exactly xl_tot_len bytes); it is applied with the record's end LSN.
    /// `will_init`: the record rebuilds the page without reading it (WILL_INIT or an FPI).
    Postgres { will_init: bool, rec: Bytes },
    /// Clear visibility-map bits of heap blocks (heap records clear them during redo without
    /// registering the VM page). `flags`: VISIBILITYMAP_ALL_VISIBLE (1) | ALL_FROZEN (2).
    ClearVisibilityMapFlags {
        new_heap_blkno: Option<u32>,
        old_heap_blkno: Option<u32>,
        flags: u8,
    },
    /// Truncation of the visibility map: clear the bits past `trunc_byte`/`trunc_offs` on the
    /// last remaining VM page.
    TruncateVisibilityMap { trunc_byte: u32, trunc_offs: u8 },
    /// Mark xids committed in a CLOG page (with the commit timestamp, PostgreSQL epoch µs).
    ClogSetCommitted { xids: Vec<u32>, timestamp: i64 },
    /// Mark xids aborted in a CLOG page.
    ClogSetAborted { xids: Vec<u32> },
    /// Set a multixact's starting member offset in a pg_multixact/offsets page.
    MultixactOffsetCreate { mid: u32, moff: u32 },
    /// Write multixact members into a pg_multixact/members page.
    MultixactMembersCreate {
        moff: u32,
        members: Vec<MultiXactMember>,
    },
}

impl NeonWalRecord {
    pub fn will_init(&self) -> bool {
        matches!(
            self,
            NeonWalRecord::Postgres {
                will_init: true,
                ..
            }
        )
    }
}

//! The `CheckPoint` struct (catalog/pg_control.h): main data of the XLOG rmgr's checkpoint
//! records and the `checkPointCopy` field of pg_control.
//!
//! C layout on x86-64 (sizeof = 88, 8-byte aligned):
//!
//! | offset | field             | type                    |
//! |-------:|-------------------|-------------------------|
//! |      0 | redo              | XLogRecPtr              |
//! |      8 | ThisTimeLineID    | uint32                  |
//! |     12 | PrevTimeLineID    | uint32                  |
//! |     16 | fullPageWrites    | bool (+7 padding)       |
//! |     24 | nextXid           | FullTransactionId (u64) |
//! |     32 | nextOid           | Oid                     |
//! |     36 | nextMulti         | MultiXactId             |
//! |     40 | nextMultiOffset   | MultiXactOffset         |
//! |     44 | oldestXid         | TransactionId           |
//! |     48 | oldestXidDB       | Oid                     |
//! |     52 | oldestMulti       | MultiXactId             |
//! |     56 | oldestMultiDB     | Oid (+4 padding)        |
//! |     64 | time              | pg_time_t (i64)         |
//! |     72 | oldestCommitTsXid | TransactionId           |
//! |     76 | newestCommitTsXid | TransactionId           |
//! |     80 | oldestActiveXid   | TransactionId (+4 pad)  |

use utils::lsn::Lsn;

use super::reader::Reader;
use super::RecordDecodeError;

/// PostgreSQL's `CheckPoint`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct CheckPoint {
    /// REDO start point: where replay must begin for this checkpoint.
    pub redo: Lsn,
    /// Current timeline.
    pub this_timeline_id: u32,
    /// Previous timeline (equals `this_timeline_id` unless this record starts a new one).
    pub prev_timeline_id: u32,
    /// The `full_page_writes` setting.
    pub full_page_writes: bool,
    /// Next free transaction ID with its epoch (FullTransactionId: epoch << 32 | xid).
    pub next_xid: u64,
    /// Next free OID.
    pub next_oid: u32,
    /// Next free MultiXactId.
    pub next_multi: u32,
    /// Next free offset in the multixact members SLRU.
    pub next_multi_offset: u32,
    /// Cluster-wide minimum datfrozenxid.
    pub oldest_xid: u32,
    /// Database holding `oldest_xid`.
    pub oldest_xid_db: u32,
    /// Cluster-wide minimum datminmxid.
    pub oldest_multi: u32,
    /// Database holding `oldest_multi`.
    pub oldest_multi_db: u32,
    /// Checkpoint time, seconds since the Unix epoch (pg_time_t).
    pub time_unix_secs: i64,
    /// Oldest XID with a valid commit timestamp.
    pub oldest_commit_ts_xid: u32,
    /// Newest XID with a valid commit timestamp.
    pub newest_commit_ts_xid: u32,
    /// Oldest XID still running (online checkpoints with wal_level >= replica), else 0.
    pub oldest_active_xid: u32,
}

impl CheckPoint {
    /// `sizeof(CheckPoint)` on x86-64, padding included.
    pub const SIZE_BYTES: usize = 88;

    /// Decodes the first [`Self::SIZE_BYTES`] bytes of `bytes`; padding bytes are ignored and any
    /// bytes after the struct are ignored too.
    pub fn decode(bytes: &[u8]) -> Result<CheckPoint, RecordDecodeError> {
        let mut r = Reader::new(bytes);
        r.require(Self::SIZE_BYTES, "CheckPoint")?;
        let redo = r.lsn("CheckPoint.redo")?;
        let this_timeline_id = r.u32("CheckPoint.ThisTimeLineID")?;
        let prev_timeline_id = r.u32("CheckPoint.PrevTimeLineID")?;
        let full_page_writes = r.bool("CheckPoint.fullPageWrites")?;
        r.skip(7, "CheckPoint padding")?;
        Ok(CheckPoint {
            redo,
            this_timeline_id,
            prev_timeline_id,
            full_page_writes,
            next_xid: r.u64("CheckPoint.nextXid")?,
            next_oid: r.u32("CheckPoint.nextOid")?,
            next_multi: r.u32("CheckPoint.nextMulti")?,
            next_multi_offset: r.u32("CheckPoint.nextMultiOffset")?,
            oldest_xid: r.u32("CheckPoint.oldestXid")?,
            oldest_xid_db: r.u32("CheckPoint.oldestXidDB")?,
            oldest_multi: r.u32("CheckPoint.oldestMulti")?,
            oldest_multi_db: r.u32("CheckPoint.oldestMultiDB")?,
            time_unix_secs: {
                r.skip(4, "CheckPoint padding")?;
                r.i64("CheckPoint.time")?
            },
            oldest_commit_ts_xid: r.u32("CheckPoint.oldestCommitTsXid")?,
            newest_commit_ts_xid: r.u32("CheckPoint.newestCommitTsXid")?,
            oldest_active_xid: r.u32("CheckPoint.oldestActiveXid")?,
        })
    }

    /// Encodes to exactly [`Self::SIZE_BYTES`] bytes, padding zeroed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::SIZE_BYTES);
        self.encode_into(&mut out);
        out
    }

    /// Appends the [`Self::SIZE_BYTES`]-byte encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.redo.0.to_le_bytes());
        out.extend_from_slice(&self.this_timeline_id.to_le_bytes());
        out.extend_from_slice(&self.prev_timeline_id.to_le_bytes());
        out.push(u8::from(self.full_page_writes));
        out.extend_from_slice(&[0u8; 7]);
        out.extend_from_slice(&self.next_xid.to_le_bytes());
        for v in [
            self.next_oid,
            self.next_multi,
            self.next_multi_offset,
            self.oldest_xid,
            self.oldest_xid_db,
            self.oldest_multi,
            self.oldest_multi_db,
            0, // padding before `time`
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.time_unix_secs.to_le_bytes());
        for v in [
            self.oldest_commit_ts_xid,
            self.newest_commit_ts_xid,
            self.oldest_active_xid,
            0, // trailing padding
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// The 32-bit XID part of `next_xid`.
    pub fn next_xid_32(&self) -> u32 {
        self.next_xid as u32
    }

    /// The epoch part of `next_xid`.
    pub fn next_xid_epoch(&self) -> u32 {
        (self.next_xid >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CheckPoint {
        CheckPoint {
            redo: Lsn(0x0000_0001_0150_0718),
            this_timeline_id: 3,
            prev_timeline_id: 2,
            full_page_writes: true,
            next_xid: (5u64 << 32) | 724,
            next_oid: 13572,
            next_multi: 7,
            next_multi_offset: 11,
            oldest_xid: 716,
            oldest_xid_db: 1,
            oldest_multi: 1,
            oldest_multi_db: 5,
            time_unix_secs: 1_700_000_000,
            oldest_commit_ts_xid: 100,
            newest_commit_ts_xid: 200,
            oldest_active_xid: 723,
        }
    }

    #[test]
    fn round_trip() {
        let cp = sample();
        let bytes = cp.encode();
        assert_eq!(bytes.len(), CheckPoint::SIZE_BYTES);
        assert_eq!(CheckPoint::decode(&bytes).unwrap(), cp);
        assert_eq!(cp.next_xid_32(), 724);
        assert_eq!(cp.next_xid_epoch(), 5);
    }

    #[test]
    fn field_offsets() {
        let bytes = sample().encode();
        let u32_at = |off: usize| u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
        assert_eq!(u32_at(8), 3);
        assert_eq!(bytes[16], 1);
        assert_eq!(u32_at(24), 724);
        assert_eq!(u32_at(28), 5);
        assert_eq!(u32_at(32), 13572);
        assert_eq!(u32_at(56), 5);
        assert_eq!(
            i64::from_le_bytes(bytes[64..72].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(u32_at(80), 723);
    }

    #[test]
    fn truncated_is_an_error() {
        let bytes = sample().encode();
        for len in 0..CheckPoint::SIZE_BYTES {
            assert!(matches!(
                CheckPoint::decode(&bytes[..len]),
                Err(RecordDecodeError::Truncated { .. })
            ));
        }
    }
}

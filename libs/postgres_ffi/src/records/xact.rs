//! Transaction resource manager (rmid 1): commit/abort (also of prepared transactions),
//! PREPARE, subtransaction assignment and invalidations (access/xact.h). Commit and abort
//! records are parsed like PostgreSQL's ParseCommitRecord / ParseAbortRecord.

use utils::lsn::Lsn;

use super::reader::Reader;
use super::smgr::read_rel_file_node;
use super::xact_prepare::{decode_prepare, XactPrepare};
use super::{RecordDecodeError, TimestampTz};
use crate::relfile::RelFileNode;

pub const XLOG_XACT_COMMIT: u8 = 0x00;
pub const XLOG_XACT_PREPARE: u8 = 0x10;
pub const XLOG_XACT_ABORT: u8 = 0x20;
pub const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
pub const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
pub const XLOG_XACT_ASSIGNMENT: u8 = 0x50;
pub const XLOG_XACT_INVALIDATIONS: u8 = 0x60;
/// Mask selecting the opcode in `xl_info`.
pub const XLOG_XACT_OPMASK: u8 = 0x70;
/// An `xl_xact_xinfo` word follows the fixed part of a commit/abort record.
pub const XLOG_XACT_HAS_INFO: u8 = 0x80;

/// `xinfo` bits: which optional parts a commit/abort record has.
pub const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
pub const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
pub const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;
pub const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
pub const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
pub const XACT_XINFO_HAS_ORIGIN: u32 = 1 << 5;
pub const XACT_XINFO_HAS_AE_LOCKS: u32 = 1 << 6;
pub const XACT_XINFO_HAS_GID: u32 = 1 << 7;
pub const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;

/// `xinfo` bits: actions recovery must perform.
pub const XACT_COMPLETION_APPLY_FEEDBACK: u32 = 1 << 29;
pub const XACT_COMPLETION_UPDATE_RELCACHE_FILE: u32 = 1 << 30;
pub const XACT_COMPLETION_FORCE_SYNC_COMMIT: u32 = 1 << 31;

/// `sizeof(SharedInvalidationMessage)`.
pub const SHARED_INVAL_MESSAGE_BYTES: usize = 16;

/// One `SharedInvalidationMessage` (a 16-byte union), kept raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SharedInvalMessage(pub [u8; SHARED_INVAL_MESSAGE_BYTES]);

impl SharedInvalMessage {
    /// The message type: >= 0 catcache ID, -1 catalog, -2 relcache, -3 smgr, -4 relmap,
    /// -5 snapshot.
    pub fn id(&self) -> i8 {
        self.0[0] as i8
    }
}

/// Reads `count` invalidation messages.
pub(crate) fn read_inval_messages(
    r: &mut Reader<'_>,
    count: usize,
    what: &'static str,
) -> Result<Vec<SharedInvalMessage>, RecordDecodeError> {
    r.vec_of(count, SHARED_INVAL_MESSAGE_BYTES, what, |r| {
        let mut msg = [0u8; SHARED_INVAL_MESSAGE_BYTES];
        msg.copy_from_slice(r.bytes(SHARED_INVAL_MESSAGE_BYTES, what)?);
        Ok(SharedInvalMessage(msg))
    })
}

/// `xl_xact_stats_item` (12 bytes): a statistics entry dropped with the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XactStatsItem {
    pub kind: i32,
    pub dboid: u32,
    pub objoid: u32,
}

/// Reads `count` 12-byte `xl_xact_stats_item`s.
pub(crate) fn read_stats_items(
    r: &mut Reader<'_>,
    count: usize,
    what: &'static str,
) -> Result<Vec<XactStatsItem>, RecordDecodeError> {
    r.vec_of(count, 12, what, |r| {
        Ok(XactStatsItem {
            kind: r.i32(what)?,
            dboid: r.u32(what)?,
            objoid: r.u32(what)?,
        })
    })
}

/// Reads `count` 12-byte `RelFileNode`s.
pub(crate) fn read_rel_file_nodes(
    r: &mut Reader<'_>,
    count: usize,
    what: &'static str,
) -> Result<Vec<RelFileNode>, RecordDecodeError> {
    r.vec_of(count, 12, what, |r| read_rel_file_node(r, what))
}

/// `xl_xact_origin` (replication origin progress; stored unaligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XactOrigin {
    pub origin_lsn: Lsn,
    pub origin_timestamp_us: TimestampTz,
}

/// A commit or abort record (plain or of a prepared transaction), parsed like
/// `xl_xact_parsed_commit` / `xl_xact_parsed_abort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XactParsedRecord {
    /// The transaction that ended: `twophase_xid` when present, else the record's `xl_xid`.
    pub xid: u32,
    /// Commit/abort time (TimestampTz: microseconds since 2000-01-01).
    pub xact_time_us: TimestampTz,
    /// `XACT_XINFO_*` / `XACT_COMPLETION_*` bits (0 without `XLOG_XACT_HAS_INFO`).
    pub xinfo: u32,
    /// MyDatabaseId (0 without XACT_XINFO_HAS_DBINFO).
    pub db_id: u32,
    /// MyDatabaseTableSpace (0 without XACT_XINFO_HAS_DBINFO).
    pub ts_id: u32,
    /// Subtransactions that end with this transaction.
    pub subxacts: Vec<u32>,
    /// Relations whose files are dropped by this commit/abort.
    pub xnodes: Vec<RelFileNode>,
    /// Statistics entries dropped (XACT_XINFO_HAS_DROPPED_STATS).
    pub dropped_stats: Vec<XactStatsItem>,
    /// Invalidation messages (commit records only).
    pub inval_msgs: Vec<SharedInvalMessage>,
    /// XID of the prepared transaction (COMMIT/ABORT PREPARED).
    pub twophase_xid: Option<u32>,
    /// GID of the prepared transaction (XACT_XINFO_HAS_GID).
    pub twophase_gid: Option<String>,
    pub origin: Option<XactOrigin>,
}

/// A decoded Transaction-rmgr record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XactRecord {
    Commit(XactParsedRecord),
    Abort(XactParsedRecord),
    CommitPrepared(XactParsedRecord),
    AbortPrepared(XactParsedRecord),
    Prepare(XactPrepare),
    /// `xl_xact_assignment`: xtop 0, nsubxacts 4, xsub 8.
    Assignment {
        xtop: u32,
        xsub: Vec<u32>,
    },
    /// `xl_xact_invals`: nmsgs 0, msgs 4 (logical decoding of in-progress transactions).
    Invalidations {
        msgs: Vec<SharedInvalMessage>,
    },
}

/// Decodes the main data of a Transaction-rmgr record; `info` is `xl_info`, `xid` the
/// record's `xl_xid`.
pub fn decode_xact(info: u8, xid: u32, main_data: &[u8]) -> Result<XactRecord, RecordDecodeError> {
    let mut r = Reader::new(main_data);
    let rec = match info & XLOG_XACT_OPMASK {
        XLOG_XACT_COMMIT => XactRecord::Commit(parse_commit_or_abort(info, xid, main_data, true)?),
        XLOG_XACT_ABORT => XactRecord::Abort(parse_commit_or_abort(info, xid, main_data, false)?),
        XLOG_XACT_COMMIT_PREPARED => {
            XactRecord::CommitPrepared(parse_commit_or_abort(info, xid, main_data, true)?)
        }
        XLOG_XACT_ABORT_PREPARED => {
            XactRecord::AbortPrepared(parse_commit_or_abort(info, xid, main_data, false)?)
        }
        XLOG_XACT_PREPARE => XactRecord::Prepare(decode_prepare(main_data)?),
        XLOG_XACT_ASSIGNMENT => {
            r.require(8, "xl_xact_assignment")?;
            let xtop = r.u32("xl_xact_assignment.xtop")?;
            let n = r.count_i32("xl_xact_assignment.nsubxacts")?;
            let xsub = r.u32_vec(n, "xl_xact_assignment.xsub")?;
            XactRecord::Assignment { xtop, xsub }
        }
        XLOG_XACT_INVALIDATIONS => {
            let n = r.count_i32("xl_xact_invals.nmsgs")?;
            let msgs = read_inval_messages(&mut r, n, "xl_xact_invals.msgs")?;
            XactRecord::Invalidations { msgs }
        }
        other => {
            return Err(RecordDecodeError::UnknownInfo {
                rmgr: "Transaction",
                info: other,
            })
        }
    };
    Ok(rec)
}

/// Parses `xl_xact_commit` / `xl_xact_abort` and the optional parts that follow, in order:
/// xinfo, dbinfo, subxacts, relfilenodes, dropped stats, invalidations (commit only),
/// twophase xid (+ gid), origin.
pub fn parse_commit_or_abort(
    info: u8,
    xid: u32,
    main_data: &[u8],
    is_commit: bool,
) -> Result<XactParsedRecord, RecordDecodeError> {
    let mut r = Reader::new(main_data);
    let xact_time_us = r.i64("xl_xact_commit/abort.xact_time")?;
    let xinfo = if info & XLOG_XACT_HAS_INFO != 0 {
        r.u32("xl_xact_xinfo")?
    } else {
        0
    };
    let mut parsed = XactParsedRecord {
        xid,
        xact_time_us,
        xinfo,
        db_id: 0,
        ts_id: 0,
        subxacts: Vec::new(),
        xnodes: Vec::new(),
        dropped_stats: Vec::new(),
        inval_msgs: Vec::new(),
        twophase_xid: None,
        twophase_gid: None,
        origin: None,
    };
    read_dbinfo_subxacts_rels_stats(&mut r, &mut parsed)?;
    if is_commit && xinfo & XACT_XINFO_HAS_INVALS != 0 {
        let n = r.count_i32("xl_xact_invals.nmsgs")?;
        parsed.inval_msgs = read_inval_messages(&mut r, n, "xl_xact_invals.msgs")?;
    }
    read_twophase_and_origin(&mut r, &mut parsed)?;
    Ok(parsed)
}

fn read_dbinfo_subxacts_rels_stats(
    r: &mut Reader<'_>,
    parsed: &mut XactParsedRecord,
) -> Result<(), RecordDecodeError> {
    let xinfo = parsed.xinfo;
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        parsed.db_id = r.u32("xl_xact_dbinfo.dbId")?;
        parsed.ts_id = r.u32("xl_xact_dbinfo.tsId")?;
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = r.count_i32("xl_xact_subxacts.nsubxacts")?;
        parsed.subxacts = r.u32_vec(n, "xl_xact_subxacts.subxacts")?;
    }
    if xinfo & XACT_XINFO_HAS_RELFILENODES != 0 {
        let n = r.count_i32("xl_xact_relfilenodes.nrels")?;
        parsed.xnodes = read_rel_file_nodes(r, n, "xl_xact_relfilenodes.xnodes")?;
    }
    if xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        let n = r.count_i32("xl_xact_stats_items.nitems")?;
        parsed.dropped_stats = read_stats_items(r, n, "xl_xact_stats_items.items")?;
    }
    Ok(())
}

fn read_twophase_and_origin(
    r: &mut Reader<'_>,
    parsed: &mut XactParsedRecord,
) -> Result<(), RecordDecodeError> {
    let xinfo = parsed.xinfo;
    if xinfo & XACT_XINFO_HAS_TWOPHASE != 0 {
        let twophase_xid = r.u32("xl_xact_twophase.xid")?;
        parsed.twophase_xid = Some(twophase_xid);
        parsed.xid = twophase_xid;
        if xinfo & XACT_XINFO_HAS_GID != 0 {
            parsed.twophase_gid = Some(r.c_string("twophase gid")?);
        }
    }
    if xinfo & XACT_XINFO_HAS_ORIGIN != 0 {
        parsed.origin = Some(XactOrigin {
            origin_lsn: r.lsn("xl_xact_origin.origin_lsn")?,
            origin_timestamp_us: r.i64("xl_xact_origin.origin_timestamp")?,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(out: &mut Vec<u8>, v: &[u32]) {
        out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }

    /// A commit record with every optional part, as xact.c would write it.
    fn full_commit() -> Vec<u8> {
        let xinfo = XACT_XINFO_HAS_DBINFO
            | XACT_XINFO_HAS_SUBXACTS
            | XACT_XINFO_HAS_RELFILENODES
            | XACT_XINFO_HAS_DROPPED_STATS
            | XACT_XINFO_HAS_INVALS
            | XACT_XINFO_HAS_TWOPHASE
            | XACT_XINFO_HAS_GID
            | XACT_XINFO_HAS_ORIGIN;
        let mut b = 1234i64.to_le_bytes().to_vec();
        w(&mut b, &[xinfo, 5, 1663]);
        w(&mut b, &[2, 801, 802]);
        w(&mut b, &[1, 1663, 5, 16384]);
        w(&mut b, &[1, 1, 5, 16384]);
        w(&mut b, &[1]);
        b.extend_from_slice(&[0xFD; 16]);
        w(&mut b, &[777]);
        b.extend_from_slice(b"gid-1\0");
        b.extend_from_slice(&0x0100_0000u64.to_le_bytes());
        b.extend_from_slice(&99i64.to_le_bytes());
        b
    }

    #[test]
    fn minimal_commit_without_xinfo() {
        let b = 42i64.to_le_bytes();
        let rec = decode_xact(XLOG_XACT_COMMIT, 700, &b).unwrap();
        let XactRecord::Commit(p) = rec else {
            panic!("expected Commit")
        };
        assert_eq!((p.xid, p.xact_time_us, p.xinfo), (700, 42, 0));
        assert!(p.subxacts.is_empty() && p.xnodes.is_empty() && p.twophase_xid.is_none());
        assert!(decode_xact(XLOG_XACT_COMMIT, 700, &b[..7]).is_err());
    }

    #[test]
    fn full_commit_prepared() {
        let b = full_commit();
        let info = XLOG_XACT_COMMIT_PREPARED | XLOG_XACT_HAS_INFO;
        let XactRecord::CommitPrepared(p) = decode_xact(info, 0, &b).unwrap() else {
            panic!("expected CommitPrepared")
        };
        assert_eq!(p.xid, 777);
        assert_eq!((p.db_id, p.ts_id), (5, 1663));
        assert_eq!(p.subxacts, vec![801, 802]);
        assert_eq!(
            p.xnodes,
            vec![RelFileNode {
                spcnode: 1663,
                dbnode: 5,
                relnode: 16384
            }]
        );
        assert_eq!(
            p.dropped_stats,
            vec![XactStatsItem {
                kind: 1,
                dboid: 5,
                objoid: 16384
            }]
        );
        assert_eq!(p.inval_msgs.len(), 1);
        assert_eq!(p.inval_msgs[0].id(), -3);
        assert_eq!(p.twophase_xid, Some(777));
        assert_eq!(p.twophase_gid.as_deref(), Some("gid-1"));
        assert_eq!(
            p.origin,
            Some(XactOrigin {
                origin_lsn: Lsn(0x0100_0000),
                origin_timestamp_us: 99
            })
        );
        for len in 0..b.len() {
            assert!(decode_xact(info, 0, &b[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn abort_has_no_invalidations() {
        let xinfo = XACT_XINFO_HAS_RELFILENODES | XACT_XINFO_HAS_INVALS;
        let mut b = 5i64.to_le_bytes().to_vec();
        w(&mut b, &[xinfo, 1, 1663, 5, 16390]);
        let info = XLOG_XACT_ABORT | XLOG_XACT_HAS_INFO;
        let XactRecord::Abort(p) = decode_xact(info, 900, &b).unwrap() else {
            panic!("expected Abort")
        };
        assert_eq!(p.xid, 900);
        assert_eq!(p.xnodes.len(), 1);
        assert!(p.inval_msgs.is_empty());
        // The same bytes as a commit need the invalidation count.
        assert!(decode_xact(XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO, 900, &b).is_err());
    }

    #[test]
    fn abort_prepared_with_gid() {
        let xinfo = XACT_XINFO_HAS_TWOPHASE | XACT_XINFO_HAS_GID;
        let mut b = 5i64.to_le_bytes().to_vec();
        w(&mut b, &[xinfo, 321]);
        b.extend_from_slice(b"tx\0");
        let info = XLOG_XACT_ABORT_PREPARED | XLOG_XACT_HAS_INFO;
        let XactRecord::AbortPrepared(p) = decode_xact(info, 0, &b).unwrap() else {
            panic!("expected AbortPrepared")
        };
        assert_eq!((p.xid, p.twophase_gid.as_deref()), (321, Some("tx")));
        assert!(decode_xact(info, 0, &b[..b.len() - 1]).is_err());
    }

    #[test]
    fn negative_counts_are_errors() {
        let mut b = 5i64.to_le_bytes().to_vec();
        w(&mut b, &[XACT_XINFO_HAS_SUBXACTS, u32::MAX]);
        assert!(matches!(
            decode_xact(XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO, 1, &b),
            Err(RecordDecodeError::InvalidCount { count: -1, .. })
        ));
    }

    #[test]
    fn assignment_and_invalidations() {
        let mut b = Vec::new();
        w(&mut b, &[700, 2, 701, 702]);
        assert_eq!(
            decode_xact(XLOG_XACT_ASSIGNMENT, 700, &b).unwrap(),
            XactRecord::Assignment {
                xtop: 700,
                xsub: vec![701, 702]
            }
        );
        assert!(decode_xact(XLOG_XACT_ASSIGNMENT, 700, &b[..15]).is_err());
        let mut b = Vec::new();
        w(&mut b, &[1]);
        b.extend_from_slice(&[0xFE; 16]);
        let XactRecord::Invalidations { msgs } =
            decode_xact(XLOG_XACT_INVALIDATIONS, 0, &b).unwrap()
        else {
            panic!("expected Invalidations")
        };
        assert_eq!(msgs.len(), 1);
        assert!(decode_xact(XLOG_XACT_INVALIDATIONS, 0, &b[..19]).is_err());
        assert!(matches!(
            decode_xact(0x70, 0, &b),
            Err(RecordDecodeError::UnknownInfo { info: 0x70, .. })
        ));
    }
}

//! XLOG_XACT_PREPARE: the main data is the whole two-phase state file (without its trailing
//! CRC), starting with `xl_xact_prepare` (TwoPhaseFileHeader). Each part is padded to
//! MAXALIGN (8 bytes), as ParsePrepareRecord reads it.
//!
//! `xl_xact_prepare` on x86-64 (sizeof = 72):
//! magic 0, total_len 4, xid 8, database 12, prepared_at 16, owner 24, nsubxacts 28,
//! ncommitrels 32, nabortrels 36, ncommitstats 40, nabortstats 44, ninvalmsgs 48,
//! initfileinval 52 (+1 padding), gidlen 54, origin_lsn 56, origin_timestamp 64.

use utils::lsn::Lsn;

use super::reader::{fixed_c_string, Reader};
use super::xact::{
    read_inval_messages, read_rel_file_nodes, read_stats_items, SharedInvalMessage, XactStatsItem,
};
use super::{RecordDecodeError, TimestampTz};
use crate::relfile::RelFileNode;

/// `TWOPHASE_MAGIC`: format identifier of two-phase state files.
pub const TWOPHASE_MAGIC: u32 = 0x57F9_4534;

/// `sizeof(xl_xact_prepare)` (already a multiple of MAXALIGN).
pub const XACT_PREPARE_HEADER_BYTES: usize = 72;

const MAXALIGN_BYTES: usize = 8;

/// The fixed `xl_xact_prepare` header, fields as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XactPrepareHeader {
    /// Should be [`TWOPHASE_MAGIC`]; not enforced here.
    pub magic: u32,
    /// Length of the state file (including the CRC that is not part of the WAL record).
    pub total_len: u32,
    /// XID of the prepared transaction.
    pub xid: u32,
    /// Database OID.
    pub database: u32,
    /// Preparation time (TimestampTz: microseconds since 2000-01-01).
    pub prepared_at_us: TimestampTz,
    /// Role OID of the owner.
    pub owner: u32,
    pub nsubxacts: i32,
    pub ncommitrels: i32,
    pub nabortrels: i32,
    pub ncommitstats: i32,
    pub nabortstats: i32,
    pub ninvalmsgs: i32,
    /// The relcache init file needs invalidation.
    pub initfileinval: bool,
    /// Length of the GID including its NUL.
    pub gidlen: u16,
    pub origin_lsn: Lsn,
    pub origin_timestamp_us: TimestampTz,
}

/// A decoded PREPARE TRANSACTION record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XactPrepare {
    pub header: XactPrepareHeader,
    /// Global transaction identifier.
    pub gid: String,
    pub subxacts: Vec<u32>,
    /// Relations to drop if the transaction commits.
    pub commit_rels: Vec<RelFileNode>,
    /// Relations to drop if the transaction aborts.
    pub abort_rels: Vec<RelFileNode>,
    pub commit_stats: Vec<XactStatsItem>,
    pub abort_stats: Vec<XactStatsItem>,
    pub inval_msgs: Vec<SharedInvalMessage>,
    /// The complete main data: the pageserver stores it as the pg_twophase file.
    pub raw: Vec<u8>,
}

/// Decodes XLOG_XACT_PREPARE main data.
pub fn decode_prepare(main_data: &[u8]) -> Result<XactPrepare, RecordDecodeError> {
    let mut r = Reader::new(main_data);
    let header = decode_prepare_header(&mut r)?;
    let gid_field = aligned_part(&mut r, usize::from(header.gidlen), "twophase gid")?;
    let gid = fixed_c_string(gid_field);
    let subxacts = aligned(&mut r, header.nsubxacts, "twophase subxacts", |r, n, w| {
        r.u32_vec(n, w)
    })?;
    let commit_rels = aligned(
        &mut r,
        header.ncommitrels,
        "twophase commitrels",
        read_rel_file_nodes,
    )?;
    let abort_rels = aligned(
        &mut r,
        header.nabortrels,
        "twophase abortrels",
        read_rel_file_nodes,
    )?;
    let commit_stats = aligned(
        &mut r,
        header.ncommitstats,
        "twophase commitstats",
        read_stats_items,
    )?;
    let abort_stats = aligned(
        &mut r,
        header.nabortstats,
        "twophase abortstats",
        read_stats_items,
    )?;
    let inval_msgs = aligned(
        &mut r,
        header.ninvalmsgs,
        "twophase invalmsgs",
        read_inval_messages,
    )?;
    Ok(XactPrepare {
        header,
        gid,
        subxacts,
        commit_rels,
        abort_rels,
        commit_stats,
        abort_stats,
        inval_msgs,
        raw: main_data.to_vec(),
    })
}

/// Decodes only the 72-byte `xl_xact_prepare` header.
pub fn decode_prepare_header_bytes(
    main_data: &[u8],
) -> Result<XactPrepareHeader, RecordDecodeError> {
    decode_prepare_header(&mut Reader::new(main_data))
}

fn decode_prepare_header(r: &mut Reader<'_>) -> Result<XactPrepareHeader, RecordDecodeError> {
    const W: &str = "xl_xact_prepare";
    r.require(XACT_PREPARE_HEADER_BYTES, W)?;
    let magic = r.u32(W)?;
    let total_len = r.u32(W)?;
    let xid = r.u32(W)?;
    let database = r.u32(W)?;
    let prepared_at_us = r.i64(W)?;
    let owner = r.u32(W)?;
    let counts = [
        r.i32(W)?,
        r.i32(W)?,
        r.i32(W)?,
        r.i32(W)?,
        r.i32(W)?,
        r.i32(W)?,
    ];
    let initfileinval = r.bool(W)?;
    r.skip(1, W)?;
    let gidlen = r.u16(W)?;
    Ok(XactPrepareHeader {
        magic,
        total_len,
        xid,
        database,
        prepared_at_us,
        owner,
        nsubxacts: counts[0],
        ncommitrels: counts[1],
        nabortrels: counts[2],
        ncommitstats: counts[3],
        nabortstats: counts[4],
        ninvalmsgs: counts[5],
        initfileinval,
        gidlen,
        origin_lsn: r.lsn(W)?,
        origin_timestamp_us: r.i64(W)?,
    })
}

/// Reads a `len_bytes` part and the padding up to the next MAXALIGN boundary.
fn aligned_part<'a>(
    r: &mut Reader<'a>,
    len_bytes: usize,
    what: &'static str,
) -> Result<&'a [u8], RecordDecodeError> {
    let part = r.bytes(len_bytes, what)?;
    let pad = (MAXALIGN_BYTES - len_bytes % MAXALIGN_BYTES) % MAXALIGN_BYTES;
    r.skip(pad, what)?;
    Ok(part)
}

/// Reads a MAXALIGN-padded array of `count` elements with `read`.
fn aligned<T>(
    r: &mut Reader<'_>,
    count: i32,
    what: &'static str,
    read: impl FnOnce(&mut Reader<'_>, usize, &'static str) -> Result<Vec<T>, RecordDecodeError>,
) -> Result<Vec<T>, RecordDecodeError> {
    let n = usize::try_from(count).map_err(|_| RecordDecodeError::InvalidCount {
        what,
        count: i64::from(count),
    })?;
    let start = r.position();
    let items = read(r, n, what)?;
    // Skip the padding after the array.
    let used = r.position() - start;
    let pad = (MAXALIGN_BYTES - used % MAXALIGN_BYTES) % MAXALIGN_BYTES;
    r.skip(pad, what)?;
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::xact::{decode_xact, XactRecord, XLOG_XACT_PREPARE};

    fn w(out: &mut Vec<u8>, v: &[u32]) {
        out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }

    /// A prepare record like twophase.c's StartPrepare/EndPrepare would produce.
    fn prepare_record() -> Vec<u8> {
        let mut b = Vec::new();
        w(&mut b, &[TWOPHASE_MAGIC, 400, 750, 5]);
        b.extend_from_slice(&1000i64.to_le_bytes());
        w(&mut b, &[10, 1, 1, 0, 0, 1, 1]); // owner, nsub, ncommitrels, nabortrels, ncs, nas, ninval
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&6u16.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&0i64.to_le_bytes());
        assert_eq!(b.len(), XACT_PREPARE_HEADER_BYTES);
        b.extend_from_slice(b"my-tx\0\0\0"); // gid, padded to 8
        w(&mut b, &[751, 0]); // subxacts, padded
        w(&mut b, &[1663, 5, 16384, 0]); // commit rels, padded
        b.extend_from_slice(&[0xFF; 16]); // one invalidation message
        b.extend_from_slice(b"rmgr records follow");
        b
    }

    #[test]
    fn prepare() {
        let b = prepare_record();
        let XactRecord::Prepare(p) = decode_xact(XLOG_XACT_PREPARE, 750, &b).unwrap() else {
            panic!("expected Prepare")
        };
        assert_eq!(p.header.magic, TWOPHASE_MAGIC);
        assert_eq!(
            (p.header.xid, p.header.database, p.header.owner),
            (750, 5, 10)
        );
        assert_eq!(p.header.prepared_at_us, 1000);
        assert!(p.header.initfileinval);
        assert_eq!(p.header.gidlen, 6);
        assert_eq!(p.gid, "my-tx");
        assert_eq!(p.subxacts, vec![751]);
        assert_eq!(
            p.commit_rels,
            vec![RelFileNode {
                spcnode: 1663,
                dbnode: 5,
                relnode: 16384
            }]
        );
        assert!(p.abort_rels.is_empty() && p.commit_stats.is_empty());
        assert_eq!(p.inval_msgs.len(), 1);
        assert_eq!(p.raw, b);
        assert_eq!(decode_prepare_header_bytes(&b).unwrap(), p.header);
    }

    #[test]
    fn truncated_prepare() {
        let b = prepare_record();
        let parts_end = b.len() - b"rmgr records follow".len();
        for len in 0..parts_end {
            assert!(decode_prepare(&b[..len]).is_err(), "len {len}");
        }
        let mut neg = b.clone();
        neg[28..32].copy_from_slice(&(-1i32).to_le_bytes());
        assert!(matches!(
            decode_prepare(&neg),
            Err(RecordDecodeError::InvalidCount { count: -1, .. })
        ));
    }
}

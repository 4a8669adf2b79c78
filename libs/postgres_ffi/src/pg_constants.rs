//! Constants of PostgreSQL 15's storage and WAL formats.
//!
//! Values are taken from PostgreSQL 15's headers (`pg_config.h` defaults,
//! `access/xlog_internal.h`, `access/xlogrecord.h`, `access/rmgrlist.h`,
//! `catalog/pg_control.h`). All multi-byte fields are little-endian on disk,
//! since PostgreSQL writes its native layout and we only support x86-64/aarch64 hosts.

/// Size of a relation data page (BLCKSZ).
pub const BLCKSZ: usize = 8192;

/// Size of a WAL page (XLOG_BLCKSZ).
pub const XLOG_BLCKSZ: usize = 8192;

/// Default WAL segment size: 16 MiB.
pub const WAL_SEGMENT_SIZE: usize = 16 * 1024 * 1024;

/// Smallest WAL segment size initdb accepts (WalSegMinSize).
pub const WAL_SEGMENT_MIN_SIZE: usize = 1024 * 1024;

/// Largest WAL segment size initdb accepts (WalSegMaxSize).
pub const WAL_SEGMENT_MAX_SIZE: usize = 1024 * 1024 * 1024;

/// Alignment of WAL records and page headers (MAXIMUM_ALIGNOF on 64-bit hosts).
pub const MAXIMUM_ALIGNOF: usize = 8;

/// Rounds `len` up to a multiple of [`MAXIMUM_ALIGNOF`] (PostgreSQL's MAXALIGN).
pub const fn maxalign(len: usize) -> usize {
    (len + MAXIMUM_ALIGNOF - 1) & !(MAXIMUM_ALIGNOF - 1)
}

/// True if `size_bytes` is a WAL segment size PostgreSQL accepts (IsValidWalSegSize).
pub const fn is_valid_wal_segment_size(size_bytes: usize) -> bool {
    size_bytes.is_power_of_two()
        && size_bytes >= WAL_SEGMENT_MIN_SIZE
        && size_bytes <= WAL_SEGMENT_MAX_SIZE
}

// ---------------------------------------------------------------------------
// WAL page headers (access/xlog_internal.h)
// ---------------------------------------------------------------------------

/// Magic number of WAL pages written by PostgreSQL 15.
pub const XLOG_PAGE_MAGIC: u16 = 0xD110;

/// The first record on the page continues a record from the previous page.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// The page has the long header (first page of a segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// Backup blocks on this page are not needed for crash recovery.
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// Replaces a missing continuation record (the aborted record is to be ignored).
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// All valid xlp_info flag bits.
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// Size of the short page header, MAXALIGNed (SizeOfXLogShortPHD).
pub const XLOG_SIZE_OF_XLOG_SHORT_PHD: usize = 24;
/// Size of the long page header, MAXALIGNed (SizeOfXLogLongPHD).
pub const XLOG_SIZE_OF_XLOG_LONG_PHD: usize = 40;

// ---------------------------------------------------------------------------
// WAL records (access/xlogrecord.h)
// ---------------------------------------------------------------------------

/// Size of the fixed XLogRecord header (SizeOfXLogRecord).
pub const XLOG_SIZE_OF_XLOG_RECORD: usize = 24;
/// Byte offset of `xl_crc` in the record header: the CRC covers the header up to here.
pub const XLOG_RECORD_CRC_OFFSET: usize = 20;

/// Largest record this crate accepts. PostgreSQL 15 cannot allocate more than
/// MaxAllocSize (1 GB - 1) for a record buffer, so nothing longer is valid WAL.
pub const MAX_RECORD_LEN_BYTES: usize = 1024 * 1024 * 1024;

/// Bits of xl_info reserved for the WAL machinery itself.
pub const XLR_INFO_MASK: u8 = 0x0F;
/// Bits of xl_info that the resource manager may use.
pub const XLR_RMGR_INFO_MASK: u8 = 0xF0;
/// xl_info flag: the record changes relation files in ways redo cannot see from block refs.
pub const XLR_SPECIAL_REL_UPDATE: u8 = 0x01;
/// xl_info flag: full-page images are included for wal_consistency_checking.
pub const XLR_CHECK_CONSISTENCY: u8 = 0x02;

/// Highest block reference id.
pub const XLR_MAX_BLOCK_ID: u8 = 32;
/// Main data follows, with a 1-byte length.
pub const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
/// Main data follows, with a 4-byte length.
pub const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
/// A 2-byte replication origin id follows.
pub const XLR_BLOCK_ID_ORIGIN: u8 = 253;
/// A 4-byte top-level transaction id follows.
pub const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;

/// Size of XLogRecordBlockHeader (id, fork_flags, data_length).
pub const SIZE_OF_XLOG_RECORD_BLOCK_HEADER: usize = 4;
/// Size of XLogRecordBlockImageHeader (length, hole_offset, bimg_info).
pub const SIZE_OF_XLOG_RECORD_BLOCK_IMAGE_HEADER: usize = 5;
/// Size of XLogRecordBlockCompressHeader (hole_length).
pub const SIZE_OF_XLOG_RECORD_BLOCK_COMPRESS_HEADER: usize = 2;
/// Size of a RelFileNode (spcNode, dbNode, relNode).
pub const SIZE_OF_REL_FILE_NODE: usize = 12;

/// Mask of the fork number in fork_flags.
pub const BKPBLOCK_FORK_MASK: u8 = 0x0F;
/// Mask of the flag bits in fork_flags.
pub const BKPBLOCK_FLAG_MASK: u8 = 0xF0;
/// The block reference carries a full-page image.
pub const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
/// The block reference carries data.
pub const BKPBLOCK_HAS_DATA: u8 = 0x20;
/// Redo will re-initialize the page.
pub const BKPBLOCK_WILL_INIT: u8 = 0x40;
/// The RelFileNode is omitted: same as the previous block reference.
pub const BKPBLOCK_SAME_REL: u8 = 0x80;

/// The page image has a hole (a run of zeros that was left out).
pub const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// The page image must be restored during replay.
pub const BKPIMAGE_APPLY: u8 = 0x02;
/// The page image is compressed with pglz.
pub const BKPIMAGE_COMPRESS_PGLZ: u8 = 0x04;
/// The page image is compressed with LZ4.
pub const BKPIMAGE_COMPRESS_LZ4: u8 = 0x08;
/// The page image is compressed with Zstandard.
pub const BKPIMAGE_COMPRESS_ZSTD: u8 = 0x10;
/// All compression bits.
pub const BKPIMAGE_COMPRESS_MASK: u8 =
    BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD;
/// All bimg_info bits PostgreSQL 15 defines.
pub const BKPIMAGE_ALL_FLAGS: u8 = BKPIMAGE_HAS_HOLE | BKPIMAGE_APPLY | BKPIMAGE_COMPRESS_MASK;

/// True if bimg_info says the image is compressed (BKPIMAGE_COMPRESSED).
pub const fn bkpimage_is_compressed(bimg_info: u8) -> bool {
    bimg_info & BKPIMAGE_COMPRESS_MASK != 0
}

// ---------------------------------------------------------------------------
// Resource managers (access/rmgrlist.h, access/rmgr.h)
// ---------------------------------------------------------------------------

pub const RM_XLOG_ID: u8 = 0;
pub const RM_XACT_ID: u8 = 1;
pub const RM_SMGR_ID: u8 = 2;
pub const RM_CLOG_ID: u8 = 3;
pub const RM_DBASE_ID: u8 = 4;
pub const RM_TBLSPC_ID: u8 = 5;
pub const RM_MULTIXACT_ID: u8 = 6;
pub const RM_RELMAP_ID: u8 = 7;
pub const RM_STANDBY_ID: u8 = 8;
pub const RM_HEAP2_ID: u8 = 9;
pub const RM_HEAP_ID: u8 = 10;
pub const RM_BTREE_ID: u8 = 11;
pub const RM_HASH_ID: u8 = 12;
pub const RM_GIN_ID: u8 = 13;
pub const RM_GIST_ID: u8 = 14;
pub const RM_SEQ_ID: u8 = 15;
pub const RM_SPGIST_ID: u8 = 16;
pub const RM_BRIN_ID: u8 = 17;
pub const RM_COMMIT_TS_ID: u8 = 18;
pub const RM_REPLORIGIN_ID: u8 = 19;
pub const RM_GENERIC_ID: u8 = 20;
pub const RM_LOGICALMSG_ID: u8 = 21;
/// Highest built-in resource manager id in PostgreSQL 15.
pub const RM_MAX_BUILTIN_ID: u8 = RM_LOGICALMSG_ID;
/// Lowest id available to custom (extension) resource managers.
pub const RM_MIN_CUSTOM_ID: u8 = 128;
/// Our compute's custom resource manager for heap command ids (pgxn/neon_rmgr), whose
/// records reference heap pages like heap records do. pg_waldump (and `rmgr_name`) call it
/// `custom134`, since pg_waldump cannot load the library.
pub const RM_NEON_CID_ID: u8 = 134;
/// The name neon_rmgr registers for [`RM_NEON_CID_ID`] (server logs, pg_walinspect).
pub const RM_NEON_CID_NAME: &str = "neon_cid";

/// Names of the built-in resource managers, indexed by id, as pg_waldump prints them.
pub const BUILTIN_RMGR_NAMES: [&str; RM_MAX_BUILTIN_ID as usize + 1] = [
    "XLOG",
    "Transaction",
    "Storage",
    "CLOG",
    "Database",
    "Tablespace",
    "MultiXact",
    "RelMap",
    "Standby",
    "Heap2",
    "Heap",
    "Btree",
    "Hash",
    "Gin",
    "Gist",
    "Sequence",
    "SPGist",
    "BRIN",
    "CommitTs",
    "ReplicationOrigin",
    "Generic",
    "LogicalMessage",
];

/// True if PostgreSQL 15 accepts `rmid` in a record (RmgrIdIsValid).
pub const fn rmgr_id_is_valid(rmid: u8) -> bool {
    rmid <= RM_MAX_BUILTIN_ID || rmid >= RM_MIN_CUSTOM_ID
}

/// The resource manager's name as pg_waldump prints it: the built-in name, `custom###`
/// for ids 128..=255, or `None` for ids PostgreSQL 15 does not define.
pub fn rmgr_name(rmid: u8) -> Option<std::borrow::Cow<'static, str>> {
    if let Some(name) = BUILTIN_RMGR_NAMES.get(rmid as usize) {
        Some(std::borrow::Cow::Borrowed(name))
    } else if rmid >= RM_MIN_CUSTOM_ID {
        Some(std::borrow::Cow::Owned(format!("custom{rmid:03}")))
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// XLOG resource manager record types (catalog/pg_control.h)
// ---------------------------------------------------------------------------

pub const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
pub const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
pub const XLOG_NOOP: u8 = 0x20;
pub const XLOG_NEXTOID: u8 = 0x30;
/// Ends the segment: the rest of it is padding and the next record starts a new segment.
pub const XLOG_SWITCH: u8 = 0x40;
pub const XLOG_BACKUP_END: u8 = 0x50;
pub const XLOG_PARAMETER_CHANGE: u8 = 0x60;
pub const XLOG_RESTORE_POINT: u8 = 0x70;
pub const XLOG_FPW_CHANGE: u8 = 0x80;
pub const XLOG_END_OF_RECOVERY: u8 = 0x90;
pub const XLOG_FPI_FOR_HINT: u8 = 0xA0;
pub const XLOG_FPI: u8 = 0xB0;
pub const XLOG_OVERWRITE_CONTRECORD: u8 = 0xD0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmgr_names_match_pg_waldump() {
        assert_eq!(rmgr_name(RM_XLOG_ID).unwrap(), "XLOG");
        assert_eq!(rmgr_name(RM_HEAP_ID).unwrap(), "Heap");
        assert_eq!(rmgr_name(RM_LOGICALMSG_ID).unwrap(), "LogicalMessage");
        assert_eq!(rmgr_name(128).unwrap(), "custom128");
        assert_eq!(rmgr_name(RM_NEON_CID_ID).unwrap(), "custom134");
        assert_eq!(rmgr_name(255).unwrap(), "custom255");
        assert_eq!(rmgr_name(22), None);
        assert_eq!(rmgr_name(127), None);
        assert!(rmgr_id_is_valid(21) && !rmgr_id_is_valid(22) && rmgr_id_is_valid(200));
    }

    #[test]
    fn alignment_and_segment_sizes() {
        assert_eq!(maxalign(0), 0);
        assert_eq!(maxalign(1), 8);
        assert_eq!(maxalign(54), 56);
        assert_eq!(maxalign(36), XLOG_SIZE_OF_XLOG_LONG_PHD);
        assert!(is_valid_wal_segment_size(WAL_SEGMENT_SIZE));
        assert!(!is_valid_wal_segment_size(3 * 1024 * 1024));
        assert!(!is_valid_wal_segment_size(512 * 1024));
    }
}

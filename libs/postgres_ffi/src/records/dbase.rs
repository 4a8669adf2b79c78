//! Database resource manager (rmid 4): CREATE DATABASE / DROP DATABASE
//! (commands/dbcommands_xlog.h).

use super::reader::Reader;
use super::RecordDecodeError;

pub const XLOG_DBASE_CREATE_FILE_COPY: u8 = 0x00;
pub const XLOG_DBASE_CREATE_WAL_LOG: u8 = 0x10;
pub const XLOG_DBASE_DROP: u8 = 0x20;

/// A decoded Database-rmgr record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbaseRecord {
    /// `xl_dbase_create_file_copy_rec` (16 bytes): copy the directory of
    /// (`src_tablespace_id`, `src_db_id`) to (`tablespace_id`, `db_id`).
    CreateFileCopy {
        db_id: u32,
        tablespace_id: u32,
        src_db_id: u32,
        src_tablespace_id: u32,
    },
    /// `xl_dbase_create_wal_log_rec` (8 bytes): create an empty database directory; its
    /// contents are WAL-logged block by block afterwards.
    CreateWalLog { db_id: u32, tablespace_id: u32 },
    /// `xl_dbase_drop_rec`: db_id at 0, ntablespaces at 4, tablespace_ids at 8.
    Drop {
        db_id: u32,
        tablespace_ids: Vec<u32>,
    },
}

/// Decodes the main data of a Database-rmgr record; `info` is `xl_info`.
pub fn decode_dbase(info: u8, main_data: &[u8]) -> Result<DbaseRecord, RecordDecodeError> {
    let mut r = Reader::new(main_data);
    match info & 0xF0 {
        XLOG_DBASE_CREATE_FILE_COPY => {
            const W: &str = "xl_dbase_create_file_copy_rec";
            r.require(16, W)?;
            Ok(DbaseRecord::CreateFileCopy {
                db_id: r.u32(W)?,
                tablespace_id: r.u32(W)?,
                src_db_id: r.u32(W)?,
                src_tablespace_id: r.u32(W)?,
            })
        }
        XLOG_DBASE_CREATE_WAL_LOG => {
            const W: &str = "xl_dbase_create_wal_log_rec";
            r.require(8, W)?;
            Ok(DbaseRecord::CreateWalLog {
                db_id: r.u32(W)?,
                tablespace_id: r.u32(W)?,
            })
        }
        XLOG_DBASE_DROP => {
            const W: &str = "xl_dbase_drop_rec";
            r.require(8, W)?;
            let db_id = r.u32(W)?;
            let ntablespaces = r.count_i32("xl_dbase_drop_rec.ntablespaces")?;
            let tablespace_ids = r.u32_vec(ntablespaces, "xl_dbase_drop_rec.tablespace_ids")?;
            Ok(DbaseRecord::Drop {
                db_id,
                tablespace_ids,
            })
        }
        other => Err(RecordDecodeError::UnknownInfo {
            rmgr: "Database",
            info: other,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn create_file_copy_and_wal_log() {
        let b = words(&[16400, 1663, 1, 1663]);
        assert_eq!(
            decode_dbase(XLOG_DBASE_CREATE_FILE_COPY, &b).unwrap(),
            DbaseRecord::CreateFileCopy {
                db_id: 16400,
                tablespace_id: 1663,
                src_db_id: 1,
                src_tablespace_id: 1663
            }
        );
        assert!(decode_dbase(XLOG_DBASE_CREATE_FILE_COPY, &b[..15]).is_err());
        assert_eq!(
            decode_dbase(XLOG_DBASE_CREATE_WAL_LOG, &b[..8]).unwrap(),
            DbaseRecord::CreateWalLog {
                db_id: 16400,
                tablespace_id: 1663
            }
        );
        assert!(decode_dbase(XLOG_DBASE_CREATE_WAL_LOG, &b[..7]).is_err());
    }

    #[test]
    fn drop() {
        let b = words(&[16400, 2, 1663, 16500]);
        assert_eq!(
            decode_dbase(XLOG_DBASE_DROP, &b).unwrap(),
            DbaseRecord::Drop {
                db_id: 16400,
                tablespace_ids: vec![1663, 16500]
            }
        );
        assert!(decode_dbase(XLOG_DBASE_DROP, &b[..15]).is_err());
        let neg = words(&[16400, u32::MAX]);
        assert!(matches!(
            decode_dbase(XLOG_DBASE_DROP, &neg),
            Err(RecordDecodeError::InvalidCount { count: -1, .. })
        ));
        assert!(decode_dbase(0x30, &b).is_err());
    }
}

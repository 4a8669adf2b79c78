//! XLOG resource manager (rmid 0): checkpoints, NEXTOID, SWITCH, FPI, and the records the
//! pageserver only needs to recognise (catalog/pg_control.h, access/xlog_internal.h).

use utils::lsn::Lsn;

use super::checkpoint::CheckPoint;
use super::reader::{fixed_c_string, Reader};
use super::{RecordDecodeError, TimestampTz};

pub use crate::pg_constants::{
    XLOG_BACKUP_END, XLOG_CHECKPOINT_ONLINE, XLOG_CHECKPOINT_SHUTDOWN, XLOG_END_OF_RECOVERY,
    XLOG_FPI, XLOG_FPI_FOR_HINT, XLOG_FPW_CHANGE, XLOG_NEXTOID, XLOG_NOOP,
    XLOG_OVERWRITE_CONTRECORD, XLOG_PARAMETER_CHANGE, XLOG_RESTORE_POINT, XLOG_SWITCH,
};

/// `MAXFNAMELEN`: size of `xl_restore_point.rp_name`.
const RESTORE_POINT_NAME_BYTES: usize = 64;

/// A decoded XLOG-rmgr record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XlogRecord {
    /// Shutdown checkpoint (main data: `CheckPoint`).
    CheckpointShutdown(CheckPoint),
    /// Online checkpoint (main data: `CheckPoint`).
    CheckpointOnline(CheckPoint),
    /// No-op record (arbitrary payload, ignored).
    Noop,
    /// OID counter advanced; the value is the new next OID.
    NextOid { next_oid: u32 },
    /// WAL segment switch: the rest of the segment is unused.
    Switch,
    /// End of an online backup that started at `start_lsn`.
    BackupEnd { start_lsn: Lsn },
    /// Changed settings that matter for hot standby.
    ParameterChange(ParameterChange),
    /// Named restore point (`pg_create_restore_point`).
    RestorePoint { time_us: TimestampTz, name: String },
    /// `full_page_writes` was changed.
    FpwChange { full_page_writes: bool },
    /// End of recovery without an end-of-recovery checkpoint.
    EndOfRecovery {
        end_time_us: TimestampTz,
        this_timeline_id: u32,
        prev_timeline_id: u32,
    },
    /// Full-page image written for a hint-bit change (image is in the block references).
    FpiForHint,
    /// Full-page image(s) (images are in the block references).
    Fpi,
    /// A partial (continuation) record at `overwritten_lsn` was abandoned.
    OverwriteContrecord {
        overwritten_lsn: Lsn,
        overwrite_time_us: TimestampTz,
    },
}

/// `xl_parameter_change` (sizeof = 28: six ints, then two bools and 2 padding bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParameterChange {
    pub max_connections: i32,
    pub max_worker_processes: i32,
    pub max_wal_senders: i32,
    pub max_prepared_xacts: i32,
    pub max_locks_per_xact: i32,
    pub wal_level: i32,
    pub wal_log_hints: bool,
    pub track_commit_timestamp: bool,
}

/// Decodes the main data of an XLOG-rmgr record; `info` is `xl_info` (low 4 bits ignored).
pub fn decode_xlog(info: u8, main_data: &[u8]) -> Result<XlogRecord, RecordDecodeError> {
    let mut r = Reader::new(main_data);
    let rec = match info & 0xF0 {
        XLOG_CHECKPOINT_SHUTDOWN => XlogRecord::CheckpointShutdown(CheckPoint::decode(main_data)?),
        XLOG_CHECKPOINT_ONLINE => XlogRecord::CheckpointOnline(CheckPoint::decode(main_data)?),
        XLOG_NOOP => XlogRecord::Noop,
        XLOG_NEXTOID => XlogRecord::NextOid {
            next_oid: r.u32("NEXTOID oid")?,
        },
        XLOG_SWITCH => XlogRecord::Switch,
        XLOG_BACKUP_END => XlogRecord::BackupEnd {
            start_lsn: r.lsn("BACKUP_END startpoint")?,
        },
        XLOG_PARAMETER_CHANGE => XlogRecord::ParameterChange(decode_parameter_change(&mut r)?),
        XLOG_RESTORE_POINT => decode_restore_point(&mut r)?,
        XLOG_FPW_CHANGE => XlogRecord::FpwChange {
            full_page_writes: r.bool("FPW_CHANGE fpw")?,
        },
        XLOG_END_OF_RECOVERY => decode_end_of_recovery(&mut r)?,
        XLOG_FPI_FOR_HINT => XlogRecord::FpiForHint,
        XLOG_FPI => XlogRecord::Fpi,
        XLOG_OVERWRITE_CONTRECORD => XlogRecord::OverwriteContrecord {
            overwritten_lsn: r.lsn("xl_overwrite_contrecord.overwritten_lsn")?,
            overwrite_time_us: r.i64("xl_overwrite_contrecord.overwrite_time")?,
        },
        other => {
            return Err(RecordDecodeError::UnknownInfo {
                rmgr: "XLOG",
                info: other,
            })
        }
    };
    Ok(rec)
}

fn decode_parameter_change(r: &mut Reader<'_>) -> Result<ParameterChange, RecordDecodeError> {
    const W: &str = "xl_parameter_change";
    r.require(26, W)?;
    Ok(ParameterChange {
        max_connections: r.i32(W)?,
        max_worker_processes: r.i32(W)?,
        max_wal_senders: r.i32(W)?,
        max_prepared_xacts: r.i32(W)?,
        max_locks_per_xact: r.i32(W)?,
        wal_level: r.i32(W)?,
        wal_log_hints: r.bool(W)?,
        track_commit_timestamp: r.bool(W)?,
    })
}

/// `xl_restore_point`: rp_time (TimestampTz) at 0, rp_name[64] at 8.
fn decode_restore_point(r: &mut Reader<'_>) -> Result<XlogRecord, RecordDecodeError> {
    let time_us = r.i64("xl_restore_point.rp_time")?;
    let name = fixed_c_string(r.bytes(RESTORE_POINT_NAME_BYTES, "xl_restore_point.rp_name")?);
    Ok(XlogRecord::RestorePoint { time_us, name })
}

/// `xl_end_of_recovery`: end_time at 0, ThisTimeLineID at 8, PrevTimeLineID at 12.
fn decode_end_of_recovery(r: &mut Reader<'_>) -> Result<XlogRecord, RecordDecodeError> {
    Ok(XlogRecord::EndOfRecovery {
        end_time_us: r.i64("xl_end_of_recovery.end_time")?,
        this_timeline_id: r.u32("xl_end_of_recovery.ThisTimeLineID")?,
        prev_timeline_id: r.u32("xl_end_of_recovery.PrevTimeLineID")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints() {
        let cp = CheckPoint {
            redo: Lsn(0x1500718),
            next_oid: 13572,
            ..Default::default()
        };
        let bytes = cp.encode();
        assert_eq!(
            decode_xlog(XLOG_CHECKPOINT_SHUTDOWN, &bytes).unwrap(),
            XlogRecord::CheckpointShutdown(cp)
        );
        // Low 4 bits of xl_info belong to the WAL record layer and are ignored.
        assert_eq!(
            decode_xlog(XLOG_CHECKPOINT_ONLINE | 0x01, &bytes).unwrap(),
            XlogRecord::CheckpointOnline(cp)
        );
        assert!(decode_xlog(XLOG_CHECKPOINT_ONLINE, &bytes[..87]).is_err());
    }

    #[test]
    fn small_records() {
        assert_eq!(
            decode_xlog(XLOG_NEXTOID, &24576u32.to_le_bytes()).unwrap(),
            XlogRecord::NextOid { next_oid: 24576 }
        );
        assert!(decode_xlog(XLOG_NEXTOID, &[0, 0, 0]).is_err());
        assert_eq!(decode_xlog(XLOG_SWITCH, &[]).unwrap(), XlogRecord::Switch);
        assert_eq!(decode_xlog(XLOG_FPI, &[]).unwrap(), XlogRecord::Fpi);
        assert_eq!(
            decode_xlog(XLOG_FPI_FOR_HINT, &[]).unwrap(),
            XlogRecord::FpiForHint
        );
        assert_eq!(
            decode_xlog(XLOG_NOOP, b"anything").unwrap(),
            XlogRecord::Noop
        );
        assert_eq!(
            decode_xlog(XLOG_BACKUP_END, &0x1234_5678u64.to_le_bytes()).unwrap(),
            XlogRecord::BackupEnd {
                start_lsn: Lsn(0x1234_5678)
            }
        );
        assert_eq!(
            decode_xlog(XLOG_FPW_CHANGE, &[1]).unwrap(),
            XlogRecord::FpwChange {
                full_page_writes: true
            }
        );
        assert!(matches!(
            decode_xlog(0xC0, &[]),
            Err(RecordDecodeError::UnknownInfo { info: 0xC0, .. })
        ));
    }

    #[test]
    fn parameter_change() {
        let mut b = Vec::new();
        for v in [100i32, 8, 10, 0, 64, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[0, 1, 0, 0]);
        let expected = ParameterChange {
            max_connections: 100,
            max_worker_processes: 8,
            max_wal_senders: 10,
            max_prepared_xacts: 0,
            max_locks_per_xact: 64,
            wal_level: 1,
            wal_log_hints: false,
            track_commit_timestamp: true,
        };
        assert_eq!(
            decode_xlog(XLOG_PARAMETER_CHANGE, &b).unwrap(),
            XlogRecord::ParameterChange(expected)
        );
        assert!(decode_xlog(XLOG_PARAMETER_CHANGE, &b[..25]).is_err());
    }

    #[test]
    fn restore_point_end_of_recovery_overwrite() {
        let mut b = 77i64.to_le_bytes().to_vec();
        let mut name = [0u8; 64];
        name[..6].copy_from_slice(b"before");
        b.extend_from_slice(&name);
        assert_eq!(
            decode_xlog(XLOG_RESTORE_POINT, &b).unwrap(),
            XlogRecord::RestorePoint {
                time_us: 77,
                name: "before".into()
            }
        );
        assert!(decode_xlog(XLOG_RESTORE_POINT, &b[..70]).is_err());

        let mut b = 5i64.to_le_bytes().to_vec();
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            decode_xlog(XLOG_END_OF_RECOVERY, &b).unwrap(),
            XlogRecord::EndOfRecovery {
                end_time_us: 5,
                this_timeline_id: 2,
                prev_timeline_id: 1
            }
        );
        assert!(decode_xlog(XLOG_END_OF_RECOVERY, &b[..12]).is_err());

        let mut b = 0x10_0000u64.to_le_bytes().to_vec();
        b.extend_from_slice(&9i64.to_le_bytes());
        assert_eq!(
            decode_xlog(XLOG_OVERWRITE_CONTRECORD, &b).unwrap(),
            XlogRecord::OverwriteContrecord {
                overwritten_lsn: Lsn(0x10_0000),
                overwrite_time_us: 9
            }
        );
    }
}

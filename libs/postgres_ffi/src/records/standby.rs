//! Standby resource manager (rmid 8): running-transactions snapshots, AccessExclusiveLocks and
//! invalidations for hot standby (storage/standbydefs.h).

use super::reader::Reader;
use super::xact::{read_inval_messages, SharedInvalMessage};
use super::RecordDecodeError;

pub const XLOG_STANDBY_LOCK: u8 = 0x00;
pub const XLOG_RUNNING_XACTS: u8 = 0x10;
pub const XLOG_INVALIDATIONS: u8 = 0x20;

/// A decoded Standby-rmgr record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StandbyRecord {
    /// `xl_standby_locks`: nlocks at 0, then 12-byte `xl_standby_lock`s.
    Lock {
        locks: Vec<StandbyLock>,
    },
    RunningXacts(RunningXacts),
    /// `xl_invalidations`: dbId 0, tsId 4, relcacheInitFileInval 8, nmsgs 12, msgs 16.
    Invalidations {
        db_id: u32,
        ts_id: u32,
        relcache_init_file_inval: bool,
        msgs: Vec<SharedInvalMessage>,
    },
}

/// `xl_standby_lock`: an AccessExclusiveLock held by `xid` on relation `rel_oid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandbyLock {
    pub xid: u32,
    pub db_oid: u32,
    pub rel_oid: u32,
}

/// `xl_running_xacts`: xcnt 0, subxcnt 4, subxid_overflow 8, nextXid 12, oldestRunningXid 16,
/// latestCompletedXid 20, xids 24 (MinSizeOfXactRunningXacts = 24).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningXacts {
    /// The snapshot overflowed: some subtransaction XIDs are missing.
    pub subxid_overflow: bool,
    pub next_xid: u32,
    pub oldest_running_xid: u32,
    pub latest_completed_xid: u32,
    /// Running top-level XIDs (`xcnt` of them).
    pub xids: Vec<u32>,
    /// Running subtransaction XIDs (`subxcnt` of them).
    pub subxids: Vec<u32>,
}

/// Decodes the main data of a Standby-rmgr record; `info` is `xl_info`.
pub fn decode_standby(info: u8, main_data: &[u8]) -> Result<StandbyRecord, RecordDecodeError> {
    let mut r = Reader::new(main_data);
    match info & 0xF0 {
        XLOG_STANDBY_LOCK => decode_locks(&mut r),
        XLOG_RUNNING_XACTS => Ok(StandbyRecord::RunningXacts(decode_running_xacts(&mut r)?)),
        XLOG_INVALIDATIONS => decode_invalidations(&mut r),
        other => Err(RecordDecodeError::UnknownInfo {
            rmgr: "Standby",
            info: other,
        }),
    }
}

fn decode_locks(r: &mut Reader<'_>) -> Result<StandbyRecord, RecordDecodeError> {
    let nlocks = r.count_i32("xl_standby_locks.nlocks")?;
    let locks = r.vec_of(nlocks, 12, "xl_standby_locks.locks", |r| {
        Ok(StandbyLock {
            xid: r.u32("xl_standby_lock.xid")?,
            db_oid: r.u32("xl_standby_lock.dbOid")?,
            rel_oid: r.u32("xl_standby_lock.relOid")?,
        })
    })?;
    Ok(StandbyRecord::Lock { locks })
}

fn decode_running_xacts(r: &mut Reader<'_>) -> Result<RunningXacts, RecordDecodeError> {
    const W: &str = "xl_running_xacts";
    r.require(24, W)?;
    let xcnt = r.count_i32("xl_running_xacts.xcnt")?;
    let subxcnt = r.count_i32("xl_running_xacts.subxcnt")?;
    let subxid_overflow = r.bool(W)?;
    r.skip(3, W)?;
    let next_xid = r.u32(W)?;
    let oldest_running_xid = r.u32(W)?;
    let latest_completed_xid = r.u32(W)?;
    // PostgreSQL logs the xids array only when xcnt > 0.
    let (xids, subxids) = if xcnt > 0 {
        (
            r.u32_vec(xcnt, "xl_running_xacts.xids")?,
            r.u32_vec(subxcnt, "xl_running_xacts.xids (subxids)")?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(RunningXacts {
        subxid_overflow,
        next_xid,
        oldest_running_xid,
        latest_completed_xid,
        xids,
        subxids,
    })
}

fn decode_invalidations(r: &mut Reader<'_>) -> Result<StandbyRecord, RecordDecodeError> {
    const W: &str = "xl_invalidations";
    r.require(16, W)?;
    let db_id = r.u32(W)?;
    let ts_id = r.u32(W)?;
    let relcache_init_file_inval = r.bool(W)?;
    r.skip(3, W)?;
    let nmsgs = r.count_i32("xl_invalidations.nmsgs")?;
    let msgs = read_inval_messages(r, nmsgs, "xl_invalidations.msgs")?;
    Ok(StandbyRecord::Invalidations {
        db_id,
        ts_id,
        relcache_init_file_inval,
        msgs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn running_xacts() {
        let mut b = words(&[2, 1]);
        b.extend_from_slice(&[1, 0, 0, 0]);
        b.extend_from_slice(&words(&[800, 790, 799, 795, 796, 797]));
        let rec = decode_standby(XLOG_RUNNING_XACTS, &b).unwrap();
        assert_eq!(
            rec,
            StandbyRecord::RunningXacts(RunningXacts {
                subxid_overflow: true,
                next_xid: 800,
                oldest_running_xid: 790,
                latest_completed_xid: 799,
                xids: vec![795, 796],
                subxids: vec![797]
            })
        );
        assert!(decode_standby(XLOG_RUNNING_XACTS, &b[..b.len() - 1]).is_err());
        assert!(decode_standby(XLOG_RUNNING_XACTS, &b[..23]).is_err());
        // No running transactions: no array.
        let mut empty = words(&[0, 0]);
        empty.extend_from_slice(&[0; 4]);
        empty.extend_from_slice(&words(&[800, 800, 799]));
        let StandbyRecord::RunningXacts(rx) = decode_standby(XLOG_RUNNING_XACTS, &empty).unwrap()
        else {
            panic!("expected RunningXacts")
        };
        assert!(rx.xids.is_empty() && rx.subxids.is_empty());
    }

    #[test]
    fn locks() {
        let b = words(&[2, 700, 5, 16384, 701, 5, 16390]);
        assert_eq!(
            decode_standby(XLOG_STANDBY_LOCK, &b).unwrap(),
            StandbyRecord::Lock {
                locks: vec![
                    StandbyLock {
                        xid: 700,
                        db_oid: 5,
                        rel_oid: 16384
                    },
                    StandbyLock {
                        xid: 701,
                        db_oid: 5,
                        rel_oid: 16390
                    }
                ]
            }
        );
        assert!(decode_standby(XLOG_STANDBY_LOCK, &b[..27]).is_err());
    }

    #[test]
    fn invalidations() {
        let mut b = words(&[5, 1663]);
        b.extend_from_slice(&[1, 0, 0, 0]);
        b.extend_from_slice(&words(&[1]));
        let mut msg = [0u8; 16];
        msg[0] = 0xFE; // -2: relcache
        msg[4..8].copy_from_slice(&5u32.to_le_bytes());
        b.extend_from_slice(&msg);
        let rec = decode_standby(XLOG_INVALIDATIONS, &b).unwrap();
        let StandbyRecord::Invalidations {
            db_id,
            ts_id,
            relcache_init_file_inval,
            msgs,
        } = rec
        else {
            panic!("expected Invalidations")
        };
        assert_eq!((db_id, ts_id, relcache_init_file_inval), (5, 1663, true));
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].id(), -2);
        assert!(decode_standby(XLOG_INVALIDATIONS, &b[..31]).is_err());
        assert!(decode_standby(0x30, &b).is_err());
    }
}

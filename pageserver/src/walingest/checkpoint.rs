//! XLOG records (checkpoints, NEXTOID) and standby running-xacts: the checkpoint the
//! pageserver maintains, merged the way PostgreSQL's xlog_redo merges checkpoint records.

use postgres_ffi::records::{CheckPoint, StandbyRecord, XlogRecord};
use postgres_ffi::walrecord::DecodedWalRecord;
use utils::lsn::Lsn;

use super::{IngestError, WalIngest};
use crate::pg_consts::*;
use crate::pgdatadir_mapping::{DatadirModification, DatadirRead};
use crate::storage_api::{TimelineRead, TimelineWrite};

impl WalIngest {
    pub(super) fn ingest_xlog<T: TimelineRead + TimelineWrite>(
        &mut self,
        rec: &DecodedWalRecord,
        x: &XlogRecord,
        m: &mut DatadirModification<'_, T>,
    ) -> Result<(), IngestError> {
        match x {
            XlogRecord::NextOid { next_oid } if self.checkpoint.next_oid != *next_oid => {
                self.checkpoint.next_oid = *next_oid;
                self.checkpoint_modified = true;
            }
            XlogRecord::CheckpointShutdown(cp) => {
                let prepared = m.list_twophase_files(m.lsn())?;
                self.merge_checkpoint(cp, true, rec.end_lsn);
                // A shutdown checkpoint has no running transactions, but prepared ones are
                // still active: hot standby must start from the oldest of them.
                let mut oldest = self.checkpoint.next_xid_32();
                for xid in prepared {
                    if transaction_id_precedes(xid, oldest) {
                        oldest = xid;
                    }
                }
                self.checkpoint.oldest_active_xid = oldest;
            }
            XlogRecord::CheckpointOnline(cp) => self.merge_checkpoint(cp, false, rec.end_lsn),
            _ => {}
        }
        Ok(())
    }

    /// Merges a checkpoint record into the maintained checkpoint like xlog_redo: a shutdown
    /// checkpoint sets the counters, an online one only advances them. `redo` becomes the
    /// record's end LSN for a shutdown checkpoint and 0 for an online one.
    fn merge_checkpoint(&mut self, rec: &CheckPoint, shutdown: bool, end_lsn: Lsn) {
        let cp = &mut self.checkpoint;
        if shutdown {
            cp.next_xid = rec.next_xid;
            cp.next_oid = rec.next_oid;
            cp.next_multi = rec.next_multi;
            cp.next_multi_offset = rec.next_multi_offset;
            cp.oldest_xid = rec.oldest_xid;
            cp.oldest_xid_db = rec.oldest_xid_db;
        } else {
            cp.next_xid = cp.next_xid.max(rec.next_xid);
            if wraparound_precedes(cp.next_multi, rec.next_multi) {
                cp.next_multi = rec.next_multi;
            }
            if wraparound_precedes(cp.next_multi_offset, rec.next_multi_offset) {
                cp.next_multi_offset = rec.next_multi_offset;
            }
            if transaction_id_precedes(cp.oldest_xid, rec.oldest_xid) {
                cp.oldest_xid = rec.oldest_xid;
                cp.oldest_xid_db = rec.oldest_xid_db;
            }
            cp.oldest_active_xid = rec.oldest_active_xid;
        }
        if wraparound_precedes(cp.oldest_multi, rec.oldest_multi) {
            cp.oldest_multi = rec.oldest_multi;
            cp.oldest_multi_db = rec.oldest_multi_db;
        }
        cp.this_timeline_id = rec.this_timeline_id;
        cp.prev_timeline_id = rec.prev_timeline_id;
        cp.full_page_writes = rec.full_page_writes;
        cp.time_unix_secs = rec.time_unix_secs;
        cp.oldest_commit_ts_xid = rec.oldest_commit_ts_xid;
        cp.newest_commit_ts_xid = rec.newest_commit_ts_xid;
        cp.redo = if shutdown { end_lsn } else { Lsn::INVALID };
        self.checkpoint_modified = true;
    }

    pub(super) fn ingest_standby(&mut self, rec: &StandbyRecord) {
        if let StandbyRecord::RunningXacts(running) = rec {
            if self.checkpoint.oldest_active_xid != running.oldest_running_xid {
                self.checkpoint.oldest_active_xid = running.oldest_running_xid;
                self.checkpoint_modified = true;
            }
        }
    }
}

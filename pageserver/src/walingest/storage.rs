//! Relation storage records (smgr create/truncate), databases (create/drop) and relmap
//! updates.

use bytes::Bytes;
use pageserver_api::key::RelTag;
use pageserver_api::value::{NeonWalRecord, Value};
use postgres_ffi::records::{DbaseRecord, RelMapUpdate, SmgrRecord, SmgrTruncate};
use postgres_ffi::relfile::ForkNumber;
use utils::lsn::Lsn;

use super::IngestError;
use crate::pg_consts::*;
use crate::pgdatadir_mapping::{DatadirModification, DatadirRead};
use crate::storage_api::{TimelineRead, TimelineWrite};

pub(super) fn ingest_smgr<T: TimelineRead + TimelineWrite>(
    rec: &SmgrRecord,
    m: &mut DatadirModification<'_, T>,
) -> Result<(), IngestError> {
    match rec {
        SmgrRecord::Create { rnode, forknum } => {
            let rel = RelTag::new(*rnode, *forknum);
            // Like smgrcreate(isRedo = true): an existing fork keeps its contents.
            if !m.get_rel_exists(rel, m.lsn())? {
                m.create_rel(rel, 0)?;
            }
            Ok(())
        }
        SmgrRecord::Truncate(t) => ingest_smgr_truncate(t, m),
    }
}

/// Truncates the main fork, and the FSM and VM to match. Forks we do not have are skipped.
fn ingest_smgr_truncate<T: TimelineRead + TimelineWrite>(
    t: &SmgrTruncate,
    m: &mut DatadirModification<'_, T>,
) -> Result<(), IngestError> {
    let lsn = m.lsn();
    if t.truncates_heap() {
        let rel = RelTag::new(t.rnode, ForkNumber::Main);
        // Truncation never extends (mdtruncate is a no-op for a larger size in recovery).
        if let Some(n) = m.get_rel_size(rel, lsn)? {
            m.set_rel_size(rel, n.min(t.blkno));
        }
    }
    if t.truncates_fsm() {
        let rel = RelTag::new(t.rnode, ForkNumber::Fsm);
        if let Some(n) = m.get_rel_size(rel, lsn)? {
            let mut keep = fsm_leaf_to_physical(t.blkno / FSM_SLOTS_PER_PAGE);
            if !t.blkno.is_multiple_of(FSM_SLOTS_PER_PAGE) {
                // The last leaf page keeps some slots. Clearing the whole page is imprecise
                // but safe: the FSM is only a hint.
                if keep < n {
                    m.put_rel_value(rel, keep, Value::Image(ZERO_PAGE.clone()));
                }
                keep += 1;
            }
            if keep < n {
                m.set_rel_size(rel, keep);
            }
        }
    }
    if t.truncates_vm() {
        let rel = RelTag::new(t.rnode, ForkNumber::VisibilityMap);
        if let Some(n) = m.get_rel_size(rel, lsn)? {
            let mut keep = t.blkno / VM_HEAPBLOCKS_PER_PAGE;
            let in_page = t.blkno % VM_HEAPBLOCKS_PER_PAGE;
            if in_page != 0 {
                if keep < n {
                    let value = NeonWalRecord::TruncateVisibilityMap {
                        trunc_byte: in_page / VM_HEAPBLOCKS_PER_BYTE,
                        trunc_offs: ((in_page % VM_HEAPBLOCKS_PER_BYTE) * VM_BITS_PER_HEAPBLOCK)
                            as u8,
                    };
                    m.put_rel_value(rel, keep, Value::WalRecord(value));
                }
                keep += 1;
            }
            if keep < n {
                m.set_rel_size(rel, keep);
            }
        }
    }
    Ok(())
}

pub(super) fn ingest_dbase<T: TimelineRead + TimelineWrite>(
    rec: &DbaseRecord,
    m: &mut DatadirModification<'_, T>,
) -> Result<(), IngestError> {
    match rec {
        DbaseRecord::CreateFileCopy {
            db_id,
            tablespace_id,
            src_db_id,
            src_tablespace_id,
        } => copy_database(
            (*src_tablespace_id, *src_db_id),
            (*tablespace_id, *db_id),
            m,
        ),
        // The contents follow as page images and a relmap update.
        DbaseRecord::CreateWalLog {
            db_id,
            tablespace_id,
        } => {
            m.ensure_db(*tablespace_id, *db_id)?;
            Ok(())
        }
        DbaseRecord::Drop {
            db_id,
            tablespace_ids,
        } => {
            for spc in tablespace_ids {
                m.drop_db(*spc, *db_id)?;
            }
            Ok(())
        }
    }
}

/// CREATE DATABASE with the FILE_COPY strategy: copies every relation fork of the source
/// database at this LSN (sizes and page images) and its relmap file. Pending writes are
/// committed first so that the source pages can be read back from the timeline.
fn copy_database<T: TimelineRead + TimelineWrite>(
    (src_spc, src_db): (u32, u32),
    (dst_spc, dst_db): (u32, u32),
    m: &mut DatadirModification<'_, T>,
) -> Result<(), IngestError> {
    m.commit()?;
    let lsn = m.lsn();
    let src_rels = m.list_rels(src_spc, src_db, lsn)?;
    m.drop_db(dst_spc, dst_db)?;
    m.ensure_db(dst_spc, dst_db)?;
    for src in src_rels {
        let nblocks = m.get_rel_size(src, lsn)?.unwrap_or(0);
        let dst = RelTag {
            spcnode: dst_spc,
            dbnode: dst_db,
            ..src
        };
        m.create_rel(dst, nblocks)?;
        for blkno in 0..nblocks {
            let page = m.get_rel_page_at_lsn(src, blkno, lsn)?;
            m.put_rel_value(dst, blkno, Value::Image(page));
            m.commit_if_large()?;
        }
    }
    if let Some(relmap) = m.get_relmap_file(src_spc, src_db, lsn)? {
        m.put_relmap_file(dst_spc, dst_db, relmap)?;
    }
    Ok(())
}

pub(super) fn ingest_relmap<T: TimelineRead + TimelineWrite>(
    rec_lsn: Lsn,
    update: &RelMapUpdate,
    m: &mut DatadirModification<'_, T>,
) -> Result<(), IngestError> {
    if update.data.len() != RELMAP_FILE_BYTES {
        return Err(IngestError::Invalid {
            lsn: rec_lsn,
            reason: format!(
                "relmap update of {} bytes, expected {RELMAP_FILE_BYTES}",
                update.data.len()
            ),
        });
    }
    m.put_relmap_file(
        update.tsid,
        update.dbid,
        Bytes::copy_from_slice(&update.data),
    )?;
    Ok(())
}

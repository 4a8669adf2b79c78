//! WAL ingest: turns decoded PostgreSQL 15 WAL records into versions of keys.
//!
//! Every block reference of a record becomes a value for that block at the record's *end* LSN:
//! full-page images of XLOG FPI / FPI_FOR_HINT records (with the apply flag, uncompressed) are
//! stored as page images with their page LSN set to the end LSN (unless the page is new);
//! everything else is stored as the whole record ([`NeonWalRecord::Postgres`], `will_init` when
//! the block has WILL_INIT or an image to apply), replayed later by `postgres --wal-redo`.
//! That includes the `neon_cid` records (custom rmgr 134) of our compute, which set the
//! command ids of heap tuples and are replayed by the `neon_rmgr` library the wal-redo
//! process loads.
//! Touching block N of a relation creates the relation if needed and extends it to N+1 blocks,
//! filling the gap with zero pages.
//!
//! Records that change more than pages get extra handling, in submodules: relation storage,
//! databases and relmaps ([`storage`]); transactions, CLOG and multixacts ([`xact`]); the
//! checkpoint the pageserver maintains, XLOG and standby records ([`checkpoint`]).
//!
//! The maintained checkpoint follows PostgreSQL's redo of XLOG records, with two pageserver
//! conventions: `nextXid` also advances from every record's xid, rounded up to a multiple of
//! [`XID_CHECKPOINT_INTERVAL`]; `redo` is the end LSN of the last shutdown checkpoint record,
//! or 0 after an online checkpoint (a basebackup at LSN L starts "cleanly" iff redo == L).

mod checkpoint;
mod storage;
mod xact;

use std::collections::BTreeMap;

use bytes::Bytes;
use pageserver_api::key::RelTag;
use pageserver_api::value::{NeonWalRecord, Value};
use postgres_ffi::fpi::{restore_image, FpiError};
use postgres_ffi::page::{page_is_new, set_page_lsn};
use postgres_ffi::records::{self, decode_main_data, CheckPoint, TypedRecord, VmHeapPage};
use postgres_ffi::relfile::ForkNumber;
use postgres_ffi::walrecord::{DecodedBkpBlock, DecodedWalRecord, ImageCompression};
use utils::lsn::Lsn;

use crate::pg_consts::*;
use crate::pgdatadir_mapping::{DatadirError, DatadirModification, DatadirRead};
use crate::storage_api::{TimelineRead, TimelineWrite};

/// Why a record could not be ingested.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot decode the main data of the {rmgr} record at {lsn}: {source}")]
    Decode {
        lsn: Lsn,
        rmgr: String,
        #[source]
        source: records::RecordDecodeError,
    },
    #[error(
        "cannot restore the full-page image of block {blkno} in the record at {lsn}: {source}"
    )]
    Image {
        lsn: Lsn,
        blkno: u32,
        #[source]
        source: FpiError,
    },
    #[error("invalid record at {lsn}: {reason}")]
    Invalid { lsn: Lsn, reason: String },
    #[error(transparent)]
    Datadir(#[from] DatadirError),
}

/// State kept across records: the checkpoint the pageserver maintains.
#[derive(Debug, Clone)]
pub struct WalIngest {
    checkpoint: CheckPoint,
    checkpoint_modified: bool,
}

/// What ingesting a batch of records did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchResult {
    /// End LSN of the last record.
    pub last_record_lsn: Lsn,
    /// Start LSN of the last record.
    pub prev_record_lsn: Lsn,
    pub records: usize,
}

impl WalIngest {
    /// Starts ingesting after `lsn`, where the timeline must have a checkpoint.
    pub fn new<R: TimelineRead>(tline: &R, lsn: Lsn) -> Result<WalIngest, IngestError> {
        Ok(WalIngest {
            checkpoint: tline.get_checkpoint(lsn)?,
            checkpoint_modified: false,
        })
    }

    /// The checkpoint as maintained so far.
    pub fn checkpoint(&self) -> &CheckPoint {
        &self.checkpoint
    }

    /// Ingests one record: moves `m` to the record's end LSN and buffers its changes there.
    pub fn ingest_record<T: TimelineRead + TimelineWrite>(
        &mut self,
        rec: &DecodedWalRecord,
        m: &mut DatadirModification<'_, T>,
    ) -> Result<(), IngestError> {
        m.set_lsn(rec.end_lsn)?;
        let xid = rec.header.xl_xid;
        if xid != 0 {
            self.update_next_xid(xid);
        }
        let typed = decode_main_data(rec.header.xl_rmid, rec.header.xl_info, xid, &rec.main_data)
            .map_err(|source| IngestError::Decode {
            lsn: rec.lsn,
            rmgr: rec.rmgr_name(),
            source,
        })?;
        if let Some(typed) = &typed {
            self.ingest_typed(rec, typed, m)?;
        }
        self.ingest_blocks(rec, m)?;
        if self.checkpoint_modified {
            m.put_checkpoint(Bytes::from(self.checkpoint.encode()));
            self.checkpoint_modified = false;
        }
        Ok(())
    }

    /// The rmgr-specific part of a record.
    fn ingest_typed<T: TimelineRead + TimelineWrite>(
        &mut self,
        rec: &DecodedWalRecord,
        typed: &TypedRecord,
        m: &mut DatadirModification<'_, T>,
    ) -> Result<(), IngestError> {
        match typed {
            TypedRecord::Heap(_) | TypedRecord::Heap2(_) => ingest_vm_clears(rec, typed, m),
            TypedRecord::Smgr(smgr) => storage::ingest_smgr(smgr, m),
            TypedRecord::Dbase(dbase) => storage::ingest_dbase(dbase, m),
            TypedRecord::RelMap(update) => storage::ingest_relmap(rec.lsn, update, m),
            TypedRecord::Xact(x) => self.ingest_xact(x, m),
            TypedRecord::Clog(c) => self.ingest_clog(c, m),
            TypedRecord::MultiXact(mx) => self.ingest_multixact(rec.header.xl_xid, mx, m),
            TypedRecord::Xlog(x) => self.ingest_xlog(rec, x, m),
            TypedRecord::Standby(s) => {
                self.ingest_standby(s);
                Ok(())
            }
            // Logical messages (aux files) are not kept yet.
            TypedRecord::LogicalMessage(_) => Ok(()),
        }
    }

    /// Stores a value for every block reference, extending relations as needed. Blocks are
    /// taken in (relation, block) order so that a gap is only zero-filled below blocks that
    /// the record itself does not write.
    fn ingest_blocks<T: TimelineRead + TimelineWrite>(
        &mut self,
        rec: &DecodedWalRecord,
        m: &mut DatadirModification<'_, T>,
    ) -> Result<(), IngestError> {
        let info = rec.header.xl_info & 0xF0;
        let fpi_record = rec.header.xl_rmid == records::rmgr::RM_XLOG_ID
            && (info == records::xlog::XLOG_FPI || info == records::xlog::XLOG_FPI_FOR_HINT);
        let mut blocks: Vec<&DecodedBkpBlock> = rec.blocks.iter().collect();
        blocks.sort_by_key(|b| (RelTag::new(b.rnode, b.forknum), b.blkno));
        for blk in blocks {
            let rel = RelTag::new(blk.rnode, blk.forknum);
            let value = block_value(rec, blk, fpi_record)?;
            put_rel_block(m, rec.lsn, rel, blk.blkno, value)?;
        }
        Ok(())
    }

    /// Advances nextXid past `xid` (rounded up to [`XID_CHECKPOINT_INTERVAL`], with the epoch
    /// incremented on wraparound).
    fn update_next_xid(&mut self, xid: u32) {
        let candidate = xid.wrapping_add(1).max(FIRST_NORMAL_TRANSACTION_ID);
        let rounded =
            candidate.wrapping_add(XID_CHECKPOINT_INTERVAL - 1) & !(XID_CHECKPOINT_INTERVAL - 1);
        let old = self.checkpoint.next_xid_32();
        if (rounded.wrapping_sub(old) as i32) <= 0 {
            return;
        }
        let mut epoch = self.checkpoint.next_xid_epoch();
        if rounded < old {
            epoch = epoch.wrapping_add(1);
        }
        self.checkpoint.next_xid = (u64::from(epoch) << 32) | u64::from(rounded);
        self.checkpoint_modified = true;
    }
}

/// The value a block reference stores.
fn block_value(
    rec: &DecodedWalRecord,
    blk: &DecodedBkpBlock,
    fpi_record: bool,
) -> Result<Value, IngestError> {
    let image = blk.image.as_ref().filter(|_| blk.apply_image && fpi_record);
    match image {
        Some(img) if img.compression == ImageCompression::None => {
            let mut page = restore_image(img).map_err(|source| IngestError::Image {
                lsn: rec.lsn,
                blkno: blk.blkno,
                source,
            })?;
            if !page_is_new(&page[..]) {
                // A restored page is always a whole page, so this cannot fail.
                let _ = set_page_lsn(&mut page[..], rec.end_lsn);
            }
            Ok(Value::Image(Bytes::from(page.to_vec())))
        }
        _ => Ok(Value::WalRecord(NeonWalRecord::Postgres {
            will_init: blk.will_init || blk.apply_image,
            rec: rec.record.clone(),
        })),
    }
}

/// Stores `value` at block `blkno` of `rel`, creating and extending the relation (gap blocks
/// become zero pages).
fn put_rel_block<T: TimelineRead + TimelineWrite>(
    m: &mut DatadirModification<'_, T>,
    rec_lsn: Lsn,
    rel: RelTag,
    blkno: u32,
    value: Value,
) -> Result<(), IngestError> {
    if blkno == u32::MAX {
        return Err(IngestError::Invalid {
            lsn: rec_lsn,
            reason: format!("block reference to InvalidBlockNumber of {rel}"),
        });
    }
    let old_size = m.get_rel_size(rel, m.lsn())?;
    match old_size {
        None => m.create_rel(rel, blkno + 1)?,
        Some(n) if blkno >= n => m.set_rel_size(rel, blkno + 1),
        Some(_) => {}
    }
    for gap in old_size.unwrap_or(0)..blkno {
        m.put_rel_value(rel, gap, Value::Image(ZERO_PAGE.clone()));
        m.commit_if_large()?;
    }
    m.put_rel_value(rel, blkno, value);
    Ok(())
}

/// Heap and Heap2 records clear visibility-map bits without registering the VM page: store a
/// `ClearVisibilityMapFlags` on each affected VM page that exists.
fn ingest_vm_clears<T: TimelineRead + TimelineWrite>(
    rec: &DecodedWalRecord,
    typed: &TypedRecord,
    m: &mut DatadirModification<'_, T>,
) -> Result<(), IngestError> {
    // VM page → (heap blocks, flags)
    let mut pages: BTreeMap<(RelTag, u32), (Vec<u32>, u8)> = BTreeMap::new();
    for clear in typed.clears_visibility_map() {
        let find = |id: u8| rec.blocks.iter().find(|b| b.block_id == id);
        let blk = match clear.heap_page {
            VmHeapPage::BlockRef(id) => find(id),
            VmHeapPage::UpdateOldPage => find(1).or_else(|| find(0)),
        };
        let Some(blk) = blk else { continue };
        let vm_rel = RelTag::new(blk.rnode, ForkNumber::VisibilityMap);
        let flags = (u8::from(clear.all_visible) * VISIBILITYMAP_ALL_VISIBLE)
            | (u8::from(clear.all_frozen) * VISIBILITYMAP_ALL_FROZEN);
        let entry = pages
            .entry((vm_rel, blk.blkno / VM_HEAPBLOCKS_PER_PAGE))
            .or_default();
        if !entry.0.contains(&blk.blkno) {
            entry.0.push(blk.blkno);
        }
        entry.1 |= flags;
    }
    for ((vm_rel, vm_blk), (heap_blocks, flags)) in pages {
        let exists = m.get_rel_size(vm_rel, m.lsn())?.is_some_and(|n| vm_blk < n);
        if !exists {
            continue;
        }
        let [new, old] = match heap_blocks.as_slice() {
            [a] => [Some(*a), None],
            [a, b] => [Some(*a), Some(*b)],
            _ => {
                return Err(IngestError::Invalid {
                    lsn: rec.lsn,
                    reason: "more than two heap pages clear bits of one VM page".into(),
                })
            }
        };
        let value = Value::WalRecord(NeonWalRecord::ClearVisibilityMapFlags {
            new_heap_blkno: new,
            old_heap_blkno: old,
            flags,
        });
        m.put_rel_value(vm_rel, vm_blk, value);
    }
    Ok(())
}

/// Ingests `records` in one modification (committed when it grows past
/// [`crate::pgdatadir_mapping::MAX_PENDING_BYTES`] and at the end), then calls
/// `finish_write` with the last record. Returns `None` for an empty batch.
pub fn ingest_batch<T, I>(
    tline: &mut T,
    ingest: &mut WalIngest,
    records: I,
) -> Result<Option<BatchResult>, IngestError>
where
    T: TimelineRead + TimelineWrite,
    I: IntoIterator<Item = DecodedWalRecord>,
{
    let mut records = records.into_iter().peekable();
    let Some(first) = records.peek() else {
        return Ok(None);
    };
    let mut m = DatadirModification::new(tline, first.end_lsn);
    let mut result = BatchResult {
        last_record_lsn: first.end_lsn,
        prev_record_lsn: first.lsn,
        records: 0,
    };
    for rec in records {
        ingest.ingest_record(&rec, &mut m)?;
        m.commit_if_large()?;
        result.last_record_lsn = rec.end_lsn;
        result.prev_record_lsn = rec.lsn;
        result.records += 1;
    }
    m.commit()?;
    drop(m);
    tline.finish_write(result.last_record_lsn, result.prev_record_lsn);
    Ok(Some(result))
}

#[cfg(test)]
mod tests;

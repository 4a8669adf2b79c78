//! Transaction records (commit, abort, prepare), CLOG and multixact SLRU records.

use std::collections::BTreeMap;

use bytes::Bytes;
use pageserver_api::key::{RelTag, SlruKind};
use pageserver_api::value::{MultiXactMember, NeonWalRecord, Value};
use postgres_ffi::records::{
    ClogRecord, MultiXactCreate, MultiXactRecord, MultiXactTruncate, XactParsedRecord, XactRecord,
};
use postgres_ffi::relfile::ForkNumber;

use super::{IngestError, WalIngest};
use crate::pg_consts::*;
use crate::pgdatadir_mapping::{DatadirModification, DatadirRead};
use crate::storage_api::{TimelineRead, TimelineWrite};

impl WalIngest {
    pub(super) fn ingest_xact<T: TimelineRead + TimelineWrite>(
        &mut self,
        rec: &XactRecord,
        m: &mut DatadirModification<'_, T>,
    ) -> Result<(), IngestError> {
        match rec {
            XactRecord::Commit(p) => end_transaction(p, true, m),
            XactRecord::Abort(p) => end_transaction(p, false, m),
            XactRecord::CommitPrepared(p) | XactRecord::AbortPrepared(p) => {
                end_transaction(p, matches!(rec, XactRecord::CommitPrepared(_)), m)?;
                m.drop_twophase_file(p.xid)?;
                Ok(())
            }
            XactRecord::Prepare(prep) => {
                m.put_twophase_file(prep.header.xid, Bytes::copy_from_slice(&prep.raw))?;
                Ok(())
            }
            XactRecord::Assignment { .. } | XactRecord::Invalidations { .. } => Ok(()),
        }
    }

    pub(super) fn ingest_clog<T: TimelineRead + TimelineWrite>(
        &mut self,
        rec: &ClogRecord,
        m: &mut DatadirModification<'_, T>,
    ) -> Result<(), IngestError> {
        match *rec {
            ClogRecord::ZeroPage { pageno } => zero_slru_page(SlruKind::Clog, pageno, m),
            ClogRecord::Truncate {
                pageno,
                oldest_xact,
                oldest_xact_db,
            } => {
                if transaction_id_precedes(self.checkpoint.oldest_xid, oldest_xact) {
                    self.checkpoint.oldest_xid = oldest_xact;
                    self.checkpoint.oldest_xid_db = oldest_xact_db;
                    self.checkpoint_modified = true;
                }
                truncate_slru(SlruKind::Clog, pageno, clog_page_precedes, m)
            }
        }
    }

    pub(super) fn ingest_multixact<T: TimelineRead + TimelineWrite>(
        &mut self,
        xl_xid: u32,
        rec: &MultiXactRecord,
        m: &mut DatadirModification<'_, T>,
    ) -> Result<(), IngestError> {
        match rec {
            MultiXactRecord::ZeroOffPage { pageno } => {
                zero_slru_page(SlruKind::MultiXactOffsets, *pageno, m)
            }
            MultiXactRecord::ZeroMemPage { pageno } => {
                zero_slru_page(SlruKind::MultiXactMembers, *pageno, m)
            }
            MultiXactRecord::CreateId(create) => {
                put_multixact_create(create, m);
                self.advance_multixact(create, xl_xid);
                Ok(())
            }
            MultiXactRecord::Truncate(t) => {
                if wraparound_precedes(self.checkpoint.oldest_multi, t.end_trunc_off) {
                    self.checkpoint.oldest_multi = t.end_trunc_off;
                    self.checkpoint.oldest_multi_db = t.oldest_multi_db;
                    self.checkpoint_modified = true;
                }
                truncate_multixact(t, m)
            }
        }
    }

    /// MultiXactAdvanceNextMXact(mid + 1, moff + nmembers) and nextXid past the members.
    fn advance_multixact(&mut self, create: &MultiXactCreate, xl_xid: u32) {
        let mut next_multi = create.mid.wrapping_add(1);
        if next_multi < FIRST_MULTIXACT_ID {
            next_multi = FIRST_MULTIXACT_ID;
        }
        let next_offset = create.moff.wrapping_add(create.members.len() as u32);
        let cp = &mut self.checkpoint;
        if wraparound_precedes(cp.next_multi, next_multi) {
            cp.next_multi = next_multi;
            self.checkpoint_modified = true;
        }
        if wraparound_precedes(cp.next_multi_offset, next_offset) {
            cp.next_multi_offset = next_offset;
            self.checkpoint_modified = true;
        }
        let max_xid = create
            .members
            .iter()
            .map(|mbr| mbr.xid)
            .fold(xl_xid, |acc, xid| {
                if transaction_id_precedes(acc, xid) {
                    xid
                } else {
                    acc
                }
            });
        if max_xid != 0 {
            self.update_next_xid(max_xid);
        }
    }
}

/// Sets the CLOG status of the transaction and its subtransactions (one record per CLOG page)
/// and drops the relations the transaction deleted (all forks).
fn end_transaction<T: TimelineRead + TimelineWrite>(
    p: &XactParsedRecord,
    commit: bool,
    m: &mut DatadirModification<'_, T>,
) -> Result<(), IngestError> {
    let mut pages: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for xid in std::iter::once(p.xid).chain(p.subxacts.iter().copied()) {
        pages.entry(clog_page_of(xid).0).or_default().push(xid);
    }
    for (pageno, xids) in pages {
        let rec = if commit {
            NeonWalRecord::ClogSetCommitted {
                xids,
                timestamp: p.xact_time_us,
            }
        } else {
            NeonWalRecord::ClogSetAborted { xids }
        };
        m.put_slru_value(
            SlruKind::Clog,
            pageno / SLRU_PAGES_PER_SEGMENT,
            pageno % SLRU_PAGES_PER_SEGMENT,
            Value::WalRecord(rec),
        );
    }
    let dropped: Vec<RelTag> = p
        .xnodes
        .iter()
        .flat_map(|rnode| ForkNumber::ALL.map(|fork| RelTag::new(*rnode, fork)))
        .collect();
    m.drop_rels(&dropped)?;
    Ok(())
}

/// Stores a zero page at SLRU page `pageno`, creating or extending its segment (pages of a
/// gap become zero pages too, as in the file PostgreSQL writes).
fn zero_slru_page<T: TimelineRead + TimelineWrite>(
    kind: SlruKind,
    pageno: u32,
    m: &mut DatadirModification<'_, T>,
) -> Result<(), IngestError> {
    let (segno, rpageno) = (
        pageno / SLRU_PAGES_PER_SEGMENT,
        pageno % SLRU_PAGES_PER_SEGMENT,
    );
    let old_size = m.get_slru_segment_size(kind, segno, m.lsn())?;
    match old_size {
        None => m.create_slru_segment(kind, segno, rpageno + 1)?,
        Some(n) if rpageno >= n => m.set_slru_segment_size(kind, segno, rpageno + 1),
        Some(_) => {}
    }
    for blkno in old_size.unwrap_or(0)..rpageno {
        m.put_slru_value(kind, segno, blkno, Value::Image(ZERO_PAGE.clone()));
    }
    m.put_slru_value(kind, segno, rpageno, Value::Image(ZERO_PAGE.clone()));
    Ok(())
}

/// SimpleLruTruncate: drops every segment whose pages all precede `cutoff_page`.
fn truncate_slru<T: TimelineRead + TimelineWrite>(
    kind: SlruKind,
    cutoff_page: u32,
    precedes: fn(u32, u32) -> bool,
    m: &mut DatadirModification<'_, T>,
) -> Result<(), IngestError> {
    for segno in m.list_slru_segments(kind, m.lsn())? {
        if slru_may_delete_segment(segno * SLRU_PAGES_PER_SEGMENT, cutoff_page, precedes) {
            m.drop_slru_segment(kind, segno)?;
        }
    }
    Ok(())
}

/// PerformMembersTruncation and PerformOffsetsTruncation.
fn truncate_multixact<T: TimelineRead + TimelineWrite>(
    t: &MultiXactTruncate,
    m: &mut DatadirModification<'_, T>,
) -> Result<(), IngestError> {
    // Members: every segment from the old oldest offset's up to (not including) the new one's,
    // cyclically.
    let segments_total = mx_offset_to_member_segment(MAX_MULTIXACT_OFFSET) + 1;
    let start = mx_offset_to_member_segment(t.start_trunc_memb);
    let end = mx_offset_to_member_segment(t.end_trunc_memb);
    let span = (end + segments_total - start) % segments_total;
    for segno in m.list_slru_segments(SlruKind::MultiXactMembers, m.lsn())? {
        if segno < segments_total && (segno + segments_total - start) % segments_total < span {
            m.drop_slru_segment(SlruKind::MultiXactMembers, segno)?;
        }
    }
    // Offsets: up to the page of the multixact before the new oldest one.
    let mut prev = t.end_trunc_off.wrapping_sub(1);
    if prev < FIRST_MULTIXACT_ID {
        prev = u32::MAX;
    }
    truncate_slru(
        SlruKind::MultiXactOffsets,
        prev / MULTIXACT_OFFSETS_PER_PAGE,
        multixact_offset_page_precedes,
        m,
    )
}

/// RecordNewMultiXact: the member offset in the offsets SLRU, and the members (split at
/// members page boundaries, wrapping around the offset space).
///
/// PostgreSQL 15.14+ also writes the *next* multixact's offset; we do not (the next CREATE_ID
/// sets it, and readers use nextOffset for the newest multixact).
fn put_multixact_create<T: TimelineRead + TimelineWrite>(
    create: &MultiXactCreate,
    m: &mut DatadirModification<'_, T>,
) {
    let pageno = create.mid / MULTIXACT_OFFSETS_PER_PAGE;
    m.put_slru_value(
        SlruKind::MultiXactOffsets,
        pageno / SLRU_PAGES_PER_SEGMENT,
        pageno % SLRU_PAGES_PER_SEGMENT,
        Value::WalRecord(NeonWalRecord::MultixactOffsetCreate {
            mid: create.mid,
            moff: create.moff,
        }),
    );
    let mut offset = create.moff;
    let mut rest = &create.members[..];
    while !rest.is_empty() {
        let page_remaining = MULTIXACT_MEMBERS_PER_PAGE - offset % MULTIXACT_MEMBERS_PER_PAGE;
        // The last members page is partial: offsets wrap to page 0 after u32::MAX.
        let before_wrap = (1u64 << 32) - u64::from(offset);
        let n = rest
            .len()
            .min(page_remaining as usize)
            .min(before_wrap as usize);
        let members = rest[..n]
            .iter()
            .map(|mbr| MultiXactMember {
                xid: mbr.xid,
                status: mbr.status as u8,
            })
            .collect();
        let pageno = mx_offset_to_member_page(offset);
        m.put_slru_value(
            SlruKind::MultiXactMembers,
            pageno / SLRU_PAGES_PER_SEGMENT,
            pageno % SLRU_PAGES_PER_SEGMENT,
            Value::WalRecord(NeonWalRecord::MultixactMembersCreate {
                moff: offset,
                members,
            }),
        );
        offset = offset.wrapping_add(n as u32);
        rest = &rest[n..];
    }
}

//! Helpers shared by the timeline's unit tests ([`super::tests`], [`super::cache_tests`]):
//! configuration, metadata, and values whose redo the pageserver does in Rust.

use pageserver_api::key::{slru_block_to_key, SlruKind};
use pageserver_walredo::apply_neon::CLOG_XACTS_PER_PAGE;

use super::*;
use crate::pg_consts::{SLRU_PAGES_PER_SEGMENT, ZERO_PAGE};

/// A tenant configuration with the given checkpoint distance, defaults otherwise.
pub(super) fn conf(checkpoint_distance: u64) -> Arc<RwLock<EffectiveTenantConfig>> {
    Arc::new(RwLock::new(EffectiveTenantConfig {
        checkpoint_distance,
        ..EffectiveTenantConfig::DEFAULT
    }))
}

/// Metadata of an empty root timeline.
pub(super) fn root_meta() -> TimelineMetadata {
    TimelineMetadata {
        disk_consistent_lsn: Lsn(0),
        prev_record_lsn: None,
        ancestor_timeline: None,
        ancestor_lsn: Lsn(0),
        latest_gc_cutoff_lsn: Lsn(0),
        initdb_lsn: Lsn(0x10),
        pg_version: 15,
    }
}

/// Metadata of an empty child of `parent` branched at `at`.
pub(super) fn branch_meta(parent: &Timeline, at: Lsn) -> TimelineMetadata {
    TimelineMetadata {
        disk_consistent_lsn: at,
        ancestor_timeline: Some(parent.timeline_id),
        ancestor_lsn: at,
        ..root_meta()
    }
}

/// The `i`-th test key: CLOG page `i`, so Neon's CLOG records apply to it.
pub(super) fn test_key(i: u32) -> Key {
    slru_block_to_key(
        SlruKind::Clog,
        i / SLRU_PAGES_PER_SEGMENT,
        i % SLRU_PAGES_PER_SEGMENT,
    )
}

/// A record marking the `xid_in_page`-th transaction of `key`'s CLOG page committed.
pub(super) fn commit(key: Key, xid_in_page: u32) -> Value {
    let pageno = key.field4 * SLRU_PAGES_PER_SEGMENT + key.field6;
    Value::WalRecord(NeonWalRecord::ClogSetCommitted {
        xids: vec![pageno * CLOG_XACTS_PER_PAGE + xid_in_page % CLOG_XACTS_PER_PAGE],
        timestamp: 0,
    })
}

/// A page image that is zero but for byte 100, which is `b`.
pub(super) fn image(b: u8) -> Value {
    let mut p = vec![0u8; ZERO_PAGE.len()];
    p[100] = b;
    Value::Image(Bytes::from(p))
}

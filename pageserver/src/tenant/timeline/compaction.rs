//! Compaction of one timeline: the planners of `pageserver_layers::planner` (pure functions
//! over a snapshot of the layer map) decide, `pageserver_layers::compaction` carries out.
//!
//! 1. L0 compaction: when `compaction_threshold` L0 files stack up, the oldest contiguous
//!    run (at most `compaction_upper_limit`) is merged into L1 files of about
//!    `compaction_target_size`.
//! 2. Image creation: key-space partitions of about `compaction_target_size / 8192` keys
//!    with `image_creation_threshold` deltas above their newest image get an image layer at
//!    `disk_consistent_lsn` (values materialized through the read path and WAL redo).

use pageserver_layers::compaction::{compact_l0, create_image_layers, install_update, TimelineDir};
use pageserver_layers::layer_map::BatchUpdate;
use pageserver_layers::planner::{plan_image_layers, plan_l0_compaction};

use super::{lock, Timeline, TimelineError};
use crate::pgdatadir_mapping::DatadirRead;
use crate::storage_api::TimelineRead;

/// Bytes of a page, to turn a target file size into a number of keys.
const PAGE_BYTES: u64 = 8192;

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionOutcome {
    pub l0_inputs: usize,
    pub l1_outputs: usize,
    pub images_created: usize,
}

impl Timeline {
    fn tl_dir(&self) -> TimelineDir<'_> {
        TimelineDir {
            dir: &self.dir,
            tenant_id: self.tenant_id,
            timeline_id: self.timeline_id,
        }
    }

    /// One pass of L0 compaction and image creation (blocking).
    pub fn compact(&self) -> Result<CompactionOutcome, TimelineError> {
        let _guard = lock(&self.flush_lock);
        let conf = *self.conf.read().unwrap_or_else(|e| e.into_inner());
        let err = |e: &dyn std::fmt::Display| TimelineError::Compaction(e.to_string());
        let mut outcome = CompactionOutcome::default();
        let snapshot = self.map_read().snapshot();
        if let Some(plan) = plan_l0_compaction(
            &snapshot,
            conf.compaction_threshold,
            conf.compaction_upper_limit,
            conf.compaction_target_size,
        ) {
            let outputs = compact_l0(self.tl_dir(), &plan.inputs, conf.compaction_target_size)
                .map_err(|e| err(&e))?;
            outcome.l0_inputs = plan.inputs.len();
            outcome.l1_outputs = outputs.len();
            install_update(
                &self.layers,
                Some(&self.files),
                &self.dir,
                plan.batch_update(&outputs),
            )
            .map_err(|e| err(&e))?;
        }
        let lsn = self.disk_consistent_lsn();
        if lsn == utils::lsn::Lsn(0) {
            return Ok(outcome);
        }
        let keyspace = match self.collect_keyspace(lsn) {
            Ok(ks) => ks,
            // No datadir model yet (e.g. a timeline with raw keys): nothing to image.
            Err(e) => {
                tracing::debug!(timeline = %self.timeline_id, "no keyspace at {lsn}: {e}");
                return Ok(outcome);
            }
        };
        let snapshot = self.map_read().snapshot();
        let target_keys = (conf.compaction_target_size / PAGE_BYTES).max(1);
        let ranges = plan_image_layers(
            &snapshot,
            &keyspace,
            target_keys,
            conf.image_creation_threshold,
            lsn,
        );
        if ranges.is_empty() {
            return Ok(outcome);
        }
        let images = create_image_layers(self.tl_dir(), &ranges, &keyspace, lsn, |key| {
            self.get(key, lsn)
        })
        .map_err(|e| err(&e))?;
        outcome.images_created = images.len();
        let mut update = BatchUpdate::new();
        for d in images {
            update.insert(d);
        }
        install_update(&self.layers, Some(&self.files), &self.dir, update).map_err(|e| err(&e))?;
        Ok(outcome)
    }
}

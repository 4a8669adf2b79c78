//! Compaction policy: pure functions deciding *what* to compact or re-image from a snapshot
//! of a timeline's layer files ([`crate::layer_map::LayerMap::snapshot`]). They do no I/O;
//! [`crate::compaction`] carries the plans out.
//!
//! - [`plan_l0_compaction`]: when there are at least `threshold` L0 delta layers, merge the
//!   oldest contiguous run of them (at most `upper_limit` layers and about
//!   `upper_limit × target_size_bytes` bytes) into L1 layers.
//! - [`plan_image_layers`]: split the existing key space into partitions and pick those
//!   whose stack of delta layers above the newest image has reached the threshold.
//!
//! Not yet here: a GC planner (which layers are entirely below the GC cutoff, outside every
//! retained branch point and lease, and covered by a newer image at or below the cutoff).

use std::ops::Range;

use pageserver_api::key::Key;
use pageserver_api::keyspace::KeySpace;
use utils::lsn::Lsn;

use crate::layer_map::{count_deltas, BatchUpdate};
use crate::layer_name::{LayerDesc, LayerName};

/// Most partitions [`image_partitions`] makes; the last one takes every remaining key.
pub const MAX_IMAGE_PARTITIONS: usize = 65_536;

/// L0 layers to merge into L1 layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L0CompactionPlan {
    /// Oldest first; their LSN ranges are contiguous.
    pub inputs: Vec<LayerName>,
    /// The union of the inputs' LSN ranges: the LSN range of every output layer.
    pub lsn_range: Range<Lsn>,
    /// Total size of the inputs.
    pub input_bytes: u64,
}

impl L0CompactionPlan {
    /// The layer map update replacing the inputs with `outputs`.
    pub fn batch_update(&self, outputs: &[LayerDesc]) -> BatchUpdate {
        let mut update = BatchUpdate::new();
        for name in &self.inputs {
            update.remove(name.clone());
        }
        for desc in outputs {
            update.insert(desc.clone());
        }
        update
    }
}

/// Picks L0 layers to compact, or `None` if there are fewer than `threshold` L0 layers.
///
/// The plan is the oldest run of L0 layers whose LSN ranges follow each other without gap
/// or overlap (each starts where the previous one ends), of at most `upper_limit` layers
/// (at least 1), ending once the inputs reach `target_size_bytes × upper_limit` bytes (so the
/// total can exceed that by one layer).
pub fn plan_l0_compaction(
    snapshot: &[LayerDesc],
    threshold: usize,
    upper_limit: usize,
    target_size_bytes: u64,
) -> Option<L0CompactionPlan> {
    let mut l0s: Vec<&LayerDesc> = snapshot.iter().filter(|l| l.is_l0()).collect();
    if l0s.is_empty() || l0s.len() < threshold {
        return None;
    }
    l0s.sort_by_key(|l| (l.lsn_range().start, l.lsn_range().end));
    let upper_limit = upper_limit.max(1);
    let max_input_bytes = target_size_bytes.saturating_mul(upper_limit as u64);
    let first = l0s[0];
    let mut plan = L0CompactionPlan {
        inputs: vec![first.name.clone()],
        lsn_range: first.lsn_range(),
        input_bytes: first.file_size_bytes,
    };
    for l in &l0s[1..] {
        let contiguous = l.lsn_range().start == plan.lsn_range.end;
        if !contiguous || plan.inputs.len() >= upper_limit || plan.input_bytes >= max_input_bytes {
            break;
        }
        plan.inputs.push(l.name.clone());
        plan.lsn_range.end = l.lsn_range().end;
        plan.input_bytes = plan.input_bytes.saturating_add(l.file_size_bytes);
    }
    Some(plan)
}

/// Splits `keyspace` into partitions of at most `partition_target_keys` keys and returns the
/// key range of the image layer of each: the ranges tile the whole key space, the first
/// starting at `Key::MIN`, each next one where the previous ended (at the end of its
/// partition's last key range), the last ending at `Key::MAX`. Keys inside a range but not
/// in `keyspace` do not exist, which the image layers record by not holding them.
pub fn image_partitions(keyspace: &KeySpace, partition_target_keys: u64) -> Vec<Range<Key>> {
    let parts = keyspace.partition(partition_target_keys, MAX_IMAGE_PARTITIONS);
    let n = parts.len();
    let mut start = Key::MIN;
    let mut out = Vec::with_capacity(n);
    for (i, part) in parts.iter().enumerate() {
        let end = if i + 1 == n {
            Key::MAX
        } else {
            part.bounds().map_or(start, |b| b.end)
        };
        if start < end {
            out.push(start..end);
            start = end;
        }
    }
    out
}

/// The image layers to create at `last_record_lsn`: the ranges of [`image_partitions`] over
/// which some part has at least `image_creation_threshold` delta layers (at least 1) above
/// its newest image (see [`count_deltas`]; L0 layers count only when the single partition is
/// the whole key space).
///
/// Cost: each partition scans the snapshot, O(partitions × layers) (plus the elementary
/// intervals of each partition); tens of millions of cheap comparisons for thousands of
/// layers and partitions, acceptable for a background task.
pub fn plan_image_layers(
    snapshot: &[LayerDesc],
    keyspace: &KeySpace,
    partition_target_keys: u64,
    image_creation_threshold: usize,
    last_record_lsn: Lsn,
) -> Vec<Range<Key>> {
    let end_lsn = Lsn(last_record_lsn.0.saturating_add(1));
    let threshold = image_creation_threshold.max(1);
    image_partitions(keyspace, partition_target_keys)
        .into_iter()
        .filter(|range| count_deltas(snapshot, range, end_lsn) >= threshold)
        .collect()
}

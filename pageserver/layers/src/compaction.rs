//! Compaction mechanism: carrying out the plans of [`crate::planner`].
//!
//! - [`compact_l0`] merges L0 delta layers into L1 delta layers: a k-way merge of all
//!   `(key, LSN, value)` entries in (key, LSN) order, cut into files of about
//!   `target_size_bytes` at key boundaries. A key whose history alone reaches
//!   `min(target_size_bytes, MAX_KEY_CHUNK_BYTES)` gets layers of its own
//!   (`[key, key + 1)`), split on the LSN axis every that many bytes; so an output file
//!   exceeds the target by at most one key's history below that chunk size. Outputs cover
//!   the union of the inputs' LSN ranges (except the LSN-split layers of such a key, which
//!   together cover it). Each output starts where the previous one ended (so they tile the
//!   keys from the first to just after the last), except that a key split on the LSN axis
//!   gets exactly `[key, key + 1)`.
//! - [`create_image_layers`] writes image layers of given key ranges at one LSN, with the
//!   values supplied by the caller's `materialize(key)` (the pageserver reconstructs the
//!   value and runs WAL redo); keys that do not exist are left out.
//! - [`install_update`] publishes the result: every new file is complete and durable
//!   (written to a temporary file, fsynced, linked under its final name, directory fsynced)
//!   before the layer map is updated; the replaced files are deleted (durably) after.
//!
//! On any error, the files a call already wrote are removed, so a failed compaction leaves
//! neither temporary nor orphaned layer files behind (a crash may: `*.___temp` files and
//! files not in the timeline's index are garbage at startup).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::RwLock;

use bytes::Bytes;
use pageserver_api::key::Key;
use pageserver_api::keyspace::KeySpace;
use utils::crashsafe::fsync_dir;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::delta_layer::{DeltaEntry, DeltaIter, DeltaLayer, DeltaLayerWriter};
use crate::error::LayerError;
use crate::image_layer::ImageLayerWriter;
use crate::layer_map::{BatchUpdate, LayerMap, LayerMapError};
use crate::layer_name::{LayerDesc, LayerName};
use crate::read_path::LayerFileCache;

/// Largest part of one key's history written to one file before it is split on the LSN
/// axis (also the most [`compact_l0`] buffers in memory).
pub const MAX_KEY_CHUNK_BYTES: u64 = 32 * 1024 * 1024;

/// Bytes an entry adds to a delta layer besides its value: index key, blob reference and
/// blob header (an estimate, for splitting).
const ENTRY_OVERHEAD_BYTES: u64 = 26 + 8 + 8;

/// Why a compaction step failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    LayerMap(#[from] LayerMapError),
    #[error("invalid compaction input: {0}")]
    InvalidInput(String),
    #[error("{key} @ {lsn} appears in more than one input layer")]
    DuplicateEntry { key: Key, lsn: Lsn },
    #[error("materializing {key} failed: {source}")]
    Materialize {
        key: Key,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The identity and location of the layers a compaction writes.
#[derive(Clone, Copy, Debug)]
pub struct TimelineDir<'a> {
    pub dir: &'a Path,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
}

/// Removes layer files written by a failed step (best effort: they are garbage anyway).
fn discard(dir: &Path, outputs: &[LayerDesc]) {
    for desc in outputs {
        let path = dir.join(desc.file_name());
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!("failed to remove {}: {e}", path.display());
        }
    }
}

/// Opens the inputs and checks they are delta layers of this timeline with disjoint LSN
/// ranges; returns them sorted by LSN and the union of their LSN ranges.
fn open_inputs(
    tl: TimelineDir<'_>,
    inputs: &[LayerName],
) -> Result<(Vec<DeltaLayer>, Range<Lsn>), CompactionError> {
    let mut layers = Vec::with_capacity(inputs.len());
    for name in inputs {
        if !name.is_delta() {
            return Err(CompactionError::InvalidInput(format!(
                "{name} is not a delta layer"
            )));
        }
        let layer = DeltaLayer::open(&tl.dir.join(name.to_string()))?;
        if layer.layer_name() != *name
            || (layer.tenant_id(), layer.timeline_id()) != (tl.tenant_id, tl.timeline_id)
        {
            return Err(CompactionError::InvalidInput(format!(
                "file {name} holds layer {} of timeline {}",
                layer.layer_name(),
                layer.timeline_id()
            )));
        }
        layers.push(layer);
    }
    layers.sort_by_key(|l| l.lsn_range().start);
    for w in layers.windows(2) {
        if w[1].lsn_range().start < w[0].lsn_range().end {
            return Err(CompactionError::InvalidInput(format!(
                "LSN ranges of {} and {} overlap",
                w[0].layer_name(),
                w[1].layer_name()
            )));
        }
    }
    let (Some(first), Some(last)) = (layers.first(), layers.last()) else {
        return Err(CompactionError::InvalidInput("no input layers".to_string()));
    };
    let lsn_range = first.lsn_range().start..last.lsn_range().end;
    Ok((layers, lsn_range))
}

/// Merges the delta layers `inputs` (files in `tl.dir`) into new L1 delta layers of about
/// `target_size_bytes` each (see the module documentation). Returns the new layers in key
/// order; the inputs are left alone.
pub fn compact_l0(
    tl: TimelineDir<'_>,
    inputs: &[LayerName],
    target_size_bytes: u64,
) -> Result<Vec<LayerDesc>, CompactionError> {
    let (layers, lsn_range) = open_inputs(tl, inputs)?;
    let mut builder = L1Builder::new(tl, lsn_range, target_size_bytes);
    match merge_into(&layers, &mut builder).and_then(|()| builder.finish()) {
        Ok(()) => Ok(std::mem::take(&mut builder.outputs)),
        Err(e) => {
            builder.cur = None;
            discard(tl.dir, &builder.outputs);
            Err(e)
        }
    }
}

/// Feeds every entry of `layers` to `builder` in (key, LSN) order.
fn merge_into(layers: &[DeltaLayer], builder: &mut L1Builder<'_>) -> Result<(), CompactionError> {
    let mut iters: Vec<DeltaIter<'_>> =
        layers.iter().map(|l| l.iter()).collect::<Result<_, _>>()?;
    let mut heads: Vec<Option<DeltaEntry>> = Vec::with_capacity(iters.len());
    let mut heap = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        let head = it.next().transpose()?;
        if let Some(e) = &head {
            heap.push(Reverse((e.key, e.lsn, i)));
        }
        heads.push(head);
    }
    let mut last: Option<(Key, Lsn)> = None;
    while let Some(Reverse((key, lsn, i))) = heap.pop() {
        if last == Some((key, lsn)) {
            return Err(CompactionError::DuplicateEntry { key, lsn });
        }
        last = Some((key, lsn));
        let entry = heads[i].take().expect("heap entries have heads");
        heads[i] = iters[i].next().transpose()?;
        if let Some(e) = &heads[i] {
            heap.push(Reverse((e.key, e.lsn, i)));
        }
        builder.push(entry)?;
    }
    Ok(())
}

/// Cuts a (key, LSN)-ordered stream of entries into L1 delta layers.
struct L1Builder<'a> {
    tl: TimelineDir<'a>,
    lsn_range: Range<Lsn>,
    target_size_bytes: u64,
    chunk_cap_bytes: u64,
    outputs: Vec<LayerDesc>,
    /// The file being filled with whole key histories, and the last key in it.
    cur: Option<(DeltaLayerWriter, Key)>,
    /// The key whose entries are in `pending`.
    key: Option<Key>,
    pending: Vec<DeltaEntry>,
    pending_bytes: u64,
    /// Set once the current key's history is written in layers of its own: where the next
    /// of them starts on the LSN axis.
    split_lsn: Option<Lsn>,
    /// The key range end of the last finished output: the next one starts there, so the
    /// outputs' key ranges touch.
    next_key_start: Option<Key>,
}

impl<'a> L1Builder<'a> {
    fn new(tl: TimelineDir<'a>, lsn_range: Range<Lsn>, target_size_bytes: u64) -> Self {
        L1Builder {
            tl,
            lsn_range,
            target_size_bytes,
            chunk_cap_bytes: target_size_bytes.min(MAX_KEY_CHUNK_BYTES),
            outputs: Vec::new(),
            cur: None,
            key: None,
            pending: Vec::new(),
            pending_bytes: 0,
            split_lsn: None,
            next_key_start: None,
        }
    }

    fn push(&mut self, e: DeltaEntry) -> Result<(), CompactionError> {
        if self.key.is_some_and(|k| k != e.key) {
            self.end_key()?;
        }
        self.key = Some(e.key);
        if self.pending_bytes >= self.chunk_cap_bytes && !self.pending.is_empty() {
            self.spill(e.lsn)?;
        }
        self.pending_bytes += e.value.len() as u64 + ENTRY_OVERHEAD_BYTES;
        self.pending.push(e);
        Ok(())
    }

    /// Writes the pending history of the current key, which has grown too big to share a
    /// file, as a layer `[key, key + 1)` of its own up to (not including) `until`.
    fn spill(&mut self, until: Lsn) -> Result<(), CompactionError> {
        let key = self.key.expect("spill with a current key");
        let start = match self.split_lsn {
            Some(s) => s,
            None => {
                self.finish_cur(key)?;
                self.lsn_range.start
            }
        };
        self.write_own_layer(key, start..until)?;
        self.split_lsn = Some(until);
        Ok(())
    }

    fn write_own_layer(&mut self, key: Key, lsn_range: Range<Lsn>) -> Result<(), CompactionError> {
        let tl = self.tl;
        let mut w = DeltaLayerWriter::new(tl.dir, tl.tenant_id, tl.timeline_id, key, lsn_range)?;
        for e in self.pending.drain(..) {
            w.put_value(e.key, e.lsn, &e.value, e.will_init)?;
        }
        self.pending_bytes = 0;
        self.outputs.push(w.finish(key.next())?);
        self.next_key_start = Some(key.next());
        Ok(())
    }

    /// The current key's history is complete: write it.
    fn end_key(&mut self) -> Result<(), CompactionError> {
        let Some(key) = self.key.take() else {
            return Ok(());
        };
        if let Some(start) = self.split_lsn.take() {
            return self.write_own_layer(key, start..self.lsn_range.end);
        }
        let full = self
            .cur
            .as_ref()
            .is_some_and(|(w, _)| w.estimated_size_bytes() >= self.target_size_bytes);
        if full {
            self.finish_cur(key)?;
        }
        if self.cur.is_none() {
            let tl = self.tl;
            let start = self.next_key_start.unwrap_or(key);
            let w = DeltaLayerWriter::new(
                tl.dir,
                tl.tenant_id,
                tl.timeline_id,
                start,
                self.lsn_range.clone(),
            )?;
            self.cur = Some((w, key));
        }
        let (w, last) = self.cur.as_mut().expect("set above");
        for e in self.pending.drain(..) {
            w.put_value(e.key, e.lsn, &e.value, e.will_init)?;
        }
        *last = key;
        self.pending_bytes = 0;
        Ok(())
    }

    /// Finishes the file being filled, if any, with key range end `key_end`.
    fn finish_cur(&mut self, key_end: Key) -> Result<(), CompactionError> {
        if let Some((w, _)) = self.cur.take() {
            self.outputs.push(w.finish(key_end)?);
            self.next_key_start = Some(key_end);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), CompactionError> {
        self.end_key()?;
        let last = self.cur.as_ref().map(|(_, last)| *last);
        if let Some(last) = last {
            self.finish_cur(last.next())?;
        }
        Ok(())
    }
}

/// Writes one image layer per range of `key_ranges` at `lsn`, holding the keys of `keyspace`
/// in that range for which `materialize` returns a value (`None`: the key does not exist).
/// A range without any value gets no file. Returns the new layers; on error none remain.
pub fn create_image_layers<F, E>(
    tl: TimelineDir<'_>,
    key_ranges: &[Range<Key>],
    keyspace: &KeySpace,
    lsn: Lsn,
    mut materialize: F,
) -> Result<Vec<LayerDesc>, CompactionError>
where
    F: FnMut(Key) -> Result<Option<Bytes>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut outputs = Vec::new();
    for range in key_ranges {
        match create_image_layer(tl, range, keyspace, lsn, &mut materialize) {
            Ok(Some(desc)) => outputs.push(desc),
            Ok(None) => {}
            Err(e) => {
                discard(tl.dir, &outputs);
                return Err(e);
            }
        }
    }
    Ok(outputs)
}

fn create_image_layer<F, E>(
    tl: TimelineDir<'_>,
    key_range: &Range<Key>,
    keyspace: &KeySpace,
    lsn: Lsn,
    materialize: &mut F,
) -> Result<Option<LayerDesc>, CompactionError>
where
    F: FnMut(Key) -> Result<Option<Bytes>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut writer =
        ImageLayerWriter::new(tl.dir, tl.tenant_id, tl.timeline_id, key_range.clone(), lsn)?;
    for key in keyspace.intersect_range(key_range).keys() {
        let value = materialize(key).map_err(|e| CompactionError::Materialize {
            key,
            source: e.into(),
        })?;
        if let Some(value) = value {
            writer.put_image(key, &value)?;
        }
    }
    if writer.num_entries() == 0 {
        // Dropping the writer removes its temporary file.
        return Ok(None);
    }
    Ok(Some(writer.finish()?))
}

/// Removes the files of `names` from `dir` (already missing ones are fine), then fsyncs the
/// directory once.
pub fn delete_layer_files(dir: &Path, names: &[LayerName]) -> Result<(), CompactionError> {
    for name in names {
        let path = dir.join(name.to_string());
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LayerError::io("remove", &path, e).into()),
        }
    }
    fsync_dir(dir).map_err(LayerError::from)?;
    Ok(())
}

/// Publishes a compaction or image creation: applies `update` to the map under its write
/// lock, then closes (in `cache`) and deletes the files of the removed layers. The inserted
/// files must already be complete and durable in `dir`. If the map refuses the update, the
/// inserted files are deleted and the map is unchanged.
pub fn install_update(
    map: &RwLock<LayerMap>,
    cache: Option<&LayerFileCache>,
    dir: &Path,
    update: BatchUpdate,
) -> Result<(), CompactionError> {
    let removed = update.removes().to_vec();
    let inserted = update.inserts().to_vec();
    {
        let mut map = map.write().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = map.apply(update) {
            // Never delete a file the map still refers to.
            let orphans: Vec<LayerDesc> = inserted
                .into_iter()
                .filter(|d| !map.contains(&d.name))
                .collect();
            drop(map);
            discard(dir, &orphans);
            return Err(e.into());
        }
    }
    if let Some(cache) = cache {
        removed.iter().for_each(|name| cache.forget(name));
    }
    delete_layer_files(dir, &removed)
}

//! A timeline: one branch of a tenant's history, stored in the layer map of
//! `pageserver_layers` (open and frozen in-memory layers, delta and image layer files).
//!
//! Writes go into the open in-memory layer. When it holds `checkpoint_distance` bytes (or on
//! `freeze_and_flush`), it is frozen at `last_record_lsn + 1` and written as an L0 delta
//! file `[start, last_record_lsn + 1)` (fsynced by the layer writer); then the metadata is
//! written with `disk_consistent_lsn = last_record_lsn`.
//!
//! **Load rule**: a layer file whose LSN range starts above `disk_consistent_lsn` was written
//! but never recorded in the metadata (crash between the two), and is deleted at load: its
//! WAL is ingested again. Temporary (`*.___temp`) and ephemeral (`ephemeral-*`) files are
//! deleted too. A crash during compaction may leave both the inputs and outputs of a merge;
//! they hold the same versions, so reads stay correct and the next compaction merges them.
//!
//! Reads use `pageserver_layers::read_path::collect_values` over this timeline's map, then
//! the ancestor's at `min(lsn, ancestor_lsn)`, and rebuild the value with [`Redo`].

mod compaction;
pub use compaction::CompactionOutcome;
mod load;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pageserver_api::key::Key;
use pageserver_api::models::{EffectiveTenantConfig, TimelineInfo, TimelineState};
use pageserver_api::value::{NeonWalRecord, Value};
use pageserver_layers::inmemory_layer::InMemoryLayer;
use pageserver_layers::layer_map::{BatchUpdate, LayerMap};
use pageserver_layers::read_path::{
    collect_values, LayerFileCache, ReconstructData, ReconstructOutcome, ValueReconstructState,
};
use tokio::sync::watch;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use super::page_cache::{self, PageCache, TimelineTag};
use crate::apply_neon::apply_neon_record;
use crate::metadata::{TimelineMetadata, METADATA_FILE_NAME};
use crate::storage_api::{ReadError, TimelineRead, TimelineWrite, WriteError};

/// Most layer files kept open per timeline.
pub const MAX_OPEN_LAYER_FILES: usize = 256;

/// Rebuilds a value from a base image and the records after it (oldest first).
pub trait Redo: Send + Sync {
    /// `base` is the newest image with its LSN (`None` if the first record initialises the
    /// value); `records` come with their LSNs, oldest first.
    fn redo(
        &self,
        key: Key,
        lsn: Lsn,
        base: Option<(Lsn, Bytes)>,
        records: Vec<(Lsn, NeonWalRecord)>,
    ) -> Result<Bytes, String>;

    /// Releases resources (e.g. a redo process); later requests may start them again.
    fn shutdown(&self) {}
}

/// Applies the pageserver's own record types in Rust only (tests and tools); the daemon uses
/// [`super::redo::PostgresRedo`] for PostgreSQL records.
pub struct NeonOnlyRedo;

impl Redo for NeonOnlyRedo {
    fn redo(
        &self,
        key: Key,
        _lsn: Lsn,
        base: Option<(Lsn, Bytes)>,
        records: Vec<(Lsn, NeonWalRecord)>,
    ) -> Result<Bytes, String> {
        let mut page = match base {
            Some((_, b)) => BytesMut::from(&b[..]),
            None => return Err("WAL records without a base image".into()),
        };
        for (_, rec) in &records {
            if matches!(rec, NeonWalRecord::Postgres { .. }) {
                return Err("PostgreSQL WAL redo is not available".into());
            }
            apply_neon_record(key, &mut page, rec).map_err(|e| e.to_string())?;
        }
        Ok(page.freeze())
    }
}

/// Errors of timeline operations other than reads and writes.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("layer error in {path}: {message}")]
    Layer { path: PathBuf, message: String },
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {timeout:?} waiting for WAL up to {lsn} (last record at {last})")]
    WaitLsnTimeout {
        lsn: Lsn,
        last: Lsn,
        timeout: Duration,
    },
    #[error("timeline is shutting down")]
    ShuttingDown,
    #[error("compaction failed: {0}")]
    Compaction(String),
}

/// What a timeline uses besides its directory: the tenant's configuration, its WAL redo and
/// the materialized page cache.
#[derive(Clone)]
pub struct TimelineDeps {
    pub conf: Arc<RwLock<EffectiveTenantConfig>>,
    pub redo: Arc<dyn Redo>,
    pub page_cache: Arc<PageCache>,
}

impl TimelineDeps {
    /// With the process-wide page cache ([`page_cache::global`]).
    pub fn shared(conf: Arc<RwLock<EffectiveTenantConfig>>, redo: Arc<dyn Redo>) -> Self {
        TimelineDeps {
            conf,
            redo,
            page_cache: page_cache::global(),
        }
    }
}

/// One timeline of a tenant.
pub struct Timeline {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    dir: PathBuf,
    pub ancestor: Option<Arc<Timeline>>,
    pub ancestor_lsn: Lsn,
    pub initdb_lsn: Lsn,
    pub pg_version: u32,
    latest_gc_cutoff_lsn: Lsn,
    conf: Arc<RwLock<EffectiveTenantConfig>>,
    redo: Arc<dyn Redo>,
    /// Materialized values of this timeline's keys (see [`page_cache`]).
    page_cache: Arc<PageCache>,
    /// This timeline object's identity in `page_cache`.
    cache_tag: TimelineTag,
    layers: RwLock<LayerMap>,
    files: LayerFileCache,
    /// (last_record_lsn, prev_record_lsn).
    last_record: watch::Sender<(Lsn, Lsn)>,
    disk_consistent_lsn: Mutex<Lsn>,
    write_lock: Mutex<()>,
    /// Serializes flushes and compactions of this timeline.
    flush_lock: Mutex<()>,
}

impl Timeline {
    /// Loads a timeline directory: metadata, then its layer files (see the load rule).
    pub fn load(
        tenant_id: TenantId,
        timeline_id: TimelineId,
        dir: &Path,
        ancestor: Option<Arc<Timeline>>,
        conf: Arc<RwLock<EffectiveTenantConfig>>,
        redo: Arc<dyn Redo>,
    ) -> Result<Arc<Timeline>, TimelineError> {
        let deps = TimelineDeps::shared(conf, redo);
        Self::load_with(tenant_id, timeline_id, dir, ancestor, deps)
    }

    /// [`Timeline::load`] with explicit dependencies (e.g. a private page cache).
    pub fn load_with(
        tenant_id: TenantId,
        timeline_id: TimelineId,
        dir: &Path,
        ancestor: Option<Arc<Timeline>>,
        deps: TimelineDeps,
    ) -> Result<Arc<Timeline>, TimelineError> {
        let meta = TimelineMetadata::read(&dir.join(METADATA_FILE_NAME))?;
        let descs = load::scan_layer_files(dir, tenant_id, timeline_id, meta.disk_consistent_lsn)?;
        let map = LayerMap::from_layers(descs).map_err(|e| TimelineError::Layer {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let ids = (tenant_id, timeline_id);
        Ok(Self::new(ids, dir, &meta, ancestor, deps, map))
    }

    /// Creates the directory of a new timeline with its first metadata.
    pub fn create_empty(
        tenant_id: TenantId,
        timeline_id: TimelineId,
        dir: &Path,
        meta: &TimelineMetadata,
        ancestor: Option<Arc<Timeline>>,
        conf: Arc<RwLock<EffectiveTenantConfig>>,
        redo: Arc<dyn Redo>,
    ) -> Result<Arc<Timeline>, TimelineError> {
        let deps = TimelineDeps::shared(conf, redo);
        Self::create_empty_with(tenant_id, timeline_id, dir, meta, ancestor, deps)
    }

    /// [`Timeline::create_empty`] with explicit dependencies (e.g. a private page cache).
    pub fn create_empty_with(
        tenant_id: TenantId,
        timeline_id: TimelineId,
        dir: &Path,
        meta: &TimelineMetadata,
        ancestor: Option<Arc<Timeline>>,
        deps: TimelineDeps,
    ) -> Result<Arc<Timeline>, TimelineError> {
        utils::crashsafe::create_dir_all_durable(dir).map_err(|e| TimelineError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(e.kind(), e.to_string()),
        })?;
        meta.write(&dir.join(METADATA_FILE_NAME))?;
        let ids = (tenant_id, timeline_id);
        Ok(Self::new(ids, dir, meta, ancestor, deps, LayerMap::new()))
    }

    fn new(
        (tenant_id, timeline_id): (TenantId, TimelineId),
        dir: &Path,
        meta: &TimelineMetadata,
        ancestor: Option<Arc<Timeline>>,
        TimelineDeps {
            conf,
            redo,
            page_cache,
        }: TimelineDeps,
        map: LayerMap,
    ) -> Arc<Timeline> {
        let dcl = meta.disk_consistent_lsn;
        let prev = meta.prev_record_lsn.unwrap_or(Lsn(0));
        Arc::new(Timeline {
            tenant_id,
            timeline_id,
            dir: dir.to_path_buf(),
            ancestor,
            ancestor_lsn: meta.ancestor_lsn,
            initdb_lsn: meta.initdb_lsn,
            pg_version: meta.pg_version,
            latest_gc_cutoff_lsn: meta.latest_gc_cutoff_lsn,
            conf,
            redo,
            page_cache,
            cache_tag: TimelineTag::next(tenant_id, timeline_id),
            layers: RwLock::new(map),
            files: LayerFileCache::new(dir, MAX_OPEN_LAYER_FILES),
            last_record: watch::Sender::new((dcl, prev)),
            disk_consistent_lsn: Mutex::new(dcl),
            write_lock: Mutex::new(()),
            flush_lock: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn last_record_lsn(&self) -> Lsn {
        self.last_record.borrow().0
    }

    pub fn prev_record_lsn(&self) -> Lsn {
        self.last_record.borrow().1
    }

    pub fn disk_consistent_lsn(&self) -> Lsn {
        *lock(&self.disk_consistent_lsn)
    }

    pub fn latest_gc_cutoff_lsn(&self) -> Lsn {
        self.latest_gc_cutoff_lsn
    }

    fn map_read(&self) -> RwLockReadGuard<'_, LayerMap> {
        self.layers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn map_write(&self) -> RwLockWriteGuard<'_, LayerMap> {
        self.layers.write().unwrap_or_else(|e| e.into_inner())
    }

    fn layer_err(&self, e: impl std::fmt::Display) -> TimelineError {
        TimelineError::Layer {
            path: self.dir.clone(),
            message: e.to_string(),
        }
    }

    /// Number of layer files and their total size in bytes.
    pub fn layer_stats(&self) -> (usize, u64) {
        let snapshot = self.map_read().snapshot();
        let bytes = snapshot.iter().map(|d| d.file_size_bytes).sum();
        (snapshot.len(), bytes)
    }

    /// Waits until `last_record_lsn >= lsn`, at most `timeout`.
    pub async fn wait_lsn(&self, lsn: Lsn, timeout: Duration) -> Result<(), TimelineError> {
        let mut rx = self.last_record.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|(last, _)| *last >= lsn)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(TimelineError::ShuttingDown),
            Err(_) => Err(TimelineError::WaitLsnTimeout {
                lsn,
                last: self.last_record_lsn(),
                timeout,
            }),
        }
    }

    /// The single writer of this timeline (blocks while another writer exists).
    pub fn writer(&self) -> TimelineWriter<'_> {
        TimelineWriter {
            tl: self,
            _guard: lock(&self.write_lock),
        }
    }

    /// The API view of this timeline.
    pub fn info(&self, logical_size: u64) -> TimelineInfo {
        let prev = self.prev_record_lsn();
        TimelineInfo {
            tenant_id: self.tenant_id,
            timeline_id: self.timeline_id,
            ancestor_timeline_id: self.ancestor.as_ref().map(|a| a.timeline_id),
            ancestor_lsn: self.ancestor.as_ref().map(|_| self.ancestor_lsn),
            last_record_lsn: self.last_record_lsn(),
            prev_record_lsn: (prev != Lsn(0)).then_some(prev),
            disk_consistent_lsn: self.disk_consistent_lsn(),
            initdb_lsn: self.initdb_lsn,
            latest_gc_cutoff_lsn: self.latest_gc_cutoff_lsn,
            current_logical_size: logical_size,
            current_physical_size: Some(self.layer_stats().1),
            pg_version: self.pg_version,
            state: TimelineState::Active,
        }
    }

    fn metadata(&self, dcl: Lsn, prev: Lsn) -> TimelineMetadata {
        TimelineMetadata {
            disk_consistent_lsn: dcl,
            prev_record_lsn: (prev != Lsn(0)).then_some(prev),
            ancestor_timeline: self.ancestor.as_ref().map(|a| a.timeline_id),
            ancestor_lsn: self.ancestor_lsn,
            latest_gc_cutoff_lsn: self.latest_gc_cutoff_lsn,
            initdb_lsn: self.initdb_lsn,
            pg_version: self.pg_version,
        }
    }

    /// Freezes the open layer (if it holds anything and nothing above `last_record_lsn`),
    /// writes every frozen layer as an L0 delta file and advances `disk_consistent_lsn` in
    /// the metadata.
    pub fn freeze_and_flush(&self) -> Result<(), TimelineError> {
        let _flush = lock(&self.flush_lock);
        let (last, prev) = *self.last_record.borrow();
        let open_start = {
            let mut map = self.map_write();
            let open = map.open_layer().cloned();
            match open {
                Some(l) if l.num_values() > 0 && l.newest_lsn().is_some_and(|n| n <= last) => {
                    map.freeze_open_layer(Lsn(last.0 + 1))
                        .map_err(|e| self.layer_err(e))?;
                    None
                }
                Some(l) if l.num_values() > 0 => Some(l.start_lsn()),
                _ => None,
            }
        };
        loop {
            // (The read guard must not live into the body, which takes the write lock.)
            let oldest = self.map_read().oldest_frozen_layer().cloned();
            let Some(frozen) = oldest else { break };
            let end = frozen.lsn_range().end;
            let desc = frozen
                .write_to_disk(&self.dir)
                .map_err(|e| self.layer_err(e))?;
            let mut update = BatchUpdate::new();
            if let Some(d) = desc {
                update.insert(d);
            }
            update.flushed_frozen_layer(end);
            self.map_write()
                .apply(update)
                .map_err(|e| self.layer_err(e))?;
            self.advance_disk_consistent_lsn(Lsn(end.0 - 1), last, prev)?;
        }
        // Everything up to the last record is on disk unless the open layer holds values of
        // a record in progress.
        let durable = match open_start {
            Some(start) => Lsn(start.0.saturating_sub(1)).min(last),
            None => last,
        };
        self.advance_disk_consistent_lsn(durable, last, prev)
    }

    fn advance_disk_consistent_lsn(
        &self,
        new_dcl: Lsn,
        last: Lsn,
        prev: Lsn,
    ) -> Result<(), TimelineError> {
        let mut dcl = lock(&self.disk_consistent_lsn);
        if new_dcl > *dcl {
            let prev = if new_dcl == last { prev } else { Lsn(0) };
            self.metadata(new_dcl, prev)
                .write(&self.dir.join(METADATA_FILE_NAME))?;
            *dcl = new_dcl;
        }
        Ok(())
    }

    /// The open layer, created (starting after everything frozen or durable) if needed.
    fn open_layer(&self) -> Result<Arc<InMemoryLayer>, WriteError> {
        if let Some(l) = self.map_read().open_layer() {
            return Ok(l.clone());
        }
        let mut map = self.map_write();
        if let Some(l) = map.open_layer() {
            return Ok(l.clone());
        }
        let dcl = self.disk_consistent_lsn();
        let start = map
            .frozen_end_lsn()
            .unwrap_or(Lsn(dcl.0 + 1))
            .max(Lsn(dcl.0 + 1));
        let storage = |e: String| WriteError::Storage(e.into());
        let layer = InMemoryLayer::create(&self.dir, self.tenant_id, self.timeline_id, start)
            .map_err(|e| storage(e.to_string()))?;
        let layer = Arc::new(layer);
        map.install_open_layer(layer.clone())
            .map_err(|e| storage(e.to_string()))?;
        Ok(layer)
    }

    /// Collects the versions of `key` below `end_lsn` here and in the ancestors.
    fn collect(&self, state: &mut ValueReconstructState, end_lsn: Lsn) -> Result<(), ReadError> {
        let key = state.key();
        let storage = |source: Box<dyn std::error::Error + Send + Sync>| ReadError::Storage {
            key,
            lsn: Lsn(end_lsn.0.saturating_sub(1)),
            source,
        };
        let outcome = {
            let map = self.map_read();
            collect_values(&map, &self.files, state, end_lsn).map_err(|e| storage(e.into()))?
        };
        match (outcome, &self.ancestor) {
            (ReconstructOutcome::NeedAncestor { cont_lsn }, Some(anc)) => {
                let end = cont_lsn.min(Lsn(self.ancestor_lsn.0.saturating_add(1)));
                anc.collect(state, end)
            }
            _ => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TimelineRead for Timeline {
    fn get(&self, key: Key, lsn: Lsn) -> Result<Option<Bytes>, ReadError> {
        // Read before the versions are collected (see `page_cache`).
        let settled = self.settled_snapshot();
        let mut state = ValueReconstructState::new(key);
        self.collect(&mut state, Lsn(lsn.0.saturating_add(1)))?;
        if state.is_empty() {
            return Ok(None);
        }
        let data = state.into_data();
        if let (Some((_, img)), true) = (&data.img, data.records.is_empty()) {
            return Ok(Some(img.clone()));
        }
        self.reconstruct(key, lsn, data, &settled).map(Some)
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.page_cache.forget_timeline(self.cache_tag);
    }
}

/// Which versions a read may cache: for this timeline and each ancestor (in that order), the
/// LSN above which versions come from that timeline (`Lsn(0)` for the root) and its
/// `last_record_lsn`, read before the versions were collected. Versions of a timeline strictly
/// below its `last_record_lsn` never change (puts at or above it only).
struct SettledSnapshot(Vec<(Lsn, Lsn)>);

impl SettledSnapshot {
    /// Whether the version at `v` (and so every older one) was final when the snapshot was
    /// taken.
    fn is_settled(&self, v: Lsn) -> bool {
        self.0
            .iter()
            .find(|(floor, _)| v > *floor || *floor == Lsn(0))
            .is_some_and(|(_, last)| v < *last)
    }
}

impl Timeline {
    fn settled_snapshot(&self) -> SettledSnapshot {
        let mut levels = Vec::new();
        let mut tl = Some(self);
        while let Some(t) = tl {
            let floor = if t.ancestor.is_some() {
                t.ancestor_lsn
            } else {
                Lsn(0)
            };
            levels.push((floor, t.last_record_lsn()));
            tl = t.ancestor.as_deref();
        }
        SettledSnapshot(levels)
    }

    /// Rebuilds `key` at `lsn` from collected versions that include at least one record,
    /// starting from the newest cached version, and caches the result when its newest version
    /// is settled.
    fn reconstruct(
        &self,
        key: Key,
        lsn: Lsn,
        data: ReconstructData,
        settled: &SettledSnapshot,
    ) -> Result<Bytes, ReadError> {
        let ReconstructData {
            mut img,
            mut records,
        } = data;
        let newest = records.last().map(|(l, _)| *l).unwrap_or(Lsn(0));
        let versions = records.iter().rev().map(|(l, _)| *l);
        if let Some((cached_lsn, page)) =
            self.page_cache.lookup_newest(self.cache_tag, key, versions)
        {
            if cached_lsn == newest {
                return Ok(page);
            }
            records.retain(|(l, _)| *l > cached_lsn);
            img = Some((cached_lsn, page));
        }
        let page = self
            .redo
            .redo(key, lsn, img, records)
            .map_err(|reason| ReadError::Reconstruct { key, lsn, reason })?;
        if settled.is_settled(newest) {
            self.page_cache
                .insert(self.cache_tag, key, newest, page.clone());
        }
        Ok(page)
    }
}

/// Exclusive write access to a timeline; also reads (the writer reads its own writes).
pub struct TimelineWriter<'a> {
    tl: &'a Timeline,
    _guard: MutexGuard<'a, ()>,
}

impl TimelineRead for TimelineWriter<'_> {
    fn get(&self, key: Key, lsn: Lsn) -> Result<Option<Bytes>, ReadError> {
        self.tl.get(key, lsn)
    }
}

impl TimelineWrite for TimelineWriter<'_> {
    fn put_batch(&mut self, mut batch: Vec<(Key, Lsn, Value)>) -> Result<(), WriteError> {
        let tl = self.tl;
        // The in-memory layer takes each key's versions in LSN order; a stable sort keeps a
        // later put of the same (key, LSN) after the earlier one, so it still replaces it.
        batch.sort_by_key(|(k, l, _)| (*k, *l));
        let checkpoint_distance = tl
            .conf
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .checkpoint_distance;
        let last = tl.last_record_lsn();
        let open = tl.map_read().open_layer().cloned();
        if let Some(open) = open {
            let settled = open.newest_lsn().is_none_or(|n| n <= last);
            if open.size_bytes() >= checkpoint_distance && settled {
                tl.freeze_and_flush()
                    .map_err(|e| WriteError::Storage(Box::new(e)))?;
            }
        }
        let open = tl.open_layer()?;
        let floor = open.start_lsn().max(last);
        if let Some((key, lsn, _)) = batch.iter().find(|(_, l, _)| *l < floor) {
            return Err(WriteError::LsnTooOld {
                key: *key,
                lsn: *lsn,
                last_record_lsn: last,
            });
        }
        for (key, lsn, value) in &batch {
            open.put_value(*key, *lsn, value)
                .map_err(|e| WriteError::Storage(Box::new(e)))?;
        }
        Ok(())
    }

    fn finish_write(&mut self, last_record_lsn: Lsn, prev_record_lsn: Lsn) {
        let (old, _) = self
            .tl
            .last_record
            .send_replace((last_record_lsn, prev_record_lsn));
        let advanced = last_record_lsn.0.saturating_sub(old.0);
        crate::http::metrics::METRICS
            .ingest_bytes
            .fetch_add(advanced, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

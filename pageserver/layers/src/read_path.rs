//! The read path of one key: collecting the versions needed to rebuild its value at an LSN.
//!
//! [`collect_values`] walks the layers of one timeline newest → oldest (guided by
//! [`LayerMap::search`]), gathering the key's [`Value`]s into a [`ValueReconstructState`]
//! until it finds an image or a `will_init` record. The result is an optional base image
//! with its LSN and the WAL records above it, oldest → newest ([`ReconstructData`]); applying
//! the records (WAL redo) is the caller's business.
//!
//! A timeline's layer map does not know the timeline's ancestor: when the search runs out of
//! layers before the value is complete, [`ReconstructOutcome::NeedAncestor`] tells the caller
//! where to continue, and the caller calls [`collect_values`] again with the same state on
//! the ancestor's layer map, with `end_lsn = min(cont_lsn, ancestor_lsn + 1)`.
//!
//! Concurrency contract: the caller holds the layer map's read lock for a whole
//! [`collect_values`] call, and a compaction removes files only after its
//! [`LayerMap::apply`] (under the write lock). Then every file a search returns still exists.
//! Layer files are opened through [`LayerFiles`]; [`LayerFileCache`] is a bounded cache of
//! open files.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pageserver_api::key::Key;
use pageserver_api::value::{NeonWalRecord, Value, ValueDecodeError};
use utils::lsn::Lsn;

use crate::delta_layer::{DeltaLayer, ReconstructValues};
use crate::error::LayerError;
use crate::image_layer::ImageLayer;
use crate::inmemory_layer::InMemoryLayerError;
use crate::layer_map::{LayerMap, SearchLayer};
use crate::layer_name::{LayerDesc, LayerName};

/// Why the versions of a key could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum ReadPathError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    InMemory(#[from] InMemoryLayerError),
    #[error("stored value of {key} at {lsn} does not decode: {source}")]
    Decode {
        key: Key,
        lsn: Lsn,
        #[source]
        source: ValueDecodeError,
    },
    #[error("{key} has WAL records above the image layer at {image_lsn}, which lacks the key")]
    MissingBase { key: Key, image_lsn: Lsn },
    #[error("layer map search for {key} below {end_lsn} made no progress (floor {lsn_floor})")]
    NoProgress {
        key: Key,
        end_lsn: Lsn,
        lsn_floor: Lsn,
    },
}

/// Opens layer files for the read path.
pub trait LayerFiles {
    fn delta(&self, desc: &LayerDesc) -> Result<Arc<DeltaLayer>, LayerError>;
    fn image(&self, desc: &LayerDesc) -> Result<Arc<ImageLayer>, LayerError>;
}

#[derive(Clone, Debug)]
enum OpenLayer {
    Delta(Arc<DeltaLayer>),
    Image(Arc<ImageLayer>),
}

#[derive(Debug, Default)]
struct CacheInner {
    open: HashMap<LayerName, OpenLayer>,
    /// Names in insertion order, for eviction.
    order: VecDeque<LayerName>,
}

/// A cache of open layer files of one timeline directory, holding at most
/// `max_open_layers` files (the oldest opened is closed first).
#[derive(Debug)]
pub struct LayerFileCache {
    dir: PathBuf,
    max_open_layers: usize,
    inner: Mutex<CacheInner>,
}

impl LayerFileCache {
    pub fn new(dir: &Path, max_open_layers: usize) -> Self {
        LayerFileCache {
            dir: dir.to_path_buf(),
            max_open_layers: max_open_layers.max(1),
            inner: Mutex::new(CacheInner::default()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the file of layer `name` (e.g. after it was removed from the layer map).
    pub fn forget(&self, name: &LayerName) {
        let mut inner = self.lock();
        if inner.open.remove(name).is_some() {
            inner.order.retain(|n| n != name);
        }
    }

    /// Number of open files.
    pub fn num_open(&self) -> usize {
        self.lock().open.len()
    }

    fn get_or_open(&self, desc: &LayerDesc) -> Result<OpenLayer, LayerError> {
        if let Some(l) = self.lock().open.get(&desc.name) {
            return Ok(l.clone());
        }
        // Opened without the lock; two readers may both open a file, one copy is kept.
        let path = self.dir.join(desc.file_name());
        let (layer, name, ids) = if desc.is_delta() {
            let l = DeltaLayer::open(&path)?;
            let (name, ids) = (l.layer_name(), (l.tenant_id(), l.timeline_id()));
            (OpenLayer::Delta(Arc::new(l)), name, ids)
        } else {
            let l = ImageLayer::open(&path)?;
            let (name, ids) = (l.layer_name(), (l.tenant_id(), l.timeline_id()));
            (OpenLayer::Image(Arc::new(l)), name, ids)
        };
        if name != desc.name || ids != (desc.tenant_id, desc.timeline_id) {
            return Err(LayerError::corrupt(
                &path,
                format!("contents are those of layer {name} of {}/{}", ids.0, ids.1),
            ));
        }
        let mut inner = self.lock();
        if !inner.open.contains_key(&desc.name) {
            while inner.open.len() >= self.max_open_layers {
                let Some(old) = inner.order.pop_front() else {
                    break;
                };
                inner.open.remove(&old);
            }
            inner.open.insert(desc.name.clone(), layer.clone());
            inner.order.push_back(desc.name.clone());
        }
        Ok(layer)
    }
}

impl LayerFiles for LayerFileCache {
    fn delta(&self, desc: &LayerDesc) -> Result<Arc<DeltaLayer>, LayerError> {
        match self.get_or_open(desc)? {
            OpenLayer::Delta(l) => Ok(l),
            OpenLayer::Image(l) => Err(LayerError::corrupt(l.path(), "expected a delta layer")),
        }
    }

    fn image(&self, desc: &LayerDesc) -> Result<Arc<ImageLayer>, LayerError> {
        match self.get_or_open(desc)? {
            OpenLayer::Image(l) => Ok(l),
            OpenLayer::Delta(l) => Err(LayerError::corrupt(l.path(), "expected an image layer")),
        }
    }
}

/// What is needed to rebuild a value: a base image (if any) and the WAL records to apply
/// on top of it, oldest first. Without an image the first record has `will_init`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconstructData {
    pub img: Option<(Lsn, Bytes)>,
    pub records: Vec<(Lsn, NeonWalRecord)>,
}

/// The versions of one key collected so far, possibly across timelines.
#[derive(Clone, Debug)]
pub struct ValueReconstructState {
    key: Key,
    /// Newest first while collecting.
    records: Vec<(Lsn, NeonWalRecord)>,
    img: Option<(Lsn, Bytes)>,
    complete: bool,
}

/// How [`collect_values`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconstructOutcome {
    /// An image or a `will_init` record was found: see [`ValueReconstructState::into_data`].
    Complete,
    /// The timeline has no versions of the key below `cont_lsn`. Continue in the ancestor
    /// timeline; without one, the key has no version at all if nothing was collected.
    NeedAncestor { cont_lsn: Lsn },
    /// An image layer at `image_lsn` covers the key but lacks it, and nothing newer was
    /// found: the key does not exist at the requested LSN.
    Missing { image_lsn: Lsn },
}

impl ValueReconstructState {
    pub fn new(key: Key) -> Self {
        ValueReconstructState {
            key,
            records: Vec::new(),
            img: None,
            complete: false,
        }
    }

    pub fn key(&self) -> Key {
        self.key
    }

    /// Whether a base (image or `will_init` record) was found.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Whether no version was collected.
    pub fn is_empty(&self) -> bool {
        self.img.is_none() && self.records.is_empty()
    }

    /// The collected versions, records oldest first.
    pub fn into_data(mut self) -> ReconstructData {
        self.records.reverse();
        ReconstructData {
            img: self.img,
            records: self.records,
        }
    }

    /// Adds one layer's versions (oldest first); stops at a base.
    fn absorb(&mut self, found: ReconstructValues) -> Result<(), ReadPathError> {
        for v in found.values.into_iter().rev() {
            let value = Value::decode_bytes(&v.value).map_err(|source| ReadPathError::Decode {
                key: self.key,
                lsn: v.lsn,
                source,
            })?;
            match value {
                Value::Image(img) => {
                    self.img = Some((v.lsn, img));
                    self.complete = true;
                }
                Value::WalRecord(rec) => {
                    self.complete = rec.will_init();
                    self.records.push((v.lsn, rec));
                }
            }
            if self.complete {
                break;
            }
        }
        Ok(())
    }
}

/// Collects the versions of `state`'s key with LSNs below `end_lsn` from the layers of
/// `map`, newest first, until the state is complete (see the module documentation). To read
/// the value as of LSN `L`, pass `end_lsn = L + 1`.
pub fn collect_values(
    map: &LayerMap,
    files: &dyn LayerFiles,
    state: &mut ValueReconstructState,
    end_lsn: Lsn,
) -> Result<ReconstructOutcome, ReadPathError> {
    let key = state.key;
    let mut cont_lsn = end_lsn;
    while !state.complete {
        let Some(found) = map.search(key, cont_lsn) else {
            return Ok(ReconstructOutcome::NeedAncestor { cont_lsn });
        };
        if found.lsn_floor >= cont_lsn {
            return Err(ReadPathError::NoProgress {
                key,
                end_lsn: cont_lsn,
                lsn_floor: found.lsn_floor,
            });
        }
        let lsn_range = found.lsn_floor..cont_lsn;
        match found.layer {
            SearchLayer::InMemory(l) => {
                state.absorb(l.get_values_reconstruct_data(key, lsn_range)?)?;
            }
            SearchLayer::Historic(desc) if desc.is_delta() => {
                let layer = files.delta(&desc)?;
                state.absorb(layer.get_reconstruct_values(key, lsn_range)?)?;
            }
            SearchLayer::Historic(desc) => {
                let image_lsn = desc.lsn_range().start;
                match files.image(&desc)?.get(key)? {
                    Some(img) => {
                        state.img = Some((image_lsn, img));
                        state.complete = true;
                    }
                    None if state.records.is_empty() => {
                        return Ok(ReconstructOutcome::Missing { image_lsn });
                    }
                    None => return Err(ReadPathError::MissingBase { key, image_lsn }),
                }
            }
        }
        cont_lsn = found.lsn_floor;
    }
    Ok(ReconstructOutcome::Complete)
}

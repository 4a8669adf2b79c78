//! The layer map of one timeline: which layer holds the history of a key below an LSN.
//!
//! It holds the open in-memory layer, the frozen in-memory layers (oldest first, waiting to
//! be flushed) and the *historic* layers (layer files, by [`LayerDesc`]). The map is a plain
//! value: the timeline wraps it in a lock, takes the write lock for [`LayerMap::apply`] and
//! the in-memory layer changes, and the read lock for searches.
//!
//! # Search
//!
//! [`LayerMap::search`]`(key, end_lsn)` (end exclusive) looks at three candidates: the
//! newest in-memory layer starting below `end_lsn`, the newest delta layer covering the key
//! starting below `end_lsn`, and the newest image layer covering the key below `end_lsn`
//! ("newest" = greatest LSN start). In-memory layers act as deltas over the whole key space.
//! The image wins when it is at least as new as the delta (its LSN range ends at or after
//! the delta's) or is exactly at `end_lsn - 1`; then the floor is the image LSN. Otherwise
//! the delta wins with floor `max(delta start, image LSN + 1)`, so that the caller, after
//! reading the delta's versions in `[floor, end_lsn)`, continues with `end_lsn = floor` and
//! finds the image next.
//!
//! # Index
//!
//! Historic layers covering the whole key space (L0 deltas, full images) are kept in lists
//! sorted by LSN. The others are indexed by *elementary key intervals*: the sorted, distinct
//! key-range boundaries of all such layers split the key space into intervals that every
//! layer either fully covers or misses; each interval keeps the deltas and images covering
//! it, sorted by LSN. A search is two binary searches per list: O(log n). The index is
//! rebuilt on every [`LayerMap::apply`] in O(n log n + c), where c, the total number of
//! (interval, covering layer) pairs, is about the number of layers times the number of
//! layer "generations" stacked over a key range; applies happen once per flush or compaction.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use pageserver_api::key::Key;
use utils::lsn::Lsn;

use crate::inmemory_layer::{InMemoryLayer, InMemoryLayerError};
use crate::layer_name::{LayerDesc, LayerName};

/// Why a layer map change was refused (the map is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum LayerMapError {
    #[error("layer {0} is already in the layer map")]
    DuplicateLayer(LayerName),
    #[error("layer {0} is not in the layer map")]
    UnknownLayer(LayerName),
    #[error("there already is an open in-memory layer")]
    OpenLayerExists,
    #[error("an open layer must not be frozen")]
    OpenLayerFrozen,
    #[error("open layer start {start} is below the end {frozen_end} of the newest frozen layer")]
    OpenLayerTooOld { start: Lsn, frozen_end: Lsn },
    #[error(
        "the oldest frozen layer ends at {found:?}, the update flushed one ending at {expected}"
    )]
    FrozenLayerMismatch { expected: Lsn, found: Option<Lsn> },
    #[error(transparent)]
    InMemory(#[from] InMemoryLayerError),
}

/// A layer found by [`LayerMap::search`].
#[derive(Clone, Debug)]
pub enum SearchLayer {
    InMemory(Arc<InMemoryLayer>),
    Historic(LayerDesc),
}

/// The result of [`LayerMap::search`]: read the layer's versions of the key in
/// `[lsn_floor, end_lsn)`, then continue the search with `end_lsn = lsn_floor`.
#[derive(Clone, Debug)]
pub struct SearchResult {
    pub layer: SearchLayer,
    pub lsn_floor: Lsn,
}

/// Changes to the historic layers (and the flushed frozen layer), applied atomically.
#[derive(Clone, Debug, Default)]
pub struct BatchUpdate {
    inserts: Vec<LayerDesc>,
    removes: Vec<LayerName>,
    flushed_frozen_end: Option<Lsn>,
}

impl BatchUpdate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a new layer file.
    pub fn insert(&mut self, desc: LayerDesc) -> &mut Self {
        self.inserts.push(desc);
        self
    }

    /// Removes a layer file.
    pub fn remove(&mut self, name: LayerName) -> &mut Self {
        self.removes.push(name);
        self
    }

    /// The layers this update adds.
    pub fn inserts(&self) -> &[LayerDesc] {
        &self.inserts
    }

    /// The layers this update removes.
    pub fn removes(&self) -> &[LayerName] {
        &self.removes
    }

    /// Removes the oldest frozen in-memory layer, which ends at `end_lsn` (it was flushed to
    /// the L0 layer inserted by the same update, or held no values).
    pub fn flushed_frozen_layer(&mut self, end_lsn: Lsn) -> &mut Self {
        self.flushed_frozen_end = Some(end_lsn);
        self
    }
}

/// A historic layer in an index list.
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: Lsn,
    end: Lsn,
    idx: usize,
}

/// The newest entry of `list` (sorted by LSN start) starting below `end_lsn`.
fn newest_below(list: &[Entry], end_lsn: Lsn) -> Option<Entry> {
    let n = list.partition_point(|e| e.start < end_lsn);
    n.checked_sub(1).map(|i| list[i])
}

/// The newer of two candidates (greater LSN start; then greater end).
fn newer(a: Option<Entry>, b: Option<Entry>) -> Option<Entry> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if (b.start, b.end) > (a.start, a.end) {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

/// Search index over the historic layers (see the module documentation).
#[derive(Debug, Default)]
struct HistoricIndex {
    layers: Vec<LayerDesc>,
    full_deltas: Vec<Entry>,
    full_images: Vec<Entry>,
    /// Elementary interval `i` is `bounds[i]..bounds[i + 1]`.
    bounds: Vec<Key>,
    deltas: Vec<Vec<Entry>>,
    images: Vec<Vec<Entry>>,
}

impl HistoricIndex {
    fn build(layers: Vec<LayerDesc>) -> Self {
        let full = Key::MIN..Key::MAX;
        let mut bounds: Vec<Key> = layers
            .iter()
            .filter(|l| l.key_range() != full)
            .flat_map(|l| [l.key_range().start, l.key_range().end])
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let intervals = bounds.len().saturating_sub(1);
        let mut ix = HistoricIndex {
            deltas: vec![Vec::new(); intervals],
            images: vec![Vec::new(); intervals],
            bounds,
            ..Default::default()
        };
        for (idx, l) in layers.iter().enumerate() {
            let lsns = l.lsn_range();
            let e = Entry {
                start: lsns.start,
                end: lsns.end,
                idx,
            };
            let keys = l.key_range();
            if keys == full {
                let list = if l.is_delta() {
                    &mut ix.full_deltas
                } else {
                    &mut ix.full_images
                };
                list.push(e);
                continue;
            }
            let first = ix.bounds.partition_point(|b| *b < keys.start);
            let last = ix.bounds.partition_point(|b| *b < keys.end);
            let lists = if l.is_delta() {
                &mut ix.deltas
            } else {
                &mut ix.images
            };
            for list in &mut lists[first..last] {
                list.push(e);
            }
        }
        let sort = |list: &mut Vec<Entry>| list.sort_unstable_by_key(|e| (e.start, e.end));
        sort(&mut ix.full_deltas);
        sort(&mut ix.full_images);
        ix.deltas
            .iter_mut()
            .chain(ix.images.iter_mut())
            .for_each(sort);
        ix.layers = layers;
        ix
    }

    /// The elementary interval holding `key`, if any partial layer covers it.
    fn interval(&self, key: Key) -> Option<usize> {
        let n = self.bounds.partition_point(|b| *b <= key);
        (n > 0 && n < self.bounds.len()).then(|| n - 1)
    }

    fn newest_delta(&self, key: Key, end_lsn: Lsn) -> Option<Entry> {
        let partial = self
            .interval(key)
            .and_then(|i| newest_below(&self.deltas[i], end_lsn));
        newer(newest_below(&self.full_deltas, end_lsn), partial)
    }

    fn newest_image(&self, key: Key, end_lsn: Lsn) -> Option<Entry> {
        let partial = self
            .interval(key)
            .and_then(|i| newest_below(&self.images[i], end_lsn));
        newer(newest_below(&self.full_images, end_lsn), partial)
    }
}

/// The layers of one timeline (see the module documentation).
#[derive(Debug, Default)]
pub struct LayerMap {
    open: Option<Arc<InMemoryLayer>>,
    /// Oldest first.
    frozen: VecDeque<Arc<InMemoryLayer>>,
    historic: HashMap<LayerName, LayerDesc>,
    index: HistoricIndex,
}

impl LayerMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// A map of the given layer files (e.g. found at startup), without in-memory layers.
    pub fn from_layers(layers: impl IntoIterator<Item = LayerDesc>) -> Result<Self, LayerMapError> {
        let mut map = LayerMap::new();
        let mut update = BatchUpdate::new();
        for l in layers {
            update.insert(l);
        }
        map.apply(update)?;
        Ok(map)
    }

    pub fn open_layer(&self) -> Option<&Arc<InMemoryLayer>> {
        self.open.as_ref()
    }

    /// Frozen in-memory layers, oldest first.
    pub fn frozen_layers(&self) -> impl DoubleEndedIterator<Item = &Arc<InMemoryLayer>> {
        self.frozen.iter()
    }

    /// The next frozen layer to flush.
    pub fn oldest_frozen_layer(&self) -> Option<&Arc<InMemoryLayer>> {
        self.frozen.front()
    }

    /// Where a new open layer may start: the end of the newest frozen layer, if any.
    pub fn frozen_end_lsn(&self) -> Option<Lsn> {
        self.frozen.back().and_then(|l| l.end_lsn())
    }

    /// Installs `layer` (open, not frozen) as the open layer.
    pub fn install_open_layer(&mut self, layer: Arc<InMemoryLayer>) -> Result<(), LayerMapError> {
        if self.open.is_some() {
            return Err(LayerMapError::OpenLayerExists);
        }
        if layer.is_frozen() {
            return Err(LayerMapError::OpenLayerFrozen);
        }
        if let Some(frozen_end) = self.frozen_end_lsn() {
            if layer.start_lsn() < frozen_end {
                return Err(LayerMapError::OpenLayerTooOld {
                    start: layer.start_lsn(),
                    frozen_end,
                });
            }
        }
        self.open = Some(layer);
        Ok(())
    }

    /// Freezes the open layer at `end_lsn` and queues it for flushing; returns it (`None`
    /// if there is no open layer). On error the open layer stays open.
    pub fn freeze_open_layer(
        &mut self,
        end_lsn: Lsn,
    ) -> Result<Option<Arc<InMemoryLayer>>, LayerMapError> {
        let Some(open) = self.open.as_ref() else {
            return Ok(None);
        };
        open.freeze(end_lsn)?;
        let layer = self.open.take().expect("checked above");
        self.frozen.push_back(Arc::clone(&layer));
        Ok(Some(layer))
    }

    /// Applies `update` entirely, or not at all if any part of it is invalid.
    pub fn apply(&mut self, update: BatchUpdate) -> Result<(), LayerMapError> {
        if let Some(expected) = update.flushed_frozen_end {
            let found = self.frozen.front().and_then(|l| l.end_lsn());
            if found != Some(expected) {
                return Err(LayerMapError::FrozenLayerMismatch { expected, found });
            }
        }
        let mut removed = HashSet::new();
        for name in &update.removes {
            if !self.historic.contains_key(name) || !removed.insert(name) {
                return Err(LayerMapError::UnknownLayer(name.clone()));
            }
        }
        // A name both removed and inserted is refused too: its file would be deleted.
        let mut inserted = HashSet::new();
        for desc in &update.inserts {
            if self.historic.contains_key(&desc.name) || !inserted.insert(&desc.name) {
                return Err(LayerMapError::DuplicateLayer(desc.name.clone()));
            }
        }
        for name in &update.removes {
            self.historic.remove(name);
        }
        for desc in update.inserts {
            self.historic.insert(desc.name.clone(), desc);
        }
        if update.flushed_frozen_end.is_some() {
            self.frozen.pop_front();
        }
        self.index = HistoricIndex::build(self.historic.values().cloned().collect());
        Ok(())
    }

    /// Whether the map holds the layer file `name`.
    pub fn contains(&self, name: &LayerName) -> bool {
        self.historic.contains_key(name)
    }

    pub fn num_historic_layers(&self) -> usize {
        self.historic.len()
    }

    /// The historic layers, ordered by LSN range, then key range (for planners).
    pub fn snapshot(&self) -> Vec<LayerDesc> {
        let mut layers: Vec<LayerDesc> = self.historic.values().cloned().collect();
        sort_layers(&mut layers);
        layers
    }

    /// The layer holding the newest history of `key` below `end_lsn` (see the module
    /// documentation), or `None` if no layer of this timeline covers it there.
    pub fn search(&self, key: Key, end_lsn: Lsn) -> Option<SearchResult> {
        let in_memory = self.newest_in_memory(end_lsn);
        let historic = self.index.newest_delta(key, end_lsn);
        // In-memory layers are newer than any layer file in a consistent map; still compare.
        let delta = match (in_memory, historic) {
            (Some((l, range)), h)
                if h.is_none_or(|h| (range.start, range.end) >= (h.start, h.end)) =>
            {
                Some((SearchLayer::InMemory(l), range))
            }
            (_, Some(h)) => Some((
                SearchLayer::Historic(self.index.layers[h.idx].clone()),
                h.start..h.end,
            )),
            (_, None) => None,
        };
        let image = self.index.newest_image(key, end_lsn);
        match (delta, image) {
            (None, None) => None,
            (None, Some(img)) => Some(self.image_result(img)),
            (Some((layer, range)), None) => Some(SearchResult {
                layer,
                lsn_floor: range.start,
            }),
            (Some((layer, range)), Some(img)) => {
                let image_is_newer = img.end >= range.end;
                let image_exact = Lsn(img.start.0.saturating_add(1)) == end_lsn;
                if image_is_newer || image_exact {
                    Some(self.image_result(img))
                } else {
                    Some(SearchResult {
                        layer,
                        lsn_floor: range.start.max(img.end),
                    })
                }
            }
        }
    }

    fn image_result(&self, img: Entry) -> SearchResult {
        SearchResult {
            layer: SearchLayer::Historic(self.index.layers[img.idx].clone()),
            lsn_floor: img.start,
        }
    }

    /// The newest in-memory layer starting below `end_lsn`, with its LSN range.
    fn newest_in_memory(&self, end_lsn: Lsn) -> Option<(Arc<InMemoryLayer>, Range<Lsn>)> {
        self.open
            .iter()
            .chain(self.frozen.iter().rev())
            .find(|l| l.start_lsn() < end_lsn)
            .map(|l| (Arc::clone(l), l.lsn_range()))
    }

    /// See [`image_coverage`]; over this map's layer files.
    pub fn image_coverage(
        &self,
        key_range: &Range<Key>,
        end_lsn: Lsn,
    ) -> Vec<(Range<Key>, Option<Lsn>)> {
        image_coverage(&self.index.layers, key_range, end_lsn)
    }

    /// See [`count_deltas`]; over this map's layer files.
    pub fn count_deltas(&self, key_range: &Range<Key>, end_lsn: Lsn) -> usize {
        count_deltas(&self.index.layers, key_range, end_lsn)
    }
}

/// Sorts layers by LSN range, then key range, deltas before images.
pub fn sort_layers(layers: &mut [LayerDesc]) {
    layers.sort_by_key(|l| {
        let (lsns, keys) = (l.lsn_range(), l.key_range());
        (lsns.start, lsns.end, keys.start, keys.end, !l.is_delta())
    });
}

/// The elementary intervals of `key_range` with respect to `layers`: `key_range` cut at
/// every layer key-range boundary inside it, so each layer covers an interval fully or
/// not at all.
fn elementary_intervals(layers: &[&LayerDesc], key_range: &Range<Key>) -> Vec<Range<Key>> {
    let mut bounds = vec![key_range.start, key_range.end];
    for l in layers {
        let r = l.key_range();
        bounds.extend(
            [r.start, r.end]
                .into_iter()
                .filter(|k| key_range.contains(k)),
        );
    }
    bounds.sort_unstable();
    bounds.dedup();
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

/// Layers overlapping `key_range` with LSNs starting below `end_lsn`.
fn relevant<'a>(
    layers: &'a [LayerDesc],
    key_range: &Range<Key>,
    end_lsn: Lsn,
) -> Vec<&'a LayerDesc> {
    layers
        .iter()
        .filter(|l| {
            let r = l.key_range();
            r.start < key_range.end && key_range.start < r.end && l.lsn_range().start < end_lsn
        })
        .collect()
}

/// The LSN of the newest image layer covering all of `interval`, among `layers`.
fn newest_image_lsn(layers: &[&LayerDesc], interval: &Range<Key>) -> Option<Lsn> {
    layers
        .iter()
        .filter(|l| !l.is_delta() && l.key_range().contains(&interval.start))
        .map(|l| l.lsn_range().start)
        .max()
}

/// For consecutive parts of `key_range`, the LSN of the newest image layer below `end_lsn`
/// covering that part (`None`: no image). Adjacent parts with the same LSN are merged.
/// O(intervals × layers): meant for planning, not for the read path.
pub fn image_coverage(
    layers: &[LayerDesc],
    key_range: &Range<Key>,
    end_lsn: Lsn,
) -> Vec<(Range<Key>, Option<Lsn>)> {
    if key_range.start >= key_range.end {
        return Vec::new();
    }
    let layers = relevant(layers, key_range, end_lsn);
    let mut out: Vec<(Range<Key>, Option<Lsn>)> = Vec::new();
    for interval in elementary_intervals(&layers, key_range) {
        let lsn = newest_image_lsn(&layers, &interval);
        match out.last_mut() {
            Some((r, l)) if *l == lsn && r.end == interval.start => r.end = interval.end,
            _ => out.push((interval, lsn)),
        }
    }
    out
}

/// Whether a delta layer counts towards re-imaging `partition`: L1 deltas always, L0 deltas
/// only if the partition is the whole key space (L0s will soon be compacted into L1s; counting
/// them everywhere would re-image every partition after a few flushes).
pub fn is_reimage_worthy(delta: &LayerDesc, partition: &Range<Key>) -> bool {
    !delta.is_l0() || *partition == (Key::MIN..Key::MAX)
}

/// The largest number of re-image-worthy delta layers (see [`is_reimage_worthy`]) stacked
/// above the newest image layer over any part of `key_range`, counting layers starting below
/// `end_lsn`. A delta is "above" an image at LSN `i` if it holds LSNs after `i`. Used to decide
/// whether a partition needs a new image layer.
pub fn count_deltas(layers: &[LayerDesc], key_range: &Range<Key>, end_lsn: Lsn) -> usize {
    if key_range.start >= key_range.end {
        return 0;
    }
    let layers = relevant(layers, key_range, end_lsn);
    elementary_intervals(&layers, key_range)
        .iter()
        .map(|interval| {
            let image_lsn = newest_image_lsn(&layers, interval);
            layers
                .iter()
                .filter(|l| l.is_delta() && l.key_range().contains(&interval.start))
                .filter(|l| is_reimage_worthy(l, key_range))
                .filter(|l| image_lsn.is_none_or(|i| l.lsn_range().end.0 > i.0.saturating_add(1)))
                .count()
        })
        .max()
        .unwrap_or(0)
}

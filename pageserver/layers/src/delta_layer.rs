//! Delta layer files: every version of the keys in a key range written in an LSN range.
//!
//! Values are opaque bytes (the caller serializes its `Value`s); each carries a `will_init`
//! flag, kept in the index (`blob offset << 1 | will_init`) so a reader can find where
//! reconstruction starts without reading values. Index keys are the 18-byte key followed by
//! the LSN as a big-endian u64, so the index order is (key, LSN).

use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use pageserver_api::key::{Key, KEY_SIZE_BYTES};
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::blob_io::{BlobReader, POINT_READ_BYTES};
use crate::error::LayerError;
use crate::layer_file::{layer_file_accessors, LayerFileReader, LayerFileWriter, LayerScan};
use crate::layer_name::LayerDesc;
use crate::summary::{LayerKind, DELTA_INDEX_KEY_BYTES};

type IndexKey = [u8; DELTA_INDEX_KEY_BYTES];

fn index_key(key: Key, lsn: Lsn) -> IndexKey {
    let mut b = [0u8; DELTA_INDEX_KEY_BYTES];
    b[..KEY_SIZE_BYTES].copy_from_slice(&key.to_bytes());
    b[KEY_SIZE_BYTES..].copy_from_slice(&lsn.0.to_be_bytes());
    b
}

fn decode_index_key(b: &[u8]) -> (Key, Lsn) {
    let key = Key::from_slice(&b[..KEY_SIZE_BYTES]).expect("18 bytes");
    let lsn = u64::from_be_bytes(b[KEY_SIZE_BYTES..].try_into().expect("8 bytes"));
    (key, Lsn(lsn))
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsnValue {
    pub lsn: Lsn,
    /// Whether this version can be rebuilt without any older one.
    pub will_init: bool,
    pub value: Bytes,
}

/// One entry of a delta layer, as its iterator yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaEntry {
    pub key: Key,
    pub lsn: Lsn,
    pub will_init: bool,
    pub value: Bytes,
}

/// The versions of a key needed to rebuild it, as far as one layer can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconstructValues {
    /// Oldest first; if `complete`, the first one has `will_init`.
    pub values: Vec<LsnValue>,
    /// True if a `will_init` version was found: older layers need not be consulted.
    pub complete: bool,
}

/// Writes a delta layer file. Entries must come in strictly increasing (key, LSN) order.
pub struct DeltaLayerWriter {
    inner: LayerFileWriter,
    key_start: Key,
    lsn_range: Range<Lsn>,
    last: Option<(Key, Lsn)>,
}

impl DeltaLayerWriter {
    /// Starts a delta layer for keys from `key_start` (the end is given to `finish`) and
    /// LSNs in `lsn_range`, in directory `dir`.
    pub fn new(
        dir: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        key_start: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<Self, LayerError> {
        if lsn_range.start >= lsn_range.end {
            return Err(LayerError::OutOfRange {
                reason: format!("empty LSN range {lsn_range:?}"),
            });
        }
        Ok(DeltaLayerWriter {
            inner: LayerFileWriter::new(dir, LayerKind::Delta, tenant_id, timeline_id)?,
            key_start,
            lsn_range,
            last: None,
        })
    }

    /// Appends the version of `key` at `lsn`.
    pub fn put_value(
        &mut self,
        key: Key,
        lsn: Lsn,
        value: &[u8],
        will_init: bool,
    ) -> Result<(), LayerError> {
        if key < self.key_start || !self.lsn_range.contains(&lsn) {
            return Err(LayerError::OutOfRange {
                reason: format!(
                    "{key} @ {lsn} is outside keys {}.. and LSNs {:?}",
                    self.key_start, self.lsn_range
                ),
            });
        }
        if let Some((prev_key, prev_lsn)) = self.last {
            if (key, lsn) <= (prev_key, prev_lsn) {
                return Err(LayerError::OutOfOrder {
                    prev: format!("{prev_key} @ {prev_lsn}"),
                    next: format!("{key} @ {lsn}"),
                });
            }
        }
        let offset = self.inner.write_value(value)?;
        let blob_ref = offset
            .checked_mul(2)
            .ok_or_else(|| LayerError::OutOfRange {
                reason: format!("blob offset {offset} too large"),
            })?
            | u64::from(will_init);
        self.inner.index_append(&index_key(key, lsn), blob_ref)?;
        self.last = Some((key, lsn));
        Ok(())
    }

    pub fn num_entries(&self) -> u64 {
        self.inner.num_entries()
    }

    /// Roughly the file size if finished now (for splitting output at a target size).
    pub fn estimated_size_bytes(&self) -> u64 {
        self.inner.estimated_size_bytes()
    }

    /// Writes the index and summary and publishes the file as
    /// `<key_start>-<key_end>__<lsn_start>-<lsn_end>` in the directory. `key_end` must be
    /// after every key written. Fails with [`LayerError::EmptyLayer`] if nothing was written;
    /// on any error the temporary file is removed.
    pub fn finish(self, key_end: Key) -> Result<LayerDesc, LayerError> {
        let after_last = self.last.is_none_or(|(k, _)| k < key_end);
        if key_end <= self.key_start || !after_last {
            return Err(LayerError::OutOfRange {
                reason: format!(
                    "key end {key_end} is not after the start {} and the last key {:?}",
                    self.key_start,
                    self.last.map(|(k, _)| k)
                ),
            });
        }
        self.inner
            .finish(self.key_start..key_end, self.lsn_range.clone())
    }
}

/// An open delta layer file. Methods take `&self`; it can be shared between threads.
#[derive(Debug)]
pub struct DeltaLayer {
    inner: LayerFileReader,
}

layer_file_accessors!(DeltaLayer);

impl DeltaLayer {
    /// Opens and validates a delta layer file (summary, file size, index root).
    pub fn open(path: &Path) -> Result<Self, LayerError> {
        Ok(DeltaLayer {
            inner: LayerFileReader::open(path, LayerKind::Delta)?,
        })
    }

    /// Index entries `(lsn, blob ref)` of `key` with LSNs in `lsn_range`, oldest first.
    fn index_entries(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<Vec<(Lsn, u64)>, LayerError> {
        let mut out = Vec::new();
        if lsn_range.start >= lsn_range.end {
            return Ok(out);
        }
        let tree = self.inner.tree();
        let mut it = tree.iter_from(&index_key(key, lsn_range.start))?;
        let end = index_key(key, lsn_range.end);
        while let Some((k, blob_ref)) = it.next_entry()? {
            if k >= end.as_slice() {
                break;
            }
            out.push((decode_index_key(k).1, blob_ref));
        }
        Ok(out)
    }

    fn read_values(&self, entries: &[(Lsn, u64)]) -> Result<Vec<LsnValue>, LayerError> {
        let mut blobs = self.inner.blobs(POINT_READ_BYTES);
        entries
            .iter()
            .map(|&(lsn, blob_ref)| {
                Ok(LsnValue {
                    lsn,
                    will_init: blob_ref & 1 == 1,
                    value: blobs.read(blob_ref >> 1)?,
                })
            })
            .collect()
    }

    /// Every version of `key` with an LSN in `lsn_range`, oldest first.
    pub fn get_values(&self, key: Key, lsn_range: Range<Lsn>) -> Result<Vec<LsnValue>, LayerError> {
        self.read_values(&self.index_entries(key, lsn_range)?)
    }

    /// The versions of `key` with LSNs in `lsn_range` from the newest `will_init` one on
    /// (all of them if none has `will_init`), oldest first; only those values are read.
    pub fn get_reconstruct_values(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<ReconstructValues, LayerError> {
        let entries = self.index_entries(key, lsn_range)?;
        let init = entries.iter().rposition(|&(_, blob_ref)| blob_ref & 1 == 1);
        let from = init.unwrap_or(0);
        Ok(ReconstructValues {
            values: self.read_values(&entries[from..])?,
            complete: init.is_some(),
        })
    }

    /// All entries in (key, LSN) order, with their values.
    pub fn iter(&self) -> Result<DeltaIter<'_>, LayerError> {
        Ok(DeltaIter(self.scan_from(Key::MIN)?.check_count()))
    }

    /// The entries with keys `>= start` in (key, LSN) order, with their values.
    pub fn iter_from(&self, start: Key) -> Result<DeltaIter<'_>, LayerError> {
        Ok(DeltaIter(self.scan_from(start)?))
    }

    fn scan_from(&self, start: Key) -> Result<LayerScan<'_, DeltaEntry>, LayerError> {
        LayerScan::new(&self.inner, &index_key(start, Lsn(0)), decode_entry)
    }
}

/// Decodes one index entry and reads its value; the entry must lie in the layer's ranges.
fn decode_entry(
    file: &LayerFileReader,
    index_key: &[u8],
    blob_ref: u64,
    blobs: &mut BlobReader<'_>,
) -> Result<DeltaEntry, LayerError> {
    let (key, lsn) = decode_index_key(index_key);
    let summary = file.summary();
    if !summary.key_range.contains(&key) || !summary.lsn_range.contains(&lsn) {
        return Err(file.corrupt(format!(
            "index entry {key} @ {lsn} is outside the layer's ranges"
        )));
    }
    Ok(DeltaEntry {
        key,
        lsn,
        will_init: blob_ref & 1 == 1,
        value: blobs.read(blob_ref >> 1)?,
    })
}

/// Iterator over a delta layer's entries; yields an error (then ends) on corruption.
pub struct DeltaIter<'a>(LayerScan<'a, DeltaEntry>);

impl Iterator for DeltaIter<'_> {
    type Item = Result<DeltaEntry, LayerError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

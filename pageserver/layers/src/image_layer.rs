//! Image layer files: the value of every existing key of a key range as of one LSN.
//!
//! A key inside the range but absent from the file does not exist at that LSN. Values are
//! opaque bytes of any size up to [`crate::blob_io::MAX_BLOB_BYTES`] (pages, but also
//! relmap files, pg_control and directory maps). Index keys are the 18-byte keys; index
//! values are blob offsets.

use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use pageserver_api::key::Key;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::blob_io::{BlobReader, POINT_READ_BYTES, SCAN_READ_BYTES};
use crate::disk_btree::BtreeIter;
use crate::error::LayerError;
use crate::layer_file::{LayerFileReader, LayerFileWriter};
use crate::layer_name::{LayerDesc, LayerName};
use crate::summary::LayerKind;

/// Writes an image layer file. Keys must come in strictly increasing order.
pub struct ImageLayerWriter {
    inner: LayerFileWriter,
    key_range: Range<Key>,
    lsn: Lsn,
    last: Option<Key>,
}

impl ImageLayerWriter {
    /// Starts an image layer of the keys in `key_range` at `lsn`, in directory `dir`.
    pub fn new(
        dir: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        key_range: Range<Key>,
        lsn: Lsn,
    ) -> Result<Self, LayerError> {
        if key_range.start >= key_range.end || lsn == Lsn::MAX {
            return Err(LayerError::OutOfRange {
                reason: format!("image layer of keys {key_range:?} at {lsn}"),
            });
        }
        Ok(ImageLayerWriter {
            inner: LayerFileWriter::new(dir, LayerKind::Image, tenant_id, timeline_id)?,
            key_range,
            lsn,
            last: None,
        })
    }

    /// Appends the value of `key`.
    pub fn put_image(&mut self, key: Key, value: &[u8]) -> Result<(), LayerError> {
        if !self.key_range.contains(&key) {
            return Err(LayerError::OutOfRange {
                reason: format!("{key} is outside {:?}", self.key_range),
            });
        }
        if let Some(prev) = self.last {
            if key <= prev {
                return Err(LayerError::OutOfOrder {
                    prev: prev.to_string(),
                    next: key.to_string(),
                });
            }
        }
        let offset = self.inner.write_value(value)?;
        self.inner.index_append(&key.to_bytes(), offset)?;
        self.last = Some(key);
        Ok(())
    }

    pub fn num_entries(&self) -> u64 {
        self.inner.num_entries()
    }

    /// Roughly the file size if finished now.
    pub fn estimated_size_bytes(&self) -> u64 {
        self.inner.estimated_size_bytes()
    }

    /// Writes the index and summary and publishes the file as
    /// `<key_start>-<key_end>__<lsn>` in the directory. Fails with
    /// [`LayerError::EmptyLayer`] if no key was written; on any error the temporary file is
    /// removed.
    pub fn finish(self) -> Result<LayerDesc, LayerError> {
        let lsn_range = self.lsn..Lsn(self.lsn.0 + 1);
        self.inner.finish(self.key_range.clone(), lsn_range)
    }
}

/// An open image layer file. Methods take `&self`; it can be shared between threads.
#[derive(Debug)]
pub struct ImageLayer {
    inner: LayerFileReader,
}

impl ImageLayer {
    /// Opens and validates an image layer file (summary, file size, index root).
    pub fn open(path: &Path) -> Result<Self, LayerError> {
        Ok(ImageLayer {
            inner: LayerFileReader::open(path, LayerKind::Image)?,
        })
    }

    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    pub fn key_range(&self) -> Range<Key> {
        self.inner.summary().key_range.clone()
    }

    /// The LSN of the image.
    pub fn lsn(&self) -> Lsn {
        self.inner.summary().lsn_range.start
    }

    /// `[lsn, lsn + 1)`.
    pub fn lsn_range(&self) -> Range<Lsn> {
        self.inner.summary().lsn_range.clone()
    }

    pub fn tenant_id(&self) -> TenantId {
        self.inner.summary().tenant_id
    }

    pub fn timeline_id(&self) -> TimelineId {
        self.inner.summary().timeline_id
    }

    /// Number of keys.
    pub fn entry_count(&self) -> u64 {
        self.inner.summary().entry_count
    }

    /// The name the file's contents call for (compare with the file's actual name).
    pub fn layer_name(&self) -> LayerName {
        self.inner.name()
    }

    pub fn desc(&self) -> LayerDesc {
        self.inner.desc()
    }

    /// The value of `key`, or `None` if the layer has no such key.
    pub fn get(&self, key: Key) -> Result<Option<Bytes>, LayerError> {
        match self.inner.tree().get(&key.to_bytes())? {
            Some(offset) => Ok(Some(self.inner.blobs(POINT_READ_BYTES).read(offset)?)),
            None => Ok(None),
        }
    }

    /// All keys and values in key order.
    pub fn iter(&self) -> Result<ImageIter<'_>, LayerError> {
        let mut it = self.iter_from(Key::MIN)?;
        it.expected_count = Some(self.entry_count());
        Ok(it)
    }

    /// The keys `>= start` and their values, in key order.
    pub fn iter_from(&self, start: Key) -> Result<ImageIter<'_>, LayerError> {
        Ok(ImageIter {
            layer: self,
            index: self.inner.tree().iter_from(&start.to_bytes())?,
            blobs: self.inner.blobs(SCAN_READ_BYTES),
            seen: 0,
            expected_count: None,
            failed: false,
        })
    }
}

/// Iterator over an image layer's keys and values; yields an error (then ends) on
/// corruption.
pub struct ImageIter<'a> {
    layer: &'a ImageLayer,
    index: BtreeIter<'a>,
    blobs: BlobReader<'a>,
    seen: u64,
    /// For a full scan: the summary's entry count, checked at the end.
    expected_count: Option<u64>,
    failed: bool,
}

impl ImageIter<'_> {
    fn next_entry(&mut self) -> Result<Option<(Key, Bytes)>, LayerError> {
        let Some((k, offset)) = self.index.next_entry()? else {
            return match self.expected_count.take() {
                Some(n) if n != self.seen => Err(self.layer.inner.corrupt(format!(
                    "index has {} entries, the summary says {n}",
                    self.seen
                ))),
                _ => Ok(None),
            };
        };
        let key = Key::from_slice(k).expect("18-byte index key");
        if !self.layer.inner.summary().key_range.contains(&key) {
            return Err(self
                .layer
                .inner
                .corrupt(format!("index key {key} is outside the layer's key range")));
        }
        self.seen += 1;
        Ok(Some((key, self.blobs.read(offset)?)))
    }
}

impl Iterator for ImageIter<'_> {
    type Item = Result<(Key, Bytes), LayerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let res = self.next_entry().transpose();
        self.failed = matches!(res, Some(Err(_)));
        res
    }
}

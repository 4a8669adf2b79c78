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

use crate::blob_io::{BlobReader, POINT_READ_BYTES};
use crate::error::LayerError;
use crate::layer_file::{layer_file_accessors, LayerFileReader, LayerFileWriter, LayerScan};
use crate::layer_name::LayerDesc;
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

layer_file_accessors!(ImageLayer);

impl ImageLayer {
    /// Opens and validates an image layer file (summary, file size, index root).
    pub fn open(path: &Path) -> Result<Self, LayerError> {
        Ok(ImageLayer {
            inner: LayerFileReader::open(path, LayerKind::Image)?,
        })
    }

    /// The LSN of the image.
    pub fn lsn(&self) -> Lsn {
        self.inner.summary().lsn_range.start
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
        Ok(ImageIter(self.scan_from(Key::MIN)?.check_count()))
    }

    /// The keys `>= start` and their values, in key order.
    pub fn iter_from(&self, start: Key) -> Result<ImageIter<'_>, LayerError> {
        Ok(ImageIter(self.scan_from(start)?))
    }

    fn scan_from(&self, start: Key) -> Result<LayerScan<'_, (Key, Bytes)>, LayerError> {
        LayerScan::new(&self.inner, &start.to_bytes(), decode_entry)
    }
}

/// Decodes one index entry and reads its value; the key must lie in the layer's key range.
fn decode_entry(
    file: &LayerFileReader,
    index_key: &[u8],
    offset: u64,
    blobs: &mut BlobReader<'_>,
) -> Result<(Key, Bytes), LayerError> {
    let key = Key::from_slice(index_key).expect("18-byte index key");
    if !file.summary().key_range.contains(&key) {
        return Err(file.corrupt(format!("index key {key} is outside the layer's key range")));
    }
    Ok((key, blobs.read(offset)?))
}

/// Iterator over an image layer's keys and values; yields an error (then ends) on
/// corruption.
pub struct ImageIter<'a>(LayerScan<'a, (Key, Bytes)>);

impl Iterator for ImageIter<'_> {
    type Item = Result<(Key, Bytes), LayerError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

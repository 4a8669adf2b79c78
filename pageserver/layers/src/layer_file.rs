//! What delta and image layer files share: the crash-safe write protocol, opening and
//! validating a finished file, scanning its entries and the accessors of its summary.
//!
//! A writer appends blobs to a temporary file `<kind>-<random hex>.___temp` (after a
//! placeholder block 0) while the index B-tree is built into a second, already unlinked,
//! temporary file. `finish` pads the value area to a block boundary, appends the index
//! nodes, writes the summary into block 0, fsyncs, links the file under its final name
//! (failing if that name exists: layer files are never replaced), removes the temporary
//! name and fsyncs the directory.

use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use pageserver_api::key::Key;
use utils::crashsafe::{fsync_dir, TEMP_FILE_SUFFIX};
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::blob_io::{write_blob, BlobReader, SCAN_READ_BYTES};
use crate::disk_btree::{max_entries_per_node, BtreeBuilder, BtreeIter, BtreeReader};
use crate::error::LayerError;
use crate::file_io::{AppendFile, ReadFile, BLOCK_SIZE_BYTES};
use crate::layer_name::{LayerDesc, LayerName};
use crate::summary::{LayerKind, Summary, SUMMARY_BYTES};

/// Removes a temporary file when dropped, unless disarmed.
struct TempFileGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFileGuard {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!("failed to remove {}: {e}", self.path.display());
            }
        }
    }
}

/// The name a finished file of `kind` covering these ranges gets.
pub(crate) fn layer_name(
    kind: LayerKind,
    key_range: Range<Key>,
    lsn_range: Range<Lsn>,
) -> LayerName {
    match kind {
        LayerKind::Delta => LayerName::Delta {
            key_range,
            lsn_range,
        },
        LayerKind::Image => LayerName::Image {
            key_range,
            lsn: lsn_range.start,
        },
    }
}

/// Writes one layer file; the typed writers check what goes in.
pub(crate) struct LayerFileWriter {
    kind: LayerKind,
    dir: PathBuf,
    tenant_id: TenantId,
    timeline_id: TimelineId,
    file: AppendFile,
    index: BtreeBuilder<AppendFile>,
    // Declared last so the files are closed before it removes the temporary name.
    guard: TempFileGuard,
}

impl LayerFileWriter {
    pub fn new(
        dir: &Path,
        kind: LayerKind,
        tenant_id: TenantId,
        timeline_id: TimelineId,
    ) -> Result<Self, LayerError> {
        let stem = format!("{}-{:016x}", kind.name(), rand::random::<u64>());
        let temp_path = dir.join(format!("{stem}.{TEMP_FILE_SUFFIX}"));
        let index_path = dir.join(format!("{stem}.index.{TEMP_FILE_SUFFIX}"));
        let mut file = AppendFile::create(&temp_path)?;
        let guard = TempFileGuard {
            path: temp_path,
            armed: true,
        };
        file.append(&[0u8; BLOCK_SIZE_BYTES])?;
        let index_file = AppendFile::create(&index_path)?;
        // The index only lives as long as the writer: drop its name right away.
        fs::remove_file(&index_path).map_err(|e| LayerError::io("remove", &index_path, e))?;
        Ok(LayerFileWriter {
            kind,
            dir: dir.to_path_buf(),
            tenant_id,
            timeline_id,
            file,
            index: BtreeBuilder::new(index_file, kind.index_key_len()),
            guard,
        })
    }

    /// Appends a value; returns its blob offset.
    pub fn write_value(&mut self, payload: &[u8]) -> Result<u64, LayerError> {
        write_blob(&mut self.file, payload)
    }

    /// Adds an index entry (in strictly increasing key order).
    pub fn index_append(&mut self, key: &[u8], value: u64) -> Result<(), LayerError> {
        self.index.append(key, value)
    }

    pub fn num_entries(&self) -> u64 {
        self.index.num_entries()
    }

    /// Roughly how big the file would be if finished now: the padded value area plus the
    /// index leaves (exact while the index is a single node).
    pub fn estimated_size_bytes(&self) -> u64 {
        let block = BLOCK_SIZE_BYTES as u64;
        let per_leaf = max_entries_per_node(self.kind.index_key_len()) as u64;
        let leaves = self.index.num_entries().div_ceil(per_leaf).max(1);
        self.file.offset().next_multiple_of(block) + leaves * block
    }

    /// Completes the file and gives it its final name (see the module documentation).
    pub fn finish(
        mut self,
        key_range: Range<Key>,
        lsn_range: Range<Lsn>,
    ) -> Result<LayerDesc, LayerError> {
        if self.index.num_entries() == 0 {
            return Err(LayerError::EmptyLayer);
        }
        self.file.pad_to_block()?;
        let too_big = || LayerError::OutOfRange {
            reason: "layer file exceeds 2^32 blocks".to_string(),
        };
        let index_start_blk =
            u32::try_from(self.file.offset() / BLOCK_SIZE_BYTES as u64).map_err(|_| too_big())?;
        let (mut index_file, shape) = self.index.finish()?;
        self.file.append_file(&mut index_file)?;
        let index_root_blk = index_start_blk
            .checked_add(shape.num_blocks - 1)
            .ok_or_else(too_big)?;
        let summary = Summary {
            kind: self.kind,
            tenant_id: self.tenant_id,
            timeline_id: self.timeline_id,
            key_range: key_range.clone(),
            lsn_range: lsn_range.clone(),
            index_start_blk,
            index_root_blk,
            entry_count: shape.num_entries,
        };
        self.file.write_at(&summary.encode(), 0)?;
        self.file.sync()?;
        let file_size_bytes = self.file.offset();
        drop(self.file);

        let name = layer_name(self.kind, key_range, lsn_range);
        let final_path = self.dir.join(name.to_string());
        publish(&self.guard.path, &final_path)?;
        self.guard.armed = false;
        fsync_dir(&self.dir)?;
        Ok(LayerDesc {
            name,
            file_size_bytes,
            tenant_id: self.tenant_id,
            timeline_id: self.timeline_id,
        })
    }
}

/// Gives the finished temporary file `temp` the name `final_path`, never replacing an
/// existing file, and removes the temporary name.
fn publish(temp: &Path, final_path: &Path) -> Result<(), LayerError> {
    match fs::hard_link(temp, final_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(LayerError::AlreadyExists {
                path: final_path.to_path_buf(),
            })
        }
        Err(e) => return Err(LayerError::io("link", final_path, e)),
    }
    if let Err(e) = fs::remove_file(temp) {
        // The layer is complete under its final name; a stray temporary file is removed
        // with the others at startup.
        tracing::warn!("failed to remove {}: {e}", temp.display());
    }
    Ok(())
}

/// An open, validated layer file.
#[derive(Debug)]
pub(crate) struct LayerFileReader {
    file: ReadFile,
    summary: Summary,
}

impl LayerFileReader {
    /// Opens `path`, checks its summary (magic, version, checksum, consistency with the
    /// file size) and its index root.
    pub fn open(path: &Path, kind: LayerKind) -> Result<Self, LayerError> {
        let file = ReadFile::open(path)?;
        let mut head = [0u8; SUMMARY_BYTES];
        let n = file.size_bytes().min(SUMMARY_BYTES as u64) as usize;
        file.read_exact_at(&mut head[..n], 0, "summary")?;
        let summary = Summary::decode(&head[..n], kind, path)?;
        summary.validate(file.size_bytes(), path)?;
        let reader = LayerFileReader { file, summary };
        reader.tree().read_root()?;
        Ok(reader)
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn tree(&self) -> BtreeReader<'_> {
        BtreeReader::new(
            &self.file,
            self.summary.index_start_blk,
            self.summary.index_blocks(),
            self.summary.kind.index_key_len(),
        )
    }

    /// A blob reader over the value area with a window of `window_bytes`.
    pub fn blobs(&self, window_bytes: usize) -> BlobReader<'_> {
        BlobReader::new(&self.file, self.summary.value_area(), window_bytes)
    }

    pub fn name(&self) -> LayerName {
        let s = &self.summary;
        layer_name(s.kind, s.key_range.clone(), s.lsn_range.clone())
    }

    pub fn desc(&self) -> LayerDesc {
        LayerDesc {
            name: self.name(),
            file_size_bytes: self.file.size_bytes(),
            tenant_id: self.summary.tenant_id,
            timeline_id: self.summary.timeline_id,
        }
    }

    pub fn corrupt(&self, reason: String) -> LayerError {
        LayerError::corrupt(self.file.path(), reason)
    }
}

/// Turns one index entry of a layer file (index key, index value) into an item, reading
/// its value with the scan's blob reader; fails if the entry does not fit the file.
pub(crate) type DecodeEntry<T> =
    fn(&LayerFileReader, &[u8], u64, &mut BlobReader<'_>) -> Result<T, LayerError>;

/// An in-order scan of a layer file's index that decodes each entry with a [`DecodeEntry`].
/// A full scan also checks the number of entries against the summary. The scan yields an
/// error at most once and then ends.
pub(crate) struct LayerScan<'a, T> {
    file: &'a LayerFileReader,
    index: BtreeIter<'a>,
    blobs: BlobReader<'a>,
    decode: DecodeEntry<T>,
    seen: u64,
    /// For a full scan: the summary's entry count, checked at the end.
    expected_count: Option<u64>,
    failed: bool,
}

impl<'a, T> LayerScan<'a, T> {
    /// Scans the entries with index keys `>= start`, reading values in windows of
    /// [`SCAN_READ_BYTES`].
    pub fn new(
        file: &'a LayerFileReader,
        start: &[u8],
        decode: DecodeEntry<T>,
    ) -> Result<Self, LayerError> {
        Ok(LayerScan {
            file,
            index: file.tree().iter_from(start)?,
            blobs: file.blobs(SCAN_READ_BYTES),
            decode,
            seen: 0,
            expected_count: None,
            failed: false,
        })
    }

    /// Makes the scan fail at its end unless it saw exactly the summary's entry count (for
    /// scans that start before the first entry).
    pub fn check_count(mut self) -> Self {
        self.expected_count = Some(self.file.summary().entry_count);
        self
    }

    fn next_entry(&mut self) -> Result<Option<T>, LayerError> {
        let Some((k, v)) = self.index.next_entry()? else {
            return match self.expected_count.take() {
                Some(n) if n != self.seen => Err(self.file.corrupt(format!(
                    "index has {} entries, the summary says {n}",
                    self.seen
                ))),
                _ => Ok(None),
            };
        };
        let item = (self.decode)(self.file, k, v, &mut self.blobs)?;
        self.seen += 1;
        Ok(Some(item))
    }
}

impl<T> Iterator for LayerScan<'_, T> {
    type Item = Result<T, LayerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let res = self.next_entry().transpose();
        self.failed = matches!(res, Some(Err(_)));
        res
    }
}

/// The accessors delta and image layers share, all read from the summary of the
/// [`LayerFileReader`] in their field `inner`.
macro_rules! layer_file_accessors {
    ($layer:ty) => {
        impl $layer {
            /// The file's path.
            pub fn path(&self) -> &std::path::Path {
                self.inner.path()
            }

            /// The keys the layer covers.
            pub fn key_range(&self) -> std::ops::Range<pageserver_api::key::Key> {
                self.inner.summary().key_range.clone()
            }

            /// The LSNs the layer covers (`[lsn, lsn + 1)` for an image layer).
            pub fn lsn_range(&self) -> std::ops::Range<utils::lsn::Lsn> {
                self.inner.summary().lsn_range.clone()
            }

            pub fn tenant_id(&self) -> utils::id::TenantId {
                self.inner.summary().tenant_id
            }

            pub fn timeline_id(&self) -> utils::id::TimelineId {
                self.inner.summary().timeline_id
            }

            /// Number of index entries: (key, LSN) pairs in a delta layer, keys in an image
            /// layer.
            pub fn entry_count(&self) -> u64 {
                self.inner.summary().entry_count
            }

            /// The name the file's contents call for (compare with the file's actual name).
            pub fn layer_name(&self) -> $crate::layer_name::LayerName {
                self.inner.name()
            }

            pub fn desc(&self) -> $crate::layer_name::LayerDesc {
                self.inner.desc()
            }
        }
    };
}
pub(crate) use layer_file_accessors;

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn key(n: u32) -> Key {
        Key::MIN.add(n)
    }

    /// Writes an image layer of keys 1..=3 (value `[n; 10]`) and returns its path.
    fn write_three(dir: &Path) -> PathBuf {
        let ids = (TenantId([1; 16]), TimelineId([2; 16]));
        let mut w = LayerFileWriter::new(dir, LayerKind::Image, ids.0, ids.1).unwrap();
        for n in 1..=3u32 {
            let offset = w.write_value(&[n as u8; 10]).unwrap();
            w.index_append(&key(n).to_bytes(), offset).unwrap();
        }
        let desc = w.finish(key(0)..key(10), Lsn(5)..Lsn(6)).unwrap();
        dir.join(desc.file_name())
    }

    fn decode_value(
        _: &LayerFileReader,
        index_key: &[u8],
        offset: u64,
        blobs: &mut BlobReader<'_>,
    ) -> Result<(Vec<u8>, Bytes), LayerError> {
        Ok((index_key.to_vec(), blobs.read(offset)?))
    }

    /// Replaces the summary's entry count (with a valid checksum).
    fn set_entry_count(path: &Path, entry_count: u64) {
        let reader = LayerFileReader::open(path, LayerKind::Image).unwrap();
        let summary = Summary {
            entry_count,
            ..reader.summary().clone()
        };
        drop(reader);
        let mut bytes = fs::read(path).unwrap();
        bytes[..SUMMARY_BYTES].copy_from_slice(&summary.encode());
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn scans_decode_every_entry_from_the_start_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_three(dir.path());
        let reader = LayerFileReader::open(&path, LayerKind::Image).unwrap();
        let all: Vec<_> = LayerScan::new(&reader, &[], decode_value)
            .unwrap()
            .check_count()
            .map(Result::unwrap)
            .collect();
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[2],
            (key(3).to_bytes().to_vec(), Bytes::from(vec![3; 10]))
        );
        let from_two = LayerScan::new(&reader, &key(2).to_bytes(), decode_value).unwrap();
        assert_eq!(from_two.count(), 2);
    }

    #[test]
    fn full_scan_reports_an_entry_count_mismatch_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_three(dir.path());
        for wrong_count in [2, 4] {
            set_entry_count(&path, wrong_count);
            let reader = LayerFileReader::open(&path, LayerKind::Image).unwrap();
            let results: Vec<_> = LayerScan::new(&reader, &[], decode_value)
                .unwrap()
                .check_count()
                .collect();
            assert_eq!(
                results.len(),
                4,
                "three entries, then the error, then the end"
            );
            let err = results[3].as_ref().unwrap_err();
            assert!(err.is_corruption(), "{err}");
            let want = format!("index has 3 entries, the summary says {wrong_count}");
            assert!(err.to_string().contains(&want), "{err}");
            // A partial scan does not check the count.
            let partial = LayerScan::new(&reader, &[], decode_value).unwrap();
            assert!(partial.map(|r| r.map(|_| ())).all(|r| r.is_ok()));
        }
    }
}

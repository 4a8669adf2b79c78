//! What delta and image layer files share: the crash-safe write protocol, and opening and
//! validating a finished file.
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

use crate::blob_io::{write_blob, BlobReader};
use crate::disk_btree::{max_entries_per_node, BtreeBuilder, BtreeReader};
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

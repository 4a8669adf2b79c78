//! Importing a PostgreSQL data directory (bootstrap after initdb) or a tar base backup
//! (`pg_basebackup -Ft` base.tar) into a timeline at one LSN; importing WAL is in
//! [`crate::import_wal`].
//!
//! What is imported: relation files (all forks and segments, as page images), pg_filenode.map
//! of `global` and every database, PG_VERSION (registers the database), the SLRUs pg_xact,
//! pg_multixact/offsets and pg_multixact/members, pg_twophase state files (CRC checked and
//! stripped), and global/pg_control (stored as is, and its checkPointCopy as the checkpoint).
//! Everything else (configuration, pg_wal, statistics, temporary relations) is skipped.
//! User tablespaces are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use pageserver_api::key::{RelTag, SlruKind};
use pageserver_api::value::Value;
use postgres_ffi::controlfile::{ControlFileData, ControlFileError, PG_CONTROL_FILE_SIZE};
use postgres_ffi::relfile::{
    parse_relation_path, RelPathError, DEFAULTTABLESPACE_OID, GLOBALTABLESPACE_OID, RELSEG_SIZE,
};
use utils::lsn::Lsn;

use crate::pg_consts::{BLCKSZ, RELMAP_FILE_BYTES, SLRU_PAGES_PER_SEGMENT};
use crate::pgdatadir_mapping::{
    DatadirError, DatadirModification, DbDirectory, RelDirectory, SlruSegmentDirectory,
    TwoPhaseDirectory,
};
use crate::storage_api::{TimelineRead, TimelineWrite};

/// Largest two-phase state file we accept (PostgreSQL's MaxAllocSize is 1 GiB; real ones are
/// small).
pub const MAX_TWOPHASE_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid tar archive: {0}")]
    Archive(#[source] io::Error),
    #[error("the archive has no entries")]
    EmptyArchive,
    #[error("no global/pg_control found")]
    MissingControlFile,
    #[error("invalid global/pg_control: {0}")]
    BadControlFile(#[source] ControlFileError),
    #[error("{path}: {len_bytes} bytes is not a valid size for this file")]
    BadFileSize { path: String, len_bytes: u64 },
    #[error("relation {rel}: {reason}")]
    BadRelationSegments { rel: RelTag, reason: String },
    #[error("{path}: invalid two-phase state file: {reason}")]
    BadTwoPhaseFile { path: String, reason: String },
    #[error("{0}: user tablespaces are not supported")]
    UnsupportedTablespace(String),
    #[error(transparent)]
    Datadir(#[from] DatadirError),
}

/// What kind of file a data-directory path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    ControlFile,
    RelMap { spcnode: u32, dbnode: u32 },
    PgVersion { spcnode: u32, dbnode: u32 },
    Relation { rel: RelTag, segno: u32 },
    Slru { kind: SlruKind, segno: u32 },
    TwoPhase { xid: u32 },
    Skip,
}

/// The database a `global` or `base/<db>` directory holds.
fn db_of_dir(dir: &str) -> Option<(u32, u32)> {
    if dir == "global" {
        return Some((GLOBALTABLESPACE_OID, 0));
    }
    let db = dir.strip_prefix("base/")?;
    let canonical =
        !db.is_empty() && db.bytes().all(|b| b.is_ascii_digit()) && !db.starts_with('0');
    Some((
        DEFAULTTABLESPACE_OID,
        db.parse().ok().filter(|_| canonical)?,
    ))
}

/// Parses 4 to 6 upper-case hex digits (SLRU segment names) or exactly 8 (two-phase files).
fn parse_hex_name(name: &str, min_len: usize, max_len: usize) -> Option<u32> {
    let ok = (min_len..=max_len).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    if ok {
        u32::from_str_radix(name, 16).ok()
    } else {
        None
    }
}

fn classify(path: &str) -> Result<FileKind, ImportError> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    if path == "global/pg_control" {
        return Ok(FileKind::ControlFile);
    }
    if dir.starts_with("pg_tblspc/") {
        return Err(ImportError::UnsupportedTablespace(path.to_string()));
    }
    if let Some((spcnode, dbnode)) = db_of_dir(dir) {
        match name {
            "pg_filenode.map" => return Ok(FileKind::RelMap { spcnode, dbnode }),
            "PG_VERSION" => return Ok(FileKind::PgVersion { spcnode, dbnode }),
            _ => {}
        }
    }
    if let Some(kind) = SlruKind::from_dir_name(dir) {
        return Ok(parse_hex_name(name, 4, 6)
            .map_or(FileKind::Skip, |segno| FileKind::Slru { kind, segno }));
    }
    if dir == "pg_twophase" {
        return Ok(
            parse_hex_name(name, 8, 8).map_or(FileKind::Skip, |xid| FileKind::TwoPhase { xid })
        );
    }
    match parse_relation_path(path) {
        Ok(p) => Ok(FileKind::Relation {
            rel: RelTag::new(p.rnode, p.forknum),
            segno: p.segno,
        }),
        Err(
            RelPathError::TemporaryRelation(_)
            | RelPathError::NotRelationFile(_)
            | RelPathError::NotInDatabaseDirectory(_),
        ) => Ok(FileKind::Skip),
    }
}

/// Accumulates directories while files are imported, and writes them at the end.
struct Importer<'m, 't, T> {
    m: &'m mut DatadirModification<'t, T>,
    dbdir: DbDirectory,
    rel_segments: BTreeMap<RelTag, BTreeMap<u32, u32>>,
    slru_segments: BTreeMap<SlruKind, BTreeMap<u32, u32>>,
    twophase: BTreeSet<u32>,
    control: Option<ControlFileData>,
    files: usize,
}

impl<'m, 't, T: TimelineRead + TimelineWrite> Importer<'m, 't, T> {
    fn new(m: &'m mut DatadirModification<'t, T>) -> Self {
        Importer {
            m,
            dbdir: DbDirectory::default(),
            rel_segments: BTreeMap::new(),
            slru_segments: BTreeMap::new(),
            twophase: BTreeSet::new(),
            control: None,
            files: 0,
        }
    }

    /// Imports one regular file of `len` bytes at `path` (relative, `/`-separated).
    fn import_file(
        &mut self,
        path: &str,
        len: u64,
        reader: &mut dyn Read,
    ) -> Result<(), ImportError> {
        self.files += 1;
        let io_err = |source| ImportError::Io {
            path: path.to_string(),
            source,
        };
        let bad_size = || ImportError::BadFileSize {
            path: path.to_string(),
            len_bytes: len,
        };
        match classify(path)? {
            FileKind::ControlFile => {
                let bytes = read_small(reader, len, PG_CONTROL_FILE_SIZE as u64)
                    .map_err(io_err)?
                    .ok_or_else(bad_size)?;
                let control =
                    ControlFileData::decode(&bytes).map_err(ImportError::BadControlFile)?;
                self.m.put_control_file(Bytes::from(bytes));
                self.m
                    .put_checkpoint(Bytes::from(control.checkpoint_copy.encode()));
                self.control = Some(control);
            }
            FileKind::RelMap { spcnode, dbnode } => {
                let bytes = read_small(reader, len, RELMAP_FILE_BYTES as u64).map_err(io_err)?;
                let bytes = bytes
                    .filter(|b| b.len() == RELMAP_FILE_BYTES)
                    .ok_or_else(bad_size)?;
                self.m.put_image(
                    pageserver_api::key::relmap_file_key(spcnode, dbnode),
                    Bytes::from(bytes),
                );
                self.dbdir.dbdirs.insert((spcnode, dbnode), true);
            }
            FileKind::PgVersion { spcnode, dbnode } => {
                self.dbdir.dbdirs.entry((spcnode, dbnode)).or_insert(false);
            }
            FileKind::Relation { rel, segno } => {
                let nblocks = block_count(len, u64::from(RELSEG_SIZE)).ok_or_else(bad_size)?;
                let first = segno * RELSEG_SIZE;
                self.import_pages(path, reader, nblocks, |m, i, page| {
                    m.put_rel_value(rel, first + i, page)
                })?;
                self.rel_segments
                    .entry(rel)
                    .or_default()
                    .insert(segno, nblocks);
            }
            FileKind::Slru { kind, segno } => {
                let nblocks =
                    block_count(len, u64::from(SLRU_PAGES_PER_SEGMENT)).ok_or_else(bad_size)?;
                self.import_pages(path, reader, nblocks, |m, i, page| {
                    m.put_slru_value(kind, segno, i, page)
                })?;
                self.slru_segments
                    .entry(kind)
                    .or_default()
                    .insert(segno, nblocks);
            }
            FileKind::TwoPhase { xid } => {
                let bytes = read_small(reader, len, MAX_TWOPHASE_FILE_BYTES)
                    .map_err(io_err)?
                    .ok_or_else(bad_size)?;
                let content =
                    strip_twophase_crc(&bytes).map_err(|reason| ImportError::BadTwoPhaseFile {
                        path: path.to_string(),
                        reason,
                    })?;
                self.m.put_image(
                    pageserver_api::key::twophase_file_key(xid),
                    Bytes::copy_from_slice(content),
                );
                self.twophase.insert(xid);
            }
            FileKind::Skip => self.files -= 1,
        }
        Ok(())
    }

    /// Reads `nblocks` pages of the file at `path` and stores each with `put`.
    fn import_pages(
        &mut self,
        path: &str,
        reader: &mut dyn Read,
        nblocks: u32,
        put: impl Fn(&mut DatadirModification<'t, T>, u32, Value),
    ) -> Result<(), ImportError> {
        for i in 0..nblocks {
            let mut page = vec![0u8; BLCKSZ];
            reader
                .read_exact(&mut page)
                .map_err(|source| ImportError::Io {
                    path: path.to_string(),
                    source,
                })?;
            put(&mut *self.m, i, Value::Image(Bytes::from(page)));
            self.m.commit_if_large()?;
        }
        Ok(())
    }

    /// Writes the directories, sizes and checks that relation segments are complete.
    fn finish(mut self) -> Result<ControlFileData, ImportError> {
        let control = self.control.take().ok_or(ImportError::MissingControlFile)?;
        let mut reldirs: BTreeMap<(u32, u32), RelDirectory> = BTreeMap::new();
        for (rel, segments) in &self.rel_segments {
            let nblocks = relation_size(*rel, segments)?;
            self.m.set_rel_size(*rel, nblocks);
            self.dbdir
                .dbdirs
                .entry((rel.spcnode, rel.dbnode))
                .or_insert(false);
            reldirs
                .entry((rel.spcnode, rel.dbnode))
                .or_default()
                .rels
                .insert((rel.relnode, rel.forknum));
        }
        for &(spc, db) in self.dbdir.dbdirs.keys() {
            self.m.put_rel_directory(
                spc,
                db,
                reldirs.get(&(spc, db)).unwrap_or(&RelDirectory::default()),
            );
        }
        self.m.put_db_directory(&self.dbdir);
        for kind in SlruKind::ALL {
            let segments = self.slru_segments.remove(&kind).unwrap_or_default();
            for (&segno, &nblocks) in &segments {
                self.m.set_slru_segment_size(kind, segno, nblocks);
            }
            self.m.put_slru_directory(
                kind,
                &SlruSegmentDirectory {
                    segments: segments.into_keys().collect(),
                },
            );
        }
        self.m.put_twophase_directory(&TwoPhaseDirectory {
            xids: std::mem::take(&mut self.twophase),
        });
        self.m.commit()?;
        Ok(control)
    }
}

/// Blocks in a file of `len` bytes holding at most `max_blocks` whole blocks.
fn block_count(len: u64, max_blocks: u64) -> Option<u32> {
    let ok = len.is_multiple_of(BLCKSZ as u64) && len / (BLCKSZ as u64) <= max_blocks;
    ok.then(|| (len / BLCKSZ as u64) as u32)
}

/// Reads a whole file of at most `max_len` bytes; `None` if it is larger.
fn read_small(reader: &mut dyn Read, len: u64, max_len: u64) -> io::Result<Option<Vec<u8>>> {
    if len > max_len {
        return Ok(None);
    }
    let mut buf = vec![0u8; len as usize];
    reader.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// A relation's size from its segments: they must be 0..=k, all but the last full.
fn relation_size(rel: RelTag, segments: &BTreeMap<u32, u32>) -> Result<u32, ImportError> {
    let bad = |reason: String| ImportError::BadRelationSegments { rel, reason };
    let last = segments.keys().next_back().copied().unwrap_or(0);
    if segments.len() as u64 != u64::from(last) + 1 {
        return Err(bad(format!(
            "segments {:?} are not contiguous from 0",
            segments.keys().collect::<Vec<_>>()
        )));
    }
    if let Some((segno, n)) = segments
        .iter()
        .find(|(s, n)| **s < last && **n != RELSEG_SIZE)
    {
        return Err(bad(format!(
            "segment {segno} has {n} blocks but is not the last"
        )));
    }
    let total = u64::from(last) * u64::from(RELSEG_SIZE) + u64::from(segments[&last]);
    u32::try_from(total)
        .ok()
        .filter(|t| *t < u32::MAX)
        .ok_or_else(|| bad(format!("{total} blocks is too large")))
}

/// A two-phase state file ends with the CRC-32C of what precedes it; returns the content.
pub fn strip_twophase_crc(file: &[u8]) -> Result<&[u8], String> {
    let Some(split) = file.len().checked_sub(4) else {
        return Err(format!("{} bytes is too short", file.len()));
    };
    let (content, crc) = file.split_at(split);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32c::crc32c(content);
    if stored != computed {
        return Err(format!(
            "CRC mismatch: stored {stored:08X}, computed {computed:08X}"
        ));
    }
    Ok(content)
}

/// Imports the data directory at `pgdata` into `tline` at `lsn`; returns its pg_control.
pub fn import_datadir<T: TimelineRead + TimelineWrite>(
    tline: &mut T,
    pgdata: &Path,
    lsn: Lsn,
) -> Result<ControlFileData, ImportError> {
    let mut files = Vec::new();
    list_files(pgdata, PathBuf::new(), &mut files)?;
    let mut m = DatadirModification::new(tline, lsn);
    let mut importer = Importer::new(&mut m);
    for rel_path in files {
        let full = pgdata.join(&rel_path);
        let path = rel_path.to_string_lossy().replace('\\', "/");
        let io_err = |source| ImportError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&full).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        importer.import_file(&path, len, &mut file)?;
    }
    let control = importer.finish()?;
    drop(m);
    tline.finish_write(lsn, Lsn::INVALID);
    Ok(control)
}

/// Collects regular files under `root/rel` (sorted, relative paths).
fn list_files(root: &Path, rel: PathBuf, out: &mut Vec<PathBuf>) -> Result<(), ImportError> {
    let dir = root.join(&rel);
    let io_err = |source| ImportError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io_err)?
        .collect::<Result<_, _>>()
        .map_err(io_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let file_type = entry.file_type().map_err(io_err)?;
        let child = rel.join(entry.file_name());
        if file_type.is_dir() {
            list_files(root, child, out)?;
        } else if file_type.is_file() {
            out.push(child);
        } else if file_type.is_symlink() && rel.as_os_str() == "pg_tblspc" {
            return Err(ImportError::UnsupportedTablespace(
                child.display().to_string(),
            ));
        }
    }
    Ok(())
}

/// Imports a tar base backup (the base.tar of `pg_basebackup -Ft`) into `tline` at `lsn`;
/// returns its pg_control. The WAL from the backup start to its end must be imported next.
pub fn import_basebackup_tar<T: TimelineRead + TimelineWrite, R: Read>(
    tline: &mut T,
    reader: R,
    lsn: Lsn,
) -> Result<ControlFileData, ImportError> {
    let mut archive = tar::Archive::new(reader);
    let mut m = DatadirModification::new(tline, lsn);
    let mut importer = Importer::new(&mut m);
    let mut entries_seen = 0usize;
    for entry in archive.entries().map_err(ImportError::Archive)? {
        let mut entry = entry.map_err(ImportError::Archive)?;
        entries_seen += 1;
        let path = entry
            .path()
            .map_err(ImportError::Archive)?
            .to_string_lossy()
            .into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let len = entry.size();
                importer.import_file(&path, len, &mut entry)?;
            }
            tar::EntryType::Symlink if path.starts_with("pg_tblspc/") => {
                return Err(ImportError::UnsupportedTablespace(path));
            }
            _ => {}
        }
    }
    if entries_seen == 0 {
        return Err(ImportError::EmptyArchive);
    }
    let control = importer.finish()?;
    drop(m);
    tline.finish_write(lsn, Lsn::INVALID);
    Ok(control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memstore::MemTimeline;

    #[test]
    fn classifies_paths() {
        use FileKind::*;
        assert_eq!(classify("global/pg_control").unwrap(), ControlFile);
        assert_eq!(
            classify("global/pg_filenode.map").unwrap(),
            RelMap {
                spcnode: 1664,
                dbnode: 0
            }
        );
        assert_eq!(
            classify("base/5/PG_VERSION").unwrap(),
            PgVersion {
                spcnode: 1663,
                dbnode: 5
            }
        );
        assert_eq!(
            classify("pg_xact/0000").unwrap(),
            Slru {
                kind: SlruKind::Clog,
                segno: 0
            }
        );
        assert_eq!(
            classify("pg_multixact/members/14078").unwrap(),
            Slru {
                kind: SlruKind::MultiXactMembers,
                segno: 0x14078
            }
        );
        assert_eq!(
            classify("pg_twophase/000004D2").unwrap(),
            TwoPhase { xid: 1234 }
        );
        assert_eq!(classify("pg_twophase/4D2").unwrap(), Skip);
        assert!(matches!(
            classify("base/5/16384_vm.2").unwrap(),
            Relation { segno: 2, .. }
        ));
        for skip in [
            "base/5/t3_16384",
            "base/5/pg_internal.init",
            "postgresql.conf",
            "pg_wal/000000010000000000000001",
            "base/05/PG_VERSION",
            "pg_xact/zz",
        ] {
            assert_eq!(classify(skip).unwrap(), Skip, "{skip}");
        }
        assert!(matches!(
            classify("pg_tblspc/16400/PG_15_202209061/5/16384"),
            Err(ImportError::UnsupportedTablespace(_))
        ));
    }

    #[test]
    fn relation_segments_must_be_complete() {
        let rel = RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode: 1,
            forknum: 0,
        };
        let segs = |v: &[(u32, u32)]| v.iter().copied().collect::<BTreeMap<_, _>>();
        assert_eq!(relation_size(rel, &segs(&[(0, 5)])).unwrap(), 5);
        assert_eq!(
            relation_size(rel, &segs(&[(0, RELSEG_SIZE), (1, 3)])).unwrap(),
            RELSEG_SIZE + 3
        );
        assert!(relation_size(rel, &segs(&[(1, 3)])).is_err());
        assert!(relation_size(rel, &segs(&[(0, 4), (1, 3)])).is_err());
    }

    #[test]
    fn twophase_crc() {
        let mut file = b"state".to_vec();
        file.extend_from_slice(&crc32c::crc32c(b"state").to_le_bytes());
        assert_eq!(strip_twophase_crc(&file).unwrap(), b"state");
        file[0] ^= 1;
        assert!(strip_twophase_crc(&file).is_err());
        assert!(strip_twophase_crc(&[1, 2]).is_err());
    }

    #[test]
    fn bad_archives_give_typed_errors() {
        let mut tl = MemTimeline::new();
        // An empty tar: just the two zero end blocks.
        let empty = vec![0u8; 1024];
        assert!(matches!(
            import_basebackup_tar(&mut tl, &empty[..], Lsn(8)),
            Err(ImportError::EmptyArchive)
        ));
        // Garbage: a header block with a wrong checksum.
        let garbage: Vec<u8> = (0..2048u32).map(|i| (i * 7 + 3) as u8).collect();
        assert!(matches!(
            import_basebackup_tar(&mut tl, &garbage[..], Lsn(8)),
            Err(ImportError::Archive(_))
        ));
        // A tar with one file but no pg_control.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o600);
        header.set_cksum();
        builder
            .append_data(&mut header, "PG_VERSION", &b"15\n"[..])
            .unwrap();
        let tarball = builder.into_inner().unwrap();
        assert!(matches!(
            import_basebackup_tar(&mut tl, &tarball[..], Lsn(8)),
            Err(ImportError::MissingControlFile)
        ));
        // Truncated inside a file's data.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(8192);
        header.set_mode(0o600);
        header.set_cksum();
        builder
            .append_data(&mut header, "base/5/16384", &[0u8; 8192][..])
            .unwrap();
        let tarball = builder.into_inner().unwrap();
        let cut = &tarball[..512 + 4000];
        assert!(matches!(
            import_basebackup_tar(&mut tl, cut, Lsn(8)),
            Err(ImportError::Io { .. } | ImportError::Archive(_))
        ));
    }
}

//! How PostgreSQL's data directory maps onto the key space, and typed reads of it at an LSN.
//!
//! Objects and their keys are listed in `pageserver_api::key`. Directory keys say what exists:
//! the database directory (DBDIR_KEY) lists (spcnode, dbnode) pairs; each database has a
//! relation directory listing its relation forks; each fork has a size key and blocks
//! `0..size`; each SLRU has a segment directory, each segment a size key and blocks; the
//! two-phase directory lists prepared xids. Value encodings are in [`dirs`].
//!
//! Nothing is ever deleted: dropping an object removes it from its directory and writes an
//! empty tombstone to its size key, so [`DatadirRead::get_rel_size`] answers "does not exist"
//! with one read. [`DatadirRead::collect_keyspace`] walks the directories to tell which keys
//! exist at an LSN.
//!
//! Writes go through [`DatadirModification`].

pub mod dirs;
mod modification;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use pageserver_api::key::{
    rel_block_to_key, rel_dir_to_key, rel_size_to_key, relmap_file_key, slru_block_to_key,
    slru_dir_to_key, slru_segment_size_to_key, twophase_file_key, Key, KeySpace, RelTag, SlruKind,
    CHECKPOINT_KEY, CONTROLFILE_KEY, DBDIR_KEY, TWOPHASEDIR_KEY,
};
use postgres_ffi::records::CheckPoint;
use utils::lsn::Lsn;

pub use dirs::{
    DbDirectory, DirDecodeError, RelDirectory, SlruSegmentDirectory, TwoPhaseDirectory,
};
pub use modification::{DatadirModification, MAX_PENDING_BYTES};

use crate::pg_consts::{BLCKSZ, ZERO_PAGE};
use crate::storage_api::{ReadError, TimelineRead, WriteError};

/// Errors of the typed reads and of [`DatadirModification`].
#[derive(Debug, thiserror::Error)]
pub enum DatadirError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A stored value does not decode.
    #[error("corrupt {what} at key {key}: {reason}")]
    Corrupt {
        key: Key,
        what: &'static str,
        reason: String,
    },
    /// A key that must exist has no value.
    #[error("{what} (key {key}) is missing at {lsn}")]
    Missing {
        key: Key,
        lsn: Lsn,
        what: &'static str,
    },
    /// The relation fork does not exist at the LSN.
    #[error("relation {rel} does not exist at {lsn}")]
    RelNotFound { rel: RelTag, lsn: Lsn },
    /// The SLRU segment does not exist at the LSN.
    #[error("SLRU segment {kind}/{segno:04X} does not exist at {lsn}")]
    SlruSegmentNotFound {
        kind: SlruKind,
        segno: u32,
        lsn: Lsn,
    },
    /// A modification was moved to an LSN below its current one.
    #[error("modification LSN cannot move back from {current} to {new}")]
    LsnRegressed { current: Lsn, new: Lsn },
}

fn corrupt(key: Key, what: &'static str, reason: impl ToString) -> DatadirError {
    DatadirError::Corrupt {
        key,
        what,
        reason: reason.to_string(),
    }
}

/// Typed reads of the data directory at an LSN, for every [`TimelineRead`] (timelines, and a
/// [`DatadirModification`] which adds its pending writes).
pub trait DatadirRead: TimelineRead {
    /// Databases: (spcnode, dbnode) → has a relmap file. Empty if there is no directory yet.
    fn list_dbdirs(&self, lsn: Lsn) -> Result<BTreeMap<(u32, u32), bool>, DatadirError> {
        Ok(read_db_directory(self, lsn)?.dbdirs)
    }

    /// Relation forks of a database (empty if the database does not exist).
    fn list_rels(
        &self,
        spcnode: u32,
        dbnode: u32,
        lsn: Lsn,
    ) -> Result<BTreeSet<RelTag>, DatadirError> {
        if !read_db_directory(self, lsn)?
            .dbdirs
            .contains_key(&(spcnode, dbnode))
        {
            return Ok(BTreeSet::new());
        }
        let dir = read_rel_directory(self, spcnode, dbnode, lsn)?;
        Ok(dir
            .rels
            .into_iter()
            .map(|(relnode, forknum)| RelTag {
                spcnode,
                dbnode,
                relnode,
                forknum,
            })
            .collect())
    }

    /// Number of blocks of a relation fork; `None` if it does not exist.
    fn get_rel_size(&self, rel: RelTag, lsn: Lsn) -> Result<Option<u32>, DatadirError> {
        let key = rel_size_to_key(rel);
        match self.get(key, lsn)? {
            None => Ok(None),
            Some(v) => dirs::decode_nblocks(&v).map_err(|e| corrupt(key, "relation size", e)),
        }
    }

    /// Whether a relation fork exists.
    fn get_rel_exists(&self, rel: RelTag, lsn: Lsn) -> Result<bool, DatadirError> {
        Ok(self.get_rel_size(rel, lsn)?.is_some())
    }

    /// A page of a relation fork. Blocks at or past the end read as zero pages (as Neon does);
    /// a missing relation is an error.
    fn get_rel_page_at_lsn(
        &self,
        rel: RelTag,
        blkno: u32,
        lsn: Lsn,
    ) -> Result<Bytes, DatadirError> {
        let nblocks = self
            .get_rel_size(rel, lsn)?
            .ok_or(DatadirError::RelNotFound { rel, lsn })?;
        if blkno >= nblocks {
            return Ok(ZERO_PAGE.clone());
        }
        let key = rel_block_to_key(rel, blkno);
        self.get(key, lsn)?.ok_or(DatadirError::Missing {
            key,
            lsn,
            what: "relation block",
        })
    }

    /// Total size in bytes of every relation fork of a database.
    fn get_db_size(&self, spcnode: u32, dbnode: u32, lsn: Lsn) -> Result<u64, DatadirError> {
        let mut total = 0u64;
        for rel in self.list_rels(spcnode, dbnode, lsn)? {
            total += u64::from(self.get_rel_size(rel, lsn)?.unwrap_or(0)) * BLCKSZ as u64;
        }
        Ok(total)
    }

    /// Segments of an SLRU.
    fn list_slru_segments(&self, kind: SlruKind, lsn: Lsn) -> Result<BTreeSet<u32>, DatadirError> {
        let key = slru_dir_to_key(kind);
        match self.get(key, lsn)? {
            None => Ok(BTreeSet::new()),
            Some(v) => Ok(SlruSegmentDirectory::decode(&v)
                .map_err(|e| corrupt(key, "SLRU directory", e))?
                .segments),
        }
    }

    /// Number of pages of an SLRU segment; `None` if it does not exist.
    fn get_slru_segment_size(
        &self,
        kind: SlruKind,
        segno: u32,
        lsn: Lsn,
    ) -> Result<Option<u32>, DatadirError> {
        let key = slru_segment_size_to_key(kind, segno);
        match self.get(key, lsn)? {
            None => Ok(None),
            Some(v) => dirs::decode_nblocks(&v).map_err(|e| corrupt(key, "SLRU segment size", e)),
        }
    }

    /// A page of an SLRU segment (must exist and be within the segment).
    fn get_slru_page_at_lsn(
        &self,
        kind: SlruKind,
        segno: u32,
        blkno: u32,
        lsn: Lsn,
    ) -> Result<Bytes, DatadirError> {
        let key = slru_block_to_key(kind, segno, blkno);
        self.get(key, lsn)?.ok_or(DatadirError::Missing {
            key,
            lsn,
            what: "SLRU page",
        })
    }

    /// The relmap file (pg_filenode.map) of a database, if stored.
    fn get_relmap_file(
        &self,
        spcnode: u32,
        dbnode: u32,
        lsn: Lsn,
    ) -> Result<Option<Bytes>, DatadirError> {
        Ok(self.get(relmap_file_key(spcnode, dbnode), lsn)?)
    }

    /// Xids of prepared transactions with a state file.
    fn list_twophase_files(&self, lsn: Lsn) -> Result<BTreeSet<u32>, DatadirError> {
        match self.get(TWOPHASEDIR_KEY, lsn)? {
            None => Ok(BTreeSet::new()),
            Some(v) => Ok(TwoPhaseDirectory::decode(&v)
                .map_err(|e| corrupt(TWOPHASEDIR_KEY, "two-phase directory", e))?
                .xids),
        }
    }

    /// The two-phase state file of `xid` (without its trailing CRC).
    fn get_twophase_file(&self, xid: u32, lsn: Lsn) -> Result<Bytes, DatadirError> {
        let key = twophase_file_key(xid);
        self.get(key, lsn)?.ok_or(DatadirError::Missing {
            key,
            lsn,
            what: "two-phase file",
        })
    }

    /// The stored pg_control file.
    fn get_control_file(&self, lsn: Lsn) -> Result<Bytes, DatadirError> {
        self.get(CONTROLFILE_KEY, lsn)?
            .ok_or(DatadirError::Missing {
                key: CONTROLFILE_KEY,
                lsn,
                what: "control file",
            })
    }

    /// The stored checkpoint (redo = end LSN of a shutdown checkpoint record, 0 after an
    /// online checkpoint; see [`crate::walingest`]).
    fn get_checkpoint(&self, lsn: Lsn) -> Result<CheckPoint, DatadirError> {
        let bytes = self
            .get(CHECKPOINT_KEY, lsn)?
            .ok_or(DatadirError::Missing {
                key: CHECKPOINT_KEY,
                lsn,
                what: "checkpoint",
            })?;
        CheckPoint::decode(&bytes).map_err(|e| corrupt(CHECKPOINT_KEY, "checkpoint", e))
    }

    /// Every key that exists at `lsn`, derived from the directory keys.
    fn collect_keyspace(&self, lsn: Lsn) -> Result<KeySpace, DatadirError> {
        let mut ks = KeySpace::new();
        for key in [DBDIR_KEY, TWOPHASEDIR_KEY, CONTROLFILE_KEY, CHECKPOINT_KEY] {
            if self.get(key, lsn)?.is_some() {
                ks.add_key(key);
            }
        }
        for ((spc, db), has_relmap) in self.list_dbdirs(lsn)? {
            if has_relmap {
                ks.add_key(relmap_file_key(spc, db));
            }
            ks.add_key(rel_dir_to_key(spc, db));
            for rel in self.list_rels(spc, db, lsn)? {
                let nblocks = self.get_rel_size(rel, lsn)?.unwrap_or(0);
                ks.add_range(rel_block_to_key(rel, 0)..rel_block_to_key(rel, nblocks));
                ks.add_key(rel_size_to_key(rel));
            }
        }
        for kind in SlruKind::ALL {
            if self.get(slru_dir_to_key(kind), lsn)?.is_some() {
                ks.add_key(slru_dir_to_key(kind));
            }
            for segno in self.list_slru_segments(kind, lsn)? {
                let nblocks = self.get_slru_segment_size(kind, segno, lsn)?.unwrap_or(0);
                ks.add_range(
                    slru_block_to_key(kind, segno, 0)..slru_block_to_key(kind, segno, nblocks),
                );
                ks.add_key(slru_segment_size_to_key(kind, segno));
            }
        }
        for xid in self.list_twophase_files(lsn)? {
            ks.add_key(twophase_file_key(xid));
        }
        Ok(ks)
    }
}

impl<T: TimelineRead + ?Sized> DatadirRead for T {}

/// The database directory at `lsn` (empty if not there yet).
pub(crate) fn read_db_directory<R: TimelineRead + ?Sized>(
    r: &R,
    lsn: Lsn,
) -> Result<DbDirectory, DatadirError> {
    match r.get(DBDIR_KEY, lsn)? {
        None => Ok(DbDirectory::default()),
        Some(v) => DbDirectory::decode(&v).map_err(|e| corrupt(DBDIR_KEY, "database directory", e)),
    }
}

/// The relation directory of a database at `lsn` (empty if not there).
pub(crate) fn read_rel_directory<R: TimelineRead + ?Sized>(
    r: &R,
    spcnode: u32,
    dbnode: u32,
    lsn: Lsn,
) -> Result<RelDirectory, DatadirError> {
    let key = rel_dir_to_key(spcnode, dbnode);
    match r.get(key, lsn)? {
        None => Ok(RelDirectory::default()),
        Some(v) => RelDirectory::decode(&v).map_err(|e| corrupt(key, "relation directory", e)),
    }
}

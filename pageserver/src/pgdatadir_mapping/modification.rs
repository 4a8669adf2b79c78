//! [`DatadirModification`]: buffered writes at the current LSN with a read view that includes
//! them, and the directory bookkeeping of creating and dropping relations, databases, SLRU
//! segments and two-phase files.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use pageserver_api::key::{
    rel_block_to_key, rel_dir_to_key, rel_size_to_key, relmap_file_key, slru_block_to_key,
    slru_dir_to_key, slru_segment_size_to_key, twophase_file_key, Key, RelTag, SlruKind,
    CHECKPOINT_KEY, CONTROLFILE_KEY, DBDIR_KEY, TWOPHASEDIR_KEY,
};
use pageserver_api::value::{NeonWalRecord, Value};
use utils::lsn::Lsn;

use super::dirs::{encode_nblocks, size_tombstone};
use super::{
    read_db_directory, read_rel_directory, DatadirError, DatadirRead, DbDirectory, RelDirectory,
    SlruSegmentDirectory, TwoPhaseDirectory,
};
use crate::storage_api::{ReadError, TimelineRead, TimelineWrite};

/// Pending bytes above which [`DatadirModification::commit_if_large`] commits.
pub const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;

/// Fixed per-value overhead counted in the pending size (key, LSN, bookkeeping).
const PENDING_ENTRY_OVERHEAD_BYTES: usize = 48;

/// A batch of writes to a timeline at increasing LSNs.
///
/// Puts are buffered; reads through the modification (it implements [`TimelineRead`], so all
/// of [`DatadirRead`] works on it) see the buffered images first. Reading a key whose newest
/// buffered version is a WAL record is refused (commit first). [`Self::commit`] hands the
/// buffer to the timeline in one `put_batch`.
pub struct DatadirModification<'t, T> {
    tline: &'t mut T,
    lsn: Lsn,
    pending: Vec<(Key, Lsn, Value)>,
    /// Index into `pending` of the newest entry of each key.
    newest: HashMap<Key, usize>,
    pending_bytes: usize,
}

fn value_size(value: &Value) -> usize {
    PENDING_ENTRY_OVERHEAD_BYTES
        + match value {
            Value::Image(img) => img.len(),
            Value::WalRecord(NeonWalRecord::Postgres { rec, .. }) => rec.len(),
            Value::WalRecord(NeonWalRecord::ClogSetCommitted { xids, .. })
            | Value::WalRecord(NeonWalRecord::ClogSetAborted { xids }) => xids.len() * 4,
            Value::WalRecord(NeonWalRecord::MultixactMembersCreate { members, .. }) => {
                members.len() * 8
            }
            Value::WalRecord(_) => 16,
        }
}

impl<'t, T: TimelineRead + TimelineWrite> DatadirModification<'t, T> {
    /// A modification writing at `lsn`.
    pub fn new(tline: &'t mut T, lsn: Lsn) -> Self {
        DatadirModification {
            tline,
            lsn,
            pending: Vec::new(),
            newest: HashMap::new(),
            pending_bytes: 0,
        }
    }

    /// The LSN new puts are stored at.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Moves to a later LSN (the end of the next WAL record).
    pub fn set_lsn(&mut self, lsn: Lsn) -> Result<(), DatadirError> {
        if lsn < self.lsn {
            return Err(DatadirError::LsnRegressed {
                current: self.lsn,
                new: lsn,
            });
        }
        self.lsn = lsn;
        Ok(())
    }

    /// Approximate bytes buffered.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// The timeline below.
    pub fn timeline(&mut self) -> &mut T {
        self.tline
    }

    /// Buffers `value` for `key` at the current LSN (replacing a value buffered for the same
    /// key at the same LSN).
    pub fn put(&mut self, key: Key, value: Value) {
        let size = value_size(&value);
        if let Some(&i) = self.newest.get(&key) {
            if self.pending[i].1 == self.lsn {
                self.pending_bytes = self.pending_bytes - value_size(&self.pending[i].2) + size;
                self.pending[i].2 = value;
                return;
            }
        }
        self.newest.insert(key, self.pending.len());
        self.pending.push((key, self.lsn, value));
        self.pending_bytes += size;
    }

    /// Buffers an image.
    pub fn put_image(&mut self, key: Key, img: Bytes) {
        self.put(key, Value::Image(img));
    }

    /// Hands everything buffered to the timeline.
    pub fn commit(&mut self) -> Result<(), DatadirError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.newest.clear();
        self.pending_bytes = 0;
        self.tline.put_batch(batch)?;
        Ok(())
    }

    /// Commits if more than [`MAX_PENDING_BYTES`] are buffered.
    pub fn commit_if_large(&mut self) -> Result<(), DatadirError> {
        if self.pending_bytes > MAX_PENDING_BYTES {
            self.commit()?;
        }
        Ok(())
    }

    // ---- relations and databases ----

    /// Adds a database (with an empty relation directory) if it is not there.
    pub fn ensure_db(&mut self, spcnode: u32, dbnode: u32) -> Result<(), DatadirError> {
        let mut dir = read_db_directory(self, self.lsn)?;
        if dir.dbdirs.contains_key(&(spcnode, dbnode)) {
            return Ok(());
        }
        dir.dbdirs.insert((spcnode, dbnode), false);
        self.put_image(DBDIR_KEY, dir.encode());
        self.put_image(
            rel_dir_to_key(spcnode, dbnode),
            RelDirectory::default().encode(),
        );
        Ok(())
    }

    /// Creates a relation fork with `nblocks` blocks (the caller stores the blocks), creating
    /// its database if needed. An existing fork just gets the new size.
    pub fn create_rel(&mut self, rel: RelTag, nblocks: u32) -> Result<(), DatadirError> {
        self.ensure_db(rel.spcnode, rel.dbnode)?;
        let mut dir = read_rel_directory(self, rel.spcnode, rel.dbnode, self.lsn)?;
        if dir.rels.insert((rel.relnode, rel.forknum)) {
            self.put_image(rel_dir_to_key(rel.spcnode, rel.dbnode), dir.encode());
        }
        self.set_rel_size(rel, nblocks);
        Ok(())
    }

    /// Sets the size of an existing relation fork.
    pub fn set_rel_size(&mut self, rel: RelTag, nblocks: u32) {
        self.put_image(rel_size_to_key(rel), encode_nblocks(nblocks));
    }

    /// Stores a block of a relation fork (no size bookkeeping).
    pub fn put_rel_value(&mut self, rel: RelTag, blkno: u32, value: Value) {
        self.put(rel_block_to_key(rel, blkno), value);
    }

    /// Drops relation forks (those that do not exist are skipped).
    pub fn drop_rels(&mut self, rels: &[RelTag]) -> Result<(), DatadirError> {
        let by_db: BTreeSet<(u32, u32)> = rels.iter().map(|r| (r.spcnode, r.dbnode)).collect();
        for (spc, db) in by_db {
            let mut dir = read_rel_directory(self, spc, db, self.lsn)?;
            let mut changed = false;
            for rel in rels.iter().filter(|r| (r.spcnode, r.dbnode) == (spc, db)) {
                if dir.rels.remove(&(rel.relnode, rel.forknum)) {
                    self.put_image(rel_size_to_key(*rel), size_tombstone());
                    changed = true;
                }
            }
            if changed {
                self.put_image(rel_dir_to_key(spc, db), dir.encode());
            }
        }
        Ok(())
    }

    /// Drops a database and all its relations.
    pub fn drop_db(&mut self, spcnode: u32, dbnode: u32) -> Result<(), DatadirError> {
        let mut dir = read_db_directory(self, self.lsn)?;
        if dir.dbdirs.remove(&(spcnode, dbnode)).is_none() {
            return Ok(());
        }
        let rels = self.list_rels(spcnode, dbnode, self.lsn)?;
        for rel in rels {
            self.put_image(rel_size_to_key(rel), size_tombstone());
        }
        self.put_image(DBDIR_KEY, dir.encode());
        Ok(())
    }

    /// Stores the relmap file of a database (creating the database if needed).
    pub fn put_relmap_file(
        &mut self,
        spcnode: u32,
        dbnode: u32,
        img: Bytes,
    ) -> Result<(), DatadirError> {
        self.ensure_db(spcnode, dbnode)?;
        let mut dir = read_db_directory(self, self.lsn)?;
        if dir.dbdirs.insert((spcnode, dbnode), true) != Some(true) {
            self.put_image(DBDIR_KEY, dir.encode());
        }
        self.put_image(relmap_file_key(spcnode, dbnode), img);
        Ok(())
    }

    /// Writes a whole database directory (bulk import).
    pub fn put_db_directory(&mut self, dir: &DbDirectory) {
        self.put_image(DBDIR_KEY, dir.encode());
    }

    /// Writes a whole relation directory (bulk import).
    pub fn put_rel_directory(&mut self, spcnode: u32, dbnode: u32, dir: &RelDirectory) {
        self.put_image(rel_dir_to_key(spcnode, dbnode), dir.encode());
    }

    // ---- SLRUs ----

    /// Creates an SLRU segment with `nblocks` pages, or sets the size of an existing one.
    pub fn create_slru_segment(
        &mut self,
        kind: SlruKind,
        segno: u32,
        nblocks: u32,
    ) -> Result<(), DatadirError> {
        let mut segments = self.list_slru_segments(kind, self.lsn)?;
        if segments.insert(segno) {
            self.put_slru_directory(kind, &SlruSegmentDirectory { segments });
        }
        self.set_slru_segment_size(kind, segno, nblocks);
        Ok(())
    }

    /// Sets the size of an SLRU segment.
    pub fn set_slru_segment_size(&mut self, kind: SlruKind, segno: u32, nblocks: u32) {
        self.put_image(
            slru_segment_size_to_key(kind, segno),
            encode_nblocks(nblocks),
        );
    }

    /// Stores a page of an SLRU segment (no size bookkeeping).
    pub fn put_slru_value(&mut self, kind: SlruKind, segno: u32, blkno: u32, value: Value) {
        self.put(slru_block_to_key(kind, segno, blkno), value);
    }

    /// Drops an SLRU segment (no-op if it does not exist).
    pub fn drop_slru_segment(&mut self, kind: SlruKind, segno: u32) -> Result<(), DatadirError> {
        let mut segments = self.list_slru_segments(kind, self.lsn)?;
        if segments.remove(&segno) {
            self.put_slru_directory(kind, &SlruSegmentDirectory { segments });
            self.put_image(slru_segment_size_to_key(kind, segno), size_tombstone());
        }
        Ok(())
    }

    /// Writes a whole SLRU directory (bulk import).
    pub fn put_slru_directory(&mut self, kind: SlruKind, dir: &SlruSegmentDirectory) {
        self.put_image(slru_dir_to_key(kind), dir.encode());
    }

    // ---- two-phase files, control file, checkpoint ----

    /// Stores the state file of prepared transaction `xid` (without its CRC).
    pub fn put_twophase_file(&mut self, xid: u32, content: Bytes) -> Result<(), DatadirError> {
        let mut xids = self.list_twophase_files(self.lsn)?;
        if xids.insert(xid) {
            self.put_image(TWOPHASEDIR_KEY, TwoPhaseDirectory { xids }.encode());
        }
        self.put_image(twophase_file_key(xid), content);
        Ok(())
    }

    /// Removes prepared transaction `xid` (no-op if absent).
    pub fn drop_twophase_file(&mut self, xid: u32) -> Result<(), DatadirError> {
        let mut xids = self.list_twophase_files(self.lsn)?;
        if xids.remove(&xid) {
            self.put_image(TWOPHASEDIR_KEY, TwoPhaseDirectory { xids }.encode());
        }
        Ok(())
    }

    /// Writes the whole two-phase directory (bulk import).
    pub fn put_twophase_directory(&mut self, dir: &TwoPhaseDirectory) {
        self.put_image(TWOPHASEDIR_KEY, dir.encode());
    }

    /// Stores pg_control.
    pub fn put_control_file(&mut self, bytes: Bytes) {
        self.put_image(CONTROLFILE_KEY, bytes);
    }

    /// Stores the checkpoint (encoded CheckPoint).
    pub fn put_checkpoint(&mut self, bytes: Bytes) {
        self.put_image(CHECKPOINT_KEY, bytes);
    }
}

impl<T: TimelineRead> TimelineRead for DatadirModification<'_, T> {
    /// Buffered images win for reads at or after the modification's LSN.
    fn get(&self, key: Key, lsn: Lsn) -> Result<Option<Bytes>, ReadError> {
        if lsn >= self.lsn {
            if let Some(&i) = self.newest.get(&key) {
                return match &self.pending[i].2 {
                    Value::Image(img) => Ok(Some(img.clone())),
                    Value::WalRecord(_) => Err(ReadError::Reconstruct {
                        key,
                        lsn,
                        reason: "newest version is an uncommitted WAL record".into(),
                    }),
                };
            }
        }
        self.tline.get(key, lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memstore::MemTimeline;
    use crate::pg_consts::ZERO_PAGE;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn rel(db: u32, relnode: u32, forknum: u8) -> RelTag {
        RelTag {
            spcnode: 1663,
            dbnode: db,
            relnode,
            forknum,
        }
    }

    #[test]
    fn pending_view_and_commit() {
        let mut tl = MemTimeline::new();
        let r = rel(5, 16384, 0);
        let mut m = DatadirModification::new(&mut tl, Lsn(0x100));
        m.create_rel(r, 0).unwrap();
        m.put_rel_value(r, 0, Value::Image(ZERO_PAGE.clone()));
        m.set_rel_size(r, 1);
        assert_eq!(m.get_rel_size(r, Lsn(0x100)).unwrap(), Some(1));
        assert_eq!(m.list_rels(1663, 5, Lsn(0x100)).unwrap().len(), 1);
        // Same key, same LSN: replaced, not duplicated.
        assert_eq!(
            m.pending
                .iter()
                .filter(|(k, _, _)| *k == rel_size_to_key(r))
                .count(),
            1
        );
        m.set_lsn(Lsn(0x200)).unwrap();
        m.put_rel_value(
            r,
            0,
            Value::WalRecord(NeonWalRecord::Postgres {
                will_init: false,
                rec: Bytes::new(),
            }),
        );
        assert!(m.get_rel_page_at_lsn(r, 0, Lsn(0x200)).is_err());
        assert!(m.set_lsn(Lsn(0x1FF)).is_err());
        m.commit().unwrap();
        assert_eq!(m.pending_bytes(), 0);
        tl.finish_write(Lsn(0x200), Lsn(0x180));
        assert_eq!(tl.get_rel_size(r, Lsn(0x100)).unwrap(), Some(1));
        assert_eq!(tl.get_rel_page_at_lsn(r, 0, Lsn(0x1FF)).unwrap(), ZERO_PAGE);
        assert_eq!(tl.get_rel_page_at_lsn(r, 5, Lsn(0x1FF)).unwrap(), ZERO_PAGE);
        assert!(matches!(
            tl.get_rel_page_at_lsn(rel(5, 1, 0), 0, Lsn(0x1FF)),
            Err(DatadirError::RelNotFound { .. })
        ));
        assert_eq!(tl.versions(rel_block_to_key(r, 0)).len(), 2);
    }

    #[test]
    fn drop_db_hides_relations() {
        let mut tl = MemTimeline::new();
        let mut m = DatadirModification::new(&mut tl, Lsn(0x10));
        m.create_rel(rel(5, 10, 0), 3).unwrap();
        m.put_relmap_file(1663, 5, Bytes::from_static(&[7; 512]))
            .unwrap();
        m.commit().unwrap();
        m.set_lsn(Lsn(0x20)).unwrap();
        m.drop_db(1663, 5).unwrap();
        m.commit().unwrap();
        assert_eq!(
            tl.list_dbdirs(Lsn(0x10)).unwrap().get(&(1663, 5)),
            Some(&true)
        );
        assert!(tl.list_dbdirs(Lsn(0x20)).unwrap().is_empty());
        assert!(tl.list_rels(1663, 5, Lsn(0x20)).unwrap().is_empty());
        assert_eq!(tl.get_rel_size(rel(5, 10, 0), Lsn(0x20)).unwrap(), None);
        // Re-creating the database starts with an empty relation directory.
        let mut m = DatadirModification::new(&mut tl, Lsn(0x30));
        m.create_rel(rel(5, 11, 0), 0).unwrap();
        m.commit().unwrap();
        let rels = tl.list_rels(1663, 5, Lsn(0x30)).unwrap();
        assert_eq!(rels.into_iter().collect::<Vec<_>>(), vec![rel(5, 11, 0)]);
        assert_eq!(
            tl.list_dbdirs(Lsn(0x30)).unwrap().get(&(1663, 5)),
            Some(&false)
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Create(u32, u8, u32),
        Resize(u32, u8, u32),
        Drop(u32, u8),
        DropDb,
        Commit,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..6, 0u8..3, 0u32..5).prop_map(|(r, f, n)| Op::Create(r + 1, f, n)),
            (0u32..6, 0u8..3, 0u32..5).prop_map(|(r, f, n)| Op::Resize(r + 1, f, n)),
            (0u32..6, 0u8..3).prop_map(|(r, f)| Op::Drop(r + 1, f)),
            Just(Op::DropDb),
            Just(Op::Commit),
        ]
    }

    proptest! {
        /// Random creates, resizes and drops against a map model: at every LSN the listed
        /// relations, their sizes and the collected key space agree with the model.
        #[test]
        fn matches_model(ops in proptest::collection::vec(op(), 1..40)) {
            let mut tl = MemTimeline::new();
            let mut model: BTreeMap<RelTag, u32> = BTreeMap::new();
            let mut snapshots = Vec::new();
            let mut m = DatadirModification::new(&mut tl, Lsn(0x10));
            for (i, op) in ops.iter().enumerate() {
                m.set_lsn(Lsn(0x10 * (i as u64 + 1))).unwrap();
                match *op {
                    Op::Create(r, f, n) => {
                        m.create_rel(rel(5, r, f), n).unwrap();
                        model.insert(rel(5, r, f), n);
                    }
                    Op::Resize(r, f, n) => {
                        if model.contains_key(&rel(5, r, f)) {
                            m.set_rel_size(rel(5, r, f), n);
                            model.insert(rel(5, r, f), n);
                        }
                    }
                    Op::Drop(r, f) => {
                        m.drop_rels(&[rel(5, r, f)]).unwrap();
                        model.remove(&rel(5, r, f));
                    }
                    Op::DropDb => {
                        m.drop_db(1663, 5).unwrap();
                        model.clear();
                    }
                    Op::Commit => m.commit().unwrap(),
                }
                snapshots.push((m.lsn(), model.clone()));
            }
            m.commit().unwrap();
            for (lsn, model) in snapshots {
                let rels = tl.list_rels(1663, 5, lsn).unwrap();
                prop_assert_eq!(rels.iter().copied().collect::<Vec<_>>(), model.keys().copied().collect::<Vec<_>>());
                for r in 1..=6 {
                    for f in 0..3 {
                        prop_assert_eq!(tl.get_rel_size(rel(5, r, f), lsn).unwrap(), model.get(&rel(5, r, f)).copied());
                    }
                }
                let ks = tl.collect_keyspace(lsn).unwrap();
                let blocks: u64 = model.values().map(|n| u64::from(*n)).sum();
                let db_keys = if tl.list_dbdirs(lsn).unwrap().is_empty() { 0 } else { 1 };
                let dbdir_key = u64::from(tl.get(DBDIR_KEY, lsn).unwrap().is_some());
                prop_assert_eq!(ks.total_keys(), blocks + model.len() as u64 + db_keys + dbdir_key);
            }
        }
    }
}

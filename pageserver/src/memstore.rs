//! An in-memory timeline: every version of every key in a `BTreeMap`. Used by tests and
//! tools; it materializes values itself for everything except PostgreSQL WAL records (which
//! need `postgres --wal-redo`), so reading a page whose newest versions include such a record
//! gives [`ReadError::Reconstruct`].

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use pageserver_api::key::Key;
use pageserver_api::value::{NeonWalRecord, Value};
use utils::lsn::Lsn;

use crate::apply_neon::apply_neon_record;
use crate::storage_api::{ReadError, TimelineRead, TimelineWrite, WriteError};

/// Versions of every key, and the LSN up to which the timeline is complete.
#[derive(Debug, Default, Clone)]
pub struct MemTimeline {
    values: BTreeMap<Key, BTreeMap<Lsn, Value>>,
    last_record_lsn: Lsn,
    prev_record_lsn: Lsn,
}

impl MemTimeline {
    pub fn new() -> MemTimeline {
        MemTimeline::default()
    }

    /// The last LSN passed to [`TimelineWrite::finish_write`].
    pub fn last_record_lsn(&self) -> Lsn {
        self.last_record_lsn
    }

    /// The prev-record LSN passed with it.
    pub fn prev_record_lsn(&self) -> Lsn {
        self.prev_record_lsn
    }

    /// Every version of `key`, oldest first.
    pub fn versions(&self, key: Key) -> Vec<(Lsn, Value)> {
        self.values
            .get(&key)
            .map(|v| v.iter().map(|(l, v)| (*l, v.clone())).collect())
            .unwrap_or_default()
    }

    /// Keys with at least one version in `range`.
    pub fn keys_in(&self, range: Range<Key>) -> Vec<Key> {
        self.values.range(range).map(|(k, _)| *k).collect()
    }

    /// Number of stored versions.
    pub fn version_count(&self) -> usize {
        self.values.values().map(BTreeMap::len).sum()
    }
}

impl TimelineRead for MemTimeline {
    fn get(&self, key: Key, lsn: Lsn) -> Result<Option<Bytes>, ReadError> {
        let Some(versions) = self.values.get(&key) else {
            return Ok(None);
        };
        let mut records: Vec<&NeonWalRecord> = Vec::new();
        let mut base: Option<&Bytes> = None;
        for (_, value) in versions.range(..=lsn).rev() {
            match value {
                Value::Image(img) => {
                    base = Some(img);
                    break;
                }
                Value::WalRecord(rec) => records.push(rec),
            }
        }
        let fail = |reason: String| ReadError::Reconstruct { key, lsn, reason };
        match (base, records.is_empty()) {
            (None, true) => Ok(None),
            (Some(img), true) => Ok(Some(img.clone())),
            (None, false) => Err(fail("WAL records without a base image".into())),
            (Some(img), false) => {
                let mut page = BytesMut::from(&img[..]);
                for rec in records.into_iter().rev() {
                    apply_neon_record(key, &mut page, rec).map_err(|e| fail(e.to_string()))?;
                }
                Ok(Some(page.freeze()))
            }
        }
    }
}

impl TimelineWrite for MemTimeline {
    fn put_batch(&mut self, batch: Vec<(Key, Lsn, Value)>) -> Result<(), WriteError> {
        if let Some((key, lsn, _)) = batch.iter().find(|(_, lsn, _)| *lsn < self.last_record_lsn) {
            return Err(WriteError::LsnTooOld {
                key: *key,
                lsn: *lsn,
                last_record_lsn: self.last_record_lsn,
            });
        }
        for (key, lsn, value) in batch {
            self.values.entry(key).or_default().insert(lsn, value);
        }
        Ok(())
    }

    fn finish_write(&mut self, last_record_lsn: Lsn, prev_record_lsn: Lsn) {
        self.last_record_lsn = last_record_lsn;
        self.prev_record_lsn = prev_record_lsn;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg_consts::{BLCKSZ, ZERO_PAGE};

    #[test]
    fn newest_image_with_neon_records_applied() {
        let mut tl = MemTimeline::new();
        // CLOG page 0: the commits below apply to it.
        let key = pageserver_api::key::slru_block_to_key(pageserver_api::key::SlruKind::Clog, 0, 0);
        let commit = |xid: u32| {
            Value::WalRecord(NeonWalRecord::ClogSetCommitted {
                xids: vec![xid],
                timestamp: 0,
            })
        };
        tl.put_batch(vec![
            (key, Lsn(0x10), Value::Image(ZERO_PAGE.clone())),
            (key, Lsn(0x20), commit(4)),
            (key, Lsn(0x30), commit(8)),
        ])
        .unwrap();
        assert_eq!(tl.get(key, Lsn(0x8)).unwrap(), None);
        assert_eq!(tl.get(key, Lsn(0x10)).unwrap().unwrap()[1], 0);
        assert_eq!(tl.get(key, Lsn(0x2F)).unwrap().unwrap()[1], 1);
        let page = tl.get(key, Lsn::MAX).unwrap().unwrap();
        assert_eq!((page.len(), page[1], page[2]), (BLCKSZ, 1, 1));
        assert_eq!(tl.get(Key::MIN, Lsn::MAX).unwrap(), None);

        let pg = Value::WalRecord(NeonWalRecord::Postgres {
            will_init: false,
            rec: Bytes::new(),
        });
        tl.put_batch(vec![(key, Lsn(0x40), pg)]).unwrap();
        assert!(matches!(
            tl.get(key, Lsn(0x40)),
            Err(ReadError::Reconstruct { .. })
        ));
        assert!(tl.get(key, Lsn(0x3F)).is_ok());

        tl.finish_write(Lsn(0x40), Lsn(0x38));
        let err = tl
            .put_batch(vec![(key, Lsn(0x39), Value::Image(Bytes::new()))])
            .unwrap_err();
        assert!(matches!(err, WriteError::LsnTooOld { .. }));
        assert_eq!(tl.version_count(), 4);
    }
}

//! In-memory layers: the newest part of a timeline's history, before it is written to disk.
//!
//! An [`InMemoryLayer`] covers the LSNs `[start_lsn, end_lsn)` of every key; while it is
//! *open* its end is unbounded and it accepts new values; [`InMemoryLayer::freeze`] fixes the
//! end and makes it read-only, after which [`InMemoryLayer::write_to_disk`] turns it into one
//! level-0 delta layer file (`Key::MIN..Key::MAX` × `[start_lsn, end_lsn)`).
//!
//! Values are encoded [`Value`]s appended to an [`EphemeralFile`]; the in-memory index maps
//! each key to its versions `(lsn, position, will_init)` in increasing LSN order. The layer
//! has no size limit of its own: the owner freezes it when [`InMemoryLayer::size_bytes`] or
//! the LSN distance reaches its checkpoint distance, which bounds the index too.
//!
//! Methods take `&self` (an internal lock serializes writers against readers), so the layer
//! can be shared as `Arc<InMemoryLayer>` between the layer map, the WAL ingest and readers.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use pageserver_api::key::Key;
use pageserver_api::value::{Value, ValueEncodeError};
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::delta_layer::{DeltaLayerWriter, LsnValue, ReconstructValues};
use crate::ephemeral_file::{BlobPos, EphemeralFile};
use crate::error::LayerError;
use crate::layer_name::LayerDesc;

/// Why an in-memory layer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InMemoryLayerError {
    #[error("in-memory layer starting at {start_lsn} is frozen")]
    Frozen { start_lsn: Lsn },
    #[error("in-memory layer starting at {start_lsn} is not frozen")]
    NotFrozen { start_lsn: Lsn },
    #[error("LSN {lsn} is outside the layer's range {range:?}")]
    LsnOutOfRange { lsn: Lsn, range: Range<Lsn> },
    #[error("put of {key} at {lsn} is older than its newest version at {newest}")]
    LsnNotIncreasing { key: Key, lsn: Lsn, newest: Lsn },
    #[error("freeze at {end_lsn} is not above the start {start_lsn} and newest put {newest:?}")]
    BadFreezeLsn {
        end_lsn: Lsn,
        start_lsn: Lsn,
        newest: Option<Lsn>,
    },
    #[error("Key::MAX cannot be stored (layer key ranges are end-exclusive)")]
    KeyMax,
    #[error("cannot encode value: {0}")]
    Encode(#[from] ValueEncodeError),
    #[error(transparent)]
    Layer(#[from] LayerError),
}

/// One version of a key in the index.
#[derive(Clone, Copy, Debug)]
struct IndexEntry {
    lsn: Lsn,
    pos: BlobPos,
    will_init: bool,
}

#[derive(Debug)]
struct Inner {
    file: EphemeralFile,
    /// Versions of each key, in strictly increasing LSN order.
    index: BTreeMap<Key, Vec<IndexEntry>>,
    end_lsn: Option<Lsn>,
    /// The highest LSN put so far.
    newest_lsn: Option<Lsn>,
    num_values: u64,
}

/// The open or a frozen in-memory layer of a timeline (see the module documentation).
#[derive(Debug)]
pub struct InMemoryLayer {
    tenant_id: TenantId,
    timeline_id: TimelineId,
    start_lsn: Lsn,
    inner: RwLock<Inner>,
}

impl InMemoryLayer {
    /// Creates an open layer starting at `start_lsn`, with its ephemeral file in `dir`.
    pub fn create(
        dir: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        start_lsn: Lsn,
    ) -> Result<Self, InMemoryLayerError> {
        Ok(InMemoryLayer {
            tenant_id,
            timeline_id,
            start_lsn,
            inner: RwLock::new(Inner {
                file: EphemeralFile::create(dir)?,
                index: BTreeMap::new(),
                end_lsn: None,
                newest_lsn: None,
                num_values: 0,
            }),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the index inconsistent with the file
        // in a way readers could observe (entries are added after their blob is written).
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// The end of the layer's LSN range; `None` while it is open.
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.read().end_lsn
    }

    /// The LSN range covered: `[start, end)`, or `[start, Lsn::MAX)` while open.
    pub fn lsn_range(&self) -> Range<Lsn> {
        self.start_lsn..self.end_lsn().unwrap_or(Lsn::MAX)
    }

    pub fn is_frozen(&self) -> bool {
        self.end_lsn().is_some()
    }

    /// Bytes of values stored (the ephemeral file's size).
    pub fn size_bytes(&self) -> u64 {
        self.read().file.len_bytes()
    }

    /// Number of (key, LSN) versions stored.
    pub fn num_values(&self) -> u64 {
        self.read().num_values
    }

    /// The highest LSN put so far.
    pub fn newest_lsn(&self) -> Option<Lsn> {
        self.read().newest_lsn
    }

    /// Stores the version of `key` at `lsn`. LSNs of one key must not decrease; a put at the
    /// same LSN as the key's newest version replaces it (the older bytes stay in the file
    /// unreferenced).
    pub fn put_value(&self, key: Key, lsn: Lsn, value: &Value) -> Result<(), InMemoryLayerError> {
        if key == Key::MAX {
            return Err(InMemoryLayerError::KeyMax);
        }
        let encoded = value.encode_to_vec()?;
        let mut inner = self.write();
        if inner.end_lsn.is_some() {
            return Err(InMemoryLayerError::Frozen {
                start_lsn: self.start_lsn,
            });
        }
        if lsn < self.start_lsn || lsn == Lsn::MAX {
            return Err(InMemoryLayerError::LsnOutOfRange {
                lsn,
                range: self.start_lsn..Lsn::MAX,
            });
        }
        if let Some(last) = inner.index.get(&key).and_then(|v| v.last()) {
            if lsn < last.lsn {
                return Err(InMemoryLayerError::LsnNotIncreasing {
                    key,
                    lsn,
                    newest: last.lsn,
                });
            }
        }
        let pos = inner.file.write_blob(&encoded)?;
        let entry = IndexEntry {
            lsn,
            pos,
            will_init: value.will_init(),
        };
        let versions = inner.index.entry(key).or_default();
        match versions.last_mut() {
            Some(last) if last.lsn == lsn => *last = entry,
            _ => {
                versions.push(entry);
                inner.num_values += 1;
            }
        }
        inner.newest_lsn = inner.newest_lsn.max(Some(lsn));
        Ok(())
    }

    /// The encoded versions of `key` with LSNs in `lsn_range` needed for reconstruction:
    /// from the newest `will_init` one on (all of them if none), oldest first.
    pub fn get_values_reconstruct_data(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<ReconstructValues, InMemoryLayerError> {
        let inner = self.read();
        let Some(versions) = inner.index.get(&key) else {
            return Ok(ReconstructValues::default());
        };
        let from = versions.partition_point(|e| e.lsn < lsn_range.start);
        let to = versions.partition_point(|e| e.lsn < lsn_range.end);
        let in_range = &versions[from..to.max(from)];
        let init = in_range.iter().rposition(|e| e.will_init);
        let values = in_range[init.unwrap_or(0)..]
            .iter()
            .map(|e| {
                Ok(LsnValue {
                    lsn: e.lsn,
                    will_init: e.will_init,
                    value: inner.file.read_blob(e.pos)?,
                })
            })
            .collect::<Result<Vec<_>, LayerError>>()?;
        Ok(ReconstructValues {
            values,
            complete: init.is_some(),
        })
    }

    /// Makes the layer read-only, covering `[start_lsn, end_lsn)`. `end_lsn` must be above
    /// the start and above every LSN put.
    pub fn freeze(&self, end_lsn: Lsn) -> Result<(), InMemoryLayerError> {
        let mut inner = self.write();
        if inner.end_lsn.is_some() {
            return Err(InMemoryLayerError::Frozen {
                start_lsn: self.start_lsn,
            });
        }
        if end_lsn <= self.start_lsn || inner.newest_lsn.is_some_and(|n| n >= end_lsn) {
            return Err(InMemoryLayerError::BadFreezeLsn {
                end_lsn,
                start_lsn: self.start_lsn,
                newest: inner.newest_lsn,
            });
        }
        inner.end_lsn = Some(end_lsn);
        Ok(())
    }

    /// Writes the frozen layer as one L0 delta layer file in `dir` (keys `Key::MIN..Key::MAX`,
    /// LSNs `[start_lsn, end_lsn)`, entries in (key, LSN) order). Returns `None` for a layer
    /// without values (an empty layer file is not written).
    pub fn write_to_disk(&self, dir: &Path) -> Result<Option<LayerDesc>, InMemoryLayerError> {
        let inner = self.read();
        let Some(end_lsn) = inner.end_lsn else {
            return Err(InMemoryLayerError::NotFrozen {
                start_lsn: self.start_lsn,
            });
        };
        if inner.index.is_empty() {
            return Ok(None);
        }
        let mut writer = DeltaLayerWriter::new(
            dir,
            self.tenant_id,
            self.timeline_id,
            Key::MIN,
            self.start_lsn..end_lsn,
        )?;
        for (key, versions) in &inner.index {
            for e in versions {
                let value = inner.file.read_blob(e.pos)?;
                writer.put_value(*key, e.lsn, &value, e.will_init)?;
            }
        }
        Ok(Some(writer.finish(Key::MAX)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use pageserver_api::value::NeonWalRecord;

    fn key(n: u32) -> Key {
        Key {
            field6: n,
            ..Key::MIN
        }
    }

    fn image(s: &str) -> Value {
        Value::Image(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn record(will_init: bool) -> Value {
        Value::WalRecord(NeonWalRecord::Postgres {
            will_init,
            rec: Bytes::from_static(b"rec"),
        })
    }

    fn layer(dir: &Path, start: u64) -> InMemoryLayer {
        InMemoryLayer::create(dir, TenantId([1; 16]), TimelineId([2; 16]), Lsn(start)).unwrap()
    }

    #[test]
    fn reconstruct_data_stops_at_will_init() {
        let dir = tempfile::tempdir().unwrap();
        let l = layer(dir.path(), 10);
        l.put_value(key(1), Lsn(10), &image("a")).unwrap();
        l.put_value(key(1), Lsn(20), &record(false)).unwrap();
        l.put_value(key(1), Lsn(30), &record(true)).unwrap();
        l.put_value(key(1), Lsn(40), &record(false)).unwrap();
        l.put_value(key(2), Lsn(25), &record(false)).unwrap();

        let r = l
            .get_values_reconstruct_data(key(1), Lsn(0)..Lsn(35))
            .unwrap();
        assert!(r.complete);
        let lsns: Vec<_> = r.values.iter().map(|v| v.lsn).collect();
        assert_eq!(lsns, [Lsn(30)]);

        let r = l
            .get_values_reconstruct_data(key(1), Lsn(0)..Lsn(30))
            .unwrap();
        assert!(r.complete);
        let lsns: Vec<_> = r.values.iter().map(|v| v.lsn).collect();
        assert_eq!(lsns, [Lsn(10), Lsn(20)]);
        assert_eq!(Value::decode_bytes(&r.values[0].value).unwrap(), image("a"));

        let r = l
            .get_values_reconstruct_data(key(1), Lsn(15)..Lsn(30))
            .unwrap();
        assert!(!r.complete);
        assert_eq!(r.values.len(), 1);

        let r = l
            .get_values_reconstruct_data(key(2), Lsn(0)..Lsn(100))
            .unwrap();
        assert!(!r.complete && r.values.len() == 1);
        let r = l
            .get_values_reconstruct_data(key(3), Lsn(0)..Lsn(100))
            .unwrap();
        assert!(r.values.is_empty());
        assert_eq!(l.num_values(), 5);
    }

    #[test]
    fn put_rules_and_freeze() {
        let dir = tempfile::tempdir().unwrap();
        let l = layer(dir.path(), 10);
        assert!(matches!(
            l.put_value(key(1), Lsn(9), &image("x")),
            Err(InMemoryLayerError::LsnOutOfRange { .. })
        ));
        l.put_value(key(1), Lsn(20), &image("x")).unwrap();
        assert!(matches!(
            l.put_value(key(1), Lsn(19), &image("y")),
            Err(InMemoryLayerError::LsnNotIncreasing { .. })
        ));
        // Same LSN replaces.
        l.put_value(key(1), Lsn(20), &image("z")).unwrap();
        let r = l
            .get_values_reconstruct_data(key(1), Lsn(0)..Lsn(21))
            .unwrap();
        assert_eq!(Value::decode_bytes(&r.values[0].value).unwrap(), image("z"));
        assert_eq!(l.num_values(), 1);
        assert!(matches!(
            l.put_value(Key::MAX, Lsn(30), &image("x")),
            Err(InMemoryLayerError::KeyMax)
        ));

        assert!(matches!(
            l.write_to_disk(dir.path()),
            Err(InMemoryLayerError::NotFrozen { .. })
        ));
        assert!(matches!(
            l.freeze(Lsn(20)),
            Err(InMemoryLayerError::BadFreezeLsn { .. })
        ));
        l.freeze(Lsn(21)).unwrap();
        assert_eq!(l.lsn_range(), Lsn(10)..Lsn(21));
        assert!(matches!(
            l.put_value(key(2), Lsn(20), &image("x")),
            Err(InMemoryLayerError::Frozen { .. })
        ));
        let desc = l.write_to_disk(dir.path()).unwrap().unwrap();
        assert!(desc.is_l0());
        assert_eq!(desc.lsn_range(), Lsn(10)..Lsn(21));

        let empty = layer(dir.path(), 30);
        empty.freeze(Lsn(31)).unwrap();
        assert!(empty.write_to_disk(dir.path()).unwrap().is_none());
    }
}

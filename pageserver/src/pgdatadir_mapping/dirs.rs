//! Binary encodings of the directory values and size values (our own format, version 1).
//!
//! Every directory value is `version u8 (= 1) | count u32 LE | count entries`, entries
//! strictly increasing (so each set has exactly one encoding), integers little-endian:
//!
//! | value | entry (bytes) |
//! |---|---|
//! | DbDir ([`DbDirectory`]) | `spcnode u32, dbnode u32, has_relmap u8 (0/1)` (9) |
//! | RelDir ([`RelDirectory`]) | `relnode u32, forknum u8` (5) |
//! | SlruDir ([`SlruSegmentDirectory`]) | `segno u32` (4) |
//! | TwoPhaseDir ([`TwoPhaseDirectory`]) | `xid u32` (4) |
//!
//! Relation and SLRU segment sizes are `nblocks u32 LE` (4 bytes); an empty value is a
//! tombstone written when the relation or segment is dropped (a missing key means the same).

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

/// Version byte of the directory encodings.
pub const DIR_FORMAT_VERSION: u8 = 1;
/// Bytes before the entries: version and count.
const DIR_HEADER_BYTES: usize = 5;

/// Why a stored directory or size value does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirDecodeError {
    #[error("{what}: empty value")]
    Empty { what: &'static str },
    #[error("{what}: unknown format version {version}")]
    BadVersion { what: &'static str, version: u8 },
    #[error("{what}: {len_bytes} bytes do not hold {count} entries of {entry_bytes} bytes")]
    BadLength {
        what: &'static str,
        len_bytes: usize,
        count: u64,
        entry_bytes: usize,
    },
    #[error("{what}: entries are not strictly increasing")]
    Unsorted { what: &'static str },
    #[error("{what}: invalid entry value {value}")]
    BadEntry { what: &'static str, value: u64 },
}

/// Databases: (spcnode, dbnode) → whether a relmap file (pg_filenode.map) is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbDirectory {
    pub dbdirs: BTreeMap<(u32, u32), bool>,
}

/// Relation forks of one database: (relnode, forknum).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelDirectory {
    pub rels: BTreeSet<(u32, u8)>,
}

/// Segments of one SLRU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlruSegmentDirectory {
    pub segments: BTreeSet<u32>,
}

/// Prepared transactions with a stored state file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TwoPhaseDirectory {
    pub xids: BTreeSet<u32>,
}

fn encode_dir<E>(
    entries: impl ExactSizeIterator<Item = E>,
    entry_bytes: usize,
    put: impl Fn(&mut BytesMut, E),
) -> Bytes {
    let mut out = BytesMut::with_capacity(DIR_HEADER_BYTES + entries.len() * entry_bytes);
    out.put_u8(DIR_FORMAT_VERSION);
    out.put_u32_le(entries.len() as u32);
    for e in entries {
        put(&mut out, e);
    }
    out.freeze()
}

/// Checks the header and length; returns the entry bytes split into `entry_bytes` chunks.
fn dir_entries<'a>(
    buf: &'a [u8],
    entry_bytes: usize,
    what: &'static str,
) -> Result<std::slice::ChunksExact<'a, u8>, DirDecodeError> {
    let (&version, rest) = buf.split_first().ok_or(DirDecodeError::Empty { what })?;
    if version != DIR_FORMAT_VERSION {
        return Err(DirDecodeError::BadVersion { what, version });
    }
    let bad_len = |count: u64| DirDecodeError::BadLength {
        what,
        len_bytes: buf.len(),
        count,
        entry_bytes,
    };
    let count_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(bad_len(0))?;
    let count = u64::from(u32::from_le_bytes(count_bytes));
    let body = &rest[4..];
    if body.len() as u64 != count * entry_bytes as u64 {
        return Err(bad_len(count));
    }
    Ok(body.chunks_exact(entry_bytes))
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Collects decoded entries, requiring strict increase.
fn collect_sorted<K: Ord + Copy, V>(
    items: impl Iterator<Item = Result<(K, V), DirDecodeError>>,
    what: &'static str,
) -> Result<BTreeMap<K, V>, DirDecodeError> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) = item?;
        if out.last_key_value().is_some_and(|(last, _)| *last >= k) {
            return Err(DirDecodeError::Unsorted { what });
        }
        out.insert(k, v);
    }
    Ok(out)
}

impl DbDirectory {
    const WHAT: &'static str = "database directory";

    pub fn encode(&self) -> Bytes {
        encode_dir(self.dbdirs.iter(), 9, |out, ((spc, db), relmap)| {
            out.put_u32_le(*spc);
            out.put_u32_le(*db);
            out.put_u8(u8::from(*relmap));
        })
    }

    pub fn decode(buf: &[u8]) -> Result<DbDirectory, DirDecodeError> {
        let entries = dir_entries(buf, 9, Self::WHAT)?.map(|e| {
            let has_relmap = match e[8] {
                0 => false,
                1 => true,
                other => {
                    return Err(DirDecodeError::BadEntry {
                        what: Self::WHAT,
                        value: u64::from(other),
                    })
                }
            };
            Ok(((le_u32(&e[0..4]), le_u32(&e[4..8])), has_relmap))
        });
        Ok(DbDirectory {
            dbdirs: collect_sorted(entries, Self::WHAT)?,
        })
    }
}

impl RelDirectory {
    const WHAT: &'static str = "relation directory";

    pub fn encode(&self) -> Bytes {
        encode_dir(self.rels.iter(), 5, |out, (rel, fork)| {
            out.put_u32_le(*rel);
            out.put_u8(*fork);
        })
    }

    pub fn decode(buf: &[u8]) -> Result<RelDirectory, DirDecodeError> {
        let entries = dir_entries(buf, 5, Self::WHAT)?.map(|e| Ok(((le_u32(&e[0..4]), e[4]), ())));
        Ok(RelDirectory {
            rels: collect_sorted(entries, Self::WHAT)?.into_keys().collect(),
        })
    }
}

/// Encodes a set of u32 (SLRU segments, two-phase xids).
fn encode_u32_set(set: &BTreeSet<u32>) -> Bytes {
    encode_dir(set.iter(), 4, |out, v| out.put_u32_le(*v))
}

fn decode_u32_set(buf: &[u8], what: &'static str) -> Result<BTreeSet<u32>, DirDecodeError> {
    let entries = dir_entries(buf, 4, what)?.map(|e| Ok((le_u32(e), ())));
    Ok(collect_sorted(entries, what)?.into_keys().collect())
}

impl SlruSegmentDirectory {
    pub fn encode(&self) -> Bytes {
        encode_u32_set(&self.segments)
    }

    pub fn decode(buf: &[u8]) -> Result<SlruSegmentDirectory, DirDecodeError> {
        Ok(SlruSegmentDirectory {
            segments: decode_u32_set(buf, "SLRU segment directory")?,
        })
    }
}

impl TwoPhaseDirectory {
    pub fn encode(&self) -> Bytes {
        encode_u32_set(&self.xids)
    }

    pub fn decode(buf: &[u8]) -> Result<TwoPhaseDirectory, DirDecodeError> {
        Ok(TwoPhaseDirectory {
            xids: decode_u32_set(buf, "two-phase directory")?,
        })
    }
}

/// Encodes a relation or SLRU segment size.
pub fn encode_nblocks(nblocks: u32) -> Bytes {
    Bytes::copy_from_slice(&nblocks.to_le_bytes())
}

/// The tombstone size value of a dropped relation or segment.
pub fn size_tombstone() -> Bytes {
    Bytes::new()
}

/// Decodes a size value: `None` for the tombstone.
pub fn decode_nblocks(buf: &[u8]) -> Result<Option<u32>, DirDecodeError> {
    match buf.len() {
        0 => Ok(None),
        4 => Ok(Some(le_u32(buf))),
        n => Err(DirDecodeError::BadLength {
            what: "size",
            len_bytes: n,
            count: 1,
            entry_bytes: 4,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut db = DbDirectory::default();
        db.dbdirs.insert((1663, 5), true);
        db.dbdirs.insert((1664, 0), false);
        let enc = db.encode();
        assert_eq!(
            &enc[..],
            &[1, 2, 0, 0, 0, 0x7F, 6, 0, 0, 5, 0, 0, 0, 1, 0x80, 6, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(DbDirectory::decode(&enc).unwrap(), db);
        let rels = RelDirectory {
            rels: [(16384, 0), (16384, 2)].into_iter().collect(),
        };
        assert_eq!(
            &rels.encode()[..],
            &[1, 2, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0x40, 0, 0, 2]
        );
        assert_eq!(encode_nblocks(258).as_ref(), &[2, 1, 0, 0]);
        assert_eq!(decode_nblocks(&[2, 1, 0, 0]), Ok(Some(258)));
        assert_eq!(decode_nblocks(&size_tombstone()), Ok(None));
        assert!(decode_nblocks(&[1, 2, 3]).is_err());
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            RelDirectory::decode(&[]),
            Err(DirDecodeError::Empty { .. })
        ));
        assert!(matches!(
            RelDirectory::decode(&[2, 0, 0, 0, 0]),
            Err(DirDecodeError::BadVersion { version: 2, .. })
        ));
        assert!(matches!(
            RelDirectory::decode(&[1, 1, 0, 0, 0, 1, 2, 3]),
            Err(DirDecodeError::BadLength { .. })
        ));
        assert!(matches!(
            RelDirectory::decode(&[1, 0, 0]),
            Err(DirDecodeError::BadLength { .. })
        ));
        let dup = [1, 2, 0, 0, 0, 7, 0, 0, 0, 7, 0, 0, 0];
        assert!(matches!(
            SlruSegmentDirectory::decode(&dup),
            Err(DirDecodeError::Unsorted { .. })
        ));
        let bad_flag = [1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        assert!(matches!(
            DbDirectory::decode(&bad_flag),
            Err(DirDecodeError::BadEntry { value: 2, .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trips(
            dbs in proptest::collection::btree_map((any::<u32>(), any::<u32>()), any::<bool>(), 0..20),
            rels in proptest::collection::btree_set((any::<u32>(), 0u8..4), 0..50),
            xids in proptest::collection::btree_set(any::<u32>(), 0..50),
        ) {
            let db = DbDirectory { dbdirs: dbs };
            prop_assert_eq!(DbDirectory::decode(&db.encode()).unwrap(), db);
            let r = RelDirectory { rels };
            prop_assert_eq!(RelDirectory::decode(&r.encode()).unwrap(), r);
            let t = TwoPhaseDirectory { xids: xids.clone() };
            prop_assert_eq!(TwoPhaseDirectory::decode(&t.encode()).unwrap(), t);
            let s = SlruSegmentDirectory { segments: xids };
            prop_assert_eq!(SlruSegmentDirectory::decode(&s.encode()).unwrap(), s);
        }

        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = DbDirectory::decode(&buf);
            let _ = RelDirectory::decode(&buf);
            let _ = TwoPhaseDirectory::decode(&buf);
            let _ = decode_nblocks(&buf);
        }
    }
}

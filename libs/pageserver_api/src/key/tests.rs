use super::*;
use proptest::prelude::*;

fn rel(spcnode: u32, dbnode: u32, relnode: u32, forknum: u8) -> RelTag {
    RelTag {
        spcnode,
        dbnode,
        relnode,
        forknum,
    }
}

#[test]
fn bytes_and_text_round_trip_and_order() {
    let a = rel_block_to_key(rel(1663, 5, 16384, 0), 7);
    let b = Key { field6: 8, ..a };
    assert!(a < b);
    assert!(a.to_bytes() < b.to_bytes());
    assert_eq!(Key::from_slice(&a.to_bytes()).unwrap(), a);
    assert_eq!(a.to_string(), "000000067F00000005000040000000000007");
    assert_eq!(a.to_string().parse::<Key>().unwrap(), a);
    assert_eq!(a.next(), b);
    assert_eq!(Key::MAX.next(), Key::MAX);
    let c = Key {
        field6: u32::MAX,
        ..a
    };
    assert_eq!(
        c.next(),
        Key {
            field5: 1,
            field6: 0,
            ..a
        }
    );
    assert_eq!(
        Key::from_slice(&[0u8; 17]),
        Err(KeyParseError::BadLength(17))
    );
    assert!("0".repeat(35).parse::<Key>().is_err());
    assert!("G".repeat(36).parse::<Key>().is_err());
    assert!("é".repeat(18).parse::<Key>().is_err());
}

#[test]
fn well_known_keys() {
    assert_eq!(DBDIR_KEY.kind(), Some(KeyKind::DbDir));
    assert_eq!(TWOPHASEDIR_KEY.kind(), Some(KeyKind::TwoPhaseDir));
    assert_eq!(CONTROLFILE_KEY.kind(), Some(KeyKind::ControlFile));
    assert_eq!(CHECKPOINT_KEY.kind(), Some(KeyKind::Checkpoint));
    assert_eq!(
        CHECKPOINT_KEY.to_string(),
        "030000000000000000000000000000000001"
    );
    let size = rel_size_to_key(rel(1663, 5, 16384, 2));
    assert_eq!(size.to_string(), "000000067F000000050000400002FFFFFFFF");
    assert!(size.is_rel_size_key());
    assert!(!size.is_rel_block_key());
    assert!(size.is_metadata_key());
    assert_eq!(size.to_rel_block(), Err(KeyError::NotRelBlock(size)));
    assert_eq!(rel_dir_to_key(1663, 5).field6, 1);
    assert_eq!(
        slru_block_to_key(SlruKind::MultiXactOffsets, 3, 4).to_slru_block(),
        Ok((SlruKind::MultiXactOffsets, 3, 4))
    );
}

#[test]
fn invalid_oids_do_not_classify_as_objects() {
    // relnode 0 would collide with the relmap/reldir keys; spc 0 with the DbDir key.
    assert_eq!(
        rel_block_to_key(rel(1663, 5, 0, 0), 0).kind(),
        Some(KeyKind::RelMap {
            spcnode: 1663,
            dbnode: 5
        })
    );
    assert!(!rel_block_to_key(rel(1663, 5, 0, 0), 2).is_rel_block_key());
    assert_eq!(relmap_file_key(0, 0).kind(), Some(KeyKind::DbDir));
    assert_eq!(relmap_file_key(0, 5).kind(), None);
    assert_eq!(twophase_file_key(0).kind(), Some(KeyKind::TwoPhaseDir));
    assert_eq!(
        Key {
            field1: 4,
            ..Key::MIN
        }
        .kind(),
        None
    );
    assert_eq!(
        Key {
            field2: 3,
            ..slru_dir_to_key(SlruKind::Clog)
        }
        .kind(),
        None
    );
    assert_eq!(
        Key {
            field6: 2,
            ..CONTROLFILE_KEY
        }
        .kind(),
        None
    );
    assert!(!Key::MAX.is_metadata_key());
}

#[test]
fn ranges_nest() {
    let r = rel(1663, 5, 16384, 1);
    let fork = rel_key_range(r);
    let blocks = rel_block_key_range(r);
    let db = dbdir_key_range(1663, 5);
    let rels = db_rels_key_range(1663, 5);
    assert_eq!(fork.start, blocks.start);
    assert!(blocks.contains(&rel_block_to_key(r, u32::MAX - 1)));
    assert!(!blocks.contains(&rel_size_to_key(r)));
    assert!(fork.contains(&rel_size_to_key(r)));
    assert!(!fork.contains(&rel_block_to_key(RelTag { forknum: 2, ..r }, 0)));
    assert!(!fork.contains(&rel_block_to_key(RelTag { forknum: 0, ..r }, u32::MAX)));
    for inner in [&fork, &rels] {
        assert!(db.start <= inner.start && inner.end <= db.end);
    }
    assert!(db.contains(&relmap_file_key(1663, 5)));
    assert!(db.contains(&rel_dir_to_key(1663, 5)));
    assert!(!rels.contains(&rel_dir_to_key(1663, 5)));
    assert!(!db.contains(&relmap_file_key(1663, 6)));
    assert!(!db.contains(&relmap_file_key(1663, 4)));
    let last = rel(1663, 5, u32::MAX, u8::MAX);
    assert!(db.contains(&rel_size_to_key(last)));
    let clog = slru_key_range(SlruKind::Clog);
    assert!(clog.contains(&slru_dir_to_key(SlruKind::Clog)));
    assert!(clog.contains(&slru_segment_size_to_key(SlruKind::Clog, u32::MAX)));
    assert!(!clog.contains(&slru_dir_to_key(SlruKind::MultiXactMembers)));
    let seg = slru_segment_key_range(SlruKind::Clog, 7);
    assert_eq!(seg.start.distance_to(&seg.end), 1 << 32);
    assert!(twophase_key_range().contains(&twophase_file_key(u32::MAX)));
    assert!(!twophase_key_range().contains(&CONTROLFILE_KEY));
}

#[test]
fn distance_and_add() {
    let a = rel_block_to_key(rel(1663, 5, 16384, 0), 10);
    assert_eq!(a.distance_to(&a.add(5)), 5);
    assert_eq!(a.add(5).distance_to(&a), 0);
    assert_eq!(Key::MIN.distance_to(&Key::MAX), u64::MAX);
    assert_eq!(Key::MAX.add_u64(u64::MAX), Key::MAX);
    let near_max = Key {
        field6: 0,
        ..Key::MAX
    };
    assert_eq!(near_max.add_u64(u64::MAX), Key::MAX);
}

#[test]
fn serde_is_hex_string() {
    let json = serde_json::to_string(&CHECKPOINT_KEY).unwrap();
    assert_eq!(json, "\"030000000000000000000000000000000001\"");
    assert_eq!(serde_json::from_str::<Key>(&json).unwrap(), CHECKPOINT_KEY);
    assert!(serde_json::from_str::<Key>("\"03\"").is_err());
}

fn any_key() -> impl Strategy<Value = Key> {
    (
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        any::<u32>(),
    )
        .prop_map(|(field1, field2, field3, field4, field5, field6)| Key {
            field1,
            field2,
            field3,
            field4,
            field5,
            field6,
        })
}

fn any_slru_kind() -> impl Strategy<Value = SlruKind> {
    prop::sample::select(SlruKind::ALL.to_vec())
}

fn any_kind() -> impl Strategy<Value = KeyKind> {
    let valid_rel = (1u32.., any::<u32>(), 1u32.., any::<u8>())
        .prop_map(|(spc, db, relnode, fork)| rel(spc, db, relnode, fork));
    prop_oneof![
        Just(KeyKind::DbDir),
        (1u32.., any::<u32>()).prop_map(|(spcnode, dbnode)| KeyKind::RelMap { spcnode, dbnode }),
        (1u32.., any::<u32>()).prop_map(|(spcnode, dbnode)| KeyKind::RelDir { spcnode, dbnode }),
        (valid_rel.clone(), 0..u32::MAX).prop_map(|(rel, blkno)| KeyKind::RelBlock { rel, blkno }),
        valid_rel.prop_map(|rel| KeyKind::RelSize { rel }),
        any_slru_kind().prop_map(|kind| KeyKind::SlruDir { kind }),
        (any_slru_kind(), any::<u32>(), 0..u32::MAX)
            .prop_map(|(kind, segno, blkno)| KeyKind::SlruBlock { kind, segno, blkno }),
        (any_slru_kind(), any::<u32>())
            .prop_map(|(kind, segno)| KeyKind::SlruSegmentSize { kind, segno }),
        Just(KeyKind::TwoPhaseDir),
        (1u32..).prop_map(|xid| KeyKind::TwoPhaseFile { xid }),
        Just(KeyKind::ControlFile),
        Just(KeyKind::Checkpoint),
    ]
}

proptest! {
    #[test]
    fn encodings_round_trip(key in any_key()) {
        prop_assert_eq!(Key::from_slice(&key.to_bytes()).unwrap(), key);
        let text = key.to_string();
        prop_assert_eq!(text.len(), 36);
        prop_assert_eq!(text.parse::<Key>().unwrap(), key);
        prop_assert_eq!(text.to_lowercase().parse::<Key>().unwrap(), key);
    }

    #[test]
    fn key_order_is_byte_order(a in any_key(), b in any_key()) {
        prop_assert_eq!(a.cmp(&b), a.to_bytes().cmp(&b.to_bytes()));
        prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
    }

    #[test]
    fn add_and_distance_agree(a in any_key(), n in any::<u64>()) {
        let b = a.add_u64(n);
        prop_assert!(b >= a);
        if b < Key::MAX {
            prop_assert_eq!(a.distance_to(&b), n);
        } else {
            prop_assert!(a.distance_to(&b) <= n);
        }
    }

    #[test]
    fn constructors_classify_back(kind in any_kind()) {
        let key = kind.to_key();
        prop_assert_eq!(key.kind(), Some(kind));
        let is_page = matches!(kind, KeyKind::RelBlock { .. } | KeyKind::SlruBlock { .. });
        prop_assert_eq!(key.is_metadata_key(), !is_page);
        match kind {
            KeyKind::RelBlock { rel, blkno } => {
                prop_assert!(key.is_rel_block_key());
                prop_assert_eq!(key.to_rel_block(), Ok((rel, blkno)));
                prop_assert!(rel_block_key_range(rel).contains(&key));
                prop_assert!(dbdir_key_range(rel.spcnode, rel.dbnode).contains(&key));
                prop_assert!(db_rels_key_range(rel.spcnode, rel.dbnode).contains(&key));
            }
            KeyKind::RelSize { rel } => {
                prop_assert!(key.is_rel_size_key());
                prop_assert_eq!(key.to_rel_size(), Ok(rel));
                prop_assert!(rel_key_range(rel).contains(&key));
                prop_assert!(!rel_block_key_range(rel).contains(&key));
                prop_assert!(db_rels_key_range(rel.spcnode, rel.dbnode).contains(&key));
            }
            KeyKind::SlruBlock { kind, segno, blkno } => {
                prop_assert!(key.is_slru_block_key());
                prop_assert_eq!(key.to_slru_block(), Ok((kind, segno, blkno)));
                prop_assert!(slru_segment_key_range(kind, segno).contains(&key));
            }
            KeyKind::SlruSegmentSize { kind, segno } => {
                prop_assert!(key.is_slru_segment_size_key());
                prop_assert!(slru_segment_key_range(kind, segno).contains(&key));
                prop_assert!(slru_key_range(kind).contains(&key));
            }
            _ => {
                prop_assert!(!key.is_rel_block_key() && !key.is_slru_block_key());
                prop_assert!(key.to_rel_block().is_err() && key.to_slru_block().is_err());
            }
        }
    }

    #[test]
    fn kind_never_misreports(key in any_key()) {
        if let Some(kind) = key.kind() {
            prop_assert_eq!(kind.to_key(), key);
        }
    }
}

//! Delta layers written from random contents must read back exactly as an in-memory model.

mod common;

use common::*;
use pageserver_api::key::Key;
use pageserver_layers::delta_layer::{DeltaEntry, DeltaLayer, DeltaLayerWriter};
use pageserver_layers::error::LayerError;
use pageserver_layers::image_layer::ImageLayer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use utils::lsn::Lsn;

fn model_entries(model: &DeltaModel) -> Vec<DeltaEntry> {
    model
        .iter()
        .map(|((key, lsn), (value, will_init))| DeltaEntry {
            key: *key,
            lsn: *lsn,
            will_init: *will_init,
            value: value.clone().into(),
        })
        .collect()
}

/// Every query of `layer` agrees with `model`.
fn check_against_model(layer: &DeltaLayer, model: &DeltaModel, rng: &mut StdRng) {
    let all: Vec<DeltaEntry> = layer.iter().unwrap().map(Result::unwrap).collect();
    let expected = model_entries(model);
    assert_eq!(all, expected);
    assert_eq!(layer.entry_count(), model.len() as u64);

    let lsns = layer.lsn_range();
    let keys: Vec<Key> = model.keys().map(|(k, _)| *k).collect();
    for i in 0..400 {
        let key = if i % 4 == 0 {
            random_key(rng)
        } else {
            keys[rng.gen_range(0..keys.len())]
        };
        let a = Lsn(rng.gen_range(lsns.start.0..=lsns.end.0));
        let b = Lsn(rng.gen_range(lsns.start.0..=lsns.end.0));
        let range = a.min(b)..a.max(b);
        assert_eq!(
            layer.get_values(key, range.clone()).unwrap(),
            model_values(model, key, range.clone())
        );
        assert_eq!(
            layer.get_reconstruct_values(key, range.clone()).unwrap(),
            model_reconstruct(model, key, range)
        );
        assert_eq!(
            layer.get_values(key, lsns.clone()).unwrap(),
            model_values(model, key, lsns.clone())
        );
        let from: Vec<DeltaEntry> = layer
            .iter_from(key)
            .unwrap()
            .take(20)
            .map(Result::unwrap)
            .collect();
        let first = expected.partition_point(|e| e.key < key);
        let want = &expected[first..(first + 20).min(expected.len())];
        assert_eq!(from, want);
    }
}

#[test]
fn random_round_trips_match_the_model() {
    for seed in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let lsns = 0x100_0000..0x100_0000 + rng.gen_range(10..50_000u64);
        let model = random_delta_model(&mut rng, 3000, lsns.clone());
        let lsn_range = Lsn(lsns.start)..Lsn(lsns.end);
        let desc = write_delta(dir.path(), &model, lsn_range.clone());

        let path = check_written(dir.path(), &desc);
        assert!(desc.is_delta() && desc.is_l0());
        assert_eq!(desc.lsn_range(), lsn_range);

        let layer = DeltaLayer::open(&path).unwrap();
        assert_eq!(layer.desc(), desc);
        assert_eq!(layer.layer_name(), desc.name);
        assert_eq!(layer.key_range(), Key::MIN..Key::MAX);
        assert_eq!(layer.lsn_range(), lsn_range);
        assert_eq!((layer.tenant_id(), layer.timeline_id()), (TENANT, TIMELINE));
        check_against_model(&layer, &model, &mut rng);
    }
}

#[test]
fn single_entry_and_extreme_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(99);
    let key = rel_key(1, 1);
    for value in [vec![], vec![42u8; 100 * 1024]] {
        let mut model = DeltaModel::new();
        model.insert((key, Lsn(10)), (value, true));
        let desc = write_delta(dir.path(), &model, Lsn(10)..Lsn(11));
        let layer = DeltaLayer::open(&dir.path().join(desc.file_name())).unwrap();
        check_against_model(&layer, &model, &mut rng);
        std::fs::remove_file(layer.path()).unwrap();
    }
}

#[test]
fn many_versions_of_one_key_span_many_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut model = DeltaModel::new();
    for k in [rel_key(1, 0), rel_key(1, 1), rel_key(1, 2)] {
        let versions = if k == rel_key(1, 1) { 5000 } else { 3 };
        for i in 0..versions {
            let value: Vec<u8> = (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect();
            model.insert((k, Lsn(100 + i * 3)), (value, i % 1000 == 7));
        }
    }
    let desc = write_delta(dir.path(), &model, Lsn(100)..Lsn(100 + 5000 * 3));
    let layer = DeltaLayer::open(&dir.path().join(desc.file_name())).unwrap();
    check_against_model(&layer, &model, &mut rng);
    let key = rel_key(1, 1);
    let got = layer.get_reconstruct_values(key, Lsn(0)..Lsn::MAX).unwrap();
    assert!(got.complete);
    assert_eq!(got.values.first().unwrap().lsn, Lsn(100 + 4007 * 3));
    assert_eq!(got.values.len(), 5000 - 4007);
    assert_eq!(layer.get_values(key, Lsn(0)..Lsn::MAX).unwrap().len(), 5000);
}

#[test]
fn partial_key_range_layer() {
    let dir = tempfile::tempdir().unwrap();
    let (start, end) = (rel_key(5, 10), rel_key(5, 20));
    let mut w = DeltaLayerWriter::new(dir.path(), TENANT, TIMELINE, start, Lsn(1)..Lsn(9)).unwrap();
    w.put_value(start, Lsn(1), b"a", true).unwrap();
    w.put_value(rel_key(5, 19), Lsn(8), b"b", false).unwrap();
    let estimate = w.estimated_size_bytes();
    let desc = w.finish(end).unwrap();
    assert_eq!(estimate, desc.file_size_bytes);
    assert!(!desc.is_l0());
    assert_eq!(desc.key_range(), start..end);
    let layer = DeltaLayer::open(&dir.path().join(desc.file_name())).unwrap();
    assert_eq!(layer.key_range(), start..end);
    assert_eq!(layer.iter().unwrap().count(), 2);
    assert!(layer
        .get_values(rel_key(5, 19), Lsn(1)..Lsn(8))
        .unwrap()
        .is_empty());
    assert_eq!(
        layer
            .get_values(rel_key(5, 19), Lsn(8)..Lsn(9))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn writer_rejects_bad_input_and_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let start = rel_key(1, 10);
    let mut w =
        DeltaLayerWriter::new(dir.path(), TENANT, TIMELINE, start, Lsn(10)..Lsn(20)).unwrap();
    w.put_value(rel_key(1, 11), Lsn(15), b"x", false).unwrap();
    let errors = [
        w.put_value(rel_key(1, 11), Lsn(15), b"dup", false),
        w.put_value(rel_key(1, 11), Lsn(14), b"older", false),
        w.put_value(rel_key(1, 10), Lsn(19), b"smaller key", false),
    ];
    for err in errors {
        assert!(matches!(err, Err(LayerError::OutOfOrder { .. })), "{err:?}");
    }
    let errors = [
        w.put_value(rel_key(1, 9), Lsn(15), b"before start", false),
        w.put_value(rel_key(1, 12), Lsn(20), b"lsn end", false),
        w.put_value(rel_key(1, 12), Lsn(9), b"lsn start", false),
    ];
    for err in errors {
        assert!(matches!(err, Err(LayerError::OutOfRange { .. })), "{err:?}");
    }
    w.put_value(rel_key(1, 11), Lsn(16), b"y", true).unwrap();
    let err = w.finish(rel_key(1, 11)).unwrap_err();
    assert!(matches!(err, LayerError::OutOfRange { .. }), "{err}");
    // The failed finish consumed the writer and removed its temporary file.
    assert!(list_dir(dir.path()).is_empty());

    let err = DeltaLayerWriter::new(dir.path(), TENANT, TIMELINE, start, Lsn(5)..Lsn(5));
    assert!(matches!(err, Err(LayerError::OutOfRange { .. })));
}

#[test]
fn empty_layers_are_refused_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let w = DeltaLayerWriter::new(dir.path(), TENANT, TIMELINE, Key::MIN, Lsn(1)..Lsn(2)).unwrap();
    assert_eq!(
        list_dir(dir.path()).len(),
        1,
        "the temporary file exists while writing"
    );
    assert!(list_dir(dir.path())[0].ends_with(".___temp"));
    let err = w.finish(Key::MAX).unwrap_err();
    assert!(matches!(err, LayerError::EmptyLayer), "{err}");
    assert!(list_dir(dir.path()).is_empty());

    // Dropping an unfinished writer removes its temporary file too.
    let mut w =
        DeltaLayerWriter::new(dir.path(), TENANT, TIMELINE, Key::MIN, Lsn(1)..Lsn(2)).unwrap();
    w.put_value(rel_key(1, 1), Lsn(1), b"v", true).unwrap();
    drop(w);
    assert!(list_dir(dir.path()).is_empty());
}

#[test]
fn existing_layers_are_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = DeltaModel::new();
    model.insert((rel_key(1, 1), Lsn(3)), (b"first".to_vec(), true));
    let desc = write_delta(dir.path(), &model, Lsn(1)..Lsn(5));
    let mut w =
        DeltaLayerWriter::new(dir.path(), TENANT, TIMELINE, Key::MIN, Lsn(1)..Lsn(5)).unwrap();
    w.put_value(rel_key(1, 1), Lsn(3), b"second", true).unwrap();
    let err = w.finish(Key::MAX).unwrap_err();
    assert!(matches!(err, LayerError::AlreadyExists { .. }), "{err}");
    assert_eq!(list_dir(dir.path()), vec![desc.file_name()]);
    let layer = DeltaLayer::open(&dir.path().join(desc.file_name())).unwrap();
    let values = layer.get_values(rel_key(1, 1), Lsn(0)..Lsn(9)).unwrap();
    assert_eq!(&values[0].value[..], b"first");
}

#[test]
fn kinds_are_not_confused() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = DeltaModel::new();
    model.insert((rel_key(1, 1), Lsn(3)), (b"v".to_vec(), true));
    let desc = write_delta(dir.path(), &model, Lsn(1)..Lsn(5));
    let err = ImageLayer::open(&dir.path().join(desc.file_name())).unwrap_err();
    assert!(matches!(err, LayerError::BadMagic { .. }), "{err}");
    let err = DeltaLayer::open(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(err, LayerError::Io { .. }), "{err}");
}

#[test]
fn three_level_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let mut model = DeltaModel::new();
    for blk in 0..20_000u32 {
        for lsn in [10, 20, 30] {
            model.insert(
                (rel_key(7, blk), Lsn(lsn)),
                (blk.to_be_bytes().to_vec(), lsn == 10),
            );
        }
    }
    let desc = write_delta(dir.path(), &model, Lsn(10)..Lsn(31));
    // 60,000 entries need more than one level of internal nodes (240 entries per node).
    assert!(desc.file_size_bytes > (60_000 / 240 + 2) * 8192);
    let layer = DeltaLayer::open(&dir.path().join(desc.file_name())).unwrap();
    assert_eq!(layer.iter().unwrap().count(), 60_000);
    for _ in 0..500 {
        let key = rel_key(7, rng.gen_range(0..20_001));
        let range = Lsn(rng.gen_range(0..40))..Lsn(rng.gen_range(0..40));
        assert_eq!(
            layer.get_values(key, range.clone()).unwrap(),
            model_values(&model, key, range.clone())
        );
        assert_eq!(
            layer.get_reconstruct_values(key, range.clone()).unwrap(),
            model_reconstruct(&model, key, range)
        );
    }
}

#[test]
fn readers_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<DeltaLayer>();
    assert_send_sync::<ImageLayer>();
}

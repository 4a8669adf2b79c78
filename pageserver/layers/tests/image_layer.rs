//! Image layers written from random contents must read back exactly as an in-memory model.

mod common;

use bytes::Bytes;
use common::*;
use pageserver_api::key::Key;
use pageserver_layers::delta_layer::DeltaLayer;
use pageserver_layers::error::LayerError;
use pageserver_layers::image_layer::{ImageLayer, ImageLayerWriter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use utils::lsn::Lsn;

fn model_entries(model: &ImageModel) -> Vec<(Key, Bytes)> {
    model
        .iter()
        .map(|(k, v)| (*k, Bytes::copy_from_slice(v)))
        .collect()
}

/// Every query of `layer` agrees with `model`.
fn check_against_model(layer: &ImageLayer, model: &ImageModel, rng: &mut StdRng) {
    let expected = model_entries(model);
    let all: Vec<(Key, Bytes)> = layer.iter().unwrap().map(Result::unwrap).collect();
    assert_eq!(all, expected);
    assert_eq!(layer.entry_count(), model.len() as u64);
    for (key, value) in model {
        assert_eq!(layer.get(*key).unwrap().as_deref(), Some(value.as_slice()));
    }
    for _ in 0..300 {
        let key = random_key(rng);
        assert_eq!(
            layer.get(key).unwrap().as_deref(),
            model.get(&key).map(Vec::as_slice)
        );
        let first = expected.partition_point(|(k, _)| *k < key);
        let want = &expected[first..(first + 20).min(expected.len())];
        let got: Vec<(Key, Bytes)> = layer
            .iter_from(key)
            .unwrap()
            .take(20)
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn random_round_trips_match_the_model() {
    for seed in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let count = [1, 2, 900, 2500][seed as usize];
        let model = random_image_model(&mut rng, count);
        let lsn = Lsn(rng.gen_range(1..u64::MAX / 2));
        let desc = write_image(dir.path(), &model, lsn);

        let path = check_written(dir.path(), &desc);
        assert!(!desc.is_delta() && !desc.is_l0());
        assert_eq!(desc.lsn_range(), lsn..Lsn(lsn.0 + 1));

        let layer = ImageLayer::open(&path).unwrap();
        assert_eq!(layer.desc(), desc);
        assert_eq!(layer.layer_name(), desc.name);
        assert_eq!(layer.key_range(), Key::MIN..Key::MAX);
        assert_eq!(layer.lsn(), lsn);
        assert_eq!(layer.lsn_range(), desc.lsn_range());
        assert_eq!((layer.tenant_id(), layer.timeline_id()), (TENANT, TIMELINE));
        check_against_model(&layer, &model, &mut rng);
    }
}

#[test]
fn large_and_empty_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut model = ImageModel::new();
    model.insert(rel_key(1, 0), vec![]);
    model.insert(rel_key(1, 1), (0..100_000).map(|i| i as u8).collect());
    model.insert(rel_key(1, 2), vec![1; 8192]);
    model.insert(
        rel_key(1, 3),
        (0..3_000_000).map(|i| (i / 7) as u8).collect(),
    );
    model.insert(rel_key(1, 4), vec![]);
    let desc = write_image(dir.path(), &model, Lsn(77));
    let layer = ImageLayer::open(&dir.path().join(desc.file_name())).unwrap();
    check_against_model(&layer, &model, &mut rng);
}

#[test]
fn writer_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let range = rel_key(1, 10)..rel_key(1, 20);
    let mut w = ImageLayerWriter::new(dir.path(), TENANT, TIMELINE, range.clone(), Lsn(5)).unwrap();
    w.put_image(rel_key(1, 12), b"a").unwrap();
    for key in [rel_key(1, 12), rel_key(1, 11)] {
        let err = w.put_image(key, b"b").unwrap_err();
        assert!(matches!(err, LayerError::OutOfOrder { .. }), "{err}");
    }
    for key in [rel_key(1, 9), rel_key(1, 20)] {
        let err = w.put_image(key, b"b").unwrap_err();
        assert!(matches!(err, LayerError::OutOfRange { .. }), "{err}");
    }
    w.put_image(rel_key(1, 19), b"z").unwrap();
    assert_eq!(w.num_entries(), 2);
    let desc = w.finish().unwrap();
    assert_eq!(desc.key_range(), range);
    let layer = ImageLayer::open(&dir.path().join(desc.file_name())).unwrap();
    assert_eq!(layer.get(rel_key(1, 12)).unwrap().unwrap(), &b"a"[..]);
    assert_eq!(layer.get(rel_key(1, 13)).unwrap(), None);
    assert_eq!(layer.get(rel_key(2, 13)).unwrap(), None);

    for (range, lsn) in [(range.clone(), Lsn::MAX), (range.end..range.start, Lsn(1))] {
        let err = ImageLayerWriter::new(dir.path(), TENANT, TIMELINE, range, lsn);
        assert!(matches!(err, Err(LayerError::OutOfRange { .. })));
    }
}

#[test]
fn empty_image_layers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let w =
        ImageLayerWriter::new(dir.path(), TENANT, TIMELINE, Key::MIN..Key::MAX, Lsn(5)).unwrap();
    let err = w.finish().unwrap_err();
    assert!(matches!(err, LayerError::EmptyLayer), "{err}");
    assert!(list_dir(dir.path()).is_empty());
}

#[test]
fn existing_layers_are_never_replaced_and_kinds_not_confused() {
    let dir = tempfile::tempdir().unwrap();
    let model = ImageModel::from([(rel_key(1, 1), b"one".to_vec())]);
    let desc = write_image(dir.path(), &model, Lsn(5));
    let mut w =
        ImageLayerWriter::new(dir.path(), TENANT, TIMELINE, Key::MIN..Key::MAX, Lsn(5)).unwrap();
    w.put_image(rel_key(1, 1), b"two").unwrap();
    let err = w.finish().unwrap_err();
    assert!(matches!(err, LayerError::AlreadyExists { .. }), "{err}");
    assert_eq!(list_dir(dir.path()), vec![desc.file_name()]);
    let path = dir.path().join(desc.file_name());
    assert_eq!(
        ImageLayer::open(&path)
            .unwrap()
            .get(rel_key(1, 1))
            .unwrap()
            .unwrap(),
        &b"one"[..]
    );
    let err = DeltaLayer::open(&path).unwrap_err();
    assert!(matches!(err, LayerError::BadMagic { .. }), "{err}");
}

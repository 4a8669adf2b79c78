//! The compaction executor on real files: L0 → L1 merges (splitting, completeness,
//! readability after reopening), image layer creation, publishing, and cleanup on failure.

mod map_support;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::RwLock;

use bytes::Bytes;
use map_support::*;
use pageserver_api::key::Key;
use pageserver_api::keyspace::KeySpace;
use pageserver_api::value::Value;
use pageserver_layers::compaction::{
    compact_l0, create_image_layers, install_update, CompactionError, TimelineDir,
};
use pageserver_layers::delta_layer::{DeltaLayer, DeltaLayerWriter};
use pageserver_layers::image_layer::ImageLayer;
use pageserver_layers::layer_map::{BatchUpdate, LayerMap};
use pageserver_layers::layer_name::{LayerDesc, LayerName};
use pageserver_layers::read_path::{
    collect_values, LayerFileCache, LayerFiles, ReconstructOutcome, ValueReconstructState,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use utils::lsn::Lsn;

/// (key, LSN) → (value bytes, will_init).
type Model = BTreeMap<(Key, Lsn), (Bytes, bool)>;

fn tl(dir: &Path) -> TimelineDir<'_> {
    TimelineDir {
        dir,
        tenant_id: TENANT,
        timeline_id: TIMELINE,
    }
}

/// Writes the entries of `model` with LSNs in `lsns` as an L0 layer.
fn write_l0(dir: &Path, model: &Model, lsns: Range<u64>) -> LayerDesc {
    let lsns = Lsn(lsns.start)..Lsn(lsns.end);
    let mut w = DeltaLayerWriter::new(dir, TENANT, TIMELINE, Key::MIN, lsns.clone()).unwrap();
    for ((k, lsn), (v, init)) in model.iter().filter(|((_, l), _)| lsns.contains(l)) {
        w.put_value(*k, *lsn, v, *init).unwrap();
    }
    w.finish(Key::MAX).unwrap()
}

/// A model over LSNs 1..300 with key `hot` updated at every LSN with 1 KB values.
fn random_model(rng: &mut StdRng, n: usize, hot: Option<Key>) -> Model {
    let mut model = Model::new();
    while model.len() < n {
        let k = key(rng.gen_range(0..400));
        let len = rng.gen_range(5..400);
        let v: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        model.insert(
            (k, Lsn(rng.gen_range(1..300))),
            (v.into(), rng.gen_bool(0.3)),
        );
    }
    if let Some(h) = hot {
        for lsn in 1..300 {
            let v: Vec<u8> = (0..1000).map(|_| rng.gen()).collect();
            model.insert((h, Lsn(lsn)), (v.into(), lsn % 50 == 0));
        }
    }
    model
}

/// Reads every output back from disk, checking names and ranges; returns all entries.
fn read_outputs(dir: &Path, outputs: &[LayerDesc]) -> Model {
    let mut all = Model::new();
    for o in outputs {
        let layer = DeltaLayer::open(&dir.join(o.file_name())).unwrap();
        assert_eq!(layer.desc(), *o);
        for e in layer.iter().unwrap() {
            let e = e.unwrap();
            assert!(o.key_range().contains(&e.key) && o.lsn_range().contains(&e.lsn));
            let dup = all.insert((e.key, e.lsn), (e.value, e.will_init));
            assert!(dup.is_none(), "{} @ {} in two outputs", e.key, e.lsn);
        }
    }
    all
}

/// Checks the shape of L1 outputs: ordered, touching key ranges, or LSN-split single keys.
fn check_shape(outputs: &[LayerDesc], lsn_range: Range<Lsn>, target: u64) {
    for w in outputs.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.key_range() == b.key_range() {
            assert_eq!(a.key_range().end, a.key_range().start.next());
            assert_eq!(
                a.lsn_range().end,
                b.lsn_range().start,
                "LSN-split parts touch"
            );
        } else {
            assert_eq!(a.key_range().end, b.key_range().start, "{a:?} {b:?}");
        }
    }
    for o in outputs {
        assert!(!o.is_l0());
        let single_key = o.key_range().end == o.key_range().start.next();
        if !single_key {
            assert_eq!(o.lsn_range(), lsn_range);
            // Below the target plus one key's history (small here) and the index.
            assert!(o.file_size_bytes <= target + 3 * 8192, "{o:?}");
        }
    }
}

#[test]
fn l0_compaction_output_is_complete_split_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let hot = key(123);
    let model = random_model(&mut rng, 3000, Some(hot));
    let inputs: Vec<LayerDesc> = [1..100, 100..200, 200..300]
        .into_iter()
        .map(|r| write_l0(dir.path(), &model, r))
        .collect();
    let names: Vec<LayerName> = inputs.iter().map(|l| l.name.clone()).collect();
    let target = 64 * 1024;
    // Inputs in any order.
    let shuffled = vec![names[2].clone(), names[0].clone(), names[1].clone()];
    let outputs = compact_l0(tl(dir.path()), &shuffled, target).unwrap();

    assert!(temp_files(dir.path()).is_empty());
    assert!(outputs.len() > 5, "{} outputs", outputs.len());
    check_shape(&outputs, Lsn(1)..Lsn(300), target);
    // The hot key's 300 KB history was split on the LSN axis.
    let hot_parts: Vec<_> = outputs
        .iter()
        .filter(|o| o.key_range().start == hot)
        .collect();
    assert!(hot_parts.len() >= 4, "{hot_parts:?}");
    assert_eq!(hot_parts.first().unwrap().lsn_range().start, Lsn(1));
    assert_eq!(hot_parts.last().unwrap().lsn_range().end, Lsn(300));
    // Every entry, exactly once, readable from the reopened files; inputs untouched.
    assert_eq!(read_outputs(dir.path(), &outputs), model);
    for n in &names {
        assert!(dir.path().join(n.to_string()).exists());
    }
}

#[test]
fn compacted_layers_serve_reads_like_the_inputs() {
    // Values are encoded `Value`s here, read through the layer map and read path.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(12);
    let mut model = Model::new();
    let mut images: BTreeMap<Key, BTreeMap<Lsn, Bytes>> = BTreeMap::new();
    for lsn in 1..300u64 {
        for _ in 0..3 {
            let k = if rng.gen_bool(0.3) {
                key(5)
            } else {
                key(rng.gen_range(0..60))
            };
            let img: Bytes = (0..rng.gen_range(1..700))
                .map(|_| rng.gen())
                .collect::<Vec<u8>>()
                .into();
            let enc = Value::Image(img.clone()).encode_to_vec().unwrap();
            model.insert((k, Lsn(lsn)), (enc.into(), true));
            images.entry(k).or_default().insert(Lsn(lsn), img);
        }
    }
    let inputs: Vec<LayerDesc> = [1..150, 150..300]
        .into_iter()
        .map(|r| write_l0(dir.path(), &model, r))
        .collect();
    let map = RwLock::new(LayerMap::from_layers(inputs.clone()).unwrap());
    let cache = LayerFileCache::new(dir.path(), 4);
    let read_all = |map: &RwLock<LayerMap>, cache: &LayerFileCache| {
        let map = map.read().unwrap();
        for k in (0..61).map(key) {
            for lsn in (0..302).step_by(7) {
                let mut st = ValueReconstructState::new(k);
                let outcome = collect_values(&map, cache, &mut st, Lsn(lsn + 1)).unwrap();
                let want = images
                    .get(&k)
                    .and_then(|v| v.range(..=Lsn(lsn)).next_back().map(|(_, b)| b.clone()));
                match outcome {
                    ReconstructOutcome::Complete => {
                        assert_eq!(st.into_data().img.map(|(_, b)| b), want, "{k} at {lsn}")
                    }
                    other => assert!(want.is_none(), "{k} at {lsn}: {other:?}"),
                }
            }
        }
    };
    read_all(&map, &cache);
    assert!(cache.num_open() > 0);
    let names: Vec<LayerName> = inputs.iter().map(|l| l.name.clone()).collect();
    let outputs = compact_l0(tl(dir.path()), &names, 16 * 1024).unwrap();
    let mut update = BatchUpdate::new();
    names.iter().for_each(|n| {
        update.remove(n.clone());
    });
    outputs.iter().for_each(|o| {
        update.insert(o.clone());
    });
    install_update(&map, Some(&cache), dir.path(), update).unwrap();
    for n in &names {
        assert!(
            !dir.path().join(n.to_string()).exists(),
            "input {n} deleted"
        );
    }
    read_all(&map, &cache);
    assert!(cache.num_open() <= 4);
    // The same after "restarting": a fresh map and cache over the files on disk.
    let map = RwLock::new(LayerMap::from_layers(load_layers(dir.path())).unwrap());
    assert_eq!(map.read().unwrap().num_historic_layers(), outputs.len());
    read_all(&map, &LayerFileCache::new(dir.path(), 4));
}

#[test]
fn failed_compaction_leaves_no_files_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(13);
    let model = random_model(&mut rng, 2000, None);
    let a = write_l0(dir.path(), &model, 1..150);
    let b = write_l0(dir.path(), &model, 150..300);
    // Corrupt the last value of `b` (its blobs are in entry order from offset 8192), which
    // the merge reaches only after writing several outputs.
    let b_entries: Vec<_> = model.iter().filter(|((_, l), _)| l.0 >= 150).collect();
    let value_bytes: u64 = b_entries.iter().map(|(_, (v, _))| 8 + v.len() as u64).sum();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join(b.file_name()))
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, 8192 + value_bytes - 2).unwrap();
    f.write_all_at(&[!byte[0]], 8192 + value_bytes - 2).unwrap();
    drop(f);
    let before = list_dir(dir.path());

    let err = compact_l0(tl(dir.path()), &[a.name.clone(), b.name.clone()], 8 * 1024).unwrap_err();
    match &err {
        CompactionError::Layer(e) => assert!(e.is_corruption(), "{err}"),
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(
        list_dir(dir.path()),
        before,
        "outputs and temporary files removed"
    );
}

#[test]
fn invalid_inputs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(14);
    let model = random_model(&mut rng, 200, None);
    let a = write_l0(dir.path(), &model, 1..200);
    let b = write_l0(dir.path(), &model, 100..300);
    let t = tl(dir.path());
    let before = list_dir(dir.path());
    let invalid = |r: Result<Vec<LayerDesc>, CompactionError>| match r {
        Err(CompactionError::InvalidInput(_)) => {}
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    invalid(compact_l0(t, &[], 8192));
    invalid(compact_l0(t, &[a.name.clone(), b.name.clone()], 8192));
    let img = LayerName::Image {
        key_range: Key::MIN..Key::MAX,
        lsn: Lsn(5),
    };
    invalid(compact_l0(t, &[img], 8192));
    let missing = l0(300..400, 1).name;
    assert!(matches!(
        compact_l0(t, &[missing], 8192),
        Err(CompactionError::Layer(_))
    ));
    // A file of another timeline.
    let other = TimelineDir {
        timeline_id: utils::id::TimelineId([5; 16]),
        ..t
    };
    invalid(compact_l0(other, std::slice::from_ref(&a.name), 8192));
    assert_eq!(list_dir(dir.path()), before);
}

#[test]
fn image_layers_hold_materialized_values() {
    let dir = tempfile::tempdir().unwrap();
    let t = tl(dir.path());
    let keyspace = KeySpace::from_ranges([keys(0..30), keys(50..60)]);
    let value = |k: Key| Bytes::from(format!("value of {k}"));
    // Keys divisible by 3 do not exist; nothing exists in 50..60.
    let materialize = |k: Key| -> Result<Option<Bytes>, std::io::Error> {
        Ok((!k.field6.is_multiple_of(3) && k.field6 < 50).then(|| value(k)))
    };
    let ranges = vec![Key::MIN..key(20), key(20)..key(40), key(40)..Key::MAX];
    let outputs = create_image_layers(t, &ranges, &keyspace, Lsn(77), materialize).unwrap();
    assert_eq!(outputs.len(), 2, "the range without values gets no file");
    assert!(temp_files(dir.path()).is_empty());
    let cache = LayerFileCache::new(dir.path(), 2);
    for (o, r) in outputs.iter().zip(&ranges) {
        assert_eq!(o.key_range(), *r);
        assert_eq!(o.lsn_range(), Lsn(77)..Lsn(78));
        let layer = cache.image(o).unwrap();
        let got: Vec<(Key, Bytes)> = layer.iter().unwrap().map(|e| e.unwrap()).collect();
        let want: Vec<(Key, Bytes)> = keyspace
            .intersect_range(r)
            .keys()
            .filter(|k| !k.field6.is_multiple_of(3) && k.field6 < 50)
            .map(|k| (k, value(k)))
            .collect();
        assert_eq!(got, want);
        // Reopening from disk gives the same.
        let reopened = ImageLayer::open(&dir.path().join(o.file_name())).unwrap();
        assert_eq!(reopened.get(key(1)).unwrap(), layer.get(key(1)).unwrap());
    }

    // A failing materialization removes what this call wrote.
    let before = list_dir(dir.path());
    let failing = |k: Key| -> Result<Option<Bytes>, std::io::Error> {
        if k == key(25) {
            Err(std::io::Error::other("walredo failed"))
        } else {
            Ok(Some(value(k)))
        }
    };
    let err = create_image_layers(t, &ranges, &keyspace, Lsn(90), failing).unwrap_err();
    assert!(
        matches!(err, CompactionError::Materialize { key: k, .. } if k == key(25)),
        "{err}"
    );
    assert_eq!(list_dir(dir.path()), before);
}

#[test]
fn refused_updates_delete_only_the_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(15);
    let model = random_model(&mut rng, 100, None);
    let a = write_l0(dir.path(), &model, 1..300);
    let map = RwLock::new(LayerMap::from_layers([a.clone()]).unwrap());
    let outputs = compact_l0(tl(dir.path()), std::slice::from_ref(&a.name), 1 << 20).unwrap();
    assert_eq!(outputs.len(), 1);
    // Removing a layer the map does not have: refused, the new file is removed, `a` stays.
    let mut update = BatchUpdate::new();
    update
        .insert(outputs[0].clone())
        .remove(l0(300..400, 1).name);
    assert!(install_update(&map, None, dir.path(), update).is_err());
    assert!(!dir.path().join(outputs[0].file_name()).exists());
    assert!(dir.path().join(a.file_name()).exists());
    assert_eq!(map.read().unwrap().snapshot(), vec![a.clone()]);
    // Inserting a layer the map already has: refused, and the map's file is kept.
    let mut update = BatchUpdate::new();
    update.insert(a.clone());
    assert!(install_update(&map, None, dir.path(), update).is_err());
    assert!(dir.path().join(a.file_name()).exists());
}

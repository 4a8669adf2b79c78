//! Layer map search, batch updates and coverage helpers over synthetic layers (no files).

mod map_support;

use std::sync::Arc;

use map_support::*;
use pageserver_api::key::Key;
use pageserver_layers::inmemory_layer::InMemoryLayer;
use pageserver_layers::layer_map::{
    count_deltas, image_coverage, BatchUpdate, LayerMap, LayerMapError, SearchLayer, SearchResult,
};
use pageserver_layers::layer_name::{LayerDesc, LayerName};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use utils::lsn::Lsn;

fn map_of(layers: &[LayerDesc]) -> LayerMap {
    LayerMap::from_layers(layers.iter().cloned()).unwrap()
}

/// (layer name, floor) of a historic search result.
fn found(r: Option<SearchResult>) -> Option<(LayerName, u64)> {
    r.map(|r| match r.layer {
        SearchLayer::Historic(d) => (d.name, r.lsn_floor.0),
        SearchLayer::InMemory(l) => panic!("unexpected in-memory layer at {}", l.start_lsn()),
    })
}

#[test]
fn image_preferred_when_at_least_as_new() {
    let d = delta(keys(0..100), 100..200);
    let img_mid = image(keys(0..50), 150);
    let img_top = image(keys(50..100), 199);
    let map = map_of(&[d.clone(), img_mid.clone(), img_top.clone()]);

    // Above everything: key 10 has the delta (newer than the image at 150).
    assert_eq!(
        found(map.search(key(10), Lsn(300))),
        Some((d.name.clone(), 151))
    );
    // Continuing at the floor finds the image exactly.
    assert_eq!(
        found(map.search(key(10), Lsn(151))),
        Some((img_mid.name.clone(), 150))
    );
    // Below the image: the delta again, down to its start.
    assert_eq!(
        found(map.search(key(10), Lsn(150))),
        Some((d.name.clone(), 100))
    );
    assert_eq!(found(map.search(key(10), Lsn(100))), None);
    // Key 60: the image at 199 ends where the delta ends: it wins.
    assert_eq!(
        found(map.search(key(60), Lsn(300))),
        Some((img_top.name.clone(), 199))
    );
    assert_eq!(
        found(map.search(key(60), Lsn(199))),
        Some((d.name.clone(), 100))
    );
    // Outside every layer.
    assert_eq!(found(map.search(key(100), Lsn(300))), None);
    assert_eq!(found(map.search(Key::MIN, Lsn(300))), None);
}

#[test]
fn l0_and_l1_layers_interleave_by_lsn() {
    let l1a = delta(keys(0..10), 10..50);
    let l1b = delta(keys(10..20), 10..50);
    let l0 = l0(50..60, 1);
    let img = image(Key::MIN..Key::MAX, 5);
    let map = map_of(&[l1a.clone(), l1b.clone(), l0.clone(), img.clone()]);
    assert_eq!(
        found(map.search(key(3), Lsn(100))),
        Some((l0.name.clone(), 50))
    );
    assert_eq!(
        found(map.search(key(3), Lsn(50))),
        Some((l1a.name.clone(), 10))
    );
    assert_eq!(
        found(map.search(key(15), Lsn(50))),
        Some((l1b.name.clone(), 10))
    );
    assert_eq!(
        found(map.search(key(15), Lsn(10))),
        Some((img.name.clone(), 5))
    );
    assert_eq!(
        found(map.search(key(30), Lsn(50))),
        Some((img.name.clone(), 5))
    );
    assert_eq!(found(map.search(key(30), Lsn(5))), None);
}

/// (start LSN, floor) of an in-memory search result for key 1.
fn in_memory(map: &LayerMap, end: u64) -> Option<(u64, u64)> {
    match map.search(key(1), Lsn(end)) {
        Some(SearchResult {
            layer: SearchLayer::InMemory(l),
            lsn_floor,
        }) => Some((l.start_lsn().0, lsn_floor.0)),
        _ => None,
    }
}

#[test]
fn in_memory_layers_are_searched_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut map = map_of(&[l0(10..20, 1)]);
    let frozen = Arc::new(InMemoryLayer::create(dir.path(), TENANT, TIMELINE, Lsn(20)).unwrap());
    map.install_open_layer(Arc::clone(&frozen)).unwrap();
    assert!(matches!(
        map.install_open_layer(Arc::clone(&frozen)),
        Err(LayerMapError::OpenLayerExists)
    ));
    map.freeze_open_layer(Lsn(30)).unwrap().unwrap();
    let open = Arc::new(InMemoryLayer::create(dir.path(), TENANT, TIMELINE, Lsn(25)).unwrap());
    assert!(matches!(
        map.install_open_layer(open),
        Err(LayerMapError::OpenLayerTooOld { .. })
    ));
    let open = Arc::new(InMemoryLayer::create(dir.path(), TENANT, TIMELINE, Lsn(30)).unwrap());
    map.install_open_layer(Arc::clone(&open)).unwrap();

    assert_eq!(in_memory(&map, u64::MAX), Some((30, 30)));
    assert_eq!(in_memory(&map, 31), Some((30, 30)));
    assert_eq!(in_memory(&map, 30), Some((20, 20)));
    assert_eq!(in_memory(&map, 20), None);
    assert!(map.search(key(1), Lsn(20)).is_some(), "the L0 below");

    // An image at an LSN inside the open layer (as image creation at the last record LSN
    // makes): the open layer above it, then the image.
    let img = image(Key::MIN..Key::MAX, 35);
    let mut update = BatchUpdate::new();
    update.insert(img.clone());
    map.apply(update).unwrap();
    assert_eq!(in_memory(&map, 100), Some((30, 36)));
    assert_eq!(
        found(map.search(key(1), Lsn(36))),
        Some((img.name.clone(), 35))
    );
    assert_eq!(in_memory(&map, 35), Some((30, 30)));

    // Flushing the frozen layer: replaced by its L0 in one update.
    let flushed = l0(20..30, 1);
    let mut update = BatchUpdate::new();
    update.insert(flushed.clone()).flushed_frozen_layer(Lsn(29));
    assert!(matches!(
        map.apply(update),
        Err(LayerMapError::FrozenLayerMismatch { .. })
    ));
    assert!(
        !map.contains(&flushed.name),
        "a refused update changes nothing"
    );
    let mut update = BatchUpdate::new();
    update.insert(flushed.clone()).flushed_frozen_layer(Lsn(30));
    map.apply(update).unwrap();
    assert_eq!(map.frozen_layers().count(), 0);
    assert_eq!(found(map.search(key(1), Lsn(30))), Some((flushed.name, 20)));
}

#[test]
fn batch_updates_are_all_or_nothing() {
    let a = l0(10..20, 1);
    let b = l0(20..30, 1);
    let mut map = map_of(std::slice::from_ref(&a));
    let mut update = BatchUpdate::new();
    update.insert(b.clone()).remove(b.name.clone());
    assert!(matches!(
        map.apply(update),
        Err(LayerMapError::UnknownLayer(_))
    ));
    let mut update = BatchUpdate::new();
    update.insert(b.clone()).insert(b.clone());
    assert!(matches!(
        map.apply(update),
        Err(LayerMapError::DuplicateLayer(_))
    ));
    let mut update = BatchUpdate::new();
    update.remove(a.name.clone()).remove(a.name.clone());
    assert!(matches!(
        map.apply(update),
        Err(LayerMapError::UnknownLayer(_))
    ));
    let mut update = BatchUpdate::new();
    update.remove(a.name.clone()).insert(a.clone());
    assert!(matches!(
        map.apply(update),
        Err(LayerMapError::DuplicateLayer(_))
    ));
    assert_eq!(map.snapshot(), vec![a.clone()]);

    let l1 = delta(keys(0..5), 10..30);
    let mut update = BatchUpdate::new();
    update
        .remove(a.name.clone())
        .insert(b.clone())
        .insert(l1.clone());
    map.apply(update).unwrap();
    assert_eq!(map.snapshot(), vec![l1, b]);
    assert!(!map.contains(&a.name));
}

/// The search rule applied by brute force over all layers.
fn reference_search(layers: &[LayerDesc], key: Key, end_lsn: Lsn) -> Option<(LayerName, u64)> {
    let covering = |d: &&LayerDesc| d.key_range().contains(&key) && d.lsn_range().start < end_lsn;
    let delta = layers
        .iter()
        .filter(|d| d.is_delta())
        .filter(covering)
        .max_by_key(|d| (d.lsn_range().start, d.lsn_range().end));
    let image = layers
        .iter()
        .filter(|d| !d.is_delta())
        .filter(covering)
        .max_by_key(|d| d.lsn_range().start);
    match (delta, image) {
        (None, None) => None,
        (None, Some(i)) => Some((i.name.clone(), i.lsn_range().start.0)),
        (Some(d), None) => Some((d.name.clone(), d.lsn_range().start.0)),
        (Some(d), Some(i)) => {
            let (dr, ir) = (d.lsn_range(), i.lsn_range());
            if ir.end >= dr.end || ir.end == end_lsn {
                Some((i.name.clone(), ir.start.0))
            } else {
                Some((d.name.clone(), dr.start.max(ir.end).0))
            }
        }
    }
}

#[test]
fn index_agrees_with_brute_force_on_random_maps() {
    let mut rng = StdRng::seed_from_u64(0x5EA7C4);
    for _ in 0..20 {
        let mut layers = Vec::new();
        let mut starts = std::collections::HashSet::new();
        for _ in 0..rng.gen_range(1..300) {
            let a = rng.gen_range(0..200u32);
            let b = rng.gen_range(a + 1..=201);
            let k = if rng.gen_bool(0.1) {
                Key::MIN..Key::MAX
            } else {
                keys(a..b)
            };
            let s = rng.gen_range(1..1000u64);
            // Distinct starts: no two layers of a kind tie (a consistent map has none).
            let is_image = rng.gen_bool(0.3);
            if !starts.insert((is_image, s)) {
                continue;
            }
            let d = if is_image {
                image(k, s)
            } else {
                delta(k, s..s + rng.gen_range(1..100))
            };
            layers.push(d);
        }
        let map = map_of(&layers);
        for _ in 0..2000 {
            let k = key(rng.gen_range(0..202));
            let end = Lsn(rng.gen_range(0..1200));
            assert_eq!(
                found(map.search(k, end)),
                reference_search(&layers, k, end),
                "{k} below {end}"
            );
        }
    }
}

#[test]
fn search_scales_to_thousands_of_layers() {
    // 50 generations of 100 L1 layers over disjoint key ranges, plus images and L0s.
    let mut layers = Vec::new();
    for g in 0..50u64 {
        for p in 0..100u32 {
            layers.push(delta(keys(p * 10..p * 10 + 10), g * 100 + 1..g * 100 + 101));
        }
        if g % 10 == 0 {
            layers.push(image(keys(0..1000), g * 100 + 50));
        }
    }
    for g in 0..20u64 {
        layers.push(l0(5001 + g * 10..5011 + g * 10, 1));
    }
    let map = map_of(&layers);
    assert_eq!(map.num_historic_layers(), 5025);
    let started = std::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..2_000 {
        let k = key(rng.gen_range(0..1000));
        let end = Lsn(rng.gen_range(1..5300));
        assert_eq!(found(map.search(k, end)), reference_search(&layers, k, end));
    }
    // The brute force dominates; the point is that the index gives the same answers.
    assert!(started.elapsed().as_secs() < 120);
}

#[test]
fn coverage_and_delta_counts() {
    let layers = vec![
        image(keys(0..50), 100),
        image(keys(50..100), 300),
        delta(keys(0..100), 101..200),
        delta(keys(0..30), 200..300),
        delta(keys(0..100), 300..400),
        l0(400..500, 1),
    ];
    let cov = image_coverage(&layers, &keys(0..120), Lsn(1000));
    assert_eq!(
        cov,
        vec![
            (keys(0..50), Some(Lsn(100))),
            (keys(50..100), Some(Lsn(300))),
            (keys(100..120), None)
        ]
    );
    let cov = image_coverage(&layers, &keys(0..120), Lsn(300));
    assert_eq!(
        cov,
        vec![(keys(0..50), Some(Lsn(100))), (keys(50..120), None)]
    );

    // Keys 0..30: three deltas above the image at 100; the L0 does not count for a partial
    // range, but does for the whole key space.
    assert_eq!(count_deltas(&layers, &keys(0..100), Lsn(1000)), 3);
    assert_eq!(count_deltas(&layers, &keys(30..50), Lsn(1000)), 2);
    assert_eq!(count_deltas(&layers, &keys(50..100), Lsn(1000)), 1);
    assert_eq!(count_deltas(&layers, &keys(50..100), Lsn(300)), 1);
    assert_eq!(count_deltas(&layers, &(Key::MIN..Key::MAX), Lsn(1000)), 4);
    // Below LSN 200 only the first delta has started.
    assert_eq!(count_deltas(&layers, &keys(0..100), Lsn(200)), 1);
    assert_eq!(count_deltas(&layers, &keys(5..5), Lsn(1000)), 0);
    let map = map_of(&layers);
    assert_eq!(map.count_deltas(&keys(0..100), Lsn(1000)), 3);
    assert_eq!(map.image_coverage(&keys(0..10), Lsn(1000)).len(), 1);
}

//! The compaction and image-creation planners on synthetic layer snapshots (no I/O).

mod map_support;

use map_support::*;
use pageserver_api::key::Key;
use pageserver_api::keyspace::KeySpace;
use pageserver_layers::layer_map::{BatchUpdate, LayerMap};
use pageserver_layers::layer_name::LayerName;
use pageserver_layers::planner::{image_partitions, plan_image_layers, plan_l0_compaction};
use utils::lsn::Lsn;

const MIB: u64 = 1024 * 1024;

fn names(layers: &[pageserver_layers::layer_name::LayerDesc]) -> Vec<LayerName> {
    layers.iter().map(|l| l.name.clone()).collect()
}

#[test]
fn l0_compaction_waits_for_the_threshold() {
    let l0s: Vec<_> = (0..4).map(|i| l0(i * 10 + 1..i * 10 + 11, MIB)).collect();
    assert_eq!(plan_l0_compaction(&l0s, 5, 10, 128 * MIB), None);
    assert_eq!(plan_l0_compaction(&[], 0, 10, 128 * MIB), None);
    let plan = plan_l0_compaction(&l0s, 4, 10, 128 * MIB).unwrap();
    assert_eq!(plan.inputs, names(&l0s));
    assert_eq!(plan.lsn_range, Lsn(1)..Lsn(41));
    assert_eq!(plan.input_bytes, 4 * MIB);
}

#[test]
fn l0_compaction_takes_the_oldest_contiguous_run() {
    // Given in shuffled order, with L1 layers and images around that do not count.
    let a = l0(1..11, MIB);
    let b = l0(11..21, MIB);
    let c = l0(25..31, MIB); // gap before it
    let d = l0(31..41, MIB);
    let snapshot = vec![
        d.clone(),
        delta(keys(0..10), 1..100),
        b.clone(),
        image(Key::MIN..Key::MAX, 50),
        c.clone(),
        a.clone(),
    ];
    let plan = plan_l0_compaction(&snapshot, 3, 10, 128 * MIB).unwrap();
    assert_eq!(plan.inputs, names(&[a.clone(), b.clone()]));
    assert_eq!(plan.lsn_range, Lsn(1)..Lsn(21));
    // Only L0s count towards the threshold.
    assert_eq!(plan_l0_compaction(&snapshot, 5, 10, 128 * MIB), None);

    // The upper limit caps the run.
    let plan = plan_l0_compaction(&snapshot, 1, 1, 128 * MIB).unwrap();
    assert_eq!(plan.inputs, names(std::slice::from_ref(&a)));

    // Once the run is done, the next one starts after the gap.
    let rest = vec![c.clone(), d.clone()];
    let plan = plan_l0_compaction(&rest, 2, 10, 128 * MIB).unwrap();
    assert_eq!(plan.inputs, names(&rest));
    assert_eq!(plan.lsn_range, Lsn(25)..Lsn(41));

    // The update replaces the inputs with the outputs.
    let map = LayerMap::from_layers(snapshot.clone()).unwrap();
    let outputs = vec![delta(keys(0..5), 1..21), delta(keys(5..9), 1..21)];
    let plan = plan_l0_compaction(&snapshot, 2, 10, 128 * MIB).unwrap();
    let update: BatchUpdate = plan.batch_update(&outputs);
    assert_eq!(update.removes(), &names(&[a, b])[..]);
    assert_eq!(update.inserts(), &outputs[..]);
    let mut map = map;
    map.apply(update).unwrap();
    assert_eq!(map.num_historic_layers(), snapshot.len());
}

#[test]
fn l0_compaction_input_is_capped_by_size() {
    // Target 10 MiB × limit 3 = 30 MiB: 16 + 16 reaches it, the third layer waits.
    let l0s: Vec<_> = (0..5)
        .map(|i| l0(i * 10 + 1..i * 10 + 11, 16 * MIB))
        .collect();
    let plan = plan_l0_compaction(&l0s, 2, 3, 10 * MIB).unwrap();
    assert_eq!(plan.inputs.len(), 2);
    // A single huge layer is still compacted on its own.
    let big = vec![l0(1..11, 500 * MIB), l0(11..21, MIB)];
    let plan = plan_l0_compaction(&big, 2, 3, 10 * MIB).unwrap();
    assert_eq!(plan.inputs, names(&big[..1]));
}

#[test]
fn image_partitions_tile_the_key_space() {
    let ks = KeySpace::from_ranges([keys(10..20), keys(30..45), keys(100..101)]);
    assert_eq!(image_partitions(&ks, 1000), vec![Key::MIN..Key::MAX]);
    let parts = image_partitions(&ks, 10);
    assert_eq!(
        parts,
        vec![Key::MIN..key(20), key(20)..key(40), key(40)..Key::MAX]
    );
    assert!(image_partitions(&KeySpace::new(), 10).is_empty());
}

#[test]
fn images_planned_where_deltas_pile_up() {
    let ks = KeySpace::from_ranges([keys(0..100)]);
    // One partition = the whole key space: L0s count.
    let l0s: Vec<_> = (0..3).map(|i| l0(i * 10 + 1..i * 10 + 11, MIB)).collect();
    assert_eq!(
        plan_image_layers(&l0s, &ks, 1000, 3, Lsn(30)),
        vec![Key::MIN..Key::MAX]
    );
    assert!(plan_image_layers(&l0s, &ks, 1000, 4, Lsn(30)).is_empty());
    // Deltas that start after the image LSN are not there yet.
    assert!(plan_image_layers(&l0s, &ks, 1000, 3, Lsn(20)).is_empty());
    // An image at the top covers it all.
    let mut with_image = l0s.clone();
    with_image.push(image(Key::MIN..Key::MAX, 30));
    assert!(plan_image_layers(&with_image, &ks, 1000, 1, Lsn(40)).is_empty());

    // Several partitions (0..50, 50..100): L0s do not count, L1s do.
    let mut snapshot = l0s.clone();
    snapshot.push(image(Key::MIN..Key::MAX, 0));
    for i in 0..3 {
        snapshot.push(delta(keys(0..30), i * 10 + 1..i * 10 + 11));
    }
    snapshot.push(delta(keys(30..100), 1..31));
    let planned = plan_image_layers(&snapshot, &ks, 50, 3, Lsn(30));
    assert_eq!(planned, vec![Key::MIN..key(50)]);
    let planned = plan_image_layers(&snapshot, &ks, 50, 1, Lsn(30));
    assert_eq!(planned, vec![Key::MIN..key(50), key(50)..Key::MAX]);
    // A newer image over keys 0..30 resets their count.
    snapshot.push(image(keys(0..30), 30));
    assert!(plan_image_layers(&snapshot, &ks, 50, 2, Lsn(30)).is_empty());
}

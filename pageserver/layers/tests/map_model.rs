//! Model-based randomized test of the whole layer machinery: puts into in-memory layers,
//! freezing and flushing to L0 files, L0 → L1 compaction, image layer creation and restarts,
//! with reads through the read path compared against a `BTreeMap` model at many LSNs
//! (including old LSNs after compaction).
//!
//! Every value is an image, so reconstruction is "the newest image at or below the LSN".

mod map_support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use map_support::*;
use pageserver_api::key::Key;
use pageserver_api::keyspace::KeySpace;
use pageserver_api::value::Value;
use pageserver_layers::compaction::{compact_l0, create_image_layers, install_update, TimelineDir};
use pageserver_layers::ephemeral_file::is_ephemeral_file_name;
use pageserver_layers::inmemory_layer::InMemoryLayer;
use pageserver_layers::layer_map::{BatchUpdate, LayerMap};
use pageserver_layers::planner::{plan_image_layers, plan_l0_compaction};
use pageserver_layers::read_path::{
    collect_values, LayerFileCache, ReconstructOutcome, ValueReconstructState,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use utils::lsn::Lsn;

const TARGET_SIZE_BYTES: u64 = 16 * 1024;
const PARTITION_KEYS: u64 = 40;
const HOT_KEY: u32 = 7;
const MAX_OPEN_LAYERS: usize = 8;

#[derive(Debug, Default)]
struct Stats {
    puts: usize,
    flushes: usize,
    compactions: usize,
    l1_outputs: usize,
    single_key_outputs: usize,
    image_layers: usize,
    reads: usize,
    reads_found: usize,
    restarts: usize,
}

struct Harness {
    dir: TempDir,
    map: RwLock<LayerMap>,
    cache: LayerFileCache,
    model: BTreeMap<Key, BTreeMap<Lsn, Bytes>>,
    last_lsn: Lsn,
    last_image_lsn: Lsn,
    next_open_start: Option<Lsn>,
    stats: Stats,
}

/// The test's key pool: a dense run and a few far-away keys.
fn random_key(rng: &mut StdRng) -> Key {
    match rng.gen_range(0..10) {
        0 => Key {
            field4: 20000 + rng.gen_range(0..3),
            ..key(rng.gen_range(0..5))
        },
        _ => key(rng.gen_range(0..150)),
    }
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Bytes {
    (0..len).map(|_| rng.gen()).collect::<Vec<u8>>().into()
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerFileCache::new(dir.path(), MAX_OPEN_LAYERS);
        Harness {
            dir,
            map: RwLock::new(LayerMap::new()),
            cache,
            model: BTreeMap::new(),
            last_lsn: Lsn(0x100),
            last_image_lsn: Lsn(0),
            next_open_start: None,
            stats: Stats::default(),
        }
    }

    fn tl(&self) -> TimelineDir<'_> {
        TimelineDir {
            dir: self.dir.path(),
            tenant_id: TENANT,
            timeline_id: TIMELINE,
        }
    }

    fn expected(&self, k: Key, lsn: Lsn) -> Option<Bytes> {
        let versions = self.model.get(&k)?;
        let (_, v) = versions.range(..=lsn).next_back()?;
        Some(v.clone())
    }

    /// The open layer; a new one starts where the previous one was frozen (so L0 layers
    /// are contiguous, as in the pageserver), or at `lsn` for the first one.
    fn open_layer(&self, lsn: Lsn) -> Arc<InMemoryLayer> {
        let mut map = self.map.write().unwrap();
        if let Some(l) = map.open_layer() {
            return Arc::clone(l);
        }
        let start = self.next_open_start.unwrap_or(lsn);
        let l = Arc::new(InMemoryLayer::create(self.dir.path(), TENANT, TIMELINE, start).unwrap());
        map.install_open_layer(Arc::clone(&l)).unwrap();
        l
    }

    /// A batch of puts at a new LSN; the hot key often, with big values.
    fn put(&mut self, rng: &mut StdRng) {
        let lsn = Lsn(self.last_lsn.0 + rng.gen_range(1..10));
        let layer = self.open_layer(lsn);
        let mut batch: Vec<(Key, Bytes)> = (0..rng.gen_range(1..5))
            .map(|_| {
                let len = if rng.gen_bool(0.05) {
                    5000
                } else {
                    rng.gen_range(0..300)
                };
                (random_key(rng), random_bytes(rng, len))
            })
            .collect();
        if rng.gen_bool(0.5) {
            batch.push((key(HOT_KEY), random_bytes(rng, 2000)));
        }
        for (k, v) in batch {
            // A key twice in a batch: the second put replaces the first, as in the model.
            layer.put_value(k, lsn, &Value::Image(v.clone())).unwrap();
            self.model.entry(k).or_default().insert(lsn, v);
            self.stats.puts += 1;
        }
        self.last_lsn = lsn;
    }

    fn freeze(&mut self) {
        let end = Lsn(self.last_lsn.0 + 1);
        if self
            .map
            .write()
            .unwrap()
            .freeze_open_layer(end)
            .unwrap()
            .is_some()
        {
            self.next_open_start = Some(end);
        }
    }

    fn flush_one(&mut self) -> bool {
        let Some(frozen) = self.map.read().unwrap().oldest_frozen_layer().cloned() else {
            return false;
        };
        let end = frozen.end_lsn().unwrap();
        let mut update = BatchUpdate::new();
        if let Some(desc) = frozen.write_to_disk(self.dir.path()).unwrap() {
            assert!(desc.is_l0());
            update.insert(desc);
        }
        update.flushed_frozen_layer(end);
        self.map.write().unwrap().apply(update).unwrap();
        self.stats.flushes += 1;
        true
    }

    fn compact(&mut self) {
        let snapshot = self.map.read().unwrap().snapshot();
        let Some(plan) = plan_l0_compaction(&snapshot, 3, 4, TARGET_SIZE_BYTES) else {
            return;
        };
        let outputs = compact_l0(self.tl(), &plan.inputs, TARGET_SIZE_BYTES).unwrap();
        for o in &outputs {
            assert!(!o.is_l0());
            let lsns = o.lsn_range();
            assert!(plan.lsn_range.start <= lsns.start && lsns.end <= plan.lsn_range.end);
            let keys = o.key_range();
            if keys.end == keys.start.next() {
                self.stats.single_key_outputs += 1;
            } else {
                assert_eq!(lsns, plan.lsn_range, "only single-key layers are LSN-split");
            }
        }
        self.stats.compactions += 1;
        self.stats.l1_outputs += outputs.len();
        let update = plan.batch_update(&outputs);
        install_update(&self.map, Some(&self.cache), self.dir.path(), update).unwrap();
        for name in &plan.inputs {
            assert!(!self.dir.path().join(name.to_string()).exists());
        }
    }

    fn create_images(&mut self) {
        let lsn = self.last_lsn;
        if lsn <= self.last_image_lsn {
            return;
        }
        let snapshot = self.map.read().unwrap().snapshot();
        let keyspace = KeySpace::from_ranges(
            self.model
                .iter()
                .filter(|(_, versions)| versions.range(..=lsn).next().is_some())
                .map(|(k, _)| *k..k.next()),
        );
        let ranges = plan_image_layers(&snapshot, &keyspace, PARTITION_KEYS, 2, lsn);
        if ranges.is_empty() {
            return;
        }
        let outputs = create_image_layers(self.tl(), &ranges, &keyspace, lsn, |k| {
            Ok::<_, Infallible>(self.expected(k, lsn))
        })
        .unwrap();
        self.stats.image_layers += outputs.len();
        let mut update = BatchUpdate::new();
        outputs.into_iter().for_each(|o| {
            update.insert(o);
        });
        install_update(&self.map, Some(&self.cache), self.dir.path(), update).unwrap();
        self.last_image_lsn = lsn;
    }

    /// Reads `k` as of `lsn` through the read path.
    fn read(&self, k: Key, lsn: Lsn) -> Option<Bytes> {
        let map = self.map.read().unwrap();
        let mut state = ValueReconstructState::new(k);
        let end = Lsn(lsn.0 + 1);
        match collect_values(&map, &self.cache, &mut state, end).unwrap() {
            ReconstructOutcome::Complete => {
                let data = state.into_data();
                assert!(data.records.is_empty(), "only images were stored");
                let (img_lsn, img) = data.img.expect("complete without records has an image");
                assert!(img_lsn <= lsn);
                Some(img)
            }
            ReconstructOutcome::NeedAncestor { cont_lsn } => {
                assert!(state.is_empty() && cont_lsn <= end);
                None
            }
            ReconstructOutcome::Missing { image_lsn } => {
                assert!(state.is_empty() && image_lsn <= lsn);
                None
            }
        }
    }

    fn check(&mut self, k: Key, lsn: Lsn) {
        let got = self.read(k, lsn);
        assert_eq!(got, self.expected(k, lsn), "{k} at {lsn}");
        self.stats.reads += 1;
        self.stats.reads_found += usize::from(got.is_some());
    }

    fn check_random(&mut self, rng: &mut StdRng) {
        let k = if rng.gen_bool(0.2) {
            key(HOT_KEY)
        } else {
            random_key(rng)
        };
        let lsn = Lsn(rng.gen_range(0x100..=self.last_lsn.0 + 3));
        self.check(k, lsn);
    }

    /// Flushes everything, drops all in-memory state and reopens the layer files from disk.
    fn restart(&mut self) {
        self.freeze();
        while self.flush_one() {}
        let before = self.map.read().unwrap().snapshot();
        *self.map.write().unwrap() = LayerMap::new();
        let dir = self.dir.path();
        assert!(temp_files(dir).is_empty(), "{:?}", temp_files(dir));
        let ephemeral: Vec<_> = list_dir(dir)
            .into_iter()
            .filter(|n| is_ephemeral_file_name(n))
            .collect();
        assert!(ephemeral.is_empty(), "{ephemeral:?}");
        self.cache = LayerFileCache::new(dir, MAX_OPEN_LAYERS);
        let loaded = LayerMap::from_layers(load_layers(dir)).unwrap();
        assert_eq!(
            loaded.snapshot(),
            before,
            "exactly the map's files are on disk"
        );
        *self.map.write().unwrap() = loaded;
        self.stats.restarts += 1;
    }

    /// Compares every key of the model and some never-written keys at many LSNs.
    fn check_all(&mut self, rng: &mut StdRng) {
        let mut keys: Vec<Key> = self.model.keys().copied().collect();
        keys.extend([key(1000), Key::MIN, key(0).next()]);
        for k in keys {
            let mut lsns: Vec<Lsn> = self
                .model
                .get(&k)
                .map(|v| v.keys().flat_map(|l| [Lsn(l.0 - 1), *l]).collect())
                .unwrap_or_default();
            lsns.extend((0..5).map(|_| Lsn(rng.gen_range(0x100..=self.last_lsn.0 + 3))));
            for lsn in lsns {
                self.check(k, lsn);
            }
        }
    }
}

fn run(seed: u64, ops: usize) -> Stats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new();
    for _ in 0..ops {
        match rng.gen_range(0..100) {
            0..=44 => h.put(&mut rng),
            45..=69 => h.check_random(&mut rng),
            70..=77 => h.freeze(),
            78..=85 => {
                h.flush_one();
            }
            86..=92 => h.compact(),
            93..=98 => h.create_images(),
            _ => h.restart(),
        }
    }
    h.check_all(&mut rng);
    h.restart();
    h.check_all(&mut rng);
    // Every value reads back at its own LSN, and not before, also after the last restart.
    let hot = h.model.get(&key(HOT_KEY)).cloned().unwrap_or_default();
    if let Some((&first, _)) = hot.iter().next() {
        assert_eq!(h.read(key(HOT_KEY), Lsn(first.0 - 1)), None);
    }
    assert!(h.cache.num_open() <= MAX_OPEN_LAYERS);
    h.stats
}

#[test]
fn reads_match_the_model_through_flush_compaction_and_images() {
    let mut total = Stats::default();
    for seed in [1u64, 2, 3] {
        let s = run(seed, 1200);
        eprintln!("seed {seed}: {s:?}");
        total.compactions += s.compactions;
        total.l1_outputs += s.l1_outputs;
        total.single_key_outputs += s.single_key_outputs;
        total.image_layers += s.image_layers;
        total.reads_found += s.reads_found;
        total.reads += s.reads;
        total.restarts += s.restarts;
    }
    // The run exercised what it is meant to.
    assert!(total.compactions >= 10, "{total:?}");
    assert!(
        total.l1_outputs > total.compactions,
        "outputs are split: {total:?}"
    );
    assert!(total.single_key_outputs > 0, "{total:?}");
    assert!(total.image_layers >= 5, "{total:?}");
    assert!(total.restarts >= 3, "{total:?}");
    assert!(total.reads_found * 4 > total.reads, "{total:?}");
}

#[test]
fn reads_of_a_key_range_walk_image_then_deltas() {
    // A deterministic sequence: image at 0x200 (via image creation), then newer versions
    // in L0s and in memory; reads at every LSN.
    let mut h = Harness::new();
    let k = key(3);
    let mut lsn = 0x100u64;
    for round in 0..6u8 {
        lsn += 0x10;
        let layer = h.open_layer(Lsn(lsn));
        let v = Bytes::from(vec![round; 10]);
        layer
            .put_value(k, Lsn(lsn), &Value::Image(v.clone()))
            .unwrap();
        h.model.entry(k).or_default().insert(Lsn(lsn), v);
        h.last_lsn = Lsn(lsn);
        if round % 2 == 1 {
            h.freeze();
            h.flush_one();
        }
        if round == 3 {
            h.create_images();
            assert!(h.stats.image_layers > 0);
        }
    }
    for l in 0x100..=lsn + 2 {
        h.check(k, Lsn(l));
    }
}

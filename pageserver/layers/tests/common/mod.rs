//! Helpers shared by the integration tests: random contents, in-memory models, writers.
#![allow(dead_code)]

mod fs;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use pageserver_api::key::Key;
use pageserver_layers::delta_layer::{DeltaLayerWriter, LsnValue, ReconstructValues};
use pageserver_layers::image_layer::ImageLayerWriter;
use pageserver_layers::layer_name::{LayerDesc, LayerName};
use rand::rngs::StdRng;
use rand::Rng;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

pub use fs::list_dir;

/// What a delta layer should contain: (key, LSN) → (value, will_init).
pub type DeltaModel = BTreeMap<(Key, Lsn), (Vec<u8>, bool)>;
/// What an image layer should contain.
pub type ImageModel = BTreeMap<Key, Vec<u8>>;

pub const TENANT: TenantId = TenantId([7; 16]);
pub const TIMELINE: TimelineId = TimelineId([9; 16]);

/// A relation block key.
pub fn rel_key(rel: u32, blk: u32) -> Key {
    Key {
        field1: 0,
        field2: 1663,
        field3: 5,
        field4: rel,
        field5: 0,
        field6: blk,
    }
}

/// A random key from a small pool (so keys repeat), or anywhere in the key space.
pub fn random_key(rng: &mut StdRng) -> Key {
    if rng.gen_bool(0.9) {
        rel_key(16384 + rng.gen_range(0..3), rng.gen_range(0..300))
    } else {
        let b: [u8; 18] = rng.gen();
        Key::from_slice(&b).unwrap()
    }
}

/// A value: usually small, sometimes empty, a page, or 100 KB.
pub fn random_value(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.gen_range(0..1000) {
        0..=49 => 0,
        50..=899 => rng.gen_range(1..300),
        900..=997 => 8192,
        _ => 100_000,
    };
    (0..len).map(|_| rng.gen()).collect()
}

pub fn random_delta_model(rng: &mut StdRng, n: usize, lsns: Range<u64>) -> DeltaModel {
    let mut model = DeltaModel::new();
    while model.len() < n {
        let key = random_key(rng);
        let lsn = Lsn(rng.gen_range(lsns.clone()));
        model.insert((key, lsn), (random_value(rng), rng.gen_bool(0.2)));
    }
    model
}

pub fn random_image_model(rng: &mut StdRng, n: usize) -> ImageModel {
    let mut model = ImageModel::new();
    while model.len() < n {
        let key = random_key(rng);
        if key != Key::MAX {
            model.insert(key, random_value(rng));
        }
    }
    model
}

/// Writes `model` as a delta layer covering the whole key space and `lsns`.
pub fn write_delta(dir: &Path, model: &DeltaModel, lsns: Range<Lsn>) -> LayerDesc {
    let mut w = DeltaLayerWriter::new(dir, TENANT, TIMELINE, Key::MIN, lsns).unwrap();
    for ((key, lsn), (value, will_init)) in model {
        w.put_value(*key, *lsn, value, *will_init).unwrap();
    }
    assert_eq!(w.num_entries(), model.len() as u64);
    w.finish(Key::MAX).unwrap()
}

/// Writes `model` as an image layer of the whole key space at `lsn`.
pub fn write_image(dir: &Path, model: &ImageModel, lsn: Lsn) -> LayerDesc {
    let mut w = ImageLayerWriter::new(dir, TENANT, TIMELINE, Key::MIN..Key::MAX, lsn).unwrap();
    for (key, value) in model {
        w.put_image(*key, value).unwrap();
    }
    w.finish().unwrap()
}

/// The versions of `key` in `lsns`, oldest first.
pub fn model_values(model: &DeltaModel, key: Key, lsns: Range<Lsn>) -> Vec<LsnValue> {
    if lsns.start >= lsns.end {
        return Vec::new();
    }
    model
        .range((key, lsns.start)..(key, lsns.end))
        .map(|((_, lsn), (value, will_init))| LsnValue {
            lsn: *lsn,
            will_init: *will_init,
            value: Bytes::copy_from_slice(value),
        })
        .collect()
}

/// What `get_reconstruct_values` should return, computed the slow way.
pub fn model_reconstruct(model: &DeltaModel, key: Key, lsns: Range<Lsn>) -> ReconstructValues {
    let mut values = Vec::new();
    for v in model_values(model, key, lsns).into_iter().rev() {
        let init = v.will_init;
        values.push(v);
        if init {
            values.reverse();
            return ReconstructValues {
                values,
                complete: true,
            };
        }
    }
    values.reverse();
    ReconstructValues {
        values,
        complete: false,
    }
}

/// Checks what holds for any freshly written layer: it is the only file in `dir`, and its
/// descriptor has the test ids, the file's size and a name that parses back. Returns the
/// layer's path.
pub fn check_written(dir: &Path, desc: &LayerDesc) -> PathBuf {
    assert_eq!(list_dir(dir), vec![desc.file_name()]);
    assert_eq!((desc.tenant_id, desc.timeline_id), (TENANT, TIMELINE));
    let path = dir.join(desc.file_name());
    assert_eq!(
        desc.file_size_bytes,
        std::fs::metadata(&path).unwrap().len()
    );
    assert_eq!(desc.file_name().parse::<LayerName>().unwrap(), desc.name);
    path
}

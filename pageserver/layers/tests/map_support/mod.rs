//! Helpers for the layer map, planner and compaction tests: synthetic layer descriptors and
//! a small timeline harness over real files.
#![allow(dead_code)]

#[path = "../common/fs.rs"]
mod fs;

use std::ops::Range;
use std::path::Path;

use pageserver_api::key::Key;
use pageserver_layers::delta_layer::DeltaLayer;
use pageserver_layers::image_layer::ImageLayer;
use pageserver_layers::layer_name::{LayerDesc, LayerName};
use utils::crashsafe::TEMP_FILE_SUFFIX;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

pub use fs::list_dir;

pub const TENANT: TenantId = TenantId([3; 16]);
pub const TIMELINE: TimelineId = TimelineId([4; 16]);

/// Key number `n` of a small test key space.
pub fn key(n: u32) -> Key {
    Key {
        field1: 0,
        field2: 1663,
        field3: 5,
        field4: 16384,
        field5: 0,
        field6: n,
    }
}

pub fn keys(r: Range<u32>) -> Range<Key> {
    key(r.start)..key(r.end)
}

fn desc(name: LayerName, file_size_bytes: u64) -> LayerDesc {
    LayerDesc {
        name,
        file_size_bytes,
        tenant_id: TENANT,
        timeline_id: TIMELINE,
    }
}

/// A synthetic delta layer over keys `k` and LSNs `l`.
pub fn delta(k: Range<Key>, l: Range<u64>) -> LayerDesc {
    desc(
        LayerName::Delta {
            key_range: k,
            lsn_range: Lsn(l.start)..Lsn(l.end),
        },
        8192 * 4,
    )
}

/// A synthetic L0 delta layer over LSNs `l` of the given size.
pub fn l0(l: Range<u64>, size: u64) -> LayerDesc {
    let mut d = delta(Key::MIN..Key::MAX, l);
    d.file_size_bytes = size;
    d
}

/// A synthetic image layer over keys `k` at `lsn`.
pub fn image(k: Range<Key>, lsn: u64) -> LayerDesc {
    desc(
        LayerName::Image {
            key_range: k,
            lsn: Lsn(lsn),
        },
        8192 * 4,
    )
}

/// Names of the files in `dir` ending with the temporary suffix.
pub fn temp_files(dir: &Path) -> Vec<String> {
    list_dir(dir)
        .into_iter()
        .filter(|n| n.ends_with(TEMP_FILE_SUFFIX))
        .collect()
}

/// The layer files in `dir`, opened and checked as a restarting pageserver would.
pub fn load_layers(dir: &Path) -> Vec<LayerDesc> {
    list_dir(dir)
        .into_iter()
        .filter_map(|n| n.parse::<LayerName>().ok())
        .map(|name| {
            let path = dir.join(name.to_string());
            let desc = if name.is_delta() {
                DeltaLayer::open(&path).unwrap().desc()
            } else {
                ImageLayer::open(&path).unwrap().desc()
            };
            assert_eq!(desc.name, name);
            desc
        })
        .collect()
}

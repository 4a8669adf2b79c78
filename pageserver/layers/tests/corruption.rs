//! Damaged layer files: a flipped byte anywhere makes every read either return the right
//! data or a corruption error (never wrong data, never a panic), and a flip in anything a
//! full scan reads is always reported. Truncated or extended files fail to open.

mod common;

use std::fs::OpenOptions;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use common::*;
use pageserver_api::key::Key;
use pageserver_layers::delta_layer::{DeltaEntry, DeltaLayer};
use pageserver_layers::error::LayerError;
use pageserver_layers::image_layer::ImageLayer;
use pageserver_layers::layer_name::LayerDesc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use utils::lsn::Lsn;

const BLOCK: u64 = 8192;
/// Bytes of block 0 that are read (the summary); the rest of the block is padding.
const SUMMARY_BYTES: u64 = 112;

/// Which byte ranges of a finished file a full scan reads, and which it never looks at.
struct Layout {
    read: Vec<Range<u64>>,
    unread: Vec<Range<u64>>,
}

fn layout(bytes: &[u8], value_bytes: u64) -> Layout {
    let index_start = u64::from(u32::from_be_bytes(bytes[92..96].try_into().unwrap())) * BLOCK;
    let values_end = BLOCK + value_bytes;
    let size = bytes.len() as u64;
    assert!(values_end <= index_start && index_start < size);
    Layout {
        read: vec![0..SUMMARY_BYTES, BLOCK..values_end, index_start..size],
        unread: vec![SUMMARY_BYTES..BLOCK, values_end..index_start],
    }
}

fn expect_corruption(e: &LayerError) {
    assert!(e.is_corruption(), "not a corruption error: {e}");
}

/// The outcome of a read from a possibly damaged file: an error must be a corruption error
/// and sets `detected`; a value is passed on for comparison with the model.
fn outcome<T>(res: Result<T, LayerError>, detected: &mut bool) -> Option<T> {
    match res {
        Ok(v) => Some(v),
        Err(e) => {
            expect_corruption(&e);
            *detected = true;
            None
        }
    }
}

/// The layer if it opened (then its summary must be the original one), `None` if it failed
/// with a corruption error.
fn open_checked<L>(
    opened: Result<L, LayerError>,
    desc_of: impl FnOnce(&L) -> LayerDesc,
    desc: &LayerDesc,
) -> Option<L> {
    let layer = outcome(opened, &mut false)?;
    assert_eq!(
        &desc_of(&layer),
        desc,
        "an accepted summary must be the original"
    );
    Some(layer)
}

/// Runs a full scan, comparing each item with the next expected one using `same`; a clean
/// scan must yield exactly the expected items.
fn scan_matches<T, W>(
    scan: Result<impl Iterator<Item = Result<T, LayerError>>, LayerError>,
    expected: impl IntoIterator<Item = W>,
    same: impl Fn(T, W),
) -> Result<(), LayerError> {
    let mut expected = expected.into_iter();
    for item in scan? {
        same(item?, expected.next().expect("extra entry"));
    }
    assert!(
        expected.next().is_none(),
        "entries missing from a clean scan"
    );
    Ok(())
}

/// Flips bytes of `path` one at a time (restoring each) and runs `check`, which returns
/// whether it saw an error. Positions: the whole summary, then random ones in every region.
fn flip_and_check(
    path: &Path,
    layout: &Layout,
    rng: &mut StdRng,
    flips_per_region: usize,
    check: &dyn Fn(&Path) -> bool,
) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut positions: Vec<(u64, bool)> = (0..SUMMARY_BYTES).map(|p| (p, true)).collect();
    for (ranges, must_detect) in [(&layout.read, true), (&layout.unread, false)] {
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            for _ in 0..flips_per_region {
                positions.push((rng.gen_range(r.clone()), must_detect));
            }
        }
    }
    for (pos, must_detect) in positions {
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, pos).unwrap();
        let mask: u8 = rng.gen_range(1..=255);
        file.write_all_at(&[byte[0] ^ mask], pos).unwrap();
        let detected = check(path);
        file.write_all_at(&byte, pos).unwrap();
        if must_detect {
            assert!(detected, "flip at {pos} (mask {mask:#x}) went unnoticed");
        } else {
            assert!(!detected, "flip at {pos} in an unread region reported");
        }
    }
    assert!(!check(path), "restored file reports corruption");
}

/// Reads everything from a possibly damaged delta layer; returns whether an error was seen.
fn check_delta(path: &Path, model: &DeltaModel, desc: &LayerDesc, probes: &[Key]) -> bool {
    let Some(layer) = open_checked(DeltaLayer::open(path), DeltaLayer::desc, desc) else {
        return true;
    };
    let mut detected = false;
    let scanned = scan_matches(
        layer.iter(),
        model,
        |entry, ((key, lsn), (value, will_init))| {
            let want = DeltaEntry {
                key: *key,
                lsn: *lsn,
                will_init: *will_init,
                value: Bytes::copy_from_slice(value),
            };
            assert_eq!(entry, want);
        },
    );
    outcome(scanned, &mut detected);
    let all = Lsn(0)..Lsn::MAX;
    let older = Lsn(0)..Lsn(0x180_0000);
    for &key in probes {
        if let Some(got) = outcome(layer.get_values(key, all.clone()), &mut detected) {
            assert_eq!(got, model_values(model, key, all.clone()));
        }
        let reconstruct = layer.get_reconstruct_values(key, older.clone());
        if let Some(got) = outcome(reconstruct, &mut detected) {
            assert_eq!(got, model_reconstruct(model, key, older.clone()));
        }
    }
    detected
}

/// Reads everything from a possibly damaged image layer; returns whether an error was seen.
fn check_image(path: &Path, model: &ImageModel, desc: &LayerDesc, probes: &[Key]) -> bool {
    let Some(layer) = open_checked(ImageLayer::open(path), ImageLayer::desc, desc) else {
        return true;
    };
    let mut detected = false;
    let scanned = scan_matches(
        layer.iter(),
        model,
        |(key, value), (want_key, want_value)| {
            assert_eq!((key, &value[..]), (*want_key, want_value.as_slice()));
        },
    );
    outcome(scanned, &mut detected);
    for &key in probes {
        if let Some(got) = outcome(layer.get(key), &mut detected) {
            assert_eq!(got.as_deref(), model.get(&key).map(Vec::as_slice));
        }
    }
    detected
}

fn delta_value_bytes(model: &DeltaModel) -> u64 {
    model.values().map(|(v, _)| 8 + v.len() as u64).sum()
}

#[test]
fn flipped_bytes_in_delta_layers() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(2024);
    let model = random_delta_model(&mut rng, 1500, 0x100_0000..0x200_0000);
    let desc = write_delta(dir.path(), &model, Lsn(0x100_0000)..Lsn(0x200_0000));
    let path = dir.path().join(desc.file_name());
    let layout = layout(&std::fs::read(&path).unwrap(), delta_value_bytes(&model));
    let mut probes: Vec<Key> = model.keys().map(|(k, _)| *k).step_by(50).collect();
    probes.push(rel_key(1, 1));
    let check = |p: &Path| check_delta(p, &model, &desc, &probes);
    flip_and_check(&path, &layout, &mut rng, 120, &check);
}

#[test]
fn flipped_bytes_in_image_layers() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(4202);
    let model = random_image_model(&mut rng, 900);
    let desc = write_image(dir.path(), &model, Lsn(0x150_0000));
    let path = dir.path().join(desc.file_name());
    let value_bytes = model.values().map(|v| 8 + v.len() as u64).sum();
    let layout = layout(&std::fs::read(&path).unwrap(), value_bytes);
    let mut probes: Vec<Key> = model.keys().copied().step_by(20).collect();
    probes.push(rel_key(1, 1));
    let check = |p: &Path| check_image(p, &model, &desc, &probes);
    flip_and_check(&path, &layout, &mut rng, 120, &check);
}

/// Lengths to cut a file of `size` bytes to: around every boundary, plus random ones.
fn truncation_lengths(size: u64, index_start: u64, rng: &mut StdRng) -> Vec<u64> {
    let mut lens = vec![
        0,
        1,
        3,
        4,
        5,
        50,
        111,
        112,
        113,
        BLOCK - 1,
        BLOCK,
        BLOCK + 1,
    ];
    lens.extend([index_start - 1, index_start, index_start + 1]);
    lens.extend([size - BLOCK - 1, size - BLOCK, size - BLOCK + 1, size - 1]);
    lens.extend((0..20).map(|_| rng.gen_range(0..size)));
    lens
}

#[test]
fn truncated_and_extended_files_fail_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(8);
    let delta_model = random_delta_model(&mut rng, 800, 10..1000);
    let delta = write_delta(dir.path(), &delta_model, Lsn(10)..Lsn(1000));
    let image_model = random_image_model(&mut rng, 800);
    let image = write_image(dir.path(), &image_model, Lsn(10));
    let bad_path = dir.path().join("damaged");
    for (desc, is_delta) in [(delta, true), (image, false)] {
        let good = std::fs::read(dir.path().join(desc.file_name())).unwrap();
        let index_start = u64::from(u32::from_be_bytes(good[92..96].try_into().unwrap())) * BLOCK;
        let mut variants: Vec<Vec<u8>> =
            truncation_lengths(good.len() as u64, index_start, &mut rng)
                .into_iter()
                .map(|len| good[..len as usize].to_vec())
                .collect();
        variants.push([good.as_slice(), &[0]].concat());
        variants.push([good.as_slice(), &[0; BLOCK as usize]].concat());
        for bytes in variants {
            std::fs::write(&bad_path, &bytes).unwrap();
            let err = if is_delta {
                DeltaLayer::open(&bad_path).map(|_| ()).unwrap_err()
            } else {
                ImageLayer::open(&bad_path).map(|_| ()).unwrap_err()
            };
            assert!(err.is_corruption(), "{} bytes: {err}", bytes.len());
        }
    }
}

#[test]
fn damaged_value_is_reported_as_checksum_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = ImageModel::new();
    for blk in 0..10 {
        model.insert(rel_key(1, blk), vec![blk as u8; 8192]);
    }
    let desc = write_image(dir.path(), &model, Lsn(3));
    let path = dir.path().join(desc.file_name());
    // Value 4 starts at block 1 + 4 blobs; damage the middle of its payload.
    let pos = BLOCK + 4 * (8 + 8192) + 8 + 4000;
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xEE], pos).unwrap();
    let layer = ImageLayer::open(&path).unwrap();
    let err = layer.get(rel_key(1, 4)).unwrap_err();
    assert!(
        matches!(err, LayerError::ChecksumMismatch { what: "blob", .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&desc.file_name()), "{err}");
    for blk in [0, 3, 5, 9] {
        assert_eq!(
            layer.get(rel_key(1, blk)).unwrap().unwrap(),
            &model[&rel_key(1, blk)][..]
        );
    }
    let results: Vec<_> = layer.iter().unwrap().collect();
    assert_eq!(
        results.len(),
        5,
        "four good entries, then the error, then the end"
    );
    assert!(results[4].is_err());
}

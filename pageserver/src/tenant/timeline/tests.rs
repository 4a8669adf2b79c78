//! Timeline storage against the in-memory model ([`MemTimeline`]), flushes, reloads and the
//! load-time cleanup rule.

use rand::{Rng, SeedableRng};

use super::test_support::{branch_meta, commit, conf, image, root_meta, test_key};
use super::*;
use crate::memstore::MemTimeline;

fn new_root(dir: &Path, distance: u64) -> Arc<Timeline> {
    Timeline::create_empty(
        TenantId::generate(),
        TimelineId::generate(),
        dir,
        &root_meta(),
        None,
        conf(distance),
        Arc::new(NeonOnlyRedo),
    )
    .unwrap()
}

fn reload(tl: &Timeline) -> Arc<Timeline> {
    Timeline::load(
        tl.tenant_id,
        tl.timeline_id,
        tl.dir(),
        None,
        conf(1 << 20),
        Arc::new(NeonOnlyRedo),
    )
    .unwrap()
}

/// Random images and records over a few keys, random flushes; every read equals the model's,
/// before and after a reload.
#[test]
fn random_writes_match_model() {
    for seed in 0..4u64 {
        let dir = tempfile::tempdir().unwrap();
        let tl = new_root(dir.path(), 64 * 1024);
        let mut model = MemTimeline::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let keys: Vec<Key> = (0..6).map(|i| test_key(i * 3 + 1)).collect();
        let mut lsn = Lsn(0x100);
        let mut has_image = vec![false; keys.len()];
        for step in 0..300 {
            lsn = Lsn(lsn.0 + rng.gen_range(1..0x40));
            let ki = rng.gen_range(0..keys.len());
            let v = if !has_image[ki] || rng.gen_bool(0.3) {
                has_image[ki] = true;
                image(rng.gen())
            } else {
                commit(keys[ki], rng.gen_range(0..30000))
            };
            let batch = vec![(keys[ki], lsn, v)];
            let mut w = tl.writer();
            w.put_batch(batch.clone()).unwrap();
            w.finish_write(lsn, Lsn(0));
            drop(w);
            model.put_batch(batch).unwrap();
            if step % 37 == 0 {
                tl.freeze_and_flush().unwrap();
            }
        }
        let check = |t: &Timeline, upto: Lsn, rng: &mut rand::rngs::StdRng| {
            for _ in 0..200 {
                let key = keys[rng.gen_range(0..keys.len())];
                let at = Lsn(rng.gen_range(0..=upto.0));
                assert_eq!(
                    t.get(key, at).unwrap(),
                    model.get(key, at).unwrap(),
                    "{key} @ {at}"
                );
            }
        };
        check(&tl, lsn, &mut rng);
        let (files, _) = tl.layer_stats();
        assert!(files >= 2, "expected several layer files, got {files}");
        tl.freeze_and_flush().unwrap();
        assert_eq!(tl.disk_consistent_lsn(), lsn);
        let again = reload(&tl);
        assert_eq!(again.last_record_lsn(), lsn);
        check(&again, lsn, &mut rng);
    }
}

#[test]
fn checkpoint_distance_rolls_layers() {
    let dir = tempfile::tempdir().unwrap();
    let tl = new_root(dir.path(), 8192);
    for i in 1..=10u64 {
        let mut w = tl.writer();
        w.put_batch(vec![(test_key(i as u32), Lsn(i * 0x10), image(i as u8))])
            .unwrap();
        w.finish_write(Lsn(i * 0x10), Lsn(0));
    }
    assert!(tl.layer_stats().0 >= 4, "{:?}", tl.layer_stats());
    assert!(tl.disk_consistent_lsn() > Lsn(0));
}

#[test]
fn load_removes_non_durable_and_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let tl = new_root(dir.path(), 1 << 20);
    let key = test_key(5);
    let put = |lsn: u64, b: u8| {
        let mut w = tl.writer();
        w.put_batch(vec![(key, Lsn(lsn), image(b))]).unwrap();
        w.finish_write(Lsn(lsn), Lsn(0));
    };
    put(0x100, 1);
    tl.freeze_and_flush().unwrap();
    let durable_meta = std::fs::read(dir.path().join(METADATA_FILE_NAME)).unwrap();
    put(0x200, 2);
    tl.freeze_and_flush().unwrap();
    assert_eq!(tl.layer_stats().0, 2);
    // Simulate a crash after the second layer file but before its metadata update.
    std::fs::write(dir.path().join(METADATA_FILE_NAME), durable_meta).unwrap();
    std::fs::write(dir.path().join("x.___temp"), b"junk").unwrap();
    std::fs::write(dir.path().join("ephemeral-3"), b"junk").unwrap();
    let again = reload(&tl);
    assert_eq!(again.layer_stats().0, 1);
    assert_eq!(again.last_record_lsn(), Lsn(0x100));
    assert_eq!(
        again.get(key, Lsn(0x300)).unwrap(),
        Some(match image(1) {
            Value::Image(b) => b,
            _ => unreachable!(),
        })
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // The WAL after the durable point can be ingested again.
    let mut w = again.writer();
    w.put_batch(vec![(key, Lsn(0x200), image(3))]).unwrap();
}

#[test]
fn branch_reads_ancestor_at_branch_point() {
    let dir = tempfile::tempdir().unwrap();
    let parent = new_root(&dir.path().join("p"), 1 << 20);
    let key = test_key(9);
    for (lsn, b) in [(0x100u64, 1u8), (0x300, 3)] {
        let mut w = parent.writer();
        w.put_batch(vec![(key, Lsn(lsn), image(b))]).unwrap();
        w.finish_write(Lsn(lsn), Lsn(0));
    }
    let meta = branch_meta(&parent, Lsn(0x200));
    let child = Timeline::create_empty(
        parent.tenant_id,
        TimelineId::generate(),
        &dir.path().join("c"),
        &meta,
        Some(parent.clone()),
        conf(1 << 20),
        Arc::new(NeonOnlyRedo),
    )
    .unwrap();
    let img = |b| match image(b) {
        Value::Image(x) => x,
        _ => unreachable!(),
    };
    assert_eq!(child.get(key, Lsn(0x400)).unwrap(), Some(img(1)));
    {
        let mut w = child.writer();
        assert!(w.put_batch(vec![(key, Lsn(0x200), image(7))]).is_err());
        w.put_batch(vec![(key, Lsn(0x250), commit(key, 1))])
            .unwrap();
        w.finish_write(Lsn(0x250), Lsn(0));
    }
    let page = child.get(key, Lsn(0x250)).unwrap().unwrap();
    let mut expected = BytesMut::from(&img(1)[..]);
    match commit(key, 1) {
        Value::WalRecord(r) => apply_neon_record(key, &mut expected, &r).unwrap(),
        Value::Image(_) => unreachable!(),
    }
    assert_eq!(page, expected.freeze());
    assert_ne!(page, img(1));
    assert_eq!(child.get(key, Lsn(0x150)).unwrap(), Some(img(1)));
}

#[tokio::test]
async fn wait_lsn_waits_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let tl = new_root(dir.path(), 1 << 20);
    let err = tl.wait_lsn(Lsn(0x50), Duration::from_millis(20)).await;
    assert!(matches!(err, Err(TimelineError::WaitLsnTimeout { .. })));
    let waiter = {
        let tl = tl.clone();
        tokio::spawn(async move { tl.wait_lsn(Lsn(0x50), Duration::from_secs(30)).await })
    };
    tl.writer().finish_write(Lsn(0x60), Lsn(0x58));
    waiter.await.unwrap().unwrap();
    assert_eq!(tl.prev_record_lsn(), Lsn(0x58));
}

/// L0 compaction merges flushed layers; reads are unchanged, also after a reload.
#[test]
fn compaction_keeps_reads() {
    let dir = tempfile::tempdir().unwrap();
    let conf = Arc::new(RwLock::new(EffectiveTenantConfig {
        checkpoint_distance: 1 << 20,
        compaction_threshold: 3,
        compaction_upper_limit: 10,
        ..EffectiveTenantConfig::DEFAULT
    }));
    let tl = Timeline::create_empty(
        TenantId::generate(),
        TimelineId::generate(),
        dir.path(),
        &root_meta(),
        None,
        conf,
        Arc::new(NeonOnlyRedo),
    )
    .unwrap();
    let mut model = MemTimeline::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let keys: Vec<Key> = (0..20).map(|i| test_key(i * 5)).collect();
    for round in 0..6u64 {
        for (i, key) in keys.iter().enumerate() {
            let lsn = Lsn(0x1000 * (round + 1) + i as u64);
            let v = if round == 0 || rng.gen_bool(0.3) {
                image(rng.gen())
            } else {
                commit(*key, rng.gen_range(0..30000))
            };
            let mut w = tl.writer();
            w.put_batch(vec![(*key, lsn, v.clone())]).unwrap();
            w.finish_write(lsn, Lsn(0));
            model.put_batch(vec![(*key, lsn, v)]).unwrap();
        }
        tl.freeze_and_flush().unwrap();
    }
    assert_eq!(tl.layer_stats().0, 6);
    let outcome = tl.compact().unwrap();
    assert_eq!(outcome.l0_inputs, 6, "{outcome:?}");
    assert!(outcome.l1_outputs >= 1);
    let check = |t: &Timeline| {
        for key in &keys {
            for at in [0x800u64, 0x1005, 0x2010, 0x3FFF, 0x6013, 0x9000] {
                let at = Lsn(at);
                assert_eq!(
                    t.get(*key, at).unwrap(),
                    model.get(*key, at).unwrap(),
                    "{key} @ {at}"
                );
            }
        }
    };
    check(&tl);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), outcome.l1_outputs + 1, "{names:?}");
    check(&reload(&tl));
}

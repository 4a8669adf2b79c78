//! The materialized page cache in the read path: repeated reads skip redo, newer records are
//! rebuilt (from the cached older version), older LSNs keep their versions.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::{Rng, SeedableRng};

use super::test_support::{branch_meta, commit, conf, image, root_meta, test_key};
use super::*;
use crate::memstore::MemTimeline;
use crate::pg_consts::ZERO_PAGE;

/// [`NeonOnlyRedo`] that records how many records each redo request carried.
#[derive(Default)]
struct CountingRedo {
    requests: Mutex<Vec<usize>>,
    calls: AtomicUsize,
}

impl Redo for CountingRedo {
    fn redo(
        &self,
        key: Key,
        lsn: Lsn,
        base: Option<(Lsn, Bytes)>,
        records: Vec<(Lsn, NeonWalRecord)>,
    ) -> Result<Bytes, String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        lock(&self.requests).push(records.len());
        NeonOnlyRedo.redo(key, lsn, base, records)
    }
}

impl CountingRedo {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    fn last_request_records(&self) -> Option<usize> {
        lock(&self.requests).last().copied()
    }
}

fn timeline(dir: &Path, cache_bytes: u64) -> (Arc<Timeline>, Arc<CountingRedo>, Arc<PageCache>) {
    let redo = Arc::new(CountingRedo::default());
    let cache = Arc::new(PageCache::new(cache_bytes));
    let deps = TimelineDeps {
        conf: conf(64 * 1024),
        redo: redo.clone(),
        page_cache: cache.clone(),
    };
    let ids = (TenantId::generate(), TimelineId::generate());
    let tl = Timeline::create_empty_with(ids.0, ids.1, dir, &root_meta(), None, deps).unwrap();
    (tl, redo, cache)
}

fn put(tl: &Timeline, model: &mut MemTimeline, batch: Vec<(Key, Lsn, Value)>, last: Lsn) {
    let mut w = tl.writer();
    w.put_batch(batch.clone()).unwrap();
    w.finish_write(last, Lsn(0));
    model.put_batch(batch).unwrap();
    model.finish_write(last, Lsn(0));
}

/// Writes `image(1)` at 0x100, then `commit(key, xid)` at 0x200, to `tl` and `model`;
/// `last` is the last record LSN after the commit.
fn image_then_commit(tl: &Timeline, model: &mut MemTimeline, key: Key, xid: u32, last: Lsn) {
    put(tl, model, vec![(key, Lsn(0x100), image(1))], Lsn(0x100));
    put(tl, model, vec![(key, Lsn(0x200), commit(key, xid))], last);
}

#[test]
fn second_read_is_served_from_cache_and_new_records_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, redo, cache) = timeline(dir.path(), 1 << 20);
    let mut model = MemTimeline::new();
    let key = test_key(3);
    image_then_commit(&tl, &mut model, key, 7, Lsn(0x300));

    let first = tl.get(key, Lsn(0x300)).unwrap();
    assert_eq!(first, model.get(key, Lsn(0x300)).unwrap());
    assert_eq!(redo.calls(), 1);
    // Same version, also at another request LSN: no redo.
    assert_eq!(tl.get(key, Lsn(0x300)).unwrap(), first);
    assert_eq!(tl.get(key, Lsn(0x250)).unwrap(), first);
    assert_eq!(redo.calls(), 1);
    assert_eq!(cache.stats().hits, 2);

    // A newer record: rebuilt from the cached page with just the new record.
    put(
        &tl,
        &mut model,
        vec![(key, Lsn(0x400), commit(key, 9))],
        Lsn(0x500),
    );
    let second = tl.get(key, Lsn(0x500)).unwrap();
    assert_eq!(second, model.get(key, Lsn(0x500)).unwrap());
    assert_ne!(second, first);
    assert_eq!(redo.calls(), 2);
    assert_eq!(redo.last_request_records(), Some(1));
    // Older LSNs keep their versions, from the cache.
    assert_eq!(tl.get(key, Lsn(0x3FF)).unwrap(), first);
    assert_eq!(
        tl.get(key, Lsn(0x150)).unwrap(),
        model.get(key, Lsn(0x150)).unwrap()
    );
    assert_eq!(tl.get(key, Lsn(0x500)).unwrap(), second);
    assert_eq!(redo.calls(), 2);
    // Flushing to layer files changes nothing.
    tl.freeze_and_flush().unwrap();
    assert_eq!(tl.get(key, Lsn(0x500)).unwrap(), second);
    assert_eq!(redo.calls(), 2);
}

/// A version at exactly `last_record_lsn` may still be replaced, so it is not cached.
#[test]
fn version_at_last_record_lsn_is_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, redo, cache) = timeline(dir.path(), 1 << 20);
    let mut model = MemTimeline::new();
    let key = test_key(4);
    image_then_commit(&tl, &mut model, key, 1, Lsn(0x200));
    tl.get(key, Lsn(0x200)).unwrap();
    assert_eq!(cache.stats().entries, 0);
    // The writer replaces the version at 0x200 (allowed at last_record_lsn).
    put(
        &tl,
        &mut model,
        vec![(key, Lsn(0x200), commit(key, 2))],
        Lsn(0x200),
    );
    assert_eq!(
        tl.get(key, Lsn(0x200)).unwrap(),
        model.get(key, Lsn(0x200)).unwrap()
    );
    assert_eq!(redo.calls(), 2);
}

#[test]
fn dropping_a_timeline_drops_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, _redo, cache) = timeline(dir.path(), 1 << 20);
    let mut model = MemTimeline::new();
    let key = test_key(5);
    image_then_commit(&tl, &mut model, key, 1, Lsn(0x300));
    tl.get(key, Lsn(0x300)).unwrap();
    assert_eq!(cache.stats().entries, 1);
    drop(tl);
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(cache.stats().bytes, 0);
}

/// Interleaved writes, flushes and reads at random LSNs with a cache that holds only a few
/// pages; every read equals the model's.
#[test]
fn random_reads_with_small_cache_match_model() {
    for seed in 0..4u64 {
        let dir = tempfile::tempdir().unwrap();
        let page_cost = ZERO_PAGE.len() as u64 + page_cache::ENTRY_OVERHEAD_BYTES;
        let (tl, redo, cache) = timeline(dir.path(), 5 * page_cost);
        let mut model = MemTimeline::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let keys: Vec<Key> = (0..8).map(|i| test_key(i * 7 + 2)).collect();
        let mut has_image = vec![false; keys.len()];
        let mut lsn = Lsn(0x100);
        let mut reads = 0usize;
        for step in 0..400 {
            let ki = rng.gen_range(0..keys.len());
            let v = if !has_image[ki] || rng.gen_bool(0.1) {
                has_image[ki] = true;
                image(rng.gen())
            } else {
                commit(keys[ki], rng.gen_range(0..30000))
            };
            let at = Lsn(lsn.0 + rng.gen_range(1..0x40));
            lsn = Lsn(at.0 + rng.gen_range(0..2));
            put(&tl, &mut model, vec![(keys[ki], at, v)], lsn);
            if step % 53 == 0 {
                tl.freeze_and_flush().unwrap();
            }
            for _ in 0..3 {
                let key = keys[rng.gen_range(0..keys.len())];
                let read_at = Lsn(rng.gen_range(0x100..=lsn.0));
                let got = tl.get(key, read_at).unwrap();
                assert_eq!(got, model.get(key, read_at).unwrap(), "{key} @ {read_at}");
                reads += 1;
            }
        }
        let s = cache.stats();
        assert!(s.bytes <= 5 * page_cost, "{s:?}");
        assert!(s.hits > 0, "{s:?}");
        // Every miss runs redo, a partial hit too, a full hit does not.
        let lookups = s.hits + s.misses;
        let calls = redo.calls() as u64;
        assert!(
            lookups <= reads as u64 && calls >= s.misses,
            "{s:?} {calls}"
        );
        assert!(
            calls < lookups,
            "no read was fully served from the cache: {s:?}"
        );
        eprintln!(
            "seed {seed}: {reads} reads, {} redo calls, {s:?}",
            redo.calls()
        );
    }
}

#[test]
fn settled_snapshot_uses_the_owning_timeline() {
    // Child from 0x200 with last 0x900; parent with last 0x200.
    let s = SettledSnapshot(vec![(Lsn(0x200), Lsn(0x900)), (Lsn(0), Lsn(0x200))]);
    assert!(s.is_settled(Lsn(0x8FF)));
    assert!(!s.is_settled(Lsn(0x900)));
    assert!(s.is_settled(Lsn(0x1FF)));
    assert!(
        !s.is_settled(Lsn(0x200)),
        "parent may still replace its version at 0x200"
    );
}

/// A child caches a version read from its ancestor only once the ancestor has settled it.
#[test]
fn branch_caches_ancestor_versions_once_settled() {
    let dir = tempfile::tempdir().unwrap();
    let (parent, _, cache) = timeline(&dir.path().join("p"), 1 << 20);
    let mut model = MemTimeline::new();
    let key = test_key(6);
    image_then_commit(&parent, &mut model, key, 3, Lsn(0x200));
    let meta = branch_meta(&parent, Lsn(0x200));
    let redo = Arc::new(CountingRedo::default());
    let deps = TimelineDeps {
        conf: parent.conf.clone(),
        redo: redo.clone(),
        page_cache: cache.clone(),
    };
    let (tenant, id) = (parent.tenant_id, TimelineId::generate());
    let cdir = dir.path().join("c");
    let child =
        Timeline::create_empty_with(tenant, id, &cdir, &meta, Some(parent.clone()), deps).unwrap();
    {
        let mut w = child.writer();
        w.put_batch(vec![(test_key(99), Lsn(0x300), image(9))])
            .unwrap();
        w.finish_write(Lsn(0x300), Lsn(0));
    }
    let expected = model.get(key, Lsn(0x200)).unwrap();
    assert_eq!(child.get(key, Lsn(0x300)).unwrap(), expected);
    assert_eq!(cache.stats().entries, 0);
    parent.writer().finish_write(Lsn(0x250), Lsn(0));
    assert_eq!(child.get(key, Lsn(0x300)).unwrap(), expected);
    assert_eq!(child.get(key, Lsn(0x300)).unwrap(), expected);
    assert_eq!(cache.stats().entries, 1);
    assert_eq!(redo.calls(), 2);
}

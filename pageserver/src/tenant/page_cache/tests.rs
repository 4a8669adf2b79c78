//! The cache alone: budget, LRU order, key separation, and a randomized run against a model.

use rand::{Rng, SeedableRng};

use super::*;

fn tag() -> TimelineTag {
    TimelineTag::next(TenantId::generate(), TimelineId::generate())
}

fn val(len: usize, b: u8) -> Bytes {
    Bytes::from(vec![b; len])
}

/// Room for exactly `n` values of `len` bytes.
fn budget(n: u64, len: usize) -> u64 {
    n * (len as u64 + ENTRY_OVERHEAD_BYTES)
}

#[test]
fn stays_within_budget_and_evicts_least_recently_used() {
    let cache = PageCache::new(budget(3, 100));
    let t = tag();
    let k = Key::MIN.add(1);
    for i in 1..=3u64 {
        cache.insert(t, k, Lsn(i), val(100, i as u8));
    }
    assert_eq!(cache.stats().entries, 3);
    // Touch version 1: version 2 is now the least recently used.
    assert_eq!(
        cache.lookup_newest(t, k, [Lsn(1)]),
        Some((Lsn(1), val(100, 1)))
    );
    cache.insert(t, k, Lsn(4), val(100, 4));
    let s = cache.stats();
    assert_eq!(s.entries, 3);
    assert_eq!(s.bytes, budget(3, 100));
    assert_eq!(cache.lookup_newest(t, k, [Lsn(2)]), None);
    for i in [1u64, 3, 4] {
        assert!(cache.lookup_newest(t, k, [Lsn(i)]).is_some(), "version {i}");
    }
    // A big value evicts as many as needed.
    cache.insert(t, k, Lsn(5), val(250, 5));
    let s = cache.stats();
    assert!(s.bytes <= cache.capacity_bytes(), "{s:?}");
    // 346 + 196 fit in 588: only the two least recently used (3 and 1) went.
    assert_eq!(s.entries, 2);
    assert!(cache.lookup_newest(t, k, [Lsn(5)]).is_some());
    assert!(cache.lookup_newest(t, k, [Lsn(4)]).is_some());
}

#[test]
fn oversized_values_and_zero_budget_are_not_cached() {
    let cache = PageCache::new(budget(1, 100));
    let t = tag();
    cache.insert(t, Key::MIN, Lsn(1), val(101, 1));
    assert_eq!(cache.stats().entries, 0);
    let off = PageCache::new(0);
    off.insert(t, Key::MIN, Lsn(1), val(1, 1));
    assert_eq!(off.lookup_newest(t, Key::MIN, [Lsn(1)]), None);
}

#[test]
fn keys_are_separated_by_timeline_key_and_version() {
    let cache = PageCache::new(1 << 20);
    let (a, b) = (tag(), tag());
    let same_ids_new_generation = TimelineTag::next(a.tenant_id, a.timeline_id);
    let (k1, k2) = (Key::MIN.add(1), Key::MIN.add(2));
    cache.insert(a, k1, Lsn(10), val(8, 1));
    assert_eq!(cache.lookup_newest(b, k1, [Lsn(10)]), None);
    assert_eq!(
        cache.lookup_newest(same_ids_new_generation, k1, [Lsn(10)]),
        None
    );
    assert_eq!(cache.lookup_newest(a, k2, [Lsn(10)]), None);
    assert_eq!(cache.lookup_newest(a, k1, [Lsn(11), Lsn(9)]), None);
    assert_eq!(
        cache.lookup_newest(a, k1, [Lsn(10)]),
        Some((Lsn(10), val(8, 1)))
    );
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (1, 4));
}

#[test]
fn lookup_returns_newest_cached_version() {
    let cache = PageCache::new(1 << 20);
    let t = tag();
    let k = Key::MIN.add(7);
    cache.insert(t, k, Lsn(10), val(8, 10));
    cache.insert(t, k, Lsn(30), val(8, 30));
    let got = cache.lookup_newest(t, k, [Lsn(40), Lsn(30), Lsn(20), Lsn(10)]);
    assert_eq!(got, Some((Lsn(30), val(8, 30))));
    let got = cache.lookup_newest(t, k, [Lsn(20), Lsn(10)]);
    assert_eq!(got, Some((Lsn(10), val(8, 10))));
    // Re-inserting a version replaces it without double charging.
    cache.insert(t, k, Lsn(10), val(8, 11));
    assert_eq!(cache.stats().bytes, budget(2, 8));
    assert_eq!(
        cache.lookup_newest(t, k, [Lsn(10)]),
        Some((Lsn(10), val(8, 11)))
    );
}

#[test]
fn forget_timeline_drops_only_its_entries() {
    let cache = PageCache::new(1 << 20);
    let (a, b) = (tag(), tag());
    for i in 0..10u32 {
        cache.insert(a, Key::MIN.add(i), Lsn(1), val(16, 1));
        cache.insert(b, Key::MIN.add(i), Lsn(1), val(16, 2));
    }
    cache.forget_timeline(a);
    let s = cache.stats();
    assert_eq!((s.entries, s.bytes), (10, budget(10, 16)));
    assert_eq!(cache.lookup_newest(a, Key::MIN, [Lsn(1)]), None);
    assert_eq!(
        cache.lookup_newest(b, Key::MIN, [Lsn(1)]),
        Some((Lsn(1), val(16, 2)))
    );
    // Freed slots are reused.
    cache.insert(a, Key::MIN, Lsn(2), val(16, 3));
    assert_eq!(cache.stats().entries, 11);
}

/// A list in recency order (front = most recent) with the same budget rule.
struct Model {
    capacity: u64,
    entries: Vec<((u32, u64), Bytes)>,
}

impl Model {
    fn used(&self) -> u64 {
        self.entries
            .iter()
            .map(|(_, v)| v.len() as u64 + ENTRY_OVERHEAD_BYTES)
            .sum()
    }

    fn get(&mut self, k: (u32, u64)) -> Option<Bytes> {
        let i = self.entries.iter().position(|(x, _)| *x == k)?;
        let e = self.entries.remove(i);
        let v = e.1.clone();
        self.entries.insert(0, e);
        Some(v)
    }

    fn insert(&mut self, k: (u32, u64), v: Bytes) {
        let c = v.len() as u64 + ENTRY_OVERHEAD_BYTES;
        if c > self.capacity {
            return;
        }
        self.entries.retain(|(x, _)| *x != k);
        while self.used() + c > self.capacity {
            self.entries.pop();
        }
        self.entries.insert(0, (k, v));
    }
}

#[test]
fn random_operations_match_model() {
    for seed in 0..8u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let capacity = rng.gen_range(0..4000);
        let cache = PageCache::new(capacity);
        let mut model = Model {
            capacity,
            entries: Vec::new(),
        };
        let t = tag();
        for _ in 0..2000 {
            let k = (rng.gen_range(0..8u32), rng.gen_range(0..6u64));
            if rng.gen_bool(0.5) {
                let v = val(rng.gen_range(0..600), rng.gen());
                cache.insert(t, Key::MIN.add(k.0), Lsn(k.1), v.clone());
                model.insert(k, v);
            } else {
                let got = cache.lookup_newest(t, Key::MIN.add(k.0), [Lsn(k.1)]);
                assert_eq!(got.map(|(_, v)| v), model.get(k), "seed {seed} {k:?}");
            }
            let s = cache.stats();
            assert_eq!(s.bytes, model.used());
            assert_eq!(s.entries, model.entries.len());
            assert!(s.bytes <= capacity);
        }
    }
}

//! The materialized page cache: values rebuilt by WAL redo, kept so that the next read of the
//! same version does not run redo again.
//!
//! An entry maps (timeline instance, key, `version_lsn`) to the value of the key *as of its
//! version at `version_lsn`*: the base image with every record up to and including the one at
//! `version_lsn` applied. The read path ([`super::timeline::Timeline`]) collects the versions of
//! a key, then asks [`PageCache::lookup_newest`] for the newest collected version that is
//! cached; the cached value replaces the base image and all older records, so only the
//! records above it go to redo (none when the newest version is cached).
//!
//! # Why a hit is never stale
//!
//! - A timeline only accepts puts at or above its `last_record_lsn`, and that LSN only grows,
//!   so the versions of a key *strictly below* `last_record_lsn` never change again (a put at
//!   exactly `last_record_lsn` may still replace one). The read path inserts an entry only when
//!   the newest version used is below the `last_record_lsn` read *before* the versions were
//!   collected: every version the redo saw was already final. A version a branch reads from
//!   its ancestor (at or below the branch point) is judged by the *ancestor's*
//!   `last_record_lsn` (the branch cannot write there; the ancestor still might).
//! - The entry pins the exact version used (`version_lsn`), not the request LSN. A read at a
//!   request LSN `L` uses the versions at or below `L`; it can only hit an entry whose
//!   `version_lsn` is one of those versions, whose value is by construction the value at that
//!   version. A newer record creates a newer version, which no entry names yet, so it is
//!   rebuilt; reads at older LSNs never see an entry for a version above their LSN.
//! - The materialized value at a version does not depend on the request LSN (redo applies the
//!   records up to the version; a page's LSN comes from those records).
//! - Keys carry the tenant and timeline ids and a per-process *generation* unique to each
//!   loaded [`super::timeline::Timeline`] object, so a timeline that is deleted and created
//!   again under the same id (or detached and attached with other files) never sees the old
//!   entries; a timeline's entries are also dropped when it is dropped
//!   ([`PageCache::forget_timeline`]).
//!
//! # Sharing and bounds
//!
//! One cache serves the whole process ([`global`]): a single byte budget, and busy tenants get
//! more of it than idle ones (per-tenant caches would need per-tenant budgets that sit idle).
//! Each entry is charged its value's length plus [`ENTRY_OVERHEAD_BYTES`]; inserting evicts
//! least recently used entries until the total fits `capacity_bytes`. All operations are O(1)
//! (a hash map into a slab of entries linked in LRU order) under one mutex, except
//! [`PageCache::forget_timeline`] (O(entries), on timeline drop only).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use pageserver_api::key::Key;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::http::metrics::METRICS;

/// Byte budget of the process-wide cache unless [`configure_global`] sets another.
pub const DEFAULT_PAGE_CACHE_SIZE_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes charged per entry on top of its value (key, links, map slot).
pub const ENTRY_OVERHEAD_BYTES: u64 = 96;

/// Identifies one loaded timeline object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimelineTag {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    /// Unique per [`TimelineTag::next`] call in this process.
    pub generation: u64,
}

impl TimelineTag {
    /// A tag with a fresh generation.
    pub fn next(tenant_id: TenantId, timeline_id: TimelineId) -> TimelineTag {
        static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
        TimelineTag {
            tenant_id,
            timeline_id,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    tag: TimelineTag,
    key: Key,
    version_lsn: Lsn,
}

/// Slab index meaning "no entry".
const NIL: usize = usize::MAX;

struct Entry {
    key: CacheKey,
    value: Bytes,
    /// Towards the most recently used end.
    prev: usize,
    /// Towards the least recently used end.
    next: usize,
}

/// Counters of one cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageCacheStats {
    /// Lookups that found a cached version.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Bytes charged for the entries now held.
    pub bytes: u64,
    /// Entries now held.
    pub entries: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<CacheKey, usize>,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// Most recently used entry.
    head: usize,
    /// Least recently used entry.
    tail: usize,
    bytes: u64,
    hits: u64,
    misses: u64,
}

fn charge(value: &Bytes) -> u64 {
    value.len() as u64 + ENTRY_OVERHEAD_BYTES
}

impl Inner {
    fn new() -> Inner {
        Inner {
            head: NIL,
            tail: NIL,
            ..Inner::default()
        }
    }

    fn entry(&mut self, i: usize) -> &mut Entry {
        self.slots[i].as_mut().expect("linked slot holds an entry")
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = {
            let e = self.entry(i);
            (e.prev, e.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.entry(p).next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.entry(n).prev = prev,
        }
    }

    fn push_front(&mut self, i: usize) {
        let old_head = self.head;
        {
            let e = self.entry(i);
            e.prev = NIL;
            e.next = old_head;
        }
        match old_head {
            NIL => self.tail = i,
            h => self.entry(h).prev = i,
        }
        self.head = i;
    }

    /// Removes entry `i`; returns the bytes it was charged.
    fn remove(&mut self, i: usize) -> u64 {
        self.unlink(i);
        let e = self.slots[i].take().expect("linked slot holds an entry");
        self.map.remove(&e.key);
        self.free.push(i);
        let c = charge(&e.value);
        self.bytes -= c;
        c
    }
}

/// A bounded LRU cache of materialized values (see the module documentation).
pub struct PageCache {
    capacity_bytes: u64,
    inner: Mutex<Inner>,
}

impl PageCache {
    /// An empty cache holding at most `capacity_bytes` (0 disables it).
    pub fn new(capacity_bytes: u64) -> PageCache {
        PageCache {
            capacity_bytes,
            inner: Mutex::new(Inner::new()),
        }
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest of `versions_newest_first` cached for `key` of `tag`, with its value; counts
    /// one hit or one miss.
    pub fn lookup_newest(
        &self,
        tag: TimelineTag,
        key: Key,
        versions_newest_first: impl IntoIterator<Item = Lsn>,
    ) -> Option<(Lsn, Bytes)> {
        let mut inner = self.lock();
        let found = versions_newest_first.into_iter().find_map(|version_lsn| {
            let ck = CacheKey {
                tag,
                key,
                version_lsn,
            };
            inner.map.get(&ck).map(|i| (*i, version_lsn))
        });
        let Some((i, lsn)) = found else {
            inner.misses += 1;
            METRICS.page_cache_misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        inner.hits += 1;
        METRICS.page_cache_hits.fetch_add(1, Ordering::Relaxed);
        inner.unlink(i);
        inner.push_front(i);
        Some((lsn, inner.entry(i).value.clone()))
    }

    /// Caches `value` as the value of `key` of `tag` at its version `version_lsn`, evicting
    /// least recently used entries to stay within the budget. A value larger than the whole
    /// budget is not cached.
    pub fn insert(&self, tag: TimelineTag, key: Key, version_lsn: Lsn, value: Bytes) {
        let c = charge(&value);
        if c > self.capacity_bytes {
            return;
        }
        let ck = CacheKey {
            tag,
            key,
            version_lsn,
        };
        let mut inner = self.lock();
        let mut freed = 0;
        if let Some(i) = inner.map.get(&ck).copied() {
            freed += inner.remove(i);
        }
        while inner.bytes + c > self.capacity_bytes && inner.tail != NIL {
            let t = inner.tail;
            freed += inner.remove(t);
        }
        let entry = Entry {
            key: ck,
            value,
            prev: NIL,
            next: NIL,
        };
        let i = match inner.free.pop() {
            Some(i) => {
                inner.slots[i] = Some(entry);
                i
            }
            None => {
                inner.slots.push(Some(entry));
                inner.slots.len() - 1
            }
        };
        inner.map.insert(ck, i);
        inner.push_front(i);
        inner.bytes += c;
        METRICS.page_cache_bytes.fetch_add(c, Ordering::Relaxed);
        METRICS.page_cache_bytes.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Drops every entry of `tag` (its timeline is gone).
    pub fn forget_timeline(&self, tag: TimelineTag) {
        let mut inner = self.lock();
        let doomed: Vec<usize> = inner
            .map
            .iter()
            .filter(|(k, _)| k.tag == tag)
            .map(|(_, i)| *i)
            .collect();
        let freed: u64 = doomed.into_iter().map(|i| inner.remove(i)).sum();
        METRICS.page_cache_bytes.fetch_sub(freed, Ordering::Relaxed);
    }

    pub fn stats(&self) -> PageCacheStats {
        let inner = self.lock();
        PageCacheStats {
            hits: inner.hits,
            misses: inner.misses,
            bytes: inner.bytes,
            entries: inner.map.len(),
        }
    }
}

impl Drop for PageCache {
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        METRICS.page_cache_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

static GLOBAL: OnceLock<Arc<PageCache>> = OnceLock::new();

/// Sets the byte budget of the process-wide cache; returns false (and changes nothing) if the
/// cache was already created. Call once at startup, before loading tenants.
pub fn configure_global(capacity_bytes: u64) -> bool {
    GLOBAL.set(Arc::new(PageCache::new(capacity_bytes))).is_ok()
}

/// The process-wide cache, created with [`DEFAULT_PAGE_CACHE_SIZE_BYTES`] on first use unless
/// [`configure_global`] came first.
pub fn global() -> Arc<PageCache> {
    GLOBAL
        .get_or_init(|| Arc::new(PageCache::new(DEFAULT_PAGE_CACHE_SIZE_BYTES)))
        .clone()
}

#[cfg(test)]
mod tests;

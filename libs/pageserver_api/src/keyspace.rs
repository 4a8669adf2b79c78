//! Sets of keys as sorted, disjoint, merged half-open ranges.

use std::ops::Range;

use crate::key::Key;

/// A set of keys: sorted, non-overlapping, non-adjacent, non-empty half-open ranges.
///
/// Adjacent or overlapping ranges are merged on insertion, so two key spaces holding the same
/// keys compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySpace {
    ranges: Vec<Range<Key>>,
}

impl KeySpace {
    /// The empty set.
    pub fn new() -> KeySpace {
        KeySpace::default()
    }

    /// The set covered by `ranges` (in any order, possibly overlapping or empty).
    pub fn from_ranges(ranges: impl IntoIterator<Item = Range<Key>>) -> KeySpace {
        let mut ranges: Vec<Range<Key>> = ranges.into_iter().filter(|r| r.start < r.end).collect();
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<Key>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        KeySpace { ranges: merged }
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[Range<Key>] {
        &self.ranges
    }

    /// Consumes the set into its ranges.
    pub fn into_ranges(self) -> Vec<Range<Key>> {
        self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Adds the keys of `range` (nothing if it is empty).
    pub fn add_range(&mut self, range: Range<Key>) {
        if range.start >= range.end {
            return;
        }
        // Ranges that end before `range` starts and do not touch it stay as they are; so do
        // those starting after it ends. The ones in between merge with it.
        let first = self.ranges.partition_point(|r| r.end < range.start);
        let last = self.ranges.partition_point(|r| r.start <= range.end);
        let mut merged = range;
        if first < last {
            merged.start = merged.start.min(self.ranges[first].start);
            merged.end = merged.end.max(self.ranges[last - 1].end);
        }
        self.ranges.splice(first..last, std::iter::once(merged));
    }

    /// Adds a single key.
    pub fn add_key(&mut self, key: Key) {
        // `Key::MAX` cannot be the start of a half-open range with a larger end.
        if key < Key::MAX {
            self.add_range(key..key.next());
        }
    }

    /// Adds every key of `other`.
    pub fn add_keyspace(&mut self, other: &KeySpace) {
        for r in &other.ranges {
            self.add_range(r.clone());
        }
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: &Key) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= *key);
        self.ranges.get(i).is_some_and(|r| r.start <= *key)
    }

    /// Whether every key of `range` is in the set (true for an empty range).
    pub fn contains_range(&self, range: &Range<Key>) -> bool {
        if range.start >= range.end {
            return true;
        }
        let i = self.ranges.partition_point(|r| r.end <= range.start);
        self.ranges
            .get(i)
            .is_some_and(|r| r.start <= range.start && range.end <= r.end)
    }

    /// Whether some key of `range` is in the set.
    pub fn overlaps(&self, range: &Range<Key>) -> bool {
        if range.start >= range.end {
            return false;
        }
        let i = self.ranges.partition_point(|r| r.end <= range.start);
        self.ranges.get(i).is_some_and(|r| r.start < range.end)
    }

    /// The keys of the set that lie in `range`.
    pub fn intersect_range(&self, range: &Range<Key>) -> KeySpace {
        let first = self.ranges.partition_point(|r| r.end <= range.start);
        let ranges = self.ranges[first..]
            .iter()
            .take_while(|r| r.start < range.end)
            .map(|r| r.start.max(range.start)..r.end.min(range.end))
            .filter(|r| r.start < r.end)
            .collect();
        KeySpace { ranges }
    }

    /// The keys of the set that are not in `other`.
    pub fn subtract(&self, other: &KeySpace) -> KeySpace {
        let mut out = Vec::new();
        let mut theirs = other.ranges.iter().peekable();
        for r in &self.ranges {
            let mut start = r.start;
            while let Some(o) = theirs.peek() {
                if o.end <= start {
                    theirs.next();
                    continue;
                }
                if o.start >= r.end {
                    break;
                }
                if o.start > start {
                    out.push(start..o.start);
                }
                start = o.end;
                if o.end > r.end {
                    break;
                }
                theirs.next();
            }
            if start < r.end {
                out.push(start..r.end);
            }
        }
        KeySpace { ranges: out }
    }

    /// The smallest range holding every key of the set.
    pub fn bounds(&self) -> Option<Range<Key>> {
        let first = self.ranges.first()?;
        let last = self.ranges.last()?;
        Some(first.start..last.end)
    }

    /// Number of keys in the set, saturating at `u64::MAX`.
    pub fn total_keys(&self) -> u64 {
        self.ranges.iter().fold(0u64, |acc, r| {
            acc.saturating_add(r.start.distance_to(&r.end))
        })
    }

    /// Every key of the set in order (lazily; a set may hold very many keys).
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.ranges.iter().flat_map(|r| {
            std::iter::successors(Some(r.start), move |k| {
                let next = k.next();
                (next < r.end).then_some(next)
            })
        })
    }

    /// Splits the set, in key order, into consecutive parts of `max_keys_per_part` keys (at
    /// least 1) each, the last one possibly smaller; at most `max_parts` parts (at least 1): the
    /// last allowed part takes all remaining keys, however many. No part is empty.
    pub fn partition(&self, max_keys_per_part: u64, max_parts: usize) -> Vec<KeySpace> {
        let per_part = max_keys_per_part.max(1);
        let max_parts = max_parts.max(1);
        let mut parts = Vec::new();
        let mut current = KeySpace::new();
        let mut current_keys = 0u64;
        for (i, r) in self.ranges.iter().enumerate() {
            let mut start = r.start;
            while start < r.end {
                if parts.len() + 1 == max_parts {
                    // The last part: everything that is left.
                    current.ranges.push(start..r.end);
                    current.ranges.extend(self.ranges[i + 1..].iter().cloned());
                    parts.push(current);
                    return parts;
                }
                let take = start.distance_to(&r.end).min(per_part - current_keys);
                let end = start.add_u64(take);
                current.ranges.push(start..end);
                current_keys += take;
                start = end;
                if current_keys == per_part {
                    parts.push(std::mem::take(&mut current));
                    current_keys = 0;
                }
            }
        }
        if !current.is_empty() {
            parts.push(current);
        }
        parts
    }
}

impl FromIterator<Range<Key>> for KeySpace {
    fn from_iter<I: IntoIterator<Item = Range<Key>>>(iter: I) -> Self {
        KeySpace::from_ranges(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn k(n: u32) -> Key {
        Key {
            field6: n,
            ..Key::MIN
        }
    }

    #[test]
    fn merges_overlapping_and_adjacent() {
        let mut ks = KeySpace::new();
        ks.add_range(k(10)..k(20));
        ks.add_range(k(30)..k(40));
        assert_eq!(ks.ranges(), &[k(10)..k(20), k(30)..k(40)]);
        ks.add_range(k(20)..k(25));
        assert_eq!(ks.ranges(), &[k(10)..k(25), k(30)..k(40)]);
        ks.add_range(k(5)..k(5));
        assert_eq!(ks.ranges().len(), 2);
        ks.add_range(k(24)..k(31));
        assert_eq!(ks.ranges(), &[k(10)..k(40)]);
        assert_eq!(ks.total_keys(), 30);
        assert!(ks.contains(&k(10)));
        assert!(ks.contains(&k(39)));
        assert!(!ks.contains(&k(40)));
        assert!(!ks.contains(&k(9)));
        assert_eq!(ks.bounds(), Some(k(10)..k(40)));
    }

    #[test]
    fn partition_splits_ranges() {
        let ks = KeySpace::from_ranges([k(0)..k(5), k(10)..k(13)]);
        let parts = ks.partition(3, 100);
        let expect = vec![
            KeySpace::from_ranges([k(0)..k(3)]),
            KeySpace {
                ranges: vec![k(3)..k(5), k(10)..k(11)],
            },
            KeySpace::from_ranges([k(11)..k(13)]),
        ];
        assert_eq!(parts, expect);
        assert_eq!(parts, ks.partition(3, 3));
        assert_eq!(ks.partition(0, 100).len(), 8);
        assert!(KeySpace::new().partition(10, 100).is_empty());
        let capped = ks.partition(3, 2);
        assert_eq!(capped[0], expect[0]);
        assert_eq!(capped[1], ks.subtract(&expect[0]));
        assert_eq!(ks.partition(1, 0), vec![ks.clone()]);
    }

    #[test]
    fn huge_ranges_saturate() {
        let ks = KeySpace::from_ranges([Key::MIN..Key::MAX]);
        assert_eq!(ks.total_keys(), u64::MAX);
        let parts = ks.partition(u64::MAX, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].total_keys(), u64::MAX);
        assert_eq!(parts[2].bounds().unwrap().end, Key::MAX);
        let mut ks = KeySpace::new();
        ks.add_key(Key::MAX);
        assert!(ks.is_empty());
    }

    /// An operation on a key space, over small keys so a set of keys can model it.
    #[derive(Debug, Clone)]
    enum Op {
        Add(u32, u32),
        AddKey(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..64, 0u32..64).prop_map(|(a, b)| Op::Add(a, b)),
            (0u32..64).prop_map(Op::AddKey),
        ]
    }

    fn model_of(ks: &KeySpace) -> BTreeSet<u32> {
        ks.keys().map(|key| key.field6).collect()
    }

    fn check_invariants(ks: &KeySpace) -> Result<(), TestCaseError> {
        for r in ks.ranges() {
            prop_assert!(r.start < r.end);
        }
        for w in ks.ranges().windows(2) {
            prop_assert!(w[0].end < w[1].start, "not merged: {:?}", w);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn matches_set_model(ops in proptest::collection::vec(op(), 0..40),
                             probe in (0u32..70, 0u32..70),
                             other in proptest::collection::vec((0u32..64, 0u32..64), 0..6)) {
            let mut ks = KeySpace::new();
            let mut model = BTreeSet::new();
            for op in &ops {
                match *op {
                    Op::Add(a, b) => {
                        ks.add_range(k(a)..k(b));
                        model.extend(a..b);
                    }
                    Op::AddKey(a) => {
                        ks.add_key(k(a));
                        model.insert(a);
                    }
                }
                check_invariants(&ks)?;
                prop_assert_eq!(&model_of(&ks), &model);
            }
            prop_assert_eq!(ks.total_keys(), model.len() as u64);
            for n in 0..70 {
                prop_assert_eq!(ks.contains(&k(n)), model.contains(&n));
            }
            let (a, b) = probe;
            let range_keys: BTreeSet<u32> = (a..b).collect();
            prop_assert_eq!(ks.contains_range(&(k(a)..k(b))), range_keys.is_subset(&model));
            prop_assert_eq!(ks.overlaps(&(k(a)..k(b))), !range_keys.is_disjoint(&model));
            let inter = ks.intersect_range(&(k(a)..k(b)));
            check_invariants(&inter)?;
            prop_assert_eq!(model_of(&inter), &model & &range_keys);

            let other_ks = KeySpace::from_ranges(other.iter().map(|&(a, b)| k(a)..k(b)));
            let other_model: BTreeSet<u32> = other.iter().flat_map(|&(a, b)| a..b).collect();
            prop_assert_eq!(&model_of(&other_ks), &other_model);
            let diff = ks.subtract(&other_ks);
            check_invariants(&diff)?;
            prop_assert_eq!(model_of(&diff), &model - &other_model);
            let mut union = ks.clone();
            union.add_keyspace(&other_ks);
            prop_assert_eq!(model_of(&union), &model | &other_model);
        }

        #[test]
        fn partition_preserves_keys(ranges in proptest::collection::vec((0u32..200, 0u32..200), 0..8),
                                    max in 1u64..20, max_parts in 1usize..10) {
            let ks = KeySpace::from_ranges(ranges.iter().map(|&(a, b)| k(a)..k(b)));
            let parts = ks.partition(max, max_parts);
            prop_assert!(parts.len() <= max_parts);
            let mut all = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                check_invariants(part)?;
                if i + 1 < parts.len() {
                    prop_assert_eq!(part.total_keys(), max);
                } else if parts.len() < max_parts {
                    prop_assert!(part.total_keys() >= 1 && part.total_keys() <= max);
                } else {
                    prop_assert!(part.total_keys() >= 1);
                }
                all.extend(part.keys());
            }
            prop_assert_eq!(all, ks.keys().collect::<Vec<_>>());
        }
    }
}

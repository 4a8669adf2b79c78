//! An immutable on-disk B-tree mapping fixed-width byte-string keys to `u64` values.
//!
//! The tree is built bottom-up from keys given in strictly increasing order, and written as
//! a sequence of 8 KiB nodes: every node is written after all of its children, so the root
//! is the last node and child block numbers are always smaller than their parent's. Block
//! numbers are relative to the first node of the tree ("index block numbers").
//!
//! Node layout (all integers big-endian):
//!
//! ```text
//! 0   crc32c      u32   over the index block number (u32 BE) followed by bytes 4..8192
//! 4   magic       u16   0x4E42
//! 6   level       u8    0 = leaf; a node's children have level - 1
//! 7   key_len     u8    bytes per key (fixed for the whole tree)
//! 8   num_entries u16
//! 10  reserved    u16   0
//! 12  keys        num_entries * key_len bytes, strictly increasing
//! ..  values      num_entries * u64
//! ..  zeros up to 8192
//! ```
//!
//! A leaf maps keys to values. An internal node has one entry per child: the child's first
//! key and the child's index block number. Lookups binary-search each node on the way down;
//! every node read is checksum-verified and checked for consistency (level, ordering, child
//! before parent, separator equal to the child's first key) before it is used.

use crate::error::LayerError;
use crate::file_io::{AppendFile, ReadFile, BLOCK_SIZE_BYTES};

/// Bytes before the keys of a node.
pub const NODE_HEADER_BYTES: usize = 12;
/// Magic number of an index node.
pub const NODE_MAGIC: u16 = 0x4E42;
/// Longest key a tree may have.
pub const MAX_KEY_BYTES: usize = 64;
/// Highest level a node may have (far more than `u32` block numbers could ever need).
pub const MAX_TREE_LEVEL: u8 = 16;

const VALUE_BYTES: usize = 8;

/// How many entries fit in one node for keys of `key_len` bytes.
pub fn max_entries_per_node(key_len: usize) -> usize {
    (BLOCK_SIZE_BYTES - NODE_HEADER_BYTES) / (key_len + VALUE_BYTES)
}

fn node_crc(index_blk: u32, node: &[u8; BLOCK_SIZE_BYTES]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&index_blk.to_be_bytes()), &node[4..])
}

/// Where finished nodes go, in index block number order.
pub trait NodeSink {
    fn write_node(&mut self, node: &[u8; BLOCK_SIZE_BYTES]) -> Result<(), LayerError>;
}

impl NodeSink for AppendFile {
    fn write_node(&mut self, node: &[u8; BLOCK_SIZE_BYTES]) -> Result<(), LayerError> {
        self.append(node)
    }
}

/// Keeps the nodes in memory (for small trees and tests).
impl NodeSink for Vec<u8> {
    fn write_node(&mut self, node: &[u8; BLOCK_SIZE_BYTES]) -> Result<(), LayerError> {
        self.extend_from_slice(node);
        Ok(())
    }
}

/// What a finished tree looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BtreeShape {
    /// Number of nodes; the root is node `num_blocks - 1`.
    pub num_blocks: u32,
    /// Number of leaf entries.
    pub num_entries: u64,
}

/// The node being filled at one level of the tree under construction.
#[derive(Default)]
struct LevelBuilder {
    keys: Vec<u8>,
    values: Vec<u64>,
    nodes_written: u64,
}

/// Builds a tree from entries in strictly increasing key order, writing each node as soon
/// as it is full. Memory: one node's worth of entries per level.
pub struct BtreeBuilder<S: NodeSink> {
    sink: S,
    key_len: usize,
    max_entries: usize,
    levels: Vec<LevelBuilder>,
    blocks_written: u32,
    last_key: Option<Vec<u8>>,
    num_entries: u64,
}

impl<S: NodeSink> BtreeBuilder<S> {
    /// A builder for keys of `key_len` bytes (1 to [`MAX_KEY_BYTES`]).
    pub fn new(sink: S, key_len: usize) -> Self {
        assert!(
            (1..=MAX_KEY_BYTES).contains(&key_len),
            "key length {key_len} out of range"
        );
        BtreeBuilder {
            sink,
            key_len,
            max_entries: max_entries_per_node(key_len),
            levels: vec![LevelBuilder::default()],
            blocks_written: 0,
            last_key: None,
            num_entries: 0,
        }
    }

    /// Number of entries appended so far.
    pub fn num_entries(&self) -> u64 {
        self.num_entries
    }

    /// Adds an entry; `key` must sort strictly after the previous one.
    pub fn append(&mut self, key: &[u8], value: u64) -> Result<(), LayerError> {
        if key.len() != self.key_len {
            return Err(LayerError::OutOfRange {
                reason: format!(
                    "index key of {} bytes, expected {}",
                    key.len(),
                    self.key_len
                ),
            });
        }
        if let Some(prev) = &self.last_key {
            if key <= prev.as_slice() {
                return Err(LayerError::OutOfOrder {
                    prev: hex_string(prev),
                    next: hex_string(key),
                });
            }
        }
        self.push(0, key, value)?;
        self.last_key = Some(key.to_vec());
        self.num_entries += 1;
        Ok(())
    }

    fn push(&mut self, level: usize, key: &[u8], value: u64) -> Result<(), LayerError> {
        if level == self.levels.len() {
            self.levels.push(LevelBuilder::default());
        }
        if self.levels[level].values.len() == self.max_entries {
            self.flush_level(level)?;
        }
        let lb = &mut self.levels[level];
        lb.keys.extend_from_slice(key);
        lb.values.push(value);
        Ok(())
    }

    /// Writes the node being filled at `level` and links it into the level above.
    fn flush_level(&mut self, level: usize) -> Result<(), LayerError> {
        let blk = self.write_level_node(level)?;
        let lb = &mut self.levels[level];
        let first_key = lb.keys[..self.key_len].to_vec();
        lb.keys.clear();
        lb.values.clear();
        lb.nodes_written += 1;
        self.push(level + 1, &first_key, u64::from(blk))
    }

    fn write_level_node(&mut self, level: usize) -> Result<u32, LayerError> {
        let blk = self.blocks_written;
        let lb = &self.levels[level];
        let node = encode_node(blk, level as u8, self.key_len, &lb.keys, &lb.values);
        self.sink.write_node(&node)?;
        self.blocks_written = blk.checked_add(1).ok_or(LayerError::OutOfRange {
            reason: "index has more than 2^32 nodes".to_string(),
        })?;
        Ok(blk)
    }

    /// Writes the partly filled nodes and the root; returns the sink and the tree's shape.
    /// A tree without entries is a single empty leaf.
    pub fn finish(mut self) -> Result<(S, BtreeShape), LayerError> {
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            if top && self.levels[level].nodes_written == 0 {
                self.write_level_node(level)?;
                break;
            }
            if !self.levels[level].values.is_empty() {
                self.flush_level(level)?;
            }
            level += 1;
        }
        let shape = BtreeShape {
            num_blocks: self.blocks_written,
            num_entries: self.num_entries,
        };
        Ok((self.sink, shape))
    }
}

fn encode_node(
    blk: u32,
    level: u8,
    key_len: usize,
    keys: &[u8],
    values: &[u64],
) -> Box<[u8; BLOCK_SIZE_BYTES]> {
    let mut node = Box::new([0u8; BLOCK_SIZE_BYTES]);
    node[4..6].copy_from_slice(&NODE_MAGIC.to_be_bytes());
    node[6] = level;
    node[7] = key_len as u8;
    node[8..10].copy_from_slice(&(values.len() as u16).to_be_bytes());
    let keys_end = NODE_HEADER_BYTES + keys.len();
    node[NODE_HEADER_BYTES..keys_end].copy_from_slice(keys);
    for (i, v) in values.iter().enumerate() {
        let at = keys_end + i * VALUE_BYTES;
        node[at..at + VALUE_BYTES].copy_from_slice(&v.to_be_bytes());
    }
    let crc = node_crc(blk, &node);
    node[..4].copy_from_slice(&crc.to_be_bytes());
    node
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// A verified node read from disk.
pub struct Node {
    blk: u32,
    level: u8,
    num_entries: usize,
    key_len: usize,
    buf: Box<[u8; BLOCK_SIZE_BYTES]>,
}

impl Node {
    pub fn level(&self) -> u8 {
        self.level
    }

    pub fn num_entries(&self) -> usize {
        self.num_entries
    }

    pub fn key(&self, i: usize) -> &[u8] {
        let at = NODE_HEADER_BYTES + i * self.key_len;
        &self.buf[at..at + self.key_len]
    }

    pub fn value(&self, i: usize) -> u64 {
        let at = NODE_HEADER_BYTES + self.num_entries * self.key_len + i * VALUE_BYTES;
        u64::from_be_bytes(self.buf[at..at + VALUE_BYTES].try_into().expect("8 bytes"))
    }

    /// `Ok(i)` if entry `i` has `key`, else `Err(i)` with `i` the number of smaller keys.
    fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.num_entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// The child to descend into for `key`: the last entry whose key is `<= key`, or `None`
    /// when `key` sorts before every entry.
    fn child_index_for(&self, key: &[u8]) -> Option<usize> {
        match self.search(key) {
            Ok(i) => Some(i),
            Err(0) => None,
            Err(i) => Some(i - 1),
        }
    }
}

/// Reads a tree stored in `num_blocks` blocks from block `start_blk` of a file.
#[derive(Clone, Copy)]
pub struct BtreeReader<'a> {
    file: &'a ReadFile,
    start_blk: u32,
    num_blocks: u32,
    key_len: usize,
}

impl<'a> BtreeReader<'a> {
    pub fn new(file: &'a ReadFile, start_blk: u32, num_blocks: u32, key_len: usize) -> Self {
        BtreeReader {
            file,
            start_blk,
            num_blocks,
            key_len,
        }
    }

    fn corrupt(&self, reason: String) -> LayerError {
        LayerError::corrupt(self.file.path(), reason)
    }

    /// Reads and verifies the root node.
    pub fn read_root(&self) -> Result<Node, LayerError> {
        let root_blk = self
            .num_blocks
            .checked_sub(1)
            .ok_or_else(|| self.corrupt("index has no nodes".to_string()))?;
        self.read_node(root_blk, None)
    }

    /// Reads node `blk`, verifying its checksum and contents. `expected_level`: `None` for
    /// the root, which is also the only node allowed to be empty.
    fn read_node(&self, blk: u32, expected_level: Option<u8>) -> Result<Node, LayerError> {
        let abs_blk = self
            .start_blk
            .checked_add(blk)
            .filter(|_| blk < self.num_blocks)
            .ok_or_else(|| self.corrupt(format!("index block {blk} is out of range")))?;
        let mut buf = Box::new([0u8; BLOCK_SIZE_BYTES]);
        self.file.read_block(abs_blk, &mut buf, "index node")?;
        let stored_crc = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
        if stored_crc != node_crc(blk, &buf) {
            return Err(LayerError::ChecksumMismatch {
                path: self.file.path().to_path_buf(),
                offset: u64::from(abs_blk) * BLOCK_SIZE_BYTES as u64,
                what: "index node",
            });
        }
        let node = Node {
            blk,
            level: buf[6],
            num_entries: u16::from_be_bytes([buf[8], buf[9]]) as usize,
            key_len: self.key_len,
            buf,
        };
        self.check_node(&node, expected_level)?;
        Ok(node)
    }

    fn check_node(&self, node: &Node, expected_level: Option<u8>) -> Result<(), LayerError> {
        let b = &node.buf;
        let blk = node.blk;
        if u16::from_be_bytes([b[4], b[5]]) != NODE_MAGIC || b[10..12] != [0, 0] {
            return Err(self.corrupt(format!("index block {blk} is not an index node")));
        }
        if b[7] as usize != self.key_len {
            return Err(self.corrupt(format!("index block {blk} has key length {}", b[7])));
        }
        if node.level > MAX_TREE_LEVEL || expected_level.is_some_and(|l| l != node.level) {
            return Err(self.corrupt(format!(
                "index block {blk} has level {}, expected {expected_level:?}",
                node.level
            )));
        }
        let n = node.num_entries;
        let empty_ok = expected_level.is_none() && node.level == 0;
        if n > max_entries_per_node(self.key_len) || (n == 0 && !empty_ok) {
            return Err(self.corrupt(format!("index block {blk} has {n} entries")));
        }
        if (1..n).any(|i| node.key(i - 1) >= node.key(i)) {
            return Err(self.corrupt(format!("index block {blk} has keys out of order")));
        }
        Ok(())
    }

    /// Reads child `i` of internal node `parent` and checks it against the parent.
    fn read_child(&self, parent: &Node, i: usize) -> Result<Node, LayerError> {
        let child_blk = parent.value(i);
        if child_blk >= u64::from(parent.blk) {
            return Err(self.corrupt(format!(
                "index block {} points to block {child_blk}, not an earlier one",
                parent.blk
            )));
        }
        let child = self.read_node(child_blk as u32, Some(parent.level - 1))?;
        if child.key(0) != parent.key(i) {
            return Err(self.corrupt(format!(
                "index block {child_blk} starts with a key other than its separator in block {}",
                parent.blk
            )));
        }
        Ok(child)
    }

    /// The value stored under exactly `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<u64>, LayerError> {
        let mut node = self.read_root()?;
        while node.level > 0 {
            let Some(i) = node.child_index_for(key) else {
                return Ok(None);
            };
            node = self.read_child(&node, i)?;
        }
        Ok(node.search(key).ok().map(|i| node.value(i)))
    }

    /// An iterator over the entries with keys `>= start`, in key order.
    pub fn iter_from(&self, start: &[u8]) -> Result<BtreeIter<'a>, LayerError> {
        let mut stack = Vec::new();
        let mut node = self.read_root()?;
        while node.level > 0 {
            let i = node.child_index_for(start).unwrap_or(0);
            let child = self.read_child(&node, i)?;
            stack.push((node, i));
            node = child;
        }
        let i = node.search(start).unwrap_or_else(|i| i);
        stack.push((node, i));
        Ok(BtreeIter {
            reader: *self,
            stack,
            prev_key: Vec::with_capacity(self.key_len),
            done: false,
        })
    }
}

/// Walks the leaves in key order, holding the path from the root (one node per level).
pub struct BtreeIter<'a> {
    reader: BtreeReader<'a>,
    /// Nodes from the root down to the current leaf, each with the position of the entry
    /// (leaf) or child (internal) being visited.
    stack: Vec<(Node, usize)>,
    prev_key: Vec<u8>,
    done: bool,
}

impl BtreeIter<'_> {
    /// The next entry, or `None` at the end. After an error the iterator ends.
    pub fn next_entry(&mut self) -> Result<Option<(&[u8], u64)>, LayerError> {
        if self.done {
            return Ok(None);
        }
        match self.advance() {
            Ok(Some(value)) => Ok(Some((&self.prev_key, value))),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    /// Moves to the next entry, leaving its key in `prev_key`.
    fn advance(&mut self) -> Result<Option<u64>, LayerError> {
        loop {
            let Some((leaf, i)) = self.stack.last_mut() else {
                return Ok(None);
            };
            if *i < leaf.num_entries {
                let key = leaf.key(*i);
                if !self.prev_key.is_empty() && key <= self.prev_key.as_slice() {
                    return Err(self
                        .reader
                        .corrupt(format!("index leaf {} is out of key order", leaf.blk)));
                }
                self.prev_key.clear();
                self.prev_key.extend_from_slice(key);
                let value = leaf.value(*i);
                *i += 1;
                return Ok(Some(value));
            }
            self.stack.pop();
            if !self.next_leaf()? {
                return Ok(None);
            }
        }
    }

    /// After the leaf has been popped: climbs to the nearest ancestor with a next child and
    /// descends to that child's first leaf. Returns false when there are no more leaves.
    fn next_leaf(&mut self) -> Result<bool, LayerError> {
        loop {
            let Some((node, i)) = self.stack.last_mut() else {
                return Ok(false);
            };
            *i += 1;
            if *i < node.num_entries {
                break;
            }
            self.stack.pop();
        }
        loop {
            let (node, i) = self.stack.last().expect("non-empty");
            if node.level == 0 {
                return Ok(true);
            }
            let child = self.reader.read_child(node, *i)?;
            self.stack.push((child, 0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use rand::{Rng, SeedableRng};

    fn build(path: &std::path::Path, entries: &BTreeMap<Vec<u8>, u64>, key_len: usize) -> u32 {
        let file = AppendFile::create(path).unwrap();
        let mut b = BtreeBuilder::new(file, key_len);
        for (k, v) in entries {
            b.append(k, *v).unwrap();
        }
        let (mut file, shape) = b.finish().unwrap();
        assert_eq!(shape.num_entries, entries.len() as u64);
        file.sync().unwrap();
        shape.num_blocks
    }

    fn collect(it: &mut BtreeIter) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        while let Some((k, v)) = it.next_entry().unwrap() {
            out.push((k.to_vec(), v));
        }
        out
    }

    #[test]
    fn matches_a_model_for_many_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let small = max_entries_per_node(5);
        let wide = max_entries_per_node(60);
        let cases = [
            (5, 0, 0),
            (5, 1, 0),
            (5, 2, 0),
            (5, small - 1, 0),
            (5, small, 0),
            (5, small + 1, 1),
            (60, wide * wide + 3, 2),
        ];
        for (key_len, count, root_level) in cases {
            let random_key = |rng: &mut rand::rngs::StdRng| -> Vec<u8> {
                (0..key_len).map(|_| rng.gen_range(0..40u8)).collect()
            };
            let mut model = BTreeMap::new();
            while model.len() < count {
                model.insert(random_key(&mut rng), rng.gen());
            }
            let path = dir.path().join(format!("tree{count}"));
            let num_blocks = build(&path, &model, key_len);
            let file = ReadFile::open(&path).unwrap();
            let tree = BtreeReader::new(&file, 0, num_blocks, key_len);
            assert_eq!(tree.read_root().unwrap().level(), root_level);
            for _ in 0..300 {
                let probe = random_key(&mut rng);
                assert_eq!(tree.get(&probe).unwrap(), model.get(&probe).copied());
                let mut it = tree.iter_from(&probe).unwrap();
                for (k, v) in model.range(probe..).take(50) {
                    assert_eq!(it.next_entry().unwrap(), Some((k.as_slice(), *v)));
                }
            }
            for (k, v) in &model {
                assert_eq!(tree.get(k).unwrap(), Some(*v));
            }
            let all = collect(&mut tree.iter_from(&vec![0u8; key_len]).unwrap());
            let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            assert_eq!(all, want);
        }
    }

    #[test]
    fn builder_rejects_unordered_and_wrong_length_keys() {
        let mut b = BtreeBuilder::new(Vec::new(), 2);
        b.append(&[1, 1], 0).unwrap();
        let err = b.append(&[1, 1], 0).unwrap_err();
        assert!(matches!(err, LayerError::OutOfOrder { .. }), "{err}");
        let err = b.append(&[0, 9], 0).unwrap_err();
        assert!(matches!(err, LayerError::OutOfOrder { .. }), "{err}");
        let err = b.append(&[1, 2, 3], 0).unwrap_err();
        assert!(matches!(err, LayerError::OutOfRange { .. }), "{err}");
        b.append(&[1, 2], 5).unwrap();
        let (nodes, shape) = b.finish().unwrap();
        assert_eq!(shape.num_blocks, 1);
        assert_eq!(nodes.len(), BLOCK_SIZE_BYTES);
    }

    #[test]
    fn corrupt_nodes_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let key_len = 4;
        let model: BTreeMap<Vec<u8>, u64> = (0..3000u32)
            .map(|i| ((i * 3).to_be_bytes().to_vec(), u64::from(i)))
            .collect();
        let path = dir.path().join("tree");
        let num_blocks = build(&path, &model, key_len);
        let good = std::fs::read(&path).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..200 {
            let mut bad = good.clone();
            let pos = rng.gen_range(0..bad.len());
            bad[pos] ^= 1 << rng.gen_range(0..8);
            let bad_path = dir.path().join("bad");
            std::fs::write(&bad_path, &bad).unwrap();
            let file = ReadFile::open(&bad_path).unwrap();
            let tree = BtreeReader::new(&file, 0, num_blocks, key_len);
            for (k, v) in model.iter().step_by(37) {
                match tree.get(k) {
                    Ok(got) => assert_eq!(got, Some(*v), "flip at {pos}"),
                    Err(e) => assert!(e.is_corruption(), "{e}"),
                }
            }
            match tree.iter_from(&[0; 4]) {
                Ok(mut it) => loop {
                    match it.next_entry() {
                        Ok(Some((k, v))) => assert_eq!(model.get(k), Some(&v)),
                        Ok(None) => panic!("flip at {pos} went unnoticed by a full scan"),
                        Err(e) => {
                            assert!(e.is_corruption(), "{e}");
                            break;
                        }
                    }
                },
                Err(e) => assert!(e.is_corruption(), "{e}"),
            }
        }
    }

    #[test]
    fn wrong_geometry_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let model: BTreeMap<Vec<u8>, u64> = (0..1000u32)
            .map(|i| (i.to_be_bytes().to_vec(), 0))
            .collect();
        let path = dir.path().join("tree");
        let num_blocks = build(&path, &model, 4);
        let file = ReadFile::open(&path).unwrap();
        // Wrong key length, a node read at another position than it was written for, a
        // block past the end, no blocks.
        for tree in [
            BtreeReader::new(&file, 0, num_blocks, 5),
            BtreeReader::new(&file, 1, num_blocks - 1, 4),
            BtreeReader::new(&file, 0, num_blocks + 1, 4),
            BtreeReader::new(&file, 1, num_blocks, 4),
            BtreeReader::new(&file, 0, 0, 4),
        ] {
            let err = tree.get(&[0, 0, 0, 1]).unwrap_err();
            assert!(err.is_corruption(), "{err}");
        }
    }
}

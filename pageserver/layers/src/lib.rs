//! The pageserver's immutable layer files: delta layers (every version of a key range over
//! an LSN range) and image layers (every key of a key range at one LSN), with the blob and
//! B-tree building blocks they are made of. The on-disk format is described in FORMAT.md.
//!
//! The API is synchronous (plain `std::fs` and positioned reads); async callers use
//! `spawn_blocking`.

pub mod blob_io;
pub mod delta_layer;
pub mod disk_btree;
pub mod error;
pub mod file_io;
pub mod image_layer;
mod layer_file;
pub mod layer_name;
pub mod summary;

// The timeline's layer machinery: in-memory layers, layer map, read path, compaction.
pub mod compaction;
pub mod ephemeral_file;
pub mod inmemory_layer;
pub mod layer_map;
pub mod planner;
pub mod read_path;

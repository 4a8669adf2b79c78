//! Helpers shared by the WAL decoder tests: building small WAL streams and decoding them.
#![allow(dead_code)]

use bytes::Bytes;
use postgres_ffi::pg_constants::{
    RM_HEAP_ID, RM_XLOG_ID, XLOG_NOOP, XLOG_SWITCH, XLR_BLOCK_ID_DATA_LONG, XLR_BLOCK_ID_DATA_SHORT,
};
use postgres_ffi::waldecoder::{WalDecodeError, WalStreamDecoder};
use postgres_ffi::walrecord::{DecodedWalRecord, XLogRecordHeader};
use postgres_ffi::xlog_utils::WalBuilder;
use utils::lsn::Lsn;

/// A small segment size (1 MiB, the smallest PostgreSQL allows) to cross segments cheaply.
pub const SMALL_SEG: u64 = 1024 * 1024;
pub const SYSID: u64 = 7_000_000_000_000_000_042;

/// A record body holding only `len` bytes of main data (a short or long data header).
pub fn main_data_body(len: usize, fill: u8) -> Vec<u8> {
    let mut body = if len < 256 {
        vec![XLR_BLOCK_ID_DATA_SHORT, len as u8]
    } else {
        let mut v = vec![XLR_BLOCK_ID_DATA_LONG];
        v.extend_from_slice(&(len as u32).to_le_bytes());
        v
    };
    body.extend(std::iter::repeat_n(fill, len));
    body
}

pub fn heap_header(xid: u32) -> XLogRecordHeader {
    XLogRecordHeader {
        xl_xid: xid,
        xl_rmid: RM_HEAP_ID,
        ..Default::default()
    }
}

pub fn switch_header() -> XLogRecordHeader {
    XLogRecordHeader {
        xl_rmid: RM_XLOG_ID,
        xl_info: XLOG_SWITCH,
        ..Default::default()
    }
}

pub fn noop_header() -> XLogRecordHeader {
    XLogRecordHeader {
        xl_rmid: RM_XLOG_ID,
        xl_info: XLOG_NOOP,
        ..Default::default()
    }
}

/// One record to build: its header and body.
pub struct Rec {
    pub header: XLogRecordHeader,
    pub body: Vec<u8>,
}

impl Rec {
    pub fn heap(xid: u32, data_len: usize) -> Rec {
        Rec {
            header: heap_header(xid),
            body: main_data_body(data_len, xid as u8),
        }
    }

    pub fn switch() -> Rec {
        Rec {
            header: switch_header(),
            body: Vec::new(),
        }
    }
}

/// Builds WAL from `start` (a segment start, so that the first page has a long header)
/// with `records`; XLOG SWITCH records are followed by zeros up to the next segment.
/// Returns the bytes and the start LSN of each record.
pub fn build_wal(start: Lsn, seg_size: u64, records: &[Rec]) -> (Bytes, Vec<Lsn>) {
    let mut builder = WalBuilder::new(
        start,
        seg_size,
        1,
        SYSID,
        Lsn(start.0.saturating_sub(0x100)),
    );
    let mut starts = Vec::new();
    for rec in records {
        starts.push(builder.append_record(&rec.header, &rec.body).unwrap());
        if rec.header.is_xlog_switch() {
            builder.pad_to_segment_end();
        }
    }
    (builder.finish(), starts)
}

/// Feeds `data` in chunks of `chunk` bytes and collects records until the decoder needs
/// more input at the end or fails.
pub fn decode_all(
    dec: &mut WalStreamDecoder,
    data: &[u8],
    chunk: usize,
) -> (Vec<DecodedWalRecord>, Option<WalDecodeError>) {
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        dec.feed_bytes(piece);
        if let Err(e) = drain_records(dec, &mut out) {
            return (out, Some(e));
        }
    }
    (out, None)
}

/// Polls `dec` until it needs more input, appending the records it returns to `out`.
pub fn drain_records(
    dec: &mut WalStreamDecoder,
    out: &mut Vec<DecodedWalRecord>,
) -> Result<(), WalDecodeError> {
    while let Some(rec) = dec.poll_decode()? {
        out.push(rec);
    }
    Ok(())
}

/// A record body with block 0 (an LZ4-compressed image with a hole, plus data), block 1
/// (same relation, fsm fork, data only) and `main_len` bytes of main data.
pub fn body_with_blocks(page_seed: u8, main_len: usize) -> Vec<u8> {
    use postgres_ffi::pg_constants::*;
    let (hole_offset, hole_length) = (64u16, 4000u16);
    let unholed: Vec<u8> = (0..BLCKSZ - hole_length as usize)
        .map(|i| (i as u8).wrapping_mul(page_seed) / 16)
        .collect();
    let image = lz4_flex::block::compress(&unholed);
    let mut body = vec![0, BKPBLOCK_HAS_IMAGE | BKPBLOCK_HAS_DATA];
    body.extend_from_slice(&3u16.to_le_bytes());
    body.extend_from_slice(&(image.len() as u16).to_le_bytes());
    body.extend_from_slice(&hole_offset.to_le_bytes());
    body.push(BKPIMAGE_HAS_HOLE | BKPIMAGE_APPLY | BKPIMAGE_COMPRESS_LZ4);
    body.extend_from_slice(&hole_length.to_le_bytes());
    for v in [1663u32, 5, 16384, 7] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(&[1, 1 | BKPBLOCK_SAME_REL | BKPBLOCK_HAS_DATA, 2, 0]);
    body.extend_from_slice(&0u32.to_le_bytes());
    let main = main_data_body(main_len, page_seed);
    body.extend_from_slice(&main[..main.len() - main_len]);
    body.extend_from_slice(&image);
    body.extend_from_slice(b"abc");
    body.extend_from_slice(b"fs");
    body.extend_from_slice(&main[main.len() - main_len..]);
    body
}

//! The stdin/stdout protocol of `postgres --wal-redo` (pgxn/neon_walredo/walredoproc.c).
//!
//! Every message is `type u8, length u32 BE (counting itself, not the type), payload`:
//!
//! | type | message           | payload                                     | answer          |
//! |------|-------------------|---------------------------------------------|-----------------|
//! | `B`  | BeginRedoForBlock | tag                                         | –               |
//! | `P`  | PushPage          | tag, page (8192 bytes)                      | –               |
//! | `A`  | ApplyRecord       | end LSN u64 BE, the raw XLogRecord          | –               |
//! | `G`  | GetPage           | tag                                         | 8192-byte page  |
//! | `H`  | Ping              | –                                           | 8192 zero bytes |
//!
//! A tag is `forknum u8, spcnode u32, dbnode u32, relnode u32, blkno u32` (17 bytes, BE).
//! The process exits with status 0 at end of input, and with a non-zero status (after
//! writing the error to stderr) on any error.

use bytes::Bytes;
use postgres_ffi::page::BLCKSZ;
use utils::lsn::Lsn;

use crate::target::BufferTag;

/// Size of an encoded tag.
pub const TAG_BYTES: usize = 17;
/// Type byte and length word.
const HEADER_BYTES: usize = 5;
/// The largest payload the process accepts (MAX_PAYLOAD_BYTES in walredoproc.c).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of a request besides its ApplyRecord messages: BeginRedoForBlock, PushPage and
/// GetPage.
pub const FIXED_REQUEST_BYTES: usize = (HEADER_BYTES + TAG_BYTES) * 3 + BLCKSZ;

/// Encoded size of the ApplyRecord message of a record of `record_len` bytes.
pub fn apply_record_bytes(record_len: usize) -> usize {
    HEADER_BYTES + 8 + record_len
}

fn put_header(buf: &mut Vec<u8>, msg_type: u8, payload_len: usize) {
    debug_assert!(payload_len <= MAX_PAYLOAD_BYTES);
    buf.push(msg_type);
    // payload_len is bounded by MAX_PAYLOAD_BYTES, far below u32::MAX
    buf.extend_from_slice(&((payload_len + 4) as u32).to_be_bytes());
}

fn put_tag(buf: &mut Vec<u8>, tag: &BufferTag) {
    buf.push(tag.forknum);
    buf.extend_from_slice(&tag.spcnode.to_be_bytes());
    buf.extend_from_slice(&tag.dbnode.to_be_bytes());
    buf.extend_from_slice(&tag.relnode.to_be_bytes());
    buf.extend_from_slice(&tag.blkno.to_be_bytes());
}

/// One whole redo round trip: `B`, `P` (if there is a base page), an `A` per record (with
/// the LSN of the record's end), and `G`. The answer is the 8192-byte page.
pub fn encode_request(
    tag: &BufferTag,
    base_page: Option<&[u8; BLCKSZ]>,
    records: &[(Lsn, &Bytes)],
) -> Vec<u8> {
    let records_bytes: usize = records
        .iter()
        .map(|(_, r)| apply_record_bytes(r.len()))
        .sum();
    let mut buf = Vec::with_capacity(FIXED_REQUEST_BYTES + records_bytes);
    put_header(&mut buf, b'B', TAG_BYTES);
    put_tag(&mut buf, tag);
    if let Some(page) = base_page {
        put_header(&mut buf, b'P', TAG_BYTES + BLCKSZ);
        put_tag(&mut buf, tag);
        buf.extend_from_slice(page);
    }
    for (end_lsn, record) in records {
        put_header(&mut buf, b'A', 8 + record.len());
        buf.extend_from_slice(&end_lsn.0.to_be_bytes());
        buf.extend_from_slice(record);
    }
    put_header(&mut buf, b'G', TAG_BYTES);
    put_tag(&mut buf, tag);
    buf
}

/// A Ping; the answer is 8192 zero bytes.
pub fn encode_ping() -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_BYTES);
    put_header(&mut buf, b'H', 0);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let tag = BufferTag {
            spcnode: 1663,
            dbnode: 5,
            relnode: 0x0102_0304,
            forknum: 2,
            blkno: 9,
        };
        let page = [7u8; BLCKSZ];
        let rec = Bytes::from_static(b"0123456789012345678901234");
        let buf = encode_request(&tag, Some(&page), &[(Lsn(0x1122_3344_5566_7788), &rec)]);
        let tag_bytes = [2, 0, 0, 0x06, 0x7f, 0, 0, 0, 5, 1, 2, 3, 4, 0, 0, 0, 9];
        assert_eq!(&buf[..5], &[b'B', 0, 0, 0, 21]);
        assert_eq!(&buf[5..22], &tag_bytes);
        assert_eq!(&buf[22..27], &[b'P', 0, 0, 0x20, 21]);
        assert_eq!(&buf[27..44], &tag_bytes);
        assert_eq!(&buf[44..44 + BLCKSZ], &page);
        let a = 44 + BLCKSZ;
        assert_eq!(&buf[a..a + 5], &[b'A', 0, 0, 0, 4 + 8 + 25]);
        assert_eq!(&buf[a + 5..a + 13], &0x1122_3344_5566_7788u64.to_be_bytes());
        assert_eq!(&buf[a + 13..a + 38], &rec[..]);
        let g = a + 38;
        assert_eq!(&buf[g..g + 5], &[b'G', 0, 0, 0, 21]);
        assert_eq!(&buf[g + 5..], &tag_bytes);
        assert_eq!(
            buf.len(),
            FIXED_REQUEST_BYTES + apply_record_bytes(rec.len())
        );

        let no_base = encode_request(&tag, None, &[]);
        assert_eq!(no_base.len(), 44);
        assert_eq!(no_base[22], b'G');
        assert_eq!(encode_ping(), vec![b'H', 0, 0, 0, 4]);
    }
}

//! Decoded WAL records: the record header, block references, and the decoding of a
//! record's body, following PostgreSQL 15's `DecodeXLogRecord` (xlogreader.c).
//!
//! A record is `XLogRecord` (24 bytes), then the fragment headers (block headers, origin,
//! top-level xid, main data header), then the payloads in header order: for each block its
//! image and then its data, and finally the main data.

use bytes::Bytes;
use utils::lsn::Lsn;

use crate::pg_constants::{
    bkpimage_is_compressed, rmgr_name, BKPBLOCK_FORK_MASK, BKPBLOCK_HAS_DATA, BKPBLOCK_HAS_IMAGE,
    BKPBLOCK_SAME_REL, BKPBLOCK_WILL_INIT, BKPIMAGE_APPLY, BKPIMAGE_COMPRESS_LZ4,
    BKPIMAGE_COMPRESS_PGLZ, BKPIMAGE_COMPRESS_ZSTD, BKPIMAGE_HAS_HOLE, BLCKSZ, RM_XLOG_ID,
    XLOG_RECORD_CRC_OFFSET, XLOG_SIZE_OF_XLOG_RECORD, XLOG_SWITCH, XLR_BLOCK_ID_DATA_LONG,
    XLR_BLOCK_ID_DATA_SHORT, XLR_BLOCK_ID_ORIGIN, XLR_BLOCK_ID_TOPLEVEL_XID, XLR_MAX_BLOCK_ID,
    XLR_RMGR_INFO_MASK,
};
use crate::records::reader::Reader;
use crate::records::RecordDecodeError as MainDataError;
use crate::relfile::{ForkNumber, RelFileNode};

/// Why a record's body could not be decoded. PostgreSQL treats all of these as invalid WAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    #[error("record with invalid length")]
    ShortData,
    #[error("out-of-order block_id {0}")]
    OutOfOrderBlockId(u8),
    #[error("invalid block_id {0}")]
    InvalidBlockId(u8),
    #[error("invalid fork number {0}")]
    InvalidForkNumber(u8),
    #[error("BKPBLOCK_HAS_DATA set, but no data included")]
    DataFlagWithoutData,
    #[error("BKPBLOCK_HAS_DATA not set, but data length is {0}")]
    DataWithoutDataFlag(u16),
    #[error("BKPBLOCK_SAME_REL set but no previous rel")]
    SameRelWithoutPrevious,
    #[error("block image of {image_len} bytes with hole offset {hole_offset} length {hole_length} and bimg_info {bimg_info:#04x} is inconsistent")]
    BadImageHeader {
        image_len: u16,
        hole_offset: u16,
        hole_length: u16,
        bimg_info: u8,
    },
}

/// The fixed 24-byte header of every WAL record (XLogRecord).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XLogRecordHeader {
    /// Total length of the record, header included.
    pub xl_tot_len: u32,
    /// Transaction id (0 if none).
    pub xl_xid: u32,
    /// Start of the previous record.
    pub xl_prev: Lsn,
    /// Flag bits: low 4 for the WAL machinery, high 4 for the resource manager.
    pub xl_info: u8,
    /// Resource manager id.
    pub xl_rmid: u8,
    /// CRC32C of the record (see [`record_crc32c`]).
    pub xl_crc: u32,
}

impl XLogRecordHeader {
    /// Size on disk (SizeOfXLogRecord).
    pub const SIZE: usize = XLOG_SIZE_OF_XLOG_RECORD;

    /// Parses the first 24 bytes of `buf`, or returns `None` if it is shorter.
    pub fn from_bytes(buf: &[u8]) -> Option<Self> {
        Self::read(&mut Reader::new(buf)).ok()
    }

    /// Reads the fields (and the two padding bytes before `xl_crc`) in on-disk order.
    fn read(r: &mut Reader<'_>) -> Result<Self, MainDataError> {
        let xl_tot_len = r.u32("xl_tot_len")?;
        let xl_xid = r.u32("xl_xid")?;
        let xl_prev = r.lsn("xl_prev")?;
        let xl_info = r.u8("xl_info")?;
        let xl_rmid = r.u8("xl_rmid")?;
        r.skip(2, "XLogRecord padding")?;
        let xl_crc = r.u32("xl_crc")?;
        Ok(XLogRecordHeader {
            xl_tot_len,
            xl_xid,
            xl_prev,
            xl_info,
            xl_rmid,
            xl_crc,
        })
    }

    /// The 24-byte encoding (the two padding bytes are zero).
    pub fn encode(&self) -> [u8; XLOG_SIZE_OF_XLOG_RECORD] {
        let mut out = [0u8; XLOG_SIZE_OF_XLOG_RECORD];
        out[0..4].copy_from_slice(&self.xl_tot_len.to_le_bytes());
        out[4..8].copy_from_slice(&self.xl_xid.to_le_bytes());
        out[8..16].copy_from_slice(&self.xl_prev.0.to_le_bytes());
        out[16] = self.xl_info;
        out[17] = self.xl_rmid;
        out[20..24].copy_from_slice(&self.xl_crc.to_le_bytes());
        out
    }

    /// The resource manager's record type bits (xl_info & XLR_RMGR_INFO_MASK).
    pub fn rmgr_info(&self) -> u8 {
        self.xl_info & XLR_RMGR_INFO_MASK
    }

    /// True for an XLOG SWITCH record, after which the rest of the segment is unused.
    pub fn is_xlog_switch(&self) -> bool {
        self.xl_rmid == RM_XLOG_ID && self.rmgr_info() == XLOG_SWITCH
    }
}

/// CRC32C of a whole record as PostgreSQL computes xl_crc (ValidXLogRecord): first over
/// the bytes after the header, then over the header up to (not including) xl_crc.
///
/// `record` must be at least 24 bytes; shorter input yields the CRC of what is there.
pub fn record_crc32c(record: &[u8]) -> u32 {
    let split = XLOG_SIZE_OF_XLOG_RECORD.min(record.len());
    let crc = crc32c::crc32c(&record[split..]);
    let head_len = XLOG_RECORD_CRC_OFFSET.min(record.len());
    crc32c::crc32c_append(crc, &record[..head_len])
}

/// How a full-page image is compressed, from bimg_info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageCompression {
    None,
    Pglz,
    Lz4,
    Zstd,
}

impl ImageCompression {
    /// The method PostgreSQL would use for `bimg_info` (pglz, then lz4, then zstd win).
    pub fn from_bimg_info(bimg_info: u8) -> Self {
        if bimg_info & BKPIMAGE_COMPRESS_PGLZ != 0 {
            ImageCompression::Pglz
        } else if bimg_info & BKPIMAGE_COMPRESS_LZ4 != 0 {
            ImageCompression::Lz4
        } else if bimg_info & BKPIMAGE_COMPRESS_ZSTD != 0 {
            ImageCompression::Zstd
        } else {
            ImageCompression::None
        }
    }

    /// Name as pg_waldump prints it, or "none".
    pub fn name(self) -> &'static str {
        match self {
            ImageCompression::None => "none",
            ImageCompression::Pglz => "pglz",
            ImageCompression::Lz4 => "lz4",
            ImageCompression::Zstd => "zstd",
        }
    }
}

/// A full-page image attached to a block reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BkpImage {
    /// The stored image bytes (bimg_len of them): compressed, or the page minus its hole.
    pub data: Bytes,
    /// Offset of the hole (zero bytes left out of the image).
    pub hole_offset: u16,
    /// Length of the hole.
    pub hole_length: u16,
    /// BKPIMAGE_* flags.
    pub bimg_info: u8,
    /// Compression method derived from bimg_info.
    pub compression: ImageCompression,
}

/// One block reference of a record (DecodedBkpBlock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBkpBlock {
    /// Block reference id, 0..=32.
    pub block_id: u8,
    /// The relation.
    pub rnode: RelFileNode,
    /// The fork.
    pub forknum: ForkNumber,
    /// Block number within the fork.
    pub blkno: u32,
    /// The raw fork_flags byte.
    pub flags: u8,
    /// A full-page image is attached.
    pub has_image: bool,
    /// The image must be applied at redo (BKPIMAGE_APPLY); otherwise it is for consistency checks.
    pub apply_image: bool,
    /// Redo re-initializes the page (BKPBLOCK_WILL_INIT).
    pub will_init: bool,
    /// The image, if `has_image`.
    pub image: Option<BkpImage>,
    /// Block data for redo (empty if none).
    pub data: Bytes,
}

/// A complete, CRC-checked WAL record with its body decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedWalRecord {
    /// Where the record starts (ReadRecPtr).
    pub lsn: Lsn,
    /// PostgreSQL's EndRecPtr for the record: the position right after its last byte,
    /// MAXALIGNed; for an XLOG SWITCH record, the start of the next segment. This is where
    /// the next record starts, or the page boundary whose header precedes it.
    pub end_lsn: Lsn,
    /// The record header.
    pub header: XLogRecordHeader,
    /// Block references, in block id order.
    pub blocks: Vec<DecodedBkpBlock>,
    /// The main data.
    pub main_data: Bytes,
    /// Replication origin (XLR_BLOCK_ID_ORIGIN), if present.
    pub origin_id: Option<u16>,
    /// Top-level transaction id (XLR_BLOCK_ID_TOPLEVEL_XID), if present.
    pub toplevel_xid: Option<u32>,
    /// The whole record, xl_tot_len bytes, header included and page headers removed.
    pub record: Bytes,
}

impl DecodedWalRecord {
    /// The resource manager name as pg_waldump prints it.
    pub fn rmgr_name(&self) -> String {
        rmgr_name(self.header.xl_rmid)
            .map(|n| n.into_owned())
            .unwrap_or_else(|| format!("invalid{}", self.header.xl_rmid))
    }

    /// The record's transaction id (xl_xid).
    pub fn xid(&self) -> u32 {
        self.header.xl_xid
    }

    /// Total record length (xl_tot_len).
    pub fn total_len(&self) -> u32 {
        self.header.xl_tot_len
    }
}

/// The crate's bounds-checked reader over the fragment headers, reporting any short read as
/// [`RecordDecodeError::ShortData`] (PostgreSQL's "record with invalid length").
struct HeaderCursor<'a>(Reader<'a>);

impl HeaderCursor<'_> {
    fn u8(&mut self) -> Result<u8, RecordDecodeError> {
        self.0.u8(FRAGMENT_HEADERS).map_err(short_data)
    }

    fn u16(&mut self) -> Result<u16, RecordDecodeError> {
        self.0.u16(FRAGMENT_HEADERS).map_err(short_data)
    }

    fn u32(&mut self) -> Result<u32, RecordDecodeError> {
        self.0.u32(FRAGMENT_HEADERS).map_err(short_data)
    }

    fn position(&self) -> usize {
        self.0.position()
    }

    fn remaining(&self) -> usize {
        self.0.remaining_bytes()
    }
}

/// What [`HeaderCursor`] names in the errors it discards.
const FRAGMENT_HEADERS: &str = "fragment headers";

fn short_data(_: MainDataError) -> RecordDecodeError {
    RecordDecodeError::ShortData
}

/// A block header parsed before its payload location is known.
struct BlockHeader {
    block_id: u8,
    fork_flags: u8,
    forknum: ForkNumber,
    data_len: u16,
    image: Option<ImageHeader>,
    rnode: RelFileNode,
    blkno: u32,
}

struct ImageHeader {
    len: u16,
    hole_offset: u16,
    hole_length: u16,
    bimg_info: u8,
}

/// Everything the fragment headers say, before the payloads are sliced out.
#[derive(Default)]
struct FragmentHeaders {
    blocks: Vec<BlockHeader>,
    main_data_len: u32,
    origin_id: Option<u16>,
    toplevel_xid: Option<u32>,
}

/// Decodes the body of `record` (a whole record, header included, CRC already checked)
/// like DecodeXLogRecord. `lsn` and `end_lsn` are stored in the result.
pub fn decode_record(
    lsn: Lsn,
    end_lsn: Lsn,
    header: XLogRecordHeader,
    record: Bytes,
) -> Result<DecodedWalRecord, RecordDecodeError> {
    let body = record
        .get(XLOG_SIZE_OF_XLOG_RECORD..)
        .ok_or(RecordDecodeError::ShortData)?;
    let mut cursor = HeaderCursor(Reader::new(body));
    let frags = parse_fragment_headers(&mut cursor)?;
    let mut offset = XLOG_SIZE_OF_XLOG_RECORD + cursor.position();
    let mut take = |len: usize| {
        let slice = record.slice(offset..offset + len);
        offset += len;
        slice
    };
    let mut blocks = Vec::with_capacity(frags.blocks.len());
    for bh in frags.blocks {
        let image = bh.image.map(|ih| BkpImage {
            data: take(usize::from(ih.len)),
            hole_offset: ih.hole_offset,
            hole_length: ih.hole_length,
            bimg_info: ih.bimg_info,
            compression: ImageCompression::from_bimg_info(ih.bimg_info),
        });
        let data = take(usize::from(bh.data_len));
        blocks.push(DecodedBkpBlock {
            block_id: bh.block_id,
            rnode: bh.rnode,
            forknum: bh.forknum,
            blkno: bh.blkno,
            flags: bh.fork_flags,
            has_image: image.is_some(),
            apply_image: image
                .as_ref()
                .is_some_and(|i| i.bimg_info & BKPIMAGE_APPLY != 0),
            will_init: bh.fork_flags & BKPBLOCK_WILL_INIT != 0,
            image,
            data,
        });
    }
    let main_data = take(frags.main_data_len as usize);
    Ok(DecodedWalRecord {
        lsn,
        end_lsn,
        header,
        blocks,
        main_data,
        origin_id: frags.origin_id,
        toplevel_xid: frags.toplevel_xid,
        record,
    })
}

/// Parses the fragment headers and checks that the payload lengths they announce add up
/// exactly to the rest of the record.
fn parse_fragment_headers(cursor: &mut HeaderCursor) -> Result<FragmentHeaders, RecordDecodeError> {
    let mut frags = FragmentHeaders::default();
    let mut payload_total: u64 = 0;
    let mut prev_rnode: Option<RelFileNode> = None;
    while cursor.remaining() as u64 > payload_total {
        let block_id = cursor.u8()?;
        match block_id {
            XLR_BLOCK_ID_DATA_SHORT => {
                frags.main_data_len = u32::from(cursor.u8()?);
                payload_total += u64::from(frags.main_data_len);
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                frags.main_data_len = cursor.u32()?;
                payload_total += u64::from(frags.main_data_len);
                break;
            }
            XLR_BLOCK_ID_ORIGIN => frags.origin_id = Some(cursor.u16()?),
            XLR_BLOCK_ID_TOPLEVEL_XID => frags.toplevel_xid = Some(cursor.u32()?),
            id if id <= XLR_MAX_BLOCK_ID => {
                if frags.blocks.last().is_some_and(|b| b.block_id >= id) {
                    return Err(RecordDecodeError::OutOfOrderBlockId(id));
                }
                let bh = parse_block_header(cursor, id, &mut prev_rnode)?;
                payload_total += u64::from(bh.data_len);
                payload_total += bh.image.as_ref().map_or(0, |i| u64::from(i.len));
                frags.blocks.push(bh);
            }
            other => return Err(RecordDecodeError::InvalidBlockId(other)),
        }
    }
    if cursor.remaining() as u64 != payload_total {
        return Err(RecordDecodeError::ShortData);
    }
    Ok(frags)
}

/// Parses one XLogRecordBlockHeader and what follows it (image header, RelFileNode, block).
fn parse_block_header(
    cursor: &mut HeaderCursor,
    block_id: u8,
    prev_rnode: &mut Option<RelFileNode>,
) -> Result<BlockHeader, RecordDecodeError> {
    let fork_flags = cursor.u8()?;
    let data_len = cursor.u16()?;
    let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
    if has_data && data_len == 0 {
        return Err(RecordDecodeError::DataFlagWithoutData);
    }
    if !has_data && data_len != 0 {
        return Err(RecordDecodeError::DataWithoutDataFlag(data_len));
    }
    let image = if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
        Some(parse_image_header(cursor)?)
    } else {
        None
    };
    let rnode = if fork_flags & BKPBLOCK_SAME_REL == 0 {
        let rnode = RelFileNode {
            spcnode: cursor.u32()?,
            dbnode: cursor.u32()?,
            relnode: cursor.u32()?,
        };
        *prev_rnode = Some(rnode);
        rnode
    } else {
        prev_rnode.ok_or(RecordDecodeError::SameRelWithoutPrevious)?
    };
    let blkno = cursor.u32()?;
    let fork_byte = fork_flags & BKPBLOCK_FORK_MASK;
    let forknum =
        ForkNumber::from_u8(fork_byte).ok_or(RecordDecodeError::InvalidForkNumber(fork_byte))?;
    Ok(BlockHeader {
        block_id,
        fork_flags,
        forknum,
        data_len,
        image,
        rnode,
        blkno,
    })
}

/// Parses XLogRecordBlockImageHeader (+ XLogRecordBlockCompressHeader) with
/// DecodeXLogRecord's cross-checks.
fn parse_image_header(cursor: &mut HeaderCursor) -> Result<ImageHeader, RecordDecodeError> {
    let len = cursor.u16()?;
    let hole_offset = cursor.u16()?;
    let bimg_info = cursor.u8()?;
    let compressed = bkpimage_is_compressed(bimg_info);
    let has_hole = bimg_info & BKPIMAGE_HAS_HOLE != 0;
    let hole_length = if compressed && has_hole {
        Some(cursor.u16()?)
    } else if compressed {
        Some(0)
    } else {
        u16::try_from(BLCKSZ).ok().and_then(|b| b.checked_sub(len))
    };
    let bad = |hole_length: u16| RecordDecodeError::BadImageHeader {
        image_len: len,
        hole_offset,
        hole_length,
        bimg_info,
    };
    // An uncompressed image longer than a page would make PostgreSQL's hole length wrap.
    let hole_length = hole_length.ok_or_else(|| bad(0))?;
    let blcksz = BLCKSZ as u64;
    let inconsistent = (has_hole && (hole_offset == 0 || hole_length == 0 || len as u64 == blcksz))
        || (!has_hole && (hole_offset != 0 || hole_length != 0))
        || (compressed && len as u64 == blcksz)
        || (!has_hole && !compressed && len as u64 != blcksz)
        // Not checked by PostgreSQL's decoder, but restoring such an image would overrun.
        || u64::from(hole_offset) + u64::from(hole_length) > blcksz;
    if inconsistent {
        return Err(bad(hole_length));
    }
    Ok(ImageHeader {
        len,
        hole_offset,
        hole_length,
        bimg_info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg_constants::*;

    fn rec(body: &[u8]) -> Bytes {
        let hdr = XLogRecordHeader {
            xl_rmid: RM_HEAP_ID,
            xl_xid: 734,
            ..Default::default()
        };
        crate::xlog_utils::encode_record(&hdr, body).unwrap()
    }

    fn decode(body: &[u8]) -> Result<DecodedWalRecord, RecordDecodeError> {
        let r = rec(body);
        let h = XLogRecordHeader::from_bytes(&r).unwrap();
        decode_record(Lsn(0x100), Lsn(0x200), h, r)
    }

    fn rnode_bytes(spc: u32, db: u32, rel: u32) -> Vec<u8> {
        [spc, db, rel]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    #[test]
    fn header_round_trip_and_crc() {
        let r = rec(&[XLR_BLOCK_ID_DATA_SHORT, 3, 1, 2, 3]);
        let h = XLogRecordHeader::from_bytes(&r).unwrap();
        assert_eq!(h.xl_tot_len, 29);
        assert_eq!(h.xl_xid, 734);
        assert_eq!(h.xl_crc, record_crc32c(&r));
        assert_eq!(XLogRecordHeader::from_bytes(&h.encode()), Some(h));
        assert_eq!(XLogRecordHeader::from_bytes(&[0; 23]), None);
        // The CRC covers the payload first, then the header before xl_crc.
        let mut manual = crc32c::crc32c(&r[24..]);
        manual = crc32c::crc32c_append(manual, &r[..20]);
        assert_eq!(manual, h.xl_crc);
    }

    #[test]
    fn decodes_blocks_image_and_main_data() {
        let mut body = vec![XLR_BLOCK_ID_ORIGIN, 7, 0, XLR_BLOCK_ID_TOPLEVEL_XID];
        body.extend_from_slice(&99u32.to_le_bytes());
        // Block 0: main fork, data (2 bytes), compressed image with a hole.
        body.extend_from_slice(&[0, BKPBLOCK_HAS_DATA | BKPBLOCK_HAS_IMAGE, 2, 0]);
        body.extend_from_slice(&[4, 0, 0x40, 0]); // image len 4, hole offset 64
        body.push(BKPIMAGE_HAS_HOLE | BKPIMAGE_APPLY | BKPIMAGE_COMPRESS_LZ4);
        body.extend_from_slice(&100u16.to_le_bytes()); // hole length
        body.extend(rnode_bytes(1663, 5, 16384));
        body.extend_from_slice(&7u32.to_le_bytes());
        // Block 2: same rel, vm fork, will init, no data.
        body.extend_from_slice(&[2, 2 | BKPBLOCK_SAME_REL | BKPBLOCK_WILL_INIT, 0, 0]);
        body.extend_from_slice(&9u32.to_le_bytes());
        body.extend_from_slice(&[XLR_BLOCK_ID_DATA_LONG, 3, 0, 0, 0]);
        body.extend_from_slice(b"IIIIDDmmm");
        let d = decode(&body).unwrap();
        assert_eq!(d.origin_id, Some(7));
        assert_eq!(d.toplevel_xid, Some(99));
        assert_eq!(d.blocks.len(), 2);
        let b0 = &d.blocks[0];
        assert_eq!(
            (b0.block_id, b0.blkno, b0.forknum),
            (0, 7, ForkNumber::Main)
        );
        assert_eq!(b0.rnode.to_string(), "1663/5/16384");
        assert!(b0.has_image && b0.apply_image && !b0.will_init);
        let img = b0.image.as_ref().unwrap();
        assert_eq!(&img.data[..], b"IIII");
        assert_eq!((img.hole_offset, img.hole_length), (64, 100));
        assert_eq!(img.compression, ImageCompression::Lz4);
        assert_eq!(&b0.data[..], b"DD");
        let b2 = &d.blocks[1];
        assert_eq!(
            (b2.block_id, b2.blkno, b2.forknum),
            (2, 9, ForkNumber::VisibilityMap)
        );
        assert_eq!(b2.rnode, b0.rnode);
        assert!(b2.will_init && !b2.has_image && b2.data.is_empty());
        assert_eq!(&d.main_data[..], b"mmm");
        assert_eq!(d.record.len(), d.header.xl_tot_len as usize);
    }

    #[test]
    fn uncompressed_image_hole_length_is_derived() {
        let mut body = vec![0, BKPBLOCK_HAS_IMAGE, 0, 0];
        body.extend_from_slice(&8000u16.to_le_bytes());
        body.extend_from_slice(&100u16.to_le_bytes());
        body.push(BKPIMAGE_HAS_HOLE);
        body.extend(rnode_bytes(1, 2, 3));
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend(std::iter::repeat_n(0xAB, 8000));
        let d = decode(&body).unwrap();
        let img = d.blocks[0].image.as_ref().unwrap();
        assert_eq!(img.hole_length, 192);
        assert!(!d.blocks[0].apply_image);
        assert_eq!(img.compression, ImageCompression::None);
    }

    #[test]
    fn rejects_malformed_bodies() {
        let blk = |id: u8, flags: u8, len: u16| {
            let mut v = vec![id, flags];
            v.extend_from_slice(&len.to_le_bytes());
            v.extend(rnode_bytes(1, 2, 3));
            v.extend_from_slice(&0u32.to_le_bytes());
            v
        };
        let cases: Vec<(Vec<u8>, RecordDecodeError)> = vec![
            (
                vec![XLR_BLOCK_ID_DATA_SHORT, 5, 1],
                RecordDecodeError::ShortData,
            ),
            (
                vec![XLR_BLOCK_ID_DATA_SHORT, 1, 1, 2],
                RecordDecodeError::ShortData,
            ),
            (vec![33, 0], RecordDecodeError::InvalidBlockId(33)),
            (
                [blk(1, 0, 0), blk(1, 0, 0)].concat(),
                RecordDecodeError::OutOfOrderBlockId(1),
            ),
            (blk(0, 4, 0), RecordDecodeError::InvalidForkNumber(4)),
            (
                blk(0, BKPBLOCK_HAS_DATA, 0),
                RecordDecodeError::DataFlagWithoutData,
            ),
            (
                [blk(0, 0, 3), vec![1, 2, 3]].concat(),
                RecordDecodeError::DataWithoutDataFlag(3),
            ),
            (
                vec![0, BKPBLOCK_SAME_REL, 0, 0, 0, 0, 0, 0],
                RecordDecodeError::SameRelWithoutPrevious,
            ),
            (vec![0, 0, 0], RecordDecodeError::ShortData),
        ];
        for (body, want) in cases {
            assert_eq!(decode(&body).unwrap_err(), want, "{body:?}");
        }
    }

    #[test]
    fn rejects_inconsistent_image_headers() {
        let img = |len: u16, off: u16, info: u8, hole: Option<u16>| {
            let mut v = vec![0, BKPBLOCK_HAS_IMAGE, 0, 0];
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&off.to_le_bytes());
            v.push(info);
            if let Some(h) = hole {
                v.extend_from_slice(&h.to_le_bytes());
            }
            v.extend(rnode_bytes(1, 2, 3));
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend(std::iter::repeat_n(0, len as usize));
            v
        };
        let bad = [
            img(8000, 0, BKPIMAGE_HAS_HOLE, None),  // hole offset 0
            img(8192, 10, BKPIMAGE_HAS_HOLE, None), // hole length 0
            img(100, 10, 0, None),                  // no hole, short image
            img(100, 0, BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_HAS_HOLE, Some(0)),
            img(
                100,
                8000,
                BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_HAS_HOLE,
                Some(500),
            ),
            img(8192, 0, BKPIMAGE_COMPRESS_ZSTD, None), // compressed but full size
            img(9000, 0, 0, None),                      // longer than a page
        ];
        for body in bad {
            assert!(
                matches!(decode(&body), Err(RecordDecodeError::BadImageHeader { .. })),
                "{:?}",
                &body[..12]
            );
        }
        assert!(decode(&img(8192, 0, BKPIMAGE_APPLY, None)).is_ok());
        assert!(decode(&img(50, 0, BKPIMAGE_COMPRESS_ZSTD, None)).is_ok());
    }

    #[test]
    fn xlog_switch_detection() {
        let h = XLogRecordHeader {
            xl_rmid: RM_XLOG_ID,
            xl_info: XLOG_SWITCH | XLR_CHECK_CONSISTENCY,
            ..Default::default()
        };
        assert!(h.is_xlog_switch());
        let not = XLogRecordHeader {
            xl_rmid: RM_HEAP_ID,
            xl_info: XLOG_SWITCH,
            ..Default::default()
        };
        assert!(!not.is_xlog_switch());
    }
}

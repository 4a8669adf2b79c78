//! WAL page headers, segment file names, and encoders for building WAL.
//!
//! The layouts follow PostgreSQL 15's `access/xlog_internal.h`. Everything is
//! little-endian, as PostgreSQL writes its native (x86-64/aarch64) layout.
//!
//! The encoders ([`XLogPageHeaderData::encode`], [`encode_record`], [`WalBuilder`]) let
//! the pageserver and tests produce WAL that PostgreSQL and [`crate::waldecoder`] accept.

use bytes::{BufMut, Bytes, BytesMut};
use utils::lsn::Lsn;

use crate::pg_constants::{
    is_valid_wal_segment_size, maxalign, XLOG_BLCKSZ, XLOG_PAGE_MAGIC, XLOG_RECORD_CRC_OFFSET,
    XLOG_SIZE_OF_XLOG_LONG_PHD, XLOG_SIZE_OF_XLOG_RECORD, XLOG_SIZE_OF_XLOG_SHORT_PHD,
    XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER,
};
use crate::records::reader::Reader;
use crate::records::RecordDecodeError;
use crate::walrecord::{record_crc32c, XLogRecordHeader};

/// Errors from parsing WAL page headers and segment file names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XLogFormatError {
    #[error("WAL page header needs {needed_bytes} bytes, got {got_bytes}")]
    ShortPageHeader {
        needed_bytes: usize,
        got_bytes: usize,
    },
    #[error("invalid WAL segment file name {0:?}")]
    BadFileName(String),
    #[error("invalid WAL segment size {0} bytes")]
    BadSegmentSize(u64),
    #[error("WAL record of {0} bytes is too long to encode")]
    RecordTooLong(usize),
}

/// The header at the start of every WAL page (XLogPageHeaderData, 24 bytes with padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XLogPageHeaderData {
    /// XLOG_PAGE_MAGIC for PostgreSQL 15.
    pub xlp_magic: u16,
    /// XLP_* flag bits.
    pub xlp_info: u16,
    /// Timeline of the first record on the page.
    pub xlp_tli: u32,
    /// WAL position of this page.
    pub xlp_pageaddr: Lsn,
    /// Bytes of a record continued from the previous page (with XLP_FIRST_IS_CONTRECORD).
    pub xlp_rem_len: u32,
}

impl XLogPageHeaderData {
    /// On-disk size, MAXALIGNed (SizeOfXLogShortPHD).
    pub const SIZE: usize = XLOG_SIZE_OF_XLOG_SHORT_PHD;

    /// Parses the first [`Self::SIZE`] bytes of `buf`.
    pub fn from_bytes(buf: &[u8]) -> Result<Self, XLogFormatError> {
        parse_header(buf, Self::SIZE, Self::read)
    }

    /// Reads the fields and the trailing padding, in on-disk order.
    fn read(r: &mut Reader<'_>) -> Result<Self, RecordDecodeError> {
        let header = XLogPageHeaderData {
            xlp_magic: r.u16("xlp_magic")?,
            xlp_info: r.u16("xlp_info")?,
            xlp_tli: r.u32("xlp_tli")?,
            xlp_pageaddr: r.lsn("xlp_pageaddr")?,
            xlp_rem_len: r.u32("xlp_rem_len")?,
        };
        r.skip(4, "XLogPageHeaderData padding")?;
        Ok(header)
    }

    /// Appends the 24-byte encoding (padding zeroed) to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_u16_le(self.xlp_magic);
        out.put_u16_le(self.xlp_info);
        out.put_u32_le(self.xlp_tli);
        out.put_u64_le(self.xlp_pageaddr.0);
        out.put_u32_le(self.xlp_rem_len);
        out.put_u32_le(0);
    }

    /// The 24-byte encoding.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(Self::SIZE);
        self.encode_into(&mut out);
        out.freeze()
    }

    /// True if the page has the long header.
    pub fn is_long(&self) -> bool {
        self.xlp_info & XLP_LONG_HEADER != 0
    }

    /// Size of this page's header: long or short (XLogPageHeaderSize).
    pub fn header_size(&self) -> usize {
        if self.is_long() {
            XLogLongPageHeaderData::SIZE
        } else {
            Self::SIZE
        }
    }
}

/// The header of the first page of a segment (XLogLongPageHeaderData, 40 bytes with padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XLogLongPageHeaderData {
    /// The standard fields.
    pub std: XLogPageHeaderData,
    /// System identifier from pg_control.
    pub xlp_sysid: u64,
    /// WAL segment size, as a cross-check.
    pub xlp_seg_size: u32,
    /// XLOG_BLCKSZ, as a cross-check.
    pub xlp_xlog_blcksz: u32,
}

impl XLogLongPageHeaderData {
    /// On-disk size, MAXALIGNed (SizeOfXLogLongPHD).
    pub const SIZE: usize = XLOG_SIZE_OF_XLOG_LONG_PHD;

    /// Parses the first [`Self::SIZE`] bytes of `buf` (whatever xlp_info says).
    pub fn from_bytes(buf: &[u8]) -> Result<Self, XLogFormatError> {
        parse_header(buf, Self::SIZE, Self::read)
    }

    /// Reads the standard header, then the long header's fields, in on-disk order.
    fn read(r: &mut Reader<'_>) -> Result<Self, RecordDecodeError> {
        Ok(XLogLongPageHeaderData {
            std: XLogPageHeaderData::read(r)?,
            xlp_sysid: r.u64("xlp_sysid")?,
            xlp_seg_size: r.u32("xlp_seg_size")?,
            xlp_xlog_blcksz: r.u32("xlp_xlog_blcksz")?,
        })
    }

    /// Appends the 40-byte encoding (padding zeroed) to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        self.std.encode_into(out);
        out.put_u64_le(self.xlp_sysid);
        out.put_u32_le(self.xlp_seg_size);
        out.put_u32_le(self.xlp_xlog_blcksz);
    }

    /// The 40-byte encoding.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(Self::SIZE);
        self.encode_into(&mut out);
        out.freeze()
    }
}

/// Reads a page header with `read`, which consumes exactly `size_bytes` bytes and so fails
/// only when `buf` is shorter than that.
fn parse_header<T>(
    buf: &[u8],
    size_bytes: usize,
    read: fn(&mut Reader<'_>) -> Result<T, RecordDecodeError>,
) -> Result<T, XLogFormatError> {
    read(&mut Reader::new(buf)).map_err(|_| XLogFormatError::ShortPageHeader {
        needed_bytes: size_bytes,
        got_bytes: buf.len(),
    })
}

/// Checks that `seg_size_bytes` is a size PostgreSQL accepts for WAL segments.
pub fn check_segment_size(seg_size_bytes: u64) -> Result<(), XLogFormatError> {
    match usize::try_from(seg_size_bytes) {
        Ok(size) if is_valid_wal_segment_size(size) => Ok(()),
        _ => Err(XLogFormatError::BadSegmentSize(seg_size_bytes)),
    }
}

/// Name of WAL segment `segno` on timeline `tli` (XLogFileName), e.g. `000000010000000000000001`.
pub fn xlog_file_name(tli: u32, segno: u64, seg_size_bytes: u64) -> String {
    let segs_per_xlogid = 0x1_0000_0000 / seg_size_bytes.max(1);
    format!(
        "{:08X}{:08X}{:08X}",
        tli,
        segno / segs_per_xlogid,
        segno % segs_per_xlogid
    )
}

/// Parses a WAL segment file name (24 upper-case hex digits, as IsXLogFileName requires)
/// into `(tli, segno)`. A `.partial` suffix is accepted.
pub fn parse_xlog_file_name(
    name: &str,
    seg_size_bytes: u64,
) -> Result<(u32, u64), XLogFormatError> {
    check_segment_size(seg_size_bytes)?;
    let bad = || XLogFormatError::BadFileName(name.to_string());
    let base = name.strip_suffix(".partial").unwrap_or(name);
    let is_upper_hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    if base.len() != 24 || !base.bytes().all(is_upper_hex) {
        return Err(bad());
    }
    let part = |i: usize| u32::from_str_radix(&base[i * 8..i * 8 + 8], 16).map_err(|_| bad());
    let (tli, log, seg) = (part(0)?, part(1)?, part(2)?);
    let segs_per_xlogid = 0x1_0000_0000 / seg_size_bytes;
    if u64::from(seg) >= segs_per_xlogid {
        return Err(bad());
    }
    Ok((tli, u64::from(log) * segs_per_xlogid + u64::from(seg)))
}

/// First LSN of segment `segno`, or `None` on overflow.
pub fn segment_start_lsn(segno: u64, seg_size_bytes: u64) -> Option<Lsn> {
    segno.checked_mul(seg_size_bytes).map(Lsn)
}

/// Encodes a complete WAL record: computes xl_tot_len and xl_crc for `header` and `body`
/// (the block headers, data and main data that follow the 24-byte record header).
pub fn encode_record(header: &XLogRecordHeader, body: &[u8]) -> Result<Bytes, XLogFormatError> {
    let total_len = XLOG_SIZE_OF_XLOG_RECORD + body.len();
    let xl_tot_len =
        u32::try_from(total_len).map_err(|_| XLogFormatError::RecordTooLong(total_len))?;
    let mut hdr = *header;
    hdr.xl_tot_len = xl_tot_len;
    hdr.xl_crc = 0;
    let mut out = BytesMut::with_capacity(total_len);
    out.extend_from_slice(&hdr.encode());
    out.extend_from_slice(body);
    let crc = record_crc32c(&out);
    out[XLOG_RECORD_CRC_OFFSET..XLOG_SIZE_OF_XLOG_RECORD].copy_from_slice(&crc.to_le_bytes());
    Ok(out.freeze())
}

/// Lays encoded records out on WAL pages, the way PostgreSQL's XLogInsert does: page headers
/// (long at segment starts), records MAXALIGNed, records split across pages with
/// XLP_FIRST_IS_CONTRECORD and xlp_rem_len.
///
/// The output is the WAL from the builder's start position onwards.
#[derive(Debug)]
pub struct WalBuilder {
    seg_size_bytes: u64,
    tli: u32,
    sysid: u64,
    pos: Lsn,
    prev_record: Lsn,
    out: BytesMut,
}

impl WalBuilder {
    /// A builder writing from `start` (a page boundary, or a MAXALIGNed position past the
    /// page header). `prev_record` becomes the first record's xl_prev.
    pub fn new(start: Lsn, seg_size_bytes: u64, tli: u32, sysid: u64, prev_record: Lsn) -> Self {
        WalBuilder {
            seg_size_bytes,
            tli,
            sysid,
            pos: start,
            prev_record,
            out: BytesMut::new(),
        }
    }

    /// Position where the next record (or its page header) goes.
    pub fn position(&self) -> Lsn {
        self.pos
    }

    /// Appends a record with `header` (its xl_prev, xl_tot_len and xl_crc are filled in) and
    /// `body`. Returns the record's start LSN.
    pub fn append_record(
        &mut self,
        header: &XLogRecordHeader,
        body: &[u8],
    ) -> Result<Lsn, XLogFormatError> {
        let mut hdr = *header;
        hdr.xl_prev = self.prev_record;
        let record = encode_record(&hdr, body)?;
        if self.pos.0.is_multiple_of(XLOG_BLCKSZ as u64) {
            self.put_page_header(0);
        }
        let start = self.pos;
        let mut rest: &[u8] = &record;
        while !rest.is_empty() {
            if self.pos.0.is_multiple_of(XLOG_BLCKSZ as u64) {
                self.put_page_header(rest.len() as u32);
            }
            let n = rest.len().min(self.page_remaining());
            self.put(&rest[..n]);
            rest = &rest[n..];
        }
        self.pad_to(maxalign(self.pos.0 as usize) as u64);
        self.prev_record = start;
        Ok(start)
    }

    /// Zero-fills up to the next segment boundary, as after an XLOG SWITCH record.
    pub fn pad_to_segment_end(&mut self) {
        let rem = self.pos.0 % self.seg_size_bytes;
        if rem != 0 {
            self.pad_to(self.pos.0 + self.seg_size_bytes - rem);
        }
    }

    /// The WAL bytes written so far.
    pub fn finish(self) -> Bytes {
        self.out.freeze()
    }

    fn page_remaining(&self) -> usize {
        XLOG_BLCKSZ - (self.pos.0 % XLOG_BLCKSZ as u64) as usize
    }

    fn put(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
        self.pos = Lsn(self.pos.0 + data.len() as u64);
    }

    fn pad_to(&mut self, target: u64) {
        let n = target.saturating_sub(self.pos.0) as usize;
        self.out.put_bytes(0, n);
        self.pos = Lsn(target);
    }

    /// Writes the header of the page starting at the current position.
    fn put_page_header(&mut self, rem_len: u32) {
        let std = XLogPageHeaderData {
            xlp_magic: XLOG_PAGE_MAGIC,
            xlp_info: if rem_len > 0 {
                XLP_FIRST_IS_CONTRECORD
            } else {
                0
            },
            xlp_tli: self.tli,
            xlp_pageaddr: self.pos,
            xlp_rem_len: rem_len,
        };
        let mut buf = BytesMut::with_capacity(XLogLongPageHeaderData::SIZE);
        if self.pos.0.is_multiple_of(self.seg_size_bytes) {
            let long = XLogLongPageHeaderData {
                std: XLogPageHeaderData {
                    xlp_info: std.xlp_info | XLP_LONG_HEADER,
                    ..std
                },
                xlp_sysid: self.sysid,
                xlp_seg_size: self.seg_size_bytes as u32,
                xlp_xlog_blcksz: XLOG_BLCKSZ as u32,
            };
            long.encode_into(&mut buf);
        } else {
            std.encode_into(&mut buf);
        }
        self.put(&buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg_constants::{WAL_SEGMENT_SIZE, XLP_BKP_REMOVABLE};

    const SEG: u64 = WAL_SEGMENT_SIZE as u64;

    #[test]
    fn short_page_header_round_trip() {
        let hdr = XLogPageHeaderData {
            xlp_magic: XLOG_PAGE_MAGIC,
            xlp_info: XLP_FIRST_IS_CONTRECORD | XLP_BKP_REMOVABLE,
            xlp_tli: 3,
            xlp_pageaddr: Lsn(0x0100_2000),
            xlp_rem_len: 1234,
        };
        let enc = hdr.encode();
        assert_eq!(enc.len(), 24);
        assert_eq!(&enc[..4], &[0x10, 0xD1, 0x05, 0x00]);
        assert_eq!(&enc[20..], &[0, 0, 0, 0]);
        let parsed = XLogPageHeaderData::from_bytes(&enc).unwrap();
        assert_eq!(parsed, hdr);
        assert!(!parsed.is_long());
        assert_eq!(parsed.header_size(), 24);
    }

    #[test]
    fn long_page_header_round_trip() {
        let hdr = XLogLongPageHeaderData {
            std: XLogPageHeaderData {
                xlp_magic: XLOG_PAGE_MAGIC,
                xlp_info: XLP_LONG_HEADER,
                xlp_tli: 1,
                xlp_pageaddr: Lsn(0x0200_0000),
                xlp_rem_len: 0,
            },
            xlp_sysid: 0x1122_3344_5566_7788,
            xlp_seg_size: SEG as u32,
            xlp_xlog_blcksz: 8192,
        };
        let enc = hdr.encode();
        assert_eq!(enc.len(), 40);
        assert_eq!(XLogLongPageHeaderData::from_bytes(&enc).unwrap(), hdr);
        assert_eq!(hdr.std.header_size(), 40);
    }

    #[test]
    fn short_input_is_an_error() {
        assert_eq!(
            XLogPageHeaderData::from_bytes(&[0; 23]),
            Err(XLogFormatError::ShortPageHeader {
                needed_bytes: 24,
                got_bytes: 23
            })
        );
        for len in [0, 23, 24, 39] {
            assert_eq!(
                XLogLongPageHeaderData::from_bytes(&vec![0; len]),
                Err(XLogFormatError::ShortPageHeader {
                    needed_bytes: 40,
                    got_bytes: len
                })
            );
        }
    }

    #[test]
    fn segment_file_names() {
        assert_eq!(xlog_file_name(1, 1, SEG), "000000010000000000000001");
        assert_eq!(xlog_file_name(2, 0x1_02, SEG), "000000020000000100000002");
        assert_eq!(
            parse_xlog_file_name("000000010000000000000001", SEG),
            Ok((1, 1))
        );
        assert_eq!(
            parse_xlog_file_name("000000020000000100000002.partial", SEG),
            Ok((2, 0x102))
        );
        for bad in [
            "00000001000000000000000",
            "0000000100000000000000011",
            "00000001000000000000000g",
            "00000001000000000000000a",
            "000000010000000000000100",
        ] {
            assert!(parse_xlog_file_name(bad, SEG).is_err(), "{bad}");
        }
        assert!(parse_xlog_file_name("000000010000000000000001", 1000).is_err());
        for segno in [0u64, 1, 255, 256, 0x1234_5678] {
            let name = xlog_file_name(7, segno, SEG);
            assert_eq!(parse_xlog_file_name(&name, SEG), Ok((7, segno)));
        }
    }

    #[test]
    fn builder_splits_records_across_pages() {
        let mut b = WalBuilder::new(Lsn(SEG), SEG, 1, 42, Lsn(0x10));
        let hdr = XLogRecordHeader {
            xl_rmid: crate::pg_constants::RM_XLOG_ID,
            xl_info: crate::pg_constants::XLOG_NOOP,
            ..Default::default()
        };
        let first = b.append_record(&hdr, &[0xAA; 10_000]).unwrap();
        assert_eq!(first, Lsn(SEG + 40));
        let second = b.append_record(&hdr, &[0xBB; 3]).unwrap();
        let wal = b.finish();
        // 40 (long header) + 10024 record bytes + 24 (second page header) = 10088 = 0x2768,
        // MAXALIGNed 0x2768.
        assert_eq!(second, Lsn(SEG + 0x2768));
        let page2 = XLogPageHeaderData::from_bytes(&wal[8192..]).unwrap();
        assert_eq!(page2.xlp_info, XLP_FIRST_IS_CONTRECORD);
        assert_eq!(page2.xlp_rem_len as usize, 10_024 - (8192 - 40));
        assert_eq!(page2.xlp_pageaddr, Lsn(SEG + 8192));
    }
}

//! Page header (`PageHeaderData`, storage/bufpage.h) and the data page checksum
//! (storage/checksum_impl.h).
//!
//! `PageHeaderData` layout (SizeOfPageHeaderData = 24):
//! pd_lsn.xlogid 0, pd_lsn.xrecoff 4, pd_checksum 8, pd_flags 10, pd_lower 12, pd_upper 14,
//! pd_special 16, pd_pagesize_version 18, pd_prune_xid 20. Note that the LSN is stored as two
//! 32-bit halves, high half first, each little-endian.

use utils::lsn::Lsn;

use crate::records::reader::Reader;
use crate::records::RecordDecodeError;

pub use crate::pg_constants::BLCKSZ;
/// `SizeOfPageHeaderData`: the header without the line pointer array.
pub const SIZE_OF_PAGE_HEADER_DATA: usize = 24;
/// `MAXIMUM_ALIGNOF` on x86-64, as the type of the page header's offsets.
pub const MAXIMUM_ALIGNOF: u16 = crate::pg_constants::MAXIMUM_ALIGNOF as u16;
/// `PG_PAGE_LAYOUT_VERSION`.
pub const PG_PAGE_LAYOUT_VERSION: u8 = 4;

/// `pd_flags`: there are unused line pointers before pd_lower (a hint).
pub const PD_HAS_FREE_LINES: u16 = 0x0001;
/// `pd_flags`: an UPDATE found no room for its new tuple (a hint).
pub const PD_PAGE_FULL: u16 = 0x0002;
/// `pd_flags`: all tuples on the page are visible to everyone.
pub const PD_ALL_VISIBLE: u16 = 0x0004;
/// OR of all valid `pd_flags` bits.
pub const PD_VALID_FLAG_BITS: u16 = 0x0007;

const PD_CHECKSUM_OFFSET: usize = 8;

/// Problems found in a page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("page too short: need {need_bytes} bytes, have {have_bytes}")]
    TooShort {
        need_bytes: usize,
        have_bytes: usize,
    },
    #[error("corrupt page header: {0}")]
    InsaneHeader(&'static str),
    #[error("page checksum mismatch: stored {stored}, computed {computed}")]
    ChecksumMismatch { stored: u16, computed: u16 },
}

/// The fixed part of a page header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PageHeaderData {
    /// LSN just past the WAL record of the last change to the page.
    pub pd_lsn: Lsn,
    pub pd_checksum: u16,
    /// `PD_*` bits.
    pub pd_flags: u16,
    /// Offset to the start of free space.
    pub pd_lower: u16,
    /// Offset to the end of free space.
    pub pd_upper: u16,
    /// Offset to the start of the special space.
    pub pd_special: u16,
    /// Page size (high byte) | layout version (low byte).
    pub pd_pagesize_version: u16,
    /// Oldest prunable XID, or 0.
    pub pd_prune_xid: u32,
}

fn check_len(page: &[u8], need_bytes: usize) -> Result<(), PageError> {
    if page.len() < need_bytes {
        return Err(PageError::TooShort {
            need_bytes,
            have_bytes: page.len(),
        });
    }
    Ok(())
}

impl PageHeaderData {
    /// Parses the header at the start of `page` (at least 24 bytes).
    pub fn decode(page: &[u8]) -> Result<PageHeaderData, PageError> {
        // Reading the 24 bytes fails only if the page is shorter than that.
        Self::read(&mut Reader::new(page)).map_err(|_| PageError::TooShort {
            need_bytes: SIZE_OF_PAGE_HEADER_DATA,
            have_bytes: page.len(),
        })
    }

    /// Reads the fields in on-disk order.
    fn read(r: &mut Reader<'_>) -> Result<PageHeaderData, RecordDecodeError> {
        let xlogid = r.u32("pd_lsn.xlogid")?;
        let xrecoff = r.u32("pd_lsn.xrecoff")?;
        Ok(PageHeaderData {
            pd_lsn: Lsn((u64::from(xlogid) << 32) | u64::from(xrecoff)),
            pd_checksum: r.u16("pd_checksum")?,
            pd_flags: r.u16("pd_flags")?,
            pd_lower: r.u16("pd_lower")?,
            pd_upper: r.u16("pd_upper")?,
            pd_special: r.u16("pd_special")?,
            pd_pagesize_version: r.u16("pd_pagesize_version")?,
            pd_prune_xid: r.u32("pd_prune_xid")?,
        })
    }

    /// Writes the header into the first 24 bytes of `page`.
    pub fn encode_into(&self, page: &mut [u8]) -> Result<(), PageError> {
        check_len(page, SIZE_OF_PAGE_HEADER_DATA)?;
        page[0..4].copy_from_slice(&((self.pd_lsn.0 >> 32) as u32).to_le_bytes());
        page[4..8].copy_from_slice(&(self.pd_lsn.0 as u32).to_le_bytes());
        page[8..10].copy_from_slice(&self.pd_checksum.to_le_bytes());
        page[10..12].copy_from_slice(&self.pd_flags.to_le_bytes());
        page[12..14].copy_from_slice(&self.pd_lower.to_le_bytes());
        page[14..16].copy_from_slice(&self.pd_upper.to_le_bytes());
        page[16..18].copy_from_slice(&self.pd_special.to_le_bytes());
        page[18..20].copy_from_slice(&self.pd_pagesize_version.to_le_bytes());
        page[20..24].copy_from_slice(&self.pd_prune_xid.to_le_bytes());
        Ok(())
    }

    /// Page size recorded in the header (PageGetPageSize).
    pub fn page_size_bytes(&self) -> usize {
        usize::from(self.pd_pagesize_version & 0xFF00)
    }

    /// Layout version recorded in the header (PageGetPageLayoutVersion).
    pub fn layout_version(&self) -> u8 {
        (self.pd_pagesize_version & 0x00FF) as u8
    }

    /// The header checks of PageIsVerifiedExtended: only valid flag bits, and
    /// pd_lower <= pd_upper <= pd_special <= BLCKSZ with pd_special MAXALIGNed.
    pub fn check_sanity(&self) -> Result<(), PageError> {
        if self.pd_flags & !PD_VALID_FLAG_BITS != 0 {
            return Err(PageError::InsaneHeader("invalid pd_flags bits"));
        }
        if self.pd_lower > self.pd_upper {
            return Err(PageError::InsaneHeader("pd_lower > pd_upper"));
        }
        if self.pd_upper > self.pd_special {
            return Err(PageError::InsaneHeader("pd_upper > pd_special"));
        }
        if usize::from(self.pd_special) > BLCKSZ {
            return Err(PageError::InsaneHeader("pd_special > BLCKSZ"));
        }
        if !self.pd_special.is_multiple_of(MAXIMUM_ALIGNOF) {
            return Err(PageError::InsaneHeader("pd_special not MAXALIGNed"));
        }
        Ok(())
    }
}

/// The page LSN (PageGetLSN).
pub fn get_page_lsn(page: &[u8]) -> Result<Lsn, PageError> {
    Ok(PageHeaderData::decode(page)?.pd_lsn)
}

/// Sets the page LSN (PageSetLSN).
pub fn set_page_lsn(page: &mut [u8], lsn: Lsn) -> Result<(), PageError> {
    check_len(page, 8)?;
    page[0..4].copy_from_slice(&((lsn.0 >> 32) as u32).to_le_bytes());
    page[4..8].copy_from_slice(&(lsn.0 as u32).to_le_bytes());
    Ok(())
}

/// PageIsNew: the page was never initialised (`pd_upper == 0`), e.g. an all-zero page.
/// Pages shorter than a header count as new.
pub fn page_is_new(page: &[u8]) -> bool {
    PageHeaderData::decode(page).is_ok_and(|h| h.pd_upper == 0)
}

/// Every byte of the page is zero.
pub fn page_is_all_zeros(page: &[u8]) -> bool {
    page.iter().all(|b| *b == 0)
}

/// Base offsets of the 32 parallel FNV-1a sums (checksum_impl.h's checksumBaseOffsets).
const CHECKSUM_BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];
const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16777619;

/// One mixing step: FNV-1a on 32-bit words with an extra right-shift-17 term.
fn checksum_comp(sum: u32, value: u32) -> u32 {
    let tmp = sum ^ value;
    tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17)
}

/// `pg_checksum_block` over the page with `pd_checksum` treated as zero: the page is read as
/// rows of 32 little-endian u32 words, column j feeding sum j; then two zero rounds, and the
/// sums are XOR-folded.
fn checksum_block(page: &[u8; BLCKSZ]) -> u32 {
    let mut sums = CHECKSUM_BASE_OFFSETS;
    for (word_index, chunk) in page.chunks_exact(4).enumerate() {
        let mut word = [chunk[0], chunk[1], chunk[2], chunk[3]];
        if word_index * 4 == PD_CHECKSUM_OFFSET {
            // pd_checksum occupies the low half of this word.
            word[0] = 0;
            word[1] = 0;
        }
        let column = word_index % N_SUMS;
        sums[column] = checksum_comp(sums[column], u32::from_le_bytes(word));
    }
    for _ in 0..2 {
        for sum in sums.iter_mut() {
            *sum = checksum_comp(*sum, 0);
        }
    }
    sums.iter().fold(0, |acc, s| acc ^ s)
}

/// `pg_checksum_page`: the data checksum of block `blkno` (the block number within the
/// relation fork, not the segment). The stored `pd_checksum` is ignored. Only meaningful for
/// initialised pages (not [`page_is_new`]).
pub fn pg_checksum_page(page: &[u8; BLCKSZ], blkno: u32) -> u16 {
    let checksum = checksum_block(page) ^ blkno;
    ((checksum % 65535) + 1) as u16
}

/// Computes and stores the page's checksum.
pub fn set_page_checksum(page: &mut [u8; BLCKSZ], blkno: u32) {
    let checksum = pg_checksum_page(page, blkno);
    page[PD_CHECKSUM_OFFSET..PD_CHECKSUM_OFFSET + 2].copy_from_slice(&checksum.to_le_bytes());
}

/// Like PageIsVerifiedExtended: an all-zero page is valid; otherwise a non-new page must have a
/// sane header and, when `checksums_enabled`, a matching checksum.
pub fn verify_page(
    page: &[u8; BLCKSZ],
    blkno: u32,
    checksums_enabled: bool,
) -> Result<(), PageError> {
    let header = PageHeaderData::decode(page)?;
    if page_is_all_zeros(page) {
        return Ok(());
    }
    if header.pd_upper == 0 {
        return Err(PageError::InsaneHeader("new page with non-zero contents"));
    }
    if checksums_enabled {
        let computed = pg_checksum_page(page, blkno);
        if computed != header.pd_checksum {
            return Err(PageError::ChecksumMismatch {
                stored: header.pd_checksum,
                computed,
            });
        }
    }
    header.check_sanity()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initialized_page() -> Box<[u8; BLCKSZ]> {
        let mut page = Box::new([0u8; BLCKSZ]);
        let header = PageHeaderData {
            pd_lsn: Lsn(0x0000_0001_0200_0028),
            pd_lower: 28,
            pd_upper: 8160,
            pd_special: 8192,
            pd_pagesize_version: 8192 | u16::from(PG_PAGE_LAYOUT_VERSION),
            ..Default::default()
        };
        header.encode_into(&mut page[..]).unwrap();
        page[24..28].copy_from_slice(&0x8040_9FE0u32.to_le_bytes());
        page[8160..8192].fill(0xAB);
        page
    }

    #[test]
    fn header_round_trip_and_lsn_halves() {
        let page = initialized_page();
        let h = PageHeaderData::decode(&page[..]).unwrap();
        assert_eq!(h.pd_lsn, Lsn(0x0000_0001_0200_0028));
        assert_eq!(&page[0..8], &[1, 0, 0, 0, 0x28, 0, 0, 2]);
        assert_eq!(h.page_size_bytes(), 8192);
        assert_eq!(h.layout_version(), 4);
        assert!(h.check_sanity().is_ok());
        let mut copy = [0u8; 24];
        h.encode_into(&mut copy).unwrap();
        assert_eq!(&copy[..], &page[..24]);
        assert!(PageHeaderData::decode(&page[..23]).is_err());
    }

    #[test]
    fn short_page_is_an_error() {
        let page = initialized_page();
        for len in [0, 7, 23] {
            assert_eq!(
                PageHeaderData::decode(&page[..len]),
                Err(PageError::TooShort {
                    need_bytes: SIZE_OF_PAGE_HEADER_DATA,
                    have_bytes: len
                })
            );
        }
        assert!(PageHeaderData::decode(&page[..SIZE_OF_PAGE_HEADER_DATA]).is_ok());
    }

    #[test]
    fn lsn_get_set_and_new() {
        let mut page = initialized_page();
        set_page_lsn(&mut page[..], Lsn(0xAABB_CCDD_1122_3344)).unwrap();
        assert_eq!(get_page_lsn(&page[..]).unwrap(), Lsn(0xAABB_CCDD_1122_3344));
        assert!(set_page_lsn(&mut [0u8; 7], Lsn(1)).is_err());
        assert!(!page_is_new(&page[..]));
        assert!(page_is_new(&[0u8; BLCKSZ]));
        assert!(page_is_all_zeros(&[0u8; BLCKSZ]));
    }

    #[test]
    fn sanity_checks() {
        let ok = PageHeaderData::decode(&initialized_page()[..]).unwrap();
        let bad = [
            PageHeaderData {
                pd_flags: 0x8,
                ..ok
            },
            PageHeaderData {
                pd_lower: 8170,
                ..ok
            },
            PageHeaderData {
                pd_special: 8100,
                ..ok
            },
            PageHeaderData {
                pd_upper: 8190,
                pd_special: 8196,
                ..ok
            },
            PageHeaderData {
                pd_special: 8164,
                ..ok
            },
        ];
        for h in bad {
            assert!(h.check_sanity().is_err(), "{h:?}");
        }
    }

    #[test]
    fn checksum_set_and_verify() {
        let mut page = initialized_page();
        set_page_checksum(&mut page, 7);
        let stored = PageHeaderData::decode(&page[..]).unwrap().pd_checksum;
        assert_ne!(stored, 0);
        // The stored checksum does not feed into the computation.
        assert_eq!(pg_checksum_page(&page, 7), stored);
        assert!(verify_page(&page, 7, true).is_ok());
        assert!(matches!(
            verify_page(&page, 8, true),
            Err(PageError::ChecksumMismatch { .. })
        ));
        assert!(verify_page(&page, 8, false).is_ok());
        page[5000] ^= 1;
        assert!(verify_page(&page, 7, true).is_err());
        assert!(verify_page(&[0u8; BLCKSZ], 0, true).is_ok());
    }
}

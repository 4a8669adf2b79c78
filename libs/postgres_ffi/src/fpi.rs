//! Restoring full-page images from WAL block references into 8192-byte pages, like
//! PostgreSQL 15's `RestoreBlockImage`: decompress (pglz, LZ4 or zstd) and put the hole
//! (a run of zeros left out of the image) back.
//!
//! The pglz decoder is our own implementation of PostgreSQL's format
//! (`common/pg_lzcompress.c`): a control byte announces, bit by bit from the least
//! significant, 8 items; a clear bit is a literal byte, a set bit a back-reference tag of 2
//! bytes (`[len-3 in low nibble | offset high nibble << 4] [offset low byte]`) or 3 bytes
//! when the nibble is 15 (length 18 + the third byte). Offsets are 1..=4095 back into the
//! output, and the copy may overlap what it produces.

use crate::pg_constants::{
    bkpimage_is_compressed, BKPIMAGE_ALL_FLAGS, BKPIMAGE_COMPRESS_MASK, BKPIMAGE_HAS_HOLE, BLCKSZ,
};
use crate::walrecord::{BkpImage, ImageCompression};

/// Why a full-page image could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FpiError {
    #[error("unknown bimg_info flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("image hole offset {hole_offset} length {hole_length} does not fit image of {image_len} bytes")]
    BadHole {
        hole_offset: u16,
        hole_length: u16,
        image_len: usize,
    },
    #[error("pglz: {0}")]
    Pglz(#[from] PglzError),
    #[error("lz4: {0}")]
    Lz4(String),
    #[error("zstd: {0}")]
    Zstd(String),
    #[error("decompressed image is {got_bytes} bytes, expected {expected_bytes}")]
    WrongLength {
        expected_bytes: usize,
        got_bytes: usize,
    },
}

/// Why pglz data could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PglzError {
    #[error("input ends inside a match tag")]
    TruncatedTag,
    #[error("match offset {offset} is outside the {produced_bytes} bytes produced so far")]
    BadOffset {
        offset: usize,
        produced_bytes: usize,
    },
    #[error("produced {produced_bytes} bytes of {expected_bytes} and used {used_bytes} of {input_bytes} input bytes")]
    Incomplete {
        produced_bytes: usize,
        expected_bytes: usize,
        used_bytes: usize,
        input_bytes: usize,
    },
}

/// Decompresses pglz `source` into `dest`, which it must fill exactly while using all of
/// `source` (pglz_decompress with check_complete). Never reads or writes out of bounds.
pub fn pglz_decompress_into(source: &[u8], dest: &mut [u8]) -> Result<(), PglzError> {
    let mut sp = 0usize;
    let mut dp = 0usize;
    while sp < source.len() && dp < dest.len() {
        let ctrl = source[sp];
        sp += 1;
        for bit in 0..8 {
            if sp >= source.len() || dp >= dest.len() {
                break;
            }
            if ctrl & (1 << bit) == 0 {
                dest[dp] = source[sp];
                dp += 1;
                sp += 1;
                continue;
            }
            let (len, offset, tag_len) = read_pglz_tag(&source[sp..])?;
            sp += tag_len;
            if offset == 0 || offset > dp {
                return Err(PglzError::BadOffset {
                    offset,
                    produced_bytes: dp,
                });
            }
            let len = len.min(dest.len() - dp);
            copy_back_reference(dest, dp, offset, len);
            dp += len;
        }
    }
    if dp != dest.len() || sp != source.len() {
        return Err(PglzError::Incomplete {
            produced_bytes: dp,
            expected_bytes: dest.len(),
            used_bytes: sp,
            input_bytes: source.len(),
        });
    }
    Ok(())
}

/// Decompresses pglz data that must expand to exactly `raw_len` bytes.
pub fn pglz_decompress(source: &[u8], raw_len: usize) -> Result<Vec<u8>, PglzError> {
    let mut out = vec![0u8; raw_len];
    pglz_decompress_into(source, &mut out)?;
    Ok(out)
}

/// Reads a match tag: returns (length, offset, tag size in bytes).
fn read_pglz_tag(tag: &[u8]) -> Result<(usize, usize, usize), PglzError> {
    let (&b0, &b1) = match tag {
        [b0, b1, ..] => (b0, b1),
        _ => return Err(PglzError::TruncatedTag),
    };
    let len = usize::from(b0 & 0x0f) + 3;
    let offset = (usize::from(b0 & 0xf0) << 4) | usize::from(b1);
    if len != 18 {
        return Ok((len, offset, 2));
    }
    let extra = *tag.get(2).ok_or(PglzError::TruncatedTag)?;
    Ok((len + usize::from(extra), offset, 3))
}

/// Copies `len` bytes from `offset` bytes back to `dp`; overlapping copies repeat the
/// pattern, as a byte-by-byte copy would.
fn copy_back_reference(dest: &mut [u8], dp: usize, offset: usize, len: usize) {
    let src = dp - offset;
    if offset >= len {
        dest.copy_within(src..src + len, dp);
    } else {
        for i in 0..len {
            dest[dp + i] = dest[src + i];
        }
    }
}

/// Restores the page an image stands for: decompresses it if needed and zero-fills its hole.
pub fn restore_image(image: &BkpImage) -> Result<Box<[u8; BLCKSZ]>, FpiError> {
    let mut page = Box::new([0u8; BLCKSZ]);
    restore_image_into(image, &mut page)?;
    Ok(page)
}

/// Like [`restore_image`], writing into `page`. On error `page` may be partly written.
pub fn restore_image_into(image: &BkpImage, page: &mut [u8; BLCKSZ]) -> Result<(), FpiError> {
    check_flags(image)?;
    let stored_len = check_hole(image)?;
    let mut tmp = [0u8; BLCKSZ];
    let unholed: &[u8] = if bkpimage_is_compressed(image.bimg_info) {
        decompress(image, &mut tmp[..stored_len])?;
        &tmp[..stored_len]
    } else {
        if image.data.len() != stored_len {
            return Err(FpiError::WrongLength {
                expected_bytes: stored_len,
                got_bytes: image.data.len(),
            });
        }
        &image.data
    };
    let hole_start = usize::from(image.hole_offset);
    let hole_end = hole_start + usize::from(image.hole_length);
    page[..hole_start].copy_from_slice(&unholed[..hole_start]);
    page[hole_start..hole_end].fill(0);
    page[hole_end..].copy_from_slice(&unholed[hole_start..]);
    Ok(())
}

/// Rejects bits PostgreSQL 15 does not define and ambiguous compression bits.
fn check_flags(image: &BkpImage) -> Result<(), FpiError> {
    let info = image.bimg_info;
    if info & !BKPIMAGE_ALL_FLAGS != 0 || (info & BKPIMAGE_COMPRESS_MASK).count_ones() > 1 {
        return Err(FpiError::UnknownFlags(info));
    }
    Ok(())
}

/// Checks the hole geometry; returns the length of the page without its hole.
fn check_hole(image: &BkpImage) -> Result<usize, FpiError> {
    let has_hole = image.bimg_info & BKPIMAGE_HAS_HOLE != 0;
    let hole_offset = usize::from(image.hole_offset);
    let hole_length = usize::from(image.hole_length);
    let fits = hole_offset + hole_length <= BLCKSZ;
    let consistent = if has_hole {
        hole_length > 0
    } else {
        hole_length == 0 && hole_offset == 0
    };
    if !fits || !consistent {
        return Err(FpiError::BadHole {
            hole_offset: image.hole_offset,
            hole_length: image.hole_length,
            image_len: image.data.len(),
        });
    }
    Ok(BLCKSZ - hole_length)
}

/// Decompresses the image into `out`, which it must fill exactly.
fn decompress(image: &BkpImage, out: &mut [u8]) -> Result<(), FpiError> {
    let expected_bytes = out.len();
    let produced = match image.compression {
        ImageCompression::Pglz => {
            pglz_decompress_into(&image.data, out)?;
            return Ok(());
        }
        ImageCompression::Lz4 => lz4_flex::block::decompress(&image.data, expected_bytes)
            .map_err(|e| FpiError::Lz4(e.to_string()))?,
        ImageCompression::Zstd => zstd::bulk::decompress(&image.data, expected_bytes)
            .map_err(|e| FpiError::Zstd(e.to_string()))?,
        ImageCompression::None => return Err(FpiError::UnknownFlags(image.bimg_info)),
    };
    if produced.len() != expected_bytes {
        return Err(FpiError::WrongLength {
            expected_bytes,
            got_bytes: produced.len(),
        });
    }
    out.copy_from_slice(&produced);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pg_constants::{
        BKPIMAGE_APPLY, BKPIMAGE_COMPRESS_LZ4, BKPIMAGE_COMPRESS_PGLZ, BKPIMAGE_COMPRESS_ZSTD,
    };
    use bytes::Bytes;

    /// A simple greedy pglz compressor, for tests only: longest match within 4095 bytes.
    pub(crate) fn pglz_compress_for_tests(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let ctrl_at = out.len();
            out.push(0u8);
            for bit in 0..8 {
                if pos >= input.len() {
                    break;
                }
                let (len, off) = longest_match(input, pos);
                if len >= 3 {
                    out[ctrl_at] |= 1 << bit;
                    if len >= 18 {
                        out.push(((off >> 4) & 0xf0) as u8 | 0x0f);
                        out.push((off & 0xff) as u8);
                        out.push((len - 18) as u8);
                    } else {
                        out.push(((off >> 4) & 0xf0) as u8 | (len - 3) as u8);
                        out.push((off & 0xff) as u8);
                    }
                    pos += len;
                } else {
                    out.push(input[pos]);
                    pos += 1;
                }
            }
        }
        out
    }

    fn longest_match(input: &[u8], pos: usize) -> (usize, usize) {
        let max_len = (input.len() - pos).min(273);
        let mut best = (0, 0);
        for off in 1..=pos.min(4095) {
            let mut len = 0;
            while len < max_len && input[pos - off + len] == input[pos + len] {
                len += 1;
            }
            if len > best.0 {
                best = (len, off);
                if len == max_len {
                    break;
                }
            }
        }
        best
    }

    /// A page with a header-like start, a hole of zeros and non-trivial content.
    pub(crate) fn sample_page(hole_offset: usize, hole_length: usize) -> Vec<u8> {
        let mut page: Vec<u8> = (0..BLCKSZ).map(|i| (i * 7 % 251) as u8).collect();
        page[hole_offset..hole_offset + hole_length].fill(0);
        page
    }

    fn without_hole(page: &[u8], hole_offset: usize, hole_length: usize) -> Vec<u8> {
        [&page[..hole_offset], &page[hole_offset + hole_length..]].concat()
    }

    fn image(data: Vec<u8>, hole: (u16, u16), bimg_info: u8) -> BkpImage {
        BkpImage {
            data: Bytes::from(data),
            hole_offset: hole.0,
            hole_length: hole.1,
            bimg_info,
            compression: ImageCompression::from_bimg_info(bimg_info),
        }
    }

    #[test]
    fn pglz_literals_and_overlapping_reference() {
        // "11234" then a 16-byte match at offset 4: the copy overlaps its own output.
        let src = [0x20, b'1', b'1', b'2', b'3', b'4', 0x0D, 0x04];
        let out = pglz_decompress(&src, 21).unwrap();
        assert_eq!(&out, b"112341234123412341234");
    }

    #[test]
    fn pglz_three_byte_tag_and_offset_one() {
        // 'a', then a match of 18 + 100 bytes at offset 1, then literal 'b'.
        let src = [0b0000_0010, b'a', 0x0F, 0x01, 100, b'b'];
        let out = pglz_decompress(&src, 120).unwrap();
        assert_eq!(&out[..119], &[b'a'; 119][..]);
        assert_eq!(out[119], b'b');
    }

    #[test]
    fn pglz_twelve_bit_offset() {
        let mut input: Vec<u8> = (0..4095u32).map(|i| (i % 253) as u8).collect();
        input.extend_from_within(..10);
        let compressed = pglz_compress_for_tests(&input);
        assert_eq!(pglz_decompress(&compressed, input.len()).unwrap(), input);
        // Hand-built: 3 literals, then a tag with offset 0x103 is out of range.
        let src = [0b0000_1000, 1, 2, 3, 0x10, 0x03];
        assert_eq!(
            pglz_decompress(&src, 6),
            Err(PglzError::BadOffset {
                offset: 0x103,
                produced_bytes: 3
            })
        );
    }

    #[test]
    fn pglz_rejects_malformed_input() {
        assert_eq!(
            pglz_decompress(&[0x01, 0x00], 4),
            Err(PglzError::TruncatedTag)
        );
        assert_eq!(
            pglz_decompress(&[0x02, b'x', 0x0F, 0x01], 40),
            Err(PglzError::TruncatedTag)
        );
        assert!(matches!(
            pglz_decompress(&[0x01, 0x00, 0x00], 4),
            Err(PglzError::BadOffset { offset: 0, .. })
        ));
        // Too little output, or input left over.
        assert!(matches!(
            pglz_decompress(&[0x00, 1, 2], 3),
            Err(PglzError::Incomplete { .. })
        ));
        assert!(matches!(
            pglz_decompress(&[0x00, 1, 2, 3], 2),
            Err(PglzError::Incomplete { .. })
        ));
        assert!(pglz_decompress(&[], 0).is_ok());
    }

    #[test]
    fn pglz_round_trips_pages() {
        for page in [sample_page(100, 4000), vec![0u8; BLCKSZ], sample_page(0, 0)] {
            let compressed = pglz_compress_for_tests(&page);
            assert!(compressed.len() < page.len() + page.len() / 8 + 1);
            assert_eq!(pglz_decompress(&compressed, BLCKSZ).unwrap(), page);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Data with repeats at random distances compresses and decompresses to itself.
        #[test]
        fn pglz_round_trips_random_data(
            seed in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64),
            reps in proptest::collection::vec((1usize..300, 1usize..5000), 0..40),
        ) {
            let mut input = seed.clone();
            for (len, back) in reps {
                let from = input.len().saturating_sub(back);
                for i in 0..len {
                    input.push(input[from + i]);
                }
                input.push(seed[len % seed.len()]);
            }
            let compressed = pglz_compress_for_tests(&input);
            proptest::prop_assert_eq!(pglz_decompress(&compressed, input.len()).unwrap(), input);
        }
    }

    #[test]
    fn uncompressed_image_with_hole() {
        let page = sample_page(40, 8000);
        let stored = without_hole(&page, 40, 8000);
        let img = image(stored, (40, 8000), BKPIMAGE_HAS_HOLE | BKPIMAGE_APPLY);
        assert_eq!(&restore_image(&img).unwrap()[..], &page[..]);
        let full = image(page.clone(), (0, 0), 0);
        assert_eq!(&restore_image(&full).unwrap()[..], &page[..]);
    }

    #[test]
    fn compressed_images_with_and_without_hole() {
        for (hole_offset, hole_length) in [(0usize, 0usize), (200, 5000)] {
            let page = sample_page(hole_offset, hole_length);
            let stored = without_hole(&page, hole_offset, hole_length);
            let hole_flag = if hole_length > 0 {
                BKPIMAGE_HAS_HOLE
            } else {
                0
            };
            let compressed = [
                (pglz_compress_for_tests(&stored), BKPIMAGE_COMPRESS_PGLZ),
                (lz4_flex::block::compress(&stored), BKPIMAGE_COMPRESS_LZ4),
                (
                    zstd::bulk::compress(&stored, 3).unwrap(),
                    BKPIMAGE_COMPRESS_ZSTD,
                ),
            ];
            for (data, method) in compressed {
                let hole = (hole_offset as u16, hole_length as u16);
                let img = image(data, hole, method | hole_flag | BKPIMAGE_APPLY);
                let restored = restore_image(&img).unwrap();
                assert_eq!(&restored[..], &page[..], "method {method:#x}");
            }
        }
    }

    #[test]
    fn wrong_lengths_and_garbage_are_errors() {
        let stored = sample_page(0, 0);
        let short = lz4_flex::block::compress(&stored[..4000]);
        let img = image(short, (0, 0), BKPIMAGE_COMPRESS_LZ4);
        assert!(restore_image(&img).is_err());
        let short = zstd::bulk::compress(&stored[..4000], 1).unwrap();
        let img = image(short, (0, 0), BKPIMAGE_COMPRESS_ZSTD);
        assert!(matches!(
            restore_image(&img),
            Err(FpiError::WrongLength { .. })
        ));
        for method in [
            BKPIMAGE_COMPRESS_PGLZ,
            BKPIMAGE_COMPRESS_LZ4,
            BKPIMAGE_COMPRESS_ZSTD,
        ] {
            let img = image(vec![0xFF; 300], (0, 0), method);
            assert!(restore_image(&img).is_err());
        }
        let img = image(vec![0; 100], (0, 0), 0);
        assert!(matches!(
            restore_image(&img),
            Err(FpiError::WrongLength { .. })
        ));
    }

    #[test]
    fn unknown_flags_and_bad_holes_are_errors() {
        let page = sample_page(0, 0);
        let both = BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD;
        for info in [0x20, 0x80, both] {
            let img = image(page.clone(), (0, 0), info);
            assert_eq!(restore_image(&img), Err(FpiError::UnknownFlags(info)));
        }
        let bad_holes = [
            ((8000, 500), BKPIMAGE_HAS_HOLE),
            ((10, 0), BKPIMAGE_HAS_HOLE),
            ((0, 10), 0),
        ];
        for (hole, info) in bad_holes {
            let img = image(vec![0; 100], hole, info);
            assert!(matches!(restore_image(&img), Err(FpiError::BadHole { .. })));
        }
    }
}

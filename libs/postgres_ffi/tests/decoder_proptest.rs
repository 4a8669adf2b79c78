//! Property tests: the WAL decoder and full-page image restoration never panic, whatever
//! bytes they get, and damage to valid WAL never changes the records before it.

mod common;

use common::*;
use postgres_ffi::fpi::{pglz_decompress, restore_image};
use postgres_ffi::pg_constants::XLOG_BLCKSZ;
use postgres_ffi::waldecoder::WalStreamDecoder;
use postgres_ffi::walrecord::{BkpImage, DecodedWalRecord, ImageCompression, XLogRecordHeader};
use proptest::prelude::*;
use std::sync::OnceLock;
use utils::lsn::Lsn;

const PAGE: u64 = XLOG_BLCKSZ as u64;

/// Feeds `data` split at `cuts` (chunk sizes, cycled) and polls after each piece.
fn decode_chunked(
    dec: &mut WalStreamDecoder,
    data: &[u8],
    cuts: &[usize],
) -> Vec<DecodedWalRecord> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut sizes = cuts.iter().cycle();
    while pos < data.len() {
        let n = (*sizes.next().unwrap()).clamp(1, data.len() - pos);
        dec.feed_bytes(&data[pos..pos + n]);
        pos += n;
        loop {
            match dec.poll_decode() {
                Ok(Some(rec)) => out.push(rec),
                Ok(None) => break,
                Err(_) => return out,
            }
        }
    }
    out
}

/// A valid stream across two 1 MiB segments: small and page-spanning records, records with
/// block references and images, and an XLOG SWITCH.
fn valid_wal() -> &'static (bytes::Bytes, Vec<DecodedWalRecord>) {
    static WAL: OnceLock<(bytes::Bytes, Vec<DecodedWalRecord>)> = OnceLock::new();
    WAL.get_or_init(|| {
        let mut recs = Vec::new();
        for i in 0..12u32 {
            recs.push(Rec::heap(i, [5, 300, 9000][i as usize % 3]));
            recs.push(Rec {
                header: XLogRecordHeader {
                    xl_xid: 1000 + i,
                    ..heap_header(0)
                },
                body: body_with_blocks(i as u8 + 1, 20 + i as usize),
            });
            if i == 6 {
                recs.push(Rec::switch());
            }
        }
        let (wal, _) = build_wal(Lsn(SMALL_SEG), SMALL_SEG, &recs);
        let mut dec = WalStreamDecoder::new(Lsn(SMALL_SEG), SMALL_SEG);
        let decoded = decode_chunked(&mut dec, &wal, &[wal.len()]);
        assert_eq!(decoded.len(), recs.len());
        (wal, decoded)
    })
}

fn start_lsn_strategy() -> impl Strategy<Value = Lsn> {
    prop_oneof![
        (1u64..64).prop_map(|s| Lsn(s * SMALL_SEG)),
        (1u64..64, 1u64..128).prop_map(|(s, p)| Lsn(s * SMALL_SEG + p * PAGE)),
        (1u64..64, 0u64..128, 3u64..1024)
            .prop_map(|(s, p, o)| Lsn(s * SMALL_SEG + p * PAGE + o * 8)),
    ]
}

/// Random bytes; now and then they start with a valid page header for `page` (random
/// flags and xlp_rem_len) so that decoding gets into the random records behind it.
fn noise_strategy() -> impl Strategy<Value = (Vec<u8>, bool)> {
    (
        proptest::collection::vec(any::<u8>(), 0..20_000),
        any::<bool>(),
    )
}

fn put_page_header(data: &mut [u8], page: Lsn) {
    if data.len() < 40 {
        return;
    }
    let info = (u16::from(data[2]) & 0x0D)
        | if page.0.is_multiple_of(SMALL_SEG) {
            0x02
        } else {
            0
        };
    let rem_len = if info & 1 != 0 {
        u32::from(data[16]) * 64
    } else {
        0
    };
    data[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    data[2..4].copy_from_slice(&info.to_le_bytes());
    data[4..8].copy_from_slice(&1u32.to_le_bytes());
    data[8..16].copy_from_slice(&page.0.to_le_bytes());
    data[16..20].copy_from_slice(&rem_len.to_le_bytes());
    data[32..36].copy_from_slice(&(SMALL_SEG as u32).to_le_bytes());
    data[36..40].copy_from_slice(&8192u32.to_le_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(
        start in start_lsn_strategy(),
        (mut data, with_header) in noise_strategy(),
        cuts in proptest::collection::vec(1usize..3000, 1..8),
        find_first in any::<bool>(),
    ) {
        let page = start.page_start();
        if with_header && (find_first || start == page) {
            put_page_header(&mut data, page);
        }
        let mut dec = if find_first {
            WalStreamDecoder::new_find_first(page, SMALL_SEG)
        } else {
            WalStreamDecoder::new(start, SMALL_SEG)
        };
        decode_chunked(&mut dec, &data, &cuts);
        let _ = dec.poll_decode();
    }

    #[test]
    fn damaged_wal_keeps_earlier_records(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        truncate in proptest::option::of(any::<prop::sample::Index>()),
        cuts in proptest::collection::vec(1usize..20_000, 1..6),
    ) {
        let (wal, good) = valid_wal();
        let mut bad = wal.to_vec();
        let mut first_damage = bad.len();
        for (idx, mask) in &flips {
            let at = idx.index(bad.len());
            bad[at] ^= mask;
            first_damage = first_damage.min(at);
        }
        if let Some(t) = truncate {
            bad.truncate(t.index(bad.len()));
        }
        let mut dec = WalStreamDecoder::new(Lsn(SMALL_SEG), SMALL_SEG);
        let got = decode_chunked(&mut dec, &bad, &cuts);
        let intact_end = Lsn(SMALL_SEG + first_damage.min(bad.len()) as u64);
        // Every record that ends before the damage is decoded exactly as before.
        let intact = good.iter().take_while(|r| r.end_lsn <= intact_end).count();
        prop_assert!(got.len() >= intact.min(good.len()));
        prop_assert_eq!(&got[..intact], &good[..intact]);
    }

    #[test]
    fn fpi_restore_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..9000),
        hole_offset in prop_oneof![Just(0u16), 0u16..9000],
        hole_length in prop_oneof![Just(0u16), 0u16..9000],
        bimg_info in any::<u8>(),
    ) {
        let img = BkpImage {
            data: data.into(),
            hole_offset,
            hole_length,
            bimg_info,
            compression: ImageCompression::from_bimg_info(bimg_info),
        };
        if let Ok(page) = restore_image(&img) {
            prop_assert_eq!(page.len(), 8192);
        }
    }

    #[test]
    fn pglz_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        raw_len in 0usize..9000,
    ) {
        if let Ok(out) = pglz_decompress(&data, raw_len) {
            prop_assert_eq!(out.len(), raw_len);
        }
    }
}

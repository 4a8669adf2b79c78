//! WalStreamDecoder on hand-built WAL: page headers, records spanning pages and segments,
//! start positions, XLOG SWITCH, CRC and header failures, end of WAL.

mod common;

use common::*;
use postgres_ffi::pg_constants::{
    maxalign, XLOG_BLCKSZ, XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD,
    XLP_LONG_HEADER,
};
use postgres_ffi::waldecoder::{WalDecodeErrorKind, WalStreamDecoder};
use postgres_ffi::xlog_utils::{WalBuilder, XLogPageHeaderData};
use utils::lsn::Lsn;

const PAGE: u64 = XLOG_BLCKSZ as u64;

fn seg_start(n: u64) -> Lsn {
    Lsn(n * SMALL_SEG)
}

/// Mixed small and large records: several span pages, one spans four.
fn mixed_records(n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            let len = match i % 7 {
                3 => 9000,
                5 => 30_000,
                _ => 10 + i * 13 % 300,
            };
            Rec::heap(700 + i as u32, len)
        })
        .collect()
}

fn offset(lsn: Lsn, base: Lsn) -> usize {
    (lsn.0 - base.0) as usize
}

#[test]
fn decodes_stream_from_segment_start() {
    let start = seg_start(3);
    let recs = mixed_records(40);
    let (wal, starts) = build_wal(start, SMALL_SEG, &recs);
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let (got, err) = decode_all(&mut dec, &wal, 100_000);
    assert_eq!(err, None);
    assert_eq!(got.len(), recs.len());
    for (i, rec) in got.iter().enumerate() {
        assert_eq!(rec.lsn, starts[i]);
        assert_eq!(rec.xid(), 700 + i as u32);
        assert_eq!(rec.rmgr_name(), "Heap");
        assert_eq!(rec.record.len(), rec.total_len() as usize);
        assert_eq!(
            rec.main_data.len(),
            recs[i].body.len() - if recs[i].body.len() < 258 { 2 } else { 5 }
        );
        if i > 0 {
            assert_eq!(rec.header.xl_prev, starts[i - 1]);
        }
        // The next record starts at end_lsn, or right after the page header there.
        if let Some(next) = starts.get(i + 1) {
            let gap = next.0 - rec.end_lsn.0;
            assert!(
                gap == 0 || (rec.end_lsn.0 % PAGE == 0 && gap == 24),
                "{i}: gap {gap}"
            );
        }
        assert_eq!(rec.end_lsn.0 % 8, 0);
    }
    // Records 3 and 5 span pages; their end is past a page boundary.
    assert!(got[5].end_lsn.0 - got[5].lsn.0 > 30_000);
    assert_eq!(dec.prev_record_lsn(), Some(*starts.last().unwrap()));
}

#[test]
fn end_lsn_is_maxaligned_end_of_record() {
    let start = seg_start(1);
    let (wal, starts) = build_wal(start, SMALL_SEG, &[Rec::heap(1, 30), Rec::heap(2, 5)]);
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let (got, _) = decode_all(&mut dec, &wal, wal.len());
    // 24 header + 2 data header + 30 data = 56 bytes, already aligned.
    assert_eq!(got[0].lsn, Lsn(start.0 + 40));
    assert_eq!(got[0].end_lsn, Lsn(start.0 + 40 + 56));
    // 24 + 2 + 5 = 31 bytes, MAXALIGNed to 32.
    assert_eq!(got[1].lsn, starts[1]);
    assert_eq!(got[1].end_lsn, Lsn(starts[1].0 + 32));
}

#[test]
fn byte_at_a_time_equals_one_chunk() {
    let start = seg_start(2);
    let (wal, _) = build_wal(start, SMALL_SEG, &mixed_records(12));
    let mut whole = WalStreamDecoder::new(start, SMALL_SEG);
    let (a, _) = decode_all(&mut whole, &wal, wal.len());
    let mut bytewise = WalStreamDecoder::new(start, SMALL_SEG);
    let (b, _) = decode_all(&mut bytewise, &wal, 1);
    assert_eq!(a, b);
    assert_eq!(a.len(), 12);
}

#[test]
fn records_span_segments() {
    let start = seg_start(1);
    // Enough 30 KB records to fill more than two 1 MiB segments.
    let recs: Vec<Rec> = (0..80).map(|i| Rec::heap(i, 30_000)).collect();
    let (wal, starts) = build_wal(start, SMALL_SEG, &recs);
    assert!(wal.len() as u64 > 2 * SMALL_SEG);
    let spanning = starts
        .iter()
        .zip(starts.iter().skip(1))
        .filter(|(a, b)| a.0 / SMALL_SEG != b.0 / SMALL_SEG)
        .count();
    assert!(spanning >= 2);
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let (got, err) = decode_all(&mut dec, &wal, 65_536);
    assert_eq!(err, None);
    assert_eq!(got.iter().map(|r| r.lsn).collect::<Vec<_>>(), starts);
}

#[test]
fn starts_mid_page_at_a_record() {
    let start = seg_start(1);
    let (wal, starts) = build_wal(start, SMALL_SEG, &mixed_records(20));
    for k in [1usize, 4, 6, 11] {
        let mut dec = WalStreamDecoder::new(starts[k], SMALL_SEG);
        dec.set_prev_record_lsn(starts[k - 1]);
        let (got, err) = decode_all(&mut dec, &wal[offset(starts[k], start)..], 777);
        assert_eq!(err, None);
        assert_eq!(got.first().map(|r| r.lsn), Some(starts[k]));
        assert_eq!(got.len(), 20 - k);
    }
}

#[test]
fn starts_at_page_boundary_or_after_page_header() {
    // Records of 8168 bytes exactly fill the rest of each page after a short header.
    let start = seg_start(1);
    let first_len = 8192 - 40 - 24 - 5;
    let mut recs = vec![Rec::heap(1, first_len)];
    recs.extend((2..6).map(|i| Rec::heap(i, 8192 - 24 - 24 - 5)));
    let (wal, starts) = build_wal(start, SMALL_SEG, &recs);
    for (k, s) in starts.iter().enumerate().skip(1) {
        assert_eq!(s.0 % PAGE, 24, "record {k} starts after a page header");
        let page = Lsn(s.0 - 24);
        let from_page = decode_all(
            &mut WalStreamDecoder::new(page, SMALL_SEG),
            &wal[offset(page, start)..],
            5000,
        );
        assert_eq!(from_page.0.first().map(|r| r.lsn), Some(*s));
        let after_hdr = decode_all(
            &mut WalStreamDecoder::new(*s, SMALL_SEG),
            &wal[offset(*s, start)..],
            5000,
        );
        assert_eq!(after_hdr.0.len(), recs.len() - k);
        assert_eq!(from_page.0, after_hdr.0);
    }
}

#[test]
fn start_inside_page_header_is_rejected() {
    let mut dec = WalStreamDecoder::new(Lsn(SMALL_SEG + 8), SMALL_SEG);
    dec.feed_bytes(&[0; 100]);
    assert_eq!(
        dec.poll_decode().unwrap_err().kind,
        WalDecodeErrorKind::InvalidRecordOffset
    );
    // Past a short header, but inside the long header of a segment's first page.
    let mut dec = WalStreamDecoder::new(Lsn(SMALL_SEG + 24), SMALL_SEG);
    assert!(dec.poll_decode().is_err());
    let mut dec = WalStreamDecoder::new(Lsn(SMALL_SEG), 1000);
    assert_eq!(
        dec.poll_decode().unwrap_err().kind,
        WalDecodeErrorKind::BadSegmentSize(1000)
    );
    let mut dec = WalStreamDecoder::new_find_first(Lsn(SMALL_SEG + 40), SMALL_SEG);
    assert_eq!(
        dec.poll_decode().unwrap_err().kind,
        WalDecodeErrorKind::InvalidRecordOffset
    );
}

#[test]
fn find_first_skips_continuation_data() {
    let start = seg_start(1);
    let recs: Vec<Rec> = (0..12)
        .map(|i| Rec::heap(i, if i % 3 == 1 { 20_000 } else { 100 }))
        .collect();
    let (wal, starts) = build_wal(start, SMALL_SEG, &recs);
    for page_no in 1..6u64 {
        let page = Lsn(start.0 + page_no * PAGE);
        let hdr = XLogPageHeaderData::from_bytes(&wal[offset(page, start)..]).unwrap();
        let mut dec = WalStreamDecoder::new_find_first(page, SMALL_SEG);
        let (got, err) = decode_all(&mut dec, &wal[offset(page, start)..], 4096);
        assert_eq!(err, None);
        let first_expected = starts.iter().find(|s| s.0 >= page.0).copied();
        assert_eq!(
            got.first().map(|r| r.lsn),
            first_expected,
            "page {page_no} {hdr:?}"
        );
    }
    // Without find-first, a page that starts with continuation data is an error.
    let page = Lsn(start.0 + PAGE);
    let mut dec = WalStreamDecoder::new(page, SMALL_SEG);
    let (_, err) = decode_all(&mut dec, &wal[offset(page, start)..], 4096);
    assert_eq!(err.unwrap().kind, WalDecodeErrorKind::UnexpectedContrecord);
}

#[test]
fn xlog_switch_skips_to_next_segment() {
    let start = seg_start(4);
    let recs = vec![
        Rec::heap(1, 50),
        Rec::switch(),
        Rec::heap(2, 60),
        Rec::heap(3, 9000),
    ];
    let (wal, starts) = build_wal(start, SMALL_SEG, &recs);
    assert_eq!(starts[2], Lsn(seg_start(5).0 + 40));
    // Garbage in the padding after the switch must be ignored, as PostgreSQL does.
    let mut wal = wal.to_vec();
    let pad = offset(starts[1], start) + 64;
    wal[pad..pad + 5000].fill(0xEE);
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let (got, err) = decode_all(&mut dec, &wal, 10_000);
    assert_eq!(err, None);
    assert_eq!(got.len(), 4);
    assert_eq!(got[1].rmgr_name(), "XLOG");
    assert!(got[1].header.is_xlog_switch());
    assert_eq!(got[1].end_lsn, seg_start(5));
    assert_eq!(got[2].lsn, starts[2]);
    assert_eq!(got[2].header.xl_prev, starts[1]);
}

#[test]
fn crc_failure_is_detected() {
    let start = seg_start(1);
    let recs = mixed_records(8);
    let (wal, starts) = build_wal(start, SMALL_SEG, &recs);
    for (k, delta) in [(2usize, 30usize), (5, 20_000)] {
        let mut bad = wal.to_vec();
        bad[offset(starts[k], start) + delta] ^= 0x01;
        let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
        let (got, err) = decode_all(&mut dec, &bad, 3000);
        assert_eq!(got.len(), k);
        let err = err.unwrap();
        assert_eq!(err.lsn, starts[k]);
        assert!(
            matches!(err.kind, WalDecodeErrorKind::BadCrc { .. }),
            "{err}"
        );
        // The decoder stays failed.
        assert_eq!(dec.poll_decode(), Err(err));
    }
}

#[test]
fn zeros_end_the_wal_and_missing_bytes_do_not() {
    let start = seg_start(1);
    let (wal, starts) = build_wal(start, SMALL_SEG, &mixed_records(4));
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let (got, err) = decode_all(&mut dec, &wal, 1000);
    assert_eq!((got.len(), err), (4, None));
    assert_eq!(dec.poll_decode(), Ok(None));
    dec.feed_bytes(&[0; 64]);
    let err = dec.poll_decode().unwrap_err();
    assert!(err.is_zeroed());
    assert_eq!(err.kind, WalDecodeErrorKind::RecordTooShort(0));
    assert_eq!(err.lsn, got[3].end_lsn);

    // A stream cut inside a record only asks for more.
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let cut = offset(starts[3], start) + 5000;
    let (got, err) = decode_all(&mut dec, &wal[..cut], 1000);
    assert_eq!((got.len(), err), (3, None));
    assert_eq!(dec.partial_record_lsn(), Some(starts[3]));
    assert_eq!(dec.poll_decode(), Ok(None));
}

#[test]
fn zeroed_page_header_ends_the_wal() {
    let start = seg_start(1);
    // The record fills the first page exactly.
    let (wal, _) = build_wal(start, SMALL_SEG, &[Rec::heap(1, 8192 - 40 - 24 - 5)]);
    let mut wal = wal.to_vec();
    assert_eq!(wal.len(), PAGE as usize);
    wal.extend(std::iter::repeat_n(0u8, PAGE as usize));
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let (got, err) = decode_all(&mut dec, &wal, 1000);
    assert_eq!(got.len(), 1);
    let err = err.unwrap();
    assert_eq!(err.kind, WalDecodeErrorKind::BadMagic(0));
    assert_eq!(err.lsn, Lsn(start.0 + PAGE));
    assert!(err.is_zeroed());
}

/// Decodes `wal` after `patch` changed it, returning the error.
fn error_after_patch(patch: impl FnOnce(&mut Vec<u8>)) -> WalDecodeErrorKind {
    let start = seg_start(1);
    let (wal, _) = build_wal(start, SMALL_SEG, &mixed_records(6));
    let mut wal = wal.to_vec();
    patch(&mut wal);
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    decode_all(&mut dec, &wal, 4096).1.expect("an error").kind
}

fn put_u16(wal: &mut [u8], at: usize, v: u16) {
    wal[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(wal: &mut [u8], at: usize, v: u32) {
    wal[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn bad_page_headers_are_detected() {
    use WalDecodeErrorKind as K;
    let p1 = PAGE as usize;
    assert_eq!(
        error_after_patch(|w| put_u16(w, p1, 0xD10D)),
        K::BadMagic(0xD10D)
    );
    assert_eq!(
        error_after_patch(|w| put_u16(w, p1 + 2, 0x0011)),
        K::BadPageInfo(0x0011)
    );
    assert_eq!(
        error_after_patch(|w| put_u16(w, 2, 0)),
        K::MissingLongHeader(0)
    );
    assert_eq!(
        error_after_patch(|w| put_u32(w, 32, 16 << 20)),
        K::WrongSegmentSize(16 << 20)
    );
    assert_eq!(
        error_after_patch(|w| put_u32(w, 36, 4096)),
        K::WrongBlockSize(4096)
    );
    let addr = SMALL_SEG + 5 * PAGE;
    assert_eq!(
        error_after_patch(|w| w[p1 + 8..p1 + 16].copy_from_slice(&addr.to_le_bytes())),
        K::UnexpectedPageAddr(Lsn(addr))
    );
    assert_eq!(
        error_after_patch(|w| put_u32(w, p1 + 4, 0)),
        K::TimelineBackwards {
            tli: 0,
            prev_tli: 1
        }
    );
}

#[test]
fn bad_continuation_headers_are_detected() {
    use WalDecodeErrorKind as K;
    let p1 = PAGE as usize;
    // Page 1 continues record 3 (9000 bytes of data).
    let (wal, _) = build_wal(seg_start(1), SMALL_SEG, &mixed_records(6));
    let hdr = XLogPageHeaderData::from_bytes(&wal[p1..]).unwrap();
    assert_eq!(hdr.xlp_info, XLP_FIRST_IS_CONTRECORD);
    let rem = hdr.xlp_rem_len;
    assert!(rem > 0);
    assert_eq!(
        error_after_patch(|w| put_u16(w, p1 + 2, 0)),
        K::RemLenWithoutContrecord(rem)
    );
    let no_cont = |w: &mut Vec<u8>| {
        put_u16(w, p1 + 2, 0);
        put_u32(w, p1 + 16, 0)
    };
    assert_eq!(error_after_patch(no_cont), K::MissingContrecord);
    assert_eq!(
        error_after_patch(|w| put_u32(w, p1 + 16, rem - 1)),
        K::ContrecordLength {
            rem_len: rem - 1,
            expected: u64::from(rem)
        }
    );
    assert_eq!(
        error_after_patch(|w| put_u32(w, p1 + 16, 0)),
        K::ContrecordLength {
            rem_len: 0,
            expected: u64::from(rem)
        }
    );
}

#[test]
fn record_header_checks() {
    use WalDecodeErrorKind as K;
    let r0 = 40usize;
    assert_eq!(
        error_after_patch(|w| put_u32(w, r0, 23)),
        K::RecordTooShort(23)
    );
    assert_eq!(
        error_after_patch(|w| put_u32(w, r0, u32::MAX)),
        K::RecordTooLong(u32::MAX)
    );
    assert_eq!(error_after_patch(|w| w[r0 + 17] = 100), K::InvalidRmgr(100));
    let bad_prev = SMALL_SEG + 0x1234;
    assert_eq!(
        error_after_patch(|w| w[r0 + 8..r0 + 16].copy_from_slice(&bad_prev.to_le_bytes())),
        K::BadPrevLink(Lsn(bad_prev))
    );
}

#[test]
fn prev_link_of_later_records_must_match_exactly() {
    let start = seg_start(1);
    let (wal, starts) = build_wal(start, SMALL_SEG, &mixed_records(3));
    let mut wal = wal.to_vec();
    let at = offset(starts[2], start) + 8;
    wal[at..at + 8].copy_from_slice(&(starts[0].0).to_le_bytes());
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let (got, err) = decode_all(&mut dec, &wal, 4096);
    assert_eq!(got.len(), 2);
    assert_eq!(
        err.unwrap().kind,
        WalDecodeErrorKind::BadPrevLink(starts[0])
    );
    // set_prev_record_lsn applies the exact check to the first record too.
    let mut dec = WalStreamDecoder::new(starts[1], SMALL_SEG);
    dec.set_prev_record_lsn(Lsn(starts[0].0 + 8));
    let (_, err) = decode_all(&mut dec, &wal[offset(starts[1], start)..], 4096);
    assert_eq!(
        err.unwrap().kind,
        WalDecodeErrorKind::BadPrevLink(starts[0])
    );
}

#[test]
fn record_header_split_across_pages() {
    // Place a record so that only 8 bytes of its header fit on the first page.
    let start = seg_start(1);
    let first_len = 8192 - 40 - 8 - 24 - 5;
    let recs = vec![Rec::heap(1, first_len), Rec::heap(2, 100), Rec::heap(3, 10)];
    let (wal, starts) = build_wal(start, SMALL_SEG, &recs);
    assert_eq!(starts[1].0 % PAGE, PAGE - 8);
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let (got, err) = decode_all(&mut dec, &wal, 3);
    assert_eq!(err, None);
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[1].end_lsn,
        Lsn(start.0 + PAGE + 24 + maxalign(24 + 2 + 100 - 8) as u64)
    );
    // A corrupt xl_rmid in the part on the second page is caught once reassembled.
    let mut bad = wal.to_vec();
    bad[PAGE as usize + 24 + 9] = 99;
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let (got, err) = decode_all(&mut dec, &bad, 4096);
    assert_eq!(got.len(), 1);
    assert_eq!(
        err.unwrap(),
        postgres_ffi::waldecoder::WalDecodeError {
            lsn: starts[1],
            kind: WalDecodeErrorKind::InvalidRmgr(99)
        }
    );
}

#[test]
fn overwrite_contrecord_restarts_at_the_page() {
    // Record 1 is cut after its first page; page 1 is rewritten with
    // XLP_FIRST_IS_OVERWRITE_CONTRECORD and new records whose xl_prev skips the aborted one.
    let start = seg_start(1);
    let (wal, starts) = build_wal(start, SMALL_SEG, &[Rec::heap(1, 100), Rec::heap(2, 20_000)]);
    let page1 = Lsn(start.0 + PAGE);
    let mut tail = WalBuilder::new(page1, SMALL_SEG, 1, SYSID, starts[0]);
    let new_rec = tail
        .append_record(&noop_header(), &main_data_body(16, 0))
        .unwrap();
    let tail = tail.finish();
    let mut wal = wal[..PAGE as usize].to_vec();
    wal.extend_from_slice(&tail);
    put_u16(
        &mut wal,
        PAGE as usize + 2,
        XLP_FIRST_IS_OVERWRITE_CONTRECORD,
    );
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let (got, err) = decode_all(&mut dec, &wal, 1000);
    assert_eq!(err, None);
    assert_eq!(
        got.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        vec![starts[0], new_rec]
    );
    assert_eq!(new_rec, Lsn(page1.0 + 24));
    // With the contrecord flag also set, PostgreSQL refuses the page.
    put_u16(
        &mut wal,
        PAGE as usize + 2,
        XLP_FIRST_IS_OVERWRITE_CONTRECORD | XLP_FIRST_IS_CONTRECORD,
    );
    put_u32(&mut wal, PAGE as usize + 16, 5);
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    assert_eq!(
        decode_all(&mut dec, &wal, 1000).1.unwrap().kind,
        WalDecodeErrorKind::UnexpectedContrecord
    );
}

#[test]
fn system_id_must_match_across_segments() {
    let start = seg_start(1);
    let (wal, _) = build_wal(
        start,
        SMALL_SEG,
        &[Rec::heap(1, 10), Rec::switch(), Rec::heap(2, 10)],
    );
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    dec.set_system_id(SYSID + 1);
    let (got, err) = decode_all(&mut dec, &wal, 1 << 20);
    assert!(got.is_empty());
    assert!(matches!(
        err.unwrap().kind,
        WalDecodeErrorKind::SystemIdMismatch { .. }
    ));
    // Without a configured id, the first long header sets it.
    let mut wal = wal.to_vec();
    let seg2 = SMALL_SEG as usize;
    assert_eq!(
        u16::from_le_bytes([wal[seg2 + 2], wal[seg2 + 3]]) & XLP_LONG_HEADER,
        XLP_LONG_HEADER
    );
    wal[seg2 + 24] ^= 1;
    let mut dec = WalStreamDecoder::new(start, SMALL_SEG);
    let (got, err) = decode_all(&mut dec, &wal, 1 << 20);
    assert_eq!(got.len(), 2);
    assert!(matches!(
        err.unwrap().kind,
        WalDecodeErrorKind::SystemIdMismatch { .. }
    ));
}

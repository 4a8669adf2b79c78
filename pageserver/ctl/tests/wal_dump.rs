//! `pagectl wal-dump` on WAL segment files built with postgres_ffi's encoders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use postgres_ffi::pg_constants::{RM_HEAP_ID, RM_XLOG_ID, XLOG_SWITCH, XLR_BLOCK_ID_DATA_LONG};
use postgres_ffi::walrecord::XLogRecordHeader;
use postgres_ffi::xlog_utils::{xlog_file_name, WalBuilder};
use utils::lsn::Lsn;

const SEG: u64 = 1024 * 1024;

/// A record body with one block reference (rel 1663/5/16384, `fork`, block `blk`, data
/// only) and `main_len` bytes of main data.
fn body(fork: u8, blk: u32, main_len: usize) -> Vec<u8> {
    let mut b = vec![0, fork | 0x20, 2, 0];
    for v in [1663u32, 5, 16384, blk] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.push(XLR_BLOCK_ID_DATA_LONG);
    b.extend_from_slice(&(main_len as u32).to_le_bytes());
    b.extend_from_slice(b"dd");
    b.extend(std::iter::repeat_n(7u8, main_len));
    b
}

fn heap(xid: u32) -> XLogRecordHeader {
    XLogRecordHeader {
        xl_xid: xid,
        xl_rmid: RM_HEAP_ID,
        ..Default::default()
    }
}

/// Writes segments 1..=n built from the records `(header, body)` into `dir`, each
/// zero-padded to the full segment size. Returns the paths and the record LSNs.
fn write_segments(dir: &Path, records: &[(XLogRecordHeader, Vec<u8>)]) -> (Vec<PathBuf>, Vec<Lsn>) {
    let mut b = WalBuilder::new(Lsn(SEG), SEG, 1, 99, Lsn(0x100));
    let mut lsns = Vec::new();
    for (h, body) in records {
        lsns.push(b.append_record(h, body).unwrap());
        if h.is_xlog_switch() {
            b.pad_to_segment_end();
        }
    }
    let wal = b.finish();
    let mut paths = Vec::new();
    for (i, chunk) in wal.chunks(SEG as usize).enumerate() {
        let mut data = chunk.to_vec();
        data.resize(SEG as usize, 0);
        let path = dir.join(xlog_file_name(1, 1 + i as u64, SEG));
        std::fs::write(&path, data).unwrap();
        paths.push(path);
    }
    (paths, lsns)
}

fn pagectl(args: &[&str], files: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pagectl"))
        .arg("wal-dump")
        .args(args)
        .args(files)
        .output()
        .unwrap()
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Several records, two of them spanning into the second segment.
fn sample(dir: &Path) -> (Vec<PathBuf>, Vec<Lsn>) {
    let mut recs = vec![(heap(734), body(0, 0, 10))];
    recs.push((heap(735), body(2, 3, 20)));
    for i in 0..40 {
        recs.push((heap(800 + i), body(0, i, 30_000)));
    }
    write_segments(dir, &recs)
}

#[test]
fn prints_json_lines_in_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (files, lsns) = sample(dir.path());
    assert_eq!(files.len(), 2);
    let out = pagectl(&[], &files);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let first = text.lines().next().unwrap();
    let total_len = 24 + body(0, 0, 10).len() as u64;
    assert_eq!(total_len, 61);
    assert_eq!(
        first,
        format!(
            r#"{{"lsn": "{}", "end_lsn": "{}", "rmgr": "Heap", "xid": 734, "total_len": 61, "blocks": [{{"rel": "1663/5/16384", "fork": "main", "blk": 0, "image": false}}]}}"#,
            lsns[0],
            Lsn(lsns[0].0 + 64)
        )
    );
    let recs = lines(&out);
    assert_eq!(recs.len(), lsns.len());
    for (rec, lsn) in recs.iter().zip(&lsns) {
        assert_eq!(rec["lsn"], lsn.to_string());
    }
    assert_eq!(recs[1]["blocks"][0]["fork"], "vm");
    assert_eq!(recs[1]["blocks"][0]["blk"], 3);
    // The WAL ends in zeros: reported on stderr, exit status 0.
    assert!(
        stderr(&out).contains("end of valid WAL"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn first_file_may_start_inside_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let (files, lsns) = sample(dir.path());
    let out = pagectl(&[], &files[1..]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = lines(&out);
    let first_in_seg2 = lsns.iter().position(|l| l.0 >= 2 * SEG).unwrap();
    assert!(
        lsns[first_in_seg2].0 > 2 * SEG + 40,
        "segment 2 starts with a continuation"
    );
    assert_eq!(recs.len(), lsns.len() - first_in_seg2);
    assert_eq!(recs[0]["lsn"], lsns[first_in_seg2].to_string());
}

#[test]
fn start_and_end_select_records() {
    let dir = tempfile::tempdir().unwrap();
    let (files, lsns) = sample(dir.path());
    let start = Lsn(lsns[5].0 - 8).to_string();
    let end = Lsn(lsns[20].0 + 100).to_string();
    let out = pagectl(&["--start", &start, "--end", &end], &files);
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = lines(&out);
    // Records 5..=19 end before `end`; record 20 does not.
    assert_eq!(recs.len(), 15);
    assert_eq!(recs[0]["lsn"], lsns[5].to_string());
    assert_eq!(recs[14]["lsn"], lsns[19].to_string());
    assert!(
        stderr(&out).contains("first record is after"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn xlog_switch_moves_to_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    let switch = XLogRecordHeader {
        xl_rmid: RM_XLOG_ID,
        xl_info: XLOG_SWITCH,
        ..Default::default()
    };
    let recs = vec![
        (heap(1), body(0, 1, 5)),
        (switch, vec![]),
        (heap(2), body(0, 2, 5)),
    ];
    let (files, lsns) = write_segments(dir.path(), &recs);
    let out = pagectl(&[], &files);
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = lines(&out);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1]["rmgr"], "XLOG");
    assert_eq!(recs[1]["end_lsn"], Lsn(2 * SEG).to_string());
    assert_eq!(recs[2]["lsn"], lsns[2].to_string());
}

#[test]
fn bad_files_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = sample(dir.path());
    let missing = dir.path().join(xlog_file_name(1, 3, SEG));
    let out = pagectl(&[], &[files[1].clone(), missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot open WAL segment file"),
        "{}",
        stderr(&out)
    );

    let out = pagectl(&[], &[files[1].clone(), files[0].clone()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not the segment after"),
        "{}",
        stderr(&out)
    );

    let odd = dir.path().join("not-a-segment");
    std::fs::write(&odd, [0u8; 16]).unwrap();
    let out = pagectl(&[], &[odd]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not named like a WAL segment file"),
        "{}",
        stderr(&out)
    );

    let out = pagectl(&["--start", "0/5000000"], &files);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not inside the given files"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn invalid_wal_before_requested_end_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (files, lsns) = sample(dir.path());
    let end = Lsn(3 * SEG - 8).to_string();
    let out = pagectl(&["--end", &end], &files);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(lines(&out).len(), lsns.len());
    assert!(
        stderr(&out).contains("ends before the requested end"),
        "{}",
        stderr(&out)
    );

    // A zeroed segment holds no record at all.
    let zero = dir.path().join(xlog_file_name(1, 7, SEG));
    std::fs::write(&zero, vec![0u8; SEG as usize]).unwrap();
    let out = pagectl(&[], &[zero]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("could not find a valid record"),
        "{}",
        stderr(&out)
    );
}

//! `pagectl wal-dump`: prints the records of PostgreSQL 15 WAL segment files as JSON Lines.
//!
//! Like pg_waldump, it starts at the first record that begins at or after the start position
//! (skipping the tail of a record begun in an earlier segment), reads the given consecutive
//! segment files, and stops at the end of valid WAL. That end is reported on stderr.
//!
//! Exit status: 0 when the records were printed up to the end of valid WAL, the end of the
//! files, or `--end`; 1 for unusable arguments or files, when no valid record is found, or
//! when the WAL turns invalid before an explicitly requested `--end`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use postgres_ffi::pg_constants::{is_valid_wal_segment_size, WAL_SEGMENT_SIZE, XLOG_PAGE_MAGIC};
use postgres_ffi::records::decode_main_data;
use postgres_ffi::waldecoder::{WalDecodeError, WalStreamDecoder};
use postgres_ffi::walrecord::DecodedWalRecord;
use postgres_ffi::xlog_utils::{parse_xlog_file_name, segment_start_lsn, XLogLongPageHeaderData};
use utils::lsn::Lsn;

/// Bytes read from a segment file at a time.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// Arguments of `pagectl wal-dump`.
#[derive(clap::Args, Debug)]
pub struct WalDumpArgs {
    /// WAL segment files (e.g. pg_wal/000000010000000000000001), consecutive and in order.
    #[arg(required = true, value_name = "SEGMENT_FILE")]
    pub files: Vec<PathBuf>,
    /// Print the records that start at or after this LSN (default: start of the first file).
    #[arg(long, value_name = "LSN")]
    pub start: Option<Lsn>,
    /// Stop at this LSN: print only records that end at or before it.
    #[arg(long, value_name = "LSN")]
    pub end: Option<Lsn>,
    /// Also decode every record's main data with the typed decoders (postgres_ffi::records)
    /// and fail on the first record whose body does not decode.
    #[arg(long)]
    pub check_bodies: bool,
}

/// A segment file to read.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    start: Lsn,
    len_bytes: u64,
}

/// How reading stopped.
enum Stop {
    /// The WAL is invalid here: its end, as far as PostgreSQL is concerned.
    Invalid(WalDecodeError),
    /// All the requested bytes were read.
    InputEnd,
}

/// Runs the command, writing records to `out` and diagnostics to `err`.
pub fn run(
    args: &WalDumpArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let seg_size = detect_segment_size(&args.files[0])?;
    let segments = open_segments(&args.files, seg_size)?;
    let (start, end) = requested_range(&segments, args.start, args.end)?;
    let mut dumper = Dumper {
        decoder: WalStreamDecoder::new_find_first(start.page_start(), seg_size),
        start,
        first_printed: None,
        last_printed: None,
        check_bodies: args.check_bodies,
        out,
    };
    let stop = dumper.dump(&segments, end)?;
    if let Some(first) = dumper.first_printed {
        if first != start && start.segment_offset(seg_size) != 0 {
            let skipped = first.0 - start.0;
            writeln!(
                err,
                "pagectl: first record is after {start}, at {first}, skipping over {skipped} bytes"
            )?;
        }
    }
    let last = dumper.last_printed;
    let partial = dumper.decoder.partial_record_lsn();
    report_end(err, stop, start, last, partial, args.end)
}

/// The segment size: from the first file's long page header if it has one, else from the
/// file's size if that is a valid segment size, else PostgreSQL's default of 16 MiB.
fn detect_segment_size(path: &Path) -> anyhow::Result<u64> {
    let mut file = File::open(path)
        .with_context(|| format!("cannot open WAL segment file {}", path.display()))?;
    let mut buf = [0u8; XLogLongPageHeaderData::SIZE];
    let got = file.read(&mut buf)?;
    if let Ok(hdr) = XLogLongPageHeaderData::from_bytes(&buf[..got]) {
        let size = hdr.xlp_seg_size as usize;
        if hdr.std.xlp_magic == XLOG_PAGE_MAGIC
            && hdr.std.is_long()
            && is_valid_wal_segment_size(size)
        {
            return Ok(size as u64);
        }
    }
    let file_len = file.metadata()?.len();
    match usize::try_from(file_len) {
        Ok(len) if is_valid_wal_segment_size(len) => Ok(file_len),
        _ => Ok(WAL_SEGMENT_SIZE as u64),
    }
}

/// Checks the file names, that the segments are consecutive, and their sizes.
fn open_segments(files: &[PathBuf], seg_size: u64) -> anyhow::Result<Vec<Segment>> {
    let mut segments: Vec<Segment> = Vec::with_capacity(files.len());
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let (_tli, segno) = parse_xlog_file_name(&name, seg_size)
            .with_context(|| format!("{} is not named like a WAL segment file", path.display()))?;
        let len_bytes = std::fs::metadata(path)
            .with_context(|| format!("cannot open WAL segment file {}", path.display()))?
            .len();
        if len_bytes > seg_size {
            bail!(
                "{} is {len_bytes} bytes, larger than a {seg_size}-byte segment",
                path.display()
            );
        }
        let start = segment_start_lsn(segno, seg_size).context("segment number out of range")?;
        if let Some(prev) = segments.last() {
            if start.0 != prev.start.0 + seg_size {
                bail!(
                    "{} is not the segment after {}",
                    path.display(),
                    prev.path.display()
                );
            }
            if prev.len_bytes != seg_size {
                bail!(
                    "{} is incomplete ({} bytes) but not the last file",
                    prev.path.display(),
                    prev.len_bytes
                );
            }
        }
        segments.push(Segment {
            path: path.clone(),
            start,
            len_bytes,
        });
    }
    Ok(segments)
}

/// The WAL range to dump, checked against what the files hold.
fn requested_range(
    segments: &[Segment],
    start: Option<Lsn>,
    end: Option<Lsn>,
) -> anyhow::Result<(Lsn, Lsn)> {
    let (first, last) = match (segments.first(), segments.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => bail!("no WAL segment files given"),
    };
    let available = (first.start, Lsn(last.start.0 + last.len_bytes));
    let start = start.unwrap_or(available.0);
    let end = end.unwrap_or(available.1);
    if start < available.0 || start >= available.1 {
        bail!(
            "start LSN {start} is not inside the given files ({} to {})",
            available.0,
            available.1
        );
    }
    if end > available.1 {
        bail!(
            "end LSN {end} is beyond the end of the given files ({})",
            available.1
        );
    }
    if end <= start {
        bail!("end LSN {end} is not after start LSN {start}");
    }
    Ok((start, end))
}

/// Reads the segments, decodes them and prints records.
struct Dumper<'a, W: Write> {
    decoder: WalStreamDecoder,
    start: Lsn,
    first_printed: Option<Lsn>,
    last_printed: Option<Lsn>,
    check_bodies: bool,
    out: &'a mut W,
}

impl<W: Write> Dumper<'_, W> {
    /// Feeds the bytes from the decoder's position up to `end`, printing records as they
    /// are decoded.
    fn dump(&mut self, segments: &[Segment], end: Lsn) -> anyhow::Result<Stop> {
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        for seg in segments {
            let from = self.decoder.available_lsn().max(seg.start);
            let to = end.min(Lsn(seg.start.0 + seg.len_bytes));
            if from >= to {
                continue;
            }
            let mut file = File::open(&seg.path)
                .with_context(|| format!("cannot open WAL segment file {}", seg.path.display()))?;
            file.seek(SeekFrom::Start(from.0 - seg.start.0))?;
            let mut remaining = (to.0 - from.0) as usize;
            while remaining > 0 {
                let n = remaining.min(buf.len());
                file.read_exact(&mut buf[..n])
                    .with_context(|| format!("cannot read {}", seg.path.display()))?;
                remaining -= n;
                self.decoder.feed_bytes(&buf[..n]);
                if let Some(stop) = self.drain()? {
                    return Ok(stop);
                }
            }
        }
        Ok(Stop::InputEnd)
    }

    /// Prints every record that can be decoded now.
    fn drain(&mut self) -> anyhow::Result<Option<Stop>> {
        loop {
            match self.decoder.poll_decode() {
                Ok(Some(rec)) if rec.lsn < self.start => continue,
                Ok(Some(rec)) => {
                    if self.check_bodies {
                        check_body(&rec)?;
                    }
                    write_record_json(self.out, &rec)?;
                    self.first_printed.get_or_insert(rec.lsn);
                    self.last_printed = Some(rec.lsn);
                }
                Ok(None) => return Ok(None),
                Err(e) => return Ok(Some(Stop::Invalid(e))),
            }
        }
    }
}

/// Decodes the record's main data with the typed decoders.
fn check_body(rec: &DecodedWalRecord) -> anyhow::Result<()> {
    let h = &rec.header;
    decode_main_data(h.xl_rmid, h.xl_info, h.xl_xid, &rec.main_data).with_context(|| {
        format!(
            "decode the main data of the {} record at {} (info 0x{:02X})",
            rec.rmgr_name(),
            rec.lsn,
            h.xl_info
        )
    })?;
    Ok(())
}

/// Writes `{"lsn": ..., "end_lsn": ..., "rmgr": ..., "xid": ..., "total_len": ..., "blocks": [...]}`.
fn write_record_json(out: &mut impl Write, rec: &DecodedWalRecord) -> std::io::Result<()> {
    write!(
        out,
        r#"{{"lsn": "{}", "end_lsn": "{}", "rmgr": "{}", "xid": {}, "total_len": {}, "blocks": ["#,
        rec.lsn,
        rec.end_lsn,
        rec.rmgr_name(),
        rec.xid(),
        rec.total_len()
    )?;
    for (i, blk) in rec.blocks.iter().enumerate() {
        write!(
            out,
            r#"{}{{"rel": "{}", "fork": "{}", "blk": {}, "image": {}}}"#,
            if i == 0 { "" } else { ", " },
            blk.rnode,
            blk.forknum.name(),
            blk.blkno,
            blk.has_image
        )?;
    }
    out.write_all(b"]}\n")
}

/// Reports how reading ended on `err` and picks the exit status.
fn report_end(
    err: &mut impl Write,
    stop: Stop,
    start: Lsn,
    last_printed: Option<Lsn>,
    partial: Option<Lsn>,
    requested_end: Option<Lsn>,
) -> anyhow::Result<ExitCode> {
    let after = last_printed.map_or_else(|| format!("{start}"), |l| format!("record at {l}"));
    match stop {
        Stop::Invalid(e) => {
            writeln!(err, "pagectl: end of valid WAL after {after}: {e}")?;
            if last_printed.is_none() {
                writeln!(
                    err,
                    "pagectl: error: could not find a valid record after {start}"
                )?;
                return Ok(ExitCode::FAILURE);
            }
            if let Some(end) = requested_end {
                writeln!(
                    err,
                    "pagectl: error: the WAL ends before the requested end {end}"
                )?;
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Stop::InputEnd if requested_end.is_some() => Ok(ExitCode::SUCCESS),
        Stop::InputEnd => {
            if let Some(lsn) = partial {
                writeln!(err, "pagectl: the files end inside the record at {lsn}")?;
            }
            if last_printed.is_none() {
                writeln!(
                    err,
                    "pagectl: error: could not find a valid record after {start}"
                )?;
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

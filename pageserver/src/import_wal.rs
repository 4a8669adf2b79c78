//! Importing WAL into a timeline: WAL segment files (a pg_wal directory, or a tar of them as
//! `pg_basebackup -Ft` writes pg_wal.tar) decoded from a start LSN and ingested through
//! [`WalIngest`], up to an end LSN or to the end of valid WAL.

use std::io::Read;
use std::path::Path;

use postgres_ffi::controlfile::{ControlFileData, DbState};
use postgres_ffi::waldecoder::{WalDecodeError, WalStreamDecoder};
use postgres_ffi::walrecord::DecodedWalRecord;
use postgres_ffi::xlog_utils::parse_xlog_file_name;
use utils::lsn::Lsn;

use crate::import_datadir::{import_datadir, ImportError};
use crate::pgdatadir_mapping::DatadirRead;
use crate::storage_api::{TimelineRead, TimelineWrite};
use crate::walingest::{ingest_batch, IngestError, WalIngest};

/// Records ingested per batch (one modification, one `finish_write`).
pub const MAX_BATCH_RECORDS: usize = 1024;
/// Record bytes ingested per batch.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Where WAL import stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalEnd {
    /// Exactly at this LSN, which must be the end of a record.
    Lsn(Lsn),
    /// At the end of the valid WAL (the first invalid record or missing segment).
    EndOfWal,
    /// Right after the record that starts at this LSN.
    AfterRecordAt(Lsn),
}

impl WalEnd {
    /// The LSN the import must reach, if any.
    fn required(self) -> Option<Lsn> {
        match self {
            WalEnd::Lsn(lsn) | WalEnd::AfterRecordAt(lsn) => Some(lsn),
            WalEnd::EndOfWal => None,
        }
    }
}

/// Why WAL import failed.
#[derive(Debug, thiserror::Error)]
pub enum WalImportError {
    #[error("cannot read WAL {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid tar archive: {0}")]
    Archive(#[source] std::io::Error),
    #[error("the stored control file is unusable: {0}")]
    ControlFile(String),
    #[error("WAL segment {name} is {len_bytes} bytes, expected {seg_size_bytes}")]
    BadSegmentSize {
        name: String,
        len_bytes: u64,
        seg_size_bytes: u64,
    },
    #[error("WAL segment {found} follows segment {previous}: segments must be consecutive")]
    SegmentOrder { previous: u64, found: u64 },
    #[error("WAL ends at {reached} before the requested end {end}{}", .reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    EndedEarly {
        reached: Lsn,
        end: Lsn,
        reason: Option<WalDecodeError>,
    },
    #[error("end LSN {end} is inside the record at {record_lsn} (ends at {record_end})")]
    EndInsideRecord {
        end: Lsn,
        record_lsn: Lsn,
        record_end: Lsn,
    },
    #[error("end LSN {end} is before the start LSN {start}")]
    EndBeforeStart { start: Lsn, end: Lsn },
    #[error("no record starts at {at} (the record at {record_lsn} follows)")]
    NoRecordAt { at: Lsn, record_lsn: Lsn },
    #[error("the data directory was not shut down cleanly (state {state:?}, checkpoint {checkpoint}, redo {redo})")]
    NotShutDown {
        state: DbState,
        checkpoint: Lsn,
        redo: Lsn,
    },
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Import(#[from] ImportError),
}

/// What a WAL import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalImportResult {
    /// End LSN of the last record ingested (the start LSN if none).
    pub last_record_lsn: Lsn,
    /// Start LSN of the last record ingested (0 if none).
    pub prev_record_lsn: Lsn,
    pub records: usize,
}

/// Decodes fed segments and ingests batches of records.
struct WalImporter<'t, T> {
    tline: &'t mut T,
    ingest: WalIngest,
    decoder: WalStreamDecoder,
    seg_size: u64,
    start: Lsn,
    end: WalEnd,
    next_segno: u64,
    batch: Vec<DecodedWalRecord>,
    batch_bytes: usize,
    result: WalImportResult,
    done: bool,
}

impl<'t, T: TimelineRead + TimelineWrite> WalImporter<'t, T> {
    fn new(tline: &'t mut T, start: Lsn, end: WalEnd) -> Result<Self, WalImportError> {
        if let WalEnd::Lsn(e) = end {
            if e < start {
                return Err(WalImportError::EndBeforeStart { start, end: e });
            }
        }
        let control = tline.get_control_file(start).map_err(IngestError::from)?;
        let control = ControlFileData::decode(&control)
            .map_err(|e| WalImportError::ControlFile(e.to_string()))?;
        let seg_size = u64::from(control.xlog_seg_size);
        let mut decoder = WalStreamDecoder::new(start, seg_size);
        decoder.set_system_id(control.system_identifier);
        let ingest = WalIngest::new(&*tline, start)?;
        Ok(WalImporter {
            tline,
            ingest,
            decoder,
            seg_size,
            start,
            end,
            next_segno: start.segment_number(seg_size),
            batch: Vec::new(),
            batch_bytes: 0,
            result: WalImportResult {
                last_record_lsn: start,
                prev_record_lsn: Lsn::INVALID,
                records: 0,
            },
            done: end == WalEnd::Lsn(start),
        })
    }

    /// Feeds segment `segno` (earlier ones are skipped; later ones must be consecutive).
    fn feed_segment(&mut self, name: &str, segno: u64, data: &[u8]) -> Result<(), WalImportError> {
        if self.done || segno < self.next_segno {
            return Ok(());
        }
        if segno != self.next_segno {
            return Err(WalImportError::SegmentOrder {
                previous: self.next_segno.wrapping_sub(1),
                found: segno,
            });
        }
        if data.len() as u64 != self.seg_size {
            return Err(WalImportError::BadSegmentSize {
                name: name.to_string(),
                len_bytes: data.len() as u64,
                seg_size_bytes: self.seg_size,
            });
        }
        let from = if segno == self.start.segment_number(self.seg_size) {
            self.start.segment_offset(self.seg_size) as usize
        } else {
            0
        };
        self.decoder.feed_bytes(&data[from..]);
        self.next_segno += 1;
        self.decode_available()
    }

    /// Decodes every complete record fed so far.
    fn decode_available(&mut self) -> Result<(), WalImportError> {
        while !self.done {
            match self.decoder.poll_decode() {
                Ok(Some(rec)) => self.take_record(rec)?,
                Ok(None) => break,
                Err(err) => {
                    self.flush()?;
                    return match self.end.required() {
                        None => {
                            self.done = true;
                            Ok(())
                        }
                        Some(end) => Err(WalImportError::EndedEarly {
                            reached: self.result.last_record_lsn,
                            end,
                            reason: Some(err),
                        }),
                    };
                }
            }
        }
        Ok(())
    }

    fn take_record(&mut self, rec: DecodedWalRecord) -> Result<(), WalImportError> {
        if let WalEnd::Lsn(end) = self.end {
            if rec.end_lsn > end {
                return Err(WalImportError::EndInsideRecord {
                    end,
                    record_lsn: rec.lsn,
                    record_end: rec.end_lsn,
                });
            }
            self.done = rec.end_lsn == end;
        }
        if let WalEnd::AfterRecordAt(at) = self.end {
            if rec.lsn > at {
                return Err(WalImportError::NoRecordAt {
                    at,
                    record_lsn: rec.lsn,
                });
            }
            self.done = rec.lsn == at;
        }
        self.batch_bytes += rec.record.len();
        self.batch.push(rec);
        if self.done || self.batch.len() >= MAX_BATCH_RECORDS || self.batch_bytes >= MAX_BATCH_BYTES
        {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), WalImportError> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if let Some(done) = ingest_batch(&mut *self.tline, &mut self.ingest, batch)? {
            self.result.last_record_lsn = done.last_record_lsn;
            self.result.prev_record_lsn = done.prev_record_lsn;
            self.result.records += done.records;
        }
        Ok(())
    }

    /// No more segments: succeeds if the end was reached.
    fn finish(mut self) -> Result<WalImportResult, WalImportError> {
        self.flush()?;
        match self.end.required() {
            Some(end) if !self.done => Err(WalImportError::EndedEarly {
                reached: self.result.last_record_lsn,
                end,
                reason: None,
            }),
            _ => Ok(self.result),
        }
    }
}

/// Ingests the WAL segments in directory `dir` (e.g. a stopped server's pg_wal) from `start`
/// (a record start) to `end`.
pub fn import_wal_dir<T: TimelineRead + TimelineWrite>(
    tline: &mut T,
    dir: &Path,
    start: Lsn,
    end: WalEnd,
) -> Result<WalImportResult, WalImportError> {
    let mut importer = WalImporter::new(tline, start, end)?;
    let io_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| WalImportError::Io { path, source }
    };
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok((_, segno)) = parse_xlog_file_name(&name, importer.seg_size) {
            segments.push((segno, name));
        }
    }
    segments.sort();
    for (segno, name) in segments {
        if importer.done {
            break;
        }
        if segno < importer.next_segno {
            continue;
        }
        if segno != importer.next_segno {
            // A gap ends the WAL.
            break;
        }
        let path = dir.join(&name);
        let data = std::fs::read(&path).map_err(io_err(&path))?;
        importer.feed_segment(&name, segno, &data)?;
    }
    importer.finish()
}

/// Ingests the WAL segments of a tar (entries named like `000000010000000000000001`,
/// optionally under `pg_wal/`, in order) from `start` to `end`.
pub fn import_wal_tar<T: TimelineRead + TimelineWrite, R: Read>(
    tline: &mut T,
    reader: R,
    start: Lsn,
    end: WalEnd,
) -> Result<WalImportResult, WalImportError> {
    let mut importer = WalImporter::new(tline, start, end)?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(WalImportError::Archive)? {
        if importer.done {
            break;
        }
        let mut entry = entry.map_err(WalImportError::Archive)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry
            .path()
            .map_err(WalImportError::Archive)?
            .to_string_lossy()
            .into_owned();
        let name = path.rsplit('/').next().unwrap_or(&path).to_string();
        let Ok((_, segno)) = parse_xlog_file_name(&name, importer.seg_size) else {
            continue;
        };
        if entry.size() != importer.seg_size {
            return Err(WalImportError::BadSegmentSize {
                name,
                len_bytes: entry.size(),
                seg_size_bytes: importer.seg_size,
            });
        }
        let mut data = vec![0u8; importer.seg_size as usize];
        entry
            .read_exact(&mut data)
            .map_err(|source| WalImportError::Io {
                path: path.clone(),
                source,
            })?;
        importer.feed_segment(&name, segno, &data)?;
    }
    importer.finish()
}

/// Bootstrap from a cleanly shut down data directory (e.g. after initdb): imports it at its
/// shutdown checkpoint's LSN, then ingests that checkpoint record from its pg_wal, so that the
/// timeline ends right after the record with the record as its prev LSN (a compute can start
/// writable there) and the stored checkpoint marks a clean shutdown.
pub fn bootstrap_from_datadir<T: TimelineRead + TimelineWrite>(
    tline: &mut T,
    pgdata: &Path,
) -> Result<(ControlFileData, WalImportResult), WalImportError> {
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).map_err(|source| WalImportError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let control =
        ControlFileData::decode(&bytes).map_err(|e| WalImportError::ControlFile(e.to_string()))?;
    let checkpoint = control.checkpoint;
    if control.state != DbState::Shutdowned || control.checkpoint_copy.redo != checkpoint {
        return Err(WalImportError::NotShutDown {
            state: control.state,
            checkpoint,
            redo: control.checkpoint_copy.redo,
        });
    }
    let control = import_datadir(tline, pgdata, checkpoint)?;
    let wal = import_wal_dir(
        tline,
        &pgdata.join("pg_wal"),
        checkpoint,
        WalEnd::AfterRecordAt(checkpoint),
    )?;
    Ok((control, wal))
}

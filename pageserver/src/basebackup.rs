//! Basebackup and fullbackup tars of a timeline at an LSN, streamed to any `Write`.
//!
//! Order of entries: directories; pg_hba.conf, pg_ident.conf, postgresql.auto.conf; SLRU
//! segments; per database PG_VERSION and pg_filenode.map (plus the root PG_VERSION with the
//! global one); relation files; pg_twophase files (stored content + CRC-32C); neon.signal and
//! zenith.signal; global/pg_control; the generated WAL segment last.
//!
//! A normal basebackup carries only init forks (as `<rel>_init` and as the main fork
//! `<rel>`): the compute reads everything else from the pageserver. A fullbackup carries every
//! fork in 1 GiB segment files.

pub mod generate;

use std::io::{self, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pageserver_api::key::{RelTag, SlruKind};
use postgres_ffi::controlfile::ControlFileError;
use postgres_ffi::relfile::{ForkNumber, DEFAULTTABLESPACE_OID, GLOBALTABLESPACE_OID, RELSEG_SIZE};
use postgres_ffi::xlog_utils::xlog_file_name;
use utils::lsn::Lsn;

pub use generate::{decide_prev_record, normalize_lsn, PrevLsnMismatch, PrevRecord};

use crate::pg_consts::{BLCKSZ, PG_MAJORVERSION_FILE};
use crate::pgdatadir_mapping::{DatadirError, DatadirRead};
use crate::storage_api::TimelineRead;

/// Directories every basebackup has (database directories come with their databases).
pub const PGDATA_SUBDIRS: [&str; 22] = [
    "global",
    "pg_wal",
    "pg_wal/archive_status",
    "pg_commit_ts",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
    "pg_twophase",
    "pg_multixact",
    "pg_multixact/members",
    "pg_multixact/offsets",
    "base",
    "pg_replslot",
    "pg_tblspc",
    "pg_stat",
    "pg_stat_tmp",
    "pg_xact",
    "pg_logical",
    "pg_logical/snapshots",
    "pg_logical/mappings",
];

/// Why a basebackup could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum BasebackupError {
    #[error(transparent)]
    Datadir(#[from] DatadirError),
    #[error("writing the tar stream: {0}")]
    Write(#[source] io::Error),
    #[error("the stored control file is unusable: {0}")]
    ControlFile(#[source] ControlFileError),
    #[error("database {dbnode} in tablespace {spcnode}: user tablespaces are not supported")]
    UnsupportedTablespace { spcnode: u32, dbnode: u32 },
    #[error("page {blkno} of {rel} is {len_bytes} bytes")]
    BadPage {
        rel: RelTag,
        blkno: u32,
        len_bytes: usize,
    },
}

/// What to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasebackupParams {
    pub lsn: Lsn,
    pub prev_record: PrevRecord,
    /// All forks of all relations (for export), not just init forks.
    pub full_backup: bool,
}

/// Writes the tar to `out` and returns it (the tar end-of-archive blocks are written).
pub fn send_basebackup_tarball<W: Write, R: TimelineRead>(
    out: W,
    tline: &R,
    params: BasebackupParams,
) -> Result<W, BasebackupError> {
    let mut bb = Basebackup {
        ar: tar::Builder::new(out),
        tline,
        lsn: params.lsn,
        mtime: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    for dir in PGDATA_SUBDIRS {
        bb.add_dir(dir)?;
    }
    bb.add_file("pg_hba.conf", generate::PG_HBA_CONF.as_bytes())?;
    bb.add_file("pg_ident.conf", b"")?;
    bb.add_file("postgresql.auto.conf", b"")?;
    for kind in SlruKind::ALL {
        bb.add_slru(kind)?;
    }
    let dbs = tline.list_dbdirs(params.lsn)?;
    for (&(spc, db), &has_relmap) in &dbs {
        bb.add_db(spc, db, has_relmap)?;
    }
    for &(spc, db) in dbs.keys() {
        let rels = tline.list_rels(spc, db, params.lsn)?;
        for &rel in &rels {
            let has_main = rels.contains(&rel.with_fork(ForkNumber::Main));
            bb.add_rel_files(rel, params.full_backup, has_main)?;
        }
    }
    for xid in tline.list_twophase_files(params.lsn)? {
        let mut content = tline.get_twophase_file(xid, params.lsn)?.to_vec();
        let crc = crc32c::crc32c(&content);
        content.extend_from_slice(&crc.to_le_bytes());
        bb.add_file(&format!("pg_twophase/{xid:08X}"), &content)?;
    }
    let signal = params.prev_record.signal_file_content();
    bb.add_file("neon.signal", signal.as_bytes())?;
    bb.add_file("zenith.signal", signal.as_bytes())?;
    bb.add_control_and_wal()?;
    bb.ar.into_inner().map_err(BasebackupError::Write)
}

struct Basebackup<'a, W: Write, R> {
    ar: tar::Builder<W>,
    tline: &'a R,
    lsn: Lsn,
    mtime: u64,
}

impl<W: Write, R: TimelineRead> Basebackup<'_, W, R> {
    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h
    }

    fn add_dir(&mut self, path: &str) -> Result<(), BasebackupError> {
        let mut h = self.header(tar::EntryType::Directory, 0o700, 0);
        self.ar
            .append_data(&mut h, path, io::empty())
            .map_err(BasebackupError::Write)
    }

    fn add_file(&mut self, path: &str, content: &[u8]) -> Result<(), BasebackupError> {
        let mut h = self.header(tar::EntryType::Regular, 0o600, content.len() as u64);
        self.ar
            .append_data(&mut h, path, content)
            .map_err(BasebackupError::Write)
    }

    /// Every segment of an SLRU, as `<dir>/<segno %04X>`.
    fn add_slru(&mut self, kind: SlruKind) -> Result<(), BasebackupError> {
        for segno in self.tline.list_slru_segments(kind, self.lsn)? {
            let nblocks = self
                .tline
                .get_slru_segment_size(kind, segno, self.lsn)?
                .unwrap_or(0);
            let mut content = Vec::with_capacity(nblocks as usize * BLCKSZ);
            for blkno in 0..nblocks {
                content.extend_from_slice(
                    &self
                        .tline
                        .get_slru_page_at_lsn(kind, segno, blkno, self.lsn)?,
                );
            }
            self.add_file(&format!("{}/{segno:04X}", kind.dir_name()), &content)?;
        }
        Ok(())
    }

    /// A database directory: PG_VERSION and the relmap file. Databases with neither a relmap
    /// nor relations are left out.
    fn add_db(&mut self, spc: u32, db: u32, has_relmap: bool) -> Result<(), BasebackupError> {
        let relmap = if has_relmap {
            self.tline.get_relmap_file(spc, db, self.lsn)?
        } else {
            None
        };
        let dir = match spc {
            GLOBALTABLESPACE_OID => {
                self.add_file("PG_VERSION", PG_MAJORVERSION_FILE.as_bytes())?;
                "global".to_string()
            }
            DEFAULTTABLESPACE_OID => {
                if relmap.is_none() && self.tline.list_rels(spc, db, self.lsn)?.is_empty() {
                    return Ok(());
                }
                let dir = format!("base/{db}");
                self.add_dir(&dir)?;
                dir
            }
            _ => {
                return Err(BasebackupError::UnsupportedTablespace {
                    spcnode: spc,
                    dbnode: db,
                })
            }
        };
        self.add_file(
            &format!("{dir}/PG_VERSION"),
            PG_MAJORVERSION_FILE.as_bytes(),
        )?;
        if let Some(relmap) = relmap {
            self.add_file(&format!("{dir}/pg_filenode.map"), &relmap)?;
        }
        Ok(())
    }

    /// Files of one relation fork: every fork in 1 GiB segments for a full backup; for a
    /// normal one only init forks, written both as the init fork and as the main fork.
    ///
    /// An unlogged relation's main fork is never WAL-logged, so the pageserver does not have
    /// it (`has_main` is false): a full backup writes the init fork as its main fork too, as
    /// PostgreSQL's crash recovery would (it does not do so itself when started from a
    /// pg_control marked as shut down).
    fn add_rel_files(
        &mut self,
        rel: RelTag,
        full_backup: bool,
        has_main: bool,
    ) -> Result<(), BasebackupError> {
        let is_init = rel.forknum == ForkNumber::Init as u8;
        if !full_backup && !is_init {
            return Ok(());
        }
        let Some(fork) = rel.fork() else {
            return Ok(());
        };
        let nblocks = self.tline.get_rel_size(rel, self.lsn)?.unwrap_or(0);
        let mut targets = vec![fork];
        if is_init && (!full_backup || !has_main) {
            targets.push(ForkNumber::Main);
        }
        for target in targets {
            let nsegs = nblocks.div_ceil(RELSEG_SIZE).max(1);
            for segno in 0..nsegs {
                let start = segno * RELSEG_SIZE;
                let end = nblocks.min(start.saturating_add(RELSEG_SIZE));
                let path = rel.rnode().segment_path(target, segno);
                self.add_rel_segment(rel, &path, start..end)?;
            }
        }
        Ok(())
    }

    /// Streams blocks `range` of `rel` as the file at `path`, one page in memory at a time.
    fn add_rel_segment(
        &mut self,
        rel: RelTag,
        path: &str,
        range: std::ops::Range<u32>,
    ) -> Result<(), BasebackupError> {
        let size = u64::from(range.end - range.start) * BLCKSZ as u64;
        let mut h = self.header(tar::EntryType::Regular, 0o600, size);
        let mut reader = PageReader {
            tline: self.tline,
            rel,
            lsn: self.lsn,
            next: range.start,
            end: range.end,
            page: Bytes::new(),
            pos: 0,
            error: None,
        };
        let res = self.ar.append_data(&mut h, path, &mut reader);
        match (res, reader.error) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(err)) => Err(err),
            (Err(e), None) => Err(BasebackupError::Write(e)),
        }
    }

    /// global/pg_control, then the WAL segment to start writing in.
    fn add_control_and_wal(&mut self) -> Result<(), BasebackupError> {
        let stored = self.tline.get_control_file(self.lsn)?;
        let checkpoint = self.tline.get_checkpoint(self.lsn)?;
        let control = generate::generate_pg_control(&stored, &checkpoint, self.lsn)
            .map_err(BasebackupError::ControlFile)?;
        self.add_file("global/pg_control", &control.bytes)?;
        let start = normalize_lsn(self.lsn, control.seg_size);
        let segno = start.segment_number(control.seg_size);
        let name = xlog_file_name(generate::PG_TLI, segno, control.seg_size);
        let segment =
            generate::generate_wal_segment(self.lsn, control.system_identifier, control.seg_size);
        self.add_file(&format!("pg_wal/{name}"), &segment)
    }
}

/// Reads a relation's pages as one byte stream, fetching a page at a time.
struct PageReader<'a, R> {
    tline: &'a R,
    rel: RelTag,
    lsn: Lsn,
    next: u32,
    end: u32,
    page: Bytes,
    pos: usize,
    /// The error that stopped the stream (the tar writer only sees an io::Error).
    error: Option<BasebackupError>,
}

impl<R: TimelineRead> Read for PageReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.page.len() {
            if self.next >= self.end {
                return Ok(0);
            }
            let page = self
                .tline
                .get_rel_page_at_lsn(self.rel, self.next, self.lsn);
            let err = match page {
                Ok(p) if p.len() == BLCKSZ => {
                    self.page = p;
                    self.pos = 0;
                    self.next += 1;
                    None
                }
                Ok(p) => Some(BasebackupError::BadPage {
                    rel: self.rel,
                    blkno: self.next,
                    len_bytes: p.len(),
                }),
                Err(e) => Some(BasebackupError::Datadir(e)),
            };
            if let Some(err) = err {
                let msg = err.to_string();
                self.error = Some(err);
                return Err(io::Error::other(msg));
            }
        }
        let n = buf.len().min(self.page.len() - self.pos);
        buf[..n].copy_from_slice(&self.page[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

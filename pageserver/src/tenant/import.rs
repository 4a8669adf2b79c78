//! Import of an existing PostgreSQL cluster into a new timeline (neon-internals §7.1
//! `timeline import`), in one or two steps:
//!
//! 1. [`Tenant::import_basebackup`]: a base backup tar (`pg_basebackup -Ft` base.tar) imported
//!    at `base_lsn` into `timelines/<id>___temp`. When `end_lsn == base_lsn` the timeline is
//!    finished at once; otherwise it stays *pending* (in memory and in the temporary
//!    directory, invisible to every reader) until
//! 2. [`Tenant::import_wal`]: a tar of WAL segments ingested from `base_lsn` to exactly
//!    `end_lsn`, which finishes it.
//!
//! Finishing flushes every layer, checks that the metadata's `disk_consistent_lsn` is the end
//! LSN, renames the directory to `timelines/<id>` (fsync of the parent) and loads it. Any
//! failure removes the temporary directory durably, so no half-made timeline remains; a
//! crash leaves only the temporary directory, which tenant loading removes.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use postgres_ffi::controlfile::ControlFileData;
use utils::id::TimelineId;
use utils::lsn::Lsn;

use super::tar_stream::TarTap;
use super::timeline::Timeline;
use super::{io_err, remove_dir_durable, Tenant, TenantError};
use crate::import_wal::WalEnd;
use crate::metadata::TimelineMetadata;

/// The label line of `backup_label` naming the backup's start LSN.
const START_WAL_LOCATION_PREFIX: &str = "START WAL LOCATION: ";

/// A base backup imported, waiting for its WAL.
pub struct PendingImport {
    timeline: Arc<Timeline>,
    base_lsn: Lsn,
    end_lsn: Lsn,
}

/// What an import step achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The timeline is complete, durable and served, ending at this LSN.
    Done { last_record_lsn: Lsn },
    /// The base backup is stored; WAL from `base_lsn` to `end_lsn` must follow.
    AwaitingWal { base_lsn: Lsn, end_lsn: Lsn },
}

fn import_failed(msg: impl std::fmt::Display) -> TenantError {
    TenantError::BadRequest(format!("import failed: {msg}"))
}

/// The start LSN a `backup_label` names.
fn backup_label_start(label: &[u8]) -> Result<Lsn, TenantError> {
    let text = String::from_utf8_lossy(label);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(START_WAL_LOCATION_PREFIX))
        .ok_or_else(|| import_failed("backup_label has no START WAL LOCATION line"))?;
    let lsn = line.split_whitespace().next().unwrap_or_default();
    lsn.parse().map_err(|e| {
        import_failed(format!(
            "bad START WAL LOCATION {lsn:?} in backup_label: {e}"
        ))
    })
}

/// Checks that `base_lsn` is where the backup starts: its backup_label's START WAL LOCATION,
/// or (without a label, e.g. a shut-down data directory) its pg_control checkpoint.
pub fn check_base_lsn(
    base_lsn: Lsn,
    backup_label: Option<&[u8]>,
    control: &ControlFileData,
) -> Result<(), TenantError> {
    match backup_label {
        Some(label) => {
            let start = backup_label_start(label)?;
            if start != base_lsn {
                return Err(import_failed(format!(
                    "base LSN {base_lsn} does not match the backup's start WAL location {start} (backup_label)"
                )));
            }
        }
        None => {
            let redo = control.checkpoint_copy.redo;
            if base_lsn != redo && base_lsn != control.checkpoint {
                return Err(import_failed(format!(
                    "base LSN {base_lsn} does not match the backup's checkpoint {} (redo {redo}) in pg_control",
                    control.checkpoint
                )));
            }
        }
    }
    Ok(())
}

impl Tenant {
    fn import_tmp_dir(&self, id: TimelineId) -> PathBuf {
        self.timelines_dir()
            .join(format!("{id}{}", utils::crashsafe::TEMP_FILE_SUFFIX))
    }

    fn discard_pending(&self, id: TimelineId) {
        let old = self
            .pending_imports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        drop(old);
        let tmp = self.import_tmp_dir(id);
        if tmp.exists() {
            if let Err(e) = remove_dir_durable(&tmp) {
                tracing::warn!("cannot remove {}: {e}", tmp.display());
            }
        }
    }

    /// Step 1: imports a base backup tar into the new timeline `id` (blocking; see the module
    /// docs). `end_lsn == base_lsn` finishes the timeline; otherwise WAL must follow.
    pub fn import_basebackup<R: Read>(
        &self,
        id: TimelineId,
        base_lsn: Lsn,
        end_lsn: Lsn,
        pg_version: u32,
        reader: R,
    ) -> Result<ImportOutcome, TenantError> {
        let _guard = self.create_lock.blocking_lock();
        self.check_creatable(id)?;
        if end_lsn < base_lsn {
            return Err(import_failed(format!(
                "end LSN {end_lsn} is before the base LSN {base_lsn}"
            )));
        }
        self.discard_pending(id);
        let result = self.import_base_into_tmp(id, base_lsn, pg_version, reader);
        let tl = match result {
            Ok(tl) => tl,
            Err(e) => {
                self.discard_pending(id);
                return Err(e);
            }
        };
        if end_lsn == base_lsn {
            return self.finish_import(id, tl, end_lsn);
        }
        self.pending_imports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                PendingImport {
                    timeline: tl,
                    base_lsn,
                    end_lsn,
                },
            );
        Ok(ImportOutcome::AwaitingWal { base_lsn, end_lsn })
    }

    /// Step 2: ingests a tar of WAL segments from `start_lsn` (the pending import's base LSN)
    /// to exactly `end_lsn` and finishes the timeline (blocking). Any failure discards the
    /// pending import.
    pub fn import_wal<R: Read>(
        &self,
        id: TimelineId,
        start_lsn: Lsn,
        end_lsn: Lsn,
        reader: R,
    ) -> Result<ImportOutcome, TenantError> {
        let _guard = self.create_lock.blocking_lock();
        self.check_broken()?;
        let pending = self
            .pending_imports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let Some(pending) = pending else {
            return Err(match self.get_timeline(id) {
                Ok(_) => TenantError::TimelineExists(id),
                Err(_) => import_failed(format!(
                    "timeline {id} has no pending import: send `import basebackup` first"
                )),
            });
        };
        let result = self.import_wal_pending(&pending, start_lsn, end_lsn, reader);
        match result {
            Ok(()) => self.finish_import(id, pending.timeline, end_lsn),
            Err(e) => {
                drop(pending);
                self.discard_pending(id);
                Err(e)
            }
        }
    }

    /// `Err` if `id` is taken (or the tenant cannot create timelines).
    fn check_creatable(&self, id: TimelineId) -> Result<(), TenantError> {
        self.check_broken()?;
        if self.cancel.is_cancelled() {
            return Err(TenantError::ShuttingDown);
        }
        if self.get_timeline(id).is_ok() || self.timelines_dir().join(id.to_string()).exists() {
            return Err(TenantError::TimelineExists(id));
        }
        Ok(())
    }

    fn import_base_into_tmp<R: Read>(
        &self,
        id: TimelineId,
        base_lsn: Lsn,
        pg_version: u32,
        reader: R,
    ) -> Result<Arc<Timeline>, TenantError> {
        let meta = TimelineMetadata {
            disk_consistent_lsn: Lsn(0),
            prev_record_lsn: None,
            ancestor_timeline: None,
            ancestor_lsn: Lsn(0),
            latest_gc_cutoff_lsn: base_lsn,
            initdb_lsn: base_lsn,
            pg_version,
        };
        let tl = Timeline::create_empty(
            self.id,
            id,
            &self.import_tmp_dir(id),
            &meta,
            None,
            self.conf.clone(),
            self.redo.clone(),
        )?;
        let mut tap = TarTap::new(reader);
        let control = {
            let mut w = tl.writer();
            crate::import_datadir::import_basebackup_tar(&mut w, &mut tap, base_lsn)
                .map_err(import_failed)?
        };
        tap.drain().map_err(import_failed)?;
        check_base_lsn(base_lsn, tap.backup_label.as_deref(), &control)?;
        // Bounds memory while the WAL is awaited; the metadata says base_lsn.
        tl.freeze_and_flush()?;
        Ok(tl)
    }

    fn import_wal_pending<R: Read>(
        &self,
        pending: &PendingImport,
        start_lsn: Lsn,
        end_lsn: Lsn,
        reader: R,
    ) -> Result<(), TenantError> {
        if start_lsn != pending.base_lsn || end_lsn != pending.end_lsn {
            return Err(import_failed(format!(
                "WAL range {start_lsn}..{end_lsn} does not match the base backup import's {}..{}",
                pending.base_lsn, pending.end_lsn
            )));
        }
        let mut tap = TarTap::new(reader);
        let done = {
            let mut w = pending.timeline.writer();
            crate::import_wal::import_wal_tar(&mut w, &mut tap, start_lsn, WalEnd::Lsn(end_lsn))
                .map_err(import_failed)?
        };
        tap.drain().map_err(import_failed)?;
        tracing::info!(
            timeline = %pending.timeline.timeline_id,
            "imported {} WAL records up to {} (prev {})",
            done.records,
            done.last_record_lsn,
            done.prev_record_lsn
        );
        Ok(())
    }

    /// Flushes the imported timeline, checks it is durable at `end_lsn`, moves it into place
    /// and serves it.
    fn finish_import(
        &self,
        id: TimelineId,
        tl: Arc<Timeline>,
        end_lsn: Lsn,
    ) -> Result<ImportOutcome, TenantError> {
        let finished = (|| {
            tl.freeze_and_flush()?;
            let dcl = tl.disk_consistent_lsn();
            if dcl != end_lsn || tl.last_record_lsn() != end_lsn {
                return Err(import_failed(format!(
                    "imported timeline is durable up to {dcl}, not the end LSN {end_lsn}"
                )));
            }
            Ok(())
        })();
        drop(tl);
        if let Err(e) = finished {
            self.discard_pending(id);
            return Err(e);
        }
        let tmp = self.import_tmp_dir(id);
        let final_dir = self.timelines_dir().join(id.to_string());
        std::fs::rename(&tmp, &final_dir).map_err(|e| io_err(&final_dir, e))?;
        let parent = self.timelines_dir();
        utils::crashsafe::fsync_dir(&parent).map_err(|e| io_err(&parent, e))?;
        let tl = Timeline::load(
            self.id,
            id,
            &final_dir,
            None,
            self.conf.clone(),
            self.redo.clone(),
        )?;
        let last = tl.last_record_lsn();
        self.timelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tl);
        Ok(ImportOutcome::Done {
            last_record_lsn: last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backup_label() {
        let label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n";
        assert_eq!(backup_label_start(label).unwrap(), Lsn(0x2000028));
        assert!(backup_label_start(b"nothing here\n").is_err());
        assert!(backup_label_start(b"START WAL LOCATION: zz\n").is_err());
    }
}

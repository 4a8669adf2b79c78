//! `pagebench ingest`: WAL decode + ingest + flush into a real layered [`Timeline`] in a
//! temporary work directory (layer files written and fsynced as the daemon does), in-process.
//!
//! The base is a cleanly shut down data directory (`--base DIR`, or a fresh initdb with
//! `--generate-mb`), imported untimed as at bootstrap. The timed part ingests WAL segments
//! from the end of the base's checkpoint record to the end of valid WAL (`--wal-dir DIR`, or
//! the WAL that `--generate-mb N` produces by running pgbench on a stock PostgreSQL started
//! on that data directory), then flushes the open layer.
//!
//! WAL redo is not needed for ingest: the timeline gets [`NeonOnlyRedo`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pageserver::import_wal::{bootstrap_from_datadir, import_wal_dir, WalEnd};
use pageserver::metadata::TimelineMetadata;
use pageserver::tenant::bootstrap::run_initdb;
use pageserver::tenant::timeline::{NeonOnlyRedo, Timeline};
use pageserver_api::models::EffectiveTenantConfig;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::pgrun::Postgres;

/// PostgreSQL major version of the imported data.
const PG_VERSION: u32 = 15;

/// Options of `pagebench ingest`.
#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// A cleanly shut down data directory to import as the base (with `--wal-dir`).
    #[arg(long, requires = "wal_dir", conflicts_with = "generate_mb")]
    pub base: Option<PathBuf>,
    /// WAL segments continuing from the base's checkpoint.
    #[arg(long, requires = "base")]
    pub wal_dir: Option<PathBuf>,
    /// Start LSN (`X/Y`, a record start); default: the end of the base's checkpoint record.
    #[arg(long)]
    pub start_lsn: Option<Lsn>,
    /// Generate about this many MB (10^6 bytes) of WAL with pgbench on a fresh initdb.
    #[arg(long)]
    pub generate_mb: Option<u64>,
    /// Stock PostgreSQL binaries used to generate WAL.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bin_dir: PathBuf,
    /// Where the temporary timeline (and generated data) live; default: the system temp dir.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Override the tenant's checkpoint_distance (bytes of WAL per L0 layer).
    #[arg(long)]
    pub checkpoint_distance: Option<u64>,
}

/// Imports the base untimed, then times WAL ingest + final flush.
pub fn run(args: IngestArgs) -> Result<()> {
    let tmp = match &args.workdir {
        Some(d) => tempfile::Builder::new()
            .prefix("pagebench-")
            .tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("pagebench-").tempdir()?,
    };
    let (base, wal_dir, generated) = match (&args.base, &args.wal_dir, args.generate_mb) {
        (Some(b), Some(w), None) => (b.clone(), w.clone(), None),
        (None, None, Some(mb)) => {
            let gen = crate::pgrun::PgDir::new(tmp.path())?;
            let pgdata = gen.path().join("pgdata");
            let lib_dir = args.pg_bin_dir.join("../lib");
            run_initdb(&args.pg_bin_dir, &lib_dir, &pgdata).context("initdb")?;
            // The base is imported before PostgreSQL runs on the same directory.
            (pgdata.clone(), pgdata.join("pg_wal"), Some((gen, mb)))
        }
        _ => bail!("give either --base and --wal-dir, or --generate-mb"),
    };
    let tl = create_timeline(tmp.path(), &args)?;
    let t0 = Instant::now();
    let (_, boot) = bootstrap_from_datadir(&mut tl.writer(), &base).context("base import")?;
    tl.freeze_and_flush()?;
    let (base_layers, base_bytes) = tl.layer_stats();
    println!(
        "ingest: base imported at {} in {:.2} s ({base_layers} layers, {base_bytes} bytes)",
        boot.last_record_lsn,
        t0.elapsed().as_secs_f64()
    );
    if let Some((gen, mb)) = &generated {
        let pg = Postgres::start(&args.pg_bin_dir, &base, gen.path())?;
        let produced = pg.generate_wal(mb * 1_000_000)?;
        pg.stop()?;
        println!(
            "ingest: generated {:.1} MB of WAL with pgbench",
            produced as f64 / 1e6
        );
    }
    let start = args.start_lsn.unwrap_or(boot.last_record_lsn);
    let t1 = Instant::now();
    let res = import_wal_dir(&mut tl.writer(), &wal_dir, start, WalEnd::EndOfWal)
        .context("WAL import")?;
    let decoded = t1.elapsed();
    tl.freeze_and_flush()?;
    let total = t1.elapsed();
    let (layers, bytes) = tl.layer_stats();
    let wal_bytes = res.last_record_lsn.0.saturating_sub(start.0);
    let secs = total.as_secs_f64().max(1e-9);
    println!(
        "ingest: WAL {start}..{} = {:.1} MB, {} records",
        res.last_record_lsn,
        wal_bytes as f64 / 1e6,
        res.records
    );
    println!(
        "ingest: {:.3} s (decode+ingest {:.3} s, final flush {:.3} s) = {:.1} MB/s of WAL, {:.0} records/s",
        secs,
        decoded.as_secs_f64(),
        (total - decoded).as_secs_f64(),
        wal_bytes as f64 / 1e6 / secs,
        res.records as f64 / secs
    );
    println!(
        "ingest: {} layers, {} bytes written by WAL ingest ({layers} layers, {bytes} bytes in total)",
        layers.saturating_sub(base_layers),
        bytes.saturating_sub(base_bytes)
    );
    Ok(())
}

/// An empty timeline in `dir/timeline` with the default tenant configuration.
fn create_timeline(dir: &Path, args: &IngestArgs) -> Result<Arc<Timeline>> {
    let meta = TimelineMetadata {
        disk_consistent_lsn: Lsn(0),
        prev_record_lsn: None,
        ancestor_timeline: None,
        ancestor_lsn: Lsn(0),
        latest_gc_cutoff_lsn: Lsn(0),
        initdb_lsn: Lsn(0),
        pg_version: PG_VERSION,
    };
    let mut conf = EffectiveTenantConfig::default();
    if let Some(d) = args.checkpoint_distance {
        conf.checkpoint_distance = d;
    }
    Ok(Timeline::create_empty(
        TenantId::generate(),
        TimelineId::generate(),
        &dir.join("timeline"),
        &meta,
        None,
        Arc::new(RwLock::new(conf)),
        Arc::new(NeonOnlyRedo),
    )?)
}

//! `compute_ctl`: prepares and supervises one compute (a PostgreSQL 15 server whose data
//! lives in the pageserver).
//!
//! ```text
//! compute_ctl --pgdata <dir> --pg-install <pg_install/v15> --spec <spec.json> \
//!             --http-port <n> [--os-user postgres]
//! ```
//!
//! It serves its HTTP API first (status `init`), then wipes `--pgdata`, fetches the
//! basebackup from the pageserver named in the spec, writes postgresql.conf and
//! pg_hba.conf, starts PostgreSQL as the OS user, waits until it accepts connections,
//! applies the spec's roles and databases and creates the pageserver's replication slot
//! (primary), and reports `running`. SIGTERM/SIGINT or `POST /terminate` stop PostgreSQL
//! and end compute_ctl. See docs/compute_ctl.md.

mod apply;
mod basebackup;
mod compute;
mod config;
mod http;
mod pgdata;
mod postgres;
mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use compute_api::responses::TerminateMode;
use compute_api::spec::{ComputeSpec, MAX_SPEC_BYTES};
use utils::signals::{ShutdownSignal, ShutdownSignals};

use crate::compute::{Compute, Params};
use crate::pgdata::OsUser;

/// How long the HTTP server may take to finish its last requests at exit.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "compute_ctl",
    version,
    about = "Prepares, starts and supervises a compute (PostgreSQL reading its pages from the pageserver)"
)]
struct Args {
    /// Data directory; wiped and recreated from the basebackup at every start.
    #[arg(long)]
    pgdata: PathBuf,
    /// PostgreSQL installation (with bin/postgres), e.g. pg_install/v15.
    #[arg(long)]
    pg_install: PathBuf,
    /// The compute spec (JSON).
    #[arg(long)]
    spec: PathBuf,
    /// Port of the HTTP API on 127.0.0.1.
    #[arg(long)]
    http_port: u16,
    /// OS user PostgreSQL runs as (when we are root).
    #[arg(long, default_value = "postgres")]
    os_user: String,
    /// Seconds PostgreSQL may take to accept connections once started.
    #[arg(long, default_value_t = 120)]
    start_timeout_secs: u64,
    /// Seconds PostgreSQL may take to exit after a shutdown signal before escalating.
    #[arg(long, default_value_t = 60)]
    stop_timeout_secs: u64,
    /// Testing: fetch a `fullbackup` (all relation data) instead of `basebackup --gzip`,
    /// so that PostgreSQL can run without the `neon` extension.
    #[arg(long, hide = true)]
    fullbackup: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(e) = utils::logging::init(
        utils::logging::LogFormat::Plain,
        utils::logging::Output::Stderr,
    ) {
        eprintln!("compute_ctl: cannot set up logging: {e}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("compute_ctl: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("compute_ctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Reads and validates the spec file.
fn read_spec(path: &std::path::Path) -> anyhow::Result<ComputeSpec> {
    let meta = std::fs::metadata(path).with_context(|| format!("spec {}", path.display()))?;
    if meta.len() > MAX_SPEC_BYTES as u64 {
        bail!(
            "spec {} is larger than {MAX_SPEC_BYTES} bytes",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read spec {}", path.display()))?;
    ComputeSpec::parse(&text).with_context(|| format!("spec {}", path.display()))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started_at = Instant::now();
    let spec = read_spec(&args.spec)?;
    let os_user = OsUser::lookup(&args.os_user)?;
    let postgres_bin = args.pg_install.join("bin/postgres");
    if !postgres_bin.is_file() {
        bail!(
            "{} does not exist (check --pg-install)",
            postgres_bin.display()
        );
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.http_port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind the HTTP API to {addr}"))?;
    let mut signals = ShutdownSignals::install()?;
    tracing::info!(
        "compute_ctl: tenant {} timeline {} mode {:?}, postgres port {}, HTTP {addr}",
        spec.tenant_id,
        spec.timeline_id,
        spec.mode,
        spec.pg_port
    );
    let params = Params {
        pgdata: args.pgdata,
        pg_install: args.pg_install,
        os_user,
        full_backup: args.fullbackup,
        start_timeout: Duration::from_secs(args.start_timeout_secs),
        stop_timeout: Duration::from_secs(args.stop_timeout_secs),
    };
    let compute = Arc::new(Compute::new(params, spec, started_at));
    let exit = compute.exit.clone();
    let app = http::router(compute.clone());
    let drain = exit.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(drain.cancelled_owned())
            .await
    });
    tokio::spawn(compute.clone().startup());
    tokio::select! {
        sig = signals.recv() => {
            let mode = match sig {
                ShutdownSignal::Quit => TerminateMode::Immediate,
                ShutdownSignal::Interrupt | ShutdownSignal::Terminate => TerminateMode::Fast,
            };
            tracing::info!("received {sig}: stopping postgres ({mode:?})");
            compute.terminate(mode).await;
            exit.cancel();
        }
        _ = exit.cancelled() => {}
    }
    match tokio::time::timeout(HTTP_DRAIN_TIMEOUT, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!("HTTP server: {e}"),
        Ok(Err(e)) => tracing::warn!("HTTP server task: {e}"),
        Err(_) => tracing::warn!("HTTP requests still running after {HTTP_DRAIN_TIMEOUT:?}"),
    }
    let r = compute.state.response();
    tracing::info!("compute_ctl exits, compute {}", r.status);
    Ok(())
}

//! The `pageserver` daemon.
//!
//! `pageserver --workdir DIR [--init] [-c key=value]...`: with `--init`, writes
//! `DIR/pageserver.toml` from the overrides and exits; otherwise loads it, logs to
//! `DIR/pageserver.log`, claims `DIR/pageserver.pid`, loads the tenants, serves the page
//! service and the HTTP API, resumes the walreceivers of timelines with a WAL source, and
//! shuts down gracefully on SIGINT/SIGTERM/SIGQUIT.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use pageserver::config::{self, ResolvedConf};
use pageserver::http::{self, ApiState};
use pageserver::page_service::{self, PageServiceState};
use pageserver::tenant::mgr::TenantManager;
use pageserver::tenant::redo::PostgresRedo;
use pageserver::tenant::timeline::Redo;
use pageserver::tenant::TenantEnv;
use pageserver::walreceiver::WalReceivers;
use tokio_util::sync::CancellationToken;
use utils::logging::{self, Output};

#[derive(Parser)]
#[command(name = "pageserver", version, about = "The neon-rs pageserver")]
struct Args {
    /// Working directory with pageserver.toml, tenants/, the log and the pid file.
    #[arg(short = 'D', long)]
    workdir: PathBuf,
    /// Create pageserver.toml from the -c overrides and exit.
    #[arg(long)]
    init: bool,
    /// Configuration override `key=value` (TOML value or bare string); repeatable.
    #[arg(short = 'c', long = "config-override")]
    config_override: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workdir = std::path::absolute(&args.workdir)
        .with_context(|| format!("bad workdir {}", args.workdir.display()))?;
    let conf = config::load_or_init(&workdir, args.init, &args.config_override)?;
    if args.init {
        println!(
            "initialized pageserver in {} (id {})",
            workdir.display(),
            conf.id
        );
        return Ok(());
    }
    logging::init(
        conf.log_format,
        Output::File(workdir.join("pageserver.log")),
    )?;
    let _pid = utils::pidfile::PidFileGuard::claim_in(&workdir, "pageserver")
        .context("another pageserver seems to run in this workdir")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pageserver")
        .build()?;
    let result = rt.block_on(run(conf));
    if let Err(e) = &result {
        tracing::error!("pageserver failed: {e:#}");
    }
    result
}

async fn run(conf: ResolvedConf) -> anyhow::Result<()> {
    tracing::info!(id = conf.id, workdir = %conf.workdir.display(), "starting pageserver");
    let shutdown = CancellationToken::new();
    let signals = utils::signals::cancel_on_shutdown_signal(shutdown.clone())?;
    let pg_listener = tokio::net::TcpListener::bind(conf.listen_pg_addr)
        .await
        .with_context(|| format!("cannot listen on {}", conf.listen_pg_addr))?;
    let http_listener = tokio::net::TcpListener::bind(conf.listen_http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", conf.listen_http_addr))?;
    let env = TenantEnv {
        pg_bin_dir: conf.pg_bin_dir(),
        pg_lib_dir: conf.pg_lib_dir(),
        defaults: conf.default_tenant_conf,
        redo_factory: {
            let dir = conf.pg_distrib_dir.clone();
            Arc::new(move |tenant| {
                Arc::new(PostgresRedo::new(dir.clone(), tenant)) as Arc<dyn Redo>
            })
        },
    };
    // Before any timeline exists, so every timeline uses the configured budget.
    pageserver::tenant::page_cache::configure_global(conf.page_cache_size_bytes);
    let tenants_dir = conf.tenants_path();
    let mgr = tokio::task::spawn_blocking(move || TenantManager::load(tenants_dir, env)).await??;
    let walreceivers = WalReceivers::new();
    walreceivers.start_all(&mgr);
    let listeners_cancel = shutdown.child_token();
    let http_task = tokio::spawn(http::serve(
        http_listener,
        ApiState {
            mgr: mgr.clone(),
            node_id: conf.id,
            walreceivers: walreceivers.clone(),
        },
        listeners_cancel.clone(),
    ));
    let page_task = tokio::spawn(page_service::serve(
        pg_listener,
        PageServiceState {
            mgr: mgr.clone(),
            wait_lsn_timeout: conf.wait_lsn_timeout,
        },
        listeners_cancel.clone(),
    ));
    tracing::info!("pageserver started");
    shutdown.cancelled().await;
    tracing::info!("shutting down: stopping listeners");
    listeners_cancel.cancel();
    if let Ok(Err(e)) = http_task.await {
        tracing::warn!("HTTP server ended with {e}");
    }
    let _ = page_task.await;
    tracing::info!("shutting down: stopping walreceivers");
    walreceivers.shutdown().await;
    tracing::info!("shutting down: stopping tenants");
    mgr.shutdown().await;
    signals.abort();
    tracing::info!("shut down");
    Ok(())
}

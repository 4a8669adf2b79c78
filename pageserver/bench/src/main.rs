//! `pagebench`: benchmark programs for the pageserver; they print figures.
//!
//! - `pagebench getpage`: GetPage latency and throughput against a running page service;
//! - `pagebench ingest`: in-process WAL decode + ingest + flush into a layered timeline.

mod getpage;
mod ingest;
mod pgrun;
mod stats;
mod wire;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Pageserver benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// GetPage requests against a running pageserver.
    Getpage(getpage::GetPageArgs),
    /// WAL ingest into a temporary timeline.
    Ingest(ingest::IngestArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Getpage(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(getpage::run(args))
        }
        Cmd::Ingest(args) => ingest::run(args),
    }
}

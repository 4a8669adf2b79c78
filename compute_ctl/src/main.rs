//! The `compute_ctl` daemon. Filled in by a later issue; for now it only parses its command line.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "compute_ctl",
    version,
    about = "compute_ctl (not implemented yet)"
)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("compute_ctl is not implemented yet")
}

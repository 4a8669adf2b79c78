//! The `storage_broker` daemon. Filled in by a later issue; for now it only parses its command line.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "storage_broker",
    version,
    about = "storage_broker (not implemented yet)"
)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("storage_broker is not implemented yet")
}

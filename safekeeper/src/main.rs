//! The `safekeeper` daemon. Filled in by a later issue; for now it only parses its command line.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "safekeeper",
    version,
    about = "safekeeper (not implemented yet)"
)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("safekeeper is not implemented yet")
}

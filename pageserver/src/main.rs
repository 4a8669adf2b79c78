//! The `pageserver` daemon. Filled in by a later issue; for now it only parses its command line.

use clap::Parser;

#[derive(Parser)]
#[command(name = "pageserver", version, about = "pageserver (not implemented yet)")]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("pageserver is not implemented yet")
}

//! pagectl: developer tools for pageserver data and PostgreSQL WAL.

mod wal_dump;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pagectl",
    about = "Developer tools for pageserver data and PostgreSQL WAL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the records of PostgreSQL 15 WAL segment files as JSON Lines.
    WalDump(wal_dump::WalDumpArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::WalDump(args) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let stderr = std::io::stderr();
            let result = wal_dump::run(&args, &mut out, &mut stderr.lock());
            let flushed = out.flush();
            match result.and_then(|code| flushed.map(|_| code).map_err(Into::into)) {
                Ok(code) => code,
                Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("pagectl: error: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// True if output went to a closed pipe (e.g. `pagectl wal-dump ... | head`).
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

//! `neon_local` (run as `cargo neon ...`): sets up and runs a local cluster.
//!
//! The repository lives in `$NEON_REPO_DIR` (default `.neon` in the current directory).
//! Daemons join the commands as they are built; until then a command says what is missing.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use control_plane::local_env::{self, LocalEnv};

#[derive(Parser)]
#[command(name = "neon_local", version, about = "Run a local Neon cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the repository directory and its config.
    Init,
    /// Start every daemon of the local cluster.
    Start,
    /// Stop every endpoint, then every daemon.
    Stop,
    /// Show the repository's configuration and what is installed.
    Status,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage timelines (branches).
    #[command(subcommand)]
    Timeline(TimelineCmd),
    /// Manage compute endpoints.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Manage the pageserver.
    #[command(subcommand)]
    Pageserver(DaemonCmd),
    /// Manage safekeepers.
    #[command(subcommand)]
    Safekeeper(DaemonCmd),
    /// Manage the storage broker.
    #[command(subcommand)]
    StorageBroker(DaemonCmd),
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Create a tenant.
    Create,
    /// List tenants.
    List,
}

#[derive(Subcommand)]
enum TimelineCmd {
    /// Create a timeline without an ancestor.
    Create,
    /// Branch a timeline from another one.
    Branch,
    /// Draw the branch tree.
    List,
    /// Import an existing PostgreSQL base backup and WAL.
    Import,
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// Create an endpoint.
    Create,
    /// Start an endpoint.
    Start,
    /// Stop an endpoint.
    Stop,
    /// List endpoints.
    List,
}

#[derive(Subcommand)]
enum DaemonCmd {
    Start,
    Stop,
    Status,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("neon_local: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let repo = local_env::repo_dir()?;
    match cli.command {
        Command::Init => {
            let env = LocalEnv::with_defaults()?;
            env.init(&repo)?;
            println!("Initialized neon_local repository in {}", repo.display());
            Ok(())
        }
        Command::Status => status(&repo),
        Command::Start | Command::Stop => {
            let env = LocalEnv::load(&repo)?;
            println!(
                "No daemons to run yet (the pageserver, safekeepers and broker arrive in later \
                 issues). PostgreSQL: {}",
                env.pg_bin_dir().display()
            );
            Ok(())
        }
        Command::Tenant(_)
        | Command::Timeline(_)
        | Command::Endpoint(_)
        | Command::Pageserver(_)
        | Command::Safekeeper(_)
        | Command::StorageBroker(_) => {
            bail!("not implemented yet: this command needs the pageserver")
        }
    }
}

fn status(repo: &std::path::Path) -> anyhow::Result<()> {
    let env = LocalEnv::load(repo)?;
    println!("repository:       {}", repo.display());
    println!("pg_distrib_dir:   {}", env.pg_distrib_dir.display());
    println!("neon_distrib_dir: {}", env.neon_distrib_dir.display());
    let postgres = env.pg_bin_dir().join("postgres");
    let version = std::process::Command::new(&postgres)
        .arg("--version")
        .output()
        .with_context(|| format!("run {} --version", postgres.display()))?;
    print!(
        "postgres:         {}",
        String::from_utf8_lossy(&version.stdout)
    );
    for bin in [
        "pageserver",
        "safekeeper",
        "storage_broker",
        "compute_ctl",
        "pagectl",
    ] {
        let present = env.neon_distrib_dir.join(bin).exists();
        println!("{bin:<17} {}", if present { "built" } else { "not built" });
    }
    Ok(())
}

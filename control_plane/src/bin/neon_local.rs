//! `neon_local` (run as `cargo neon ...`): sets up and runs a local cluster.
//!
//! The repository lives in `$NEON_REPO_DIR` (default `.neon` in the current directory).
//! Daemons join the commands as they are built; until then a command says what is missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use control_plane::local_env::{self, BranchMappings, LocalEnv};
use control_plane::pageserver::{ImportRequest, PageServerNode, DEFAULT_DEADLINE};
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

#[path = "neon_local/endpoint_cmd.rs"]
mod endpoint_cmd;
use endpoint_cmd::EndpointCmd;

#[derive(Parser)]
#[command(name = "neon_local", version, about = "Run a local Neon cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the repository directory and its config.
    Init {
        /// libpq port of the pageserver.
        #[arg(long)]
        pageserver_pg_port: Option<u16>,
        /// HTTP port of the pageserver.
        #[arg(long)]
        pageserver_http_port: Option<u16>,
    },
    /// Start every daemon of the local cluster.
    Start(StartArgs),
    /// Stop every endpoint, then every daemon.
    Stop(StopArgs),
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
    Pageserver(PageserverCmd),
    /// Manage safekeepers.
    #[command(subcommand)]
    Safekeeper(DaemonCmd),
    /// Manage the storage broker.
    #[command(subcommand)]
    StorageBroker(DaemonCmd),
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Create a tenant and its initial timeline `main` (bootstrapped with initdb).
    Create {
        #[arg(long)]
        tenant_id: Option<TenantId>,
        /// Id of the initial timeline.
        #[arg(long)]
        timeline_id: Option<TimelineId>,
        /// Make it the default tenant of later commands.
        #[arg(long)]
        set_default: bool,
    },
    /// List tenants.
    List,
}

#[derive(Subcommand)]
enum TimelineCmd {
    /// Create a timeline without an ancestor.
    Create {
        #[arg(long)]
        tenant_id: Option<TenantId>,
        #[arg(long)]
        timeline_id: Option<TimelineId>,
        #[arg(long)]
        branch_name: String,
    },
    /// Branch a timeline from another one.
    Branch {
        #[arg(long)]
        tenant_id: Option<TenantId>,
        #[arg(long)]
        timeline_id: Option<TimelineId>,
        #[arg(long)]
        branch_name: String,
        #[arg(long, default_value = "main")]
        ancestor_branch_name: String,
        #[arg(long)]
        ancestor_start_lsn: Option<Lsn>,
    },
    /// Draw the branch tree.
    List {
        #[arg(long)]
        tenant_id: Option<TenantId>,
    },
    /// Import an existing PostgreSQL base backup and WAL into a new timeline.
    Import {
        #[arg(long)]
        tenant_id: Option<TenantId>,
        #[arg(long)]
        timeline_id: TimelineId,
        #[arg(long)]
        branch_name: String,
        /// Base backup tar (`pg_basebackup -Ft` base.tar).
        #[arg(long)]
        base_tarfile: PathBuf,
        /// Where the backup starts (backup_label START WAL LOCATION).
        #[arg(long)]
        base_lsn: Lsn,
        /// Tar of WAL segments (pg_wal.tar) from the base LSN's segment on.
        #[arg(long, requires = "end_lsn")]
        wal_tarfile: Option<PathBuf>,
        /// LSN to import the WAL up to (the end of a record).
        #[arg(long, requires = "wal_tarfile")]
        end_lsn: Option<Lsn>,
        #[arg(long, default_value_t = 15)]
        pg_version: u32,
    },
}

#[derive(Subcommand)]
enum PageserverCmd {
    /// Start the pageserver.
    Start(StartArgs),
    /// Stop the pageserver.
    Stop(StopArgs),
    /// Stop (gracefully), then start the pageserver.
    Restart(StartArgs),
    /// Whether the pageserver answers.
    Status,
}

/// Options of every command that starts a daemon.
#[derive(clap::Args)]
struct StartArgs {
    /// How long to wait for each daemon, e.g. `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    start_timeout: Duration,
}

/// Options of every command that stops a daemon.
#[derive(clap::Args)]
struct StopArgs {
    /// `fast` (SIGTERM, graceful) or `immediate` (SIGKILL).
    #[arg(short, long, default_value = "fast")]
    mode: StopMode,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum StopMode {
    Fast,
    Immediate,
}

/// `10s`, `500ms`, `2m` or a number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration {s:?}: use ms, s or m")),
    }
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
        Command::Init {
            pageserver_pg_port,
            pageserver_http_port,
        } => {
            let mut env = LocalEnv::with_defaults()?;
            if let Some(p) = pageserver_pg_port {
                env.pageserver.listen_pg_addr = format!("127.0.0.1:{p}");
            }
            if let Some(p) = pageserver_http_port {
                env.pageserver.listen_http_addr = format!("127.0.0.1:{p}");
            }
            env.init(&repo)?;
            println!("Initialized neon_local repository in {}", repo.display());
            Ok(())
        }
        Command::Status => status(&repo),
        Command::Start(StartArgs { start_timeout }) => {
            let ps = pageserver(&repo)?;
            ps.start(start_timeout)?;
            println!(
                "pageserver started, listening on {} (HTTP {})",
                ps.pg_addr, ps.http_addr
            );
            Ok(())
        }
        Command::Stop(StopArgs { mode }) => {
            endpoint_cmd::stop_all(&repo, matches!(mode, StopMode::Immediate))?;
            stop_pageserver(&repo, mode)
        }
        Command::Pageserver(cmd) => pageserver_cmd(&repo, cmd),
        Command::Tenant(cmd) => tenant_cmd(&repo, cmd),
        Command::Timeline(cmd) => timeline_cmd(&repo, cmd),
        Command::Endpoint(cmd) => endpoint_cmd::endpoint_cmd(&repo, cmd),
        Command::Safekeeper(_) | Command::StorageBroker(_) => {
            bail!("not implemented yet: this command needs the safekeepers and compute")
        }
    }
}

fn pageserver(repo: &Path) -> anyhow::Result<PageServerNode> {
    Ok(PageServerNode::from_env(&LocalEnv::load(repo)?, repo))
}

fn stop_pageserver(repo: &Path, mode: StopMode) -> anyhow::Result<()> {
    let ps = pageserver(repo)?;
    if ps.stop(matches!(mode, StopMode::Immediate), DEFAULT_DEADLINE)? {
        println!("pageserver stopped");
    } else {
        println!("pageserver is not running");
    }
    Ok(())
}

fn pageserver_cmd(repo: &Path, cmd: PageserverCmd) -> anyhow::Result<()> {
    let ps = pageserver(repo)?;
    match cmd {
        PageserverCmd::Start(StartArgs { start_timeout }) => {
            ps.start(start_timeout)?;
            println!(
                "pageserver started, listening on {} (HTTP {})",
                ps.pg_addr, ps.http_addr
            );
        }
        PageserverCmd::Stop(StopArgs { mode }) => stop_pageserver(repo, mode)?,
        PageserverCmd::Restart(StartArgs { start_timeout }) => {
            stop_pageserver(repo, StopMode::Fast)?;
            ps.start(start_timeout)?;
            println!("pageserver restarted");
        }
        PageserverCmd::Status => match ps.status() {
            Ok(s) => println!("pageserver {} is running on {}", s["id"], ps.http_addr),
            Err(e) => bail!("pageserver is not running: {e:#}"),
        },
    }
    Ok(())
}

/// `--tenant-id`, else the default tenant.
pub(crate) fn tenant_or_default(repo: &Path, id: Option<TenantId>) -> anyhow::Result<TenantId> {
    match id {
        Some(id) => Ok(id),
        None => BranchMappings::load(repo)?
            .default_tenant_id
            .context("no --tenant-id given and no default tenant (tenant create --set-default)"),
    }
}

fn tenant_cmd(repo: &Path, cmd: TenantCmd) -> anyhow::Result<()> {
    let ps = pageserver(repo)?;
    match cmd {
        TenantCmd::Create {
            tenant_id,
            timeline_id,
            set_default,
        } => {
            let tenant = tenant_id.unwrap_or_else(TenantId::generate);
            ps.tenant_create(tenant)?;
            println!("tenant {tenant} successfully created on the pageserver");
            let timeline = timeline_id.unwrap_or_else(TimelineId::generate);
            let info = ps.timeline_create(tenant, timeline, None, None)?;
            let mut maps = BranchMappings::load(repo)?;
            maps.insert(tenant, "main", timeline)?;
            if set_default {
                maps.default_tenant_id = Some(tenant);
            }
            maps.save(repo)?;
            println!(
                "Created an initial timeline '{timeline}' at Lsn {} for tenant: {tenant}",
                info.last_record_lsn
            );
            if set_default {
                println!("Setting tenant {tenant} as a default one");
            }
        }
        TenantCmd::List => {
            for t in ps.tenant_list()? {
                println!("{} {:?}", t.id, t.state);
            }
        }
    }
    Ok(())
}

fn timeline_cmd(repo: &Path, cmd: TimelineCmd) -> anyhow::Result<()> {
    let ps = pageserver(repo)?;
    match cmd {
        TimelineCmd::Create {
            tenant_id,
            timeline_id,
            branch_name,
        } => {
            let tenant = tenant_or_default(repo, tenant_id)?;
            let mut maps = BranchMappings::load(repo)?;
            if maps.timeline(tenant, &branch_name).is_some() {
                bail!("branch {branch_name:?} already exists in tenant {tenant}");
            }
            let id = timeline_id.unwrap_or_else(TimelineId::generate);
            let info = ps.timeline_create(tenant, id, None, None)?;
            maps.insert(tenant, &branch_name, id)?;
            maps.save(repo)?;
            println!(
                "Created timeline '{id}' at Lsn {} for tenant: {tenant}",
                info.last_record_lsn
            );
        }
        TimelineCmd::Branch {
            tenant_id,
            timeline_id,
            branch_name,
            ancestor_branch_name,
            ancestor_start_lsn,
        } => {
            let tenant = tenant_or_default(repo, tenant_id)?;
            let mut maps = BranchMappings::load(repo)?;
            if maps.timeline(tenant, &branch_name).is_some() {
                bail!("branch {branch_name:?} already exists in tenant {tenant}");
            }
            let ancestor = maps
                .timeline(tenant, &ancestor_branch_name)
                .with_context(|| {
                    format!("no branch {ancestor_branch_name:?} in tenant {tenant}")
                })?;
            let id = timeline_id.unwrap_or_else(TimelineId::generate);
            let info = ps.timeline_create(tenant, id, Some(ancestor), ancestor_start_lsn)?;
            maps.insert(tenant, &branch_name, id)?;
            maps.save(repo)?;
            println!(
                "Created timeline '{id}' at Lsn {} for tenant: {tenant}. Ancestor timeline: '{ancestor_branch_name}'",
                info.ancestor_lsn.unwrap_or(info.last_record_lsn)
            );
        }
        TimelineCmd::List { tenant_id } => {
            let tenant = tenant_or_default(repo, tenant_id)?;
            let maps = BranchMappings::load(repo)?;
            let timelines = ps.timeline_list(tenant)?;
            print!("{}", draw_tree(&timelines, |id| maps.name_of(tenant, id)));
        }
        TimelineCmd::Import {
            tenant_id,
            timeline_id,
            branch_name,
            base_tarfile,
            base_lsn,
            wal_tarfile,
            end_lsn,
            pg_version,
        } => {
            let tenant = tenant_or_default(repo, tenant_id)?;
            let mut maps = BranchMappings::load(repo)?;
            if maps.timeline(tenant, &branch_name).is_some() {
                bail!("branch {branch_name:?} already exists in tenant {tenant}");
            }
            let req = ImportRequest {
                tenant,
                timeline: timeline_id,
                base_tarfile,
                base_lsn,
                wal: wal_tarfile.zip(end_lsn),
                pg_version,
            };
            ps.timeline_import(&req)?;
            maps.insert(tenant, &branch_name, timeline_id)?;
            maps.save(repo)?;
            println!(
                "Imported timeline '{timeline_id}' as branch {branch_name:?} for tenant: {tenant}"
            );
            println!("Done");
        }
    }
    Ok(())
}

/// The branch tree: roots as `(L) <name> [<id>]`, children as `┗━ @<lsn>: <name> [<id>]`
/// (`┣━` when more siblings follow), indented under their ancestor.
fn draw_tree<'a>(
    timelines: &[pageserver_api::models::TimelineInfo],
    name_of: impl Fn(TimelineId) -> Option<&'a str>,
) -> String {
    let name = |id: TimelineId| name_of(id).unwrap_or("<no name>").to_string();
    let children = |parent: Option<TimelineId>| {
        let mut v: Vec<_> = timelines
            .iter()
            .filter(|t| t.ancestor_timeline_id == parent)
            .collect();
        v.sort_by_key(|t| (t.ancestor_lsn, name(t.timeline_id)));
        v
    };
    fn walk<'b>(
        out: &mut String,
        node: &'b pageserver_api::models::TimelineInfo,
        prefix: &str,
        kids: &dyn Fn(Option<TimelineId>) -> Vec<&'b pageserver_api::models::TimelineInfo>,
        name: &dyn Fn(TimelineId) -> String,
    ) {
        let list = kids(Some(node.timeline_id));
        for (i, child) in list.iter().enumerate() {
            let last = i + 1 == list.len();
            let lsn = child.ancestor_lsn.unwrap_or_default();
            let branch = if last { "┗━" } else { "┣━" };
            out.push_str(&format!(
                "{prefix}{branch} @{lsn}: {} [{}]\n",
                name(child.timeline_id),
                child.timeline_id
            ));
            let next = format!("{prefix}{}", if last { "    " } else { "┃   " });
            walk(out, child, &next, kids, name);
        }
    }
    let mut out = String::new();
    for root in children(None) {
        out.push_str(&format!(
            "(L) {} [{}]\n",
            name(root.timeline_id),
            root.timeline_id
        ));
        walk(&mut out, root, "", &children, &name);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use pageserver_api::models::{TimelineInfo, TimelineState};

    fn info(id: TimelineId, ancestor: Option<(TimelineId, u64)>) -> TimelineInfo {
        TimelineInfo {
            tenant_id: TenantId([1; 16]),
            timeline_id: id,
            ancestor_timeline_id: ancestor.map(|a| a.0),
            ancestor_lsn: ancestor.map(|a| Lsn(a.1)),
            last_record_lsn: Lsn(0x100),
            prev_record_lsn: None,
            disk_consistent_lsn: Lsn(0x100),
            initdb_lsn: Lsn(0x10),
            latest_gc_cutoff_lsn: Lsn(0x10),
            current_logical_size: 0,
            current_physical_size: None,
            pg_version: 15,
            state: TimelineState::Active,
        }
    }

    #[test]
    fn tree_drawing() {
        let ids: Vec<TimelineId> = (1..=4u8).map(|i| TimelineId([i; 16])).collect();
        let tls = vec![
            info(ids[2], Some((ids[0], 0x50))),
            info(ids[0], None),
            info(ids[1], Some((ids[0], 0x40))),
            info(ids[3], Some((ids[1], 0x60))),
        ];
        let names = ["main", "b1", "b2", "b3"];
        let out = draw_tree(&tls, |id| {
            ids.iter().position(|i| *i == id).map(|p| names[p])
        });
        let expected = format!(
            "(L) main [{}]\n┣━ @0/40: b1 [{}]\n┃   ┗━ @0/60: b3 [{}]\n┗━ @0/50: b2 [{}]\n",
            ids[0], ids[1], ids[3], ids[2]
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn branch_mappings_roundtrip() {
        let dir = std::env::temp_dir().join(format!("neon_local_maps_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = TenantId::generate();
        let mut maps = BranchMappings::load(&dir).unwrap();
        assert_eq!(maps, BranchMappings::default());
        let main = TimelineId::generate();
        maps.insert(t, "main", main).unwrap();
        assert!(maps.insert(t, "main", TimelineId::generate()).is_err());
        maps.insert(TenantId::generate(), "main", TimelineId::generate())
            .unwrap();
        maps.default_tenant_id = Some(t);
        maps.save(&dir).unwrap();
        let again = BranchMappings::load(&dir).unwrap();
        assert_eq!(again, maps);
        assert_eq!(again.timeline(t, "main"), Some(main));
        assert_eq!(again.name_of(t, main), Some("main"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn timeline_import_arguments() {
        let tl = TimelineId::generate();
        let base = [
            "neon_local",
            "timeline",
            "import",
            "--timeline-id",
            &tl.to_string(),
            "--branch-name",
            "imported",
            "--base-tarfile",
            "base.tar",
            "--base-lsn",
            "0/2000028",
        ];
        let parsed = Cli::try_parse_from(base).unwrap();
        let Command::Timeline(TimelineCmd::Import {
            timeline_id,
            base_lsn,
            wal_tarfile,
            pg_version,
            ..
        }) = parsed.command
        else {
            panic!("not a timeline import");
        };
        assert_eq!(
            (timeline_id, base_lsn, wal_tarfile, pg_version),
            (tl, Lsn(0x2000028), None, 15)
        );
        let mut with_wal = base.to_vec();
        with_wal.extend(["--wal-tarfile", "pg_wal.tar"]);
        assert!(
            Cli::try_parse_from(&with_wal).is_err(),
            "--wal-tarfile needs --end-lsn"
        );
        with_wal.extend(["--end-lsn", "0/40FB3E0", "--pg-version", "15"]);
        assert!(Cli::try_parse_from(&with_wal).is_ok());
    }
}

//! `neon_local endpoint ...`: create, start, stop and list computes.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use control_plane::endpoint::{CreateRequest, Endpoint, EndpointMode};
use control_plane::local_env::{BranchMappings, LocalEnv};
use control_plane::pageserver::PageServerNode;
use utils::id::TenantId;
use utils::lsn::Lsn;

use crate::{parse_duration, tenant_or_default, StopMode};

/// Default wait for a compute to accept connections (basebackup + start).
const DEFAULT_START_TIMEOUT: &str = "90s";

#[derive(Subcommand)]
pub enum EndpointCmd {
    /// Create an endpoint on a branch: a primary, or with --lsn a read-only static endpoint.
    Create {
        /// Name of the endpoint (default: the branch name).
        name: Option<String>,
        #[arg(long)]
        tenant_id: Option<TenantId>,
        #[arg(long, default_value = "main")]
        branch_name: String,
        /// Read-only at this LSN.
        #[arg(long)]
        lsn: Option<Lsn>,
        /// PostgreSQL port (default: the first free one from 55432).
        #[arg(long)]
        pg_port: Option<u16>,
        /// compute_ctl HTTP port (default: PostgreSQL port + 1000).
        #[arg(long)]
        http_port: Option<u16>,
        /// A PostgreSQL setting for the compute, `name=value` (repeatable).
        #[arg(short = 'c', long = "config", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
    /// Start an endpoint's compute.
    Start {
        name: String,
        #[arg(short = 't', long, default_value = DEFAULT_START_TIMEOUT, value_parser = parse_duration)]
        start_timeout: Duration,
    },
    /// Stop an endpoint's compute.
    Stop {
        name: String,
        /// `fast` (clean shutdown, WAL made durable at the pageserver) or `immediate`.
        #[arg(short, long, default_value = "fast")]
        mode: StopMode,
        /// Also remove the endpoint.
        #[arg(long)]
        destroy: bool,
    },
    /// List endpoints.
    List {
        #[arg(long)]
        tenant_id: Option<TenantId>,
    },
}

pub fn endpoint_cmd(repo: &Path, cmd: EndpointCmd) -> anyhow::Result<()> {
    let env = LocalEnv::load(repo)?;
    let ps = PageServerNode::from_env(&env, repo);
    match cmd {
        EndpointCmd::Create {
            name,
            tenant_id,
            branch_name,
            lsn,
            pg_port,
            http_port,
            settings,
        } => {
            let tenant = tenant_or_default(repo, tenant_id)?;
            let timeline = BranchMappings::load(repo)?
                .timeline(tenant, &branch_name)
                .with_context(|| format!("no branch {branch_name:?} in tenant {tenant}"))?;
            if let Some(lsn) = lsn {
                check_static_lsn(&ps, tenant, timeline, lsn)?;
            }
            let ep = Endpoint::create(
                repo,
                CreateRequest {
                    name: name.unwrap_or_else(|| branch_name.clone()),
                    tenant_id: tenant,
                    timeline_id: timeline,
                    branch_name,
                    lsn,
                    pg_port,
                    http_port,
                    settings,
                },
            )?;
            println!(
                "Created endpoint {:?} on branch {:?} (timeline {}), port {}",
                ep.conf.name, ep.conf.branch_name, ep.conf.timeline_id, ep.conf.pg_port
            );
        }
        EndpointCmd::Start {
            name,
            start_timeout,
        } => {
            let ep = Endpoint::load(repo, &name)?;
            println!("Starting postgres at '{}'", ep.connstr());
            ep.start(repo, &env, &ps, start_timeout)?;
        }
        EndpointCmd::Stop {
            name,
            mode,
            destroy,
        } => {
            let ep = Endpoint::load(repo, &name)?;
            let immediate = matches!(mode, StopMode::Immediate);
            if !ep.stop(&env, &ps, immediate, Duration::from_secs(60))? {
                println!("endpoint {name:?} was not running");
            }
            if destroy {
                ep.destroy()?;
            }
        }
        EndpointCmd::List { tenant_id } => {
            let tenant = tenant_or_default(repo, tenant_id)?;
            list(repo, &ps, tenant)?;
        }
    }
    Ok(())
}

/// `name=value`.
fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("bad setting {s:?}: use name=value"))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(format!("bad setting name {name:?}"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// A static endpoint's LSN must exist on the timeline.
fn check_static_lsn(
    ps: &PageServerNode,
    tenant: TenantId,
    timeline: utils::id::TimelineId,
    lsn: Lsn,
) -> anyhow::Result<()> {
    let info = ps.timeline_info(tenant, timeline)?;
    anyhow::ensure!(
        lsn <= info.last_record_lsn,
        "LSN {lsn} is beyond the end of the branch ({})",
        info.last_record_lsn
    );
    Ok(())
}

fn list(repo: &Path, ps: &PageServerNode, tenant: TenantId) -> anyhow::Result<()> {
    let mut rows = vec![[
        "ENDPOINT".to_string(),
        "ADDRESS".into(),
        "TIMELINE".into(),
        "BRANCH NAME".into(),
        "LSN".into(),
        "STATUS".into(),
    ]];
    for ep in Endpoint::list(repo)? {
        if ep.conf.tenant_id != tenant {
            continue;
        }
        let lsn = match ep.conf.mode {
            EndpointMode::Static(lsn) => lsn.to_string(),
            EndpointMode::Primary => ps
                .timeline_info(ep.conf.tenant_id, ep.conf.timeline_id)
                .map(|i| i.last_record_lsn.to_string())
                .unwrap_or_else(|_| "?".into()),
        };
        rows.push([
            ep.conf.name.clone(),
            format!("127.0.0.1:{}", ep.conf.pg_port),
            ep.conf.timeline_id.to_string(),
            ep.conf.branch_name.clone(),
            lsn,
            ep.status().to_string(),
        ]);
    }
    print!("{}", format_table(&rows));
    Ok(())
}

/// Left-aligned columns, two spaces apart.
fn format_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Stops every running endpoint (before the daemons stop).
pub fn stop_all(repo: &Path, immediate: bool) -> anyhow::Result<()> {
    let env = LocalEnv::load(repo)?;
    let ps = PageServerNode::from_env(&env, repo);
    for ep in Endpoint::list(repo)? {
        if ep.running_pid().is_some() {
            ep.stop(&env, &ps, immediate, Duration::from_secs(60))
                .with_context(|| format!("stop endpoint {:?}", ep.conf.name))?;
            println!("endpoint {:?} stopped", ep.conf.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_align() {
        let rows = [
            ["ENDPOINT".to_string(), "STATUS".into()],
            ["migration_check".into(), "running".into()],
        ];
        let t = format_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0].find("STATUS"), lines[1].find("running"));
    }
}

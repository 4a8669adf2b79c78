//! `$NEON_REPO_DIR` (default `.neon` in the current directory): where neon_local keeps the
//! configuration and the data of every daemon it runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Default ports of the local cluster (as in Neon's neon_local).
pub const DEFAULT_PAGESERVER_PG_PORT: u16 = 64000;
pub const DEFAULT_PAGESERVER_HTTP_PORT: u16 = 9898;
pub const DEFAULT_SAFEKEEPER_PG_PORT: u16 = 5454;
pub const DEFAULT_SAFEKEEPER_HTTP_PORT: u16 = 7676;
pub const DEFAULT_BROKER_PORT: u16 = 50051;
pub const DEFAULT_ENDPOINT_PG_PORT_FIRST: u16 = 55432;

/// The repository directory: `$NEON_REPO_DIR`, or `.neon` in the current directory.
pub fn repo_dir() -> anyhow::Result<PathBuf> {
    match std::env::var_os("NEON_REPO_DIR") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => Ok(std::env::current_dir()
            .context("get the current directory")?
            .join(".neon")),
    }
}

/// `$NEON_REPO_DIR/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalEnv {
    /// Where PostgreSQL is installed (`<dir>/v15/bin/postgres`).
    pub pg_distrib_dir: PathBuf,
    /// Where our binaries are (pageserver, safekeeper, ...).
    pub neon_distrib_dir: PathBuf,
    pub pageserver: PageserverConf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageserverConf {
    pub listen_pg_addr: String,
    pub listen_http_addr: String,
}

impl Default for PageserverConf {
    fn default() -> Self {
        PageserverConf {
            listen_pg_addr: format!("127.0.0.1:{DEFAULT_PAGESERVER_PG_PORT}"),
            listen_http_addr: format!("127.0.0.1:{DEFAULT_PAGESERVER_HTTP_PORT}"),
        }
    }
}

impl LocalEnv {
    /// The defaults for a checkout: PostgreSQL in `<repo root>/pg_install`, binaries next to
    /// the running neon_local.
    pub fn with_defaults() -> anyhow::Result<LocalEnv> {
        let exe = std::env::current_exe().context("find the neon_local executable")?;
        let neon_distrib_dir = exe
            .parent()
            .context("find the directory of neon_local")?
            .to_path_buf();
        let pg_distrib_dir = default_pg_distrib_dir(&neon_distrib_dir)?;
        Ok(LocalEnv {
            pg_distrib_dir,
            neon_distrib_dir,
            pageserver: PageserverConf::default(),
        })
    }

    pub fn config_path(repo: &Path) -> PathBuf {
        repo.join("config")
    }

    /// Creates the repository with this configuration; fails if it already holds one.
    pub fn init(&self, repo: &Path) -> anyhow::Result<()> {
        let path = Self::config_path(repo);
        if path.exists() {
            bail!(
                "{} already exists: remove the repository directory {} to start afresh",
                path.display(),
                repo.display()
            );
        }
        utils::crashsafe::create_dir_all_durable(repo)
            .with_context(|| format!("create {}", repo.display()))?;
        let text = toml::to_string_pretty(self).context("serialize the config")?;
        utils::crashsafe::durable_write(&path, text.as_bytes())
            .with_context(|| format!("write {}", path.display()))?;
        Ok(())
    }

    pub fn load(repo: &Path) -> anyhow::Result<LocalEnv> {
        let path = Self::config_path(repo);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("read {} (run `neon_local init` first)", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// The directory with PostgreSQL 15's binaries.
    pub fn pg_bin_dir(&self) -> PathBuf {
        self.pg_distrib_dir.join("v15").join("bin")
    }
}

/// `$POSTGRES_DISTRIB_DIR`; else the checkout's `pg_install` when neon_local runs from the
/// checkout's `target/<profile>/`; else `pg_install` in the current directory.
fn default_pg_distrib_dir(neon_distrib_dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("POSTGRES_DISTRIB_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(checkout) = neon_distrib_dir.parent().and_then(Path::parent) {
        let candidate = checkout.join("pg_install");
        if candidate.join("v15").is_dir() {
            return Ok(candidate);
        }
    }
    Ok(std::env::current_dir()
        .context("get the current directory")?
        .join("pg_install"))
}

/// `$NEON_REPO_DIR/branches.toml`: the default tenant and which timeline each branch name
/// means in each tenant. Written durably (temp file, fsync, rename) after every change.
///
/// ```toml
/// default_tenant_id = "<32 hex>"
/// [branches]
/// main = [["<tenant id>", "<timeline id>"]]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchMappings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_tenant_id: Option<utils::id::TenantId>,
    #[serde(default)]
    pub branches:
        std::collections::BTreeMap<String, Vec<(utils::id::TenantId, utils::id::TimelineId)>>,
}

impl BranchMappings {
    pub fn path(repo: &Path) -> PathBuf {
        repo.join("branches.toml")
    }

    /// The mappings, empty if the file does not exist yet.
    pub fn load(repo: &Path) -> anyhow::Result<BranchMappings> {
        let path = Self::path(repo);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("parse {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BranchMappings::default()),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    pub fn save(&self, repo: &Path) -> anyhow::Result<()> {
        let path = Self::path(repo);
        let text = toml::to_string_pretty(self).context("serialize branch mappings")?;
        utils::crashsafe::durable_write(&path, text.as_bytes())
            .with_context(|| format!("write {}", path.display()))
    }

    /// The timeline of `branch` in `tenant`.
    pub fn timeline(
        &self,
        tenant: utils::id::TenantId,
        branch: &str,
    ) -> Option<utils::id::TimelineId> {
        self.branches
            .get(branch)?
            .iter()
            .find(|(t, _)| *t == tenant)
            .map(|(_, tl)| *tl)
    }

    /// The branch name of a timeline, if it has one.
    pub fn name_of(
        &self,
        tenant: utils::id::TenantId,
        timeline: utils::id::TimelineId,
    ) -> Option<&str> {
        self.branches
            .iter()
            .find(|(_, v)| v.contains(&(tenant, timeline)))
            .map(|(k, _)| k.as_str())
    }

    /// Records `branch` → `timeline` in `tenant`; fails if the name is taken in the tenant.
    pub fn insert(
        &mut self,
        tenant: utils::id::TenantId,
        branch: &str,
        timeline: utils::id::TimelineId,
    ) -> anyhow::Result<()> {
        if let Some(existing) = self.timeline(tenant, branch) {
            bail!("branch {branch:?} already exists in tenant {tenant} (timeline {existing})");
        }
        self.branches
            .entry(branch.to_string())
            .or_default()
            .push((tenant, timeline));
        Ok(())
    }
}

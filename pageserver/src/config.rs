//! The daemon's configuration: `<workdir>/pageserver.toml`, with `-c key=value` overrides from
//! the command line.
//!
//! ```toml
//! id = 1
//! listen_pg_addr = "127.0.0.1:64000"
//! listen_http_addr = "127.0.0.1:9898"
//! pg_distrib_dir = "/path/to/pg_install"      # contains v15/bin/initdb and v15/bin/postgres
//! wait_lsn_timeout = "300s"
//! page_cache_size_bytes = 67108864               # materialized pages, shared by all tenants
//! log_format = "plain"
//! [tenant_config]                             # defaults for every tenant (TenantConfig)
//! checkpoint_distance = 67108864
//! ```
//!
//! Unknown keys are rejected, so a typo is an error and not a silently ignored setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pageserver_api::models::{duration_serde, EffectiveTenantConfig, TenantConfig};
use serde::{Deserialize, Serialize};

/// The configuration file's name inside the workdir.
pub const CONFIG_FILE_NAME: &str = "pageserver.toml";
/// Default address of the page service (libpq).
pub const DEFAULT_PG_LISTEN_ADDR: &str = "127.0.0.1:64000";
/// Default address of the management API (HTTP).
pub const DEFAULT_HTTP_LISTEN_ADDR: &str = "127.0.0.1:9898";
/// Default bound on waiting for WAL to arrive (`wait_lsn`).
pub const DEFAULT_WAIT_LSN_TIMEOUT: Duration = Duration::from_secs(300);
/// The PostgreSQL major version whose binaries we use.
pub const PG_MAJOR_VERSION: u32 = 15;

/// `pageserver.toml` as written on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageServerConf {
    /// Node id of this pageserver.
    pub id: u64,
    #[serde(default = "default_pg_addr")]
    pub listen_pg_addr: String,
    #[serde(default = "default_http_addr")]
    pub listen_http_addr: String,
    /// PostgreSQL installation with `v15/bin/initdb`; relative paths are relative to the
    /// workdir.
    #[serde(default = "default_pg_distrib_dir")]
    pub pg_distrib_dir: PathBuf,
    /// How long a read waits for WAL to arrive before failing.
    #[serde(default = "default_wait_lsn_timeout", with = "duration_serde")]
    pub wait_lsn_timeout: Duration,
    /// Budget of the materialized page cache (pages rebuilt by WAL redo), for all tenants.
    #[serde(default = "default_page_cache_size_bytes")]
    pub page_cache_size_bytes: u64,
    /// `plain` or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Defaults for every tenant; a tenant's own overrides apply on top.
    #[serde(default)]
    pub tenant_config: TenantConfig,
}

fn default_pg_addr() -> String {
    DEFAULT_PG_LISTEN_ADDR.to_string()
}
fn default_http_addr() -> String {
    DEFAULT_HTTP_LISTEN_ADDR.to_string()
}
fn default_pg_distrib_dir() -> PathBuf {
    PathBuf::from("pg_install")
}
fn default_wait_lsn_timeout() -> Duration {
    DEFAULT_WAIT_LSN_TIMEOUT
}
fn default_page_cache_size_bytes() -> u64 {
    crate::tenant::page_cache::DEFAULT_PAGE_CACHE_SIZE_BYTES
}
fn default_log_format() -> String {
    "plain".to_string()
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: utils::crashsafe::CrashsafeError,
    },
    #[error("{path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("override {arg:?} is not of the form key=value")]
    BadOverride { arg: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("{0} already exists; refusing to --init over it")]
    AlreadyInitialized(PathBuf),
    #[error("{0} does not exist; run with --init first")]
    NotInitialized(PathBuf),
}

/// The configuration in force, with paths resolved against the workdir.
#[derive(Debug, Clone)]
pub struct ResolvedConf {
    pub workdir: PathBuf,
    pub id: u64,
    pub listen_pg_addr: SocketAddr,
    pub listen_http_addr: SocketAddr,
    pub pg_distrib_dir: PathBuf,
    pub wait_lsn_timeout: Duration,
    pub page_cache_size_bytes: u64,
    pub log_format: utils::logging::LogFormat,
    pub default_tenant_conf: EffectiveTenantConfig,
}

impl ResolvedConf {
    /// `<workdir>/tenants`.
    pub fn tenants_path(&self) -> PathBuf {
        self.workdir.join("tenants")
    }

    /// The directory with `bin/initdb` and `bin/postgres` for PostgreSQL 15.
    pub fn pg_bin_dir(&self) -> PathBuf {
        self.pg_distrib_dir
            .join(format!("v{PG_MAJOR_VERSION}"))
            .join("bin")
    }

    /// The directory with PostgreSQL's shared libraries.
    pub fn pg_lib_dir(&self) -> PathBuf {
        self.pg_distrib_dir
            .join(format!("v{PG_MAJOR_VERSION}"))
            .join("lib")
    }
}

/// Parses the text of `pageserver.toml` after applying `overrides` (`key=value`, the value a
/// TOML value or else a bare string; `a.b=v` sets key `b` of table `a`).
pub fn parse(path: &Path, text: &str, overrides: &[String]) -> Result<PageServerConf, ConfigError> {
    let syntax = |e: &dyn std::fmt::Display| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut table: toml::Table = text.parse().map_err(|e| syntax(&e))?;
    for arg in overrides {
        apply_override(&mut table, arg)?;
    }
    PageServerConf::deserialize(toml::Value::Table(table)).map_err(|e| syntax(&e))
}

fn apply_override(table: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadOverride {
        arg: arg.to_string(),
    };
    let (key, value) = arg.split_once('=').ok_or_else(bad)?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(bad());
    }
    let value = value.trim();
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or_else(bad)?;
    let mut cur = table;
    for part in parts {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(bad)?;
    }
    cur.insert(last.to_string(), parsed);
    Ok(())
}

impl PageServerConf {
    /// Checks every value and resolves paths against `workdir`.
    pub fn resolve(&self, workdir: &Path) -> Result<ResolvedConf, ConfigError> {
        let addr = |name: &str, s: &str| {
            s.parse::<SocketAddr>().map_err(|e| {
                ConfigError::Invalid(format!("{name} {s:?} is not an ip:port address: {e}"))
            })
        };
        let listen_pg_addr = addr("listen_pg_addr", &self.listen_pg_addr)?;
        let listen_http_addr = addr("listen_http_addr", &self.listen_http_addr)?;
        if listen_pg_addr == listen_http_addr && listen_pg_addr.port() != 0 {
            return Err(ConfigError::Invalid(format!(
                "listen_pg_addr and listen_http_addr are both {listen_pg_addr}"
            )));
        }
        let log_format = self
            .log_format
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("log_format: {e}")))?;
        let default_tenant_conf = self.tenant_config.effective();
        default_tenant_conf
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("tenant_config: {e}")))?;
        if self.wait_lsn_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "wait_lsn_timeout must not be 0".into(),
            ));
        }
        Ok(ResolvedConf {
            workdir: workdir.to_path_buf(),
            id: self.id,
            listen_pg_addr,
            listen_http_addr,
            pg_distrib_dir: workdir.join(&self.pg_distrib_dir),
            wait_lsn_timeout: self.wait_lsn_timeout,
            page_cache_size_bytes: self.page_cache_size_bytes,
            log_format,
            default_tenant_conf,
        })
    }
}

/// Loads `<workdir>/pageserver.toml`. With `init`, first writes it (durably) from `overrides`
/// (`id` defaults to 1); it must not exist yet.
pub fn load_or_init(
    workdir: &Path,
    init: bool,
    overrides: &[String],
) -> Result<ResolvedConf, ConfigError> {
    let path = workdir.join(CONFIG_FILE_NAME);
    if init {
        if path.exists() {
            return Err(ConfigError::AlreadyInitialized(path));
        }
        let mut all = vec!["id=1".to_string()];
        all.extend_from_slice(overrides);
        let conf = parse(&path, "", &all)?;
        conf.resolve(workdir)?;
        let text = toml::to_string_pretty(&conf)
            .map_err(|e| ConfigError::Invalid(format!("cannot serialize: {e}")))?;
        utils::crashsafe::create_dir_all_durable(workdir).map_err(|source| ConfigError::Write {
            path: workdir.to_path_buf(),
            source,
        })?;
        utils::crashsafe::durable_write(&path, text.as_bytes()).map_err(|source| {
            ConfigError::Write {
                path: path.clone(),
                source,
            }
        })?;
        return conf.resolve(workdir);
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NotInitialized(path))
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    parse(&path, &text, overrides)?.resolve(workdir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("pageserver.toml")
    }

    #[test]
    fn defaults_and_overrides() {
        let conf = parse(
            &p(),
            "id = 7\n",
            &[
                "listen_http_addr=127.0.0.1:1234".into(),
                "wait_lsn_timeout='5s'".into(),
                "tenant_config.checkpoint_distance=1048576".into(),
            ],
        )
        .unwrap();
        assert_eq!(conf.id, 7);
        assert_eq!(conf.listen_pg_addr, DEFAULT_PG_LISTEN_ADDR);
        let r = conf.resolve(Path::new("/w")).unwrap();
        assert_eq!(r.listen_http_addr.port(), 1234);
        assert_eq!(r.wait_lsn_timeout, Duration::from_secs(5));
        assert_eq!(r.default_tenant_conf.checkpoint_distance, 1048576);
        assert_eq!(r.pg_bin_dir(), Path::new("/w/pg_install/v15/bin"));
    }

    #[test]
    fn errors_are_reported() {
        assert!(matches!(
            parse(&p(), "id = 1\nbogus = 3\n", &[]),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            parse(&p(), "", &[]),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            parse(&p(), "id = 1", &["noequals".into()]),
            Err(ConfigError::BadOverride { .. })
        ));
        let bad_addr = parse(&p(), "id = 1\nlisten_pg_addr = 'nope'", &[]).unwrap();
        let err = bad_addr.resolve(Path::new("/w")).unwrap_err();
        assert!(err.to_string().contains("listen_pg_addr"), "{err}");
        let bad_tenant = parse(&p(), "id=1\n[tenant_config]\ncheckpoint_distance=1", &[]).unwrap();
        assert!(bad_tenant.resolve(Path::new("/w")).is_err());
    }

    #[test]
    fn init_writes_then_loads() {
        let dir = tempfile::tempdir().unwrap();
        let wd = dir.path().join("ps");
        assert!(matches!(
            load_or_init(&wd, false, &[]),
            Err(ConfigError::NotInitialized(_))
        ));
        let a = load_or_init(&wd, true, &["id=3".into()]).unwrap();
        assert_eq!(a.id, 3);
        assert!(matches!(
            load_or_init(&wd, true, &[]),
            Err(ConfigError::AlreadyInitialized(_))
        ));
        let b = load_or_init(&wd, false, &[]).unwrap();
        assert_eq!(b.id, 3);
        assert_eq!(b.listen_pg_addr, a.listen_pg_addr);
    }
}

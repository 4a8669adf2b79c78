//! Applying the spec's roles and databases to a running primary, idempotently, and the
//! physical replication slot the pageserver's walreceiver uses.
//!
//! [`plan`] is pure: from the spec and what exists it derives the statements to run (roles
//! first, then databases). Roles and databases missing from the spec are left alone.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use compute_api::spec::Cluster;
use tokio_postgres::Client;

/// Name of the physical replication slot the pageserver pulls WAL through.
pub const PAGESERVER_SLOT: &str = "pageserver";

/// What the cluster has now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    pub roles: BTreeSet<String>,
    /// Database name → owner name.
    pub databases: BTreeMap<String, String>,
}

/// An SQL identifier, always quoted: `"` doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// An SQL string literal (standard_conforming_strings = on): `'` doubled.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The statements that bring `existing` to what `cluster` asks for.
pub fn plan(cluster: &Cluster, existing: &Existing) -> Vec<String> {
    let mut out = Vec::new();
    for r in &cluster.roles {
        let name = quote_ident(&r.name);
        let password = r
            .password
            .as_deref()
            .map(|p| format!(" PASSWORD {}", quote_literal(p)))
            .unwrap_or_default();
        if !existing.roles.contains(&r.name) {
            out.push(format!("CREATE ROLE {name} LOGIN{password}"));
        } else if !password.is_empty() {
            out.push(format!("ALTER ROLE {name} WITH LOGIN{password}"));
        }
    }
    for d in &cluster.databases {
        let (name, owner) = (quote_ident(&d.name), quote_ident(&d.owner));
        match existing.databases.get(&d.name) {
            None => out.push(format!("CREATE DATABASE {name} OWNER {owner}")),
            Some(o) if *o != d.owner => out.push(format!("ALTER DATABASE {name} OWNER TO {owner}")),
            Some(_) => {}
        }
    }
    out
}

/// Reads the roles and databases of the cluster.
pub async fn existing(client: &Client) -> anyhow::Result<Existing> {
    let mut e = Existing::default();
    for row in client
        .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
        .await
        .context("list roles")?
    {
        e.roles.insert(row.get(0));
    }
    for row in client
        .query(
            "SELECT datname::text, pg_catalog.pg_get_userbyid(datdba)::text FROM pg_catalog.pg_database",
            &[],
        )
        .await
        .context("list databases")?
    {
        e.databases.insert(row.get(0), row.get(1));
    }
    Ok(e)
}

/// Creates or alters roles and databases as the spec says. Returns the statements run
/// (passwords included, so the caller must not log them verbatim).
pub async fn apply_cluster(client: &Client, cluster: &Cluster) -> anyhow::Result<usize> {
    let current = existing(client).await?;
    let stmts = plan(cluster, &current);
    for s in &stmts {
        // Each statement alone: CREATE DATABASE cannot run inside a transaction block.
        client
            .batch_execute(s)
            .await
            .with_context(|| format!("running {}", redact(s)))?;
    }
    Ok(stmts.len())
}

/// The statement with any password literal hidden.
pub fn redact(stmt: &str) -> String {
    match stmt.find(" PASSWORD ") {
        Some(at) => format!("{} PASSWORD '***'", &stmt[..at]),
        None => stmt.to_string(),
    }
}

/// Creates the pageserver's physical slot (reserving WAL at once) unless it exists.
pub async fn ensure_pageserver_slot(client: &Client) -> anyhow::Result<bool> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&PAGESERVER_SLOT],
        )
        .await
        .context("look for the pageserver slot")?
        .is_some();
    if exists {
        return Ok(false);
    }
    client
        .execute(
            "SELECT pg_catalog.pg_create_physical_replication_slot($1, true)",
            &[&PAGESERVER_SLOT],
        )
        .await
        .context("create the pageserver slot")?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use compute_api::spec::{Database, Role};

    fn cluster() -> Cluster {
        Cluster {
            roles: vec![
                Role {
                    name: "alice".into(),
                    password: None,
                },
                Role {
                    name: "b\"ob".into(),
                    password: Some("it's".into()),
                },
            ],
            databases: vec![
                Database {
                    name: "app".into(),
                    owner: "alice".into(),
                },
                Database {
                    name: "postgres".into(),
                    owner: "cloud_admin".into(),
                },
            ],
            settings: vec![],
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a"), "\"a\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn fresh_cluster_gets_everything() {
        let mut e = Existing::default();
        e.roles.insert("cloud_admin".into());
        e.databases.insert("postgres".into(), "cloud_admin".into());
        assert_eq!(
            plan(&cluster(), &e),
            vec![
                "CREATE ROLE \"alice\" LOGIN".to_string(),
                "CREATE ROLE \"b\"\"ob\" LOGIN PASSWORD 'it''s'".to_string(),
                "CREATE DATABASE \"app\" OWNER \"alice\"".to_string(),
            ]
        );
    }

    #[test]
    fn second_run_only_refreshes_passwords_and_fixes_owners() {
        let mut e = Existing::default();
        for r in ["cloud_admin", "alice", "b\"ob"] {
            e.roles.insert(r.into());
        }
        e.databases.insert("postgres".into(), "cloud_admin".into());
        e.databases.insert("app".into(), "cloud_admin".into());
        assert_eq!(
            plan(&cluster(), &e),
            vec![
                "ALTER ROLE \"b\"\"ob\" WITH LOGIN PASSWORD 'it''s'".to_string(),
                "ALTER DATABASE \"app\" OWNER TO \"alice\"".to_string(),
            ]
        );
        e.databases.insert("app".into(), "alice".into());
        let mut c = cluster();
        c.roles[1].password = None;
        assert!(plan(&c, &e).is_empty());
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("CREATE ROLE \"x\" LOGIN PASSWORD 'secret'"),
            "CREATE ROLE \"x\" LOGIN PASSWORD '***'"
        );
        assert_eq!(redact("CREATE DATABASE \"a\""), "CREATE DATABASE \"a\"");
    }
}

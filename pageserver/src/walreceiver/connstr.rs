//! Connection strings of WAL sources: libpq keyword/value strings
//! (`host=127.0.0.1 port=55432 user=cloud_admin dbname=postgres`, values optionally in single
//! quotes with `\'` and `\\` escapes) and `postgresql://user:password@host:port/dbname` URIs.
//!
//! A `host` starting with `/` is a Unix socket directory (the socket is
//! `<dir>/.s.PGSQL.<port>`), as in libpq. TLS is not supported, so `sslmode` may only be
//! `disable`, `allow` or `prefer`.

use std::fmt;
use std::path::PathBuf;

/// The user when the connection string names none.
pub const DEFAULT_USER: &str = "cloud_admin";
/// The port when the connection string names none.
pub const DEFAULT_PORT: u16 = 5432;
/// Longest connection string accepted.
pub const MAX_CONNSTR_BYTES: usize = 4096;

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// Host name or address, with TCP.
    Tcp(String),
    /// Directory holding the server's Unix socket.
    UnixDir(PathBuf),
}

/// A parsed connection string.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnConfig {
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub dbname: Option<String>,
    pub password: Option<String>,
    pub application_name: Option<String>,
}

impl fmt::Debug for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

/// Why a connection string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnStrError {
    #[error("connection string is empty")]
    Empty,
    #[error("connection string is longer than {MAX_CONNSTR_BYTES} bytes")]
    TooLong,
    #[error("missing \"=\" after {0:?} in connection string")]
    MissingEquals(String),
    #[error("unterminated quoted value in connection string")]
    UnterminatedQuote,
    #[error("invalid connection option {0:?}")]
    UnknownOption(String),
    #[error("invalid port {0:?}")]
    BadPort(String),
    #[error("sslmode {0:?} is not supported (no TLS): use disable, allow or prefer")]
    UnsupportedSslMode(String),
    #[error("invalid connection URI: {0}")]
    BadUri(String),
}

impl ConnConfig {
    /// Parses a keyword/value string or a `postgresql://` / `postgres://` URI.
    pub fn parse(s: &str) -> Result<ConnConfig, ConnStrError> {
        if s.len() > MAX_CONNSTR_BYTES {
            return Err(ConnStrError::TooLong);
        }
        let s = s.trim();
        if s.is_empty() {
            return Err(ConnStrError::Empty);
        }
        let pairs = match s
            .strip_prefix("postgresql://")
            .or_else(|| s.strip_prefix("postgres://"))
        {
            Some(rest) => parse_uri(rest)?,
            None => parse_keyword_value(s)?,
        };
        let mut cfg = ConnConfig {
            host: Host::Tcp("localhost".into()),
            port: DEFAULT_PORT,
            user: DEFAULT_USER.into(),
            dbname: None,
            password: None,
            application_name: None,
        };
        for (k, v) in pairs {
            cfg.set(&k, v)?;
        }
        Ok(cfg)
    }

    fn set(&mut self, key: &str, value: String) -> Result<(), ConnStrError> {
        match key {
            "host" | "hostaddr" if value.starts_with('/') => {
                self.host = Host::UnixDir(value.into())
            }
            "host" | "hostaddr" if !value.is_empty() => self.host = Host::Tcp(value),
            "host" | "hostaddr" => {}
            "port" => {
                self.port = value
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(ConnStrError::BadPort(value))?
            }
            "user" if !value.is_empty() => self.user = value,
            "user" => {}
            "dbname" => self.dbname = Some(value).filter(|v| !v.is_empty()),
            "password" => self.password = Some(value),
            "application_name" => self.application_name = Some(value),
            "sslmode" if ["disable", "allow", "prefer"].contains(&value.as_str()) => {}
            "sslmode" => return Err(ConnStrError::UnsupportedSslMode(value)),
            "connect_timeout" | "options" | "replication" => {}
            other => return Err(ConnStrError::UnknownOption(other.to_string())),
        }
        Ok(())
    }

    /// The string form with the password (if any) replaced by `***`.
    pub fn redacted(&self) -> String {
        let host = match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::UnixDir(d) => d.display().to_string(),
        };
        let mut s = format!("host={host} port={} user={}", self.port, self.user);
        if let Some(db) = &self.dbname {
            s.push_str(&format!(" dbname={db}"));
        }
        if self.password.is_some() {
            s.push_str(" password=***");
        }
        s
    }
}

/// `key=value key2='quoted value'` into pairs.
fn parse_keyword_value(s: &str) -> Result<Vec<(String, String)>, ConnStrError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(ConnStrError::MissingEquals(key));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(ConnStrError::UnterminatedQuote),
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or(ConnStrError::UnterminatedQuote)?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or(ConnStrError::UnterminatedQuote)?);
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// `user:password@host:port/dbname?key=value&...` (after the scheme) into pairs.
fn parse_uri(rest: &str) -> Result<Vec<(String, String)>, ConnStrError> {
    let mut out = Vec::new();
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, db) = main.split_once('/').unwrap_or((main, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if let Some(u) = userinfo {
        let (user, password) = u.split_once(':').unwrap_or((u, ""));
        out.push(("user".into(), percent_decode(user)?));
        if u.contains(':') {
            out.push(("password".into(), percent_decode(password)?));
        }
    }
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| ConnStrError::BadUri("unterminated [".into()))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    out.push(("host".into(), percent_decode(host)?));
    if let Some(p) = port {
        out.push(("port".into(), p.to_string()));
    }
    if !db.is_empty() {
        out.push(("dbname".into(), percent_decode(db)?));
    }
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| ConnStrError::BadUri(format!("bad query parameter {kv:?}")))?;
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, ConnStrError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ConnStrError::BadUri(format!("bad percent escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConnStrError::BadUri(format!("{s:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_value() {
        let c = ConnConfig::parse("host=127.0.0.1 port=55432 user=alice dbname=postgres").unwrap();
        assert_eq!(c.host, Host::Tcp("127.0.0.1".into()));
        assert_eq!((c.port, c.user.as_str()), (55432, "alice"));
        assert_eq!(c.dbname.as_deref(), Some("postgres"));
        let c = ConnConfig::parse("host = /tmp/sock  password='it''s' ").unwrap_err();
        assert_eq!(c, ConnStrError::MissingEquals("'s'".into()));
        let c = ConnConfig::parse(r"host=/tmp/so\ ck password='a \'b\\'").unwrap();
        assert_eq!(c.host, Host::UnixDir("/tmp/so ck".into()));
        assert_eq!(c.password.as_deref(), Some(r"a 'b\"));
        assert_eq!(c.user, DEFAULT_USER);
        assert!(!c.redacted().contains("a 'b"));
        assert!(format!("{c:?}").contains("password=***"));
    }

    #[test]
    fn uri() {
        let c = ConnConfig::parse("postgresql://bob:s%40cret@127.0.0.1:6000/db?sslmode=disable")
            .unwrap();
        assert_eq!(c.host, Host::Tcp("127.0.0.1".into()));
        assert_eq!(c.port, 6000);
        assert_eq!(c.user, "bob");
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert_eq!(c.dbname.as_deref(), Some("db"));
        let c = ConnConfig::parse("postgres://[::1]:7000").unwrap();
        assert_eq!((c.host, c.port), (Host::Tcp("::1".into()), 7000));
    }

    #[test]
    fn bad_input_is_rejected() {
        for (s, want) in [
            ("", ConnStrError::Empty),
            ("host", ConnStrError::MissingEquals("host".into())),
            ("host='x", ConnStrError::UnterminatedQuote),
            ("port=0", ConnStrError::BadPort("0".into())),
            ("port=x", ConnStrError::BadPort("x".into())),
            ("bogus=1", ConnStrError::UnknownOption("bogus".into())),
            (
                "sslmode=require",
                ConnStrError::UnsupportedSslMode("require".into()),
            ),
        ] {
            assert_eq!(ConnConfig::parse(s).unwrap_err(), want, "{s:?}");
        }
        assert!(ConnConfig::parse("postgresql://h:99999").is_err());
        assert!(ConnConfig::parse("postgresql://h/%zz").is_err());
        assert_eq!(
            ConnConfig::parse(&"x".repeat(MAX_CONNSTR_BYTES + 1)).unwrap_err(),
            ConnStrError::TooLong
        );
    }

    #[test]
    fn parse_never_panics_on_garbage() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let alphabet: Vec<char> = "host=port '\\/:@%?&[]x1 ".chars().collect();
        for _ in 0..5000 {
            let n = rng.gen_range(0..40);
            let s: String = (0..n)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let _ = ConnConfig::parse(&s);
        }
    }
}

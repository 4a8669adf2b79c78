//! libpq connection strings: the keyword/value form (`host=127.0.0.1 port=64000 user=x`,
//! values optionally single-quoted with `\'` and `\\` escapes) and the URI form
//! (`postgresql://user@host:port/dbname`). Only what a compute needs is kept.

use std::collections::BTreeMap;

/// Longest connection string accepted.
pub const MAX_CONNSTRING_BYTES: usize = 4096;

/// Why a connection string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnstringError {
    #[error("connection string is empty")]
    Empty,
    #[error("connection string is longer than {MAX_CONNSTRING_BYTES} bytes")]
    TooLong,
    #[error("expected keyword=value at {0:?}")]
    MissingEquals(String),
    #[error("unterminated quoted value for {0:?}")]
    UnterminatedQuote(String),
    #[error("keyword {0:?} appears twice")]
    Duplicate(String),
    #[error("no host in the connection string")]
    NoHost,
    #[error("bad port {0:?}")]
    BadPort(String),
    #[error("bad URI {0:?}")]
    BadUri(String),
}

/// A parsed connection string: where to connect and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connstring {
    pub host: String,
    /// 5432 when not given.
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    /// Every keyword as given (URI parts under their libpq keyword names).
    pub params: BTreeMap<String, String>,
}

impl Connstring {
    /// Parses either form; requires a host.
    pub fn parse(s: &str) -> Result<Connstring, ConnstringError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ConnstringError::Empty);
        }
        if s.len() > MAX_CONNSTRING_BYTES {
            return Err(ConnstringError::TooLong);
        }
        let params = if s.starts_with("postgresql://") || s.starts_with("postgres://") {
            parse_uri(s)?
        } else {
            parse_keywords(s)?
        };
        let host = params
            .get("host")
            .filter(|h| !h.is_empty())
            .cloned()
            .ok_or(ConnstringError::NoHost)?;
        let port = match params.get("port") {
            None => 5432,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(ConnstringError::BadPort(p.clone())),
            },
        };
        Ok(Connstring {
            host,
            port,
            user: params.get("user").cloned(),
            password: params.get("password").cloned(),
            dbname: params.get("dbname").cloned(),
            params,
        })
    }
}

/// `keyword=value` pairs separated by whitespace.
fn parse_keywords(s: &str) -> Result<BTreeMap<String, String>, ConnstringError> {
    let mut out = BTreeMap::new();
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
            return Err(ConnstringError::MissingEquals(key));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(ConnstringError::UnterminatedQuote(key)),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(ConnstringError::UnterminatedQuote(key)),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if out.insert(key.clone(), value).is_some() {
            return Err(ConnstringError::Duplicate(key));
        }
    }
}

/// `postgres[ql]://[user[:password]@]host[:port][/dbname][?k=v&...]` (no percent-decoding
/// beyond what hosts and names of a local cluster need: none).
fn parse_uri(s: &str) -> Result<BTreeMap<String, String>, ConnstringError> {
    let bad = || ConnstringError::BadUri(s.to_string());
    let rest = s.split_once("://").ok_or_else(bad)?.1;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, dbname) = match rest.split_once('/') {
        Some((a, d)) => (a, Some(d)),
        None => (rest, None),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut out = BTreeMap::new();
    if let Some(u) = userinfo {
        let (user, pw) = match u.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (u, None),
        };
        if !user.is_empty() {
            out.insert("user".to_string(), user.to_string());
        }
        if let Some(p) = pw {
            out.insert("password".to_string(), p.to_string());
        }
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (hostport, None),
    };
    out.insert("host".to_string(), host.to_string());
    if let Some(p) = port {
        out.insert("port".to_string(), p.to_string());
    }
    if let Some(d) = dbname.filter(|d| !d.is_empty()) {
        out.insert("dbname".to_string(), d.to_string());
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (k, v) = pair.split_once('=').ok_or_else(bad)?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_value() {
        let c = Connstring::parse("host=127.0.0.1 port=64000").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user),
            ("127.0.0.1", 64000, None)
        );
        let c = Connstring::parse("  host = localhost user='a b\\'c' dbname=postgres ").unwrap();
        assert_eq!(c.host, "localhost");
        assert_eq!(c.port, 5432);
        assert_eq!(c.user.as_deref(), Some("a b'c"));
        assert_eq!(c.dbname.as_deref(), Some("postgres"));
    }

    #[test]
    fn uri() {
        let c = Connstring::parse("postgresql://cloud_admin@127.0.0.1:55432/postgres").unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 55432);
        assert_eq!(c.user.as_deref(), Some("cloud_admin"));
        assert_eq!(c.dbname.as_deref(), Some("postgres"));
        let c = Connstring::parse("postgres://h?sslmode=disable").unwrap();
        assert_eq!(c.params["sslmode"], "disable");
    }

    #[test]
    fn errors() {
        use ConnstringError::*;
        assert_eq!(Connstring::parse(" "), Err(Empty));
        assert_eq!(Connstring::parse("port=1"), Err(NoHost));
        assert_eq!(Connstring::parse("host=h port=0"), Err(BadPort("0".into())));
        assert_eq!(Connstring::parse("host=h port=x"), Err(BadPort("x".into())));
        assert_eq!(Connstring::parse("host"), Err(MissingEquals("host".into())));
        assert_eq!(
            Connstring::parse("host='h"),
            Err(UnterminatedQuote("host".into()))
        );
        assert_eq!(
            Connstring::parse("host=a host=b"),
            Err(Duplicate("host".into()))
        );
        assert_eq!(
            Connstring::parse(&format!("host={}", "x".repeat(5000))),
            Err(TooLong)
        );
    }
}

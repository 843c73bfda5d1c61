//! Parsing `DATABASE_URL` (`postgres://user:password@host:port/db?sslmode=...`)
//! for the demo's upstream.

/// The parts of a PostgreSQL URL the demo uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// Host.
    pub host: String,
    /// Port (default 5432).
    pub port: u16,
    /// Database (default: the user name).
    pub database: String,
    /// User.
    pub user: String,
    /// Password, if given.
    pub password: Option<String>,
    /// `sslmode` query parameter, if given.
    pub sslmode: Option<String>,
}

/// Why a URL was not understood.
#[derive(Debug, thiserror::Error)]
#[error("not a postgres:// URL: {0}")]
pub struct UrlError(String);

fn percent_decode(s: &str) -> Result<String, UrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| UrlError("bad percent escape".into()))?;
            out.push(
                u8::from_str_radix(hex, 16).map_err(|_| UrlError("bad percent escape".into()))?,
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError("not UTF-8".into()))
}

impl DatabaseUrl {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| UrlError("must start with postgres://".into()))?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = main.split_once('/').unwrap_or((main, ""));
        let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (percent_decode(u)?, Some(percent_decode(p)?)),
            None => (percent_decode(userinfo)?, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse().map_err(|_| UrlError(format!("bad port {p:?}")))?,
            ),
            _ => (hostport.to_string(), 5432),
        };
        let host = if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        };
        let user = if user.is_empty() {
            "postgres".to_string()
        } else {
            user
        };
        let database = if path.is_empty() {
            user.clone()
        } else {
            percent_decode(path)?
        };
        let sslmode = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "sslmode")
            .map(|(_, v)| v.to_string());
        Ok(Self {
            host,
            port,
            database,
            user,
            password,
            sslmode,
        })
    }

    /// The target `tls` mode matching `sslmode`.
    pub fn tls_mode(&self) -> &'static str {
        match self.sslmode.as_deref() {
            Some("require") | Some("prefer") => "require",
            Some("verify-ca") | Some("verify-full") => "verify-full",
            _ => "disable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let u = DatabaseUrl::parse("postgres://app:p%40ss@db.local:6543/orders?sslmode=require")
            .unwrap();
        assert_eq!(u.user, "app");
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!((u.host.as_str(), u.port), ("db.local", 6543));
        assert_eq!(u.database, "orders");
        assert_eq!(u.tls_mode(), "require");
    }

    #[test]
    fn defaults() {
        let u = DatabaseUrl::parse("postgresql://localhost").unwrap();
        assert_eq!(
            (u.user.as_str(), u.port, u.database.as_str()),
            ("postgres", 5432, "postgres")
        );
        assert!(DatabaseUrl::parse("mysql://x").is_err());
    }
}

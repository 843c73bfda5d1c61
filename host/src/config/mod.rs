//! The gateway's one TOML file: what it says (`model`), how it is checked
//! (`validate`), and where in the file an error is (`locate`).
//!
//! Loading never touches the network or upstream databases: it parses, checks
//! every value it can check offline, and returns a [`Config`] or a
//! [`ConfigError`] that names the key and the line.

pub mod keys;
mod locate;
mod model;
mod validate;

use std::path::Path;

pub use model::*;
pub use validate::url_is_loopback;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path of the file.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{0}")]
    Syntax(String),
    /// A value is well-formed but not acceptable.
    #[error("{key}{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        /// Dotted key path, e.g. `identity_providers[0].issuer`.
        key: String,
        /// Line in the file, when it could be found.
        line: Option<usize>,
        /// What is wrong and what to do.
        message: String,
    },
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::parse_relative_to(&text, path.parent())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates configuration text; relative paths stay as written.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_relative_to(text, None)
    }

    /// Parses and validates configuration text, resolving relative file paths
    /// against `base` (the directory of the configuration file).
    pub fn parse_relative_to(text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        keys::check_owners(&raw).map_err(|m| ConfigError::Invalid {
            line: locate::line_of(text, &m.key),
            key: m.key,
            message: m.message,
        })?;
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(keys::explain(e.to_string())))?;
        if let Some(base) = base.filter(|b| !b.as_os_str().is_empty()) {
            config.resolve_paths(base);
        }
        validate::validate(&config).map_err(|e| match e {
            ConfigError::Invalid { key, message, .. } => ConfigError::Invalid {
                line: locate::line_of(text, &key),
                key,
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut Option<String>| {
            if let Some(v) = p {
                if Path::new(v.as_str()).is_relative() {
                    *v = base.join(v.as_str()).display().to_string();
                }
            }
        };
        for l in &mut self.listeners {
            fix(&mut l.tls_cert_file);
            fix(&mut l.tls_key_file);
            fix(&mut l.host_key_file);
            fix(&mut l.user_ca_key_file);
        }
        for p in &mut self.identity_providers {
            fix(&mut p.hmac_secret_file);
        }
        if let Some(a) = &mut self.admin {
            fix(&mut a.token_file);
        }
        if let Some(d) = &mut self.delegation {
            if Path::new(&d.key_file).is_relative() {
                d.key_file = base.join(&d.key_file).display().to_string();
            }
        }
        if Path::new(&self.store.path).is_relative() {
            self.store.path = base.join(&self.store.path).display().to_string();
        }
        for p in &mut self.plugins {
            if Path::new(&p.path).is_relative() {
                p.path = base.join(&p.path).display().to_string();
            }
        }
        for t in &mut self.targets {
            fix(&mut t.password_file);
            fix(&mut t.tls_ca_file);
            fix(&mut t.private_key_file);
            fix(&mut t.upstream_ca_key_file);
            fix(&mut t.known_hosts_file);
            if let Some(o) = &mut t.oauth2 {
                if Path::new(&o.client_secret_file).is_relative() {
                    o.client_secret_file = base.join(&o.client_secret_file).display().to_string();
                }
            }
        }
    }

    /// A human-readable summary, as `portcullis check-config` prints it.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "listeners: {}", self.listeners.len());
        for l in &self.listeners {
            let tls = if l.tls_cert_file.is_some() {
                "TLS"
            } else {
                "no TLS"
            };
            let dev = if l.plaintext_loopback_dev {
                ", plaintext allowed (loopback dev)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  {} {} ({tls}{dev}, max {} clients)",
                l.protocol.as_str(),
                l.address,
                l.max_clients
            );
        }
        let _ = writeln!(s, "identity providers: {}", self.identity_providers.len());
        for p in &self.identity_providers {
            let keys = match (&p.jwks_uri, &p.hmac_secret_file) {
                (Some(u), _) => format!("JWKS {u}"),
                (None, Some(_)) => "HMAC secret file".to_string(),
                (None, None) => "JWKS by OIDC discovery".to_string(),
            };
            let _ = writeln!(
                s,
                "  {} issuer={} audience={} algorithms={} user_claim={} ({keys})",
                p.name,
                p.issuer,
                p.audience.as_slice().join(","),
                p.algorithms.join(","),
                p.user_claim
            );
        }
        let _ = writeln!(s, "plugins: {}", self.plugins.len());
        for p in &self.plugins {
            let _ = writeln!(
                s,
                "  {} {} ({:?}, {} ms per call, {} MiB{})",
                p.name,
                p.path,
                p.failure,
                p.call_timeout_ms,
                p.memory_limit_mib,
                if p.sha256.is_some() {
                    ", sha256 pinned"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(s, "targets: {}", self.targets.len());
        for t in &self.targets {
            let _ = match t.protocol {
                Protocol::Postgres => writeln!(
                    s,
                    "  {} (postgres) -> {}:{}/{} as {} (tls {}, auth {})",
                    t.name,
                    t.host,
                    t.port(),
                    t.database,
                    t.user,
                    t.tls.as_str(),
                    t.credential_summary()
                ),
                Protocol::Ssh => writeln!(
                    s,
                    "  {} (ssh) -> {}@{}:{} (key {}, host key pinned by {})",
                    t.name,
                    t.user,
                    t.host,
                    t.port(),
                    t.private_key_file.as_deref().unwrap_or("none"),
                    t.known_hosts_file.as_deref().unwrap_or("none"),
                ),
                Protocol::Kubernetes => writeln!(
                    s,
                    "  {} (kubernetes) -> {}://{}:{} (impersonating each person; gateway {})",
                    t.name,
                    if t.tls == crate::config::UpstreamTls::Disable {
                        "http"
                    } else {
                        "https"
                    },
                    t.host,
                    t.port(),
                    t.credential_summary().replace("password", "token")
                ),
            };
            let _ = writeln!(
                s,
                "    allowed: groups [{}], users [{}]",
                t.allow_groups.join(", "),
                t.allow_users.join(", ")
            );
            if !t.plugins.is_empty() {
                let _ = writeln!(s, "    plugin chain: {}", t.plugins.join(" -> "));
            }
            for m in &t.roles {
                let _ = writeln!(
                    s,
                    "    upstream role {} for groups [{}]",
                    m.role,
                    m.groups.join(", ")
                );
            }
            if let Some(r) = &t.default_role {
                let _ = writeln!(s, "    upstream role {r} for everyone else");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests;

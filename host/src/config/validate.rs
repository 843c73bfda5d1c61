//! Offline checks of a parsed configuration: every error names its key and
//! says what to change.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::{Config, ConfigError, IdentityProvider, Listener, Protocol, Target, UpstreamTls};

/// Algorithms the gateway can verify.
pub const KNOWN_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        line: None,
        message: message.into(),
    }
}

/// Checks everything that can be checked without the network.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    if config.listeners.is_empty() {
        return Err(invalid(
            "listeners",
            "no [[listeners]] table: add one with an address such as \"0.0.0.0:6432\"",
        ));
    }
    if config.identity_providers.is_empty() {
        return Err(invalid(
            "identity_providers",
            "no [[identity_providers]] table: clients authenticate with OIDC tokens, so at least one issuer is needed",
        ));
    }
    if config.targets.is_empty() {
        return Err(invalid(
            "targets",
            "no [[targets]] table: add the upstream database clients may reach",
        ));
    }
    if config.approvals.max_requests_per_minute == 0 {
        return Err(invalid(
            "approvals.max_requests_per_minute",
            "must be at least 1 (nobody could ever ask for an approval)",
        ));
    }
    if config.approvals.max_pending_per_user == 0 {
        return Err(invalid(
            "approvals.max_pending_per_user",
            "must be at least 1 (a person with no room for a request could never be approved)",
        ));
    }
    if let Some(d) = &config.delegation {
        if config.admin.is_none() {
            return Err(invalid(
                "delegation",
                "token exchange is served on the admin API: add an [admin] table",
            ));
        }
        if !(1..=10).contains(&d.max_depth) {
            return Err(invalid("delegation.max_depth", "must be between 1 and 10"));
        }
        if !(1..=365).contains(&d.rotate_days) {
            return Err(invalid(
                "delegation.rotate_days",
                "must be between 1 and 365",
            ));
        }
        if !(60..=86_400).contains(&d.max_ttl_secs) {
            return Err(invalid(
                "delegation.max_ttl_secs",
                "must be between 60 and 86400 seconds",
            ));
        }
        if config
            .identity_providers
            .iter()
            .any(|p| p.issuer == d.issuer)
        {
            return Err(invalid(
                "delegation.issuer",
                "must differ from every identity provider's issuer",
            ));
        }
    }
    if let Some(a) = &config.admin {
        validate_admin(a)?;
    }
    if config.gateway.buffered_message_budget_bytes < super::model::MIN_BUFFERED_MESSAGE_BUDGET {
        return Err(invalid(
            "gateway.buffered_message_budget_bytes",
            "must be at least 1048576 (1 MiB); the default is 1073741824 (1 GiB)",
        ));
    }
    if !(1..=1000).contains(&config.store.flush_interval_ms) {
        return Err(invalid(
            "store.flush_interval_ms",
            "must be between 1 and 1000 (milliseconds); the default is 100",
        ));
    }
    if config.store.path.trim().is_empty() {
        return Err(invalid(
            "store.path",
            "must name the SQLite file of the audit store",
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.logging.level) {
        return Err(invalid("logging.level", format!("not a log filter: {e}")));
    }
    for (i, l) in config.listeners.iter().enumerate() {
        validate_listener(i, l)?;
    }
    let mut names = HashSet::new();
    let mut issuers = HashSet::new();
    for (i, p) in config.identity_providers.iter().enumerate() {
        if !names.insert(p.name.as_str()) {
            return Err(invalid(
                format!("identity_providers[{i}].name"),
                format!("provider name {:?} is used twice", p.name),
            ));
        }
        if !issuers.insert(p.issuer.as_str()) {
            return Err(invalid(
                format!("identity_providers[{i}].issuer"),
                format!("issuer {:?} is configured twice", p.issuer),
            ));
        }
        validate_provider(i, p)?;
    }
    let mut plugin_names = HashSet::new();
    for (i, p) in config.plugins.iter().enumerate() {
        let key = |k: &str| format!("plugins[{i}].{k}");
        if !plugin_names.insert(p.name.as_str()) {
            return Err(invalid(
                key("name"),
                format!("plugin name {:?} is used twice", p.name),
            ));
        }
        if !std::path::Path::new(&p.path).is_file() {
            return Err(invalid(
                key("path"),
                format!("file {:?} does not exist", p.path),
            ));
        }
        if let Some(h) = &p.sha256 {
            if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid(key("sha256"), "must be 64 hexadecimal characters"));
            }
        }
        if p.call_timeout_ms == 0 || p.call_timeout_ms > 60_000 {
            return Err(invalid(
                key("call_timeout_ms"),
                "must be between 1 and 60000",
            ));
        }
        if p.memory_limit_mib == 0 || p.memory_limit_mib > 4096 {
            return Err(invalid(
                key("memory_limit_mib"),
                "must be between 1 and 4096",
            ));
        }
        if !p.config.is_table() {
            return Err(invalid(key("config"), "must be a table"));
        }
    }
    let mut names = HashSet::new();
    for (i, t) in config.targets.iter().enumerate() {
        for p in &t.plugins {
            if !plugin_names.contains(p.as_str()) {
                return Err(invalid(
                    format!("targets[{i}].plugins"),
                    format!("no [[plugins]] table is named {p:?}"),
                ));
            }
        }
        if !names.insert(t.name.as_str()) {
            return Err(invalid(
                format!("targets[{i}].name"),
                format!("target name {:?} is used twice", t.name),
            ));
        }
        validate_target(i, t)?;
    }
    Ok(())
}

fn validate_admin(a: &super::AdminSettings) -> Result<(), ConfigError> {
    if !(1024..=(64 << 20)).contains(&a.max_body_bytes) {
        return Err(invalid(
            "admin.max_body_bytes",
            "must be between 1024 and 67108864 (64 MiB); the default is 1048576 (1 MiB)",
        ));
    }
    if !(1..=10_000).contains(&a.max_connections) {
        return Err(invalid(
            "admin.max_connections",
            "must be between 1 and 10000; the default is 64",
        ));
    }
    if !(1..=300).contains(&a.header_read_timeout_secs) {
        return Err(invalid(
            "admin.header_read_timeout_secs",
            "must be between 1 and 300 seconds; the default is 10",
        ));
    }
    Ok(())
}

fn validate_listener(i: usize, l: &Listener) -> Result<(), ConfigError> {
    let key = |k: &str| format!("listeners[{i}].{k}");
    let addr: SocketAddr = l.address.parse().map_err(|_| {
        invalid(
            key("address"),
            format!(
                "{:?} is not an IP address and port such as \"0.0.0.0:6432\"",
                l.address
            ),
        )
    })?;
    match l.protocol {
        Protocol::Postgres | Protocol::Kubernetes => validate_listener_tls(i, l, &addr)?,
        // SSH encrypts with its own keys: the listener needs a host key.
        Protocol::Ssh => match &l.host_key_file {
            None => {
                return Err(invalid(
                    key("host_key_file"),
                    "an SSH listener needs the gateway's host key: set host_key_file to an OpenSSH private key (make one with ssh-keygen -t ed25519 -N '' -f FILE)",
                ))
            }
            Some(f) if !std::path::Path::new(f).is_file() => {
                return Err(invalid(
                    key("host_key_file"),
                    format!("file {f:?} does not exist"),
                ))
            }
            Some(_) => match &l.user_ca_key_file {
                Some(f) if !std::path::Path::new(f).is_file() => {
                    return Err(invalid(
                        key("user_ca_key_file"),
                        format!("file {f:?} does not exist (make one with ssh-keygen -t ed25519 -N '' -f FILE)"),
                    ))
                }
                _ => {}
            },
        },
    }
    if l.max_clients == 0 {
        return Err(invalid(key("max_clients"), "must be at least 1"));
    }
    if l.startup_timeout_secs == 0 {
        return Err(invalid(key("startup_timeout_secs"), "must be at least 1"));
    }
    if l.max_message_bytes < 64 * 1024 {
        return Err(invalid(
            key("max_message_bytes"),
            "must be at least 65536 (tokens alone may be 64 KiB)",
        ));
    }
    Ok(())
}

/// Checks a PostgreSQL or Kubernetes listener's TLS settings.
fn validate_listener_tls(i: usize, l: &Listener, addr: &SocketAddr) -> Result<(), ConfigError> {
    let key = |k: &str| format!("listeners[{i}].{k}");
    match (&l.tls_cert_file, &l.tls_key_file) {
        (Some(c), Some(k)) => {
            for (name, path) in [("tls_cert_file", c), ("tls_key_file", k)] {
                if !std::path::Path::new(path).is_file() {
                    return Err(invalid(key(name), format!("file {path:?} does not exist")));
                }
            }
        }
        (Some(_), None) => {
            return Err(invalid(
                key("tls_key_file"),
                "tls_cert_file is set but tls_key_file is missing",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                key("tls_cert_file"),
                "tls_key_file is set but tls_cert_file is missing",
            ))
        }
        (None, None) if !l.plaintext_loopback_dev => {
            return Err(invalid(
                key("tls_cert_file"),
                "the listener has no TLS certificate; clients send tokens as passwords, so TLS is required (set tls_cert_file and tls_key_file, or plaintext_loopback_dev = true on a loopback address for development)",
            ))
        }
        (None, None) => {}
    }
    if l.plaintext_loopback_dev && !addr.ip().is_loopback() {
        return Err(invalid(
            key("plaintext_loopback_dev"),
            format!(
                "plaintext clients are only allowed on a loopback address, and {} is not one",
                addr.ip()
            ),
        ));
    }
    Ok(())
}

/// Whether an http(s) URL's host is a loopback address or `localhost`.
pub fn url_is_loopback(url: &str) -> bool {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn check_url(key: String, url: &str, insecure_loopback: bool) -> Result<(), ConfigError> {
    if url.starts_with("https://") {
        return Ok(());
    }
    if url.starts_with("http://") {
        if insecure_loopback && url_is_loopback(url) {
            return Ok(());
        }
        return Err(invalid(
            key,
            format!("{url:?} is not https; plain http is only allowed for a loopback address with insecure_loopback_issuer = true"),
        ));
    }
    Err(invalid(key, format!("{url:?} is not an https URL")))
}

fn validate_provider(i: usize, p: &IdentityProvider) -> Result<(), ConfigError> {
    let key = |k: &str| format!("identity_providers[{i}].{k}");
    check_url(key("issuer"), &p.issuer, p.insecure_loopback_issuer)?;
    if let Some(u) = &p.jwks_uri {
        check_url(key("jwks_uri"), u, p.insecure_loopback_issuer)?;
    }
    if p.audience.as_slice().is_empty() || p.audience.as_slice().iter().any(|a| a.is_empty()) {
        return Err(invalid(
            key("audience"),
            "at least one non-empty audience is required",
        ));
    }
    if p.jwks_max_stale_secs < p.jwks_max_age_secs {
        return Err(invalid(
            key("jwks_max_stale_secs"),
            "must be at least jwks_max_age_secs (keys are refreshed at that age, and refused past this one)",
        ));
    }
    if p.algorithms.is_empty() {
        return Err(invalid(
            key("algorithms"),
            "at least one algorithm is required",
        ));
    }
    for a in &p.algorithms {
        if a.eq_ignore_ascii_case("none") {
            return Err(invalid(
                key("algorithms"),
                "\"none\" is never accepted: unsigned tokens prove nothing",
            ));
        }
        if !KNOWN_ALGORITHMS.contains(&a.as_str()) {
            return Err(invalid(
                key("algorithms"),
                format!(
                    "unknown algorithm {a:?}; known: {}",
                    KNOWN_ALGORITHMS.join(", ")
                ),
            ));
        }
        let hmac = a.starts_with("HS");
        if hmac && p.hmac_secret_file.is_none() {
            return Err(invalid(
                key("algorithms"),
                format!("{a} needs hmac_secret_file; HMAC is never verified with a JWKS key"),
            ));
        }
        if !hmac && p.hmac_secret_file.is_some() {
            return Err(invalid(
                key("algorithms"),
                format!("{a} is not an HMAC algorithm, but this provider uses hmac_secret_file; use HS256, HS384 or HS512"),
            ));
        }
    }
    if p.hmac_secret_file.is_some() && p.jwks_uri.is_some() {
        return Err(invalid(
            key("hmac_secret_file"),
            "a provider with a JWKS cannot also use an HMAC secret",
        ));
    }
    if let Some(f) = &p.hmac_secret_file {
        if !std::path::Path::new(f).is_file() {
            return Err(invalid(
                key("hmac_secret_file"),
                format!("file {f:?} does not exist"),
            ));
        }
    }
    if p.user_claim.is_empty() {
        return Err(invalid(
            key("user_claim"),
            "must name a claim, e.g. preferred_username",
        ));
    }
    Ok(())
}

/// Whether `role` can name a PostgreSQL role in a start-up packet: 1–63
/// bytes, no NUL, no leading or trailing space.
fn valid_role_name(role: &str) -> bool {
    !role.is_empty() && role.len() <= 63 && !role.contains('\0') && role.trim() == role
}

fn validate_target(i: usize, t: &Target) -> Result<(), ConfigError> {
    let key = |k: &str| format!("targets[{i}].{k}");
    if t.name.is_empty() {
        return Err(invalid(key("name"), "must not be empty"));
    }
    for (j, m) in t.roles.iter().enumerate() {
        if m.groups.is_empty() {
            return Err(invalid(
                format!("targets[{i}].roles[{j}].groups"),
                "must name at least one group (use default_role for everyone else)",
            ));
        }
        if !valid_role_name(&m.role) {
            return Err(invalid(
                format!("targets[{i}].roles[{j}].role"),
                format!(
                    "{:?} is not a role name (1-63 bytes, no surrounding spaces)",
                    m.role
                ),
            ));
        }
    }
    if let Some(r) = &t.default_role {
        if !valid_role_name(r) {
            return Err(invalid(
                key("default_role"),
                format!("{r:?} is not a role name (1-63 bytes, no surrounding spaces)"),
            ));
        }
    }
    if t.host.is_empty() {
        return Err(invalid(key("host"), "must not be empty"));
    }
    if t.configured_port == Some(0) {
        return Err(invalid(key("port"), "must not be 0"));
    }
    if t.connect_timeout_secs == 0 {
        return Err(invalid(key("connect_timeout_secs"), "must be at least 1"));
    }
    if t.protocol != Protocol::Kubernetes && t.user.is_empty() {
        return Err(invalid(
            key("user"),
            "must name the upstream role (PostgreSQL) or account (SSH) the gateway logs in as",
        ));
    }
    match t.protocol {
        Protocol::Postgres => validate_postgres_target(i, t),
        Protocol::Ssh => validate_ssh_target(i, t),
        Protocol::Kubernetes => validate_kubernetes_target(i, t),
    }
}

/// Checks a Kubernetes target's own keys: its name is the first segment
/// of the gateway URL clients use, the gateway needs a token of its own,
/// and that token only travels over verified TLS (plain HTTP only to a
/// loopback API server, as in tests).
fn validate_kubernetes_target(i: usize, t: &Target) -> Result<(), ConfigError> {
    let key = |k: &str| format!("targets[{i}].{k}");
    let segment_safe = t
        .name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    // The roots of the API itself: a request that forgot the prefix
    // (`kubectl get --raw /api/...`) must not reach a target by accident.
    const API_ROOTS: &[&str] = &[
        "api", "apis", "version", "openapi", "healthz", "livez", "readyz", "metrics", "logs",
    ];
    if API_ROOTS.contains(&t.name.as_str()) {
        return Err(invalid(
            key("name"),
            format!(
                "{:?} cannot be a Kubernetes target's name: it is a path of the Kubernetes API itself ({}), and the target's name is the first path segment of the gateway URL",
                t.name,
                API_ROOTS.join(", ")
            ),
        ));
    }
    if !segment_safe || t.name.starts_with('.') {
        return Err(invalid(
            key("name"),
            format!(
                "{:?} cannot be a Kubernetes target's name: it is the first path segment of the gateway URL kubectl uses (https://gateway:port/NAME), so use letters, digits, '-', '_' and '.' (not first)",
                t.name
            ),
        ));
    }
    validate_credential_source(i, t)?;
    let has_source = t.password_env.is_some()
        || t.password_file.is_some()
        || t.password_command.is_some()
        || t.oauth2.is_some()
        || t.azure_managed_identity.is_some();
    if !has_source {
        return Err(invalid(
            key("name"),
            "a Kubernetes target needs the gateway's own token for the API server: set one of password_file (e.g. a service account token), password_command, password_env, oauth2 or azure_managed_identity",
        ));
    }
    let loopback = t.host == "localhost"
        || t.host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    match t.tls {
        UpstreamTls::VerifyFull => Ok(()),
        UpstreamTls::Disable if loopback => Ok(()),
        UpstreamTls::Disable => Err(invalid(
            key("tls"),
            format!(
                "the gateway sends its own token to the API server, so a Kubernetes target needs tls = \"verify-full\" (with tls_ca_file naming the cluster's CA); plain HTTP is only allowed to a loopback address, and {:?} is not one",
                t.host
            ),
        )),
        UpstreamTls::Require => Err(invalid(
            key("tls"),
            "tls = \"require\" does not check the API server's certificate, and the gateway sends its own token there: use tls = \"verify-full\" with tls_ca_file naming the cluster's CA",
        )),
    }
}

/// Checks an SSH target's own keys.
fn validate_ssh_target(i: usize, t: &Target) -> Result<(), ConfigError> {
    let key = |k: &str| format!("targets[{i}].{k}");
    // The gateway's own credential upstream: a key, or a CA it signs
    // short-lived certificates with (clients never send theirs upstream).
    let (credential, credential_file) = match (&t.private_key_file, &t.upstream_ca_key_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                key("upstream_ca_key_file"),
                "set either private_key_file or upstream_ca_key_file, not both: the gateway logs in with one credential",
            ))
        }
        (None, Some(_)) => ("upstream_ca_key_file", &t.upstream_ca_key_file),
        _ => ("private_key_file", &t.private_key_file),
    };
    for (name, file, what) in [
        (
            credential,
            credential_file,
            "the gateway's own credential for the host: private_key_file (an OpenSSH private key the host's authorized_keys lists) or upstream_ca_key_file (a CA key the host trusts with TrustedUserCAKeys; the gateway signs a five-minute certificate per session)",
        ),
        (
            "known_hosts_file",
            &t.known_hosts_file,
            "a known_hosts file with the host's key (e.g. from ssh-keyscan, checked by hand): the gateway refuses a host whose key it cannot check",
        ),
    ] {
        match file {
            None => return Err(invalid(key(name), format!("an SSH target needs {what}"))),
            Some(f) if !std::path::Path::new(f).is_file() => {
                return Err(invalid(key(name), format!("file {f:?} does not exist")))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks a PostgreSQL target's own keys.
fn validate_postgres_target(i: usize, t: &Target) -> Result<(), ConfigError> {
    let key = |k: &str| format!("targets[{i}].{k}");
    if t.database.is_empty() {
        return Err(invalid(
            key("database"),
            "a PostgreSQL target needs the upstream database's name",
        ));
    }
    validate_credential_source(i, t)
}

/// Checks the gateway's own credential for a target (a password or a
/// token): at most one source, each usable, and the CA file of
/// `verify-full`.
fn validate_credential_source(i: usize, t: &Target) -> Result<(), ConfigError> {
    let key = |k: &str| format!("targets[{i}].{k}");
    let sources = [
        t.password_env.is_some(),
        t.password_file.is_some(),
        t.password_command.is_some(),
        t.oauth2.is_some(),
        t.azure_managed_identity.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err(invalid(
            key("name"),
            "set at most one of password_env, password_file, password_command, oauth2, azure_managed_identity",
        ));
    }
    if let Some(o) = &t.oauth2 {
        if !(o.token_url.starts_with("https://")
            || (o.token_url.starts_with("http://") && url_is_loopback(&o.token_url)))
        {
            return Err(invalid(
                format!("targets[{i}].oauth2.token_url"),
                format!("{:?} must be https (http only on loopback)", o.token_url),
            ));
        }
        if !std::path::Path::new(&o.client_secret_file).is_file() {
            return Err(invalid(
                format!("targets[{i}].oauth2.client_secret_file"),
                format!("file {:?} does not exist", o.client_secret_file),
            ));
        }
    }
    if let Some(a) = &t.azure_managed_identity {
        if !a.endpoint.starts_with("http://") && !a.endpoint.starts_with("https://") {
            return Err(invalid(
                format!("targets[{i}].azure_managed_identity.endpoint"),
                format!("{:?} is not an http(s) URL", a.endpoint),
            ));
        }
    }
    if t.tls_ca_file.is_some() && t.tls != UpstreamTls::VerifyFull {
        return Err(invalid(
            key("tls_ca_file"),
            "a CA file is only used with tls = \"verify-full\"",
        ));
    }
    if let Some(f) = &t.tls_ca_file {
        if !std::path::Path::new(f).is_file() {
            return Err(invalid(
                key("tls_ca_file"),
                format!("file {f:?} does not exist"),
            ));
        }
    }
    Ok(())
}

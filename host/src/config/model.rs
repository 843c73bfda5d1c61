//! The configuration schema, key by key. `docs/configuration.md` documents
//! the same keys; keep the two in step.

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Logging format and level.
    #[serde(default)]
    pub logging: Logging,
    /// Process-wide settings.
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// Addresses the gateway accepts PostgreSQL clients on.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// OIDC issuers whose tokens are accepted as passwords.
    #[serde(default)]
    pub identity_providers: Vec<IdentityProvider>,
    /// Upstream databases, selected by the client's `dbname`.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// WebAssembly policy plugins, referenced by targets' `plugins` lists.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// The audit store.
    #[serde(default)]
    pub store: StoreSettings,
    /// The admin API; off when absent.
    pub admin: Option<AdminSettings>,
    /// Who approves held statements, and where requests are announced.
    #[serde(default)]
    pub approvals: ApprovalSettings,
    /// The gateway as issuer of delegated tokens (token exchange); off when absent.
    pub delegation: Option<DelegationSettings>,
    /// The file this configuration was read from (set by `Config::load`).
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
}

/// `[admin]`: the admin API listener (health, metrics, sessions, audit,
/// plugins, approvals) that the `portcullis` CLI talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// `host:port` to bind; loopback unless you put TLS in front of it.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// Token groups whose members may use every endpoint.
    #[serde(default = "default_admin_groups")]
    pub admin_groups: Vec<String>,
    /// File holding a static admin token (a long random string), for
    /// scripts and the CLI where no OIDC token is at hand.
    pub token_file: Option<String>,
    /// Largest request body any endpoint reads, in bytes; a larger one is
    /// answered `413`.
    #[serde(default = "default_admin_max_body")]
    pub max_body_bytes: usize,
    /// Connections served at once; more get `503` and are closed.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers before the
    /// connection is closed.
    #[serde(default = "default_admin_header_timeout")]
    pub header_read_timeout_secs: u64,
}

fn default_admin_address() -> String {
    "127.0.0.1:9187".into()
}
fn default_admin_max_body() -> usize {
    1 << 20
}
fn default_admin_max_connections() -> usize {
    64
}
fn default_admin_header_timeout() -> u64 {
    10
}
fn default_admin_groups() -> Vec<String> {
    vec!["admins".into()]
}
fn default_approver_groups() -> Vec<String> {
    vec!["approvers".into()]
}

/// `[delegation]`: token exchange (RFC 8693) on the admin listener, so an
/// agent can mint a narrower token for a child agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationSettings {
    /// `iss` of the tokens the gateway mints (and accepts as its own).
    #[serde(default = "default_delegation_issuer")]
    pub issuer: String,
    /// `aud` of those tokens.
    #[serde(default = "default_delegation_audience")]
    pub audience: String,
    /// PEM file of the gateway's ES256 signing key; created (0600) when
    /// missing. Relative to the configuration file.
    #[serde(default = "default_signing_key_file")]
    pub key_file: String,
    /// Most hops from a principal's own token to a delegated one.
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
    /// Longest lifetime of a minted token, in seconds (it never outlives its parent).
    #[serde(default = "default_max_ttl")]
    pub max_ttl_secs: u64,
    /// At start-up, a signing key older than this many days is replaced; the
    /// previous key stays published until the next rotation.
    #[serde(default = "default_rotate_days")]
    pub rotate_days: u64,
}

fn default_rotate_days() -> u64 {
    30
}

fn default_delegation_issuer() -> String {
    "urn:portcullis:gateway".into()
}
fn default_delegation_audience() -> String {
    "portcullis".into()
}
fn default_signing_key_file() -> String {
    "portcullis-data/signing-key.pem".into()
}
fn default_max_depth() -> u32 {
    3
}
fn default_max_ttl() -> u64 {
    3600
}

/// `[approvals]`: approvers and notifications of approval requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSettings {
    /// Token groups whose members decide approval requests (and may read
    /// sessions through the admin API). Nobody decides their own request.
    #[serde(default = "default_approver_groups")]
    pub approver_groups: Vec<String>,
    /// URL that gets a JSON POST for every new request (and decision).
    pub webhook_url: Option<String>,
    /// `json` (the request as JSON) or `slack` (a Slack-compatible `text`).
    #[serde(default)]
    pub webhook_format: WebhookFormat,
    /// Rules whose requests an agent may decide (a token with an actor
    /// chain, acting for an approver); `"*"` for every rule. Empty (the
    /// default): only a person's own token decides.
    #[serde(default)]
    pub agents_may_decide: Vec<String>,
    /// Approval requests one person may have pending at once; beyond it a
    /// held statement is refused at once (a retry-mode statement that
    /// repeats a pending request is that request, and does not count twice).
    #[serde(default = "default_max_pending_per_user")]
    pub max_pending_per_user: usize,
    /// New approval requests one person may make per minute (asking and
    /// withdrawing in a loop would otherwise flood approvers and webhooks).
    #[serde(default = "default_max_requests_per_minute")]
    pub max_requests_per_minute: u32,
}

fn default_max_requests_per_minute() -> u32 {
    30
}

fn default_max_pending_per_user() -> usize {
    20
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            approver_groups: default_approver_groups(),
            webhook_url: None,
            webhook_format: WebhookFormat::default(),
            agents_may_decide: Vec::new(),
            max_pending_per_user: default_max_pending_per_user(),
            max_requests_per_minute: default_max_requests_per_minute(),
        }
    }
}

impl ApprovalSettings {
    /// Whether an agent may decide a request made under `rule` (several
    /// rules joined by `", "` when several plugins asked: each must allow it).
    pub fn agents_may_decide(&self, rule: Option<&str>) -> bool {
        let allowed = |r: &str| self.agents_may_decide.iter().any(|a| a == "*" || a == r);
        match rule {
            Some(rules) => rules.split(", ").all(allowed),
            None => self.agents_may_decide.iter().any(|a| a == "*"),
        }
    }
}

/// Payload of approval webhooks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"event": "...", "approval": {...}, "command": "..."}`.
    #[default]
    Json,
    /// `{"text": "..."}` for Slack incoming webhooks and compatible chats.
    Slack,
}

/// `[store]`: where sessions, statement events and approvals are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// SQLite file (created with its directory if missing); relative paths
    /// are relative to the configuration file.
    #[serde(default = "default_store_path")]
    pub path: String,
    /// Longest time a `batched` record waits before it is committed, in ms.
    #[serde(default = "default_flush_interval")]
    pub flush_interval_ms: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            flush_interval_ms: default_flush_interval(),
        }
    }
}

fn default_store_path() -> String {
    "portcullis-data/audit.db".into()
}
fn default_flush_interval() -> u64 {
    100
}

/// When a recorded statement's audit record is committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Group commit within the flush interval; nothing lost on a clean stop.
    #[default]
    Batched,
    /// Committed before the statement is forwarded; refused if that fails.
    Strict,
}

/// `[[plugins]]`: one WebAssembly policy plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Name targets refer to.
    pub name: String,
    /// Path of the component (`.wasm`).
    pub path: String,
    /// Expected SHA-256 of the file (hex); a file that differs is refused.
    pub sha256: Option<String>,
    /// What happens when the plugin fails (trap, timeout, out of memory).
    #[serde(default)]
    pub failure: FailurePolicy,
    /// Deadline of one call into the plugin, in milliseconds.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_ms: u64,
    /// Memory cap of one instance, in MiB.
    #[serde(default = "default_memory_limit")]
    pub memory_limit_mib: usize,
    /// The plugin's own configuration, passed to it as JSON.
    #[serde(default = "empty_table")]
    pub config: toml::Value,
}

fn default_call_timeout() -> u64 {
    10
}
fn default_memory_limit() -> usize {
    32
}
fn empty_table() -> toml::Value {
    toml::Value::Table(Default::default())
}

/// What a plugin failure means for the event it was deciding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Refuse the statement (and NULL the rows) — the safe default.
    #[default]
    FailClosed,
    /// Let it through as if the plugin had allowed it.
    FailOpen,
}

/// `[gateway]`: process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// On SIGTERM/Ctrl-C: seconds to let sessions finish before they are
    /// closed with `FATAL 57P01`.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Seconds between checks of the configuration and plugin files for
    /// changes (a change reloads the plugins, like SIGHUP); 0 turns it off.
    #[serde(default = "default_watch_interval")]
    pub watch_interval_secs: u64,
    /// Bytes all sessions together may hold for client messages that are
    /// still arriving and larger than one read (a `Query` or `Parse` is held
    /// whole before the policy sees it). A client whose message would take
    /// the total over it gets `FATAL 53200` and its session ends.
    #[serde(default = "default_buffered_message_budget")]
    pub buffered_message_budget_bytes: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            shutdown_grace_secs: default_shutdown_grace(),
            watch_interval_secs: default_watch_interval(),
            buffered_message_budget_bytes: default_buffered_message_budget(),
        }
    }
}

/// Default for `buffered_message_budget_bytes`: 1 GiB, so one message of
/// the default `max_message_bytes` still fits.
pub fn default_buffered_message_budget() -> usize {
    1 << 30
}

/// Least `buffered_message_budget_bytes` accepted.
pub const MIN_BUFFERED_MESSAGE_BUDGET: usize = 1 << 20;

fn default_watch_interval() -> u64 {
    2
}

fn default_shutdown_grace() -> u64 {
    30
}

/// `[logging]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `portcullis=debug` (default `info`).
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[[listeners]]`: one address clients connect to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// The protocol it serves (`postgres` when absent).
    #[serde(default)]
    pub protocol: Protocol,
    /// `host:port` to bind, e.g. `0.0.0.0:6432`.
    pub address: String,
    /// PEM certificate chain for client TLS.
    pub tls_cert_file: Option<String>,
    /// PEM private key for client TLS.
    pub tls_key_file: Option<String>,
    /// Allow clients without TLS — only when `address` is a loopback address.
    #[serde(default)]
    pub plaintext_loopback_dev: bool,
    /// Clients served at once; more are refused with SQLSTATE 53300.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Seconds a client has to finish TLS and authentication.
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout_secs: u64,
    /// Largest protocol message accepted in either direction, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// SSH: the gateway's host key (an OpenSSH private key file).
    pub host_key_file: Option<String>,
    /// SSH: the gateway's user CA key (an OpenSSH private key file): it
    /// signs the certificates `portcullis ssh login` gets, and logins with
    /// them are accepted here. Without it, the token is the only
    /// credential.
    pub user_ca_key_file: Option<String>,
}

fn default_max_clients() -> usize {
    10_000
}
fn default_startup_timeout() -> u64 {
    15
}
/// Default for `max_message_bytes`: PostgreSQL's own 1 GiB field limit.
pub fn default_max_message_bytes() -> usize {
    1 << 30
}

/// `[[identity_providers]]`: one OIDC issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProvider {
    /// Short name used in logs and errors.
    pub name: String,
    /// Exact `iss` value of its tokens; `https://` (see `insecure_loopback_issuer`).
    pub issuer: String,
    /// Accepted `aud` values (a string or a list).
    pub audience: OneOrMany,
    /// JWKS URL; when absent it is found by OIDC discovery from the issuer.
    pub jwks_uri: Option<String>,
    /// Accepted signature algorithms (default RS256, ES256, PS256).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Claim that names the user, compared with the startup `user`.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Claim that lists the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Allow an `http://` issuer on a loopback address (local test issuers).
    #[serde(default)]
    pub insecure_loopback_issuer: bool,
    /// Refuse tokens without an `iat` (issued-at) claim, as RFC 9068
    /// access tokens always carry one (on by default).
    #[serde(default = "default_true")]
    pub require_iat: bool,
    /// File with a shared secret for HS256/384/512 (providers without JWKS only).
    pub hmac_secret_file: Option<String>,
    /// Least seconds between two JWKS fetch attempts (unknown key ids,
    /// stale keys or a failing issuer alike).
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_secs: u64,
    /// Seconds after which cached keys are fetched again even if known.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age_secs: u64,
    /// Seconds after which cached keys are no longer trusted at all while
    /// the issuer does not answer: logins are refused until a fetch works
    /// (so blocking the issuer cannot keep a withdrawn key valid for ever).
    #[serde(default = "default_jwks_max_stale")]
    pub jwks_max_stale_secs: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "PS256".into()]
}
fn default_user_claim() -> String {
    "preferred_username".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_leeway() -> u64 {
    60
}
fn default_jwks_min_refresh() -> u64 {
    10
}
fn default_true() -> bool {
    true
}
fn default_jwks_max_stale() -> u64 {
    86_400
}
fn default_jwks_max_age() -> u64 {
    900
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a slice.
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// `[[targets]]`: one upstream database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The protocol the target speaks (`postgres` when absent); which keys
    /// belong to which protocol is in [`super::keys::TARGET_KEYS`].
    #[serde(default)]
    pub protocol: Protocol,
    /// What clients put in `dbname` (PostgreSQL) or as the login name
    /// (SSH: `ssh NAME@gateway`).
    pub name: String,
    /// Upstream host name or address.
    pub host: String,
    /// Upstream port (default: 5432 for PostgreSQL, 22 for SSH, 6443 for
    /// a Kubernetes API server); see
    /// [`Target::port`].
    #[serde(rename = "port")]
    pub configured_port: Option<u16>,
    /// Upstream database name (PostgreSQL; required there).
    #[serde(default)]
    pub database: String,
    /// Upstream role (PostgreSQL) or account (SSH) the gateway logs in as
    /// (required there; a Kubernetes target has none: the gateway calls
    /// its API server with a token and impersonates the person).
    #[serde(default)]
    pub user: String,
    /// SSH: the OpenSSH private key the gateway logs in to the host with
    /// (its own credential, never the client's).
    pub private_key_file: Option<String>,
    /// SSH: the known_hosts file that pins the host's key; an unknown or
    /// changed key refuses the session.
    pub known_hosts_file: Option<String>,
    /// SSH: a CA key the host trusts (`TrustedUserCAKeys`); the gateway
    /// then logs in with a certificate it signs per session — valid five
    /// minutes, its key id naming the person — instead of a private key.
    pub upstream_ca_key_file: Option<String>,
    /// SSH and Kubernetes: how much of each exec and shell channel's (SSH)
    /// or exec and attach stream's (Kubernetes) terminal data (output and
    /// input) is recorded as asciicast, in MiB; `0` records none (commands
    /// are recorded either way).
    #[serde(default = "default_recording_limit_mib")]
    pub recording_limit_mib: u64,
    /// SSH: whether clients may forward local ports through the host
    /// (`ssh -L`, `ssh -W`); each forward is judged by the plugins and
    /// recorded. Remote forwards (`-R`), agent and X11 forwarding are
    /// never relayed.
    #[serde(default)]
    pub local_forwarding: bool,
    /// Environment variable holding the upstream password.
    pub password_env: Option<String>,
    /// File holding the upstream password (read at every upstream login).
    pub password_file: Option<String>,
    /// Shell command whose standard output is the password or token (e.g. `az
    /// account get-access-token ... -o tsv`).
    pub password_command: Option<String>,
    /// OAuth2 client-credentials grant whose access token is the password.
    pub oauth2: Option<OAuth2Source>,
    /// Azure managed identity token (Azure Database for PostgreSQL, Entra ID).
    pub azure_managed_identity: Option<AzureManagedIdentity>,
    /// Seconds a `password_command` result is reused when it is not a JWT
    /// with an `exp` claim (JWTs are reused until shortly before they expire).
    #[serde(default = "default_token_cache")]
    pub token_cache_secs: u64,
    /// Upstream TLS: `disable`, `require` or `verify-full`.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// PEM CA bundle for `verify-full` (default: the system's roots).
    pub tls_ca_file: Option<String>,
    /// Groups whose members may use this target.
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// Users (by user claim) who may use this target.
    #[serde(default)]
    pub allow_users: Vec<String>,
    /// Seconds to wait for the upstream connection and login.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Plugin chain, in order (names of `[[plugins]]`).
    #[serde(default)]
    pub plugins: Vec<String>,
    /// When recorded statements' audit records are committed.
    #[serde(default)]
    pub durability: Durability,
    /// `[[targets.roles]]`: upstream roles by group. A session runs as the
    /// role of the first entry that names one of the identity's groups,
    /// set at upstream login, and may not switch away from it.
    #[serde(default)]
    pub roles: Vec<RoleMapping>,
    /// Upstream role for identities no `roles` entry names (none: the
    /// gateway's own login role).
    pub default_role: Option<String>,
}

/// `[[targets.roles]]`: the upstream role for members of some groups.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    /// Groups (any of them) whose members run as `role`.
    pub groups: Vec<String>,
    /// The PostgreSQL role (the gateway's login role must be a member).
    pub role: String,
}

impl Target {
    /// The upstream port: as configured, or the protocol's own.
    pub fn port(&self) -> u16 {
        self.configured_port.unwrap_or(match self.protocol {
            Protocol::Postgres => 5432,
            Protocol::Ssh => 22,
            Protocol::Kubernetes => 6443,
        })
    }

    /// The upstream role a session of an identity with `groups` runs as,
    /// if the target maps one.
    pub fn upstream_role(&self, groups: &[String]) -> Option<&str> {
        self.roles
            .iter()
            .find(|m| m.groups.iter().any(|g| groups.contains(g)))
            .map(|m| m.role.as_str())
            .or(self.default_role.as_deref())
    }
}

fn default_token_cache() -> u64 {
    300
}

/// `[targets.oauth2]`: an OAuth2 client-credentials grant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Source {
    /// Token endpoint (`https://`, or `http://` on loopback).
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// File holding the client secret.
    pub client_secret_file: String,
    /// Requested scope, if the provider needs one.
    pub scope: Option<String>,
}

/// `[targets.azure_managed_identity]`: a token from the Azure instance
/// metadata service, as Azure Database for PostgreSQL accepts with Entra ID.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureManagedIdentity {
    /// Resource the token is for.
    #[serde(default = "default_azure_resource")]
    pub resource: String,
    /// Client id of a user-assigned identity (system-assigned when absent).
    pub client_id: Option<String>,
    /// Metadata endpoint (configurable so tests can use a local fake).
    #[serde(default = "default_azure_endpoint")]
    pub endpoint: String,
}

fn default_azure_resource() -> String {
    "https://ossrdbms-aad.database.windows.net".into()
}
fn default_azure_endpoint() -> String {
    "http://169.254.169.254/metadata/identity/oauth2/token".into()
}

fn default_connect_timeout() -> u64 {
    10
}

impl Target {
    /// How the upstream credential is supplied, for summaries (never the secret).
    pub fn credential_summary(&self) -> String {
        if let Some(e) = &self.password_env {
            format!("password from ${e}")
        } else if let Some(f) = &self.password_file {
            format!("password from file {f}")
        } else if self.password_command.is_some() {
            "password from a command".into()
        } else if let Some(o) = &self.oauth2 {
            format!("OAuth2 client credentials at {}", o.token_url)
        } else if self.azure_managed_identity.is_some() {
            "Azure managed identity token".into()
        } else {
            "no password (trust)".into()
        }
    }
}

/// A protocol the gateway serves. New protocols add a variant here and a
/// room of their own in the gateway; the shared keys (identity, targets'
/// names, audiences, plugin chains, durability) stay as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// PostgreSQL's wire protocol (version 3).
    #[default]
    Postgres,
    /// SSH (version 2): shells, commands and subsystems on hosts.
    Ssh,
    /// The Kubernetes API (HTTPS): `kubectl` and client libraries.
    Kubernetes,
}

impl Protocol {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Ssh => "ssh",
            Protocol::Kubernetes => "kubernetes",
        }
    }

    /// The protocol a configuration spells `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Protocol::Postgres, Protocol::Ssh, Protocol::Kubernetes]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

/// Upstream TLS mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS without certificate verification (encryption only).
    Require,
    /// TLS with certificate and host name verification.
    VerifyFull,
}

impl UpstreamTls {
    /// The spelling used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamTls::Disable => "disable",
            UpstreamTls::Require => "require",
            UpstreamTls::VerifyFull => "verify-full",
        }
    }
}

/// The default [`Target::recording_limit_mib`].
fn default_recording_limit_mib() -> u64 {
    64
}

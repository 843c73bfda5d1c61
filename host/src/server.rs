//! Binds the configured listeners and runs the accept loops: connection
//! limits, per-connection tasks, and the shared [`GatewayContext`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::{Config, Protocol};
use crate::http_client::HttpClient;
use crate::identity::Authenticator;
use crate::policy::Policy;
use crate::protocols::postgres::cancel::CancelRegistry;
use crate::protocols::postgres::{session, GatewayContext, ListenerContext, TargetContext};
use crate::tls;

/// Connections over a listener's limit that are refused with a proper error
/// at the same time; more are closed at once.
const MAX_CONCURRENT_REFUSALS: usize = 64;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// Configured address.
        address: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TLS material could not be loaded.
    #[error("listener {address}: {source}")]
    Tls {
        /// Configured address.
        address: String,
        /// Cause.
        source: tls::TlsError,
    },
    /// Upstream TLS for a target could not be set up.
    #[error("target {target}: {source}")]
    TargetTls {
        /// Target name.
        target: String,
        /// Cause.
        source: tls::TlsError,
    },
    /// A plugin was refused.
    #[error("{0}")]
    Plugin(#[from] crate::plugins::PluginError),
    /// Identity providers could not be set up.
    #[error("identity providers: {0}")]
    Identity(String),
    /// The audit store could not be opened.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The delegation signing key could not be loaded.
    #[error("{0}")]
    Delegation(#[from] crate::delegation::DelegationError),
    /// An SSH listener's or target's key could not be loaded.
    #[error("{0}")]
    Ssh(#[from] crate::protocols::ssh::SshSetupError),
    /// An SSH listener's user CA key could not be loaded.
    #[error("{0}")]
    SshCa(#[from] crate::protocols::ssh::certs::CertError),
    /// A Kubernetes target's API server client could not be set up.
    #[error("target {target:?}: {message}")]
    Kubernetes {
        /// The target.
        target: String,
        /// What is wrong.
        message: String,
    },
}

/// A started gateway; dropping it stops accepting new connections.
pub struct RunningGateway {
    /// The bound address of each listener, in configuration order.
    pub addresses: Vec<SocketAddr>,
    /// The admin API's address, when `[admin]` is configured.
    pub admin_address: Option<SocketAddr>,
    /// Shared state (cancel registry, targets, ...).
    pub context: Arc<GatewayContext>,
    /// The loaded plugins and how to reload them.
    pub plugins: Arc<PluginManager>,
    accept_loops: Vec<JoinHandle<()>>,
    closing: tokio::sync::watch::Sender<bool>,
}

/// A plugin as loaded, for `/v1/plugins`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PluginInfo {
    /// Configured name.
    pub name: String,
    /// Version the plugin declares.
    pub version: String,
    /// SHA-256 of its file.
    pub sha256: String,
    /// Its file.
    pub path: String,
    /// When this version was loaded (unix microseconds).
    pub loaded_at: i64,
}

/// The plugins every target runs, and their reloading (SIGHUP, file
/// changes, the admin API).
pub struct PluginManager {
    context: Arc<GatewayContext>,
    ssh: Arc<HashMap<String, crate::protocols::ssh::SshTarget>>,
    kube: Arc<HashMap<String, crate::protocols::kubernetes::KubeTarget>>,
    runtime: std::sync::Mutex<Option<Arc<crate::plugins::PluginRuntime>>>,
    default_policy: Arc<dyn Policy>,
    loaded: std::sync::Mutex<Vec<PluginInfo>>,
    config_path: Option<std::path::PathBuf>,
}

impl PluginManager {
    /// Loads the plugins of `config` again and gives every target its new
    /// chain: new sessions use the new versions, sessions in flight finish on
    /// the ones they started with. If any plugin fails to load (file, pin,
    /// contract, configuration), nothing changes and the old versions keep
    /// serving. Only plugins and plugin chains are reloaded; other changes
    /// need a restart. Returns the number of plugins loaded.
    pub fn reload(&self, config: &Config) -> Result<usize, StartError> {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let (policies, loaded) = target_policies(config, &mut runtime, &self.default_policy)?;
        self.loaded_now(&loaded);
        for (name, policy) in policies {
            if let Some(ctx) = self.context.targets.get(&name) {
                *ctx.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
            } else if let Some(t) = self.ssh.get(&name) {
                t.policy.replace(policy);
            } else if let Some(t) = self.kube.get(&name) {
                t.policy.replace(policy);
            } else {
                tracing::warn!(target = %name, "new target ignored on reload; restart to add targets");
            }
        }
        Ok(loaded.len())
    }

    /// Reads the configuration file the gateway started from and reloads
    /// its plugins (what the admin API's reload does).
    pub fn reload_from_file(&self) -> Result<usize, String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or("this gateway was not started from a configuration file")?;
        let config = Config::load(path).map_err(|e| e.to_string())?;
        self.reload(&config).map_err(|e| e.to_string())
    }

    /// The plugins loaded now.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Remembers (and records in the audit store) a freshly loaded set.
    fn loaded_now(&self, loaded: &[Arc<crate::plugins::LoadedPlugin>]) {
        let at = crate::store::now_micros();
        let infos: Vec<PluginInfo> = loaded
            .iter()
            .map(|p| PluginInfo {
                name: p.name.to_string(),
                version: p.version.clone(),
                sha256: p.sha256.clone(),
                path: p.path.clone(),
                loaded_at: at,
            })
            .collect();
        let records = infos
            .iter()
            .map(|p| {
                crate::store::Record::PluginLoad(crate::store::PluginLoadRecord {
                    at,
                    name: p.name.clone(),
                    version: p.version.clone(),
                    sha256: p.sha256.clone(),
                })
            })
            .collect::<Vec<_>>();
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = infos;
        let audit = self.context.core.audit.clone();
        tokio::spawn(async move {
            for r in records {
                audit.record(r).await;
            }
        });
    }
}

impl RunningGateway {
    /// Reloads the plugins of `config`; see [`PluginManager::reload`].
    pub fn reload_plugins(&self, config: &Config) -> Result<usize, StartError> {
        self.plugins.reload(config)
    }

    /// Connections being served right now.
    pub fn active_connections(&self) -> usize {
        self.context
            .core
            .active
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops accepting, lets sessions finish for up to `grace`, then closes
    /// the rest with `FATAL 57P01` and waits briefly for them to go.
    pub async fn shutdown(&self, grace: Duration) {
        for h in &self.accept_loops {
            h.abort();
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.active_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let remaining = self.active_connections();
        if remaining > 0 {
            tracing::info!(sessions = remaining, "grace period over; closing sessions");
        }
        let _ = self.closing.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.active_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Nothing recorded is lost on a clean stop.
        if tokio::time::timeout(Duration::from_secs(30), self.context.core.audit.flush())
            .await
            .is_err()
        {
            tracing::error!("audit records could not be committed before shutdown");
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        for h in &self.accept_loops {
            h.abort();
        }
    }
}

/// Builds the shared context and binds every listener.
pub async fn start(config: &Config, policy: Arc<dyn Policy>) -> Result<RunningGateway, StartError> {
    let http = HttpClient::new(Duration::from_secs(10))
        .map_err(|e| StartError::Identity(e.to_string()))?;
    let delegation = match &config.delegation {
        Some(d) => Some(Arc::new(crate::delegation::GatewayIssuer::load(d)?)),
        None => None,
    };
    let authenticator = Authenticator::with_own_issuer(
        &config.identity_providers,
        http.clone(),
        delegation.as_ref().map(|d| d.provider()),
    )
    .map_err(|e| StartError::Identity(e.to_string()))?;
    let mut runtime = None;
    let (mut policies, loaded) = target_policies(config, &mut runtime, &policy)?;
    let mut targets = HashMap::new();
    let mut ssh_targets = HashMap::new();
    let mut kube_targets = HashMap::new();
    for t in &config.targets {
        let target_policy = policies.remove(&t.name).unwrap_or_else(|| policy.clone());
        if t.protocol == Protocol::Kubernetes {
            let target =
                crate::protocols::kubernetes::KubeTarget::load(t, target_policy, http.clone())
                    .map_err(|e| StartError::Kubernetes {
                        target: t.name.clone(),
                        message: e.to_string(),
                    })?;
            kube_targets.insert(t.name.clone(), target);
            continue;
        }
        if t.protocol == Protocol::Ssh {
            let target = crate::protocols::ssh::SshTarget::load(t, target_policy)?;
            ssh_targets.insert(t.name.clone(), target);
            continue;
        }
        let tls = tls::upstream_config(t.tls, t.tls_ca_file.as_deref().map(Path::new)).map_err(
            |source| StartError::TargetTls {
                target: t.name.clone(),
                source,
            },
        )?;
        let credential = crate::credentials::CredentialProvider::new(t, http.clone());
        targets.insert(
            t.name.clone(),
            TargetContext {
                cfg: t.clone(),
                tls,
                credential,
                policy: std::sync::RwLock::new(target_policy),
                catalog: Default::default(),
                code: Default::default(),
            },
        );
    }
    let store_path = Path::new(&config.store.path);
    // Opening is quick (start-up only), so it runs on this thread.
    let store = crate::store::sqlite::SqliteStore::open(store_path)?;
    tracing::info!(path = %store_path.display(), "audit store open");
    let store: Arc<dyn crate::store::Store> = Arc::new(store);
    let audit = crate::audit::AuditLog::start(
        store.clone(),
        Duration::from_millis(config.store.flush_interval_ms),
    );
    let revocations = Arc::new(crate::delegation::revocations::Revocations::load(
        store.clone(),
    )?);
    let approvals = Arc::new(crate::approvals::Approvals::new(
        store,
        config.approvals.clone(),
        http.clone(),
    ));
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let core = Arc::new(crate::gateway::Core {
        authenticator: authenticator.clone(),
        targets: targets
            .iter()
            .map(|(name, t)| (name.clone(), t.cfg.clone()))
            .collect(),
        audit: audit.clone(),
        approvals,
        delegation,
        revocations,
        active: std::sync::atomic::AtomicUsize::new(0),
        closing: closing_rx,
        listening: std::sync::OnceLock::new(),
    });
    let context = Arc::new(GatewayContext {
        core: core.clone(),
        targets,
        cancels: CancelRegistry::default(),
        message_budget: Arc::new(crate::protocols::postgres::budget::MessageBudget::new(
            config.gateway.buffered_message_budget_bytes,
        )),
    });
    let ssh = Arc::new(ssh_targets);
    let kube = Arc::new(kube_targets);
    let plugins = Arc::new(PluginManager {
        context: context.clone(),
        ssh: ssh.clone(),
        kube: kube.clone(),
        runtime: std::sync::Mutex::new(runtime),
        default_policy: policy,
        loaded: Default::default(),
        config_path: config.source.clone(),
    });
    plugins.loaded_now(&loaded);
    let mut accept_loops = Vec::new();
    // `portcullis ssh login` certificates come from the first SSH
    // listener's user CA.
    let first_ca_file = config
        .listeners
        .iter()
        .filter(|l| l.protocol == Protocol::Ssh)
        .find_map(|l| l.user_ca_key_file.as_ref());
    let ssh_login = match first_ca_file {
        Some(f) => Some(Arc::new(crate::protocols::ssh::certs::SshLogin::new(
            Arc::new(crate::protocols::ssh::certs::UserCa::load(Path::new(f))?),
        ))),
        None => None,
    };
    if let Some(login) = &ssh_login {
        let user_ca = login.ca.public_key();
        for t in ssh.values() {
            if t.upstream_ca_public().is_some_and(|k| k == user_ca) {
                return Err(
                    crate::protocols::ssh::certs::CertError::SharedCa(t.cfg.name.clone()).into(),
                );
            }
        }
    }
    let admin_address = match &config.admin {
        Some(settings) => {
            let (address, handle) =
                crate::admin::start(settings, core.clone(), plugins.clone(), ssh_login.clone())
                    .await
                    .map_err(|source| StartError::Bind {
                        address: settings.address.clone(),
                        source,
                    })?;
            accept_loops.push(handle);
            Some(address)
        }
        None => None,
    };
    let mut addresses = Vec::new();
    for l in &config.listeners {
        if l.protocol == Protocol::Ssh {
            let ca = match (&l.user_ca_key_file, &ssh_login) {
                (Some(f), Some(login)) if Some(f) == first_ca_file => Some(login.ca.clone()),
                (Some(f), _) => Some(Arc::new(crate::protocols::ssh::certs::UserCa::load(
                    Path::new(f),
                )?)),
                (None, _) => None,
            };
            let (local, task, host_key) = start_ssh_listener(l, &core, &ssh, ca).await?;
            if let (Some(login), Some(f)) = (&ssh_login, &l.user_ca_key_file) {
                if Some(f) == first_ca_file {
                    login.add_listener(crate::protocols::ssh::certs::ListenerInfo {
                        address: local.to_string(),
                        host_key,
                    });
                }
            }
            addresses.push(local);
            accept_loops.push(task);
            continue;
        }
        if l.protocol == Protocol::Kubernetes {
            let (local, task) = start_kube_listener(l, &core, &kube).await?;
            addresses.push(local);
            accept_loops.push(task);
            continue;
        }
        let tls = match (&l.tls_cert_file, &l.tls_key_file) {
            (Some(c), Some(k)) => Some(tokio_rustls::TlsAcceptor::from(
                tls::server_config(Path::new(c), Path::new(k)).map_err(|source| {
                    StartError::Tls {
                        address: l.address.clone(),
                        source,
                    }
                })?,
            )),
            _ => None,
        };
        let (listener, local) = bind(&l.address).await?;
        let lc = Arc::new(ListenerContext {
            tls,
            plaintext_allowed: l.plaintext_loopback_dev,
            max_message: l.max_message_bytes,
            startup_timeout: Duration::from_secs(l.startup_timeout_secs),
        });
        let limit = Arc::new(Semaphore::new(l.max_clients));
        tracing::info!(address = %local, tls = lc.tls.is_some(), "listening");
        addresses.push(local);
        accept_loops.push(tokio::spawn(accept_loop(
            listener,
            lc,
            context.clone(),
            limit,
        )));
    }
    let _ = core
        .listening
        .set(addresses.iter().copied().chain(admin_address).collect());
    tokio::spawn(async move { authenticator.prefetch().await });
    Ok(RunningGateway {
        addresses,
        admin_address,
        context,
        plugins,
        accept_loops,
        closing: closing_tx,
    })
}

/// Binds a listener's address; the address it got (port 0 picks one).
async fn bind(address: &str) -> Result<(TcpListener, SocketAddr), StartError> {
    let bound = async {
        let listener = TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        Ok::<_, std::io::Error>((listener, local))
    };
    bound.await.map_err(|source| StartError::Bind {
        address: address.to_string(),
        source,
    })
}

/// Binds an SSH listener and starts accepting on it.
async fn start_ssh_listener(
    l: &crate::config::Listener,
    core: &Arc<crate::gateway::Core>,
    targets: &Arc<HashMap<String, crate::protocols::ssh::SshTarget>>,
    user_ca: Option<Arc<crate::protocols::ssh::certs::UserCa>>,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>, String), StartError> {
    use crate::protocols::ssh;
    let server = ssh::server_config(l, user_ca.is_some())?;
    let host_key = server
        .keys
        .first()
        .and_then(|k| k.public_key().to_openssh().ok())
        .unwrap_or_default();
    let (listener, local) = bind(&l.address).await?;
    let ctx = Arc::new(ssh::SshContext {
        core: core.clone(),
        targets: targets.clone(),
        server: Arc::new(server),
        user_ca,
    });
    tracing::info!(address = %local, protocol = "ssh", "listening");
    let task = tokio::spawn(ssh::accept_loop(
        listener,
        ctx,
        Arc::new(Semaphore::new(l.max_clients)),
        Duration::from_secs(l.startup_timeout_secs),
    ));
    Ok((local, task, host_key))
}

/// Binds a Kubernetes listener (TLS offering HTTP/2 and HTTP/1.1, or plain
/// HTTP on a loopback development listener) and starts accepting on it.
async fn start_kube_listener(
    l: &crate::config::Listener,
    core: &Arc<crate::gateway::Core>,
    targets: &Arc<HashMap<String, crate::protocols::kubernetes::KubeTarget>>,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), StartError> {
    use crate::protocols::kubernetes;
    let tls = match (&l.tls_cert_file, &l.tls_key_file) {
        (Some(c), Some(k)) => Some(tokio_rustls::TlsAcceptor::from(
            tls::server_config_for(Path::new(c), Path::new(k), &[b"h2", b"http/1.1"]).map_err(
                |source| StartError::Tls {
                    address: l.address.clone(),
                    source,
                },
            )?,
        )),
        _ => None,
    };
    let (listener, local) = bind(&l.address).await?;
    tracing::info!(address = %local, protocol = "kubernetes", tls = tls.is_some(), "listening");
    let ctx = Arc::new(kubernetes::KubeContext {
        core: core.clone(),
        targets: targets.clone(),
        tls,
        startup: Duration::from_secs(l.startup_timeout_secs),
    });
    let task = tokio::spawn(kubernetes::accept_loop(
        listener,
        ctx,
        Arc::new(Semaphore::new(l.max_clients)),
    ));
    Ok((local, task))
}

async fn accept_loop(
    listener: TcpListener,
    lc: Arc<ListenerContext>,
    gw: Arc<GatewayContext>,
    limit: Arc<Semaphore>,
) {
    let rejecting = Arc::new(Semaphore::new(MAX_CONCURRENT_REFUSALS));
    loop {
        let (tcp, peer) = crate::gateway::core::accept(&listener).await;
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let (lc, gw) = (lc.clone(), gw.clone());
                tokio::spawn(async move {
                    session::serve(tcp, peer, lc, gw).await;
                    drop(permit);
                });
            }
            Err(_) => {
                // Over the limit: a bounded number of refusals are served
                // properly (TLS, then FATAL 53300); beyond that, just close.
                match rejecting.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tracing::warn!(%peer, "too many clients; connection refused");
                        let (lc, gw) = (lc.clone(), gw.clone());
                        tokio::spawn(async move {
                            session::refuse_too_many(tcp, lc, gw).await;
                            drop(permit);
                        });
                    }
                    Err(_) => drop(tcp),
                }
            }
        }
    }
}

/// Each target's policy, by target name.
type TargetPolicies = HashMap<String, Arc<dyn Policy>>;

/// Loads every configured plugin (creating the engine on first need) and
/// returns each target's policy — its plugin chain, or `default` — and the
/// plugins loaded. Any plugin that fails refuses the whole set.
fn target_policies(
    config: &Config,
    runtime: &mut Option<Arc<crate::plugins::PluginRuntime>>,
    default: &Arc<dyn Policy>,
) -> Result<(TargetPolicies, Vec<Arc<crate::plugins::LoadedPlugin>>), StartError> {
    if runtime.is_none() && !config.plugins.is_empty() {
        *runtime = Some(Arc::new(crate::plugins::PluginRuntime::new(
            crate::plugins::PoolSize::default(),
            crate::plugins::default_cache_dir(),
        )?));
    }
    let mut loaded = HashMap::new();
    if let Some(rt) = runtime.as_ref() {
        for p in &config.plugins {
            let plugin = rt.load(p)?;
            tracing::info!(plugin = %p.name, version = %plugin.version, sha256 = %plugin.sha256, "plugin loaded");
            loaded.insert(p.name.clone(), plugin);
        }
    }
    for t in config
        .targets
        .iter()
        .filter(|t| t.protocol == Protocol::Ssh)
    {
        if let Some(p) = t
            .plugins
            .iter()
            .filter_map(|n| loaded.get(n))
            .find(|p| !p.guards_ssh())
        {
            return Err(crate::plugins::PluginError::Config {
                name: p.name.to_string(),
                message: format!(
                    "target {:?} is an SSH target, but this plugin has no SSH hooks (it was built for contract 0.2.5 or older, without `ssh-plugin`): rebuild it with the current SDK, or remove it from the target's plugins",
                    t.name
                ),
            }
            .into());
        }
    }
    for t in config
        .targets
        .iter()
        .filter(|t| t.protocol == Protocol::Kubernetes)
    {
        if let Some(p) = t
            .plugins
            .iter()
            .filter_map(|n| loaded.get(n))
            .find(|p| !p.guards_http())
        {
            return Err(crate::plugins::PluginError::Config {
                name: p.name.to_string(),
                message: format!(
                    "target {:?} is a Kubernetes target, but this plugin has no HTTP hooks (it was built for contract 0.2.7 or older, without `http-plugin`): rebuild it with the current SDK, or remove it from the target's plugins",
                    t.name
                ),
            }
            .into());
        }
    }
    let policies = config
        .targets
        .iter()
        .map(|t| {
            let policy: Arc<dyn Policy> = match runtime.as_ref() {
                Some(rt) if !t.plugins.is_empty() => Arc::new(
                    rt.chain(
                        t.plugins
                            .iter()
                            .filter_map(|n| loaded.get(n).cloned())
                            .collect(),
                    ),
                ),
                _ => default.clone(),
            };
            (t.name.clone(), policy)
        })
        .collect();
    Ok((policies, loaded.into_values().collect()))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

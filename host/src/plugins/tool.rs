//! `portcullis plugin check` and `portcullis plugin test`: a plugin author's
//! local harness. `check` loads a component exactly as the gateway would and
//! prints what it declares; `test` feeds it scripted statements and prints
//! each verdict (and compares with an `expect` field when one is given).

use std::io::Write;
use std::path::Path;

use serde::Deserialize;

use super::{PluginError, PluginRuntime, PoolSize};
use crate::config::PluginConfig;
use crate::identity::Identity;
use crate::policy::{Policy, QueryEvent, QueryNote, SessionInfo, Verdict};

/// Why the tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The plugin was refused.
    #[error("{0}")]
    Plugin(#[from] PluginError),
    /// A file could not be read or parsed.
    #[error("{0}")]
    Input(String),
}

fn plugin_config(file: &Path, config: Option<&Path>) -> Result<PluginConfig, ToolError> {
    let value: toml::Value = match config {
        None => toml::Value::Table(Default::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| ToolError::Input(format!("{}: {e}", p.display())))?;
            if p.extension().is_some_and(|e| e == "json") {
                let json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| ToolError::Input(format!("{}: {e}", p.display())))?;
                toml::Value::try_from(json)
                    .map_err(|e| ToolError::Input(format!("{}: {e}", p.display())))?
            } else {
                toml::from_str(&text)
                    .map_err(|e| ToolError::Input(format!("{}: {e}", p.display())))?
            }
        }
    };
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    Ok(PluginConfig {
        name,
        path: file.display().to_string(),
        sha256: None,
        failure: Default::default(),
        call_timeout_ms: 50,
        memory_limit_mib: 64,
        config: value,
    })
}

fn runtime() -> Result<PluginRuntime, ToolError> {
    Ok(PluginRuntime::new(
        PoolSize {
            instances: 16,
            max_memory_bytes: 64 << 20,
        },
        None,
    )?)
}

/// Loads the plugin and describes it.
pub fn check(file: &Path, config: Option<&Path>) -> Result<String, ToolError> {
    let cfg = plugin_config(file, config)?;
    let rt = runtime()?;
    let p = rt.load(&cfg)?;
    Ok(format!(
        "{}: OK\n  contract: {}\n  name: {}\n  version: {}\n  sha256: {}\n  wants rows: {}\n  configuration: accepted\n",
        file.display(),
        super::CONTRACT,
        p.declared_name,
        p.version,
        p.sha256,
        p.wants_rows
    ))
}

/// One scripted event.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptedEvent {
    sql: String,
    #[serde(default = "default_user")]
    user: String,
    #[serde(default)]
    groups: Vec<String>,
    /// `allow`, `deny` or `require-approval`; checked when present.
    expect: Option<String>,
}

fn default_user() -> String {
    "tester@example.com".into()
}

/// Runs each event through a fresh session of the plugin; prints verdicts.
/// Returns whether every `expect` matched.
pub fn test(
    file: &Path,
    config: Option<&Path>,
    events: &Path,
    out: &mut dyn Write,
) -> Result<bool, ToolError> {
    let cfg = plugin_config(file, config)?;
    let rt = runtime()?;
    let chain = rt.chain(vec![rt.load(&cfg)?]);
    let text = std::fs::read_to_string(events)
        .map_err(|e| ToolError::Input(format!("{}: {e}", events.display())))?;
    let mut all_ok = true;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let ev: ScriptedEvent = serde_json::from_str(line)
            .map_err(|e| ToolError::Input(format!("{} line {}: {e}", events.display(), n + 1)))?;
        let info = SessionInfo {
            session_id: n as u64 + 1,
            identity: Identity {
                subject: ev.user.clone(),
                user: ev.user.clone(),
                groups: ev.groups.clone(),
                issuer: "portcullis-plugin-test".into(),
                actor_chain: Vec::new(),
                expires_at: 0,
                delegation: None,
            },
            target: "test".into(),
            protocol: "postgres",
            client_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            application_name: None,
        };
        let (word, detail) = match chain.start_session(&info) {
            Err(r) => ("deny", format!("session refused: {}", r.reason)),
            Ok(mut s) => {
                let mut note = QueryNote::default();
                let verdict = s.on_query(QueryEvent::Simple { sql: &ev.sql }, &mut note);
                let mut extra = String::new();
                if let Some(rule) = &note.rule {
                    extra.push_str(&format!(" [rule {rule}]"));
                }
                if let Some(r) = note.record {
                    extra.push_str(&format!(" [recorded, {} sample rows]", r.sample_rows));
                }
                match verdict {
                    Verdict::Allow => ("allow", extra.trim_start().to_string()),
                    Verdict::Deny { reason } => ("deny", format!("{reason}{extra}")),
                    Verdict::RequireApproval { reason } => {
                        ("require-approval", format!("{reason}{extra}"))
                    }
                }
            }
        };
        let mark = match &ev.expect {
            Some(e) if e == word => "ok  ",
            Some(_) => {
                all_ok = false;
                "FAIL"
            }
            None => "    ",
        };
        let _ = writeln!(
            out,
            "{mark} line {:>3}  {word:<16} {}  {}",
            n + 1,
            ev.sql,
            detail
        );
    }
    Ok(all_ok)
}

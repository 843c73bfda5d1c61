//! `portcullis kube login` and `portcullis kube credential`: kubectl
//! through the gateway without pasting tokens. `login` writes a kubeconfig
//! whose cluster is the gateway's URL for one target and whose user is an
//! `exec` credential plugin (`client.authentication.k8s.io/v1`) running
//! `portcullis kube credential`, so kubectl fetches a fresh token itself
//! whenever the one it holds expires.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::CliError;

/// Where a token comes from, each time kubectl asks.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A file, read every time (a token refreshed by another tool).
    File(PathBuf),
    /// A command (`sh -c`) whose standard output is the token, e.g.
    /// `az account get-access-token --query accessToken -o tsv`.
    Command(String),
}

/// What `kube login` is given.
pub struct LoginArgs {
    /// The Kubernetes target's name on the gateway.
    pub target: String,
    /// The gateway's Kubernetes listener, `https://HOST:PORT`.
    pub server: String,
    /// The CA that signed the gateway's certificate (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// Where the token comes from.
    pub source: TokenSource,
    /// The kubeconfig to write.
    pub kubeconfig: PathBuf,
}

/// The default kubeconfig of a target: `~/.portcullis/kube/TARGET.kubeconfig`.
pub fn default_kubeconfig(target: &str) -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".portcullis")
        .join("kube")
        .join(format!("{target}.kubeconfig"))
}

/// The kubeconfig (JSON, which kubectl reads like YAML) for `args`, whose
/// credential plugin is the program at `exe`.
pub fn kubeconfig(args: &LoginArgs, exe: &Path) -> Result<serde_json::Value, CliError> {
    let server = args.server.trim_end_matches('/');
    if !server.starts_with("https://")
        && !server.starts_with("http://127.0.0.1")
        && !server.starts_with("http://localhost")
    {
        return Err(CliError::Usage(format!(
            "the server {server:?} must be the gateway's https:// address (tokens never cross a network in the clear)"
        )));
    }
    let segment_safe = !args.target.is_empty()
        && args
            .target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !segment_safe {
        return Err(CliError::Usage(format!(
            "{:?} is not a target name",
            args.target
        )));
    }
    let name = format!("portcullis-{}", args.target);
    let mut cluster = json!({ "server": format!("{server}/{}", args.target) });
    if let Some(ca) = &args.ca_file {
        let ca = std::fs::canonicalize(ca).map_err(|e| {
            CliError::Usage(format!("cannot read the CA file {}: {e}", ca.display()))
        })?;
        cluster["certificate-authority"] = json!(ca.display().to_string());
    }
    let mut credential_args = vec!["kube".to_string(), "credential".to_string()];
    match &args.source {
        TokenSource::File(f) => {
            let f = std::fs::canonicalize(f).map_err(|e| {
                CliError::Usage(format!("cannot read the token file {}: {e}", f.display()))
            })?;
            credential_args.push("--token-file".into());
            credential_args.push(f.display().to_string());
        }
        TokenSource::Command(c) => {
            credential_args.push("--token-command".into());
            credential_args.push(c.clone());
        }
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": name, "cluster": cluster }],
        "users": [{ "name": name, "user": { "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": exe.display().to_string(),
            "args": credential_args,
            "interactiveMode": "Never",
            "provideClusterInfo": false,
        } } }],
        "contexts": [{ "name": name, "context": { "cluster": name, "user": name } }],
        "current-context": name,
    }))
}

/// Writes the kubeconfig (mode 0600) and says how to use it.
pub fn login(args: &LoginArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Usage(format!("cannot find this program's path: {e}")))?;
    let config = kubeconfig(args, &exe)?;
    if let Some(dir) = args.kubeconfig.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    let text = serde_json::to_string_pretty(&config).map_err(|e| CliError::Usage(e.to_string()))?;
    write_private(&args.kubeconfig, &text)?;
    let _ = writeln!(
        out,
        "wrote {path}\nuse it with: kubectl --kubeconfig {path} get pods\n(or: export KUBECONFIG={path})",
        path = args.kubeconfig.display()
    );
    Ok(())
}

/// Writes `text` to `path`, readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))
}

/// The token from `source`, trimmed.
pub fn token(source: &TokenSource) -> Result<String, CliError> {
    let text = match source {
        TokenSource::File(f) => std::fs::read_to_string(f).map_err(|e| {
            CliError::Usage(format!("cannot read the token file {}: {e}", f.display()))
        })?,
        TokenSource::Command(c) => {
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(c)
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| CliError::Usage(format!("cannot run the token command: {e}")))?;
            if !output.status.success() {
                return Err(CliError::Usage(format!(
                    "the token command failed ({})",
                    output.status
                )));
            }
            String::from_utf8(output.stdout).map_err(|_| {
                CliError::Usage("the token command printed something that is not text".into())
            })?
        }
    };
    let token = text.trim().to_string();
    if token.is_empty() || token.chars().any(char::is_control) {
        return Err(CliError::Usage("the token is empty or not one line".into()));
    }
    Ok(token)
}

/// The `ExecCredential` kubectl reads: the token, and when it expires
/// (its `exp` claim, read without checking it — the gateway checks) so
/// kubectl asks again in time.
pub fn exec_credential(token: &str) -> serde_json::Value {
    let mut status = json!({ "token": token });
    if let Some(exp) = expiry(token) {
        status["expirationTimestamp"] = json!(crate::store::format_time(exp as i64 * 1_000_000));
    }
    json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": status,
    })
}

/// A JWT's `exp` claim, if it has one.
fn expiry(token: &str) -> Option<u64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_says_when_the_token_expires() {
        use base64::Engine;
        let claims =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1796230800}"#);
        let cred = exec_credential(&format!("h.{claims}.s"));
        assert_eq!(
            cred["status"]["expirationTimestamp"],
            "2026-12-02T17:00:00.000Z"
        );
        assert_eq!(cred["kind"], "ExecCredential");
        assert!(exec_credential("opaque")["status"]
            .get("expirationTimestamp")
            .is_none());
    }

    #[test]
    fn the_kubeconfig_points_at_the_target_and_runs_the_credential_plugin() {
        let args = LoginArgs {
            target: "prod".into(),
            server: "https://gw.example:6443/".into(),
            ca_file: None,
            source: TokenSource::Command("get-token".into()),
            kubeconfig: PathBuf::from("/tmp/x"),
        };
        let c = kubeconfig(&args, Path::new("/usr/bin/portcullis")).expect("config");
        assert_eq!(
            c["clusters"][0]["cluster"]["server"],
            "https://gw.example:6443/prod"
        );
        let exec = &c["users"][0]["user"]["exec"];
        assert_eq!(exec["command"], "/usr/bin/portcullis");
        assert_eq!(
            exec["args"],
            json!(["kube", "credential", "--token-command", "get-token"])
        );
        let plain = LoginArgs {
            server: "http://gw.example:6443".into(),
            ..args
        };
        assert!(kubeconfig(&plain, Path::new("p")).is_err());
    }
}

//! `password_command`: a shell command prints the password or token.

use std::process::Stdio;
use std::time::Duration;

use super::{jwt_expires_in, CredentialError, FetchedToken};

/// How long the command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `command` with `sh -c`; its trimmed standard output is the secret.
pub async fn run(command: &str) -> Result<FetchedToken, CredentialError> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CredentialError(format!("cannot run password_command: {e}")))?;
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| CredentialError("password_command did not finish within 30 s".into()))?
        .map_err(|e| CredentialError(format!("password_command failed: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr: String = stderr.trim().chars().take(300).collect();
        return Err(CredentialError(format!(
            "password_command exited with {}: {stderr}",
            out.status
        )));
    }
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if secret.is_empty() {
        return Err(CredentialError("password_command printed nothing".into()));
    }
    Ok(FetchedToken {
        expires_in: jwt_expires_in(&secret),
        secret,
    })
}

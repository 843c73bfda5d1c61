//! A self-signed TLS certificate for loopback use (demo and tests).

use std::path::{Path, PathBuf};

/// Writes `cert.pem` and `key.pem` for `localhost`/`127.0.0.1` into `dir`.
pub fn write_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key, ck.key_pair.serialize_pem()).map_err(|e| e.to_string())?;
    restrict(&key);
    Ok((cert, key))
}

/// Makes a secret file readable by its owner only.
pub fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

//! A self-signed TLS certificate for loopback use (demo and tests).

use std::path::{Path, PathBuf};

/// A self-signed certificate and key (PEM) for `localhost` and `127.0.0.1`.
pub fn self_signed_pem() -> Result<(String, String), String> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    Ok((ck.cert.pem(), ck.key_pair.serialize_pem()))
}

/// Writes `cert.pem` and `key.pem` for `localhost`/`127.0.0.1` into `dir`.
pub fn write_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let (cert_pem, key_pem) = self_signed_pem()?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, cert_pem).map_err(|e| e.to_string())?;
    std::fs::write(&key, key_pem).map_err(|e| e.to_string())?;
    restrict(&key);
    Ok((cert, key))
}

/// Makes a secret file readable by its owner only.
pub fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

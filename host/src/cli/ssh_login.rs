//! `portcullis ssh login`: trades a token for an SSH certificate. It makes
//! a fresh key (or certifies the user's own), sends the public half with
//! the token to the admin API, and writes what `ssh` needs into one
//! directory: the key, its certificate, a known_hosts file pinning the
//! gateway's SSH listeners, and a config file, so that
//! `ssh -F DIR/config web-1@portcullis` logs in with the certificate.

use std::io::Write;
use std::path::PathBuf;

use super::{AdminClient, CliError};
use crate::protocols::ssh::certs::IssuedLogin;

/// The ciphers the written config asks the gateway for, in order: all
/// that the gateway's SSH listener offers (an explicit list, which OpenSSH
/// clients since 6.5 read), AES-GCM first. The client's order decides, so
/// without this a client picks ChaCha20-Poly1305 — about a third slower
/// through the gateway on a machine with AES instructions.
const CIPHERS: &str =
    "aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr";

/// What `ssh login` is given.
pub struct LoginArgs {
    /// The token (the caller's own, or a delegated one).
    pub token: String,
    /// Where the files go.
    pub dir: PathBuf,
    /// The user's own private key to certify instead of a fresh one.
    pub key: Option<PathBuf>,
    /// The admin API's URL (its host name is the gateway's, for listeners
    /// bound to every address).
    pub api: String,
}

/// The default directory: `~/.portcullis/ssh`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".portcullis")
        .join("ssh")
}

/// The host a listener bound to `address` is reached at: its own address,
/// or the admin API's host for one bound to every address.
fn reachable_host(address: &str, api: &str) -> (String, String) {
    let (host, port) = address
        .rsplit_once(':')
        .map(|(h, p)| (h.trim_matches(['[', ']']).to_string(), p.to_string()))
        .unwrap_or_else(|| (address.to_string(), "22".into()));
    let every = host == "0.0.0.0" || host == "::";
    let api_host = api
        .split("://")
        .nth(1)
        .unwrap_or(api)
        .split(['/', ':'])
        .next()
        .unwrap_or("localhost")
        .to_string();
    (if every { api_host } else { host }, port)
}

/// Checks what the API answered before any of it reaches a file `ssh`
/// reads: one line of config or known_hosts too many could make `ssh` run
/// a command (`Match exec`, `ProxyCommand`) or trust another host key.
fn checked(issued: &IssuedLogin) -> Result<(), CliError> {
    let bad = |what: &str| CliError::Answer(format!("the gateway's answer has an invalid {what}"));
    for l in &issued.listeners {
        l.address
            .parse::<std::net::SocketAddr>()
            .map_err(|_| bad("listener address"))?;
        russh::keys::PublicKey::from_openssh(&l.host_key).map_err(|_| bad("host key"))?;
        if l.host_key.contains(['\n', '\r']) {
            return Err(bad("host key"));
        }
    }
    let printable = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
    if !issued.principals.iter().all(|p| printable(p)) || !printable(&issued.key_id) {
        return Err(bad("principal or key id"));
    }
    russh::keys::Certificate::from_openssh(&issued.certificate).map_err(|_| bad("certificate"))?;
    i64::try_from(issued.valid_before)
        .ok()
        .and_then(|v| v.checked_mul(1_000_000))
        .ok_or_else(|| bad("expiry"))?;
    Ok(())
}

/// Runs `ssh login`; returns the line that connects.
pub async fn login(args: &LoginArgs, out: &mut dyn Write) -> Result<String, CliError> {
    let usage = |m: String| CliError::Usage(m);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&args.dir)
            .map_err(|e| usage(format!("cannot make {}: {e}", args.dir.display())))?;
    }
    let key_path = args.dir.join("id_ed25519");
    let public = match &args.key {
        Some(own) => {
            let key = russh::keys::load_secret_key(own, None)
                .map_err(|e| usage(format!("--key {}: {e}", own.display())))?;
            key.public_key()
                .to_openssh()
                .map_err(|e| usage(e.to_string()))?
        }
        None => {
            let key = crate::protocols::ssh::certs::fresh_key();
            crate::protocols::ssh::certs::write_key(&key_path, &key)?;
            let public = key
                .public_key()
                .to_openssh()
                .map_err(|e| usage(e.to_string()))?;
            std::fs::write(key_path.with_extension("pub"), format!("{public}\n"))?;
            public
        }
    };
    let client = AdminClient::new(&args.api, Some(args.token.trim().to_string()))?;
    let issued: IssuedLogin = serde_json::from_value(
        client
            .json(
                hyper::Method::POST,
                "/v1/ssh/certificates",
                Some(serde_json::json!({ "public_key": public })),
            )
            .await?,
    )
    .map_err(|e| CliError::Answer(e.to_string()))?;
    checked(&issued)?;
    let identity_file = args.key.clone().unwrap_or(key_path);
    let cert_path = args.dir.join("id_ed25519-cert.pub");
    std::fs::write(&cert_path, format!("{}\n", issued.certificate))?;
    let mut known = String::new();
    let mut reach = None;
    for l in &issued.listeners {
        let (host, port) = reachable_host(&l.address, &args.api);
        known.push_str(&format!("[{host}]:{port} {}\n", l.host_key));
        reach.get_or_insert((host, port));
    }
    let Some((host, port)) = reach else {
        return Err(CliError::Answer(
            "the gateway named no SSH listener for its certificates".into(),
        ));
    };
    let known_path = args.dir.join("known_hosts");
    std::fs::write(&known_path, known)?;
    let config_path = args.dir.join("config");
    let until = crate::store::format_time(
        i64::try_from(issued.valid_before)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000),
    );
    std::fs::write(
        &config_path,
        format!(
            "# Written by `portcullis ssh login` for {who}; the certificate is valid until {until}.\n\
             # Use: ssh -F {config} TARGET@portcullis\n\
             Host portcullis\n    HostName {host}\n    Port {port}\n    IdentityFile {key}\n    \
             CertificateFile {cert}\n    IdentitiesOnly yes\n    PreferredAuthentications publickey,keyboard-interactive\n    \
             UserKnownHostsFile {known}\n    StrictHostKeyChecking yes\n    \
             # AES-GCM first: the gateway decrypts and re-encrypts every byte, and\n    \
             # with AES instructions that costs it far less than ChaCha20.\n    \
             Ciphers {CIPHERS}\n",
            who = issued.principals.join(", "),
            config = config_path.display(),
            key = identity_file.display(),
            cert = cert_path.display(),
            known = known_path.display(),
        ),
    )?;
    let line = format!("ssh -F {} TARGET@portcullis", config_path.display());
    writeln!(
        out,
        "SSH certificate for {} (key id {:?}), valid until {until}.\nConnect with: {line}",
        issued.principals.join(", "),
        issued.key_id,
    )?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_would_add_lines_to_the_ssh_files_is_refused() {
        use crate::protocols::ssh::certs::{fresh_key, ListenerInfo, UserCa};
        let ca = UserCa::from_key(fresh_key());
        let client = fresh_key();
        let who = crate::identity::Identity {
            subject: "s".into(),
            user: "alice".into(),
            groups: Vec::new(),
            issuer: "i".into(),
            actor_chain: Vec::new(),
            expires_at: u64::MAX / 2,
            delegation: None,
        };
        let minted = ca
            .mint(&client.public_key().to_openssh().expect("key"), &who)
            .expect("minted");
        let host_key = fresh_key().public_key().to_openssh().expect("key");
        let good = IssuedLogin {
            certificate: minted.certificate.to_openssh().expect("cert"),
            serial: minted.serial,
            key_id: minted.key_id,
            principals: vec!["alice".into()],
            valid_before: minted.valid_before,
            listeners: vec![ListenerInfo {
                address: "127.0.0.1:2222".into(),
                host_key: host_key.clone(),
            }],
        };
        assert!(checked(&good).is_ok());
        let mut bad = good.clone();
        bad.principals = vec!["alice\nMatch exec \"touch /tmp/pwned\"".into()];
        assert!(checked(&bad).is_err());
        let mut bad = good.clone();
        bad.listeners[0].host_key = format!("{host_key}\n@cert-authority * {host_key}");
        assert!(checked(&bad).is_err());
        let mut bad = good.clone();
        bad.listeners[0].address = "gw\n  ProxyCommand sh -c id".into();
        assert!(checked(&bad).is_err());
        let mut bad = good;
        bad.valid_before = u64::MAX;
        assert!(checked(&bad).is_err());
    }

    #[test]
    fn a_listener_on_every_address_is_reached_at_the_api_host() {
        assert_eq!(
            reachable_host("0.0.0.0:2222", "https://gw.example.com:9187"),
            ("gw.example.com".into(), "2222".into())
        );
        assert_eq!(
            reachable_host("127.0.0.1:2200", "http://127.0.0.1:9187"),
            ("127.0.0.1".into(), "2200".into())
        );
        assert_eq!(
            reachable_host("[::]:22", "http://gw:1"),
            ("gw".into(), "22".into())
        );
    }
}

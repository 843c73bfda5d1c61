//! Configuration parsing and validation.

use super::*;

pub(super) const MINIMAL: &str = r#"
[[listeners]]
address = "127.0.0.1:6432"
plaintext_loopback_dev = true

[[identity_providers]]
name = "dev"
issuer = "http://127.0.0.1:9999"
insecure_loopback_issuer = true
audience = "portcullis"

[[targets]]
name = "orders"
host = "127.0.0.1"
database = "orders"
user = "gw"
allow_groups = ["analysts"]
"#;

fn err(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn minimal_config_is_accepted_with_defaults() {
    let c = Config::parse(MINIMAL).unwrap();
    let p = &c.identity_providers[0];
    assert_eq!(p.algorithms, ["RS256", "ES256", "PS256"]);
    assert_eq!(p.leeway_secs, 60);
    assert_eq!(c.targets[0].port(), 5432);
    assert!(c
        .summary()
        .contains("orders (postgres) -> 127.0.0.1:5432/orders"));
    assert_eq!(c.targets[0].protocol, Protocol::Postgres);
    assert_eq!(c.listeners[0].protocol, Protocol::Postgres);
}

#[test]
fn protocol_is_postgres_when_absent_and_others_are_named() {
    let text = MINIMAL.replace(
        "[[targets]]\nname = \"orders\"",
        "[[targets]]\nprotocol = \"postgres\"\nname = \"orders\"",
    );
    assert_eq!(
        Config::parse(&text).unwrap().targets[0].protocol,
        Protocol::Postgres
    );
    let text = MINIMAL.replace(
        "[[targets]]\nname = \"orders\"",
        "[[targets]]\nprotocol = \"telnet\"\nname = \"orders\"",
    );
    let e = err(&text);
    assert!(
        e.contains("telnet") && e.contains("postgres") && e.contains("ssh"),
        "{e}"
    );
}

/// An SSH listener and target, with real files for their keys.
fn ssh_config(dir: &crate::test_dir::TestDir, target_extra: &str) -> String {
    for f in ["host_key", "gateway_key", "known_hosts"] {
        std::fs::write(dir.join(f), "x").unwrap();
    }
    let d = dir.display();
    format!(
        r#"{MINIMAL}
[[listeners]]
protocol = "ssh"
address = "127.0.0.1:2222"
host_key_file = "{d}/host_key"

[[targets]]
protocol = "ssh"
name = "web-1"
host = "10.0.0.5"
user = "deploy"
private_key_file = "{d}/gateway_key"
known_hosts_file = "{d}/known_hosts"
allow_groups = ["ops"]
{target_extra}
"#
    )
}

#[test]
fn an_ssh_target_takes_its_own_keys_and_port_22() {
    let dir = crate::test_dir::TestDir::new("portcullis-config");
    let c = Config::parse(&ssh_config(&dir, "")).unwrap();
    let t = &c.targets[1];
    assert_eq!((t.protocol, t.port()), (Protocol::Ssh, 22));
    assert_eq!(c.listeners[1].protocol, Protocol::Ssh);
    assert!(
        c.summary().contains("web-1 (ssh) -> deploy@10.0.0.5:22"),
        "{}",
        c.summary()
    );
}

#[test]
fn an_ssh_target_without_a_key_or_a_pinned_host_or_with_plugins_is_refused() {
    let dir = crate::test_dir::TestDir::new("portcullis-config");
    let full = ssh_config(&dir, "");
    let d = dir.display().to_string();
    let e = err(&full.replace(&format!("private_key_file = \"{d}/gateway_key\"\n"), ""));
    assert!(e.contains("targets[1].private_key_file"), "{e}");
    let e = err(&full.replace(&format!("known_hosts_file = \"{d}/known_hosts\"\n"), ""));
    assert!(
        e.contains("targets[1].known_hosts_file") && e.contains("cannot check"),
        "{e}"
    );
    let e = err(&full.replace("known_hosts\"", "missing_known_hosts\""));
    assert!(e.contains("does not exist"), "{e}");
    let e = err(&ssh_config(&dir, "plugins = [\"block\"]"));
    assert!(e.contains("targets[1].plugins"), "{e}");
    let e = err(&full.replace(&format!("host_key_file = \"{d}/host_key\"\n"), ""));
    assert!(e.contains("listeners[1].host_key_file"), "{e}");
}

#[test]
fn unknown_key_names_line() {
    let text = MINIMAL.replace("user = \"gw\"", "user = \"gw\"\npasword_env = \"X\"");
    let e = err(&text);
    assert!(e.contains("pasword_env"), "{e}");
    assert!(e.contains("line"), "{e}");
}

#[test]
fn http_issuer_needs_loopback_and_flag() {
    let e = err(&MINIMAL.replace("insecure_loopback_issuer = true\n", ""));
    assert!(e.contains("identity_providers[0].issuer (line 8)"), "{e}");
    let e = err(&MINIMAL.replace("http://127.0.0.1:9999", "http://idp.example.com"));
    assert!(e.contains("not https"), "{e}");
}

#[test]
fn none_and_hmac_without_secret_are_refused() {
    let e = err(&MINIMAL.replace(
        "audience = \"portcullis\"",
        "audience = \"portcullis\"\nalgorithms = [\"none\"]",
    ));
    assert!(e.contains("never accepted"), "{e}");
    let e = err(&MINIMAL.replace(
        "audience = \"portcullis\"",
        "audience = \"portcullis\"\nalgorithms = [\"HS256\"]",
    ));
    assert!(e.contains("hmac_secret_file"), "{e}");
}

#[test]
fn plaintext_only_on_loopback() {
    let e = err(&MINIMAL.replace("127.0.0.1:6432", "0.0.0.0:6432"));
    assert!(
        e.contains("listeners[0].plaintext_loopback_dev (line 4)"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("plaintext_loopback_dev = true", ""));
    assert!(e.contains("TLS is required"), "{e}");
}

#[test]
fn duplicate_target_is_refused() {
    let text = format!(
        "{MINIMAL}\n[[targets]]\nname = \"orders\"\nhost = \"h\"\ndatabase = \"d\"\nuser = \"u\"\n"
    );
    let e = err(&text);
    assert!(e.contains("targets[1].name"), "{e}");
}

#[test]
fn loopback_detection() {
    use super::validate::url_is_loopback;
    assert!(url_is_loopback("http://127.0.0.1:8080/x"));
    assert!(url_is_loopback("http://localhost/x"));
    assert!(url_is_loopback("http://[::1]:80"));
    assert!(!url_is_loopback("http://127.0.0.1.evil.com/"));
    assert!(!url_is_loopback("http://10.0.0.1/"));
}

#[test]
fn memory_and_admin_limits_have_safe_defaults_and_are_checked() {
    let c = Config::parse(&format!("{MINIMAL}\n[admin]\n")).unwrap();
    assert_eq!(c.gateway.buffered_message_budget_bytes, 1 << 30);
    let a = c.admin.unwrap();
    assert_eq!(
        (
            a.max_body_bytes,
            a.max_connections,
            a.header_read_timeout_secs
        ),
        (1 << 20, 64, 10)
    );
    let e = err(&format!(
        "{MINIMAL}\n[gateway]\nbuffered_message_budget_bytes = 1000\n"
    ));
    assert!(e.contains("gateway.buffered_message_budget_bytes"), "{e}");
    for (key, bad) in [
        ("max_body_bytes", "10"),
        ("max_connections", "0"),
        ("header_read_timeout_secs", "0"),
    ] {
        let e = err(&format!("{MINIMAL}\n[admin]\n{key} = {bad}\n"));
        assert!(e.contains(&format!("admin.{key}")), "{e}");
    }
}

#[test]
fn upstream_roles_map_groups_in_order_and_are_checked() {
    let text = format!(
        "{MINIMAL}default_role = \"reader\"\n\n[[targets.roles]]\ngroups = [\"dba\"]\nrole = \"admin\"\n\n[[targets.roles]]\ngroups = [\"analysts\", \"dba\"]\nrole = \"analyst\"\n"
    );
    let c = Config::parse(&text).unwrap();
    let t = &c.targets[0];
    let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        t.upstream_role(&groups(&["dba", "analysts"])),
        Some("admin")
    );
    assert_eq!(t.upstream_role(&groups(&["analysts"])), Some("analyst"));
    assert_eq!(t.upstream_role(&groups(&["others"])), Some("reader"));
    assert!(c.summary().contains("upstream role admin for groups [dba]"));
    assert!(c
        .summary()
        .contains("upstream role reader for everyone else"));
    let e = err(&format!(
        "{MINIMAL}\n[[targets.roles]]\ngroups = []\nrole = \"x\"\n"
    ));
    assert!(e.contains("targets[0].roles[0].groups"), "{e}");
    let e = err(&format!(
        "{MINIMAL}\n[[targets.roles]]\ngroups = [\"a\"]\nrole = \" x\"\n"
    ));
    assert!(e.contains("targets[0].roles[0].role"), "{e}");
    let no_mapping = Config::parse(MINIMAL).unwrap();
    assert_eq!(
        no_mapping.targets[0].upstream_role(&groups(&["analysts"])),
        None
    );
}

/// A Kubernetes target with `extra` keys after its name.
fn kube_config(extra: &str) -> String {
    format!(
        "{MINIMAL}\n[[targets]]\nprotocol = \"kubernetes\"\nname = \"prod\"\n{extra}\nallow_groups = [\"ops\"]\n"
    )
}

#[test]
fn a_kubernetes_target_needs_its_own_token_and_verified_tls() {
    let token = crate::test_dir::TestDir::new("kube-config");
    let file = token.join("token");
    std::fs::write(&file, "t").unwrap();
    let source = format!("password_file = {:?}", file.display().to_string());
    let ok = Config::parse(&kube_config(&format!("host = \"127.0.0.1\"\n{source}"))).unwrap();
    assert_eq!(ok.targets[1].port(), 6443);
    assert!(
        ok.summary()
            .contains("prod (kubernetes) -> http://127.0.0.1:6443"),
        "{}",
        ok.summary()
    );
    // No token of its own: the API server would see an anonymous caller.
    let e = err(&kube_config("host = \"127.0.0.1\""));
    assert!(e.contains("needs the gateway's own token"), "{e}");
    // The token never travels unverified or in the clear off the machine.
    let e = err(&kube_config(&format!("host = \"10.0.0.1\"\n{source}")));
    assert!(e.contains("verify-full") && e.contains("loopback"), "{e}");
    let e = err(&kube_config(&format!(
        "host = \"10.0.0.1\"\ntls = \"require\"\n{source}"
    )));
    assert!(e.contains("does not check"), "{e}");
    Config::parse(&kube_config(&format!(
        "host = \"10.0.0.1\"\ntls = \"verify-full\"\n{source}"
    )))
    .unwrap();
    // The name is a path segment.
    for bad in ["a/b", "..", ".x", "a b", "a%2Fb", "api", "apis", "version"] {
        let text = kube_config(&format!("host = \"127.0.0.1\"\n{source}"))
            .replace("name = \"prod\"", &format!("name = {bad:?}"));
        assert!(err(&text).contains("path segment"), "{bad}");
    }
    // Keys of other protocols are refused.
    let e = err(&kube_config(&format!(
        "host = \"127.0.0.1\"\n{source}\ndatabase = \"x\""
    )));
    assert!(
        e.contains("`database` is a key of protocol \"postgres\""),
        "{e}"
    );
    let e = err(&kube_config(&format!(
        "host = \"127.0.0.1\"\n{source}\nuser = \"x\""
    )));
    assert!(e.contains("`user` is a key of protocol"), "{e}");
}

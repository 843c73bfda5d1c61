//! `portcullis demo` as the README shows it: the first-party plugins load;
//! in psql a newcomer sees a masked card number and a refused `DELETE`; a
//! DELETE the rules allow meets the database's own privileges; an
//! `UPDATE` of an order waits until an approver approves it; and the
//! session is recorded.

use std::process::Command;

use portcullis_e2e::plugin_wasm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_masks_refuses_holds_for_approval_and_records() {
    let plugins = plugin_wasm("mask");
    std::env::set_var(
        "PORTCULLIS_PLUGIN_DIR",
        plugins.parent().expect("plugin directory"),
    );
    std::env::remove_var("DATABASE_URL");
    // The demo's state (issuer key, admin token, certificate) goes with it.
    let scratch = portcullis_e2e::ScratchDir::new("portcullis-demo-test");
    let port = portcullis::demo::cluster::free_port().unwrap();
    let demo = portcullis::demo::start(Some(port), scratch.path().to_path_buf())
        .await
        .unwrap();
    assert_eq!(demo.plugins, ["block", "approve", "mask", "record"]);
    let psql = |sql: &str| {
        Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={port} dbname={} user={} sslmode=require",
                portcullis::demo::TARGET,
                portcullis::demo::DEFAULT_USER
            ))
            .args(["-X", "-c", sql])
            .env("PGPASSWORD", &demo.token)
            .output()
            .expect("psql is installed")
    };
    // Ada's row of a query's output, and the whole output.
    let ada_row = |sql: &str| {
        let out = psql(sql);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ada = stdout
            .lines()
            .find(|l| l.contains("Ada Lovelace"))
            .unwrap_or_default()
            .to_string();
        (ada, stdout)
    };
    let (ada, stdout) = ada_row("SELECT name, card_number, national_id FROM customers");
    assert!(
        ada.ends_with("| **** **** **** 1111 | [redacted]"),
        "{stdout}"
    );
    assert!(!stdout.contains("4111"), "{stdout}");
    // A value computed from a masked column is masked whole.
    let (ada, stdout) = ada_row(
        "SELECT name, reverse(card_number), length(national_id) FROM customers WHERE id = 1",
    );
    assert!(ada.contains("| [redacted] |"), "{stdout}");
    assert!(
        !stdout.contains("1111") && !stdout.contains(" 11"),
        "{stdout}"
    );

    let orders = || {
        let out = psql("SELECT count(*) FROM orders");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(2)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let before = orders();
    assert_ne!(before, "0", "the demo seeds orders");
    let out = psql("DELETE FROM orders");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "psql reports the refusal");
    assert!(
        stderr.contains("blocked by portcullis rule \"no-unbounded-writes\""),
        "{stderr}"
    );
    assert_eq!(orders(), before, "the refused DELETE removed no order");

    // The backstop: analysts run as shop_analyst upstream, so a bounded
    // DELETE the rules allow still meets PostgreSQL's own privileges.
    let out = psql("SELECT current_user");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("shop_analyst"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = psql("DELETE FROM customers WHERE id = 4");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "psql reports the refusal");
    assert!(stderr.contains("permission denied"), "{stderr}");
    let out = psql("SELECT count(*) FROM customers WHERE id = 4");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(2)
            .unwrap_or_default()
            .trim(),
        "1",
        "the customer is still there"
    );

    // An UPDATE of an order waits for an approver; bob approves it.
    let update = "UPDATE orders SET status = 'shipped' WHERE id = 2";
    let waiting = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} dbname={} user={} sslmode=require",
            portcullis::demo::TARGET,
            portcullis::demo::DEFAULT_USER
        ))
        .args(["-X", "-c", update])
        .env("PGPASSWORD", &demo.token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    let api = format!("http://{}", demo.gateway.admin_address.expect("admin API"));
    let admin_token = std::fs::read_to_string(demo.dir.join("admin-token")).unwrap();
    let mut id = None;
    for _ in 0..200 {
        let (_, list) = portcullis_e2e::admin_call(
            &api,
            "GET",
            "/v1/approvals?status=pending",
            Some(&admin_token),
            None,
        )
        .await;
        if let Some(found) = list[0]["id"].as_str() {
            id = Some(found.to_string());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let id = id.expect("a pending approval for the UPDATE");
    let bob = demo.issuer.mint(&portcullis::demo::issuer::TokenSpec {
        user: "bob@example.com".into(),
        groups: vec!["approvers".into()],
        ttl_secs: 600,
    });
    let (status, decided) = portcullis_e2e::admin_call(
        &api,
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    let out = waiting.wait_with_output().expect("psql finishes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("UPDATE 1"));
    assert!(
        stderr.contains(&format!("waiting for approval {id}")),
        "{stderr}"
    );

    // Every statement was recorded, the approved one with its request.
    demo.gateway.context.core.audit.flush().await;
    let (_, sessions) =
        portcullis_e2e::admin_call(&api, "GET", "/v1/sessions", Some(&admin_token), None).await;
    // SELECT, the refused reverse(), two order counts around the refused
    // DELETE, the DELETE, current_user, the DELETE PostgreSQL refused, its
    // check, the UPDATE.
    assert_eq!(sessions.as_array().map(Vec::len), Some(9), "{sessions}");
    let mut exported = String::new();
    let (_, list) =
        portcullis_e2e::admin_call(&api, "GET", "/v1/audit/export", Some(&admin_token), None).await;
    if let Some(text) = list.as_str() {
        exported.push_str(text);
    }
    assert!(
        exported.contains(&format!("\"approval_id\":\"{id}\"")),
        "{exported}"
    );
    assert!(exported.contains("no-unbounded-writes"), "{exported}");
    // The SSH target web-1: the token traded for a certificate, a command
    // run with it, a destructive one refused (the file is still there).
    let sshd = demo
        .sshd
        .as_ref()
        .expect("sshd is installed (scripts/setup)");
    let api = format!("http://{}", demo.gateway.admin_address.expect("admin API"));
    let token_file = scratch.path().join("alice.jwt");
    std::fs::write(&token_file, &demo.token).unwrap();
    let login_dir = scratch.path().join("ssh-login");
    let login = Command::new(portcullis_e2e::portcullis_bin())
        .args(["ssh", "login", "--token-file"])
        .arg(&token_file)
        .arg("--dir")
        .arg(&login_dir)
        .args(["--api", &api])
        .output()
        .expect("portcullis ssh login");
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let ssh = |command: &str| {
        Command::new("ssh")
            .arg("-F")
            .arg(login_dir.join("config"))
            .args(["-T", "-o", "BatchMode=yes", "web-1@portcullis", command])
            .env_remove("SSH_AUTH_SOCK")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ssh")
    };
    let ran = ssh("echo on-web-1");
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "on-web-1\n",
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    // The host's account may remove files here: only the rule stops it.
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let keep = scratch.path().join("keep");
    std::fs::write(&keep, "x").unwrap();
    std::fs::set_permissions(&keep, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let ran = ssh(&format!("rm -f {}", keep.display()));
    assert_eq!(ran.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&ran.stderr).contains("no-destructive-commands"));
    assert!(
        keep.exists(),
        "the demo's block rule let rm run (sshd as {})",
        sshd.user
    );
    demo.stop().await.unwrap();
}

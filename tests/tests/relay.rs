//! The whole protocol through the gateway with tokio-postgres: simple and
//! extended queries, pipelining, COPY, cancel, LISTEN/NOTIFY, errors, large
//! values, many sessions, and what the upstream sees.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use portcullis_e2e::{db_error, GatewayOptions, TestGateway, ROLE_PASSWORD};
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

const USER: &str = "relay@example.com";

#[tokio::test]
async fn simple_and_extended_queries_and_prepared_statements() {
    let gw = TestGateway::start().await;
    let c = gw.connect(USER).await;
    let msgs = c.simple_query("SELECT 1; SELECT 'two'").await.unwrap();
    let rows: Vec<&str> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(rows, ["1", "two"]);

    let stmt = c
        .prepare("SELECT name FROM items WHERE id = $1")
        .await
        .unwrap();
    for id in [1i32, 7, 42] {
        let row = c.query_one(&stmt, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("item {id}"));
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM items WHERE id > $1", &[&50i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 50);
}

#[tokio::test]
async fn pipelined_queries_come_back_in_order() {
    let gw = TestGateway::start().await;
    let c = gw.connect(USER).await;
    let stmt = c.prepare("SELECT $1::int * 2").await.unwrap();
    let futs = (0..50i32).map(|i| {
        let (c, stmt) = (&c, &stmt);
        async move { c.query_one(stmt, &[&i]).await.map(|r| r.get::<_, i32>(0)) }
    });
    let results = futures_util::future::try_join_all(futs).await.unwrap();
    assert_eq!(results, (0..50).map(|i| i * 2).collect::<Vec<_>>());
}

#[tokio::test]
async fn copy_in_and_out() {
    let gw = TestGateway::start().await;
    let c = gw.connect(USER).await;
    c.batch_execute("CREATE TEMP TABLE t (a int, b text)")
        .await
        .unwrap();
    let sink = c.copy_in("COPY t FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in 0..10 {
        let mut data = String::new();
        for i in 0..1000 {
            data.push_str(&format!("{}\trow {}\n", chunk * 1000 + i, i));
        }
        sink.send(Bytes::from(data)).await.unwrap();
    }
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 10_000);

    let stream = c
        .copy_out("COPY (SELECT a FROM t ORDER BY a) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    let text: String = chunks.iter().map(|b| String::from_utf8_lossy(b)).collect();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10_000);
    assert_eq!(lines[9_999], "9999");
}

#[tokio::test]
async fn cancel_reaches_the_upstream_query() {
    let gw = TestGateway::start().await;
    let c = gw.connect(USER).await;
    let token = c.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move {
        let r = c.simple_query("SELECT pg_sleep(30)").await;
        (r, c)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token
        .cancel_query(portcullis_e2e::tls_connector())
        .await
        .unwrap();
    let (result, c) = sleeper.await.unwrap();
    let err = result.expect_err("the query must be cancelled");
    assert_eq!(db_error(&err).0, "57014", "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The session is still usable.
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn backend_pid_is_the_upstream_pid_and_notifications_carry_it() {
    let gw = TestGateway::start().await;
    let token = gw.token(USER);
    let (client, mut conn) = gw
        .pg_config(USER, &token)
        .connect(portcullis_e2e::tls_connector())
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(stream.for_each(move |m| {
        if let Ok(AsyncMessage::Notification(n)) = m {
            let _ = tx.send(n);
        }
        futures_util::future::ready(())
    }));
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("LISTEN gw_channel").await.unwrap();
    client
        .batch_execute("NOTIFY gw_channel, 'hello'")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("notification in time")
        .expect("notification");
    assert_eq!(n.channel(), "gw_channel");
    assert_eq!(n.payload(), "hello");
    assert_eq!(
        n.process_id(),
        pid,
        "notification pid must be the real backend pid"
    );

    // Another session's NOTIFY arrives asynchronously.
    let other = gw.connect(USER).await;
    other
        .batch_execute("NOTIFY gw_channel, 'from other'")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("notification in time")
        .expect("notification");
    assert_eq!(n.payload(), "from other");
    assert_ne!(n.process_id(), pid);
}

#[tokio::test]
async fn errors_mid_transaction_and_mid_result() {
    let gw = TestGateway::start().await;
    let c = gw.connect(USER).await;
    c.batch_execute("BEGIN").await.unwrap();
    let err = c.simple_query("SELECT 1/0").await.err().unwrap();
    assert_eq!(db_error(&err).0, "22012");
    let err = c.simple_query("SELECT 1").await.err().unwrap();
    assert_eq!(db_error(&err).0, "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();
    // An error after some rows were sent.
    let err = c
        .simple_query("SELECT 10 / (5 - g) FROM generate_series(1, 10) g")
        .await
        .err()
        .unwrap();
    assert_eq!(db_error(&err).0, "22012");
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn large_values_round_trip() {
    let gw = TestGateway::start().await;
    let c = gw.connect(USER).await;
    let blob: Vec<u8> = (0..12 * 1024 * 1024)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    let row = c
        .query_one("SELECT $1::bytea, length($1::bytea)", &[&blob])
        .await
        .unwrap();
    let back: Vec<u8> = row.get(0);
    let len: i32 = row.get(1);
    assert_eq!(len as usize, blob.len());
    assert!(back == blob, "bytea came back different");
}

#[tokio::test]
async fn a_hundred_concurrent_sessions() {
    let gw = TestGateway::start().await;
    let mut tasks = Vec::new();
    for i in 0..100i32 {
        let token = gw.token(USER);
        let cfg = gw.pg_config(USER, &token);
        tasks.push(tokio::spawn(async move {
            let (c, conn) = cfg.connect(portcullis_e2e::tls_connector()).await?;
            tokio::spawn(conn);
            let v: i32 = c.query_one("SELECT $1::int + 1", &[&i]).await?.get(0);
            Ok::<_, tokio_postgres::Error>(v)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap(), i as i32 + 1);
    }
    // Every client is gone: no session task or cancel key is left behind.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.gateway.active_connections() > 0 || !gw.gateway.context.cancels.is_empty() {
        assert!(
            Instant::now() < deadline,
            "sessions leaked: {} active",
            gw.gateway.active_connections()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn upstream_sees_the_person_and_client_sees_server_parameters() {
    let gw = TestGateway::start().await;
    let token = gw.token(USER);
    let mut cfg = gw.pg_config(USER, &token);
    cfg.application_name("report-tool");
    let c = gw.connect_with(&cfg).await.unwrap();
    let row = c
        .query_one(
            "SELECT application_name, current_setting('client_encoding') FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        format!("report-tool via portcullis: {USER}")
    );
    assert_eq!(row.get::<_, String>(1), "UTF8");
    // Start-up parameters reach the upstream (tokio-postgres sends DateStyle=ISO).
    let ds: String = c.query_one("SHOW DateStyle", &[]).await.unwrap().get(0);
    assert!(ds.starts_with("ISO"), "{ds}");
}

#[tokio::test]
async fn upstream_md5_cleartext_and_trust_logins() {
    for (user, password) in [
        ("md5user", Some(ROLE_PASSWORD)),
        ("plainuser", Some(ROLE_PASSWORD)),
        ("trustuser", None),
    ] {
        let gw = TestGateway::start_with(GatewayOptions {
            upstream_user: user.into(),
            upstream_password: password.map(str::to_string),
            ..Default::default()
        })
        .await;
        let c = gw.connect(USER).await;
        let who: String = c
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);
    }
}

#[tokio::test]
async fn wrong_upstream_password_is_a_clear_error_without_secrets() {
    let gw = TestGateway::start_with(GatewayOptions {
        upstream_password: Some("wrong-password".into()),
        ..Default::default()
    })
    .await;
    let (code, msg) = gw.refused(USER, &gw.token(USER)).await;
    assert_eq!(code, "08004");
    assert!(
        msg.contains("cannot open a session on target \"app\""),
        "{msg}"
    );
    assert!(!msg.contains("wrong-password"));
}

#[tokio::test]
async fn client_disconnect_ends_the_upstream_session() {
    let gw = TestGateway::start().await;
    let watcher = gw.connect(USER).await;
    let c = gw.connect(USER).await;
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "upstream backend {pid} still alive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.gateway.context.cancels.len() <= 1);
}

#[tokio::test]
async fn upstream_termination_reaches_the_client() {
    let gw = TestGateway::start().await;
    let admin = gw.connect(USER).await;
    let c = gw.connect(USER).await;
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = c
        .simple_query("SELECT 1")
        .await
        .expect_err("session is gone");
    assert!(err.is_closed() || db_error(&err).0 == "57P01", "{err}");
}

#[tokio::test]
async fn upstream_tls_require_and_verify_full() {
    let ca = portcullis_e2e::cluster().upstream_ca.display().to_string();
    for extra in [
        "tls = \"require\"".to_string(),
        format!("tls = \"verify-full\"\ntls_ca_file = {ca:?}"),
    ] {
        let gw = TestGateway::start_with(GatewayOptions {
            target_extra: extra.clone(),
            ..Default::default()
        })
        .await;
        let c = gw.connect(USER).await;
        let ssl: bool = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "upstream connection must be encrypted with {extra}");
    }
}

#[tokio::test]
async fn upstream_verify_full_refuses_an_untrusted_certificate() {
    // Trust some other certificate: the server's must not verify.
    let other = portcullis_e2e::cluster().dir.join("other-ca.pem");
    let (pem, _) = portcullis::demo::cert::self_signed_pem().unwrap();
    std::fs::write(&other, pem).unwrap();
    let gw = TestGateway::start_with(GatewayOptions {
        target_extra: format!(
            "tls = \"verify-full\"\ntls_ca_file = {:?}",
            other.display().to_string()
        ),
        ..Default::default()
    })
    .await;
    let (code, msg) = gw.refused(USER, &gw.token(USER)).await;
    assert_eq!(code, "08001");
    assert!(msg.contains("TLS to 127.0.0.1"), "{msg}");
}

#[tokio::test]
async fn shutdown_waits_for_the_grace_period_then_closes_sessions_with_57p01() {
    let gw = TestGateway::start().await;
    let c = gw.connect(USER).await;
    let started = Instant::now();
    let shutdown = gw.gateway.shutdown(Duration::from_millis(700));
    let query = async {
        // During the grace period the session still works.
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.simple_query("SELECT 1").await.unwrap();
        // New connections are no longer accepted.
        let token = gw.token(USER);
        assert!(gw.connect_with(&gw.pg_config(USER, &token)).await.is_err());
    };
    tokio::join!(shutdown, query);
    assert!(started.elapsed() >= Duration::from_millis(700));
    let err = c
        .simple_query("SELECT 1")
        .await
        .expect_err("closed after the grace period");
    assert!(err.is_closed() || db_error(&err).0 == "57P01", "{err}");
    assert_eq!(gw.gateway.active_connections(), 0);
}

//! The backstop PostgreSQL enforces itself: a target maps groups to upstream
//! roles, the gateway sets the role at its upstream login, and no spelling a
//! client could use takes the session back to the gateway's own role —
//! judged by `current_user` and by rows the pinned role may not delete.

use bytes::{BufMut, BytesMut};
use portcullis::demo::issuer::TokenSpec;
use portcullis_e2e::{cluster, db_error, raw, GatewayOptions, TestGateway, DB};

/// Creates `pc_agent`, which may read `items` but not change it.
fn roles() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        cluster()
            .cluster
            .psql(
                DB,
                "DO $$ BEGIN CREATE ROLE pc_agent NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
                 GRANT SELECT ON items TO pc_agent; GRANT USAGE ON SCHEMA public TO pc_agent; \
                 CREATE OR REPLACE FUNCTION pc_escape(items) RETURNS text LANGUAGE sql \
                   AS $$ SELECT set_config('role', 'postgres', false) $$",
            )
            .expect("pc_agent role");
    });
}

async fn gateway() -> TestGateway {
    roles();
    TestGateway::start_with(GatewayOptions {
        target_extra: "default_role = \"pc_agent\"\n\n[[targets.roles]]\ngroups = [\"dbas\"]\nrole = \"postgres\"\n".into(),
        ..Default::default()
    })
    .await
}

async fn current_user(c: &tokio_postgres::Client) -> String {
    c.query_one("SELECT current_user::text", &[])
        .await
        .expect("current_user")
        .get(0)
}

fn item_exists(id: i32) -> bool {
    cluster()
        .cluster
        .psql(DB, &format!("SELECT count(*) FROM items WHERE id = {id}"))
        .expect("count")
        .trim()
        == "1"
}

#[tokio::test]
async fn a_pinned_session_meets_the_database_s_own_privileges_and_cannot_leave_its_role() {
    let gw = gateway().await;
    let c = gw.connect("agent@example.com").await;
    assert_eq!(current_user(&c).await, "pc_agent");
    // A hole in statement analysis meets PostgreSQL's privileges.
    let err = c
        .simple_query("DELETE FROM items WHERE id = 3")
        .await
        .expect_err("pc_agent may not delete");
    assert_eq!(db_error(&err).0, "42501", "{err}");
    assert!(item_exists(3));

    let escapes = [
        "SET ROLE NONE",
        "SET ROLE postgres",
        "set local role postgres",
        "RESET ROLE",
        "SET SESSION AUTHORIZATION postgres",
        "SELECT set_config('role', 'none', false)",
        "SELECT pg_catalog.set_config('ROLE'::text, 'postgres', false)",
        "SELECT set_config(x, 'none', false) FROM (VALUES ('role')) v(x)",
        "DO $$ BEGIN EXECUTE 'SET ROLE NONE'; END $$",
        "CREATE FUNCTION pg_temp.escape() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'SET ROLE NONE'; END $$",
        "PREPARE escape AS SELECT set_config('role', 'none', false)",
        "SELECT 1; SET ROLE NONE",
    ];
    for sql in escapes {
        let err = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(db_error(&err).0, "42501", "{sql}: {err}");
        if !sql.contains("; ") {
            let err = c.query(sql, &[]).await.expect_err(sql);
            assert_eq!(db_error(&err).0, "42501", "{sql} (extended): {err}");
        }
        assert_eq!(current_user(&c).await, "pc_agent", "after {sql}");
    }
    // What pools send comes back to the pinned role, not the gateway's.
    for sql in [
        "RESET ALL",
        "DISCARD ALL",
        "SET SESSION AUTHORIZATION DEFAULT",
    ] {
        match c.simple_query(sql).await {
            Ok(_) => {}
            Err(e) => assert_eq!(db_error(&e).0, "42501", "{sql}: {e}"),
        }
        assert_eq!(current_user(&c).await, "pc_agent", "after {sql}");
    }
    let err = c
        .simple_query("DELETE FROM items WHERE id = 3")
        .await
        .expect_err("still pc_agent");
    assert_eq!(db_error(&err).0, "42501");
    assert!(item_exists(3));
}

#[tokio::test]
async fn groups_pick_the_role_and_the_start_up_packet_cannot() {
    let gw = gateway().await;
    let dba_token = gw.issuer.mint(&TokenSpec {
        user: "dba@example.com".into(),
        groups: vec!["testers".into(), "dbas".into()],
        ttl_secs: 60,
    });
    let dba = gw
        .connect_with(&gw.pg_config("dba@example.com", &dba_token))
        .await
        .expect("dba connects");
    assert_eq!(current_user(&dba).await, "postgres");

    // Asking for a role in the start-up packet refuses the session, in
    // every spelling, whoever asks.
    for options in [
        "-c role=postgres",
        "--ROLE=postgres",
        "-c r\\ole=postgres",
        "-c session_authorization=postgres",
    ] {
        for (user, token) in [
            ("agent@example.com", gw.token("agent@example.com")),
            ("dba@example.com", dba_token.clone()),
        ] {
            let mut cfg = gw.pg_config(user, &token);
            cfg.options(options);
            let err = match gw.connect_with(&cfg).await {
                Ok(c) => panic!("{options}: session opened as {}", current_user(&c).await),
                Err(e) => e,
            };
            assert_eq!(db_error(&err).0, "42501", "{options}: {err}");
        }
    }
}

#[tokio::test]
async fn the_function_call_message_cannot_call_set_config() {
    let gw = gateway().await;
    let mut s = raw::login(&gw, "agent@example.com").await;
    // FunctionCall: set_config (OID 2078) ('role', 'none', false), text args.
    let mut b = BytesMut::new();
    let args: [&[u8]; 3] = [b"role", b"none", b"false"];
    let mut body = BytesMut::new();
    body.put_i32(2078);
    body.put_i16(0);
    body.put_i16(args.len() as i16);
    for a in args {
        body.put_i32(a.len() as i32);
        body.put_slice(a);
    }
    body.put_i16(0);
    b.put_u8(b'F');
    b.put_i32(body.len() as i32 + 4);
    b.put_slice(&body);
    raw::send(&mut s, &b).await;
    let (_, errors) = raw::until_ready(&mut s).await;
    assert_eq!(errors, ["42501"]);
    b.clear();
    raw::query(&mut b, "SELECT current_user::text");
    raw::send(&mut s, &b).await;
    let mut user = None;
    while let Some((tag, frame)) = raw::read_msg(&mut s).await {
        if tag == b'D' {
            // DataRow: header, one column (count, length), text.
            user = Some(String::from_utf8_lossy(&frame[11..]).to_string());
        }
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(user.as_deref(), Some("pc_agent"));
}

#[tokio::test]
async fn a_session_that_escapes_its_role_anyway_is_ended_before_its_next_statement() {
    let gw = gateway().await;
    let c = gw.connect("agent@example.com").await;
    // Attribute notation calls pc_escape(i) without a function call the
    // gateway's analysis sees (a documented gap): the role switch happens.
    let escaped = c
        .simple_query("SELECT i.pc_escape FROM items i LIMIT 1")
        .await;
    // The server reports is_superuser = on after the statement; the gateway
    // ends the session there, so nothing else runs as postgres.
    let next = c.simple_query("SELECT current_user::text").await;
    assert!(
        escaped.is_err() || next.is_err(),
        "the session went on after escaping: {escaped:?} / {next:?}"
    );
    let err = next.expect_err("the session is over");
    assert!(
        err.is_closed()
            || err
                .as_db_error()
                .is_some_and(|d| d.code().code() == "42501"),
        "{err:?}"
    );
    // A new session is pinned again.
    let c = gw.connect("agent@example.com").await;
    assert_eq!(current_user(&c).await, "pc_agent");
}

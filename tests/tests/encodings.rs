//! Client encodings other than UTF-8: the gateway reads each statement as
//! PostgreSQL converts it (single-byte encodings and SQL_ASCII), forwards
//! the client's bytes unchanged, and refuses the multibyte client encodings
//! it cannot read exactly.

use std::process::Command;

use bytes::BytesMut;
use portcullis::protocols::postgres::codec::encoding::ClientEncoding;
use portcullis_e2e::{
    cluster, db_error, plugin_wasm, raw, secret_file, GatewayOptions, TestGateway, DB,
};

const USER: &str = "encodings@example.com";

/// A table whose name is not ASCII, and a block rule on it.
fn gateway_options() -> GatewayOptions {
    // Once: tests run in parallel, and CREATE ... IF NOT EXISTS races.
    static TABLES: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        cluster()
            .cluster
            .psql(
                DB,
                "CREATE TABLE \"prix€\" (id int, v text);
                 INSERT INTO \"prix€\" VALUES (1, 'kept');
                 CREATE VIEW enc_to_latin9 AS SELECT set_config('client_encoding', 'LATIN9', false) AS s;
                 CREATE VIEW enc_to_utf8 AS SELECT set_config('client_encoding', 'UTF8', false) AS s;",
            )
            .expect("tables");
    });
    GatewayOptions::plugin(
        "block",
        &plugin_wasm("block"),
        r#"call_timeout_ms = 1000
[plugins.config]
search_path = ["public"]

[[plugins.config.rules]]
name = "no-prices"
tables = ["public.prix€"]
"#,
    )
}

/// Rows left in the table the rule protects (1 until a bypass deletes it).
fn prices() -> String {
    cluster()
        .cluster
        .psql(DB, "SELECT count(*) FROM \"prix€\"")
        .expect("count")
        .trim()
        .to_string()
}

/// Every byte of every encoding the gateway reads decodes to what
/// PostgreSQL's own conversion gives (or is refused where PostgreSQL
/// refuses it).
#[test]
fn the_gateway_reads_each_byte_as_postgres_converts_it() {
    let names = [
        "LATIN1",
        "LATIN2",
        "LATIN3",
        "LATIN4",
        "LATIN5",
        "LATIN6",
        "LATIN7",
        "LATIN8",
        "LATIN9",
        "LATIN10",
        "ISO_8859_5",
        "ISO_8859_6",
        "ISO_8859_7",
        "ISO_8859_8",
        "WIN1250",
        "WIN1251",
        "WIN1252",
        "WIN1253",
        "WIN1254",
        "WIN1255",
        "WIN1256",
        "WIN1257",
        "WIN1258",
        "WIN866",
        "WIN874",
        "KOI8R",
    ];
    // One row per encoding and byte: the converted character's code point,
    // or -1 where PostgreSQL has none.
    let sql = format!(
        "CREATE OR REPLACE FUNCTION pg_temp.conv(b int, enc text) RETURNS int LANGUAGE plpgsql AS $$
         BEGIN RETURN ascii(convert_from(decode(lpad(to_hex(b), 2, '0'), 'hex'), enc));
         EXCEPTION WHEN others THEN RETURN -1; END $$;
         SELECT enc || ' ' || string_agg(pg_temp.conv(b, enc)::text, ',' ORDER BY b)
         FROM unnest(ARRAY['{}']) enc, generate_series(128, 255) b GROUP BY enc ORDER BY enc",
        names.join("','")
    );
    let out = cluster().cluster.psql(DB, &sql).expect("conversions");
    let mut checked = 0;
    let mut differ = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let (name, codes) = line.trim().split_once(' ').expect("row");
        let enc = ClientEncoding::named(name).unwrap_or_else(|| panic!("{name} is read"));
        for (i, code) in codes.split(',').enumerate() {
            let byte = 128 + i as u8;
            let theirs: i64 = code.parse().expect("code point");
            let ours = enc
                .decode(&[byte])
                .map_or(-1, |s| s.chars().next().map_or(-1, |c| c as i64));
            if ours != theirs {
                differ.push(format!(
                    "{name} {byte:#04x}: ours {ours:#x}, PostgreSQL {theirs:#x}"
                ));
            }
            checked += 1;
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    assert_eq!(checked, names.len() * 128);
}

/// psql and psycopg in LATIN9 and WIN1252 see through the gateway what they
/// see directly: text in and out, and a switch of encoding mid-session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_byte_sessions_behave_as_they_do_directly() {
    let gw = TestGateway::start().await;
    let script = r#"
import os, subprocess, psycopg
target = os.environ["TARGET"]
psql = subprocess.run(["psql", target, "-X", "-At", "-c", b"SELECT 'caf\xe9 \x80', length('caf\xe9 \x80')"],
                      env={**os.environ, "PGCLIENTENCODING": "WIN1252"}, capture_output=True)
print(psql.returncode, psql.stdout)
with psycopg.connect(target, autocommit=True, client_encoding="LATIN9") as conn:
    print(conn.info.encoding, conn.execute("SELECT 'été €', length('été €')").fetchone())
    conn.execute("CREATE TEMP TABLE t (v text)")
    conn.execute("INSERT INTO t VALUES ('naïve €')")
    conn.execute("SET client_encoding TO 'WIN1252'")
    print(conn.info.encoding, conn.execute("SELECT v, convert_to(v, 'UTF8') FROM t").fetchone())
    conn.execute("RESET client_encoding")
    print(conn.info.encoding, conn.execute("SELECT v FROM t").fetchone())
with psycopg.connect(target, autocommit=True, client_encoding="SQL_ASCII") as conn:
    print(conn.execute("SELECT convert_to('ok', 'UTF8')").fetchone())
"#;
    let (direct, through) = tokio::task::block_in_place(|| gw.direct_and_through(USER, script));
    assert!(direct.contains("b'caf\\xe9 \\x80|6\\n'"), "{direct}");
    assert!(direct.contains("iso8859-15 ("), "{direct}");
    assert_eq!(through, direct);
}

/// A rule on a table whose name is not ASCII holds in every encoding the
/// table can be named in, including after a switch mid-session; the
/// multibyte client encodings are refused at start and when switched to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_hold_in_every_encoding_and_unread_ones_are_refused() {
    let gw = TestGateway::start_with(gateway_options()).await;
    let wipe_in = |bytes: &[u8]| {
        let mut sql = b"DELETE FROM \"prix".to_vec();
        sql.extend_from_slice(bytes);
        sql.extend_from_slice(b"\" WHERE id = 1");
        sql
    };
    // The euro sign in each encoding that has one.
    for (encoding, euro) in [
        ("UTF8", &b"\xe2\x82\xac"[..]),
        ("LATIN9", b"\xa4"),
        ("WIN1252", b"\x80"),
        ("WIN1250", b"\x80"),
        ("ISO_8859_7", b"\xa4"),
    ] {
        let mut s = raw::login_with(&gw, USER, &[("client_encoding", encoding)]).await;
        let mut b = BytesMut::new();
        raw::query_bytes(&mut b, &wipe_in(euro));
        raw::send(&mut s, &b).await;
        let (_, codes) = raw::until_ready(&mut s).await;
        assert_eq!(codes, vec!["42501".to_string()], "{encoding}");
        assert_eq!(prices(), "1", "the row was deleted in {encoding}");
        // Switched to mid-session, pipelined right behind the switch.
        let mut s = raw::login(&gw, USER).await;
        b.clear();
        raw::query(&mut b, &format!("SET client_encoding TO '{encoding}'"));
        raw::query_bytes(&mut b, &wipe_in(euro));
        raw::send(&mut s, &b).await;
        let (_, codes) = raw::until_ready(&mut s).await;
        assert!(codes.is_empty(), "{codes:?}");
        let (_, codes) = raw::until_ready(&mut s).await;
        assert_eq!(codes, vec!["42501".to_string()], "after SET {encoding}");
        assert_eq!(prices(), "1", "the row was deleted after SET {encoding}");
    }
    // Back to UTF-8 from WIN1252, pipelined: read as WIN1252 the euro's
    // UTF-8 bytes would be "â‚¬", another table, and the rule would miss.
    let mut s = raw::login_with(&gw, USER, &[("client_encoding", "WIN1252")]).await;
    let mut b = BytesMut::new();
    raw::query(&mut b, "SET client_encoding TO 'UTF8'");
    raw::query_bytes(&mut b, &wipe_in("€".as_bytes()));
    raw::send(&mut s, &b).await;
    raw::until_ready(&mut s).await;
    let (_, codes) = raw::until_ready(&mut s).await;
    assert_eq!(codes, vec!["42501".to_string()], "back to UTF-8");
    assert_eq!(
        prices(),
        "1",
        "the row was deleted after switching back to UTF-8"
    );
    // In LATIN1 0xA4 is "¤", another table: the rule does not apply and
    // PostgreSQL finds no such table.
    let mut s = raw::login_with(&gw, USER, &[("client_encoding", "LATIN1")]).await;
    let mut b = BytesMut::new();
    raw::query_bytes(&mut b, &wipe_in(b"\xa4"));
    raw::send(&mut s, &b).await;
    let (_, codes) = raw::until_ready(&mut s).await;
    assert_eq!(codes, vec!["42P01".to_string()]);
    assert_eq!(prices(), "1");

    // Multibyte client encodings: refused at start, however they are set.
    let c = gw.connect(USER).await;
    for encoding in ["SJIS", "BIG5", "GBK", "EUC_JP", "KOI8U"] {
        let out = tokio::task::block_in_place(|| {
            Command::new("psql")
                .arg(gw.conninfo(USER))
                .args(["-X", "-At", "-c", "SELECT 1"])
                .env("PGPASSWORD", gw.token(USER))
                .env("PGCLIENTENCODING", encoding)
                .output()
                .expect("psql is installed")
        });
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{encoding} was let in");
        assert!(
            stderr.contains("single-byte encodings"),
            "{encoding}: {stderr}"
        );
        let err = c
            .simple_query(&format!("SET client_encoding TO '{encoding}'"))
            .await
            .expect_err(encoding);
        assert_eq!(db_error(&err).0, "42501", "{encoding}: {err}");
    }
    let enc: String = c
        .query_one("SHOW client_encoding", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(enc, "UTF8");
}

/// What may switch the encoding unseen — a revert (`RESET ALL`,
/// `ROLLBACK`, `DISCARD ALL`), a prepared `set_config`, a view whose read
/// switches it and back within one batch — cannot make the gateway read
/// text that is not ASCII otherwise than the server: such text is read
/// only first in its batch, once everything before is answered. Names
/// that are not ASCII are refused (the server converts them too).
#[tokio::test]
async fn unseen_switches_cannot_change_what_non_ascii_text_means() {
    let gw = TestGateway::start_with(gateway_options()).await;
    // UTF-8 bytes of the euro sign: in LATIN9 they are three other letters.
    let wipe = "DELETE FROM \"prix€\" WHERE id = 1".as_bytes().to_vec();
    for revert in [
        "RESET ALL",
        "DISCARD ALL",
        "RESET client_encoding",
        "BEGIN; SET LOCAL client_encoding = 'LATIN9'; COMMIT",
    ] {
        let mut s = raw::login(&gw, USER).await;
        let mut b = BytesMut::new();
        if !revert.starts_with("BEGIN") {
            raw::query(&mut b, "SET client_encoding = 'LATIN9'");
            raw::send(&mut s, &b).await;
            raw::until_ready(&mut s).await;
            b.clear();
        }
        // One write: the revert, then the statement.
        raw::query(&mut b, revert);
        raw::query_bytes(&mut b, &wipe);
        raw::send(&mut s, &b).await;
        raw::until_ready(&mut s).await;
        let (_, codes) = raw::until_ready(&mut s).await;
        assert_eq!(codes, vec!["42501".to_string()], "after {revert}");
        assert_eq!(prices(), "1", "the row was deleted after {revert}");
    }
    // A switch and a switch back inside one batch (no ParameterStatus):
    // the statement between is refused, not read in the wrong encoding
    // (read as LATIN9, the euro's UTF-8 bytes name another table).
    let mut s = raw::login_with(&gw, USER, &[("client_encoding", "LATIN9")]).await;
    let mut b = BytesMut::new();
    raw::parse(&mut b, "", "SELECT * FROM enc_to_utf8");
    raw::bind(&mut b, "", "", &[]);
    raw::execute(&mut b, "");
    raw::parse_bytes(&mut b, b"", &wipe);
    raw::bind(&mut b, "", "", &[]);
    raw::execute(&mut b, "");
    raw::parse(&mut b, "", "SELECT * FROM enc_to_latin9");
    raw::bind(&mut b, "", "", &[]);
    raw::execute(&mut b, "");
    raw::sync(&mut b);
    raw::send(&mut s, &b).await;
    let (_, codes) = raw::until_ready(&mut s).await;
    assert_eq!(codes, vec!["42501".to_string()], "mid-batch");
    assert_eq!(prices(), "1", "the row was deleted mid-batch");
    // Names that are not ASCII: refused, in Parse and in Bind.
    for (name, enc) in [(&b"\xc3\xa9"[..], "UTF8"), (b"\xe9", "LATIN1")] {
        let mut s = raw::login_with(&gw, USER, &[("client_encoding", enc)]).await;
        b.clear();
        raw::parse_bytes(&mut b, name, b"SELECT 1");
        raw::sync(&mut b);
        raw::send(&mut s, &b).await;
        let (_, codes) = raw::until_ready(&mut s).await;
        assert_eq!(codes, vec!["42501".to_string()], "Parse named {name:?}");
    }
}

/// A SQL_ASCII database converts nothing, so it reads a single-byte
/// client's bytes otherwise than the gateway would: only UTF-8 and
/// SQL_ASCII sessions are served on it.
#[tokio::test]
async fn a_sql_ascii_database_serves_only_utf8_sessions() {
    let c = cluster();
    let _ = c.cluster.psql(
        "postgres",
        "CREATE DATABASE enc_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    let mut options = gateway_options();
    let password = secret_file("enc-ascii-password", c.cluster.password());
    options.tail.push_str(&format!(
        "\n[[targets]]\nname = \"enc_ascii\"\nhost = \"127.0.0.1\"\nport = {}\ndatabase = \"enc_ascii\"\nuser = \"postgres\"\npassword_file = {:?}\nallow_groups = [\"testers\"]\n",
        c.cluster.port(),
        password.display().to_string()
    ));
    let gw = TestGateway::start_with(options).await;
    let login = |encoding: &'static str| {
        let gw = &gw;
        async move {
            let mut s = tokio::net::TcpStream::connect(gw.plain_addr)
                .await
                .expect("connect");
            let mut b = BytesMut::new();
            portcullis::protocols::postgres::codec::startup::encode_startup(
                &mut b,
                &[
                    ("user", USER),
                    ("database", "enc_ascii"),
                    ("client_encoding", encoding),
                ],
            );
            raw::send(&mut s, &b).await;
            raw::read_msg(&mut s).await.expect("authentication request");
            b.clear();
            portcullis::protocols::postgres::codec::authentication::encode_password(
                &mut b,
                &gw.token(USER),
            );
            raw::send(&mut s, &b).await;
            let (_, codes) = raw::until_ready(&mut s).await;
            (s, codes)
        }
    };
    let (_, codes) = login("LATIN1").await;
    assert_eq!(codes, vec!["08001".to_string()], "LATIN1 on SQL_ASCII");
    let (mut s, codes) = login("UTF8").await;
    assert!(codes.is_empty(), "{codes:?}");
    let mut b = BytesMut::new();
    raw::query(&mut b, "SET client_encoding = 'LATIN1'");
    raw::send(&mut s, &b).await;
    let (_, codes) = raw::until_closed(&mut s).await;
    assert!(codes.contains(&"0A000".to_string()), "{codes:?}");
}

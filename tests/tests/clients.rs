//! Real client programs through the gateway: psql (with meta-commands and
//! `\copy`), pgbench, and psycopg 3 from Python.

use std::process::Command;

use portcullis_e2e::{cluster, TestGateway};

const USER: &str = "cli@example.com";

fn psql(gw: &TestGateway, args: &[&str]) -> std::process::Output {
    Command::new("psql")
        .arg(gw.conninfo(USER))
        .args(["-X", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env("PGPASSWORD", gw.token(USER))
        .env("PGSSLROOTCERT", &cluster().cert)
        .output()
        .expect("psql is installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_and_copy() {
    let gw = TestGateway::start().await;
    let out = psql(&gw, &["-c", "\\d items"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Table \"public.items\""), "{stdout}");
    assert!(stdout.contains("items_pkey"), "{stdout}");

    let file = cluster()
        .dir
        .join(format!("copy-{}.csv", std::process::id()));
    let copy_out = format!(
        "\\copy (SELECT id, name FROM items WHERE id <= 10) TO '{}' CSV",
        file.display()
    );
    let out = psql(&gw, &["-c", &copy_out]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 10);
    assert!(text.starts_with("1,item 1\n"), "{text}");

    let copy_in = format!("\\copy copied FROM '{}' CSV", file.display());
    let out = psql(
        &gw,
        &[
            "-c",
            "CREATE TEMP TABLE copied (id int, name text)",
            "-c",
            &copy_in,
            "-At",
            "-c",
            "SELECT count(*), max(name) FROM copied",
        ],
    );
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("10|item 9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_shows_refusals_with_hint() {
    let gw = TestGateway::start().await;
    let out = Command::new("psql")
        .arg(gw.conninfo(USER))
        .args(["-X", "-c", "SELECT 1"])
        .env("PGPASSWORD", "not-a-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FATAL:  password authentication failed"),
        "{stderr}"
    );
    assert!(stderr.contains("HINT:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_through_the_gateway() {
    let gw = TestGateway::start().await;
    let token = gw.token(USER);
    let conn = gw.conninfo(USER);
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", "--foreign-keys", &conn])
        .env("PGPASSWORD", &token)
        .output()
        .expect("pgbench is installed");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = Command::new("pgbench")
        .args(["-c", "4", "-j", "2", "-t", "200", "-M", "prepared", &conn])
        .env("PGPASSWORD", &token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("number of transactions actually processed: 800/800"),
        "{stdout}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_from_python() {
    let gw = TestGateway::start().await;
    let script = r#"
import os, sys, psycopg
with psycopg.connect(os.environ["CONNINFO"], password=os.environ["TOKEN"]) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM items WHERE id = %s", (3,))
        print(cur.fetchone()[0])
        cur.execute("SELECT %s::text || %s::text", ("a", "b"))
        print(cur.fetchone()[0])
        with cur.copy("COPY (SELECT id FROM items WHERE id <= 3 ORDER BY id) TO STDOUT") as copy:
            print(",".join(bytes(chunk).decode().strip() for chunk in copy))
        try:
            cur.execute("SELECT * FROM no_such_table")
        except psycopg.errors.UndefinedTable as e:
            print("error", e.sqlstate)
    conn.rollback()
"#;
    let stdout = gw.python(USER, script);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "item 3",
            "ab",
            "1\n2\n3".replace('\n', ",").as_str(),
            "error 42P01"
        ]
    );
}

/// libpq 17+ sends a cancel request over TLS when the session uses TLS; it
/// expects the server to close that connection cleanly (a TLS close, as
/// PostgreSQL does), and reports anything else as a failed cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_over_tls_from_libpq_17_succeeds_and_cancels() {
    let gw = TestGateway::start().await;
    let script = r#"
import os, threading, time, psycopg
conninfo, token = os.environ["CONNINFO"], os.environ["TOKEN"]
assert psycopg.pq.version() >= 170000, psycopg.pq.version()
conn = psycopg.connect(conninfo, password=token, autocommit=True)
watcher = psycopg.connect(conninfo, password=token, autocommit=True)
result = {}
def run():
    try:
        conn.execute("SELECT pg_sleep(20) /* tls-cancel-victim */")
        result["query"] = "finished"
    except psycopg.errors.QueryCanceled:
        result["query"] = "canceled"
    except Exception as e:
        result["query"] = repr(e)
t = threading.Thread(target=run)
t.start()
deadline = time.time() + 10
while time.time() < deadline:
    n = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%tls-cancel-victim%' AND pid <> pg_backend_pid()").fetchone()[0]
    if n:
        break
    time.sleep(0.05)
try:
    conn.cancel_safe(timeout=10)
    result["cancel"] = "ok"
except Exception as e:
    result["cancel"] = repr(e)
t.join(25)
print(result["cancel"])
print(result.get("query"))
"#;
    let stdout = gw.python(USER, script);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["ok", "canceled"],
        "{stdout}"
    );
}

/// A binary COPY out of one session streamed into COPY FROM STDIN of
/// another, both through the gateway, at once (psycopg's own test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_copy_streamed_from_one_session_into_another() {
    let gw = TestGateway::start().await;
    let script = r#"
import os, psycopg
conninfo, token = os.environ["CONNINFO"], os.environ["TOKEN"]
with psycopg.connect(conninfo, password=token, autocommit=True) as a, psycopg.connect(conninfo, password=token, autocommit=True) as b:
    b.execute("CREATE TEMP TABLE copy_target (id int, name text, payload bytea)")
    with a.cursor().copy("COPY (SELECT g, 'row ' || g, decode(repeat('ab', 200), 'hex') FROM generate_series(1, 50000) g) TO STDOUT (FORMAT BINARY)") as src:
        with b.cursor().copy("COPY copy_target FROM STDIN (FORMAT BINARY)") as dst:
            for chunk in src:
                dst.write(chunk)
    print(b.execute("SELECT count(*), sum(id) FROM copy_target").fetchone())
"#;
    let started = std::time::Instant::now();
    let stdout = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        tokio::task::block_in_place(|| gw.python(USER, script))
    })
    .await
    .expect("the copy finishes");
    println!("binary copy through the gateway: {:?}", started.elapsed());
    assert_eq!(stdout.trim(), "(50000, 1250025000)", "{stdout}");
}

/// What a client reads right after connecting — server_version and the
/// other ParameterStatus values — is what PostgreSQL itself sends, over
/// every way of starting a session: SSLRequest then TLS, direct TLS
/// (libpq 17's sslnegotiation=direct) and the plaintext loopback listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_status_after_connect_is_postgres_own_on_every_start_up_path() {
    let gw = TestGateway::start().await;
    let c = portcullis_e2e::cluster();
    let direct = format!(
        "host=127.0.0.1 port={} dbname={} user=postgres password={} sslmode=disable",
        c.cluster.port(),
        portcullis_e2e::DB,
        c.cluster.password()
    );
    let via_tls = gw.conninfo(USER);
    let via_direct_tls = format!("{via_tls} sslnegotiation=direct");
    let via_plain = format!(
        "host=127.0.0.1 port={} dbname={} user={USER} sslmode=disable",
        gw.plain_addr.port(),
        portcullis_e2e::DB
    );
    let script = r#"
import os, json, psycopg
names = ["server_version", "server_encoding", "client_encoding", "DateStyle", "IntervalStyle",
         "TimeZone", "integer_datetimes", "standard_conforming_strings", "in_hot_standby"]
def seen(conninfo, password):
    with psycopg.connect(conninfo, password=password) as conn:
        return {n: conn.info.parameter_status(n) for n in names}
out = {"direct": seen(os.environ["DIRECT"], None)}
for path in ["TLS", "DIRECT_TLS", "PLAIN"]:
    out[path] = seen(os.environ[path], os.environ["TOKEN"])
print(json.dumps(out))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .env("DIRECT", &direct)
        .env("TLS", &via_tls)
        .env("DIRECT_TLS", &via_direct_tls)
        .env("PLAIN", &via_plain)
        .env("TOKEN", gw.token(USER))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let direct = &seen["direct"];
    assert!(direct["server_version"].is_string(), "{seen}");
    for path in ["TLS", "DIRECT_TLS", "PLAIN"] {
        assert_eq!(&seen[path], direct, "{path}: {seen}");
    }
}

/// NOTIFY reaches a listener through the gateway at once and in order:
/// while it waits idle, and when it arrived while the listener was busy
/// with a query (psycopg's notifies() with stop_after, as its own test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_arrive_at_once_and_in_order() {
    let gw = TestGateway::start().await;
    let script = r#"
import os, threading, time, psycopg
conninfo, token = os.environ["CONNINFO"], os.environ["TOKEN"]
listener = psycopg.connect(conninfo, password=token, autocommit=True)
sender = psycopg.connect(conninfo, password=token, autocommit=True)
listener.execute("LISTEN portcullis_chan")
# Idle: the listener waits, notifications come from another session.
def send(n, delay):
    time.sleep(delay)
    for i in range(n):
        sender.execute(f"NOTIFY portcullis_chan, 'idle {i}'")
t = threading.Thread(target=send, args=(3, 0.3))
t.start()
started = time.time()
got = [n.payload for n in listener.notifies(timeout=10, stop_after=3)]
t.join()
print(got, round(time.time() - started) < 5)
# Busy: they arrive while the listener runs a query.
sending = threading.Thread(target=send, args=(2, 0.2))
sending.start()
listener.execute("SELECT pg_sleep(1)")
sending.join()
got = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
print(got)
# Sent before the listener asks: they wait in the connection, in order.
send(2, 0)
time.sleep(0.3)
got = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
print(got)
"#;
    let stdout = tokio::task::block_in_place(|| gw.python(USER, script));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "['idle 0', 'idle 1', 'idle 2'] True",
            "['idle 0', 'idle 1']",
            "['idle 0', 'idle 1']"
        ],
        "{stdout}"
    );
}

/// A client that asks for a multibyte client encoding the gateway does not
/// read (SJIS, BIG5) is refused at once with a message that says so and
/// what to do; a UTF-8 session goes on as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multibyte_client_encodings_are_refused_with_a_clear_message() {
    let gw = TestGateway::start().await;
    let out = Command::new("psql")
        .arg(gw.conninfo(USER))
        .args(["-X", "-A", "-t", "-c", "SELECT 1"])
        .env("PGPASSWORD", gw.token(USER))
        .env("PGSSLROOTCERT", &cluster().cert)
        .env("PGCLIENTENCODING", "SJIS")
        .output()
        .expect("psql is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an SJIS session was opened");
    assert!(stderr.contains("convert multibyte text"), "{stderr}");
    let script = r#"
import os, psycopg
try:
    psycopg.connect(os.environ["CONNINFO"], password=os.environ["TOKEN"], client_encoding="big5")
except psycopg.OperationalError as e:
    print("refused", "single-byte encodings" in str(e))
with psycopg.connect(os.environ["CONNINFO"], password=os.environ["TOKEN"]) as conn:
    print(conn.execute("SELECT 'café'").fetchone()[0])
"#;
    let stdout = gw.python(USER, script);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["refused True", "café"],
        "{stdout}"
    );
}

/// A client reads back the `application_name` it set — in the start-up
/// ParameterStatus, after SET and RESET, through SHOW and current_setting —
/// exactly as PostgreSQL answers it directly, while the upstream's
/// `pg_stat_activity` names the person behind the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reads_back_its_own_application_name() {
    let gw = TestGateway::start().await;
    let long = "x".repeat(65);
    for app in [
        ", application_name='report-tool'".to_string(),
        String::new(),
        format!(", application_name='{long}'"),
    ] {
        let script = format!(
            r#"
import os, subprocess, psycopg
# psql shows the notice PostgreSQL sends at start-up for a name it cuts.
psql = subprocess.run(["psql", os.environ["TARGET"], "-X", "-At", "-c", "SHOW application_name"],
                      env={{**os.environ, "PGAPPNAME": "{long}"}}, capture_output=True, text=True)
print(psql.stdout.strip(), "will be truncated" in psql.stderr)
with psycopg.connect(os.environ["TARGET"], autocommit=True{app}) as conn:
    status = lambda: repr(conn.info.parameter_status("application_name"))
    show = lambda: conn.execute("SHOW application_name").fetchone()[0]
    print(status(), show())
    print(conn.execute("SELECT current_setting('application_name')").fetchone()[0])
    conn.execute("SET application_name = 'pool-2'")
    print(status(), show())
    conn.execute("RESET application_name")
    print(status(), show())
    with conn.transaction():
        conn.execute("SET LOCAL application_name = 'in-tx'")
        print(status(), show())
    print(status(), show())
    # The server's own view of the session (two columns: not the client's).
    print(conn.execute("SELECT application_name, 1 FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()[0])
"#
        );
        let (direct, through) =
            tokio::task::block_in_place(|| gw.direct_and_through(USER, &script));
        // The last line is the server's own view.
        let last_line = |out: &str| -> (String, String) {
            let out = out.strip_suffix('\n').unwrap_or(out);
            let (seen, last) = out.rsplit_once('\n').expect("lines");
            (seen.to_string(), last.to_string())
        };
        let (direct, _) = last_line(&direct);
        let (via, upstream) = last_line(&through);
        assert_eq!(via, direct, "what the client reads back ({app})");
        assert!(direct.contains("pool-2"), "{direct}");
        assert!(
            direct.starts_with(&format!("{} True", "x".repeat(63))),
            "{direct}"
        );
        let via = format!(" via portcullis: {USER}");
        let expected = if app.is_empty() {
            format!("portcullis: {USER}")
        } else if app.contains(&long) {
            // A long application name is cut, never the person.
            format!("{}{via}", "x".repeat(63 - via.len()))
        } else {
            format!("report-tool{via}")
        };
        assert_eq!(upstream, expected, "what the upstream sees ({app})");
    }
}

/// A pool that checks its connections (psycopg_pool) finds the ones whose
/// server session was terminated and replaces them; the client of a
/// terminated session gets the server's error. The same as directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_replaces_terminated_connections_as_it_does_directly() {
    let gw = TestGateway::start().await;
    let script = r#"
import os, time, psycopg
from psycopg_pool import ConnectionPool
target = os.environ["TARGET"]
admin = psycopg.connect(os.environ["ADMIN"], autocommit=True)
def terminate(app):
    n = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE %s AND pid <> pg_backend_pid()", (app + "%",)).fetchone()[0]
    deadline = time.time() + 10
    while time.time() < deadline and admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s", (app + "%",)).fetchone()[0]:
        time.sleep(0.05)
    return n
victim = psycopg.connect(target, autocommit=True, application_name="victim")
print("terminated", terminate("victim"))
try:
    victim.execute("SELECT 1")
    print("still answers")
except psycopg.OperationalError as e:
    print(type(e).__name__, "closed" if victim.closed else "open")
pool = ConnectionPool(target, min_size=2, max_size=2, kwargs={"autocommit": True, "application_name": "pool-test"}, check=ConnectionPool.check_connection, open=True)
pool.wait(10)
print("terminated", terminate("pool-test"))
for _ in range(3):
    with pool.connection() as c:
        print(c.execute("SELECT 'answered'").fetchone()[0])
print("lost", pool.get_stats().get("connections_lost", 0))
pool.close()
"#;
    let (direct, through) = tokio::task::block_in_place(|| gw.direct_and_through(USER, script));
    assert!(direct.contains("lost 2"), "{direct}");
    assert_eq!(through, direct);
}

/// Ctrl-C in psql cancels its running statement and psql ends; a client
/// killed mid-statement leaves no session behind once its statement ends.
/// The same as directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_and_killed_clients_end_as_they_do_directly() {
    let gw = TestGateway::start().await;
    let script = r#"
import os, signal, subprocess, time, psycopg
target = os.environ["TARGET"]
admin = psycopg.connect(os.environ["ADMIN"], autocommit=True)
def active(marker):
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()", ("%" + marker + "%",)).fetchone()[0]
def wait_for(marker, want):
    deadline = time.time() + 15
    while time.time() < deadline and active(marker) != want:
        time.sleep(0.05)
    return active(marker)
def run_until_active(cmd, marker):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    print("running", wait_for(marker, 1))
    return p
# Ctrl-C: psql sends a cancel request and reports it.
p = run_until_active(["psql", target, "-X", "-c", "SELECT pg_sleep(30) /* ctrl-c */"], "ctrl-c */")
p.send_signal(signal.SIGINT)
out, err = p.communicate(timeout=15)
print("psql exit", p.returncode, "canceling statement due to user request" in err)
print("left", wait_for("ctrl-c */", 0))
# kill -9: the statement runs to its end, then the session is gone.
child = "import os, psycopg; psycopg.connect(os.environ['TARGET']).execute('SELECT pg_sleep(2) /* killed */')"
p = run_until_active(["python3", "-c", child], "killed */")
p.kill()
p.wait()
print("left", wait_for("killed */", 0))
"#;
    let (direct, through) = tokio::task::block_in_place(|| gw.direct_and_through(USER, script));
    assert_eq!(
        direct.lines().collect::<Vec<_>>(),
        [
            "running 1",
            "psql exit 1 True",
            "left 0",
            "running 1",
            "left 0"
        ],
        "{direct}"
    );
    assert_eq!(through, direct);
}

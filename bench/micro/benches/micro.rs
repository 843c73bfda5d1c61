//! Micro-benchmarks of the hot paths, each beside a baseline measured in the
//! same run: frame parsing (vs copying the same bytes), SQL summaries (cache
//! hit, hit with other constants, miss), JWT validation with a cached key,
//! plugin instantiation, a hook call through the block + mask chain (vs the
//! pass-through policy), masking a batch of rows through the mask plugin
//! (vs the same batch through a plugin-less policy), and committing a batch
//! of statement events to the audit store (vs a batch of minimal rows in
//! the same store), and an SSH terminal's output read for typed lines (vs
//! copying the same bytes).
//!
//! Run: `cargo bench -p portcullis-bench` (results in docs/performance.md).

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis::policy::{PassThrough, QueryEvent, QueryNote, ResultColumn, SessionPolicy};
use portcullis::protocols::postgres::codec::{data_row, row_description};
use portcullis::protocols::postgres::sql::{summarize, SummaryCache};
use portcullis_bench::{config, plugin_dir, runtime, session};

fn frames(c: &mut Criterion) {
    let mut row = BytesMut::new();
    let values: [&[u8]; 3] = [
        b"12345",
        b"customer 12345",
        b"827ccb0eea8a706c4c34a16891f84e7b",
    ];
    data_row::encode(&mut row, values.iter().map(|v| Some(*v)));
    let mut g = c.benchmark_group("frames");
    g.bench_function("copy DataRow bytes (baseline)", |b| {
        b.iter(|| black_box(row.to_vec()))
    });
    g.bench_function("decode DataRow (3 columns)", |b| {
        b.iter(|| black_box(data_row::decode(black_box(&row)).map(|v| v.len())))
    });
    // RowDescription of pgbench's `SELECT abalance ...` plus two columns.
    let mut desc = BytesMut::new();
    {
        use bytes::BufMut;
        let mut body = BytesMut::new();
        body.put_i16(3);
        for name in ["aid", "abalance", "filler"] {
            body.put_slice(name.as_bytes());
            body.put_u8(0);
            body.put_u32(16384);
            body.put_i16(1);
            body.put_u32(23);
            body.put_i16(4);
            body.put_i32(-1);
            body.put_i16(0);
        }
        desc.put_u8(b'T');
        desc.put_i32(body.len() as i32 + 4);
        desc.put_slice(&body);
    }
    g.bench_function("decode RowDescription (3 columns)", |b| {
        b.iter(|| black_box(row_description::decode(black_box(&desc)).map(|v| v.len())))
    });
    g.finish();
}

fn summaries(c: &mut Criterion) {
    let cache = SummaryCache::default();
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;";
    cache.get(sql);
    let mut g = c.benchmark_group("sql summary");
    g.bench_function("cache hit (same text)", |b| {
        b.iter(|| black_box(cache.get(black_box(sql))))
    });
    let mut n = 0u64;
    g.bench_function("cache hit (other constants)", |b| {
        b.iter(|| {
            n += 1;
            let text = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n};");
            black_box(cache.get(&text))
        })
    });
    g.bench_function("miss (parse + fingerprint + walk)", |b| {
        b.iter(|| black_box(summarize(black_box(sql))))
    });
    g.finish();
}

fn jwt(c: &mut Criterion) {
    use portcullis::demo::issuer::{DevIssuer, DevKey, TokenSpec};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (issuer, auth) = rt.block_on(async {
        let issuer = DevIssuer::start(DevKey::generate_es256().expect("key"), "bench", 0)
            .await
            .expect("issuer");
        let cfg = portcullis::config::Config::parse(&format!(
            r#"
[[listeners]]
address = "127.0.0.1:6432"
plaintext_loopback_dev = true
[[identity_providers]]
name = "dev"
issuer = "{}"
insecure_loopback_issuer = true
audience = "bench"
algorithms = ["ES256"]
[[targets]]
name = "t"
host = "127.0.0.1"
database = "t"
user = "u"
allow_groups = ["g"]
"#,
            issuer.url()
        ))
        .expect("config");
        let http = portcullis::http_client::HttpClient::new(Duration::from_secs(5)).expect("http");
        let auth = portcullis::identity::Authenticator::new(&cfg.identity_providers, http)
            .expect("authenticator");
        (issuer, auth)
    });
    let token = issuer.mint(&TokenSpec {
        user: "alice@example.com".into(),
        groups: vec!["g".into()],
        ttl_secs: 3600,
    });
    // The first validation fetches the JWKS; the measured ones use the cache.
    rt.block_on(auth.authenticate(&token))
        .expect("token validates");
    c.bench_function("JWT validation (ES256, cached key)", |b| {
        b.iter(|| black_box(rt.block_on(auth.authenticate(black_box(&token))).is_ok()))
    });
}

fn plugins(c: &mut Criterion) {
    let dir = plugin_dir();
    let cfg = config(&dir);
    let (rt, mut loaded) = runtime(&cfg);
    let noop = loaded.pop().expect("noop plugin");
    let mut g = c.benchmark_group("plugins");
    g.bench_function("instantiate a session (one no-op plugin)", |b| {
        b.iter(|| black_box(session(&rt, vec![noop.clone()])))
    });
    g.bench_function("instantiate a session (block + mask)", |b| {
        b.iter(|| black_box(session(&rt, loaded.clone())))
    });
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;";
    let mut pass: Box<dyn SessionPolicy> = Box::new(PassThrough);
    g.bench_function("query hook, pass-through policy (baseline)", |b| {
        b.iter(|| {
            black_box(pass.on_query(
                QueryEvent::Simple {
                    sql: black_box(sql),
                },
                &mut QueryNote::default(),
            ))
        })
    });
    let mut one = session(&rt, vec![noop]);
    g.bench_function(
        "query hook, one no-op plugin (a call; summary cached)",
        |b| {
            b.iter(|| {
                black_box(one.on_query(
                    QueryEvent::Simple {
                        sql: black_box(sql),
                    },
                    &mut QueryNote::default(),
                ))
            })
        },
    );
    let mut s = session(&rt, loaded.clone());
    g.bench_function(
        "query hook, block + mask (verdict reused: same shape)",
        |b| {
            b.iter(|| {
                black_box(s.on_query(
                    QueryEvent::Simple {
                        sql: black_box(sql),
                    },
                    &mut QueryNote::default(),
                ))
            })
        },
    );
    g.finish();

    // Masking: 1000 rows of (id, name, card_number), card_number masked.
    let cols: Vec<ResultColumn> = [
        ("id", 23u32, "public.customers.id"),
        ("name", 25, "public.customers.name"),
        ("card_number", 25, "public.customers.card_number"),
    ]
    .iter()
    .map(|(name, ty, source)| ResultColumn {
        name: name.to_string(),
        table_oid: 16384,
        attribute_number: 1,
        type_oid: *ty,
        format: 0,
        source: Some(source.to_string()),
    })
    .collect();
    let ids: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let rows: Vec<Vec<Option<&[u8]>>> = ids
        .iter()
        .map(|id| {
            vec![
                Some(id.as_bytes()),
                Some(&b"Ada Lovelace"[..]),
                Some(&b"4111 1111 1111 1111"[..]),
            ]
        })
        .collect();
    let mut g = c.benchmark_group("masking 1000 rows");
    g.throughput(Throughput::Elements(rows.len() as u64));
    let mut pass: Box<dyn SessionPolicy> = Box::new(PassThrough);
    g.bench_function("pass-through policy (baseline)", |b| {
        b.iter(|| black_box(pass.on_data_rows(black_box(&rows)).len()))
    });
    let mut s = session(&rt, loaded);
    let plan = s.on_row_description(&cols, None);
    assert_eq!(plan, portcullis::policy::ResultPlan::Watch);
    assert_eq!(s.on_data_rows(&rows).len(), rows.len(), "one edit per row");
    g.bench_function("block + mask, one masked column", |b| {
        b.iter(|| black_box(s.on_data_rows(black_box(&rows)).len()))
    });
    g.finish();
}

/// What storing one recorded statement costs the audit writer: a group of
/// 1,000 pgbench-like events committed in one transaction (simple-protocol
/// texts, or runs of one prepared statement), beside the same number of
/// plugin-load records (four short columns, no secondary index).
fn audit_store(c: &mut Criterion) {
    use portcullis::store::sqlite::SqliteStore;
    use portcullis::store::{EventRecord, EventStatus, PluginLoadRecord, Record, Store};
    let dir = std::env::temp_dir().join(format!("portcullis-micro-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = match SqliteStore::open(&dir.join("audit.db")) {
        Ok(s) => s,
        Err(e) => panic!("cannot open a scratch store: {e}"),
    };
    const N: u64 = 1000;
    let mut seq = 0u64;
    // `prepared`: every event runs one prepared statement (one text);
    // otherwise each has its own literal, as simple-protocol pgbench sends.
    let prepared_sql: std::sync::Arc<str> =
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;".into();
    let mut events = |session: u64, prepared: bool| -> Vec<Record> {
        (0..N)
            .map(|i| {
                seq += 1;
                Record::Event(EventRecord {
                    session_id: session + i % 16,
                    seq,
                    at: seq as i64,
                    protocol: if prepared { "extended" } else { "simple" }.into(),
                    sql: if prepared {
                        prepared_sql.clone()
                    } else {
                        format!(
                            "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                            seq % 1_000_000
                        )
                        .into()
                    },
                    fingerprint: "5e6b1f0a9c2d4e11".into(),
                    kinds: vec!["select".into()].into(),
                    tables_read: vec!["public.pgbench_accounts".into()].into(),
                    tables_written: vec![].into(),
                    verdict: "allow".into(),
                    decided_by: None,
                    rule: None,
                    reason: None,
                    status: EventStatus::Ok,
                    duration_us: Some(180),
                    rows: Some(1),
                    sqlstate: None,
                    error: None,
                    sample: None,
                    approval_id: None,
                    action: portcullis::store::Action::Statement,
                })
            })
            .collect()
    };
    let loads: Vec<Record> = (0..N)
        .map(|i| {
            Record::PluginLoad(PluginLoadRecord {
                at: i as i64,
                name: "record".into(),
                version: "0.2.2".into(),
                sha256: "ab".repeat(32),
            })
        })
        .collect();
    let mut g = c.benchmark_group("audit store, 1000 records per commit");
    g.throughput(Throughput::Elements(N));
    g.bench_function("plugin-load rows (baseline)", |b| {
        b.iter(|| store.write(black_box(&loads)))
    });
    let mut session = 1u64;
    for (name, prepared) in [
        ("statement events", false),
        ("statement events, one prepared statement", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    session += 16;
                    events(session, prepared)
                },
                |batch| store.write(black_box(&batch)),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An interactive shell's output as the gateway reads it for typed lines
/// (`Typed::output`: the terminal line the shell draws), against copying
/// the same bytes: what reading the echo costs per byte of terminal output.
fn terminal_echo(c: &mut Criterion) {
    use portcullis::protocols::ssh::typed::Typed;
    // `ls --color`-like output: short lines with colour escapes.
    let mut out = Vec::new();
    while out.len() < 64 * 1024 {
        out.extend_from_slice(b"\x1b[01;34mdirectory\x1b[0m  file.txt  \x1b[01;32mscript.sh\x1b[0m  notes-2026.md\r\n");
    }
    let mut g = c.benchmark_group("SSH terminal output, 64 KiB");
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function("copied (baseline)", |b| {
        b.iter(|| black_box(bytes::Bytes::copy_from_slice(black_box(&out))))
    });
    let mut typed = Typed::default();
    g.bench_function("read for typed lines", |b| {
        b.iter(|| typed.output(black_box(&out)))
    });
    g.finish();
}

criterion_group! {
    name = micro;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = frames, summaries, jwt, plugins, audit_store, terminal_echo
}
criterion_main!(micro);

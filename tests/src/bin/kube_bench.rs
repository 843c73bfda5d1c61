//! `get pod` through the gateway against the same API server stand-in
//! directly, in one run (`bench/kube` builds and runs it in release):
//! requests per second and latency at N clients, each with its own
//! keep-alive connection (HTTPS to the gateway, whose Kubernetes target
//! runs `block` and `mask`; plain HTTP straight to the stand-in). Rounds
//! alternate the two paths; prints medians and the ratio as Markdown.
//!
//! Usage: kube_bench [--clients N] [--seconds S] [--rounds R] [--plugins 0|1]
//! (`--plugins 0`: the target without plugins, to see what they cost)

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portcullis_e2e::kube::{gateway, KubeStandIn};

const PATH: &str = "/api/v1/namespaces/default/pods/web-1";

/// One path's figures in one round.
struct Measured {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `clients` loops of GET `base + PATH` for `seconds`.
async fn load(
    base: &str,
    token: Option<&str>,
    tls: Option<Arc<rustls::ClientConfig>>,
    clients: usize,
    seconds: u64,
) -> Measured {
    let authority = base
        .split("://")
        .nth(1)
        .unwrap_or(base)
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let prefix = base
        .split("://")
        .nth(1)
        .and_then(|r| r.find('/').map(|i| r[i..].to_string()))
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (authority, prefix, tls) = (authority.clone(), prefix.clone(), tls.clone());
        let token = token.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(&authority)
                .await
                .expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            let mut sender = match tls {
                Some(config) => {
                    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                    let stream = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await
                        .expect("TLS");
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .expect("handshake");
                    tokio::spawn(conn);
                    sender
                }
                None => {
                    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                        .await
                        .expect("handshake");
                    tokio::spawn(conn);
                    sender
                }
            };
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let mut request = hyper::Request::get(format!("{prefix}{PATH}"))
                    .header("host", authority.as_str())
                    .header("accept", "application/json");
                if let Some(t) = &token {
                    request = request.header("authorization", format!("Bearer {t}"));
                }
                let request = request.body(Empty::<Bytes>::new()).expect("request");
                let started = Instant::now();
                let response = sender.send_request(request).await.expect("response");
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                assert_eq!(
                    status,
                    200,
                    "GET {prefix}{PATH}: {}",
                    String::from_utf8_lossy(&body)
                );
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    all.sort();
    let at =
        |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    Measured {
        per_second: all.len() as f64 / seconds as f64,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut clients = 16;
    let mut seconds = 10;
    let mut rounds = 3;
    let mut plugins = 1;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .expect("a number after each option");
        match pair[0].as_str() {
            "--clients" => clients = value,
            "--seconds" => seconds = value as u64,
            "--rounds" => rounds = value,
            "--plugins" => plugins = value,
            other => panic!("unknown option {other}; usage: kube_bench [--clients N] [--seconds S] [--rounds R] [--plugins 0|1]"),
        }
    }
    let api = KubeStandIn::start().await;
    let extra = format!(
        "plugins = [\"block\", \"mask\"]\n\n[[plugins]]\nname = \"block\"\npath = {:?}\n[plugins.config]\nrules = [{{ name = \"no-namespace-deletes\", verbs = [\"delete\"], resources = [\"namespaces\"] }}, {{ name = \"no-exec-kube-system\", resources = [\"pods/exec\"], namespaces = [\"kube-system\"] }}]\n\n[[plugins]]\nname = \"mask\"\npath = {:?}\n",
        portcullis_e2e::plugin_wasm("block").display().to_string(),
        portcullis_e2e::plugin_wasm("mask").display().to_string(),
    );
    let extra = if plugins == 0 { String::new() } else { extra };
    let (gw, url) = gateway(&api, &extra).await;
    let token = gw.token("alice@example.com");
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        portcullis::tls::load_certs(&portcullis_e2e::cluster().cert).expect("the test certificate")
    {
        roots.add(cert).expect("root");
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    // Warm both paths (plugins compiled, connections pooled).
    load(&api.url, None, None, clients, 1).await;
    load(&url, Some(&token), Some(tls.clone()), clients, 1).await;
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        direct.push(load(&api.url, None, None, clients, seconds).await);
        through.push(load(&url, Some(&token), Some(tls.clone()), clients, seconds).await);
    }
    let row = |name: &str, m: &[Measured]| {
        format!(
            "| {name} | {:.0} | {:.2} | {:.2} |",
            median(m.iter().map(|x| x.per_second).collect()),
            median(m.iter().map(|x| x.p50_ms).collect()),
            median(m.iter().map(|x| x.p99_ms).collect()),
        )
    };
    println!("`get pod` at {clients} clients, {seconds} s x {rounds} rounds (medians)\n");
    println!("| path | requests/s | p50 ms | p99 ms |\n|---|---|---|---|");
    println!("{}", row("direct to the stand-in (HTTP)", &direct));
    println!(
        "{}",
        row(
            if plugins == 0 {
                "through the gateway (HTTPS, no plugins)"
            } else {
                "through the gateway (HTTPS, block + mask)"
            },
            &through
        )
    );
    let ratio = median(through.iter().map(|x| x.per_second).collect())
        / median(direct.iter().map(|x| x.per_second).collect());
    println!("\ngateway / direct: {ratio:.2}x requests/s");
}

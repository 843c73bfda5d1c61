//! A Kubernetes API server stand-in on loopback, for what `kubectl` and
//! client libraries need: discovery (`/api`, `/apis`, group versions,
//! `/version`), and namespaces, pods, secrets and deployments kept in
//! memory — get, list, watch, create, delete — read by the same request reading
//! the gateway uses ([`portcullis::protocols::kubernetes::request`]) — and
//! exec over WebSocket (`v5`/`v4.channel.k8s.io`, spoken by `tungstenite`,
//! not the gateway's code), which runs the command here as a kubelet
//! would run it in the pod. It
//! remembers every request it was sent (method, path, headers), so a test
//! can assert what the gateway forwards. (No real API server can be
//! installed on these machines; see the Kubernetes issue.)

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use portcullis::protocols::kubernetes::request::RequestInfo;
use portcullis::protocols::kubernetes::status::{self, Reason};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers (lower-case names; a header sent twice appears twice).
    pub headers: Vec<(String, String)>,
}

/// (group, resource): the kind and whether it is namespaced.
fn kind_of(group: &str, resource: &str) -> Option<(&'static str, bool)> {
    match (group, resource) {
        ("", "namespaces") => Some(("Namespace", false)),
        ("", "pods") => Some(("Pod", true)),
        ("", "secrets") => Some(("Secret", true)),
        ("apps", "deployments") => Some(("Deployment", true)),
        _ => None,
    }
}

/// An object's key: (group, resource, namespace, name).
type Key = (String, String, String, String);

/// Objects by key.
type Objects = BTreeMap<Key, Value>;

/// A change for watchers: its key, `ADDED` or `DELETED`, the object.
type Change = (Key, &'static str, Value);

/// Whether `key` is in a watch's scope (group, resource, namespace or
/// `""` for all, name or `""` for all).
fn in_scope(scope: &Key, key: &Key) -> bool {
    scope.0 == key.0
        && scope.1 == key.1
        && (scope.2.is_empty() || scope.2 == key.2)
        && (scope.3.is_empty() || scope.3 == key.3)
}

/// A watch request's scope and the objects in it now; `None` for any
/// other request.
fn watch(
    objects: &Mutex<Objects>,
    method: &str,
    path: &str,
    query: Option<&str>,
) -> Option<(Key, Vec<Value>)> {
    let info = RequestInfo::read(method, path, query, false).ok()?;
    if info.verb != "watch" {
        return None;
    }
    let resource = info.resource.clone()?;
    let (_, namespaced) = kind_of(&info.api_group, &resource)?;
    let ns = match namespaced {
        true => info.namespace.clone().unwrap_or_default(),
        false => String::new(),
    };
    let scope = (info.api_group, resource, ns, info.name.unwrap_or_default());
    let objects = objects.lock().unwrap_or_else(|p| p.into_inner());
    let current = objects
        .iter()
        .filter(|(k, _)| in_scope(&scope, k))
        .map(|(_, v)| v.clone())
        .collect();
    Some((scope, current))
}

/// A watch's body: one JSON event per line, the current objects first,
/// then each change in scope as it happens (streamed, never buffered).
fn watch_body(
    scope: Key,
    current: Vec<Value>,
    later: tokio::sync::broadcast::Receiver<Change>,
) -> BoxBody<Bytes, Infallible> {
    fn line(kind: &str, object: &Value) -> Result<hyper::body::Frame<Bytes>, Infallible> {
        let mut text = json!({ "type": kind, "object": object }).to_string();
        text.push('\n');
        Ok(hyper::body::Frame::data(Bytes::from(text)))
    }
    let first =
        futures_util::stream::iter(current.iter().map(|o| line("ADDED", o)).collect::<Vec<_>>());
    let rest = futures_util::stream::unfold((later, scope), |(mut later, scope)| async move {
        loop {
            match later.recv().await {
                Ok((key, kind, object)) if in_scope(&scope, &key) => {
                    return Some((line(kind, &object), (later, scope)));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    StreamBody::new(futures_util::StreamExt::chain(first, rest)).boxed()
}

/// A running stand-in.
pub struct KubeStandIn {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn object(kind: &str, namespace: Option<&str>, name: &str, rest: Value) -> Value {
    let api_version = if kind == "Deployment" {
        "apps/v1"
    } else {
        "v1"
    };
    let mut metadata = json!({
        "name": name,
        "uid": format!("uid-{name}"),
        "resourceVersion": "1",
        "creationTimestamp": "2026-12-01T00:00:00Z",
    });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    let mut o = json!({ "kind": kind, "apiVersion": api_version, "metadata": metadata });
    if let (Some(o), Some(rest)) = (o.as_object_mut(), rest.as_object()) {
        for (k, v) in rest {
            // Metadata given (annotations) joins the made-up metadata.
            if let (true, Some(extra)) = (k == "metadata", v.as_object()) {
                if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                    for (mk, mv) in extra {
                        m.insert(mk.clone(), mv.clone());
                    }
                }
                continue;
            }
            o.insert(k.clone(), v.clone());
        }
    }
    o
}

/// The objects a fresh stand-in holds.
fn seed() -> Objects {
    let mut objects = Objects::new();
    let mut put = |group: &str, resource: &str, ns: Option<&str>, name: &str, rest: Value| {
        let (kind, _) = kind_of(group, resource).unwrap_or(("Unknown", true));
        objects.insert(
            (
                group.into(),
                resource.into(),
                ns.unwrap_or("").into(),
                name.into(),
            ),
            object(kind, ns, name, rest),
        );
    };
    for ns in ["default", "kube-system", "prod"] {
        put(
            "",
            "namespaces",
            None,
            ns,
            json!({ "status": { "phase": "Active" } }),
        );
    }
    let pod = json!({
        "spec": { "containers": [{ "name": "app", "image": "nginx" }] },
        "status": { "phase": "Running" },
    });
    put("", "pods", Some("default"), "web-1", pod.clone());
    put("", "pods", Some("kube-system"), "coredns", pod);
    put(
        "",
        "secrets",
        Some("prod"),
        "db",
        json!({
            "type": "Opaque",
            "data": { "password": "aHVudGVyMg==" },
            "metadata": { "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration":
                    "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"db\",\"namespace\":\"prod\"},\"stringData\":{\"password\":\"hunter2\"}}\n"
            } },
        }),
    );
    put(
        "apps",
        "deployments",
        Some("prod"),
        "web",
        json!({ "spec": { "replicas": 2 } }),
    );
    objects
}

fn resource_list(group_version: &str, resources: &[(&str, &str, bool)]) -> Value {
    let verbs = [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources.iter().map(|(name, kind, namespaced)| json!({
            "name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced,
            "kind": kind, "verbs": verbs,
        })).collect::<Vec<_>>(),
    })
}

/// What the stand-in answers to one request: status and JSON body.
fn answer(
    objects: &Mutex<Objects>,
    changes: &tokio::sync::broadcast::Sender<Change>,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let ok = |v: Value| (200, v.to_string().into_bytes());
    match path {
        "/version" => {
            return ok(
                json!({ "major": "1", "minor": "32", "gitVersion": "v1.32.0-standin", "platform": "linux/amd64" }),
            )
        }
        "/api" => {
            return ok(
                json!({ "kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [] }),
            )
        }
        "/apis" => {
            return ok(
                json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [{
                    "name": "apps",
                    "versions": [{ "groupVersion": "apps/v1", "version": "v1" }],
                    "preferredVersion": { "groupVersion": "apps/v1", "version": "v1" },
                }]}),
            )
        }
        "/api/v1" => {
            return ok(resource_list(
                "v1",
                &[
                    ("namespaces", "Namespace", false),
                    ("pods", "Pod", true),
                    ("secrets", "Secret", true),
                ],
            ))
        }
        "/apis/apps/v1" => {
            return ok(resource_list(
                "apps/v1",
                &[("deployments", "Deployment", true)],
            ))
        }
        _ => {}
    }
    let not_found = |what: &str| {
        (
            404,
            status::failure(Reason::NotFound, &format!("{what} not found"), None, None),
        )
    };
    let info = match RequestInfo::read(method, path, query, false) {
        Ok(info) if info.is_resource => info,
        Ok(_) => return not_found(path),
        Err(e) => {
            return (
                400,
                status::failure(Reason::BadRequest, &e.to_string(), None, None),
            )
        }
    };
    let resource = info.resource.clone().unwrap_or_default();
    let Some((kind, namespaced)) = kind_of(&info.api_group, &resource) else {
        return not_found(&format!(
            "the server could not find the requested resource {resource}"
        ));
    };
    let ns = if namespaced {
        info.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let key = |name: &str| {
        (
            info.api_group.clone(),
            resource.clone(),
            ns.clone(),
            name.to_string(),
        )
    };
    let mut objects = objects.lock().unwrap_or_else(|p| p.into_inner());
    match (info.verb.as_str(), info.name.as_deref()) {
        ("list", _) => {
            let items: Vec<Value> = objects
                .iter()
                .filter(|((g, r, n, name), _)| {
                    *g == info.api_group
                        && *r == resource
                        && (ns.is_empty() || *n == ns)
                        && info.name.as_deref().is_none_or(|want| want == name)
                })
                .map(|(_, v)| v.clone())
                .collect();
            let api_version = if info.api_group.is_empty() {
                "v1".to_string()
            } else {
                format!("{}/v1", info.api_group)
            };
            ok(
                json!({ "kind": format!("{kind}List"), "apiVersion": api_version, "metadata": { "resourceVersion": "1" }, "items": items }),
            )
        }
        ("get", Some(name)) => match objects.get(&key(name)) {
            Some(o) => ok(o.clone()),
            None => not_found(&format!("{resource} \"{name}\"")),
        },
        ("create", None) => {
            let Ok(mut o) = serde_json::from_slice::<Value>(body) else {
                return (
                    400,
                    status::failure(Reason::BadRequest, "the body is not JSON", None, None),
                );
            };
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            o["metadata"]["uid"] = json!(format!("uid-{name}"));
            o["metadata"]["resourceVersion"] = json!("1");
            if namespaced {
                o["metadata"]["namespace"] = json!(ns);
            }
            objects.insert(key(&name), o.clone());
            let _ = changes.send((key(&name), "ADDED", o.clone()));
            (201, o.to_string().into_bytes())
        }
        ("delete", Some(name)) => match objects.remove(&key(name)) {
            Some(o) => {
                let _ = changes.send((key(name), "DELETED", o.clone()));
                ok(o)
            }
            None => not_found(&format!("{resource} \"{name}\"")),
        },
        (verb, _) => (
            405,
            status::failure(
                Reason::BadRequest,
                &format!("the stand-in does not serve {verb} on {resource}"),
                None,
                None,
            ),
        ),
    }
}

impl KubeStandIn {
    /// Starts a stand-in holding namespaces `default`, `kube-system` and
    /// `prod`, pods `default/web-1` and `kube-system/coredns`, secret
    /// `prod/db` (password `hunter2`, in `data` and in the annotation
    /// `kubectl apply` leaves) and deployment `prod/web`.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let objects = Arc::new(Mutex::new(seed()));
        let (changes, _) = tokio::sync::broadcast::channel::<Change>(256);
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (log, objects, changes) = (log.clone(), objects.clone(), changes.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                        let (log, objects, changes) =
                            (log.clone(), objects.clone(), changes.clone());
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let query = req.uri().query().map(str::to_string);
                            log.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
                                method: method.clone(),
                                uri: req.uri().to_string(),
                                headers: req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.to_string(),
                                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                        )
                                    })
                                    .collect(),
                            });
                            if let Some(r) = exec(&mut req, &objects) {
                                return Ok::<_, Infallible>(r);
                            }
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            // Subscribed before the objects are read: no
                            // change falls between a watch's start and its
                            // stream.
                            let later = changes.subscribe();
                            let q = query.as_deref();
                            let (code, body) = match watch(&objects, &method, &path, q) {
                                Some((scope, now)) => (200, watch_body(scope, now, later)),
                                None => {
                                    let (code, json) =
                                        answer(&objects, &changes, &method, &path, q, &body);
                                    (code, Full::new(Bytes::from(json)).boxed())
                                }
                            };
                            let mut response = Response::new(body);
                            *response.status_mut() = StatusCode::from_u16(code)
                                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                            response.headers_mut().insert(
                                "content-type",
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { url, seen, task }
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl KubeStandIn {
    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the stand-in's URL ends in its port")
    }
}

/// The token the gateway holds for the stand-in (its own credential; the
/// stand-in records it like any header).
pub const GATEWAY_TOKEN: &str = "gateway-service-account-token";

/// A gateway with a Kubernetes listener (TLS, the test certificate) and
/// target `prod` for `api`, the gateway's token read from a file, open to
/// group `testers`; `extra` is appended after the target's table (its
/// keys first). Returns the gateway and the kubeconfig server URL.
pub async fn gateway(api: &KubeStandIn, extra: &str) -> (crate::TestGateway, String) {
    try_gateway(api, extra)
        .await
        .unwrap_or_else(|e| panic!("the gateway did not start: {e}"))
}

/// [`gateway`], or why the gateway refused to start.
pub async fn try_gateway(
    api: &KubeStandIn,
    extra: &str,
) -> Result<(crate::TestGateway, String), String> {
    let token_file = crate::secret_file("kube-token", GATEWAY_TOKEN);
    try_gateway_to("127.0.0.1", api.port(), &token_file, extra).await
}

/// A gateway like [`gateway`]'s whose target `prod` is the API server at
/// `host:port`, the gateway's token in `token_file` (`extra` may add
/// `tls = "verify-full"` and `tls_ca_file` for a real API server).
pub async fn try_gateway_to(
    host: &str,
    port: u16,
    token_file: &std::path::Path,
    extra: &str,
) -> Result<(crate::TestGateway, String), String> {
    let c = crate::cluster();
    let tail = format!(
        r#"
[[listeners]]
protocol = "kubernetes"
address = "127.0.0.1:0"
tls_cert_file = {cert:?}
tls_key_file = {key:?}

[[targets]]
protocol = "kubernetes"
name = "prod"
host = {host:?}
port = {port}
password_file = {token:?}
allow_groups = ["testers"]
{extra}
"#,
        cert = c.cert.display().to_string(),
        key = c.key.display().to_string(),
        token = token_file.display().to_string(),
    );
    let gw = crate::TestGateway::try_start_with(crate::GatewayOptions {
        tail,
        ..Default::default()
    })
    .await?;
    let url = format!("https://{}/prod", gw.gateway.addresses[2]);
    Ok((gw, url))
}

/// A kubeconfig for `server` with `token`, trusting the test certificate.
pub fn kubeconfig(dir: &std::path::Path, server: &str, token: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gw\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: me\n  user:\n    token: {token}\ncontexts:\n- name: gw\n  context:\n    cluster: gw\n    user: me\ncurrent-context: gw\n",
        ca = crate::cluster().cert.display(),
    );
    std::fs::write(&path, text).expect("write the kubeconfig");
    path
}

/// What `kubectl` printed and whether it succeeded.
pub struct Kubectl {
    /// It exited 0.
    pub ok: bool,
    /// Its exit code.
    pub code: Option<i32>,
    /// Its standard output.
    pub out: String,
    /// Its standard error.
    pub err: String,
}

/// Runs `kubectl` with `kubeconfig` and a scratch cache in its directory.
pub async fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> Kubectl {
    kubectl_with(kubeconfig, args, &[], None).await
}

/// [`kubectl`] with `env` set and `input` as its standard input (none
/// when `None`); given at most 30 seconds.
pub async fn kubectl_with(
    kubeconfig: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&[u8]>,
) -> Kubectl {
    use tokio::io::AsyncWriteExt;
    let cache = kubeconfig.with_file_name("cache");
    let mut child = tokio::process::Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .envs(env.iter().copied())
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--cache-dir={}", cache.display()))
        .arg("--request-timeout=10s")
        .args(args)
        .stdin(match input {
            Some(_) => std::process::Stdio::piped(),
            None => std::process::Stdio::null(),
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs (it is preinstalled)");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input)
            .await
            .expect("kubectl reads its input");
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("kubectl finished within 30 s")
        .expect("kubectl's output");
    Kubectl {
        ok: out.status.success(),
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The namespace and pod an exec over WebSocket names
/// (`/api/v1/namespaces/NS/pods/POD/exec`), read here without the
/// gateway's request reading.
fn exec_target(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [ns, "pods", pod, "exec"] => Some((ns.to_string(), pod.to_string())),
        _ => None,
    }
}

/// Every value of `key` in a query, percent-decoded.
fn query_values(query: &str, key: &str) -> Vec<String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match u8::from_str_radix(
                        std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                        16,
                    ) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| decode(v))
        .collect()
}

/// Answers an exec over WebSocket as a kubelet would: the command runs
/// here (a child process of the test), its standard streams on channels
/// 0–2 of `v5.channel.k8s.io` (or `v4`), its exit status as a `Status` on
/// channel 3. `None` when the request is not an exec.
fn exec(
    req: &mut hyper::Request<hyper::body::Incoming>,
    objects: &Mutex<Objects>,
) -> Option<Response<BoxBody<Bytes, Infallible>>> {
    let (ns, pod) = exec_target(req.uri().path())?;
    let websocket = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let reply = |code: u16, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        r
    };
    if !websocket {
        return Some(reply(
            400,
            status::failure(
                Reason::BadRequest,
                "the stand-in speaks exec over WebSocket only",
                None,
                None,
            ),
        ));
    }
    let key = ("".to_string(), "pods".to_string(), ns.clone(), pod.clone());
    if !objects
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&key)
    {
        return Some(reply(
            404,
            status::failure(
                Reason::NotFound,
                &format!("pods \"{pod}\" not found"),
                None,
                None,
            ),
        ));
    }
    let offered: Vec<String> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    let Some(protocol) = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
    else {
        return Some(reply(
            400,
            status::failure(
                Reason::BadRequest,
                "no channel protocol offered",
                None,
                None,
            ),
        ));
    };
    // RFC 6455 §4.2.2: base64(SHA-1(key + GUID)).
    let accept = {
        use base64::Engine;
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| k.as_bytes().to_vec())
            .unwrap_or_default();
        let mut input = key;
        input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    };
    let query = req.uri().query().unwrap_or_default().to_string();
    let command = query_values(&query, "command");
    let stdin = query_values(&query, "stdin")
        .iter()
        .any(|v| v == "true" || v == "1");
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(run_exec(
        upgrade,
        protocol == "v5.channel.k8s.io",
        command,
        stdin,
    ));
    let mut r = reply(101, Vec::new());
    let h = r.headers_mut();
    h.insert(
        "connection",
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        "upgrade",
        hyper::header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        "sec-websocket-protocol",
        hyper::header::HeaderValue::from_static(protocol),
    );
    if let Ok(a) = hyper::header::HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", a);
    }
    Some(r)
}

/// Runs an exec's command and relays its streams (see [`exec`]).
async fn run_exec(upgrade: hyper::upgrade::OnUpgrade, v5: bool, command: Vec<String>, stdin: bool) {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    let Ok(upgraded) = upgrade.await else { return };
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        None,
    )
    .await;
    let (mut sink, mut incoming) = ws.split();
    let status = |body: Value| {
        let mut m = vec![3u8];
        m.extend_from_slice(body.to_string().as_bytes());
        Message::Binary(m.into())
    };
    let spawned = command.first().map(|program| {
        tokio::process::Command::new(program)
            .args(&command[1..])
            .stdin(if stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
    });
    let mut child = match spawned {
        Some(Ok(c)) => c,
        _ => {
            let _ = sink
                .send(status(
                    json!({ "status": "Failure", "message": format!("cannot run {command:?}") }),
                ))
                .await;
            let _ = sink.send(Message::Close(None)).await;
            return;
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    });
    let mut child_in = child.stdin.take();
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = incoming.next().await {
            match m {
                Message::Binary(data) => match data.first() {
                    Some(0) => {
                        if let Some(i) = child_in.as_mut() {
                            let _ = i.write_all(&data[1..]).await;
                        }
                    }
                    Some(255) if v5 && data.get(1) == Some(&0) => child_in = None,
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    let pipe = |mut from: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                channel: u8,
                tx: tokio::sync::mpsc::Sender<Message>| async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut m = vec![channel];
            m.extend_from_slice(&buf[..n]);
            if tx.send(Message::Binary(m.into())).await.is_err() {
                break;
            }
        }
    };
    let out = child
        .stdout
        .take()
        .map(|o| tokio::spawn(pipe(Box::new(o), 1, tx.clone())));
    let err = child
        .stderr
        .take()
        .map(|e| tokio::spawn(pipe(Box::new(e), 2, tx.clone())));
    let outputs = async {
        for task in [out, err].into_iter().flatten() {
            let _ = task.await;
        }
    };
    // The client went away (its close, or the connection cut): the
    // command is killed, as the kubelet kills it.
    let mut reader = reader;
    let gone = tokio::select! {
        _ = outputs => false,
        _ = &mut reader => true,
    };
    if gone {
        let _ = child.kill().await;
        writer.abort();
        return;
    }
    let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
    let body = if code == 0 {
        json!({ "metadata": {}, "status": "Success" })
    } else {
        json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": { "causes": [{ "reason": "ExitCode", "message": code.to_string() }] },
        })
    };
    let _ = tx.send(status(body)).await;
    // A normal closure: kubectl reads a close without a code (1005) as a
    // failure of the error stream.
    let _ = tx
        .send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "".into(),
            },
        )))
        .await;
    drop(tx);
    let _ = writer.await;
    reader.abort();
}

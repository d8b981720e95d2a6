//! A local Kubernetes apiserver and controller, for tests that drive the real `kubectl`
//! or a client library (the `kube` crate, client-go) against "a cluster".
//!
//! Faithful: the REST paths of core/v1 (namespaces, pods with `log`, services, secrets,
//! configmaps, events, endpoints; `GET` on the `proxy` subresources of pods and services),
//! apps/v1 (deployments with `scale` and `status`, replicasets) and discovery.k8s.io/v1
//! (endpointslices); discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/<group>` and
//! `/apis/<group>/v1`, and the aggregated v2 discovery kubectl asks for first); get, list,
//! watch (from a `resourceVersion`, with bookmarks, `410 Gone` when too old), create
//! (`generateName`), update (`409 Conflict` on a stale `resourceVersion`), patch (merge,
//! strategic merge, JSON patch), delete with cascading; `dryRun=All` on every write
//! (validated and answered as it would be stored, nothing stored: `kubectl diff`,
//! `--dry-run=server`); label and field selectors; server-side printing (`as=Table`) for the
//! `kubectl get` columns; `Status` errors with the apiserver's own messages; the
//! validation kubectl users hit (names, selector against template labels, container name
//! and image); defaulting of the fields `kubectl set image` and `kubectl describe` read.
//!
//! Real: the deployment controller (ReplicaSets named `<deploy>-<pod-template-hash>`,
//! rolling updates with `maxSurge`/`maxUnavailable`, Recreate, `minReadySeconds`,
//! `progressDeadlineSeconds` scaled by `Options::progress_deadline_scale`, the status and
//! conditions kube-controller-manager writes, ScalingReplicaSet events); the ReplicaSet
//! controller; the endpoints and endpointslice controllers (`endpoints.rs`); a kubelet per pod that runs the pod's first container as a container on the
//! local Docker engine (driven through the `docker` CLI, pulled with the credentials of
//! `Options::docker_config`, env from values and Secrets, every `containerPort` published
//! on a loopback port), its readiness and liveness probes (`httpGet`, `tcpSocket`),
//! restarts with CrashLoopBackOff, graceful termination (the first container's `preStop`
//! hook, `sleep`, `exec` or `httpGet`, for at most the grace period, then `docker stop -t
//! <what is left, 2 s at least>`).
//!
//! Services: each `spec.ports[]` entry gets a loopback port of 30000-32767, reported as
//! its `nodePort` (for every service type; `port` stays as given). `spec.clusterIP` is `127.0.0.1`, so
//! `http://127.0.0.1:<nodePort>` reaches the service; a LoadBalancer also gets an address
//! of its own, as a cloud load balancer does: a loopback IP (127.0.0.2 and up) in
//! `status.loadBalancer.ingress` where each `port` answers (as root for ports below 1024).
//! Each new connection goes to one pod that the selector picks and that is ready right then
//! (round robin), and stays there; a terminating pod gets no new connection but keeps those
//! it has until its container stops.
//! `…/pods/<name>[:<port>]/proxy/<path>` and `…/services/<name>[:<port>]/proxy/<path>` reach
//! a pod's container (a Service's through one of its ready pods) as the apiserver's proxy
//! does, with its `ServiceUnavailable` answers when nothing is there.
//! `…/pods/<name>/portforward` streams connections to the pod's ports over SPDY/3.1
//! tunnelled in a websocket (kubectl 1.32's first choice), plain SPDY/3.1 (its fallback),
//! or the `v4.channel.k8s.io` websocket with `?ports=N` (the `kube` crate): see
//! `portforward.rs` and `spdy.rs`.
//!
//! Authentication: started with `Options::tokens`, the server answers HTTPS (a CA made at
//! start, `tls.rs`) and takes only those bearer tokens and its kubeconfigs' own: any other
//! request is 401, as an apiserver without anonymous access answers. Without, it answers
//! plain HTTP, where any `Authorization: Bearer …` passes, another scheme gets 401, and a
//! request without `Authorization` is anonymous and passes too (kubectl never sends
//! credentials over plain HTTP).
//!
//! Protobuf: kubectl's typed clients (`kubectl create deployment`, `kubectl create
//! secret`, `kubectl expose`) send protobuf; every kind served is decoded (`proto.rs`,
//! with the field tables of `proto_schema.rs`). Answers are always JSON.
//!
//! OpenAPI v3 (`openapi.rs`): `/openapi/v3` and a document per group version, generated
//! from the protobuf field tables (fields and types, no descriptions); every write takes
//! `fieldValidation=Strict` (a field the kind lacks refuses it), so `kubectl apply` with
//! its default validation and `kubectl explain` work.
//!
//! Server-side apply (`ssa.rs`): each manager's fields in `managedFields` (FieldsV1),
//! conflicts (409) unless forced, pruning of what an applier no longer applies; other
//! writes are their manager's Update.
//!
//! Not modelled: RBAC (inject `Forbidden` with a fault), OpenAPI v2 (`/openapi/v2` answers
//! 404; kubectl 1.32 reads v3), subresources in `managedFields`, other
//! resources (nodes…), sidecar containers (only the first
//! container of a pod runs), init containers, volumes, resource limits, `paused`,
//! postStart hooks, `limit`/`continue` paging (every list is one page).
//!
//! Test hooks on the API port: `POST /__fake/faults` with `{"verb": "patch", "resource":
//! "services", "code": 409, "reason": "Conflict", "message": "…", "times": 1}` answers the
//! next matching call with that error (verb and resource may be `*`; no `times` means
//! always), `DELETE /__fake/faults` clears them; `GET /__fake/calls` lists the API calls in
//! order (with whether they carried an `Authorization`) and counts them per `verb resource`.
//! They take no token.

mod api;
mod controller;
mod endpoints;
mod engine;
mod json;
mod kubelet;
mod openapi;
mod portforward;
mod proto;
mod proto_schema;
mod proxy;
mod spdy;
mod ssa;
mod store;
mod table;
mod tls;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::http::request::Parts;
use hyper::{Method, Response};
use pym_fake_common::Ids;
use pym_fake_common::docker::Launching;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub(crate) type Body = BoxBody<Bytes, Infallible>;
pub(crate) type Reply = Response<Body>;

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// The API port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// Multiplies every Deployment's `progressDeadlineSeconds` (tests shrink it).
    pub progress_deadline_scale: f64,
    /// How often the controllers reconcile (and the least time between two steps of a
    /// rollout).
    pub step_delay: Duration,
    /// A directory with a Docker `config.json` whose credentials image pulls use; `None`:
    /// the engine's defaults.
    pub docker_config: Option<PathBuf>,
    /// `Some`: the server answers HTTPS (a CA of its own, in the kubeconfigs it writes and
    /// in [`FakeKube::ca_pem`]) and takes only these bearer tokens and the one its
    /// kubeconfigs carry: any other request is 401, as an apiserver without anonymous
    /// access answers. `None`: plain HTTP, where any bearer token passes.
    pub tokens: Option<Vec<String>>,
    /// With `tokens`: Google's tokeninfo endpoint (`…/tokeninfo`), asked of any other
    /// bearer token, as a GKE cluster takes a Google account's access token.
    pub google_tokeninfo: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            port: 0,
            progress_deadline_scale: 1.0,
            step_delay: Duration::from_millis(200),
            docker_config: None,
            tokens: None,
            google_tokeninfo: None,
        }
    }
}

/// A running server. Dropping it removes every container it started.
pub struct FakeKube {
    /// `http://127.0.0.1:PORT`, or `https://` with `Options::tokens`.
    pub url: String,
    pub port: u16,
    /// The CA (PEM) the HTTPS server's certificate is signed by.
    pub ca_pem: Option<String>,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

pub(crate) struct Shared {
    /// This state's own `Arc` (for the tasks a request starts).
    pub me: std::sync::Weak<Shared>,
    pub opts: Options,
    pub port: u16,
    /// Labels every container of this server, for cleanup.
    pub instance: String,
    pub state: Mutex<store::State>,
    pub launching: Launching,
    pub ids: Ids,
    /// The bearer tokens requests carried, and how often.
    pub bearers: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Shared {
    /// `n` characters of the generated-name alphabet.
    pub fn suffix(&self, n: usize) -> String {
        let mut x = self.ids.random();
        (0..n)
            .map(|_| {
                let c = json::ALPHANUMS[(x % json::ALPHANUMS.len() as u64) as usize] as char;
                x /= json::ALPHANUMS.len() as u64;
                c
            })
            .collect()
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, store::State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FakeKube {
    /// The bearer tokens requests carried, and how often.
    pub fn bearers(&self) -> std::collections::BTreeMap<String, u64> {
        self.shared.bearers.lock().unwrap().clone()
    }

    /// Starts the server on its own runtime; it runs until dropped.
    pub fn start(opts: Options) -> std::io::Result<FakeKube> {
        let rt = pym_fake_common::runtime("fake-kube")?;
        let api = rt.block_on(TcpListener::bind(("127.0.0.1", opts.port)))?;
        let port = api.local_addr()?.port();
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            port,
            instance: format!("{}-{port}", std::process::id()),
            opts,
            state: Mutex::new(store::State::new()),
            launching: Launching::default(),
            ids: Ids::default(),
            bearers: Mutex::default(),
        });
        store::bootstrap(&shared);
        let api_shared = shared.clone();
        let serve = move |parts, body| handle(api_shared.clone(), parts, body);
        let ca_pem = match shared.opts.tokens.is_some() {
            true => {
                let (ca_pem, acceptor) = tls::acceptor().map_err(std::io::Error::other)?;
                rt.spawn(tls::serve(api, acceptor, serve));
                Some(ca_pem)
            }
            false => {
                rt.spawn(pym_fake_common::net::serve_http(api, serve));
                None
            }
        };
        rt.spawn(controller::run(shared.clone()));
        let scheme = if ca_pem.is_some() { "https" } else { "http" };
        Ok(FakeKube {
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            ca_pem,
            shared,
            rt: Some(rt),
        })
    }

    /// Blocks until Ctrl-C or SIGTERM (for the standalone binary).
    pub fn wait_for_signal(&self) {
        if let Some(rt) = &self.rt {
            pym_fake_common::wait_for_signal(rt);
        }
    }

    /// Writes a kubeconfig with one cluster, user and context named `name` that point at
    /// this server (with its CA when it answers HTTPS; token auth with a token it takes)
    /// and returns its path, `dir/<name>.kubeconfig`.
    pub fn kubeconfig(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.kubeconfig"));
        let text = kubeconfig_text(&self.url, self.ca_pem.as_deref(), name);
        let _ = std::fs::create_dir_all(dir);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("pym-fake-kube: cannot write {}: {e}", path.display());
        }
        path
    }
}

/// The bearer token the kubeconfigs the server writes carry (always taken).
const KUBECONFIG_TOKEN: &str = "fake-kube-token";

/// A kubeconfig (YAML, which is also what kubectl writes) for one cluster at `url`.
pub(crate) fn kubeconfig_text(url: &str, ca_pem: Option<&str>, name: &str) -> String {
    let q = |s: &str| Value::from(s).to_string();
    let ca = ca_pem.map_or(String::new(), |pem| {
        format!(
            "\n    certificate-authority-data: {}",
            json::b64encode(pem.as_bytes())
        )
    });
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {n}\n  cluster:\n    server: {u}{ca}\ncontexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {n}\n    namespace: default\ncurrent-context: {n}\nusers:\n- name: {n}\n  user:\n    token: {KUBECONFIG_TOKEN}\npreferences: {{}}\n",
        n = q(name),
        u = q(url)
    )
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        self.shared.launching.wait();
        engine::remove_all(&self.shared.instance);
    }
}

async fn handle(shared: Arc<Shared>, mut parts: Parts, body: Bytes) -> Reply {
    // A websocket upgrade (`pods/portforward`) takes the connection over.
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let path = parts.uri.path().to_string();
    if let Some(what) = path.strip_prefix("/__fake/") {
        return control(&shared, &parts.method, what, &body);
    }
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return reply(200, "text/plain; charset=utf-8", "ok");
    }
    // Over HTTPS, only the tokens the server was started with. Over plain HTTP, kubectl
    // (client-go) never sends credentials, so a request without `Authorization` is
    // anonymous and allowed; a credential that is not `Bearer <token>` is refused.
    let auth = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let token = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let mut refused = match &shared.opts.tokens {
        Some(tokens) => {
            !token.is_some_and(|t| t == KUBECONFIG_TOKEN || tokens.iter().any(|k| k == t))
        }
        None => auth.is_some() && token.is_none(),
    };
    if refused && let (Some(url), Some(t)) = (&shared.opts.google_tokeninfo, token) {
        let q: String = form_urlencoded::byte_serialize(t.as_bytes()).collect();
        refused = pym_fake_common::net::get_json(&format!("{url}?access_token={q}"))
            .await
            .map_or(true, |v| v["email"].as_str().is_none());
    }
    if let Some(t) = token {
        *shared
            .bearers
            .lock()
            .unwrap()
            .entry(t.to_string())
            .or_default() += 1;
    }
    if refused {
        let s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401});
        return reply(401, "application/json", s.to_string());
    }
    api::handle(&shared, &parts, body, upgrade).await
}

/// An injected error.
#[derive(Clone)]
pub(crate) struct Fault {
    verb: String,
    resource: String,
    code: u16,
    reason: Option<String>,
    message: Option<String>,
}

/// Records a call and returns the fault it meets, if any: `(code, reason, message)`.
pub(crate) fn record_call(
    shared: &Shared,
    call: &api::Call,
    path: &str,
    query: &str,
    authorized: bool,
) -> Option<(u16, Option<String>, Option<String>)> {
    let mut st = shared.lock();
    let resource = match &call.sub {
        Some(s) => format!("{}/{s}", call.res.plural),
        None => call.res.plural.to_string(),
    };
    let key = format!("{} {resource}", call.verb);
    st.log.record(key, json!({
        "verb": call.verb, "resource": resource, "namespace": call.ns.clone().unwrap_or_default(),
        "name": call.name.clone().unwrap_or_default(), "path": path, "query": query, "authorization": authorized,
    }));
    let f = st.faults.hit(|f| {
        (f.verb == call.verb || f.verb == "*")
            && (f.resource == "*" || f.resource == resource || f.resource == call.res.plural)
    })?;
    Some((f.code, f.reason, f.message))
}

fn control(shared: &Shared, method: &Method, what: &str, body: &[u8]) -> Reply {
    match (method, what) {
        (&Method::POST, "faults") => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return reply(
                    400,
                    "text/plain",
                    "the body must be JSON: {\"verb\", \"resource\", \"code\", \"reason\", \"message\", \"times\"}",
                );
            };
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
            let fault = Fault {
                verb: s("verb").unwrap_or_else(|| "*".into()),
                resource: s("resource").unwrap_or_else(|| "*".into()),
                code: v
                    .get("code")
                    .and_then(Value::as_u64)
                    .map_or(500, |c| c as u16),
                reason: s("reason"),
                message: s("message"),
            };
            let times = v.get("times").and_then(Value::as_u64).map(|t| t as u32);
            shared.lock().faults.add(fault, times);
            reply(200, "application/json", "{}")
        }
        (&Method::DELETE, "faults") => {
            shared.lock().faults.clear();
            reply(200, "application/json", "{}")
        }
        (&Method::GET, "calls") => reply(
            200,
            "application/json",
            shared.lock().log.json().to_string(),
        ),
        (&Method::DELETE, "calls") => {
            shared.lock().log.clear();
            reply(200, "application/json", "{}")
        }
        _ => reply(
            404,
            "text/plain",
            "the test hooks are POST|DELETE /__fake/faults and GET|DELETE /__fake/calls",
        ),
    }
}

pub(crate) fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).boxed())
        .expect("a valid response")
}

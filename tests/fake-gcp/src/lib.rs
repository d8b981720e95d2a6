//! A local Cloud Run (Admin API v2, REST/JSON), for tests that drive Google's official
//! clients (`google-cloud-run-v2` through `with_endpoint("http://127.0.0.1:PORT")`) or any
//! REST caller.
//!
//! Faithful: the paths, methods and query parameters of `run.googleapis.com/v2` services,
//! revisions, operations and IAM policies (any project and location; state is kept per
//! resource name); long-running operations as the LRO pollers read them (`metadata` and
//! `response` are `Any`s typed `google.cloud.run.v2.Service` or `.Revision`, `error` a
//! google.rpc `Status`); errors as google.rpc bodies with the real HTTP statuses and
//! `ErrorInfo` details; enums as numbers when the request says `$alt=json;enum-encoding=int`
//! (the client always does) and as names otherwise, either form accepted in bodies; int64
//! fields as strings; Cloud Run's validation of service ids, revision names and traffic
//! tags; a new revision per template change, named `<service>-<generation>-<abc>`.
//!
//! Real: each revision runs its image as a container on the local Docker engine (driven
//! through the `docker` CLI, pulled with the credentials of `Options::docker_config`),
//! with `PORT`, `K_SERVICE`, `K_REVISION` and `K_CONFIGURATION` set, and must pass its
//! startup probe (TCP on the port, or the template's `httpGet`/`tcpSocket`) within
//! `Options::startup_timeout` or the revision fails with Cloud Run's messages. The front
//! door (`front_port` on 127.0.0.1 and ::1) routes by `Host`:
//! `http://<service>-<hash>-<region code>.a.run.localhost:<front_port>` splits requests
//! among the traffic targets by percent (each request on its own, keep-alive or not),
//! `http://<tag>---<service>-<hash>-<region code>.a.run.localhost:<front_port>` reaches
//! the tagged revision; without a `roles/run.invoker` binding for `allUsers`, requests
//! without `Authorization` get 403. Every request the front door routes to a revision is
//! counted (its status and latency), and Cloud Monitoring's `projects.timeSeries.list`
//! (`GET /v3/projects/{p}/timeSeries`, `monitoring.rs`) answers Cloud Run's
//! `request_count` and `request_latencies` from those counts, as Google's
//! `google-cloud-monitoring-v3` client reads them.
//!
//! A service without `allUsers` as invoker wants an identity token whose audience is its
//! URL; `POST /token` is a token endpoint that issues them for a service account's signed
//! JWT (jwt-bearer grant), as Google's does (`pym-fake-gcp --write-key` writes a key whose
//! `token_uri` is this server's).
//!
//! Not checked or not modelled: token signatures (the API takes any `Authorization:
//! Bearer …`, none gets 401; identity tokens are read, not verified), IAM permissions of
//! the caller (inject `PERMISSION_DENIED` with a fault), jobs,
//! executions, worker pools, instances, volumes, secrets (`valueSource` env vars are
//! dropped), VPC access, resource limits, scaling (one container per revision), ingress,
//! request timeouts, `$fields` filtering.
//!
//! Test hooks on the API port: `POST /__fake/faults` with `{"method": "UpdateService",
//! "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "…", "times": 2}` answers the
//! next two calls of that RPC with that error (`"method": "*"` matches every call, no
//! `times` means always; `"path": "…"` narrows it to calls whose path contains that, so
//! tests sharing one server each fault their own service), `DELETE /__fake/faults` clears them; `GET /__fake/calls` lists
//! the calls in order (`method`, `path`, `query`, whether an `Authorization` was sent)
//! and counts them per method.

mod engine;
pub mod federation;
mod json;
mod monitoring;
mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::{Method, Response};
use pym_fake_common::docker::Launching;
use pym_fake_common::{CallLog, Faults, Ids};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub(crate) type Reply = Response<Full<Bytes>>;

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// The API port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// The front door port on 127.0.0.1 and ::1 that service URLs reach (0: any free port).
    pub front_port: u16,
    /// The project number (the default service account's and URLs' owner).
    pub project_number: String,
    /// How long a revision's container has to pass its startup probe.
    pub startup_timeout: Duration,
    /// The least time an operation stays not done.
    pub step_delay: Duration,
    /// A directory with a Docker `config.json` whose credentials the service agent pulls
    /// images with; `None`: the engine's defaults.
    pub docker_config: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            port: 0,
            front_port: 0,
            project_number: "123456789012".into(),
            startup_timeout: Duration::from_secs(20),
            step_delay: Duration::from_millis(200),
            docker_config: None,
        }
    }
}

/// A running server. Dropping it removes every container it started.
pub struct FakeGcp {
    pub endpoint: String,
    pub port: u16,
    pub front_port: u16,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

pub(crate) struct Shared {
    pub opts: Options,
    pub front_port: u16,
    /// Labels every container of this server, for cleanup.
    pub instance: String,
    pub state: Mutex<State>,
    /// Wakes the `:wait` calls when an operation finishes.
    pub changed: tokio::sync::Notify,
    pub launching: Launching,
    pub ids: Ids,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub run: run::CloudRun,
    /// What the front door served, for Cloud Monitoring's request metrics.
    pub metrics: monitoring::Samples,
    faults: Faults<Fault>,
    log: CallLog,
    /// The tokens workload identity federation gave out.
    pub federation: federation::Issued,
    /// The bearer tokens the Cloud Run API was called with, and how often.
    bearers: BTreeMap<String, u64>,
}

#[derive(Clone)]
struct Fault {
    method: String,
    /// Only calls whose path contains this.
    path: Option<String>,
    status: String,
    code: u16,
    message: Option<String>,
}

/// An error answer: a google.rpc status.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub status: String,
    pub message: String,
    pub details: Vec<Value>,
    /// The HTTP status, when it is not the usual one of `status` (faults).
    pub http: Option<u16>,
}

impl ApiError {
    pub fn new(status: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: status.into(),
            message: message.into(),
            details: Vec::new(),
            http: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new("INVALID_ARGUMENT", message)
    }

    pub fn with_info(mut self, reason: &str, metadata: &[(&str, &str)]) -> ApiError {
        let m = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        self.details.push(json::error_info(reason, m));
        self
    }

    /// Google's denial of `permission` on `resource`.
    pub fn denied(permission: &str, resource: &str) -> ApiError {
        ApiError::new(
            "PERMISSION_DENIED",
            format!(
                "Permission '{permission}' denied on resource '{resource}' (or it may not exist)."
            ),
        )
        .with_info("IAM_PERMISSION_DENIED", &[("permission", permission)])
    }

    /// The google.rpc `Status` message (as an operation's `error` holds it).
    pub fn status_json(&self) -> Value {
        let mut v = json!({"code": json::status_codes(&self.status).1, "message": self.message});
        if !self.details.is_empty() {
            v["details"] = Value::from(self.details.clone());
        }
        v
    }

    pub fn reply(&self) -> Reply {
        let http = self.http.unwrap_or(json::status_codes(&self.status).0);
        let mut body =
            json!({"error": {"code": http, "message": self.message, "status": self.status}});
        if !self.details.is_empty() {
            body["error"]["details"] = Value::from(self.details.clone());
        }
        reply(http, "application/json; charset=UTF-8", body.to_string())
    }
}

impl State {
    /// Records a call and returns the injected fault it meets, if any.
    fn call(&mut self, method: &str, path: &str, query: &str, authorized: bool) -> Option<Fault> {
        self.log.record(
            method.to_string(),
            json!({"method": method, "path": path, "query": query, "authorization": authorized}),
        );
        self.faults.hit(|f| {
            (f.method == method || f.method == "*")
                && f.path.as_deref().is_none_or(|p| path.contains(p))
        })
    }
}

impl FakeGcp {
    /// Starts the server on its own runtime; it runs until dropped.
    pub fn start(opts: Options) -> std::io::Result<FakeGcp> {
        let rt = pym_fake_common::runtime("fake-gcp")?;
        let (api, fronts) = rt.block_on(bind(&opts))?;
        let port = api.local_addr()?.port();
        let front_port = fronts[0].local_addr()?.port();
        let shared = Arc::new(Shared {
            front_port,
            instance: format!("{}-{port}", std::process::id()),
            opts,
            state: Mutex::new(State::default()),
            changed: tokio::sync::Notify::new(),
            launching: Launching::default(),
            ids: Ids::default(),
        });
        let api_shared = shared.clone();
        rt.spawn(pym_fake_common::net::serve_http(api, move |parts, body| {
            handle(api_shared.clone(), parts, body)
        }));
        for l in fronts {
            rt.spawn(engine::serve_front(l, shared.clone()));
        }
        Ok(FakeGcp {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            front_port,
            shared,
            rt: Some(rt),
        })
    }

    /// What workload identity federation gave out.
    pub fn federation(&self) -> federation::Issued {
        self.shared.lock().federation.clone()
    }

    /// The bearer tokens the Cloud Run API was called with, and how often.
    pub fn bearers(&self) -> BTreeMap<String, u64> {
        self.shared.lock().bearers.clone()
    }

    /// Blocks until Ctrl-C or SIGTERM (for the standalone binary).
    pub fn wait_for_signal(&self) {
        if let Some(rt) = &self.rt {
            pym_fake_common::wait_for_signal(rt);
        }
    }
}

impl Drop for FakeGcp {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        self.shared.launching.wait();
        engine::remove_all(&self.shared.instance);
    }
}

async fn bind(opts: &Options) -> std::io::Result<(TcpListener, Vec<TcpListener>)> {
    let api = TcpListener::bind(("127.0.0.1", opts.port)).await?;
    let fronts = pym_fake_common::net::bind_loopback(opts.front_port).await?;
    Ok((api, fronts))
}

async fn handle(shared: Arc<Shared>, parts: Parts, body: Bytes) -> Reply {
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    if let Some(what) = path.strip_prefix("/__fake/") {
        return control(&shared, &parts.method, what, &body);
    }
    if path == "/token" && parts.method == Method::POST {
        return token(&body);
    }
    if path == "/tokeninfo" {
        return federation::tokeninfo(&shared, &query);
    }
    if path == "/v1/token" && parts.method == Method::POST {
        return federation::exchange(&shared, &body).await;
    }
    if let Some(call) = path
        .strip_prefix("/v1/projects/-/serviceAccounts/")
        .filter(|_| parts.method == Method::POST)
    {
        let bearer = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.strip_prefix("Bearer "));
        if let Some(sa) = call.strip_suffix(":generateAccessToken") {
            return federation::generate_access_token(&shared, sa, bearer);
        }
        if let Some(sa) = call.strip_suffix(":generateIdToken") {
            return federation::generate_id_token(&shared, sa, bearer, &body);
        }
    }
    if let Some(project) = path
        .strip_prefix("/v3/projects/")
        .and_then(|p| p.strip_suffix("/timeSeries"))
        .filter(|p| !p.contains('/') && parts.method == Method::GET)
    {
        let authorized = parts.headers.contains_key(hyper::header::AUTHORIZATION);
        let fault = shared
            .lock()
            .call("ListTimeSeries", &path, &query, authorized);
        if let Some(f) = fault {
            return ApiError::new(
                &f.status,
                f.message
                    .unwrap_or_else(|| format!("Injected {} for ListTimeSeries.", f.status)),
            )
            .reply();
        }
        if !authorized {
            return ApiError::new("UNAUTHENTICATED", "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.").reply();
        }
        return match monitoring::list(&shared.lock().metrics, project, &query) {
            Ok(v) => reply(200, "application/json; charset=UTF-8", v.to_string()),
            Err(e) => e.reply(),
        };
    }
    let Some(call) = run::route(&parts.method, &path, &query) else {
        let e = ApiError::new(
            "NOT_FOUND",
            format!(
                "The requested URL {path} was not found on this server (method {}).",
                parts.method
            ),
        );
        return e.reply();
    };
    let bearer = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("Bearer ") && a.len() > 7);
    let authorized = parts.headers.contains_key(hyper::header::AUTHORIZATION);
    let fault = shared.lock().call(call.method, &path, &query, authorized);
    if let Some(b) = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
    {
        *shared.lock().bearers.entry(b.to_string()).or_default() += 1;
    }
    if !bearer {
        let e = ApiError::new(
            "UNAUTHENTICATED",
            "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        )
        .with_info("CREDENTIALS_MISSING", &[("method", &format!("google.cloud.run.v2.{}", call.rpc_service())), ("service", "run.googleapis.com")]);
        return e.reply();
    }
    if let Some(f) = fault {
        return fault_error(&f, &call).reply();
    }
    run::handle(&shared, call, &body).await
}

/// Google's token endpoint, for identity tokens only: a service account's signed JWT
/// (`grant_type` jwt-bearer, its `target_audience` the audience wanted; the signature is
/// not checked) is answered with an `id_token` for that audience. Point a key's
/// `token_uri` here (`--write-key` does).
fn token(body: &[u8]) -> Reply {
    let form: BTreeMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let reply = |status: u16, v: Value| {
        Response::builder()
            .status(status)
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap_or_default()
    };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return reply(
            400,
            json!({"error": "unsupported_grant_type", "error_description": "Only the jwt-bearer grant (service accounts) is implemented here"}),
        );
    }
    let Some(claims) = form.get("assertion").and_then(|a| json::jwt_claims(a)) else {
        return reply(
            400,
            json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
        );
    };
    let Some(audience) = claims["target_audience"].as_str() else {
        return reply(
            400,
            json!({"error": "invalid_request", "error_description": "Only identity tokens (target_audience) are issued here"}),
        );
    };
    let now = json::now_ms() / 1000;
    let email = claims["iss"].clone();
    let id = json::jwt(
        &json!({"iss": "https://accounts.google.com", "aud": audience, "azp": email, "email": email, "email_verified": true, "sub": "100000000000000000000", "iat": now, "exp": now + 3600}),
    );
    reply(200, json!({"id_token": id}))
}

/// Writes a service-account key file as Google issues them, with a fresh RSA key (made
/// with openssl): Google's clients sign their own tokens with it. Its `token_uri` may be a
/// local Cloud Run's `/token`, which issues identity tokens for private services.
pub fn write_service_account_key(
    path: &std::path::Path,
    project: &str,
    token_uri: &str,
) -> Result<(), String> {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let key = json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": "0000000000000000000000000000000000000000",
        "private_key": String::from_utf8_lossy(&out.stdout),
        "client_email": format!("deployer@{project}.iam.gserviceaccount.com"),
        "client_id": "100000000000000000000",
        "token_uri": token_uri,
    });
    std::fs::write(path, key.to_string()).map_err(|e| e.to_string())
}

/// The error an injected fault answers with; a `PERMISSION_DENIED` without a message gets
/// Google's, naming the permission the method needs.
fn fault_error(f: &Fault, call: &run::Call) -> ApiError {
    let status = f.status.as_str();
    let mut e = if status == "PERMISSION_DENIED" && f.message.is_none() {
        ApiError::denied(call.permission(), &call.resource())
    } else {
        let message = f.message.clone().unwrap_or_else(|| match status {
            "RESOURCE_EXHAUSTED" => format!("Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' of service 'run.googleapis.com' (method {}).", call.method),
            "UNAVAILABLE" => "The service is currently unavailable.".into(),
            _ => format!("Injected {status} for {}.", call.method),
        });
        ApiError::new(status, message)
    };
    e.http = Some(f.code);
    e
}

fn control(shared: &Shared, method: &Method, what: &str, body: &[u8]) -> Reply {
    match (method, what) {
        (&Method::POST, "faults") => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return reply(
                    400,
                    "text/plain",
                    "the body must be JSON: {\"method\", \"code\", \"status\", \"message\", \"times\"}",
                );
            };
            let status = v.get("status").and_then(|x| x.as_str());
            let code = v.get("code").and_then(|x| x.as_u64()).map(|c| c as u16);
            let (status, code) = match (status, code) {
                (Some(s), Some(c)) => (s.to_string(), c),
                (Some(s), None) => (s.to_string(), json::status_codes(s).0),
                (None, Some(c)) => (json::status_of_http(c).to_string(), c),
                (None, None) => ("UNAVAILABLE".to_string(), 503),
            };
            let fault = Fault {
                method: v
                    .get("method")
                    .and_then(|x| x.as_str())
                    .unwrap_or("*")
                    .to_string(),
                path: v.get("path").and_then(|x| x.as_str()).map(String::from),
                status,
                code,
                message: v.get("message").and_then(|x| x.as_str()).map(String::from),
            };
            let times = v.get("times").and_then(|x| x.as_u64()).map(|t| t as u32);
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
        _ => reply(
            404,
            "text/plain",
            "the test hooks are POST|DELETE /__fake/faults and GET /__fake/calls",
        ),
    }
}

pub(crate) fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("a valid response")
}

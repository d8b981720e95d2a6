//! A local Elastic Beanstalk and S3, for tests that drive the official AWS SDK.
//!
//! One HTTP port answers both services, told apart the way AWS tells them apart: by the
//! service in the request's SigV4 credential scope (`…/elasticbeanstalk/aws4_request` or
//! `…/s3/aws4_request`), falling back to the request's shape (a form POST to `/` with an
//! `Action` is the Query API, anything else is S3 path-style). Point an SDK at it with
//! `AWS_ENDPOINT_URL=http://127.0.0.1:PORT`.
//!
//! An environment runs the image its source bundle (`Dockerrun.aws.json`) names as a real
//! container on the local Docker engine, pulled with the registry credentials the bundle's
//! `Authentication` names in S3. Its CNAME, `<prefix>.<region>.elasticbeanstalk.localhost`,
//! reaches that container through the load balancer port (80 by default), which routes by
//! the `Host` header; `*.localhost` names resolve to loopback (RFC 6761; glibc does it with
//! `libnss-myhostname`). Swapping CNAMEs swaps which container a name reaches.
//!
//! STS answers `AssumeRoleWithWebIdentity` (`sts.rs`): a CI job's OIDC identity token,
//! checked against the keys its issuer publishes, becomes temporary credentials, and a
//! request signed with them must carry their session token.
//!
//! What is not checked: SigV4 signatures (the credential scope is read, never verified),
//! IAM policies (inject `AccessDenied` with a fault instead), zip source bundles.
//!
//! Test hooks, also over HTTP on the same port: `POST /__fake/faults` with
//! `{"action": "DescribeEnvironments", "code": "Throttling", "status": 400, "times": 2}`
//! answers the next two calls of that action with that error (`"action": "*"` matches every
//! call, no `times` means always); `GET /__fake/calls` counts the calls per action.

mod eb;
mod engine;
mod options;
mod s3;
pub mod sts;
mod xml;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::{Method, Response};
use pym_fake_common::time::from_date_time;
pub(crate) use pym_fake_common::time::{now_ms, rfc3339_millis as iso};
use pym_fake_common::{Faults, Ids};
use tokio::net::TcpListener;

pub type Reply = Response<Full<Bytes>>;

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// The API port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// The load balancer port on 127.0.0.1 and ::1 that environment CNAMEs reach; `None` runs
    /// no load balancer (the environments still run and are health-checked).
    pub lb_port: Option<u16>,
    pub region: String,
    pub account: String,
    /// How long a new container has to answer its health check before the environment goes Red.
    pub health_grace: Duration,
    /// How long each simulated transition (Launching, Updating, Terminating) takes at least.
    pub step_delay: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            port: 0,
            lb_port: Some(80),
            region: "us-east-1".into(),
            account: "123456789012".into(),
            health_grace: Duration::from_secs(20),
            step_delay: Duration::from_millis(300),
        }
    }
}

/// A running server. Dropping it removes every container it started.
pub struct FakeAws {
    pub endpoint: String,
    pub port: u16,
    pub lb_port: Option<u16>,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

pub(crate) struct Shared {
    pub opts: Options,
    /// `http://127.0.0.1:<port>`: where clients reach this server (S3 URLs it hands out).
    pub endpoint: String,
    /// Labels every container of this server, for cleanup.
    pub instance: String,
    pub state: Mutex<State>,
    pub ids: Ids,
}

impl Shared {
    pub fn request_id(&self) -> String {
        let n = self.ids.next();
        format!("{:08x}-fa4e-4a3e-9c1d-{:012x}", std::process::id(), n)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// A bucket's objects; the bucket is made, now, when there is none.
    pub fn bucket(&mut self, name: &str) -> &mut BTreeMap<String, s3::Object> {
        self.bucket_created
            .entry(name.to_string())
            .or_insert_with(now_ms);
        self.buckets.entry(name.to_string()).or_default()
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub eb: eb::Beanstalk,
    pub buckets: BTreeMap<String, BTreeMap<String, s3::Object>>,
    /// When each bucket was made (milliseconds since the epoch): ListBuckets' CreationDate.
    pub bucket_created: BTreeMap<String, i64>,
    pub uploads: BTreeMap<String, s3::Upload>,
    faults: Faults<Fault>,
    calls: BTreeMap<String, u64>,
    /// The temporary credentials STS gave out, by access key.
    pub sessions: BTreeMap<String, sts::Session>,
    /// The calls signed by each access key.
    signed_by: BTreeMap<String, u64>,
}

#[derive(Clone)]
struct Fault {
    action: String,
    code: String,
    message: String,
    status: u16,
}

/// An error answer, in the protocol of the service that gives it.
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "InvalidParameterValue", message)
    }
}

impl State {
    /// Counts a call and returns the injected fault it meets, if any.
    pub fn call(&mut self, action: &str) -> Option<ApiError> {
        *self.calls.entry(action.to_string()).or_default() += 1;
        let f = self.faults.hit(|f| f.action == action || f.action == "*")?;
        Some(ApiError::new(f.status, &f.code, f.message))
    }
}

impl FakeAws {
    /// Starts the server on its own runtime; it runs until dropped.
    pub fn start(opts: Options) -> std::io::Result<FakeAws> {
        let rt = pym_fake_common::runtime("fake-aws")?;
        let (api, lbs) = rt.block_on(bind(&opts))?;
        let port = api.local_addr()?.port();
        let lb_port = lbs
            .first()
            .map(|l| l.local_addr().map(|a| a.port()))
            .transpose()?;
        let shared = Arc::new(Shared {
            endpoint: format!("http://127.0.0.1:{port}"),
            instance: format!("{}-{port}", std::process::id()),
            opts,
            state: Mutex::new(State::default()),
            ids: Ids::default(),
        });
        let api_shared = shared.clone();
        rt.spawn(pym_fake_common::net::serve_http(api, move |parts, body| {
            handle(api_shared.clone(), parts, body)
        }));
        for l in lbs {
            rt.spawn(engine::serve_lb(l, shared.clone()));
        }
        rt.spawn(eb::monitor(shared.clone()));
        Ok(FakeAws {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            lb_port,
            shared,
            rt: Some(rt),
        })
    }

    /// Answers the next `times` calls of `action` (or every call, with `None`) with an error.
    pub fn fail(&self, action: &str, status: u16, code: &str, message: &str, times: Option<u32>) {
        self.shared.lock().faults.add(
            Fault {
                action: action.into(),
                code: code.into(),
                message: message.into(),
                status,
            },
            times,
        );
    }

    /// How many calls of `action` the server has answered (faults included).
    pub fn calls(&self, action: &str) -> u64 {
        self.shared.lock().calls.get(action).copied().unwrap_or(0)
    }

    /// How many calls each access key signed.
    pub fn calls_by_key(&self) -> BTreeMap<String, u64> {
        self.shared.lock().signed_by.clone()
    }

    /// The temporary credentials STS gave web identities, by access key.
    pub fn web_identities(&self) -> BTreeMap<String, sts::Session> {
        self.shared.lock().sessions.clone()
    }

    /// Stores an object, creating the bucket if needed (what a test's setup puts in S3).
    pub fn put_object(&self, bucket: &str, key: &str, body: impl Into<Bytes>) {
        self.shared.lock().bucket(bucket).insert(
            key.into(),
            s3::Object::new(body.into(), "binary/octet-stream"),
        );
    }

    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.shared
            .lock()
            .buckets
            .get(bucket)?
            .get(key)
            .map(|o| o.data.clone())
    }

    /// The names of the containers that run the environments now.
    pub fn containers(&self) -> Vec<String> {
        self.shared.lock().eb.containers()
    }

    /// Removes the containers of an application's environments (a test's cleanup, when
    /// several tests share one server).
    pub fn remove_app(&self, app: &str) {
        engine::remove_app(app);
    }

    /// An application's environments as the load balancer sees them (their containers and
    /// ports), and the engine's view of those containers: a failed test's evidence.
    pub fn dump(&self, app: &str) -> String {
        let envs = self.shared.lock().eb.dump(app);
        let ps = std::process::Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("label={}.app={app}", engine::LABEL),
            ])
            .args(["--format", "{{.Names}} {{.Status}} {{.Ports}}"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!("environments:\n{envs}containers:\n{ps}")
    }

    /// `(name, status, health, CNAME)` of an application's environments, terminated ones too.
    pub fn environments(&self, app: &str) -> Vec<(String, String, String, String)> {
        self.shared.lock().eb.summary(app)
    }

    /// The option settings `(namespace, name, value)` of an application's environment.
    pub fn options(&self, app: &str, env: &str) -> Vec<(String, String, String)> {
        self.shared.lock().eb.options(app, env)
    }

    /// Blocks until Ctrl-C or SIGTERM (for the standalone binary).
    pub fn wait_for_signal(&self) {
        if let Some(rt) = &self.rt {
            pym_fake_common::wait_for_signal(rt);
        }
    }
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        engine::remove_all(&self.shared.instance);
    }
}

async fn bind(opts: &Options) -> std::io::Result<(TcpListener, Vec<TcpListener>)> {
    let api = TcpListener::bind(("127.0.0.1", opts.port)).await?;
    let lbs = match opts.lb_port {
        Some(p) => pym_fake_common::net::bind_loopback(p).await?,
        None => Vec::new(),
    };
    Ok((api, lbs))
}

async fn handle(shared: Arc<Shared>, parts: Parts, body: Bytes) -> Reply {
    let path = parts.uri.path().to_string();
    if let Some(what) = path.strip_prefix("/__fake/") {
        return control(&shared, &parts.method, what, &body);
    }
    let scope = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split([',', ' ']).next())
        .map(|c| c.split('/').collect::<Vec<_>>());
    let service = scope.as_ref().and_then(|s| s.get(3).copied());
    // A key STS gave out signs only with its session token beside it.
    if let Some(key) = scope.as_ref().and_then(|s| s.first()) {
        let mut state = shared.lock();
        *state.signed_by.entry(key.to_string()).or_default() += 1;
        if let Some(session) = state.sessions.get(*key) {
            let token = parts
                .headers
                .get("x-amz-security-token")
                .and_then(|v| v.to_str().ok());
            if token != Some(session.token.as_str()) {
                return reply(
                    403,
                    "text/xml",
                    format!(
                        "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>the security token of {key} is missing or wrong</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
                        shared.request_id()
                    ),
                );
            }
        }
    }
    let sts_call = body
        .split(|b| *b == b'&')
        .any(|kv| kv == b"Action=AssumeRoleWithWebIdentity");
    // An unsigned Query request (form-encoded POST to `/`) is Beanstalk's, with or without
    // an `Action` (none gets `MissingAction`); S3 never posts a form to `/`.
    let form = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let is_query = parts.method == Method::POST
        && path == "/"
        && (form || body.windows(7).any(|w| w == b"Action="));
    match service {
        _ if sts_call && (service.is_none() || service == Some("sts")) => {
            sts::handle(&shared, &body).await
        }
        Some("elasticbeanstalk") => eb::handle(&shared, &body).await,
        Some("s3") => s3::handle(&shared, &parts, &body),
        _ if is_query => eb::handle(&shared, &body).await,
        _ => s3::handle(&shared, &parts, &body),
    }
}

fn control(shared: &Shared, method: &Method, what: &str, body: &[u8]) -> Reply {
    match (method, what) {
        (&Method::POST, "faults") => {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
                return reply(
                    400,
                    "text/plain",
                    "the body must be JSON: {\"action\", \"code\", \"status\", \"times\", \"message\"}",
                );
            };
            let s = |k: &str, d: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or(d).to_string();
            let status = v.get("status").and_then(|x| x.as_u64()).unwrap_or(400) as u16;
            let times = v.get("times").and_then(|x| x.as_u64()).map(|t| t as u32);
            shared.lock().faults.add(
                Fault {
                    action: s("action", "*"),
                    code: s("code", "Throttling"),
                    message: s("message", "Rate exceeded"),
                    status,
                },
                times,
            );
            reply(200, "application/json", "{}")
        }
        (&Method::GET, "calls") => {
            let calls = shared.lock().calls.clone();
            reply(
                200,
                "application/json",
                serde_json::to_string(&calls).unwrap_or_default(),
            )
        }
        _ => reply(
            404,
            "text/plain",
            "the test hooks are POST /__fake/faults and GET /__fake/calls",
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

/// Reads `YYYY-MM-DDTHH:MM:SS[.fff]Z` back into milliseconds.
pub(crate) fn parse_iso(t: &str) -> Option<i64> {
    let (date, time) = t.strip_suffix('Z')?.split_once('T')?;
    from_date_time(date, time)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_round_trip() {
        for ms in [0, 1_795_806_000_123, 951_782_400_000] {
            assert_eq!(
                super::parse_iso(&super::iso(ms)),
                Some(ms),
                "{}",
                super::iso(ms)
            );
        }
        assert_eq!(super::iso(1_795_806_000_123), "2026-11-27T19:00:00.123Z");
        assert_eq!(
            super::parse_iso("2026-11-27T19:00:00Z"),
            Some(1_795_806_000_000)
        );
    }
}

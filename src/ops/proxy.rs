//! The live address of the docker target: an HTTP/1.1 reverse proxy that the tool manages.
//!
//! It runs in a container of its own (`pym-<name>-proxy`, restarted by the engine, so it
//! outlives the xtask that started it), published on the live port. Its image holds the
//! very binary that deploys (the service's xtask, or `pymdeploy`), started with the hidden
//! `__proxy` command.
//!
//! Each **request** goes to the upstream (`host:port` of the live container on the
//! service's network) named in a state file at the moment it arrives, so a client's
//! keep-alive connection to the proxy outlives any switch: its next request simply goes to
//! the new version. `promote` and `rollback` rewrite the file atomically
//! (`__proxy-route`; its first line is the live upstream, the others those live before,
//! most recent first, which is the order `rollback` goes back along), then wait until the old upstream has no request in flight
//! (`__proxy-drain`, asking the proxy's admin port on the container's loopback) before
//! stopping it. Bodies stream through in both directions; `Upgrade` (WebSocket)
//! connections are spliced once the upstream agrees; `X-Forwarded-For`, `-Proto` and
//! `-Host` are added. A request without a body that meets a dead pooled connection is
//! sent once more on a fresh one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Where the proxy keeps its routes, inside its container: a volume of the container's
/// own, so the routes survive a restart of the proxy or of the engine.
pub const STATE_DIR: &str = "/state";
pub const STATE_FILE: &str = "/state/upstream";
/// Where proxies before revision 5 kept them (a tmpfs, emptied by any restart): read
/// once, when such a proxy is replaced.
pub const LEGACY_STATE_FILE: &str = "/tmp/pym-upstream";
/// Where the proxy binary sits inside its image.
pub const BINARY: &str = "/usr/local/bin/pym-proxy";
/// The port the proxy listens on inside its container.
pub const PORT: u16 = 8080;
/// The admin port, on the container's loopback only: in-flight counts for the drain.
pub const ADMIN_PORT: u16 = 8079;
/// How long the proxy waits for an upstream's response headers before answering 504 and
/// saying so in its log (nginx's `proxy_read_timeout` default). A body may take longer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// The revision of the proxy's behaviour and commands; a running proxy of another
/// revision is replaced. 1 was the TCP proxy; 2 routes each request, drains, and keeps
/// the order versions were live in; 3 runs locked down on an image of its own; 4 connects
/// to the address the route names, not by DNS; 5 keeps its routes in a volume; 6 answers
/// 504 (and logs it) when an upstream sends no response headers within `UPSTREAM_TIMEOUT`.
pub const REVISION: u32 = 6;

type Body = BoxBody<Bytes, hyper::Error>;

/// The route file's identity (inode, mtime seconds and nanoseconds).
type FileId = (u64, i64, i64);

struct Shared {
    state: PathBuf,
    /// The upstream (its name, and the address to connect to), with the identity of the
    /// file it was read from, so the file is read again only when it was replaced.
    route: Mutex<(Option<FileId>, Option<Upstream>)>,
    /// Requests (and upgraded connections) in flight, per upstream.
    inflight: Mutex<HashMap<String, usize>>,
    client: Client<HttpConnector, Body>,
}

impl Shared {
    /// The route, read again if the file was replaced. Callers hold the route lock.
    fn refresh(&self, route: &mut (Option<FileId>, Option<Upstream>)) -> Option<Upstream> {
        let id = std::fs::metadata(&self.state)
            .ok()
            .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()));
        if id.is_none() || route.0 != id {
            // The first line is the live upstream; the others are the ones live before it.
            route.1 = std::fs::read_to_string(&self.state)
                .ok()
                .and_then(|t| t.lines().next().and_then(Upstream::parse));
            route.0 = id;
        }
        route.1.clone()
    }

    fn upstream(&self) -> Option<Upstream> {
        self.refresh(&mut self.route.lock().unwrap())
    }

    /// The live upstream, with this request counted in flight to it. Both under the route
    /// lock, so a drain that reads the route after a switch (`inflight`) sees every request
    /// that chose the old upstream.
    fn checkout(self: &Arc<Self>) -> Option<(Upstream, InFlight)> {
        let mut route = self.route.lock().unwrap();
        let upstream = self.refresh(&mut route)?;
        let guard = InFlight::new(self, &upstream.name);
        Some((upstream, guard))
    }

    fn inflight(&self, upstream: &str) -> usize {
        let mut route = self.route.lock().unwrap();
        self.refresh(&mut route);
        self.inflight
            .lock()
            .unwrap()
            .get(upstream)
            .copied()
            .unwrap_or(0)
    }
}

/// A route line: `<container>:<port> [<address>:<port>]`. The name identifies the
/// upstream (drain, history); the address, when given, is where to connect.
#[derive(Clone, Debug)]
struct Upstream {
    name: String,
    addr: String,
}

impl Upstream {
    fn parse(line: &str) -> Option<Upstream> {
        let mut words = line.split_whitespace();
        let name = words.next()?.to_string();
        let addr = words.next().map_or_else(|| name.clone(), str::to_string);
        Some(Upstream { name, addr })
    }
}

/// Counts one request in flight to an upstream until dropped (when its response body has
/// been sent, or its upgraded connection closed).
struct InFlight {
    shared: Arc<Shared>,
    upstream: String,
}

impl InFlight {
    fn new(shared: &Arc<Shared>, upstream: &str) -> InFlight {
        *shared
            .inflight
            .lock()
            .unwrap()
            .entry(upstream.to_string())
            .or_default() += 1;
        InFlight {
            shared: shared.clone(),
            upstream: upstream.to_string(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.shared.inflight.lock().unwrap();
        if let Some(n) = map.get_mut(&self.upstream) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Serves forever: the proxy on `listen`, the admin endpoint on the loopback.
pub async fn serve(listen: &str, state: &Path) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let admin = TcpListener::bind(("127.0.0.1", ADMIN_PORT))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{ADMIN_PORT}"))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    // Idle upstream connections are dropped before a typical server's keep-alive
    // timeout (gunicorn: 2 s), so a pooled connection is rarely found closed.
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(1500))
        .build(connector);
    let shared = Arc::new(Shared {
        state: state.to_path_buf(),
        route: Mutex::new((None, None)),
        inflight: Mutex::new(HashMap::new()),
        client,
    });
    eprintln!(
        "pym-proxy listening on {listen} (admin 127.0.0.1:{ADMIN_PORT}), upstream from {}",
        state.display()
    );
    let admin_shared = shared.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = admin.accept().await else {
                continue;
            };
            let shared = admin_shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(admin_answer(&shared, &req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(forward(shared, peer, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await
                && !e.is_incomplete_message()
            {
                eprintln!("connection from {peer}: {e}");
            }
        });
    }
}

fn admin_answer(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or("");
    let text = match req.uri().path() {
        "/inflight" => {
            let upstream = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("upstream="))
                .unwrap_or("");
            shared.inflight(upstream).to_string()
        }
        "/route" => shared.upstream().map(|u| u.name).unwrap_or_default(),
        _ => {
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
    };
    Response::new(Full::new(Bytes::from(text)))
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let body = Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed();
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Headers that belong to one connection, not to the request: never forwarded (RFC 9110
/// 7.6.1), nor any header the `Connection` header names.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for n in named {
        if !(keep_upgrade && n == header::UPGRADE) {
            headers.remove(n);
        }
    }
    for h in HOP_BY_HOP {
        if keep_upgrade && (*h == "upgrade" || *h == "connection") {
            continue;
        }
        headers.remove(*h);
    }
}

async fn forward(
    shared: Arc<Shared>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let Some((upstream, guard)) = shared.checkout() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no live version yet\n".into(),
        );
    };
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    parts.uri = match format!("http://{}{path}", upstream.addr).parse() {
        Ok(u) => u,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("bad request target {path}: {e}\n"),
            );
        }
    };
    strip_hop_by_hop(&mut parts.headers, upgrade);
    let ip = peer.ip().to_string();
    let forwarded_for = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        parts.headers.insert("x-forwarded-for", v);
    }
    if !parts.headers.contains_key("x-forwarded-proto") {
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(host) = parts.headers.get(header::HOST).cloned() {
        parts.headers.entry("x-forwarded-host").or_insert(host);
    }
    // A request with no body can be sent again if the pooled connection it went out on
    // turns out to be closed; one with a body cannot (it is streamed, not kept).
    let bodiless = hyper::body::Body::is_end_stream(&body);
    let retry = bodiless.then(|| (parts.method.clone(), parts.headers.clone(), parts.version));
    let sent = async {
        let result = shared
            .client
            .request(Request::from_parts(parts, body.boxed()))
            .await;
        match (result, retry) {
            (Err(e), Some((method, headers, version))) if worth_retry(&e, &method) => {
                // Sent again to the upstream live now: when the first one went away under
                // the request (stopped after a switch), the new one answers.
                let now = shared.upstream().unwrap_or_else(|| upstream.clone());
                let mut again = Request::new(
                    Empty::<Bytes>::new()
                        .map_err(|never| match never {})
                        .boxed(),
                );
                *again.method_mut() = method;
                *again.uri_mut() = format!("http://{}{path}", now.addr)
                    .parse()
                    .expect("the same path parsed before");
                *again.headers_mut() = headers;
                *again.version_mut() = version;
                shared.client.request(again).await
            }
            (r, _) => r,
        }
    };
    let Ok(result) = tokio::time::timeout(UPSTREAM_TIMEOUT, sent).await else {
        eprintln!(
            "upstream {} ({}) sent no response to {peer} within {} s",
            upstream.name,
            upstream.addr,
            UPSTREAM_TIMEOUT.as_secs()
        );
        return plain(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the live version at {} did not answer within {} s\n",
                upstream.name,
                UPSTREAM_TIMEOUT.as_secs()
            ),
        );
    };
    let mut res = match result {
        Ok(res) => res,
        Err(e) => {
            eprintln!(
                "upstream {} ({}) failed for {peer}: {e:#}",
                upstream.name, upstream.addr
            );
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("the live version at {} did not answer\n", upstream.name),
            );
        }
    };
    if upgrade && res.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut res);
        tokio::spawn(async move {
            let _guard = guard;
            let (Some(Ok(client)), Ok(server)) = (
                match client_upgrade {
                    Some(c) => Some(c.await),
                    None => None,
                },
                upstream_upgrade.await,
            ) else {
                return;
            };
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(server))
                    .await;
        });
        let (parts, _) = res.into_parts();
        return Response::from_parts(parts, Empty::new().map_err(|never| match never {}).boxed());
    }
    strip_hop_by_hop(res.headers_mut(), false);
    // The request stays in flight until its response body has been sent (or dropped).
    res.map(move |body| {
        body.map_frame(move |f| {
            let _ = &guard;
            f
        })
        .boxed()
    })
}

/// Whether a bodiless request that failed on its way to the upstream is sent once more,
/// on a fresh connection: an idempotent one (RFC 9110, 9.2.2) after any connection
/// failure (a pooled connection reset by a version being stopped, say); any other only
/// when it was never sent (the connection could not be made, or closed before the
/// request went out).
fn worth_retry(e: &hyper_util::client::legacy::Error, method: &hyper::Method) -> bool {
    if e.is_connect() || method.is_idempotent() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            return h.is_canceled() || h.is_incomplete_message();
        }
        source = s.source();
    }
    false
}

/// The files of the proxy's image: the binary (at `BINARY`) and the shared libraries it
/// loads, each at its own path, as `ldd` lists them; a static binary needs none.
pub fn image_files(exe: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut files = vec![(exe.to_path_buf(), BINARY.to_string())];
    let out = std::process::Command::new("ldd").arg(exe).output();
    if let Some(out) = out.ok().filter(|o| o.status.success()) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`, or the loader alone.
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                files.push((PathBuf::from(p), p.to_string()));
            }
        }
    }
    Ok(files)
}

/// The route file as it is: the live upstream, then those live before.
pub fn show_routes(state: &Path) -> Result<String> {
    match std::fs::read_to_string(state) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", state.display())),
    }
}

/// How many upstreams the route file remembers: the live one and those live before it.
const HISTORY: usize = 32;

/// Makes `upstream` the live one: the first line of the route file, above the upstreams
/// that were live before it, most recent first (what `rollback` goes back along). Written
/// atomically (write then rename), so a request never reads half of it.
pub fn set_route(state: &Path, upstream: &str, addr: Option<&str>) -> Result<()> {
    let old = std::fs::read_to_string(state).unwrap_or_default();
    let first = match addr {
        Some(a) => format!("{} {}", upstream.trim(), a.trim()),
        None => upstream.trim().to_string(),
    };
    let mut lines = vec![first.as_str()];
    lines.extend(
        old.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && l.split_whitespace().next() != Some(upstream.trim())),
    );
    lines.truncate(HISTORY);
    let tmp = state.with_extension("new");
    std::fs::write(&tmp, lines.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, state)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), state.display()))
}

/// Waits until `upstream` has no request in flight, for at most `timeout`, asking the
/// proxy's admin port every 20 ms. Returns how many were still in flight (0: drained).
pub async fn drain(upstream: &str, timeout: Duration) -> Result<usize> {
    let started = Instant::now();
    loop {
        let (status, body) = crate::ops::http::get(
            "127.0.0.1",
            ADMIN_PORT,
            &format!("/inflight?upstream={upstream}"),
            Duration::from_secs(2),
        )
        .await?;
        anyhow::ensure!(status == 200, "the proxy's admin port answered {status}");
        let n: usize = body
            .trim()
            .parse()
            .with_context(|| format!("the proxy's admin port answered `{body}`"))?;
        if n == 0 || started.elapsed() >= timeout {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

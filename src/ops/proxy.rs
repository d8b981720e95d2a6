//! The live address of the docker target: an HTTP reverse proxy that the tool manages.
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
//! sent once more on a fresh one. The common HTTP/1.1 request takes the proxy's own path
//! (`h1`); everything else, HTTP/2 included, is served by hyper (below).
//!
//! A **canary** (`__proxy-canary`, a second state file beside the routes) sends a share of
//! the requests to another upstream: each client is given a bucket (0 to 9999) in a cookie,
//! `pym-canary`, the first time it comes while a canary runs, and a bucket below the
//! share (in hundredths of a percent) goes to the canary; so one client sees one version
//! in a step, and one on the canary stays on it as the share grows. Without a canary no
//! cookie is set and nothing else changes.
//!
//! Every upstream's answers are **counted**: requests, 5xx answers, requests it gave no
//! answer to (the proxy's 502 and 504), and a histogram of the time to the response's
//! headers. The admin port serves them cumulatively in Prometheus' text format
//! (`/metrics`) and over the last seconds (`/window?seconds=N`, up to `WINDOW_KEPT`),
//! from a snapshot the proxy keeps every second.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme, Uri};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::ops::edge;

mod h1;

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
/// 504 (and logs it) when an upstream sends no response headers within `UPSTREAM_TIMEOUT`;
/// 7 splits requests for a canary and counts each upstream's answers; 8 serves HTTP/2 and
/// the edge (sites by host, TLS, maintenance), its canary file beside the routes.
pub const REVISION: u32 = 8;
/// The cookie that holds a client's canary bucket.
pub const CANARY_COOKIE: &str = "pym-canary";
/// Buckets a share is counted in: 10000, so a share is in hundredths of a percent.
pub const BUCKETS: u32 = 10_000;
/// The upper bounds (milliseconds) of the latency histogram's buckets; the last one,
/// +Inf, is implied.
pub const LATENCY_BOUNDS_MS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];
/// How many seconds of one-second snapshots the proxy keeps for `/window`.
pub const WINDOW_KEPT: u64 = 900;

type Body = BoxBody<Bytes, hyper::Error>;

/// The route file's identity (inode, mtime seconds and nanoseconds).
type FileId = (u64, i64, i64);

/// What the state files say, each read again only when it was replaced.
#[derive(Default)]
struct Routes {
    live_id: Option<FileId>,
    live: Option<Upstream>,
    canary_id: Option<FileId>,
    canary: Option<Canary>,
    maintenance_id: Option<FileId>,
    maintenance: Option<Arc<edge::Maintenance>>,
}

/// A share of the requests (`share` of `BUCKETS`) sent to `upstream`.
#[derive(Clone, Debug)]
struct Canary {
    share: u32,
    upstream: Upstream,
}

impl Canary {
    /// `<share in hundredths of a percent> <container>:<port> [<address>:<port>]`.
    fn parse(text: &str) -> Option<Canary> {
        let line = text.lines().next()?;
        let (share, rest) = line.trim().split_once(' ')?;
        Some(Canary {
            share: share.parse().ok().filter(|s| *s <= BUCKETS)?,
            upstream: Upstream::parse(rest)?,
        })
    }
}

fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
}

/// One service (and environment) the proxy serves, with its route files: the per-service
/// proxy has one, answering every host; the edge has one per `<key>.json` of its sites.
struct Site {
    key: String,
    conf: edge::SiteConf,
    conf_id: Option<FileId>,
    state: PathBuf,
    canary_state: PathBuf,
    maintenance_state: PathBuf,
    routes: Mutex<Routes>,
}

/// Where a request goes.
enum Pick {
    /// To an upstream: counted in flight, with the client's bucket and the one drawn for
    /// it now (to be set in its cookie).
    Upstream(Upstream, InFlight, Option<u32>, Option<u32>),
    /// Nowhere: the site is in maintenance.
    Maintenance(Arc<edge::Maintenance>),
    /// Nowhere yet: no version was routed.
    Nothing,
}

impl Site {
    fn new(key: &str, conf: edge::SiteConf, conf_id: Option<FileId>, state: PathBuf) -> Site {
        Site {
            key: key.to_string(),
            conf,
            conf_id,
            canary_state: canary_file(&state),
            maintenance_state: edge::maintenance_file(&state),
            state,
            routes: Mutex::new(Routes::default()),
        }
    }

    /// The routes, read again where a file was replaced. Callers hold the routes lock.
    fn refresh(&self, routes: &mut Routes) {
        let id = file_id(&self.state);
        if routes.live_id != id {
            // The first line is the live upstream; the others are the ones live before it.
            routes.live = std::fs::read_to_string(&self.state)
                .ok()
                .and_then(|t| t.lines().next().and_then(Upstream::parse));
            routes.live_id = id;
        }
        let id = file_id(&self.canary_state);
        if routes.canary_id != id {
            routes.canary = std::fs::read_to_string(&self.canary_state)
                .ok()
                .and_then(|t| Canary::parse(&t))
                .filter(|c| c.share > 0);
            routes.canary_id = id;
        }
        let id = file_id(&self.maintenance_state);
        if routes.maintenance_id != id {
            routes.maintenance = std::fs::read(&self.maintenance_state)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .map(Arc::new);
            routes.maintenance_id = id;
        }
    }

    /// Where a request of `bucket` goes now: the canary when one runs and the bucket is
    /// within its share, else live.
    fn pick(&self, routes: &Routes, bucket: Option<u32>) -> Option<Upstream> {
        match (&routes.canary, bucket) {
            (Some(c), Some(b)) if b < c.share => Some(c.upstream.clone()),
            _ => routes.live.clone(),
        }
    }

    fn upstream(&self) -> Option<Upstream> {
        let mut routes = self.routes.lock().unwrap();
        self.refresh(&mut routes);
        routes.live.clone()
    }

    /// Where a request whose client has `bucket` goes (none yet: one is drawn when a
    /// canary runs), with the request counted in flight to it. Both under the routes
    /// lock, so a drain that reads the route after a switch (`inflight`) sees every
    /// request that chose the old upstream. The routes are as last read: a request reads
    /// no file (see `refresh_all`).
    fn checkout(&self, shared: &Arc<Shared>, bucket: Option<u32>) -> Pick {
        let routes = self.routes.lock().unwrap();
        if let Some(m) = &routes.maintenance {
            return Pick::Maintenance(m.clone());
        }
        let drawn = match (routes.canary.is_some(), bucket) {
            (true, None) => Some(draw_bucket()),
            _ => None,
        };
        let bucket = bucket.or(drawn);
        let Some(upstream) = self.pick(&routes, bucket) else {
            return Pick::Nothing;
        };
        let guard = InFlight::new(shared, &upstream.name);
        Pick::Upstream(upstream, guard, bucket, drawn)
    }

    /// Where a request of `bucket` goes now, for a request sent again.
    fn now_for(&self, bucket: Option<u32>) -> Option<Upstream> {
        let routes = self.routes.lock().unwrap();
        self.pick(&routes, bucket)
    }
}

/// What only the edge has: its certificates, its ACME side, its access log, and the
/// HTTPS port clients reach it on (for redirects).
struct Edge {
    state_dir: PathBuf,
    certs: Arc<edge::Certs>,
    acme: Arc<edge::Acme>,
    log: edge::AccessLog,
    https_port: u16,
}

struct Shared {
    /// The edge's sites directory (`None`: the per-service proxy, one site).
    sites_dir: Option<PathBuf>,
    sites: RwLock<Arc<Vec<Arc<Site>>>>,
    /// Requests (and upgraded connections) in flight, per upstream.
    inflight: Mutex<HashMap<String, usize>>,
    stats: Mutex<Stats>,
    edge: Option<Edge>,
    /// Each upstream container's address as the engine's DNS gives it now (A records
    /// only), refreshed every second by `resolve_upstreams`: after a restart of the engine
    /// a container has a new address, and the one a route file names may be another
    /// container's, or this proxy's own.
    /// Kept per upstream name (`<container>:<port>`), as the authority to connect to.
    resolved: Mutex<HashMap<String, Authority>>,
}

impl Shared {
    /// Where to connect to `upstream`: its container's address now, where the engine's
    /// DNS says it, else the address its route names.
    fn addr_of(&self, upstream: &Upstream) -> Authority {
        match self.resolved.lock().unwrap().get(&upstream.name) {
            Some(a) => a.clone(),
            None => upstream.addr.clone(),
        }
    }

    /// Resolves every upstream a route names (live, the canary, those live before), each
    /// lookup on its own blocking thread and bounded: one the resolver stalls on neither
    /// holds the others nor a request.
    async fn resolve_upstreams(&self) {
        let sites = self.sites.read().unwrap().clone();
        let mut names: Vec<String> = Vec::new();
        for s in sites.iter() {
            let mut routes = s.routes.lock().unwrap();
            s.refresh(&mut routes);
            for u in routes
                .live
                .iter()
                .chain(routes.canary.as_ref().map(|c| &c.upstream))
            {
                let host = u.name.rsplit_once(':').map_or(u.name.as_str(), |(h, _)| h);
                // A route that names an address, not a container, needs no lookup.
                if host.parse::<std::net::IpAddr>().is_err() {
                    names.push(u.name.clone());
                }
            }
        }
        names.sort();
        names.dedup();
        let mut found = HashMap::new();
        for name in names {
            let (host, port) = name.rsplit_once(':').unwrap_or((name.as_str(), "80"));
            let (host, port) = (host.to_string(), port.to_string());
            let lookup = tokio::task::spawn_blocking(move || resolve_v4(&host));
            if let Ok(Ok(Some(ip))) = tokio::time::timeout(Duration::from_secs(2), lookup).await
                && let Ok(a) = Authority::try_from(format!("{ip}:{port}"))
            {
                found.insert(name, a);
            }
        }
        *self.resolved.lock().unwrap() = found;
    }
    fn new(sites_dir: Option<PathBuf>, sites: Vec<Arc<Site>>, edge: Option<Edge>) -> Shared {
        Shared {
            sites_dir,
            sites: RwLock::new(Arc::new(sites)),
            inflight: Mutex::new(HashMap::new()),
            stats: Mutex::new(Stats::default()),
            edge,
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the edge's sites again: a site whose conf file is unchanged keeps its state
    /// (its routes as read); the certificates follow the sites. True when they changed.
    fn reload(&self) -> bool {
        let Some(dir) = &self.sites_dir else {
            return false;
        };
        let old = self.sites.read().unwrap().clone();
        let read = edge::read_sites(dir);
        let unchanged = read.len() == old.len()
            && read.iter().zip(old.iter()).all(|((k, _), s)| {
                *k == s.key && file_id(&dir.join(format!("{k}.json"))) == s.conf_id
            });
        if unchanged {
            return false;
        }
        let sites: Vec<Arc<Site>> = read
            .iter()
            .map(|(key, conf)| {
                let id = file_id(&dir.join(format!("{key}.json")));
                match old.iter().find(|s| s.key == *key && s.conf == *conf) {
                    Some(s) if s.conf_id == id => s.clone(),
                    _ => Arc::new(Site::new(key, conf.clone(), id, edge::site_state(dir, key))),
                }
            })
            .collect();
        *self.sites.write().unwrap() = Arc::new(sites);
        self.refresh_all();
        if let Some(e) = &self.edge {
            e.certs.rebuild(&read);
        }
        true
    }

    /// The site a request for `host` and `path` goes to: an exact host before a wildcard,
    /// the longest path prefix first.
    fn site_for(&self, host: &str, path: &str) -> Option<Arc<Site>> {
        let sites = self.sites.read().unwrap().clone();
        sites
            .iter()
            .filter(|s| edge::under_prefix(s.conf.path_prefix.as_deref(), path))
            .filter_map(|s| {
                let rank = edge::host_rank(&s.conf.hosts, host)?;
                let prefix = s.conf.path_prefix.as_deref().map_or(0, str::len);
                Some(((rank, prefix), s))
            })
            .max_by_key(|(r, _)| *r)
            .map(|(_, s)| s.clone())
    }

    /// The live upstream of the only site (the per-service proxy's), for `/route`.
    fn upstream(&self) -> Option<Upstream> {
        let sites = self.sites.read().unwrap().clone();
        sites.first().and_then(|s| s.upstream())
    }

    /// Reads every site's route files again where one was replaced: when a command that
    /// changed one asks (`/reload`: a switch is in force when its command returns), every
    /// second, and before a drain counts.
    fn refresh_all(&self) {
        let sites = self.sites.read().unwrap().clone();
        for s in sites.iter() {
            s.refresh(&mut s.routes.lock().unwrap());
        }
    }

    fn inflight(&self, upstream: &str) -> usize {
        self.refresh_all();
        self.inflight
            .lock()
            .unwrap()
            .get(upstream)
            .copied()
            .unwrap_or(0)
    }

    /// Counts one answer (or the lack of one) of `upstream`.
    fn count(&self, upstream: &str, status: u16, no_answer: bool, took: Duration) {
        let mut stats = self.stats.lock().unwrap();
        let c = match stats.now.get_mut(upstream) {
            Some(c) => c,
            None => stats.now.entry(upstream.to_string()).or_default(),
        };
        c.add(status, no_answer, took);
    }
}

/// The IPv4 address of `host` (A records only: the engine's resolver may stall on AAAA
/// queries it forwards where no outside resolver answers).
fn resolve_v4(host: &str) -> Option<std::net::Ipv4Addr> {
    let c_host = std::ffi::CString::new(host).ok()?;
    // SAFETY: `hints` is zeroed as getaddrinfo expects, `res` is freed once read, and each
    // `ai_addr` of family AF_INET points at a `sockaddr_in`.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_family = libc::AF_INET;
        hints.ai_socktype = libc::SOCK_STREAM;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        if libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) != 0 {
            return None;
        }
        let mut found = None;
        let mut ai = res;
        while !ai.is_null() {
            if (*ai).ai_family == libc::AF_INET && !(*ai).ai_addr.is_null() {
                let sin = &*((*ai).ai_addr as *const libc::sockaddr_in);
                found = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
            ai = (*ai).ai_next;
        }
        libc::freeaddrinfo(res);
        found
    }
}

/// A bucket for a client new to the canary: random enough to split clients by share.
fn draw_bucket() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static DRAWN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(DRAWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    (h.finish() % BUCKETS as u64) as u32
}

/// The bucket a request's `pym-canary` cookie holds, if any.
fn cookie_bucket(headers: &HeaderMap) -> Option<u32> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == CANARY_COOKIE).then(|| v.trim().parse().ok())?
        })
        .filter(|b| *b < BUCKETS)
}

/// One upstream's answers, counted since the proxy started.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub requests: u64,
    /// Answers with a 5xx status from the upstream itself.
    pub errors: u64,
    /// Requests it gave no answer to (the proxy answered 502 or 504).
    pub failures: u64,
    /// Per bucket of `LATENCY_BOUNDS_MS` and one more (+Inf): not cumulative.
    pub latency: Vec<u64>,
    pub latency_sum_ms: f64,
}

impl Counts {
    fn add(&mut self, status: u16, no_answer: bool, took: Duration) {
        self.requests += 1;
        match no_answer {
            true => self.failures += 1,
            false if status >= 500 => self.errors += 1,
            false => {}
        }
        let ms = took.as_secs_f64() * 1000.0;
        if self.latency.len() != LATENCY_BOUNDS_MS.len() + 1 {
            self.latency = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        }
        let i = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.latency[i] += 1;
        self.latency_sum_ms += ms;
    }

    /// What was counted since `before`.
    fn since(&self, before: Option<&Counts>) -> Counts {
        let Some(b) = before else {
            return self.clone();
        };
        Counts {
            requests: self.requests.saturating_sub(b.requests),
            errors: self.errors.saturating_sub(b.errors),
            failures: self.failures.saturating_sub(b.failures),
            latency: self
                .latency
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(b.latency.get(i).copied().unwrap_or(0)))
                .collect(),
            latency_sum_ms: (self.latency_sum_ms - b.latency_sum_ms).max(0.0),
        }
    }
}

/// The counts now and a snapshot of them every second, for `WINDOW_KEPT` seconds.
#[derive(Default)]
struct Stats {
    now: HashMap<String, Counts>,
    snapshots: VecDeque<(Instant, HashMap<String, Counts>)>,
}

impl Stats {
    fn snapshot(&mut self) {
        let now = Instant::now();
        self.snapshots.push_back((now, self.now.clone()));
        while self
            .snapshots
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t).as_secs() > WINDOW_KEPT)
        {
            self.snapshots.pop_front();
        }
    }

    /// Each upstream's counts over the last `seconds` (fewer when the proxy has not run
    /// that long), and how many seconds that really is.
    fn window(&self, seconds: u64) -> (f64, HashMap<String, Counts>) {
        let now = Instant::now();
        let base = self
            .snapshots
            .iter()
            .find(|(t, _)| now.duration_since(*t).as_secs_f64() <= seconds as f64 + 0.5);
        let (span, base) = match base {
            Some((t, counts)) => (now.duration_since(*t).as_secs_f64(), Some(counts)),
            None => (0.0, None),
        };
        let counts = self
            .now
            .iter()
            .map(|(k, c)| (k.clone(), c.since(base.and_then(|b| b.get(k)))))
            .collect();
        (span, counts)
    }

    /// The counts in Prometheus' text exposition format.
    fn prometheus(&self) -> String {
        let mut names: Vec<&String> = self.now.keys().collect();
        names.sort();
        let mut out = String::new();
        let metric = |out: &mut String, name: &str, kind: &str, help: &str| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        };
        metric(
            &mut out,
            "pym_proxy_requests_total",
            "counter",
            "Requests the live proxy sent to an upstream, by the class of the answer (none: it gave no answer).",
        );
        for n in &names {
            let c = &self.now[*n];
            let ok = c.requests - c.errors - c.failures;
            for (class, v) in [("ok", ok), ("5xx", c.errors), ("none", c.failures)] {
                out.push_str(&format!(
                    "pym_proxy_requests_total{{upstream=\"{n}\",answer=\"{class}\"}} {v}\n"
                ));
            }
        }
        metric(
            &mut out,
            "pym_proxy_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its answer's headers, by upstream.",
        );
        for n in &names {
            let c = &self.now[*n];
            let mut cumulative = 0;
            for (i, le) in LATENCY_BOUNDS_MS
                .iter()
                .map(|ms| format!("{}", ms / 1000.0))
                .chain(["+Inf".to_string()])
                .enumerate()
            {
                cumulative += c.latency.get(i).copied().unwrap_or(0);
                out.push_str(&format!(
                    "pym_proxy_request_duration_seconds_bucket{{upstream=\"{n}\",le=\"{le}\"}} {cumulative}\n"
                ));
            }
            out.push_str(&format!(
                "pym_proxy_request_duration_seconds_sum{{upstream=\"{n}\"}} {}\n",
                c.latency_sum_ms / 1000.0
            ));
            out.push_str(&format!(
                "pym_proxy_request_duration_seconds_count{{upstream=\"{n}\"}} {}\n",
                c.requests
            ));
        }
        out
    }
}

/// `/window`'s answer: each upstream's counts over the last `seconds`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub seconds: f64,
    pub upstreams: HashMap<String, Counts>,
}

/// A route line: `<container>:<port> [<address>:<port>]`. The name identifies the
/// upstream (drain, history); the address, when given, is where to connect.
#[derive(Clone, Debug)]
struct Upstream {
    name: String,
    addr: Authority,
}

impl Upstream {
    fn parse(line: &str) -> Option<Upstream> {
        let mut words = line.split_whitespace();
        let name = words.next()?.to_string();
        let addr = Authority::try_from(words.next().unwrap_or(&name)).ok()?;
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

/// Serves forever: the per-service proxy on `listen`, routing every request by the route
/// file `state`; the admin endpoint on `admin` (the container's loopback).
pub async fn serve(listen: &str, state: &Path, admin: &str) -> Result<()> {
    let site = Site::new(
        "",
        edge::SiteConf {
            hosts: vec!["*".into()],
            ..edge::SiteConf::default()
        },
        None,
        state.to_path_buf(),
    );
    let shared = Arc::new(Shared::new(None, vec![Arc::new(site)], None));
    let plain = bind(listen).await?;
    let admin_at = admin;
    let admin = bind(admin_at).await?;
    eprintln!(
        "pym-proxy listening on {listen} (admin {admin_at}), upstream from {}",
        state.display()
    );
    run(shared, plain, None, admin).await
}

/// Serves forever: the edge, HTTP on `listen` and HTTPS on `listen_tls`, routing each
/// request by host and path to one of the sites in `sites_dir` (read again on `/reload`
/// and every second); certificates from the sites and from ACME; an access-log line per
/// request on stdout. `https_port` is where clients reach the HTTPS port (redirects name it).
pub async fn serve_edge(
    listen: &str,
    listen_tls: &str,
    sites_dir: &Path,
    https_port: u16,
    admin: &str,
) -> Result<()> {
    let state_dir = sites_dir.parent().unwrap_or(sites_dir).to_path_buf();
    std::fs::create_dir_all(sites_dir)
        .with_context(|| format!("cannot create {}", sites_dir.display()))?;
    let certs = Arc::new(edge::Certs::default());
    edge::load_issued(&state_dir, &certs);
    let edge = Edge {
        state_dir,
        certs: certs.clone(),
        acme: Arc::new(edge::Acme::default()),
        log: edge::AccessLog,
        https_port,
    };
    let shared = Arc::new(Shared::new(
        Some(sites_dir.to_path_buf()),
        Vec::new(),
        Some(edge),
    ));
    shared.reload();
    let plain = bind(listen).await?;
    let tls = bind(listen_tls).await?;
    let admin_at = admin;
    let admin = bind(admin_at).await?;
    eprintln!(
        "pym-edge listening on {listen} and {listen_tls} (TLS; admin {admin_at}), sites in {}",
        sites_dir.display()
    );
    // The certificates due, every second (the sites are read again in `run`): ACME's
    // orders run one at a time, beside the serving.
    let watcher = shared.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        let mut renewing: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            every.tick().await;
            if renewing.as_ref().is_none_or(|r| r.is_finished()) {
                let shared = watcher.clone();
                renewing = Some(tokio::spawn(async move {
                    let Some(e) = &shared.edge else { return };
                    let sites: Vec<(String, edge::SiteConf)> = shared
                        .sites
                        .read()
                        .unwrap()
                        .iter()
                        .map(|s| (s.key.clone(), s.conf.clone()))
                        .collect();
                    e.acme.renew_due(&e.state_dir, &sites, &e.certs).await;
                }));
            }
        }
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(edge::server_config(certs));
    run(shared, plain, Some((tls, acceptor)), admin).await
}

async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Accepts on each listener until the process ends.
async fn run(
    shared: Arc<Shared>,
    plain: TcpListener,
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    admin: TcpListener,
) -> Result<()> {
    shared.refresh_all();
    let snapshots = shared.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            snapshots.stats.lock().unwrap().snapshot();
        }
    });
    let resolver = shared.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            resolver.reload();
            resolver.refresh_all();
            resolver.resolve_upstreams().await;
        }
    });
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
    // One worker per core, each a single-threaded runtime accepting on its own handle of
    // the listeners with an upstream pool of its own, as nginx's workers: a request, its
    // upstream connection and their wakeups stay on one thread.
    let plain = plain.into_std()?;
    let tls = tls.map(|(l, a)| l.into_std().map(|l| (l, a))).transpose()?;
    let workers = std::env::var("PYM_PROXY_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let plain = plain.try_clone()?;
        let tls = tls
            .as_ref()
            .map(|(l, a)| l.try_clone().map(|l| (l, a.clone())))
            .transpose()?;
        let shared = shared.clone();
        handles.push(std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(worker(shared, plain, tls))
        }));
    }
    // The workers accept until the process ends; a worker that fails ends it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let failed = handles.into_iter().map(|h| h.join()).find_map(|r| match r {
            Ok(Err(e)) => Some(e),
            Err(_) => Some(anyhow::anyhow!("a proxy worker panicked")),
            Ok(Ok(())) => None,
        });
        let _ = tx.send(failed);
    });
    match rx.await {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// One worker's accept loops: plain HTTP, and TLS where the edge serves it.
async fn worker(
    shared: Arc<Shared>,
    plain: std::net::TcpListener,
    tls: Option<(std::net::TcpListener, tokio_rustls::TlsAcceptor)>,
) -> Result<()> {
    plain.set_nonblocking(true)?;
    let plain = TcpListener::from_std(plain)?;
    tokio::spawn(async {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            edge::flush_log();
        }
    });
    if let Some((listener, acceptor)) = tls {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("accept failed: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (shared, acceptor) = (shared.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let accepted =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await;
                    if let Ok(Ok(stream)) = accepted {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        connection(shared, peer, true, h2, stream).await;
                    }
                });
            }
        });
    }
    loop {
        let (stream, peer) = match plain.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(shared.clone(), peer, false, false, stream));
    }
}

thread_local! {
    /// The upstream pool of this worker (see `run`).
    static CLIENT: Client<HttpConnector, Body> = upstream_client();
}

fn upstream_client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    // Idle upstream connections are dropped before a typical server's keep-alive
    // timeout (gunicorn: 2 s), so a pooled connection is rarely found closed.
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(1500))
        .build(connector)
}

/// Serves one client connection: HTTP/1.1 on the proxy's own path (`h1`), which hands
/// what it does not take to hyper; HTTP/2, where TLS's ALPN chose it, to hyper at once.
async fn connection<I>(shared: Arc<Shared>, peer: SocketAddr, tls: bool, h2: bool, io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        hyper_connection(shared, peer, tls, io).await
    } else {
        h1::serve(shared, peer, tls, io).await
    }
}

/// Serves one client connection with hyper: HTTP/1.1 (upgrades spliced through) or
/// HTTP/2, whichever the client speaks (ALPN over TLS; the preface in plain text).
async fn hyper_connection<I>(shared: Arc<Shared>, peer: SocketAddr, tls: bool, io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(forward(shared, peer, tls, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
        let quiet = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_canceled());
        if !quiet {
            eprintln!("connection from {peer}: {e}");
        }
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
        "/reload" => {
            shared.reload();
            shared.refresh_all();
            "ok".into()
        }
        "/edge" => serde_json::to_string(&edge_status(shared)).unwrap_or_default(),
        "/metrics" => shared.stats.lock().unwrap().prometheus(),
        "/window" => {
            let seconds = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("seconds="))
                .and_then(|s| s.parse().ok())
                .unwrap_or(60);
            let (seconds, upstreams) = shared.stats.lock().unwrap().window(seconds);
            serde_json::to_string(&Window { seconds, upstreams }).unwrap_or_default()
        }
        _ => {
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
    };
    Response::new(Full::new(Bytes::from(text)))
}

/// The edge as `/edge` says it (and `cargo xtask status` shows it).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct EdgeStatus {
    pub sites: Vec<SiteStatus>,
    /// Each host's certificate and when it expires (Unix seconds).
    pub certificates: Vec<(String, i64)>,
}

/// One site of the edge: its conf (without TLS material), live route and maintenance.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SiteStatus {
    pub key: String,
    pub service: String,
    pub env: String,
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    pub tls: String,
    pub live: Option<String>,
    pub maintenance: bool,
}

fn edge_status(shared: &Shared) -> EdgeStatus {
    let sites = shared.sites.read().unwrap().clone();
    EdgeStatus {
        sites: sites
            .iter()
            .map(|s| {
                let mut routes = s.routes.lock().unwrap();
                s.refresh(&mut routes);
                SiteStatus {
                    key: s.key.clone(),
                    service: s.conf.service.clone(),
                    env: s.conf.env.clone(),
                    hosts: s.conf.hosts.clone(),
                    path_prefix: s.conf.path_prefix.clone(),
                    tls: match &s.conf.tls {
                        edge::SiteTls::Off => "off".into(),
                        edge::SiteTls::Files { .. } => "files".into(),
                        edge::SiteTls::Acme { directory, .. } => format!("acme {directory}"),
                    },
                    live: routes.live.as_ref().map(|u| u.name.clone()),
                    maintenance: routes.maintenance.is_some(),
                }
            })
            .collect(),
        certificates: shared
            .edge
            .as_ref()
            .map(|e| e.certs.expiries())
            .unwrap_or_default(),
    }
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
/// The hop-by-hop headers (RFC 9110, 7.6.1), and those older proxies used as such.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Takes out the hop-by-hop headers and those `Connection` names (an upgrade keeps its
/// `Upgrade` and `Connection`). Most messages carry none, or only `Connection`: the
/// names are looked at once, and only those present are removed.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let kept = |n: &HeaderName| keep_upgrade && (n == header::UPGRADE || n == header::CONNECTION);
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        if !kept(n) {
            headers.remove(n);
        }
    }
}

/// The host a request is for: its URI's authority (HTTP/2, absolute-form) or its `Host`
/// header, lowercase and without the port.
fn request_host(req: &Request<Incoming>) -> String {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| match h.rsplit_once(':') {
                    // `[::1]:8080` and `a.test:8080`; a bare IPv6 literal has no port.
                    Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                        host.to_string()
                    }
                    _ => h.to_string(),
                })
        })
        .unwrap_or_default();
    raw.trim_end_matches('.').to_ascii_lowercase()
}

async fn forward(
    shared: Arc<Shared>,
    peer: SocketAddr,
    tls: bool,
    req: Request<Incoming>,
) -> Response<Body> {
    let arrived = Instant::now();
    let host = request_host(&req);
    let path = req.uri().path().to_string();
    if let Some(e) = &shared.edge
        && let Some(token) = path.strip_prefix(edge::CHALLENGE_PATH)
        && let Some(answer) = e.acme.answer(token)
    {
        return plain(StatusCode::OK, answer);
    }
    // What the proxy answers itself (no site, a redirect, maintenance, no route yet) is
    // logged as a forwarded request is.
    let answer_here = |site: Option<&Site>, res: Response<Body>| {
        log_request(
            &shared,
            site,
            &req,
            &host,
            peer,
            tls,
            res.status(),
            None,
            arrived,
        );
        res
    };
    let Some(site) = shared.site_for(&host, &path) else {
        let res = plain(
            StatusCode::NOT_FOUND,
            format!("no service answers {host}{path} here\n"),
        );
        return answer_here(None, res);
    };
    // pymdeploy's own checks of a site's routing are answered over plain HTTP too (what
    // a client asks to be sent in the clear is its own choice).
    let checking = req.headers().contains_key(crate::ops::http::CHECK_HEADER);
    if !tls && !checking && site.conf.tls.is_on() && shared.edge.is_some() {
        let port = shared.edge.as_ref().map_or(443, |e| e.https_port);
        let authority = match port {
            443 => host.clone(),
            p => format!("{host}:{p}"),
        };
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut res = plain(
            StatusCode::PERMANENT_REDIRECT,
            format!("https://{authority}{target}\n"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("https://{authority}{target}")) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        return answer_here(Some(&site), res);
    }
    let (upstream, guard, bucket, drawn) =
        match site.checkout(&shared, cookie_bucket(req.headers())) {
            Pick::Upstream(u, g, b, d) => (u, g, b, d),
            Pick::Maintenance(m) => {
                let mut res = plain(StatusCode::SERVICE_UNAVAILABLE, m.page.clone());
                let headers = res.headers_mut();
                headers.insert(header::RETRY_AFTER, HeaderValue::from(m.retry_after));
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                if m.page.trim_start().starts_with('<') {
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                }
                return answer_here(Some(&site), res);
            }
            Pick::Nothing => {
                let res = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no live version yet\n".into(),
                );
                return answer_here(Some(&site), res);
            }
        };
    let logged = shared.edge.as_ref().map(|_| {
        (
            req.method().clone(),
            req.uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            req.version(),
        )
    });
    let name = upstream.name.clone();
    let mut res = forward_to(
        &shared, &site, peer, tls, req, upstream, guard, bucket, arrived,
    )
    .await;
    if let (Some(e), Some((method, target, version))) = (&shared.edge, logged) {
        e.log.line(access_line(
            &site.key,
            &method,
            &target,
            version,
            &host,
            peer,
            tls,
            res.status(),
            Some(&name),
            arrived,
        ));
    }
    // A client new to a running canary keeps its bucket, so it stays on one version.
    if let Some(b) = drawn
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{CANARY_COOKIE}={b}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax"
        ))
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// Logs a request the edge answered itself (no site, a redirect, maintenance, no route).
#[allow(clippy::too_many_arguments)]
fn log_request(
    shared: &Shared,
    site: Option<&Site>,
    req: &Request<Incoming>,
    host: &str,
    peer: SocketAddr,
    tls: bool,
    status: StatusCode,
    upstream: Option<&str>,
    arrived: Instant,
) {
    if let Some(e) = &shared.edge {
        e.log.line(access_line(
            site.map_or("", |s| s.key.as_str()),
            req.method(),
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
            req.version(),
            host,
            peer,
            tls,
            status,
            upstream,
            arrived,
        ));
    }
}

/// One line of the edge's access log (JSON).
#[allow(clippy::too_many_arguments)]
fn access_line(
    site: &str,
    method: &hyper::Method,
    target: &str,
    version: hyper::Version,
    host: &str,
    peer: SocketAddr,
    tls: bool,
    status: StatusCode,
    upstream: Option<&str>,
    arrived: Instant,
) -> String {
    use std::fmt::Write;
    // Written piece by piece (not through one `format!`): this runs for every request.
    let micros = arrived.elapsed().as_micros();
    let mut line = String::with_capacity(256);
    line.push_str("{\"time\":\"");
    edge::push_log_time(&mut line);
    line.push_str("\",\"site\":");
    push_json(&mut line, site);
    line.push_str(",\"host\":");
    push_json(&mut line, host);
    line.push_str(",\"method\":");
    push_json(&mut line, method.as_str());
    line.push_str(",\"path\":");
    push_json(&mut line, target);
    line.push_str(",\"proto\":\"");
    line.push_str(match version {
        hyper::Version::HTTP_09 => "HTTP/0.9",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_2 => "HTTP/2.0",
        hyper::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    });
    line.push_str(if tls {
        "\",\"tls\":true,\"status\":"
    } else {
        "\",\"tls\":false,\"status\":"
    });
    line.push_str(status.as_str());
    let _ = write!(
        line,
        ",\"ms\":{}.{:03},\"upstream\":",
        micros / 1000,
        micros % 1000
    );
    match upstream {
        Some(u) => push_json(&mut line, u),
        None => line.push_str("null"),
    }
    let _ = write!(line, ",\"client\":\"{}\"}}", peer.ip());
    line
}

/// `text` as a JSON string literal: what needs no escape is copied as it is.
fn push_json(out: &mut String, text: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, b) in text.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b if b < 0x20 => "",
            _ => continue,
        };
        out.push_str(&text[plain..i]);
        if escaped.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escaped);
        }
        plain = i + 1;
    }
    out.push_str(&text[plain..]);
    out.push('"');
}

#[allow(clippy::too_many_arguments)]
async fn forward_to(
    shared: &Arc<Shared>,
    site: &Site,
    peer: SocketAddr,
    tls: bool,
    mut req: Request<Incoming>,
    upstream: Upstream,
    guard: InFlight,
    bucket: Option<u32>,
    arrived: Instant,
) -> Response<Body> {
    let answered = |status: StatusCode, no_answer: bool| {
        shared.count(
            &upstream.name,
            status.as_u16(),
            no_answer,
            arrived.elapsed(),
        )
    };
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().cloned();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let addr = shared.addr_of(&upstream);
    parts.uri = upstream_uri(addr.clone(), path.clone());
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
    // The edge is where TLS ends: what a client says of it is not believed.
    if shared.edge.is_some() || !parts.headers.contains_key("x-forwarded-proto") {
        let proto = if tls { "https" } else { "http" };
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static(proto));
    }
    // HTTP/2 carries the host in the request's authority: HTTP/1.1 upstreams get it as
    // `Host`, and every request goes to them as HTTP/1.1.
    if !parts.headers.contains_key(header::HOST)
        && let Some(a) = authority
            .as_ref()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, a);
    }
    parts.version = hyper::Version::HTTP_11;
    if let Some(host) = parts.headers.get(header::HOST).cloned() {
        parts.headers.entry("x-forwarded-host").or_insert(host);
    }
    // A request with no body can be sent again if the pooled connection it went out on
    // turns out to be closed; one with a body cannot (it is streamed, not kept).
    let bodiless = hyper::body::Body::is_end_stream(&body);
    let retry = bodiless.then(|| (parts.method.clone(), parts.headers.clone(), parts.version));
    let sent = async {
        let first = Request::from_parts(parts, body.boxed());
        let result = CLIENT.with(|c| c.request(first)).await;
        match (result, retry) {
            (Err(e), Some((method, headers, version))) if worth_retry(&e, &method) => {
                // Sent again to the upstream live now: when the first one went away under
                // the request (stopped after a switch), the new one answers.
                let now = site.now_for(bucket).unwrap_or_else(|| upstream.clone());
                let mut again = Request::new(
                    Empty::<Bytes>::new()
                        .map_err(|never| match never {})
                        .boxed(),
                );
                *again.method_mut() = method;
                *again.uri_mut() = upstream_uri(shared.addr_of(&now), path);
                *again.headers_mut() = headers;
                *again.version_mut() = version;
                CLIENT.with(|c| c.request(again)).await
            }
            (r, _) => r,
        }
    };
    let Ok(result) = tokio::time::timeout(UPSTREAM_TIMEOUT, sent).await else {
        answered(StatusCode::GATEWAY_TIMEOUT, true);
        eprintln!(
            "upstream {} ({}) sent no response to {peer} within {} s",
            upstream.name,
            addr,
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
            answered(StatusCode::BAD_GATEWAY, true);
            eprintln!(
                "upstream {} ({}) failed for {peer}: {e:#}",
                upstream.name, addr
            );
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("the live version at {} did not answer\n", upstream.name),
            );
        }
    };
    answered(res.status(), false);
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

/// `http://<addr><path>`, from parts already parsed.
fn upstream_uri(addr: Authority, path: PathAndQuery) -> Uri {
    let mut parts = hyper::http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(addr);
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).expect("a scheme, an authority and a path make a URI")
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

/// The canary's state file, beside the route file.
pub fn canary_file(state: &Path) -> PathBuf {
    state.with_extension("canary")
}

/// Sends `share` hundredths of a percent of the requests to `upstream` (0: none, and the
/// file goes). Written atomically, like the routes.
pub fn set_canary(state: &Path, upstream: &str, addr: Option<&str>, share: u32) -> Result<()> {
    let file = canary_file(state);
    if share == 0 {
        return match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", file.display()))
            }
            _ => Ok(()),
        };
    }
    anyhow::ensure!(share <= BUCKETS, "a share is at most {BUCKETS}");
    let line = match addr {
        Some(a) => format!("{share} {} {}\n", upstream.trim(), a.trim()),
        None => format!("{share} {}\n", upstream.trim()),
    };
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, line).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &file)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), file.display()))
}

/// Tells the proxy (on this container's loopback) to read its files now, so that what a
/// command changed is in force when it returns. A proxy that does not answer reads them
/// within a second, and when it starts.
pub fn tell_reload() {
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        let _ = rt.block_on(admin("/reload"));
    }
}

/// Asks the proxy's admin port for `path` (on the container's loopback).
pub async fn admin(path: &str) -> Result<String> {
    let (status, body) =
        crate::ops::http::get("127.0.0.1", ADMIN_PORT, path, Duration::from_secs(2)).await?;
    anyhow::ensure!(
        status == 200,
        "the proxy's admin port answered {status} to {path}"
    );
    Ok(body)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_keeps_its_bucket_and_a_canary_takes_the_buckets_below_its_share() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; pym-canary=420; b=2"),
        );
        assert_eq!(cookie_bucket(&h), Some(420));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("pym-canary=10000"));
        assert_eq!(cookie_bucket(&h), None, "out of range: drawn again");
        assert_eq!(cookie_bucket(&HeaderMap::new()), None);
        let c = Canary::parse("2500 pym-s-live-v2:8080 172.18.0.3:8080\n").unwrap();
        assert_eq!(
            (c.share, c.upstream.name.as_str(), c.upstream.addr.as_str()),
            (2500, "pym-s-live-v2:8080", "172.18.0.3:8080")
        );
        assert!(Canary::parse("20000 x:1").is_none());
        let routes = Routes {
            live: Upstream::parse("pym-s-live-v1:8080"),
            canary: Some(c),
            ..Routes::default()
        };
        let site = Site::new(
            "",
            edge::SiteConf::default(),
            None,
            PathBuf::from("/nonexistent/upstream"),
        );
        assert_eq!(
            site.pick(&routes, Some(2499)).unwrap().name,
            "pym-s-live-v2:8080"
        );
        assert_eq!(
            site.pick(&routes, Some(2500)).unwrap().name,
            "pym-s-live-v1:8080"
        );
        assert_eq!(site.pick(&routes, None).unwrap().name, "pym-s-live-v1:8080");
        // Drawn buckets split clients near the share.
        let on_canary = (0..10_000).filter(|_| draw_bucket() < 2500).count();
        assert!((2000..3000).contains(&on_canary), "{on_canary}");
    }

    fn test_shared() -> Shared {
        Shared::new(None, Vec::new(), None)
    }

    #[test]
    fn the_edge_picks_a_site_by_exact_host_then_wildcard_then_the_longest_prefix() {
        let site = |key: &str, hosts: &[&str], prefix: Option<&str>| {
            Arc::new(Site::new(
                key,
                edge::SiteConf {
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                    path_prefix: prefix.map(str::to_string),
                    ..edge::SiteConf::default()
                },
                None,
                PathBuf::from(format!("/nonexistent/{key}.upstream")),
            ))
        };
        let shared = Shared::new(
            None,
            vec![
                site("wild", &["*.example.com"], None),
                site("app", &["app.example.com"], None),
                site("api", &["app.example.com"], Some("/api")),
            ],
            None,
        );
        let key = |host: &str, path: &str| shared.site_for(host, path).map(|s| s.key.clone());
        assert_eq!(key("app.example.com", "/"), Some("app".into()));
        assert_eq!(key("app.example.com", "/api/v1"), Some("api".into()));
        assert_eq!(key("app.example.com", "/apiary"), Some("app".into()));
        assert_eq!(key("www.example.com", "/api"), Some("wild".into()));
        assert_eq!(key("example.com", "/"), None);
    }

    #[test]
    fn an_access_log_line_is_json_whatever_the_request_says() {
        let line = access_line(
            "s-live",
            &hyper::Method::GET,
            "/a?\"x\"=\\1\u{1}",
            hyper::Version::HTTP_2,
            "a.test",
            "10.0.0.1:5".parse().unwrap(),
            true,
            StatusCode::OK,
            None,
            Instant::now(),
        );
        let j: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(j["path"], "/a?\"x\"=\\1\u{1}");
        assert_eq!(
            (j["status"].as_u64(), j["tls"].as_bool()),
            (Some(200), Some(true))
        );
        assert_eq!(j["upstream"], serde_json::Value::Null);
        assert_eq!(j["proto"], "HTTP/2.0");
    }

    #[test]
    fn counts_are_kept_per_upstream_over_a_window_and_in_prometheus_text() {
        let shared = test_shared();
        shared.count("v1:8080", 200, false, Duration::from_millis(3));
        shared.stats.lock().unwrap().snapshot();
        shared.count("v1:8080", 503, false, Duration::from_millis(40));
        shared.count("v1:8080", 502, true, Duration::from_millis(2));
        shared.count("v2:8080", 200, false, Duration::from_millis(700));
        let stats = shared.stats.lock().unwrap();
        let (_, w) = stats.window(60);
        let v1 = &w["v1:8080"];
        assert_eq!(
            (v1.requests, v1.errors, v1.failures),
            (2, 1, 1),
            "since the snapshot"
        );
        assert_eq!(v1.latency.iter().sum::<u64>(), 2);
        assert_eq!(w["v2:8080"].requests, 1);
        let text = stats.prometheus();
        for line in [
            "pym_proxy_requests_total{upstream=\"v1:8080\",answer=\"ok\"} 1",
            "pym_proxy_requests_total{upstream=\"v1:8080\",answer=\"5xx\"} 1",
            "pym_proxy_requests_total{upstream=\"v1:8080\",answer=\"none\"} 1",
            "pym_proxy_request_duration_seconds_bucket{upstream=\"v1:8080\",le=\"0.005\"} 2",
            "pym_proxy_request_duration_seconds_bucket{upstream=\"v1:8080\",le=\"+Inf\"} 3",
            "pym_proxy_request_duration_seconds_count{upstream=\"v2:8080\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }
}

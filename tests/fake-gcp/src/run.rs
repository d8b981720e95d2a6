//! The Cloud Run Admin API v2: routing of the REST paths, the state of services, revisions,
//! operations and IAM policies, and the reconciling that turns a service's spec into
//! revisions (containers, see `engine`) and traffic.
//!
//! Resources are stored as JSON with enums as names and written out in the encoding the
//! request asks for. Every resource is keyed by its full name
//! (`projects/P/locations/L/services/S`), so any project and location work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Map, Value, json};

use crate::json::{self, encode_enums, now};
use crate::{ApiError, Reply, Shared, engine, reply};

const SERVICE_TYPE: &str = "type.googleapis.com/google.cloud.run.v2.Service";
const REVISION_TYPE: &str = "type.googleapis.com/google.cloud.run.v2.Revision";

/// The fields of a Service that a caller writes (everything else is output only).
const SPEC_FIELDS: &[&str] = &[
    "description",
    "labels",
    "annotations",
    "client",
    "clientVersion",
    "ingress",
    "launchStage",
    "binaryAuthorization",
    "template",
    "traffic",
    "scaling",
    "invokerIamDisabled",
    "defaultUriDisabled",
    "customAudiences",
    "iapEnabled",
    "multiRegionSettings",
    "buildConfig",
    "threatDetectionEnabled",
];

/// One API call, as routed from its method and path.
pub struct Call {
    /// The RPC name (`CreateService`…).
    pub method: &'static str,
    /// `projects/P/locations/L`.
    pub parent: String,
    /// The service or operation id.
    pub id: String,
    /// The revision id.
    pub sub: String,
    query: BTreeMap<String, String>,
}

impl Call {
    fn q(&self, k: &str) -> &str {
        self.query.get(k).map_or("", String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        self.q(k) == "true"
    }

    fn ints(&self) -> bool {
        self.q("$alt").contains("enum-encoding=int")
    }

    pub fn rpc_service(&self) -> String {
        let svc = if self.method.contains("Revision") {
            "Revisions"
        } else if self.method.contains("Operation") {
            "Operations"
        } else {
            "Services"
        };
        format!("{svc}.{}", self.method)
    }

    /// The IAM permission the call needs.
    pub fn permission(&self) -> &'static str {
        match self.method {
            "CreateService" => "run.services.create",
            "GetService" => "run.services.get",
            "ListServices" => "run.services.list",
            "UpdateService" => "run.services.update",
            "DeleteService" => "run.services.delete",
            "GetRevision" => "run.revisions.get",
            "ListRevisions" => "run.revisions.list",
            "DeleteRevision" => "run.revisions.delete",
            "GetOperation" | "WaitOperation" => "run.operations.get",
            "ListOperations" => "run.operations.list",
            "DeleteOperation" => "run.operations.delete",
            "GetIamPolicy" => "run.services.getIamPolicy",
            "SetIamPolicy" => "run.services.setIamPolicy",
            _ => "run.services.get",
        }
    }

    /// The resource the call acts on.
    pub fn resource(&self) -> String {
        match self.method {
            "ListServices" | "ListOperations" => self.parent.clone(),
            "CreateService" => format!("{}/services/{}", self.parent, self.q("serviceId")),
            m if m.contains("Operation") => format!("{}/operations/{}", self.parent, self.id),
            "ListRevisions" => format!("{}/services/{}", self.parent, self.id),
            m if m.contains("Revision") => format!(
                "{}/services/{}/revisions/{}",
                self.parent, self.id, self.sub
            ),
            _ => format!("{}/services/{}", self.parent, self.id),
        }
    }

    fn service_name(&self) -> String {
        format!("{}/services/{}", self.parent, self.id)
    }
}

/// Which RPC a request is, if any.
pub fn route(method: &Method, path: &str, query: &str) -> Option<Call> {
    let path = path.replace("%3A", ":").replace("%3a", ":");
    let rest = path.strip_prefix("/v2/projects/")?;
    let mut parts = rest.splitn(4, '/');
    let (project, loc_word, location) = (parts.next()?, parts.next()?, parts.next()?);
    if loc_word != "locations" || project.is_empty() || location.is_empty() {
        return None;
    }
    let tail = parts.next().unwrap_or("");
    let segs: Vec<&str> = tail.split('/').collect();
    let (last, verb) = match segs.last()?.split_once(':') {
        Some((l, v)) => (l, v),
        None => (*segs.last()?, ""),
    };
    let mut segs = segs.clone();
    *segs.last_mut()? = last;
    let m = method.as_str();
    let (rpc, id, sub) = match (segs.as_slice(), verb, m) {
        (["services"], "", "GET") => ("ListServices", "", ""),
        (["services"], "", "POST") => ("CreateService", "", ""),
        (["services", s], "", "GET") => ("GetService", *s, ""),
        (["services", s], "", "PATCH") => ("UpdateService", *s, ""),
        (["services", s], "", "DELETE") => ("DeleteService", *s, ""),
        (["services", s], "getIamPolicy", "GET" | "POST") => ("GetIamPolicy", *s, ""),
        (["services", s], "setIamPolicy", "POST") => ("SetIamPolicy", *s, ""),
        (["services", s], "testIamPermissions", "POST") => ("TestIamPermissions", *s, ""),
        (["services", s, "revisions"], "", "GET") => ("ListRevisions", *s, ""),
        (["services", s, "revisions", r], "", "GET") => ("GetRevision", *s, *r),
        (["services", s, "revisions", r], "", "DELETE") => ("DeleteRevision", *s, *r),
        (["operations"], "", "GET") => ("ListOperations", "", ""),
        (["operations", o], "", "GET") => ("GetOperation", *o, ""),
        (["operations", o], "", "DELETE") => ("DeleteOperation", *o, ""),
        (["operations", o], "wait", "POST") => ("WaitOperation", *o, ""),
        _ => return None,
    };
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let query = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Some(Call {
        method: rpc,
        parent: format!("projects/{project}/locations/{location}"),
        id: id.into(),
        sub: sub.into(),
        query,
    })
}

#[derive(Default)]
pub struct CloudRun {
    services: BTreeMap<String, Svc>,
    revisions: BTreeMap<String, Rev>,
    operations: BTreeMap<String, Op>,
}

struct Svc {
    json: Value,
    /// The IAM policy's bindings, version and etag.
    policy: Value,
}

struct Rev {
    json: Value,
    service: String,
    /// The container and the loopback port it publishes, while it runs.
    container: Option<(String, u16)>,
    ready: bool,
}

struct Op {
    json: Value,
}

/// Where the front door sends a connection.
pub enum FrontRoute {
    NotFound,
    Forbidden,
    Unavailable,
    /// The port of the revision's container, and the revision's name.
    Backend(u16, String),
}

impl CloudRun {
    /// Routes a request for `host` (lowercase, no port) to a revision's container.
    pub fn front_route(&self, shared: &Shared, host: &str, audience: Option<&str>) -> FrontRoute {
        let Some(name) = host
            .strip_suffix(".a.run.localhost")
            .or_else(|| host.strip_suffix(".run.localhost"))
        else {
            return FrontRoute::NotFound;
        };
        let (tag, base) = match name.split_once("---") {
            Some((t, b)) => (Some(t), b),
            None => (None, name),
        };
        let Some((sname, svc)) = self
            .services
            .iter()
            .find(|(n, _)| host_names(shared, n).iter().any(|h| h == base))
        else {
            return FrontRoute::NotFound;
        };
        let open = svc.policy["bindings"].as_array().is_some_and(|b| {
            b.iter().any(|b| {
                b["role"] == "roles/run.invoker"
                    && b["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|m| m == "allUsers"))
            })
        });
        let uris: Vec<&str> = std::iter::once(&svc.json["uri"])
            .chain(svc.json["urls"].as_array().into_iter().flatten())
            .filter_map(|u| u.as_str())
            .map(|u| u.trim_end_matches('/'))
            .collect();
        let authorized = audience.is_some_and(|a| uris.contains(&a.trim_end_matches('/')));
        if !open && !authorized && svc.json["invokerIamDisabled"] != true {
            return FrontRoute::Forbidden;
        }
        let statuses = svc.json["trafficStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let latest = svc.json["latestReadyRevision"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let resolve = |t: &Value| -> String {
            match t["type"].as_str() {
                Some("TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST") => latest.clone(),
                _ => format!("{sname}/revisions/{}", t["revision"].as_str().unwrap_or("")),
            }
        };
        let revision = match tag {
            Some(tag) => match statuses.iter().find(|t| t["tag"] == tag) {
                Some(t) => resolve(t),
                None => return FrontRoute::NotFound,
            },
            None => {
                let total: u64 = statuses.iter().filter_map(|t| t["percent"].as_u64()).sum();
                if total == 0 {
                    return FrontRoute::Unavailable;
                }
                let mut pick = shared.ids.random() % total;
                let Some(t) = statuses.iter().find(|t| {
                    let p = t["percent"].as_u64().unwrap_or(0);
                    if pick < p {
                        true
                    } else {
                        pick -= p;
                        false
                    }
                }) else {
                    return FrontRoute::Unavailable;
                };
                resolve(t)
            }
        };
        match self
            .revisions
            .get(&revision)
            .and_then(|r| r.container.as_ref())
        {
            Some((_, port)) => FrontRoute::Backend(*port, revision.clone()),
            None => FrontRoute::Unavailable,
        }
    }

    /// The containers that run now (for cleanup on delete).
    fn containers_of(&self, service: &str) -> Vec<String> {
        self.revisions
            .values()
            .filter(|r| r.service == service)
            .filter_map(|r| r.container.as_ref().map(|c| c.0.clone()))
            .collect()
    }
}

/// The host names of a service's URLs: `<service>-<hash>-<region code>` and
/// `<service>-<project number>.<region>` (without the `.a.run.localhost`/`.run.localhost`).
fn host_names(shared: &Shared, service: &str) -> [String; 2] {
    let parts: Vec<&str> = service.split('/').collect();
    let (project, location, id) = (
        parts.get(1).copied().unwrap_or(""),
        parts.get(3).copied().unwrap_or(""),
        parts.get(5).copied().unwrap_or(""),
    );
    let hash = json::base36(json::fnv(&format!("{project}/{id}")), 10);
    [
        format!("{id}-{hash}-{}", region_code(location)),
        format!("{id}-{}.{location}", shared.opts.project_number),
    ]
}

fn urls(shared: &Shared, service: &str, tag: Option<&str>) -> Vec<String> {
    let [a, b] = host_names(shared, service);
    let port = shared.front_port;
    match tag {
        Some(t) => vec![format!("http://{t}---{a}.a.run.localhost:{port}")],
        None => vec![
            format!("http://{a}.a.run.localhost:{port}"),
            format!("http://{b}.run.localhost:{port}"),
        ],
    }
}

/// Cloud Run's short code of a region in `*.a.run.app` host names.
fn region_code(location: &str) -> String {
    let known = [
        ("us-central1", "uc"),
        ("us-east1", "ue"),
        ("us-east4", "uk"),
        ("us-west1", "uw"),
        ("us-west2", "wl"),
        ("europe-west1", "ew"),
        ("europe-west2", "nw"),
        ("europe-west3", "ey"),
        ("europe-west4", "ez"),
        ("europe-north1", "lz"),
        ("asia-east1", "de"),
        ("asia-northeast1", "an"),
        ("asia-southeast1", "as"),
        ("australia-southeast1", "ts"),
        ("southamerica-east1", "rj"),
    ];
    if let Some((_, c)) = known.iter().find(|(l, _)| *l == location) {
        return c.to_string();
    }
    let code: String = location
        .split('-')
        .filter_map(|w| w.chars().find(|c| c.is_ascii_lowercase()))
        .collect();
    if code.is_empty() { "xx".into() } else { code }
}

fn not_found(name: &str) -> ApiError {
    let mut e = ApiError::new("NOT_FOUND", format!("Resource '{name}' was not found"));
    e.details.push(
        json!({"@type": "type.googleapis.com/google.rpc.ResourceInfo", "resourceName": name}),
    );
    e
}

fn out(v: &Value, call: &Call) -> Reply {
    let mut v = v.clone();
    encode_enums(&mut v, call.ints());
    reply(200, "application/json; charset=UTF-8", v.to_string())
}

/// Answers a routed call (authentication and faults are checked before).
pub async fn handle(shared: &Arc<Shared>, call: Call, body: &[u8]) -> Reply {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return ApiError::invalid(format!("Invalid JSON payload received. {e}")).reply();
            }
        }
    };
    if call.method == "WaitOperation" {
        return wait_operation(shared, &call, &body).await;
    }
    match dispatch(shared, &call, body) {
        Ok(v) => out(&v, &call),
        Err(e) => e.reply(),
    }
}

fn dispatch(shared: &Arc<Shared>, call: &Call, mut body: Value) -> Result<Value, ApiError> {
    encode_enums(&mut body, false);
    match call.method {
        "CreateService" => {
            let id = call.q("serviceId").to_string();
            if id.is_empty() {
                return Err(ApiError::invalid("service_id must be set")
                    .with_info("INVALID_ARGUMENT", &[("field", "service_id")]));
            }
            write_service(
                shared,
                call,
                &format!("{}/services/{id}", call.parent),
                body,
                None,
                true,
            )
        }
        "UpdateService" => {
            let mask = call.q("updateMask").to_string();
            let mask = (!mask.is_empty()).then(|| {
                mask.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
            });
            let exists = shared
                .lock()
                .run
                .services
                .contains_key(&call.service_name());
            if !exists && !call.flag("allowMissing") {
                return Err(not_found(&call.service_name()));
            }
            write_service(shared, call, &call.service_name(), body, mask, !exists)
        }
        "GetService" => shared
            .lock()
            .run
            .services
            .get(&call.service_name())
            .map(|s| s.json.clone())
            .ok_or_else(|| not_found(&call.service_name())),
        "ListServices" => {
            let prefix = format!("{}/services/", call.parent);
            let all: Vec<Value> = shared
                .lock()
                .run
                .services
                .iter()
                .filter(|(n, _)| n.starts_with(&prefix))
                .map(|(_, s)| s.json.clone())
                .collect();
            page(all, call, "services")
        }
        "DeleteService" => delete_service(shared, call),
        "GetRevision" => {
            let name = format!("{}/revisions/{}", call.service_name(), call.sub);
            shared
                .lock()
                .run
                .revisions
                .get(&name)
                .map(|r| r.json.clone())
                .ok_or_else(|| not_found(&name))
        }
        "ListRevisions" => {
            let st = shared.lock();
            let sname = call.service_name();
            let mut all: Vec<&Rev> = st
                .run
                .revisions
                .values()
                .filter(|r| r.service == sname)
                .collect();
            // Newest first, as Cloud Run lists them.
            all.sort_by(|a, b| {
                b.json["createTime"]
                    .as_str()
                    .cmp(&a.json["createTime"].as_str())
                    .then(b.json["name"].as_str().cmp(&a.json["name"].as_str()))
            });
            let all = all.into_iter().map(|r| r.json.clone()).collect();
            page(all, call, "revisions")
        }
        "DeleteRevision" => delete_revision(shared, call),
        "GetOperation" => {
            let name = format!("{}/operations/{}", call.parent, call.id);
            shared
                .lock()
                .run
                .operations
                .get(&name)
                .map(|o| o.json.clone())
                .ok_or_else(|| not_found(&name))
        }
        "ListOperations" => {
            let prefix = format!("{}/operations/", call.parent);
            let all = shared
                .lock()
                .run
                .operations
                .iter()
                .filter(|(n, _)| n.starts_with(&prefix))
                .map(|(_, o)| o.json.clone())
                .collect();
            page(all, call, "operations")
        }
        "DeleteOperation" => {
            let name = format!("{}/operations/{}", call.parent, call.id);
            shared
                .lock()
                .run
                .operations
                .remove(&name)
                .map(|_| json!({}))
                .ok_or_else(|| not_found(&name))
        }
        "GetIamPolicy" => {
            let st = shared.lock();
            let svc = st
                .run
                .services
                .get(&call.service_name())
                .ok_or_else(|| not_found(&call.service_name()))?;
            Ok(svc.policy.clone())
        }
        "SetIamPolicy" => set_iam_policy(shared, call, &body),
        "TestIamPermissions" => {
            if !shared
                .lock()
                .run
                .services
                .contains_key(&call.service_name())
            {
                return Err(not_found(&call.service_name()));
            }
            let granted: Vec<Value> = body["permissions"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter(|p| p.as_str().is_some_and(|p| p.starts_with("run.")))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            Ok(if granted.is_empty() {
                json!({})
            } else {
                json!({"permissions": granted})
            })
        }
        other => Err(ApiError::new(
            "UNIMPLEMENTED",
            format!("{other} is not implemented by the fake"),
        )),
    }
}

/// A page of `all` by `pageSize` and `pageToken` (an offset).
fn page(all: Vec<Value>, call: &Call, key: &str) -> Result<Value, ApiError> {
    let size = match call.q("pageSize") {
        "" | "0" => 100,
        s => s
            .parse::<usize>()
            .map_err(|_| ApiError::invalid(format!("Invalid page size '{s}'.")))?,
    };
    let start = match call.q("pageToken") {
        "" => 0,
        t => t
            .parse::<usize>()
            .map_err(|_| ApiError::invalid(format!("Invalid page token '{t}'.")))?,
    };
    let end = (start + size).min(all.len());
    let items: Vec<Value> = all
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let mut v = Map::new();
    if !items.is_empty() {
        v.insert(key.into(), Value::Array(items));
    }
    if end < all.len() {
        v.insert("nextPageToken".into(), Value::from(end.to_string()));
    }
    Ok(Value::Object(v))
}

fn etag(shared: &Shared) -> String {
    format!(
        "\"{}\"",
        json::base64(&shared.ids.random().to_be_bytes()[..6]).replace(['+', '/'], "x")
    )
}

fn valid_service_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 49
        && b[0].is_ascii_lowercase()
        && (b.len() == 1 || b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn valid_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_lowercase()
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Fills the template's defaults as Cloud Run does (so that a read-modify-write of the
/// same template makes no new revision).
fn default_template(shared: &Shared, t: &mut Value) {
    let Some(m) = t.as_object_mut() else { return };
    m.entry("serviceAccount").or_insert_with(|| {
        Value::from(format!(
            "{}-compute@developer.gserviceaccount.com",
            shared.opts.project_number
        ))
    });
    m.entry("timeout").or_insert_with(|| Value::from("300s"));
    m.entry("maxInstanceRequestConcurrency")
        .or_insert_with(|| Value::from(80));
    let scaling = m.entry("scaling").or_insert_with(|| json!({}));
    if let Some(s) = scaling.as_object_mut() {
        s.entry("maxInstanceCount")
            .or_insert_with(|| Value::from(100));
    }
    if let Some(containers) = m.get_mut("containers").and_then(Value::as_array_mut) {
        let single = containers.len() == 1;
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            let res = c.entry("resources").or_insert_with(|| json!({}));
            if let Some(r) = res.as_object_mut() {
                let limits = r.entry("limits").or_insert_with(|| json!({}));
                if let Some(l) = limits.as_object_mut() {
                    l.entry("cpu").or_insert_with(|| Value::from("1000m"));
                    l.entry("memory").or_insert_with(|| Value::from("512Mi"));
                }
                r.entry("cpuIdle").or_insert(Value::Bool(true));
                r.entry("startupCpuBoost").or_insert(Value::Bool(true));
            }
            if single {
                let ports = c.entry("ports").or_insert_with(|| json!([]));
                if ports.as_array().is_some_and(Vec::is_empty) {
                    *ports = json!([{"name": "http1", "containerPort": 8080}]);
                }
                if let Some(p) = ports.get_mut(0).and_then(Value::as_object_mut) {
                    p.entry("containerPort")
                        .or_insert_with(|| Value::from(8080));
                }
            }
            let port = c.get("ports").and_then(|p| p[0]["containerPort"].as_u64());
            if let Some(port) = port {
                c.entry("startupProbe").or_insert_with(|| json!({"timeoutSeconds": 240, "periodSeconds": 240, "failureThreshold": 1, "tcpSocket": {"port": port}}));
            }
        }
    }
}

fn validate_template(service_id: &str, t: &Value) -> Result<(), ApiError> {
    let containers = t["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if containers.is_empty() {
        return Err(ApiError::invalid(
            "template.containers: at least one container must be specified.",
        )
        .with_info("INVALID_ARGUMENT", &[("field", "template.containers")]));
    }
    for (i, c) in containers.iter().enumerate() {
        if c["image"].as_str().unwrap_or("").is_empty() {
            return Err(ApiError::invalid(format!(
                "template.containers[{i}].image: Container image must be specified."
            )));
        }
    }
    if containers
        .iter()
        .filter(|c| c["ports"].as_array().is_some_and(|p| !p.is_empty()))
        .count()
        > 1
    {
        return Err(ApiError::invalid(
            "template.containers: only one container may specify ports (the ingress container).",
        ));
    }
    if let Some(r) = t["revision"].as_str().filter(|r| !r.is_empty()) {
        if !r.starts_with(&format!("{service_id}-")) {
            return Err(ApiError::invalid(format!(
                "template.revision: Revision name '{r}' must be prefixed by the name of the enclosing Service or Configuration with a trailing -"
            )));
        }
        if !valid_label(r, 63) {
            return Err(ApiError::invalid(format!(
                "template.revision: Revision name '{r}' must be a DNS label: at most 63 characters, lowercase letters, digits and dashes, starting with a letter and ending with a letter or digit."
            )));
        }
    }
    Ok(())
}

fn validate_traffic(service_id: &str, traffic: &[Value]) -> Result<(), ApiError> {
    let mut sum = 0;
    let mut tags = Vec::new();
    for (i, t) in traffic.iter().enumerate() {
        let ty = t["type"]
            .as_str()
            .unwrap_or("TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED");
        let rev = t["revision"].as_str().unwrap_or("");
        match ty {
            "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST" if !rev.is_empty() => {
                return Err(ApiError::invalid(format!(
                    "traffic[{i}]: a traffic target of type LATEST must not name a revision ('{rev}')."
                )));
            }
            "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION" if rev.is_empty() => {
                return Err(ApiError::invalid(format!(
                    "traffic[{i}].revision: a traffic target of type REVISION must name a revision."
                )));
            }
            "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST" | "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION" => {
            }
            _ if !rev.is_empty() => {}
            _ => {
                return Err(ApiError::invalid(format!(
                    "traffic[{i}].type: must be TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST or TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION."
                )));
            }
        }
        let p = t["percent"].as_i64().unwrap_or(0);
        if !(0..=100).contains(&p) {
            return Err(ApiError::invalid(format!(
                "traffic[{i}].percent: must be between 0 and 100, got {p}."
            )));
        }
        sum += p;
        if let Some(tag) = t["tag"].as_str().filter(|t| !t.is_empty()) {
            if !valid_label(tag, 63) {
                return Err(ApiError::invalid(format!(
                    "traffic[{i}].tag: Invalid tag '{tag}': tags must contain only lowercase letters, digits and dashes, start with a letter and end with a letter or digit."
                )));
            }
            if tag.len() + service_id.len() > 46 {
                return Err(ApiError::invalid(format!(
                    "traffic[{i}].tag: Tag '{tag}' is too long: the tag and the service name '{service_id}' together must be at most 46 characters."
                )));
            }
            if tags.contains(&tag) {
                return Err(ApiError::invalid(format!(
                    "traffic[{i}].tag: Tag '{tag}' is used by more than one traffic target."
                )));
            }
            tags.push(tag);
        }
    }
    if !traffic.is_empty() && sum != 100 {
        return Err(ApiError::invalid(format!(
            "traffic: the traffic percentages must add up to 100, got {sum}."
        )));
    }
    Ok(())
}

fn condition(ty: &str, state: &str) -> Value {
    json!({"type": ty, "state": state, "lastTransitionTime": now()})
}

fn failed_condition(ty: &str, message: &str, reason: Option<(&str, &str)>) -> Value {
    let mut c = json!({"type": ty, "state": "CONDITION_FAILED", "message": message, "lastTransitionTime": now(), "severity": "ERROR"});
    if let Some((field, value)) = reason {
        c[field] = Value::from(value);
    }
    c
}

/// Creates or updates a service (validated, stored, reconciled by a background task) and
/// answers the operation.
fn write_service(
    shared: &Arc<Shared>,
    call: &Call,
    name: &str,
    mut body: Value,
    mask: Option<Vec<String>>,
    create: bool,
) -> Result<Value, ApiError> {
    let id = name.rsplit('/').next().unwrap_or("").to_string();
    if !valid_service_id(&id) {
        return Err(ApiError::invalid(format!(
            "service_id: Invalid service id '{id}': it must contain only lowercase letters, digits and hyphens, start with a letter, not end with a hyphen, and be at most 49 characters."
        ))
        .with_info("INVALID_ARGUMENT", &[("field", "service_id")]));
    }
    if !body.is_object() {
        return Err(ApiError::invalid("service must be set"));
    }
    let mut st = shared.lock();
    let old = st.run.services.get(name).map(|s| s.json.clone());
    if create && old.is_some() {
        return Err(
            ApiError::new("ALREADY_EXISTS", format!("Resource '{id}' already exists."))
                .with_info("RESOURCE_ALREADY_EXISTS", &[("resource", name)]),
        );
    }
    let body_etag = body["etag"].as_str().unwrap_or("");
    if let Some(o) = &old
        && !body_etag.is_empty()
        && o["etag"].as_str() != Some(body_etag)
    {
        return Err(ApiError::new(
            "ABORTED",
            format!(
                "Etag '{body_etag}' does not match the current etag of '{name}'; re-read the service and retry."
            ),
        ));
    }
    // The new spec: the old one with the masked (or all) fields of the body.
    let mut spec = Map::new();
    if let (Some(o), Some(mask)) = (&old, &mask) {
        for f in SPEC_FIELDS {
            if let Some(v) = o.get(*f) {
                spec.insert(f.to_string(), v.clone());
            }
        }
        for path in mask {
            let top = path.split('.').next().unwrap_or("");
            let top = camel(top);
            if !SPEC_FIELDS.contains(&top.as_str()) {
                return Err(ApiError::invalid(format!(
                    "Invalid field mask path '{path}': '{top}' is not a field of Service that can be updated."
                )));
            }
            match body.get_mut(&top).map(Value::take) {
                Some(v) if !v.is_null() => spec.insert(top, v),
                _ => spec.remove(&top),
            };
        }
    } else {
        for f in SPEC_FIELDS {
            if let Some(v) = body.get_mut(*f).map(Value::take).filter(|v| !v.is_null()) {
                spec.insert(f.to_string(), v);
            }
        }
    }
    let mut template = spec.remove("template").unwrap_or_else(|| json!({}));
    validate_template(&id, &template)?;
    default_template(shared, &mut template);
    let mut traffic = spec
        .get("traffic")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if traffic.is_empty() {
        traffic = vec![json!({"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100})];
    }
    validate_traffic(&id, &traffic)?;
    spec.insert("traffic".into(), Value::Array(traffic.clone()));
    spec.entry("ingress")
        .or_insert_with(|| Value::from("INGRESS_TRAFFIC_ALL"));
    spec.entry("launchStage")
        .or_insert_with(|| Value::from("GA"));

    // A new revision when the template changed.
    let template_changed = old.as_ref().is_none_or(|o| o["template"] != template);
    let generation = old
        .as_ref()
        .and_then(|o| o["generation"].as_str()?.parse::<i64>().ok())
        .unwrap_or(0)
        + 1;
    let mut new_revision = None;
    if template_changed {
        let rev_id = match template["revision"].as_str().filter(|r| !r.is_empty()) {
            Some(r) => r.to_string(),
            None => {
                let r = shared.ids.random();
                let suffix: String = (0..3)
                    .map(|i| (b'a' + ((r >> (i * 8)) % 26) as u8) as char)
                    .collect();
                format!("{id}-{generation:05}-{suffix}")
            }
        };
        let rev_name = format!("{name}/revisions/{rev_id}");
        if let Some(existing) = st.run.revisions.get(&rev_name) {
            return Err(ApiError::new(
                "ALREADY_EXISTS",
                format!("Revision named '{rev_id}' with different configuration already exists."),
            )
            .with_info(
                "RESOURCE_ALREADY_EXISTS",
                &[("resource", existing.json["name"].as_str().unwrap_or(""))],
            ));
        }
        new_revision = Some(rev_name);
    }
    // Traffic may name only revisions that exist or that this write creates; Cloud Run
    // accepts the write and fails the rollout.
    let missing = traffic
        .iter()
        .filter_map(|t| t["revision"].as_str().filter(|r| !r.is_empty()))
        .find_map(|r| {
            let rn = format!("{name}/revisions/{r}");
            (!st.run.revisions.contains_key(&rn) && new_revision.as_deref() != Some(rn.as_str()))
                .then(|| r.to_string())
        });
    let ts = now();
    let mut svc = old.clone().unwrap_or_else(|| {
        json!({
            "name": name,
            "uid": shared.ids.uuid(),
            "createTime": ts,
            "creator": "fake-user@example.com",
        })
    });
    let m = svc.as_object_mut().expect("a service is an object");
    for f in SPEC_FIELDS {
        m.remove(*f);
    }
    m.extend(spec);
    m.insert("template".into(), template.clone());
    m.insert("generation".into(), Value::from(generation.to_string()));
    m.insert("updateTime".into(), Value::from(ts.clone()));
    m.insert("lastModifier".into(), Value::from("fake-user@example.com"));
    m.insert("etag".into(), Value::from(etag(shared)));
    m.insert("reconciling".into(), Value::Bool(true));
    m.insert(
        "terminalCondition".into(),
        condition("Ready", "CONDITION_RECONCILING"),
    );
    m.insert(
        "conditions".into(),
        json!([
            condition("RoutesReady", "CONDITION_RECONCILING"),
            condition("ConfigurationsReady", "CONDITION_RECONCILING")
        ]),
    );
    let all_urls = urls(shared, name, None);
    m.insert("uri".into(), Value::from(all_urls[0].clone()));
    m.insert("urls".into(), json!(all_urls));
    if let Some(rn) = &new_revision {
        m.insert("latestCreatedRevision".into(), Value::from(rn.clone()));
    }
    if call.flag("validateOnly") {
        let op = operation(
            shared,
            &call.parent,
            SERVICE_TYPE,
            &svc,
            Some(Ok(svc.clone())),
        );
        st.run.operations.insert(
            op["name"].as_str().unwrap_or("").to_string(),
            Op { json: op.clone() },
        );
        return Ok(op);
    }
    if let Some(rn) = &new_revision {
        let rev = revision_json(shared, name, rn, &template, generation, &svc);
        st.run.revisions.insert(
            rn.clone(),
            Rev {
                json: rev,
                service: name.to_string(),
                container: None,
                ready: false,
            },
        );
    }
    if create {
        let policy =
            json!({"version": 1, "etag": json::base64(&shared.ids.random().to_be_bytes())});
        st.run.services.insert(
            name.to_string(),
            Svc {
                json: svc.clone(),
                policy,
            },
        );
    } else if let Some(s) = st.run.services.get_mut(name) {
        s.json = svc.clone();
    }
    let op = operation(shared, &call.parent, SERVICE_TYPE, &svc, None);
    let op_name = op["name"].as_str().unwrap_or("").to_string();
    st.run
        .operations
        .insert(op_name.clone(), Op { json: op.clone() });
    drop(st);
    tokio::spawn(reconcile(
        shared.clone(),
        name.to_string(),
        op_name,
        new_revision,
        generation,
        missing,
    ));
    Ok(op)
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn revision_json(
    shared: &Shared,
    service: &str,
    name: &str,
    t: &Value,
    generation: i64,
    svc: &Value,
) -> Value {
    let ts = now();
    let mut r = json!({
        "name": name,
        "uid": shared.ids.uuid(),
        "generation": "1",
        "createTime": ts,
        "updateTime": ts,
        "launchStage": svc["launchStage"],
        "service": service,
        "reconciling": true,
        "conditions": [condition("Ready", "CONDITION_RECONCILING"), condition("ContainerHealthy", "CONDITION_RECONCILING"), condition("ResourcesAvailable", "CONDITION_RECONCILING")],
        "observedGeneration": "1",
        "logUri": format!("https://console.cloud.google.com/logs/viewer?resource=cloud_run_revision/service_name/{}/revision_name/{}",
            service.rsplit('/').next().unwrap_or(""), name.rsplit('/').next().unwrap_or("")),
        "etag": etag(shared),
    });
    let m = r.as_object_mut().expect("an object");
    for f in [
        "labels",
        "annotations",
        "scaling",
        "vpcAccess",
        "timeout",
        "serviceAccount",
        "containers",
        "volumes",
        "executionEnvironment",
        "encryptionKey",
        "maxInstanceRequestConcurrency",
        "sessionAffinity",
        "nodeSelector",
    ] {
        if let Some(v) = t.get(f) {
            m.insert(f.to_string(), v.clone());
        }
    }
    let mut labels = m.get("labels").cloned().unwrap_or_else(|| json!({}));
    labels["serving.knative.dev/configurationGeneration"] = Value::from(generation.to_string());
    m.insert("labels".into(), labels);
    r
}

/// A new operation on `parent`; `result` set makes it done.
fn operation(
    shared: &Shared,
    parent: &str,
    ty: &str,
    metadata: &Value,
    result: Option<Result<Value, ApiError>>,
) -> Value {
    let mut meta = metadata.clone();
    meta["@type"] = Value::from(ty);
    let mut op = json!({"name": format!("{parent}/operations/{}", shared.ids.uuid()), "metadata": meta, "done": false});
    if let Some(r) = result {
        finish(&mut op, ty, r);
    }
    op
}

fn finish(op: &mut Value, ty: &str, result: Result<Value, ApiError>) {
    op["done"] = Value::Bool(true);
    match result {
        Ok(mut v) => {
            v["@type"] = Value::from(ty);
            op["metadata"] = v.clone();
            op["response"] = v;
        }
        Err(e) => op["error"] = e.status_json(),
    }
}

/// Rolls a service's spec out: runs the new revision's container, then applies the
/// traffic, then finishes the operation.
async fn reconcile(
    shared: Arc<Shared>,
    service: String,
    op_name: String,
    revision: Option<String>,
    generation: i64,
    missing: Option<String>,
) {
    let started = Instant::now();
    let mut failure = None;
    if let Some(rn) = &revision {
        let spec = shared
            .lock()
            .run
            .revisions
            .get(rn)
            .map(|r| engine::RunSpec::of(&shared, &r.json));
        if let Some(spec) = spec {
            let result = engine::deploy(&shared, &spec).await;
            failure = record_revision(&shared, rn, result);
        }
    }
    let remaining = shared.opts.step_delay.saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await;
    let mut st = shared.lock();
    let run = &mut st.run;
    let Some(svc) = run.services.get(&service).map(|s| s.json.clone()) else {
        // Deleted meanwhile.
        if let Some(op) = run.operations.get_mut(&op_name) {
            finish(
                &mut op.json,
                SERVICE_TYPE,
                Err(ApiError::new(
                    "ABORTED",
                    format!("Service '{service}' was deleted during the rollout."),
                )),
            );
        }
        drop(st);
        shared.changed.notify_waiters();
        return;
    };
    let mut svc = svc;
    let current = svc["generation"]
        .as_str()
        .and_then(|g| g.parse::<i64>().ok())
        == Some(generation);
    if let (Some(rn), None) = (&revision, &failure) {
        svc["latestReadyRevision"] = Value::from(rn.clone());
    }
    // Traffic: resolvable only when every revision it names is ready.
    let traffic = svc["traffic"].as_array().cloned().unwrap_or_default();
    let mut traffic_error: Option<ApiError> = None;
    if let Some(r) = &missing {
        traffic_error = Some(ApiError::new(
            "NOT_FOUND",
            format!(
                "Revision named '{r}' with traffic target '{r}' does not exist. Specify an existing revision."
            ),
        ));
    }
    for t in &traffic {
        if traffic_error.is_some() {
            break;
        }
        let percent = t["percent"].as_i64().unwrap_or(0);
        match t["type"].as_str() {
            Some("TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST") => {
                if svc["latestReadyRevision"].as_str().unwrap_or("").is_empty()
                    && (percent > 0 || t.get("tag").is_some())
                {
                    traffic_error = Some(ApiError::new(
                        "FAILED_PRECONDITION",
                        "No revision of the service is ready to serve the traffic target LATEST.",
                    ));
                }
            }
            _ => {
                let r = t["revision"].as_str().unwrap_or("");
                let rn = format!("{service}/revisions/{r}");
                match run.revisions.get(&rn) {
                    None => {
                        traffic_error = Some(ApiError::new(
                            "NOT_FOUND",
                            format!(
                                "Revision named '{r}' with traffic target '{r}' does not exist. Specify an existing revision."
                            ),
                        ))
                    }
                    Some(rev) if !rev.ready => {
                        let why = rev.json["conditions"][0]["message"].as_str().unwrap_or("");
                        traffic_error = Some(ApiError::new(
                            "FAILED_PRECONDITION",
                            format!("Revision '{r}' is not ready and cannot serve traffic. {why}")
                                .trim_end()
                                .to_string(),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    let ts = now();
    if current {
        if traffic_error.is_none() {
            let statuses: Vec<Value> = traffic
                .iter()
                .map(|t| {
                    let mut s = json!({"type": t["type"]});
                    for f in ["revision", "percent", "tag"] {
                        if let Some(v) = t.get(f).filter(|v| !v.is_null() && *v != "" && *v != 0) {
                            s[f] = v.clone();
                        }
                    }
                    if let Some(tag) = t["tag"].as_str().filter(|t| !t.is_empty()) {
                        s["uri"] = Value::from(urls(&shared, &service, Some(tag))[0].clone());
                    }
                    s
                })
                .collect();
            svc["trafficStatuses"] = Value::Array(statuses);
        }
        let error = match (&failure, &traffic_error) {
            (Some(f), _) => Some(ApiError::new(
                "FAILED_PRECONDITION",
                format!(
                    "Revision '{}' is not ready and cannot serve traffic. {}",
                    revision
                        .as_deref()
                        .unwrap_or("")
                        .rsplit('/')
                        .next()
                        .unwrap_or(""),
                    f.message
                ),
            )),
            (None, Some(e)) => Some(e.clone()),
            (None, None) => None,
        };
        let routes = match &traffic_error {
            None => condition("RoutesReady", "CONDITION_SUCCEEDED"),
            Some(e) => failed_condition("RoutesReady", &e.message, None),
        };
        let configs = match &error {
            Some(e) if failure.is_some() => failed_condition(
                "ConfigurationsReady",
                &e.message,
                Some(("reason", "REVISION_FAILED")),
            ),
            _ => condition("ConfigurationsReady", "CONDITION_SUCCEEDED"),
        };
        svc["terminalCondition"] = match &error {
            Some(e) => failed_condition("Ready", &e.message, None),
            None => condition("Ready", "CONDITION_SUCCEEDED"),
        };
        svc["conditions"] = json!([routes, configs]);
        svc["reconciling"] = Value::Bool(false);
        svc["observedGeneration"] = Value::from(generation.to_string());
        svc["updateTime"] = Value::from(ts);
        if let Some(s) = run.services.get_mut(&service) {
            s.json = svc.clone();
        }
        if let Some(op) = run.operations.get_mut(&op_name) {
            match error {
                Some(e) => {
                    let mut meta = svc.clone();
                    meta["@type"] = Value::from(SERVICE_TYPE);
                    op.json["metadata"] = meta;
                    finish(&mut op.json, SERVICE_TYPE, Err(e));
                }
                None => finish(&mut op.json, SERVICE_TYPE, Ok(svc)),
            }
        }
    } else {
        // A later write owns the service's status now; this rollout reports its revision.
        if let Some(s) = run.services.get_mut(&service)
            && let (Some(rn), None) = (&revision, &failure)
        {
            s.json["latestReadyRevision"] = Value::from(rn.clone());
        }
        if let Some(op) = run.operations.get_mut(&op_name) {
            let result = match &failure {
                Some(f) => Err(ApiError::new("FAILED_PRECONDITION", f.message.clone())),
                None => Ok(svc),
            };
            finish(&mut op.json, SERVICE_TYPE, result);
        }
    }
    drop(st);
    shared.changed.notify_waiters();
}

/// Stores a deployment's outcome on its revision; returns the failure.
fn record_revision(
    shared: &Shared,
    rn: &str,
    result: Result<(String, u16), engine::Failure>,
) -> Option<engine::Failure> {
    let mut st = shared.lock();
    let Some(rev) = st.run.revisions.get_mut(rn) else {
        // Deleted while it started: its container goes too.
        if let Ok((c, _)) = result {
            tokio::spawn(async move { engine::remove(&c).await });
        }
        return None;
    };
    rev.json["reconciling"] = Value::Bool(false);
    rev.json["updateTime"] = Value::from(now());
    match result {
        Ok(container) => {
            rev.container = Some(container);
            rev.ready = true;
            rev.json["conditions"] = json!([
                condition("Ready", "CONDITION_SUCCEEDED"),
                condition("ContainerHealthy", "CONDITION_SUCCEEDED"),
                condition("ResourcesAvailable", "CONDITION_SUCCEEDED")
            ]);
            None
        }
        Err(f) => {
            let reason = Some((f.field, f.reason));
            let healthy = if f.field == "revisionReason" {
                failed_condition("ContainerHealthy", &f.message, reason)
            } else {
                condition("ContainerHealthy", "CONDITION_PENDING")
            };
            rev.json["conditions"] = json!([
                failed_condition("Ready", &f.message, reason),
                healthy,
                condition("ResourcesAvailable", "CONDITION_SUCCEEDED")
            ]);
            Some(f)
        }
    }
}

fn delete_service(shared: &Arc<Shared>, call: &Call) -> Result<Value, ApiError> {
    let name = call.service_name();
    let mut st = shared.lock();
    let svc = st.run.services.get(&name).ok_or_else(|| not_found(&name))?;
    let etag = call.q("etag");
    if !etag.is_empty() && svc.json["etag"].as_str() != Some(etag) {
        return Err(ApiError::new(
            "ABORTED",
            format!(
                "Etag '{etag}' does not match the current etag of '{name}'; re-read the service and retry."
            ),
        ));
    }
    let mut snapshot = svc.json.clone();
    if call.flag("validateOnly") {
        return Ok(operation(
            shared,
            &call.parent,
            SERVICE_TYPE,
            &snapshot,
            Some(Ok(snapshot.clone())),
        ));
    }
    snapshot["deleteTime"] = Value::from(now());
    let containers = st.run.containers_of(&name);
    st.run.services.remove(&name);
    st.run.revisions.retain(|_, r| r.service != name);
    Ok(delete_in_background(
        shared,
        st,
        &call.parent,
        SERVICE_TYPE,
        snapshot,
        containers,
    ))
}

/// A delete's operation: its containers are removed in the background, then the
/// operation is done (no sooner than `step_delay`), its response the deleted resource.
fn delete_in_background(
    shared: &Arc<Shared>,
    mut st: std::sync::MutexGuard<'_, crate::State>,
    parent: &str,
    kind: &'static str,
    snapshot: Value,
    containers: Vec<String>,
) -> Value {
    let op = operation(shared, parent, kind, &snapshot, None);
    let op_name = op["name"].as_str().unwrap_or("").to_string();
    st.run
        .operations
        .insert(op_name.clone(), Op { json: op.clone() });
    drop(st);
    let shared = shared.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        for c in containers {
            engine::remove(&c).await;
        }
        tokio::time::sleep(shared.opts.step_delay.saturating_sub(started.elapsed())).await;
        if let Some(op) = shared.lock().run.operations.get_mut(&op_name) {
            finish(&mut op.json, kind, Ok(snapshot));
        }
        shared.changed.notify_waiters();
    });
    op
}

fn delete_revision(shared: &Arc<Shared>, call: &Call) -> Result<Value, ApiError> {
    let sname = call.service_name();
    let name = format!("{sname}/revisions/{}", call.sub);
    let mut st = shared.lock();
    let rev = st
        .run
        .revisions
        .get(&name)
        .ok_or_else(|| not_found(&name))?;
    let etag = call.q("etag");
    if !etag.is_empty() && rev.json["etag"].as_str() != Some(etag) {
        return Err(ApiError::new(
            "ABORTED",
            format!("Etag '{etag}' does not match the current etag of '{name}'."),
        ));
    }
    if let Some(svc) = st.run.services.get(&sname) {
        let latest = svc.json["latestReadyRevision"].as_str().unwrap_or("");
        let serves = |t: &Value| {
            let named = match t["type"].as_str() {
                Some("TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST") => latest == name,
                _ => t["revision"] == call.sub.as_str(),
            };
            named
                && (t["percent"].as_i64().unwrap_or(0) > 0
                    || t["tag"].as_str().is_some_and(|t| !t.is_empty()))
        };
        let in_use = ["traffic", "trafficStatuses"].iter().any(|k| {
            svc.json[*k]
                .as_array()
                .is_some_and(|a| a.iter().any(serves))
        });
        if in_use {
            return Err(ApiError::new(
                "FAILED_PRECONDITION",
                format!("Revision '{}' cannot be deleted because it is serving traffic or is referenced by a traffic tag.", call.sub),
            )
            .with_info("REVISION_SERVING_TRAFFIC", &[("revision", &call.sub)]));
        }
    }
    let mut snapshot = rev.json.clone();
    if call.flag("validateOnly") {
        return Ok(operation(
            shared,
            &call.parent,
            REVISION_TYPE,
            &snapshot,
            Some(Ok(snapshot.clone())),
        ));
    }
    snapshot["deleteTime"] = Value::from(now());
    let container = st
        .run
        .revisions
        .remove(&name)
        .and_then(|r| r.container.map(|c| c.0));
    Ok(delete_in_background(
        shared,
        st,
        &call.parent,
        REVISION_TYPE,
        snapshot,
        container.into_iter().collect(),
    ))
}

fn set_iam_policy(shared: &Shared, call: &Call, body: &Value) -> Result<Value, ApiError> {
    let name = call.service_name();
    let policy = body
        .get("policy")
        .filter(|p| p.is_object())
        .ok_or_else(|| ApiError::invalid("policy must be set"))?;
    let mut bindings = Vec::new();
    for (i, b) in policy["bindings"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let role = b["role"].as_str().unwrap_or("");
        if !role.starts_with("roles/") {
            return Err(ApiError::invalid(format!(
                "Role {role} is not supported for this resource."
            ))
            .with_info(
                "INVALID_ARGUMENT",
                &[("field", &format!("policy.bindings[{i}].role"))],
            ));
        }
        let members: Vec<Value> = b["members"].as_array().cloned().unwrap_or_default();
        for m in &members {
            let m = m.as_str().unwrap_or("");
            let ok = matches!(m, "allUsers" | "allAuthenticatedUsers")
                || [
                    "user:",
                    "serviceAccount:",
                    "group:",
                    "domain:",
                    "principal:",
                    "principalSet:",
                    "deleted:",
                ]
                .iter()
                .any(|p| m.starts_with(p) && m.len() > p.len());
            if !ok {
                return Err(ApiError::invalid(format!(
                    "Invalid member '{m}' in the policy's binding for {role}."
                )));
            }
        }
        if !members.is_empty() {
            let mut nb = json!({"role": role, "members": members});
            if let Some(c) = b.get("condition").filter(|c| !c.is_null()) {
                nb["condition"] = c.clone();
            }
            bindings.push(nb);
        }
    }
    let mut st = shared.lock();
    let svc = st
        .run
        .services
        .get_mut(&name)
        .ok_or_else(|| not_found(&name))?;
    if let Some(given) = policy["etag"].as_str().filter(|e| !e.is_empty())
        && !json::same_base64(given, svc.policy["etag"].as_str().unwrap_or(""))
    {
        return Err(ApiError::new("ABORTED", "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.")
            .with_info("ETAG_MISMATCH", &[]));
    }
    let version = policy["version"].as_i64().filter(|v| *v > 0).unwrap_or(1);
    let mut p =
        json!({"version": version, "etag": json::base64(&shared.ids.random().to_be_bytes())});
    if !bindings.is_empty() {
        p["bindings"] = Value::Array(bindings);
    }
    svc.policy = p.clone();
    Ok(p)
}

async fn wait_operation(shared: &Arc<Shared>, call: &Call, body: &Value) -> Reply {
    let name = format!("{}/operations/{}", call.parent, call.id);
    let timeout = json::parse_duration(body.get("timeout"))
        .map_or(Duration::from_secs(60), Duration::from_millis)
        .min(Duration::from_secs(600));
    let deadline = Instant::now() + timeout;
    loop {
        let notified = shared.changed.notified();
        let op = shared
            .lock()
            .run
            .operations
            .get(&name)
            .map(|o| o.json.clone());
        let Some(op) = op else {
            return not_found(&name).reply();
        };
        let now = Instant::now();
        if op["done"] == true || now >= deadline {
            return out(&op, call);
        }
        let _ =
            tokio::time::timeout((deadline - now).min(Duration::from_millis(500)), notified).await;
    }
}

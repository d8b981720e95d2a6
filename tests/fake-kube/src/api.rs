//! The apiserver: discovery, routing, the verbs on every resource, subresources
//! (`pods/log`, `*/status`, `*/scale`, `*/proxy` in `proxy.rs`), watches, `Status` errors,
//! defaulting and validation.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use hyper::body::Frame;
use hyper::http::request::Parts;
use serde_json::{Value, json};

use crate::json::{self, FieldSelector, Selector};
use crate::store::State;
use crate::{Reply, Shared, engine, reply, table};

/// One resource the server serves.
pub struct Res {
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub group: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// `(subresource, kind, group, verbs)`
    pub subs: &'static [(
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
    )],
}

const STATUS_VERBS: &[&str] = &["get", "patch", "update"];
/// What discovery lists for `pods/proxy` and `services/proxy` (only GET is served).
const PROXY_VERBS: &[&str] = &["create", "delete", "get", "patch", "update"];

pub static RESOURCES: &[Res] = &[
    Res {
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        group: "",
        namespaced: false,
        short: &["ns"],
        categories: &[],
        subs: &[("status", "Namespace", "", STATUS_VERBS)],
    },
    Res {
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        group: "",
        namespaced: true,
        short: &["po"],
        categories: &["all"],
        subs: &[
            ("log", "Pod", "", &["get"]),
            (
                "portforward",
                "PodPortForwardOptions",
                "",
                &["create", "get"],
            ),
            ("proxy", "PodProxyOptions", "", PROXY_VERBS),
            ("status", "Pod", "", STATUS_VERBS),
        ],
    },
    Res {
        plural: "services",
        singular: "service",
        kind: "Service",
        group: "",
        namespaced: true,
        short: &["svc"],
        categories: &["all"],
        subs: &[
            ("proxy", "ServiceProxyOptions", "", PROXY_VERBS),
            ("status", "Service", "", STATUS_VERBS),
        ],
    },
    Res {
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        group: "",
        namespaced: true,
        short: &[],
        categories: &[],
        subs: &[],
    },
    Res {
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        group: "",
        namespaced: true,
        short: &["cm"],
        categories: &[],
        subs: &[],
    },
    Res {
        plural: "events",
        singular: "event",
        kind: "Event",
        group: "",
        namespaced: true,
        short: &["ev"],
        categories: &[],
        subs: &[],
    },
    Res {
        plural: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        group: "",
        namespaced: true,
        short: &["ep"],
        categories: &[],
        subs: &[],
    },
    Res {
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        group: "discovery.k8s.io",
        namespaced: true,
        short: &[],
        categories: &[],
        subs: &[],
    },
    Res {
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        group: "apps",
        namespaced: true,
        short: &["deploy"],
        categories: &["all"],
        subs: &[
            ("scale", "Scale", "autoscaling", STATUS_VERBS),
            ("status", "Deployment", "apps", STATUS_VERBS),
        ],
    },
    Res {
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        group: "apps",
        namespaced: true,
        short: &["rs"],
        categories: &["all"],
        subs: &[
            ("scale", "Scale", "autoscaling", STATUS_VERBS),
            ("status", "ReplicaSet", "apps", STATUS_VERBS),
        ],
    },
];

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl Res {
    pub fn by_plural(plural: &str) -> &'static Res {
        RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .expect("a known resource")
    }

    pub fn api_version(&self) -> &'static str {
        group_version(self.group)
    }

    /// `deployments.apps`, `pods`: how messages name the resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Deployment.apps`, `Pod`: how Invalid messages name the kind.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// The API groups served besides the core one, each at version v1.
pub const GROUPS: &[&str] = &["apps", "discovery.k8s.io"];

/// `v1`, `apps/v1`: a group's version as `apiVersion` says it.
pub fn group_version(group: &str) -> &'static str {
    match group {
        "" => "v1",
        "apps" => "apps/v1",
        "discovery.k8s.io" => "discovery.k8s.io/v1",
        "autoscaling" => "autoscaling/v1",
        other => unreachable!("no API group {other} is served"),
    }
}

/// A routed API call.
pub struct Call {
    pub verb: &'static str,
    pub res: &'static Res,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    /// `dryRun=All`: the write is validated and answered as it would be stored, and
    /// nothing is stored.
    pub dry_run: bool,
    /// `fieldValidation=Strict`: a field the kind does not have refuses the write.
    pub strict: bool,
    /// Who writes: `fieldManager`, else the client's user agent up to its `/`.
    pub manager: String,
    /// A server-side apply, which says its own `managedFields`.
    pub applying: bool,
}

/// An error answer: a `Status`.
pub struct KErr {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl KErr {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> KErr {
        KErr {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, name: &str, res: &Res, kind: &str) -> KErr {
        let mut d = json!({"name": name, "kind": kind});
        if !res.group.is_empty() {
            d["group"] = Value::from(res.group);
        }
        if name.is_empty() {
            d.as_object_mut().map(|m| m.remove("name"));
        }
        self.details = Some(d);
        self
    }

    pub fn not_found(res: &Res, name: &str) -> KErr {
        KErr::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .with_details(name, res, res.plural)
    }

    pub fn already_exists(res: &Res, name: &str) -> KErr {
        KErr::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .with_details(name, res, res.plural)
    }

    pub fn conflict(res: &Res, name: &str) -> KErr {
        KErr::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", res.qualified()),
        )
        .with_details(name, res, res.plural)
    }

    pub fn bad_request(message: impl Into<String>) -> KErr {
        KErr::new(400, "BadRequest", message)
    }

    pub fn invalid(res: &Res, name: &str, errs: &[FieldErr]) -> KErr {
        let texts: Vec<String> = errs.iter().map(FieldErr::text).collect();
        let joined = if texts.len() == 1 {
            texts[0].clone()
        } else {
            format!("[{}]", texts.join(", "))
        };
        let mut e = KErr::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {joined}", res.qualified_kind()),
        )
        .with_details(name, res, res.kind);
        let causes: Vec<Value> = errs
            .iter()
            .map(|f| json!({"reason": f.reason(), "message": f.cause(), "field": f.field}))
            .collect();
        if let Some(d) = &mut e.details {
            d["causes"] = Value::from(causes);
        }
        e
    }

    /// What `User "ci"` may not do.
    pub fn forbidden(call: &Call, message: Option<String>) -> KErr {
        let message = message.unwrap_or_else(|| {
            let resource = match &call.sub {
                Some(s) => format!("{}/{s}", call.res.plural),
                None => call.res.plural.to_string(),
            };
            let subject = match &call.name {
                Some(n) => format!("{} \"{n}\"", call.res.qualified()),
                None => call.res.qualified(),
            };
            let scope = match &call.ns {
                Some(ns) => format!(" in the namespace \"{ns}\""),
                None => " at the cluster scope".into(),
            };
            format!("{subject} is forbidden: User \"ci\" cannot {} resource \"{resource}\" in API group \"{}\"{scope}", call.verb, call.res.group)
        });
        KErr::new(403, "Forbidden", message).with_details(
            call.name.as_deref().unwrap_or(""),
            call.res,
            call.res.plural,
        )
    }

    pub fn status(&self) -> Value {
        let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code});
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    pub fn reply(&self) -> Reply {
        reply(self.code, "application/json", self.status().to_string())
    }
}

/// One field error of an Invalid answer.
pub struct FieldErr {
    pub field: String,
    /// `Required`, `Invalid`, `Unsupported`, `Forbidden`, `Duplicate`.
    pub kind: &'static str,
    /// The bad value as Go prints it (`"x"`, `map[string]string{…}`, `-1`).
    pub value: String,
    pub detail: String,
}

impl FieldErr {
    pub fn required(field: impl Into<String>) -> FieldErr {
        FieldErr {
            field: field.into(),
            kind: "Required",
            value: String::new(),
            detail: String::new(),
        }
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> FieldErr {
        FieldErr {
            field: field.into(),
            kind: "Invalid",
            value: value.into(),
            detail: detail.into(),
        }
    }

    fn cause(&self) -> String {
        match self.kind {
            "Required" if self.detail.is_empty() => "Required value".into(),
            "Required" => format!("Required value: {}", self.detail),
            "Invalid" => format!("Invalid value: {}: {}", self.value, self.detail),
            "Unsupported" => format!("Unsupported value: {}: {}", self.value, self.detail),
            "Duplicate" => format!("Duplicate value: {}", self.value),
            _ => format!("Forbidden: {}", self.detail),
        }
    }

    fn text(&self) -> String {
        format!("{}: {}", self.field, self.cause())
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            "Required" => "FieldValueRequired",
            "Invalid" => "FieldValueInvalid",
            "Unsupported" => "FieldValueNotSupported",
            "Duplicate" => "FieldValueDuplicate",
            _ => "FieldValueForbidden",
        }
    }
}

fn json_reply(code: u16, v: &Value) -> Reply {
    reply(code, "application/json", v.to_string())
}

/// The query parameters of a request.
pub type Query = HashMap<String, String>;

pub async fn handle(
    shared: &Arc<Shared>,
    parts: &Parts,
    body: Bytes,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Reply {
    let path = parts.uri.path().trim_end_matches('/').to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let q: Query = form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    let accept = parts
        .headers
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Some(r) = discovery(shared, &path, &accept) {
        return r;
    }
    if path.starts_with("/openapi/") {
        return match crate::openapi::get(&path) {
            Some(doc) => reply(200, "application/json", doc),
            None => reply(404, "text/plain; charset=utf-8", "404 page not found\n"),
        };
    }
    let Some(mut call) = route(&parts.method, &path, &q) else {
        let e = KErr::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        let mut s = e.status();
        s["details"] = json!({});
        return json_reply(404, &s);
    };
    if call.manager.is_empty() {
        let agent = parts
            .headers
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        call.manager = agent.split('/').next().unwrap_or(agent).to_string();
    }
    if call.verb == "unsupported" {
        let e = KErr::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
        return e.reply();
    }
    if let Some(d) = q.get("dryRun").filter(|d| *d != "All") {
        let options = match call.verb {
            "create" => "CreateOptions",
            "update" => "UpdateOptions",
            "patch" => "PatchOptions",
            _ => "DeleteOptions",
        };
        return KErr::new(
            422,
            "Invalid",
            format!("{options}.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: {d:?}: supported values: \"All\""),
        )
        .reply();
    }
    if let Some((code, reason, message)) = crate::record_call(
        shared,
        &call,
        &path,
        &raw_query,
        parts.headers.contains_key(hyper::header::AUTHORIZATION),
    ) {
        let e = match (code, reason.as_deref()) {
            (403, None | Some("Forbidden")) => KErr::forbidden(&call, message),
            _ => {
                let reason = reason.unwrap_or_else(|| default_reason(code).to_string());
                let message = message.unwrap_or_else(|| match reason.as_str() {
                    "Conflict" => KErr::conflict(call.res, call.name.as_deref().unwrap_or("")).message,
                    "NotFound" => KErr::not_found(call.res, call.name.as_deref().unwrap_or("")).message,
                    "TooManyRequests" => "the server has received too many requests and has asked us to try again later".into(),
                    _ => format!("injected {reason} for {} {}", call.verb, call.res.plural),
                });
                let mut e = KErr::new(code, &reason, message);
                if let Some(name) = &call.name {
                    e = e.with_details(name, call.res, call.res.plural);
                }
                e
            }
        };
        return e.reply();
    }
    let mut body = body;
    if content_type(parts) == "application/vnd.kubernetes.protobuf"
        && matches!(call.verb, "create" | "update")
    {
        match crate::proto::decode(&body) {
            Ok(v) => body = Bytes::from(v.to_string()),
            Err(e) => return KErr::new(415, "UnsupportedMediaType", e).reply(),
        }
    }
    let table = accept.contains("as=Table");
    let result = match (call.verb, call.sub.as_deref()) {
        ("get", Some("log")) => return logs(shared, &call, &q).await,
        ("get", Some("proxy")) => return crate::proxy::get(shared, &call, parts).await,
        ("get" | "create", Some("portforward")) => {
            return crate::portforward::serve(shared, &call, parts, upgrade, &q);
        }
        ("watch", _) => return watch(shared, &call, &q, table).await,
        ("get", None) => get(shared, &call, &q, table),
        ("list", _) => list(shared, &call, &q, table),
        ("create", None) => create(shared, &call, &body),
        ("get", Some("scale")) => scale_get(shared, &call),
        ("update" | "patch", Some("scale")) => scale_write(shared, &call, parts, &body),
        ("get", Some("status")) => get(shared, &call, &q, false),
        ("update", _) => {
            let obj = serde_json::from_slice::<Value>(&body).map_err(|e| {
                KErr::bad_request(format!(
                    "the body of the request was in an unknown format: {e}"
                ))
            });
            obj.and_then(|obj| update(shared, &mut call, obj, false))
        }
        ("patch", None) if content_type(parts) == "application/apply-patch+yaml" => {
            server_side_apply(shared, &mut call, &q, &body)
        }
        ("patch", _) => patch(shared, &mut call, parts, &body),
        ("delete", None) => delete(shared, &call, &q, &body),
        ("deletecollection", None) => delete_collection(shared, &call, &q, &body),
        _ => Err(KErr::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    };
    match result {
        Ok((code, v)) => json_reply(code, &v),
        Err(e) => e.reply(),
    }
}

fn default_reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Gone",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// Routes `/api/v1/...` and `/apis/apps/v1/...`.
pub fn route(method: &Method, path: &str, q: &Query) -> Option<Call> {
    let (group, rest) = match path.strip_prefix("/api/v1/") {
        Some(r) => ("", r),
        None => GROUPS.iter().find_map(|g| {
            let r = path
                .strip_prefix("/apis/")?
                .strip_prefix(g)?
                .strip_prefix("/v1/")?;
            Some((*g, r))
        })?,
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
    };
    let (ns, res, name, sub) = match segs.as_slice() {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => (
            Some(ns.to_string()),
            find(plural)?,
            tail.first().map(|s| s.to_string()),
            tail.get(1).map(|s| s.to_string()),
        ),
        [plural, tail @ ..] => (
            None,
            find(plural)?,
            tail.first().map(|s| s.to_string()),
            tail.get(1).map(|s| s.to_string()),
        ),
        [] => return None,
    };
    // `…/{name}/proxy/{path…}`: the path after `proxy` goes to the pod.
    let proxy = sub.as_deref() == Some("proxy") && ns.is_some();
    if segs.len() > if ns.is_some() { 5 } else { 3 } && !proxy {
        return None;
    }
    if let Some(s) = &sub
        && !res.subs.iter().any(|(n, ..)| n == s)
    {
        return None;
    }
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (method, &name) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) if watch => "watch",
        (&Method::GET, None) => "list",
        (&Method::POST, None) => "create",
        // A subresource's own create: `pods/{name}/portforward` (SPDY upgrades are POSTs).
        (&Method::POST, Some(_)) if sub.is_some() => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        _ => "unsupported",
    };
    let verb = if sub.as_deref() == Some("proxy") && verb != "get" {
        "unsupported"
    } else {
        verb
    };
    Some(Call {
        verb,
        res,
        ns,
        name,
        sub,
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
        manager: q.get("fieldManager").cloned().unwrap_or_default(),
        applying: false,
    })
}

// ---------------------------------------------------------------------------------------
// Discovery

fn discovery(shared: &Shared, path: &str, accept: &str) -> Option<Reply> {
    let aggregated = accept.contains("as=APIGroupDiscoveryList");
    Some(match path {
        "/version" => json_reply(
            200,
            &json!({
                "major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
                "gitTreeState": "clean", "buildDate": "2024-12-11T17:59:15Z", "goVersion": "go1.23.3", "compiler": "gc", "platform": "linux/amd64",
            }),
        ),
        "/api" if aggregated => aggregated_reply(&[""]),
        "/apis" if aggregated => aggregated_reply(GROUPS),
        "/api" => json_reply(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", shared.port)}]}),
        ),
        "/apis" => {
            let groups: Vec<Value> = GROUPS.iter().map(|g| api_group(g)).collect();
            json_reply(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        "/api/v1" => json_reply(200, &resource_list("")),
        _ => {
            let rest = path.strip_prefix("/apis/")?;
            let (group, version) = match rest.split_once('/') {
                Some((g, v)) => (g, Some(v)),
                None => (rest, None),
            };
            let group = GROUPS.iter().find(|g| **g == group)?;
            match version {
                None => {
                    let mut g = api_group(group);
                    g["kind"] = Value::from("APIGroup");
                    g["apiVersion"] = Value::from("v1");
                    json_reply(200, &g)
                }
                Some("v1") => json_reply(200, &resource_list(group)),
                Some(_) => return None,
            }
        }
    })
}

fn api_group(group: &str) -> Value {
    let gv = json!({"groupVersion": group_version(group), "version": "v1"});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

fn resource_list(group: &str) -> Value {
    let mut out = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        let mut e = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": VERBS});
        if !r.short.is_empty() {
            e["shortNames"] = json!(r.short);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        for (sub, kind, g, verbs) in r.subs {
            let mut s = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if *g != r.group {
                s["group"] = Value::from(*g);
                s["version"] = Value::from("v1");
            }
            out.push(s);
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version(group), "resources": out})
}

/// The aggregated discovery document (`apidiscovery.k8s.io/v2`) of the core group or of
/// the named groups.
fn aggregated_reply(groups: &[&str]) -> Reply {
    let items: Vec<Value> = groups
        .iter()
        .map(|g| {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == *g)
                .map(|r| {
                    let subs: Vec<Value> = r
                        .subs
                        .iter()
                        .map(|(sub, kind, sg, verbs)| json!({"subresource": sub, "responseKind": {"group": sg, "version": "v1", "kind": kind}, "verbs": verbs}))
                        .collect();
                    let mut e = json!({
                        "resource": r.plural, "responseKind": {"group": r.group, "version": "v1", "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" }, "singularResource": r.singular, "verbs": VERBS,
                    });
                    if !r.short.is_empty() {
                        e["shortNames"] = json!(r.short);
                    }
                    if !r.categories.is_empty() {
                        e["categories"] = json!(r.categories);
                    }
                    if !subs.is_empty() {
                        e["subresources"] = Value::from(subs);
                    }
                    e
                })
                .collect();
            let mut meta = json!({"creationTimestamp": null});
            if !g.is_empty() {
                meta["name"] = Value::from(*g);
            }
            json!({"metadata": meta, "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}]})
        })
        .collect();
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    reply(
        200,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        body.to_string(),
    )
}

// ---------------------------------------------------------------------------------------
// Reads

fn ns_of(call: &Call) -> &str {
    if call.res.namespaced {
        call.ns.as_deref().unwrap_or("")
    } else {
        ""
    }
}

fn get(shared: &Shared, call: &Call, q: &Query, table: bool) -> Result<(u16, Value), KErr> {
    let st = shared.lock();
    let name = call.name.as_deref().unwrap_or("");
    let obj = st
        .get(call.res.plural, ns_of(call), name)
        .ok_or_else(|| KErr::not_found(call.res, name))?;
    let out = public(call.res, obj);
    if table {
        return Ok((
            200,
            table::table(
                &st,
                call.res,
                &[&out],
                &st.rv.to_string(),
                q.get("includeObject").map(String::as_str),
            ),
        ));
    }
    Ok((200, out))
}

/// An object as clients see it (Secrets' `stringData` never is stored; nothing else is
/// hidden).
fn public(_res: &Res, obj: &Value) -> Value {
    obj.clone()
}

fn selectors(q: &Query) -> Result<(Selector, FieldSelector), KErr> {
    let labels = Selector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(KErr::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""));
    Ok((labels, fields))
}

fn list(shared: &Shared, call: &Call, q: &Query, table: bool) -> Result<(u16, Value), KErr> {
    let (labels, fields) = selectors(q)?;
    let st = shared.lock();
    let ns = if call.res.namespaced {
        call.ns.as_deref()
    } else {
        None
    };
    let items: Vec<Value> = st
        .list(call.res.plural, ns)
        .into_iter()
        .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
        .map(|o| public(call.res, o))
        .collect();
    let rv = st.rv.to_string();
    if table {
        let refs: Vec<&Value> = items.iter().collect();
        return Ok((
            200,
            table::table(
                &st,
                call.res,
                &refs,
                &rv,
                q.get("includeObject").map(String::as_str),
            ),
        ));
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    Ok((
        200,
        json!({"kind": format!("{}List", call.res.kind), "apiVersion": call.res.api_version(), "metadata": {"resourceVersion": rv}, "items": items}),
    ))
}

/// A body fed from a channel (watches, followed logs).
pub struct ChanBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn stream_reply(content_type: &str, rx: tokio::sync::mpsc::Receiver<Bytes>) -> Reply {
    hyper::Response::builder()
        .status(200)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(ChanBody(rx).boxed())
        .expect("a valid response")
}

async fn watch(shared: &Arc<Shared>, call: &Call, q: &Query, table: bool) -> Reply {
    let (labels, fields) = match selectors(q) {
        Ok(s) => s,
        Err(e) => return e.reply(),
    };
    let res = call.res;
    let ns = if res.namespaced {
        call.ns.clone()
    } else {
        None
    };
    let since = q
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0);
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let include = q.get("includeObject").cloned();
    let matches = move |o: &Value| labels.matches(&o["metadata"]["labels"]) && fields.matches(o);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let (initial, mut last, mut changed) = {
        let st = shared.lock();
        if let Some(rv) = since
            && rv < st.compacted
        {
            return KErr::new(
                410,
                "Expired",
                format!("too old resource version: {rv} ({})", st.rv),
            )
            .reply();
        }
        let initial: Vec<Value> = match since {
            Some(_) => Vec::new(),
            None => st
                .list(res.plural, ns.as_deref())
                .into_iter()
                .filter(|o| matches(o))
                .cloned()
                .collect(),
        };
        (initial, since.unwrap_or(st.rv), st.notify.subscribe())
    };
    let shared_state = shared.clone();
    let shared_task = shared.clone();
    let encode = move |kind: &str, obj: &Value| -> Bytes {
        let obj = if table && kind != "BOOKMARK" && kind != "ERROR" {
            let st = shared_state.lock();
            let mut t = table::table(
                &st,
                res,
                &[obj],
                obj["metadata"]["resourceVersion"].as_str().unwrap_or(""),
                include.as_deref(),
            );
            t["metadata"] = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
            t
        } else {
            obj.clone()
        };
        let mut line = json!({"type": kind, "object": obj}).to_string();
        line.push('\n');
        Bytes::from(line)
    };
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        for o in &initial {
            if tx.send(encode("ADDED", o)).await.is_err() {
                return;
            }
        }
        loop {
            let batch: Result<Vec<(&'static str, Value)>, Value> = {
                let st = shared_task.lock();
                if last < st.compacted {
                    Err(KErr::new(
                        410,
                        "Expired",
                        format!("too old resource version: {last} ({})", st.rv),
                    )
                    .status())
                } else {
                    let mut out = Vec::new();
                    for c in st.history.iter().filter(|c| {
                        c.rv > last
                            && c.resource == res.plural
                            && ns.as_ref().is_none_or(|n| *n == c.ns)
                    }) {
                        let now = matches(&c.obj);
                        let before = c.prev.as_ref().is_some_and(&matches);
                        let kind = match (c.kind, before, now) {
                            ("DELETED", _, true) => "DELETED",
                            (_, false, true) => "ADDED",
                            (_, true, true) => c.kind,
                            ("MODIFIED", true, false) => "DELETED",
                            _ => continue,
                        };
                        out.push((kind, c.obj.clone()));
                    }
                    last = st.rv;
                    Ok(out)
                }
            };
            match batch {
                Err(status) => {
                    let _ = tx.send(encode("ERROR", &status)).await;
                    return;
                }
                Ok(events) => {
                    for (kind, o) in events {
                        if tx.send(encode(kind, &o)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(5)), if bookmarks => {
                    let rv = last;
                    let b = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null}});
                    if tx.send(encode("BOOKMARK", &b)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    stream_reply("application/json", rx)
}

async fn logs(shared: &Shared, call: &Call, q: &Query) -> Reply {
    let name = call.name.clone().unwrap_or_default();
    let ns = call.ns.clone().unwrap_or_default();
    let pod = match shared.lock().get("pods", &ns, &name).cloned() {
        Some(p) => p,
        None => return KErr::not_found(call.res, &name).reply(),
    };
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(c) => c.clone(),
        Some(c) => {
            return KErr::bad_request(format!("container {c} is not valid for pod {name}")).reply();
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return KErr::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ))
            .reply();
        }
    };
    let status = pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == container.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    let started = status["state"]["running"].is_object()
        || status["state"]["terminated"].is_object()
        || status["lastState"]["terminated"].is_object();
    if !started || containers.first() != Some(&container) {
        let reason = status["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or("ContainerCreating");
        return KErr::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        ))
        .reply();
    }
    let docker_name = engine::container_name(&pod);
    let mut args: Vec<String> = vec!["logs".into()];
    if let Some(t) = q.get("tailLines") {
        args.extend(["--tail".into(), t.clone()]);
    }
    if q.get("timestamps").is_some_and(|t| t == "true") {
        args.push("--timestamps".into());
    }
    if let Some(s) = q.get("sinceSeconds") {
        args.extend(["--since".into(), format!("{s}s")]);
    }
    if let Some(t) = q.get("sinceTime") {
        args.extend(["--since".into(), t.clone()]);
    }
    let follow = q.get("follow").is_some_and(|f| f == "true");
    if follow {
        args.push("--follow".into());
    }
    args.push(docker_name);
    let limit = q.get("limitBytes").and_then(|l| l.parse::<usize>().ok());
    if !follow {
        let out = engine::logs(&args).await;
        let out = match limit {
            Some(l) if out.len() > l => out[..l].to_vec(),
            _ => out,
        };
        return reply(200, "text/plain", out);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(engine::follow_logs(args, tx));
    stream_reply("text/plain", rx)
}

// ---------------------------------------------------------------------------------------
// Writes

fn parse_body(body: &[u8]) -> Result<Value, KErr> {
    let v: Value = serde_json::from_slice(body).map_err(|e| KErr::bad_request(format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml: {e}")))?;
    if !v.is_object() {
        return Err(KErr::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(v)
}

fn check_kind(res: &Res, obj: &Value) -> Result<(), KErr> {
    if let Some(k) = obj["kind"].as_str()
        && k != res.kind
    {
        return Err(KErr::bad_request(format!(
            "the kind of the provided object {k:?} does not match the kind of the resource {:?}",
            res.kind
        )));
    }
    if let Some(a) = obj["apiVersion"].as_str()
        && a != res.api_version()
    {
        return Err(KErr::bad_request(format!(
            "the API version in the data ({a}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    Ok(())
}

/// Refuses writes into a namespace that is missing or terminating.
fn check_namespace(st: &State, call: &Call, name: &str) -> Result<(), KErr> {
    if !call.res.namespaced {
        return Ok(());
    }
    let ns = call.ns.as_deref().unwrap_or("");
    match st.get("namespaces", "", ns) {
        None => Err(KErr::not_found(Res::by_plural("namespaces"), ns)),
        Some(n) if n["status"]["phase"] == "Terminating" => Err(KErr::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", call.res.qualified()),
        )
        .with_details(name, call.res, call.res.plural)),
        Some(_) => Ok(()),
    }
}

/// With `fieldValidation=Strict`, the apiserver's answer to fields the kind does not have.
fn strict_fields(call: &Call, obj: &Value) -> Result<(), KErr> {
    let unknown = match call.strict {
        true => crate::openapi::unknown_fields(call.res, obj),
        false => Vec::new(),
    };
    if unknown.is_empty() {
        return Ok(());
    }
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    Err(KErr::bad_request(format!(
        "{kind} in version \"v1\" cannot be handled as a {kind}: strict decoding error: {}",
        fields.join(", "),
        kind = call.res.kind
    )))
}

fn create(shared: &Shared, call: &Call, body: &[u8]) -> Result<(u16, Value), KErr> {
    let obj = parse_body(body)?;
    check_kind(call.res, &obj)?;
    strict_fields(call, &obj)?;
    create_object(shared, call, obj, None)
}

/// Stores a new object; `managed`: its `managedFields` (a server-side apply's; else the
/// creator's Update of the fields it set).
fn create_object(
    shared: &Shared,
    call: &Call,
    mut obj: Value,
    managed: Option<Value>,
) -> Result<(u16, Value), KErr> {
    let managed = managed.or_else(|| {
        crate::ssa::updated(
            &json!({}),
            &crate::ssa::fields(&obj),
            &call.manager,
            call.res.api_version(),
        )
    });
    let res = call.res;
    obj["kind"] = Value::from(res.kind);
    obj["apiVersion"] = Value::from(res.api_version());
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if res.namespaced {
        let ns = call.ns.clone().unwrap_or_default();
        match obj["metadata"]["namespace"].as_str() {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(KErr::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj["metadata"]["namespace"] = Value::from(ns),
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty()
        && let Some(g) = obj["metadata"]["generateName"]
            .as_str()
            .filter(|g| !g.is_empty())
    {
        name = format!("{g}{}", shared.suffix(5));
        obj["metadata"]["name"] = Value::from(name.clone());
    }
    if name.is_empty() {
        return Err(KErr::invalid(
            res,
            "",
            &[FieldErr {
                field: "metadata.name".into(),
                kind: "Required",
                value: String::new(),
                detail: "name or generateName is required".into(),
            }],
        ));
    }
    let mut st = shared.lock();
    check_namespace(&st, call, &name)?;
    if res.plural == "secrets" {
        normalize_secret(&mut obj)?;
    }
    default_object(res.plural, &mut obj);
    let errs = validate(res.plural, &obj, None);
    if !errs.is_empty() {
        return Err(KErr::invalid(res, &name, &errs));
    }
    if st.get(res.plural, ns_of(call), &name).is_some() {
        return Err(KErr::already_exists(res, &name));
    }
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    meta.insert("uid".into(), Value::from(shared.ids.uuid()));
    meta.insert("creationTimestamp".into(), Value::from(json::now()));
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
    ] {
        meta.remove(k);
    }
    if let Some(m) = managed {
        meta.insert("managedFields".into(), m);
    }
    match res.plural {
        "deployments" | "replicasets" => {
            obj["metadata"]["generation"] = Value::from(1);
            obj["status"] = json!({});
        }
        "pods" => {
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        "namespaces" => {
            obj["status"] = json!({"phase": "Active"});
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = Value::from(name.clone());
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
        }
        "services" if call.dry_run => {
            obj["status"] = json!({"loadBalancer": {}});
            engine::preview_service_ports(&mut st, &mut obj, None)
                .map_err(|errs| KErr::invalid(res, &name, &errs))?;
        }
        "services" => {
            obj["status"] = json!({"loadBalancer": {}});
            engine::allocate_service_ports(shared, &mut st, &mut obj, None)
                .map_err(|errs| KErr::invalid(res, &name, &errs))?;
            engine::load_balancer(shared, &mut st, &mut obj);
        }
        _ => {}
    }
    if call.dry_run {
        return Ok((201, public(res, &obj)));
    }
    let stored = st.put(res.plural, obj);
    Ok((201, public(res, &stored)))
}

/// Replaces an object (PUT, and the end of every PATCH). `status` writes only the status.
fn update(
    shared: &Shared,
    call: &mut Call,
    mut obj: Value,
    from_patch: bool,
) -> Result<(u16, Value), KErr> {
    let res = call.res;
    let name = call.name.clone().unwrap_or_default();
    if !obj.is_object() {
        return Err(KErr::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    check_kind(res, &obj)?;
    strict_fields(call, &obj)?;
    if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(KErr::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let mut st = shared.lock();
    let cur = st
        .get(res.plural, ns_of(call), &name)
        .cloned()
        .ok_or_else(|| KErr::not_found(res, &name))?;
    let want_rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if !want_rv.is_empty()
        && want_rv != cur["metadata"]["resourceVersion"].as_str().unwrap_or("")
        && !from_patch
    {
        return Err(KErr::conflict(res, &name));
    }
    obj["kind"] = Value::from(res.kind);
    obj["apiVersion"] = Value::from(res.api_version());
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    // Fields the server owns.
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match cur["metadata"].get(k) {
            Some(v) => obj["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if call.sub.as_deref() == Some("status") {
        let status = obj["status"].clone();
        obj = cur.clone();
        obj["status"] = status;
    } else if !["secrets", "configmaps", "events"].contains(&res.plural) {
        obj["status"] = cur["status"].clone();
    }
    if res.plural == "secrets" {
        normalize_secret(&mut obj)?;
    }
    if res.plural == "namespaces" {
        obj["spec"] = cur["spec"].clone();
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = Value::from(name.clone());
    }
    default_object(res.plural, &mut obj);
    let errs = validate(res.plural, &obj, Some(&cur));
    if !errs.is_empty() {
        return Err(KErr::invalid(res, &name, &errs));
    }
    if matches!(res.plural, "deployments" | "replicasets") && obj["spec"] != cur["spec"] {
        obj["metadata"]["generation"] =
            Value::from(cur["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
    }
    if res.plural == "services" && call.dry_run {
        obj["status"]["loadBalancer"] = cur["status"]["loadBalancer"].clone();
        engine::preview_service_ports(&mut st, &mut obj, Some(&cur))
            .map_err(|errs| KErr::invalid(res, &name, &errs))?;
    } else if res.plural == "services" {
        engine::allocate_service_ports(shared, &mut st, &mut obj, Some(&cur))
            .map_err(|errs| KErr::invalid(res, &name, &errs))?;
        engine::load_balancer(shared, &mut st, &mut obj);
    }
    obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
    // The writer's Update takes the fields it changed (a server-side apply said its own).
    if call.sub.is_none() && !call.applying {
        if obj["metadata"]["managedFields"].is_null() {
            obj["metadata"]["managedFields"] = cur["metadata"]["managedFields"].clone();
        }
        let set = crate::ssa::changed(&cur, &obj);
        if let Some(m) = crate::ssa::updated(&obj, &set, &call.manager, res.api_version()) {
            obj["metadata"]["managedFields"] = m;
        }
        if obj["metadata"]["managedFields"].is_null()
            && let Some(m) = obj["metadata"].as_object_mut()
        {
            m.remove("managedFields");
        }
    }
    if obj == cur || call.dry_run {
        return Ok((200, public(res, &obj)));
    }
    let stored = st.put(res.plural, obj);
    if res.plural == "services" {
        engine::release_unused_ports(&mut st);
    }
    Ok((200, public(res, &stored)))
}

fn content_type(parts: &Parts) -> String {
    parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Applies a patch document of the request's content type to `cur`.
fn apply_patch(cur: &Value, parts: &Parts, body: &[u8]) -> Result<Value, KErr> {
    let ct = content_type(parts);
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| KErr::bad_request(format!("error decoding patch: {e}")))?;
    let mut next = cur.clone();
    match ct.as_str() {
        "application/merge-patch+json" => json::merge_patch(&mut next, &patch),
        "application/strategic-merge-patch+json" => json::strategic_patch(&mut next, &patch),
        "application/json-patch+json" => {
            json::json_patch(&mut next, &patch).map_err(|e| KErr::new(422, "Invalid", e))?
        }
        "application/apply-patch+yaml" => {
            return Err(KErr::new(
                415,
                "UnsupportedMediaType",
                "server-side apply is served on objects, not on their subresources",
            ));
        }
        other => {
            return Err(KErr::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
                ),
            ));
        }
    }
    Ok(next)
}

/// A server-side apply: the object as `ssa::apply` makes it, created when there is none.
fn server_side_apply(
    shared: &Shared,
    call: &mut Call,
    q: &Query,
    body: &[u8],
) -> Result<(u16, Value), KErr> {
    let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()) else {
        return Err(KErr::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    };
    let force = q.get("force").is_some_and(|f| f == "true");
    let applied: Value = serde_json::from_slice(body).map_err(|e| {
        KErr::bad_request(format!(
            "error decoding YAML: this local apiserver reads apply patches written as JSON (as kubectl sends them): {e}"
        ))
    })?;
    check_kind(call.res, &applied)?;
    strict_fields(call, &applied)?;
    let name = call.name.clone().unwrap_or_default();
    if applied["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n != name)
    {
        return Err(KErr::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let cur = shared
        .lock()
        .get(call.res.plural, ns_of(call), &name)
        .cloned();
    let api_version = call.res.api_version();
    let made = crate::ssa::apply(
        cur.as_ref().unwrap_or(&json!({})),
        &applied,
        manager,
        api_version,
        force,
    )
    .map_err(|conflicts| {
        KErr::new(
            409,
            "Conflict",
            crate::ssa::conflict_message(&conflicts, api_version),
        )
    })?;
    match cur {
        None => {
            let mut obj = made;
            let managed = obj["metadata"]["managedFields"].take();
            obj["metadata"]["name"] = Value::from(name);
            create_object(shared, call, obj, Some(managed))
        }
        Some(_) => {
            call.applying = true;
            update(shared, call, made, true)
        }
    }
}

fn patch(
    shared: &Shared,
    call: &mut Call,
    parts: &Parts,
    body: &[u8],
) -> Result<(u16, Value), KErr> {
    let name = call.name.clone().unwrap_or_default();
    let cur = shared
        .lock()
        .get(call.res.plural, ns_of(call), &name)
        .cloned()
        .ok_or_else(|| KErr::not_found(call.res, &name))?;
    let next = apply_patch(&cur, parts, body)?;
    // A resourceVersion in the patch is a precondition.
    let want = next["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if !want.is_empty() && want != cur["metadata"]["resourceVersion"].as_str().unwrap_or("") {
        return Err(KErr::conflict(call.res, &name));
    }
    update(shared, call, next, true)
}

fn scale_of(res: &Res, obj: &Value) -> Value {
    let sel = Selector::from_label_selector(&obj["spec"]["selector"]).to_string();
    let m = &obj["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(if res.plural == "deployments" { 1 } else { 0 })},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": sel},
    })
}

fn scale_get(shared: &Shared, call: &Call) -> Result<(u16, Value), KErr> {
    let name = call.name.as_deref().unwrap_or("");
    let st = shared.lock();
    let obj = st
        .get(call.res.plural, ns_of(call), name)
        .ok_or_else(|| KErr::not_found(call.res, name))?;
    Ok((200, scale_of(call.res, obj)))
}

fn scale_write(
    shared: &Shared,
    call: &Call,
    parts: &Parts,
    body: &[u8],
) -> Result<(u16, Value), KErr> {
    let name = call.name.clone().unwrap_or_default();
    let cur = shared
        .lock()
        .get(call.res.plural, ns_of(call), &name)
        .cloned()
        .ok_or_else(|| KErr::not_found(call.res, &name))?;
    let scale = scale_of(call.res, &cur);
    let next = if call.verb == "patch" {
        apply_patch(&scale, parts, body)?
    } else {
        parse_body(body)?
    };
    let want = next["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if !want.is_empty() && want != cur["metadata"]["resourceVersion"].as_str().unwrap_or("") {
        return Err(KErr::conflict(call.res, &name));
    }
    let replicas = next["spec"]["replicas"].as_i64().unwrap_or(0);
    if replicas < 0 {
        return Err(KErr::invalid(
            call.res,
            &name,
            &[FieldErr::invalid(
                "spec.replicas",
                replicas.to_string(),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let mut obj = cur.clone();
    obj["spec"]["replicas"] = Value::from(replicas);
    let mut c = Call {
        verb: "update",
        res: call.res,
        ns: call.ns.clone(),
        name: call.name.clone(),
        sub: None,
        dry_run: call.dry_run,
        strict: false,
        manager: call.manager.clone(),
        applying: false,
    };
    let (_, stored) = update(shared, &mut c, obj, true)?;
    Ok((200, scale_of(call.res, &stored)))
}

/// `DeleteOptions` from the body or the query.
fn delete_options(q: &Query, body: &[u8]) -> (Option<i64>, String) {
    let opts: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let grace = opts["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let mut policy = opts["propagationPolicy"]
        .as_str()
        .or(q.get("propagationPolicy").map(String::as_str))
        .unwrap_or("Background")
        .to_string();
    if opts["orphanDependents"] == true || q.get("orphanDependents").is_some_and(|o| o == "true") {
        policy = "Orphan".into();
    }
    (grace, policy)
}

fn delete(shared: &Shared, call: &Call, q: &Query, body: &[u8]) -> Result<(u16, Value), KErr> {
    let name = call.name.clone().unwrap_or_default();
    let (grace, policy) = delete_options(q, body);
    let opts: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut st = shared.lock();
    let cur = st
        .get(call.res.plural, ns_of(call), &name)
        .cloned()
        .ok_or_else(|| KErr::not_found(call.res, &name))?;
    if let Some(uid) = opts["preconditions"]["uid"].as_str()
        && uid != cur["metadata"]["uid"].as_str().unwrap_or("")
    {
        return Err(KErr::conflict(call.res, &name));
    }
    // kubectl sends a delete's options in its body (`DeleteOptions.dryRun`).
    let dry_run = call.dry_run || dry_run_in(&opts);
    let deleted = match dry_run {
        true => graceful_deletion(&cur, call.res.plural, grace),
        false => delete_object(&mut st, call.res.plural, ns_of(call), &name, grace, &policy),
    };
    match deleted {
        Some(pending) => Ok((200, public(call.res, &pending))),
        None => {
            let mut details =
                json!({"name": name, "kind": call.res.plural, "uid": cur["metadata"]["uid"]});
            if !call.res.group.is_empty() {
                details["group"] = Value::from(call.res.group);
            }
            Ok((
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            ))
        }
    }
}

/// Whether `DeleteOptions` ask for a dry run: `dryRun: ["All"]`.
fn dry_run_in(opts: &Value) -> bool {
    opts["dryRun"]
        .as_array()
        .is_some_and(|d| d.iter().any(|v| v == "All"))
}

fn delete_collection(
    shared: &Shared,
    call: &Call,
    q: &Query,
    body: &[u8],
) -> Result<(u16, Value), KErr> {
    let dry_run =
        call.dry_run || dry_run_in(&serde_json::from_slice::<Value>(body).unwrap_or(Value::Null));
    let (labels, fields) = selectors(q)?;
    let (grace, policy) = delete_options(q, body);
    let mut st = shared.lock();
    let names: Vec<(String, String)> = st
        .list(
            call.res.plural,
            if call.res.namespaced {
                call.ns.as_deref()
            } else {
                None
            },
        )
        .into_iter()
        .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
        .map(|o| {
            (
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                o["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut items = Vec::new();
    for (ns, n) in names {
        if let Some(o) = st.get(call.res.plural, &ns, &n).cloned() {
            items.push(o);
        }
        if !dry_run {
            delete_object(&mut st, call.res.plural, &ns, &n, grace, &policy);
        }
    }
    Ok((
        200,
        json!({"kind": format!("{}List", call.res.kind), "apiVersion": call.res.api_version(), "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
    ))
}

/// Deletes an object and, unless `policy` is `Orphan`, what it owns. Returns the object
/// when its deletion is pending (a pod terminating gracefully, a namespace being emptied).
pub fn delete_object(
    st: &mut State,
    resource: &str,
    ns: &str,
    name: &str,
    grace: Option<i64>,
    policy: &str,
) -> Option<Value> {
    let cur = st.get(resource, ns, name)?.clone();
    let uid = cur["metadata"]["uid"].as_str().unwrap_or("").to_string();
    if let Some(pending) = graceful_deletion(&cur, resource, grace) {
        return st.update(resource, ns, name, |o| *o = pending);
    }
    st.remove(resource, ns, name);
    if resource == "pods" {
        return None;
    }
    let children = match resource {
        "deployments" => Some("replicasets"),
        "replicasets" => Some("pods"),
        "services" => {
            engine::release_unused_ports(st);
            None
        }
        _ => None,
    };
    if let Some(child) = children {
        let owned: Vec<String> = st
            .list(child, Some(ns))
            .into_iter()
            .filter(|o| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|r| r["uid"] == uid.as_str()))
            })
            .filter_map(|o| o["metadata"]["name"].as_str().map(String::from))
            .collect();
        for n in owned {
            if policy == "Orphan" {
                st.update(child, ns, &n, |o| {
                    if let Some(a) = o["metadata"]["ownerReferences"].as_array_mut() {
                        a.retain(|r| r["uid"] != uid.as_str());
                    }
                });
            } else {
                delete_object(st, child, ns, &n, None, policy);
            }
        }
    }
    None
}

/// What a deletion that waits makes of the object: a scheduled pod terminating for its
/// grace period, a namespace being emptied. `None`: the object goes at once.
fn graceful_deletion(cur: &Value, resource: &str, grace: Option<i64>) -> Option<Value> {
    let mut next = cur.clone();
    match resource {
        "pods" => {
            let default_grace = cur["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30);
            let grace = grace.unwrap_or(default_grace).max(0);
            let scheduled = cur["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            if grace == 0 || !scheduled {
                return None;
            }
            if cur["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .is_none_or(|prev| prev > grace)
            {
                next["metadata"]["deletionTimestamp"] =
                    Value::from(json::rfc3339(json::now_ms() + grace * 1000));
                next["metadata"]["deletionGracePeriodSeconds"] = Value::from(grace);
            }
            Some(next)
        }
        "namespaces" => {
            if next["metadata"]["deletionTimestamp"].is_null() {
                next["metadata"]["deletionTimestamp"] = Value::from(json::now());
            }
            next["status"]["phase"] = Value::from("Terminating");
            Some(next)
        }
        _ => None,
    }
}

fn normalize_secret(obj: &mut Value) -> Result<(), KErr> {
    if let Some(m) = obj["data"].as_object() {
        for (k, v) in m {
            if v.as_str().and_then(json::b64decode).is_none() && !v.is_null() {
                return Err(KErr::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data[{k:?}]"
                )));
            }
        }
    }
    if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
        && let Some(m) = sd.as_object()
    {
        if !obj["data"].is_object() {
            obj["data"] = json!({});
        }
        for (k, v) in m {
            obj["data"][k] = Value::from(json::b64encode(v.as_str().unwrap_or("").as_bytes()));
        }
    }
    if obj["type"].as_str().is_none_or(str::is_empty) {
        obj["type"] = Value::from("Opaque");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Defaulting

fn set_default(v: &mut Value, key: &str, default: Value) {
    if v.get(key).is_none_or(Value::is_null) {
        v[key] = default;
    }
}

fn default_probe(p: &mut Value) {
    if !p.is_object() {
        return;
    }
    set_default(p, "timeoutSeconds", json!(1));
    set_default(p, "periodSeconds", json!(10));
    set_default(p, "successThreshold", json!(1));
    set_default(p, "failureThreshold", json!(3));
    if p["httpGet"].is_object() {
        set_default(&mut p["httpGet"], "scheme", json!("HTTP"));
        set_default(&mut p["httpGet"], "path", json!("/"));
    }
}

pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let image = c["image"].as_str().unwrap_or("").to_string();
            let tag = image
                .rsplit('/')
                .next()
                .unwrap_or("")
                .split_once(':')
                .map(|(_, t)| t.to_string());
            let always = !image.contains('@') && tag.as_deref().is_none_or(|t| t == "latest");
            set_default(
                c,
                "imagePullPolicy",
                json!(if always { "Always" } else { "IfNotPresent" }),
            );
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            set_default(c, "resources", json!({}));
            for p in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                set_default(p, "protocol", json!("TCP"));
            }
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                if let Some(p) = c.get_mut(probe) {
                    default_probe(p);
                }
            }
        }
    }
}

fn default_object(resource: &str, obj: &mut Value) {
    match resource {
        "deployments" => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(spec, "strategy", json!({"type": "RollingUpdate"}));
            set_default(&mut spec["strategy"], "type", json!("RollingUpdate"));
            if spec["strategy"]["type"] == "RollingUpdate" {
                set_default(&mut spec["strategy"], "rollingUpdate", json!({}));
                set_default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxSurge",
                    json!("25%"),
                );
                set_default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
            }
            default_template(spec);
        }
        "replicasets" => {
            let spec = &mut obj["spec"];
            if spec.is_object() {
                set_default(spec, "replicas", json!(1));
                default_template(spec);
            }
        }
        "pods" => default_pod_spec(&mut obj["spec"]),
        "services" => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            spec["clusterIP"] = json!("127.0.0.1");
            spec["clusterIPs"] = json!(["127.0.0.1"]);
            set_default(spec, "ipFamilies", json!(["IPv4"]));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
                set_default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if spec["type"] == "LoadBalancer" {
                set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
            }
            for p in spec
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                set_default(p, "protocol", json!("TCP"));
                let port = p["port"].clone();
                set_default(p, "targetPort", port);
            }
        }
        _ => {}
    }
}

fn default_template(spec: &mut Value) {
    if !spec["template"].is_object() {
        return;
    }
    if !spec["template"]["metadata"].is_object() {
        spec["template"]["metadata"] = json!({});
    }
    set_default(
        &mut spec["template"]["metadata"],
        "creationTimestamp",
        Value::Null,
    );
    default_pod_spec(&mut spec["template"]["spec"]);
}

// ---------------------------------------------------------------------------------------
// Validation

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label)
}

fn is_dns1035(s: &str) -> bool {
    is_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn q(s: &str) -> String {
    Value::from(s).to_string()
}

fn check_name(errs: &mut Vec<FieldErr>, field: &str, name: &str, kind: &str) {
    let (ok, msg, max) = match kind {
        "label" => (is_label(name), LABEL_MSG, 63),
        "dns1035" => (is_dns1035(name), DNS1035_MSG, 63),
        _ => (is_subdomain(name), SUBDOMAIN_MSG, 253),
    };
    if name.len() > max {
        errs.push(FieldErr::invalid(
            field,
            q(name),
            format!("must be no more than {max} characters"),
        ));
    } else if !ok {
        errs.push(FieldErr::invalid(field, q(name), msg));
    }
}

fn validate_pod_spec(errs: &mut Vec<FieldErr>, spec: &Value, at: &str) {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        errs.push(FieldErr::required(format!("{at}.containers")));
    }
    let mut seen = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let f = format!("{at}.containers[{i}]");
        match c["name"].as_str().filter(|n| !n.is_empty()) {
            None => errs.push(FieldErr::required(format!("{f}.name"))),
            Some(n) => {
                check_name(errs, &format!("{f}.name"), n, "label");
                if seen.contains(&n) {
                    errs.push(FieldErr {
                        field: format!("{f}.name"),
                        kind: "Duplicate",
                        value: q(n),
                        detail: String::new(),
                    });
                }
                seen.push(n);
            }
        }
        if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
            errs.push(FieldErr::required(format!("{f}.image")));
        }
        for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
            let port = p["containerPort"].as_i64().unwrap_or(0);
            if !(1..=65535).contains(&port) {
                errs.push(FieldErr::invalid(
                    format!("{f}.ports[{j}].containerPort"),
                    port.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        for (j, e) in c["env"].as_array().into_iter().flatten().enumerate() {
            if e["name"].as_str().is_none_or(str::is_empty) {
                errs.push(FieldErr::required(format!("{f}.env[{j}].name")));
            }
        }
    }
    if let Some(p) = spec["restartPolicy"].as_str()
        && !matches!(p, "Always" | "OnFailure" | "Never")
    {
        errs.push(FieldErr {
            field: format!("{at}.restartPolicy"),
            kind: "Unsupported",
            value: q(p),
            detail: "supported values: \"Always\", \"OnFailure\", \"Never\"".into(),
        });
    }
}

fn go_label_selector(v: &Value) -> String {
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}",
        if v["matchLabels"].is_object() {
            json::go_map(&v["matchLabels"])
        } else {
            "map[string]string(nil)".into()
        }
    )
}

fn validate_workload(errs: &mut Vec<FieldErr>, obj: &Value, old: Option<&Value>) {
    let spec = &obj["spec"];
    let replicas = spec["replicas"].as_i64().unwrap_or(0);
    if replicas < 0 {
        errs.push(FieldErr::invalid(
            "spec.replicas",
            replicas.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    let sel = &spec["selector"];
    if !sel.is_object() {
        errs.push(FieldErr::required("spec.selector"));
    } else {
        let s = Selector::from_label_selector(sel);
        if s.is_empty() {
            errs.push(FieldErr::invalid(
                "spec.selector",
                go_label_selector(sel),
                "empty selector is invalid for deployment",
            ));
        } else if !s.matches(&spec["template"]["metadata"]["labels"]) {
            errs.push(FieldErr::invalid(
                "spec.template.metadata.labels",
                json::go_map(&spec["template"]["metadata"]["labels"]),
                "`selector` does not match template `labels`",
            ));
        }
        if let Some(old) = old
            && old["spec"]["selector"] != *sel
        {
            errs.push(FieldErr::invalid(
                "spec.selector",
                go_label_selector(sel),
                "field is immutable",
            ));
        }
    }
    if !spec["template"].is_object() {
        errs.push(FieldErr::required("spec.template"));
        return;
    }
    validate_pod_spec(errs, &spec["template"]["spec"], "spec.template.spec");
    if obj["kind"] == "Deployment" {
        if let Some(p) = spec["template"]["spec"]["restartPolicy"].as_str()
            && p != "Always"
        {
            errs.push(FieldErr {
                field: "spec.template.spec.restartPolicy".into(),
                kind: "Unsupported",
                value: q(p),
                detail: "supported values: \"Always\"".into(),
            });
        }
        match spec["strategy"]["type"].as_str() {
            Some("RollingUpdate" | "Recreate") => {}
            other => errs.push(FieldErr {
                field: "spec.strategy.type".into(),
                kind: "Unsupported",
                value: q(other.unwrap_or("")),
                detail: "supported values: \"Recreate\", \"RollingUpdate\"".into(),
            }),
        }
        if spec["strategy"]["type"] == "Recreate" && spec["strategy"]["rollingUpdate"].is_object() {
            errs.push(FieldErr {
                field: "spec.strategy.rollingUpdate".into(),
                kind: "Forbidden",
                value: String::new(),
                detail: "may not be specified when strategy `type` is 'Recreate'".into(),
            });
        }
        let ru = &spec["strategy"]["rollingUpdate"];
        let (s, u) = (
            crate::controller::int_or_percent(&ru["maxSurge"], replicas, true),
            crate::controller::int_or_percent(&ru["maxUnavailable"], replicas, false),
        );
        if spec["strategy"]["type"] == "RollingUpdate"
            && ru["maxSurge"].as_i64() == Some(0)
            && ru["maxUnavailable"].as_i64() == Some(0)
            && s == 0
            && u == 0
        {
            errs.push(FieldErr::invalid(
                "spec.strategy.rollingUpdate.maxUnavailable",
                "0",
                "may not be 0 when `maxSurge` is 0",
            ));
        }
        if let (Some(d), Some(m)) = (
            spec["progressDeadlineSeconds"].as_i64(),
            spec["minReadySeconds"].as_i64(),
        ) && d <= m
        {
            errs.push(FieldErr::invalid(
                "spec.progressDeadlineSeconds",
                d.to_string(),
                "must be greater than minReadySeconds",
            ));
        }
    }
}

fn validate(resource: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldErr> {
    let mut errs = Vec::new();
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let kind = match resource {
        "namespaces" => "label",
        "services" => "dns1035",
        _ => "subdomain",
    };
    if old.is_none() {
        check_name(&mut errs, "metadata.name", name, kind);
    }
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            let v = v.as_str().unwrap_or("");
            if v.len() > 63
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                errs.push(FieldErr::invalid(
                    "metadata.labels",
                    q(v),
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                ));
            }
            if k.is_empty() {
                errs.push(FieldErr::invalid(
                    "metadata.labels",
                    q(k),
                    "name part must be non-empty",
                ));
            }
        }
    }
    match resource {
        "deployments" | "replicasets" => validate_workload(&mut errs, obj, old),
        "pods" => validate_pod_spec(&mut errs, &obj["spec"], "spec"),
        "configmaps" => {
            for (k, v) in obj["data"].as_object().into_iter().flatten() {
                if k.is_empty()
                    || k.len() > 253
                    || !k
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    errs.push(FieldErr::invalid(
                        format!("data[{k}]"),
                        q(k),
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    ));
                }
                if !v.is_string() {
                    errs.push(FieldErr::invalid(
                        format!("data[{k}]"),
                        v.to_string(),
                        "must be a string",
                    ));
                }
            }
        }
        "services" => {
            let spec = &obj["spec"];
            let t = spec["type"].as_str().unwrap_or("ClusterIP");
            if !matches!(
                t,
                "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
            ) {
                errs.push(FieldErr {
                    field: "spec.type".into(),
                    kind: "Unsupported",
                    value: q(t),
                    detail: "supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".into(),
                });
            }
            let ports = spec["ports"].as_array().cloned().unwrap_or_default();
            if ports.is_empty() && t != "ExternalName" {
                errs.push(FieldErr::required("spec.ports"));
            }
            for (i, p) in ports.iter().enumerate() {
                let port = p["port"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    errs.push(FieldErr::invalid(
                        format!("spec.ports[{i}].port"),
                        port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                if ports.len() > 1 && p["name"].as_str().is_none_or(str::is_empty) {
                    errs.push(FieldErr::required(format!("spec.ports[{i}].name")));
                }
            }
        }
        _ => {}
    }
    errs
}

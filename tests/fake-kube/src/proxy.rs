//! The `proxy` subresources: `GET …/pods/{name}[:{port}]/proxy/{path}` and
//! `GET …/services/{name}[:{port}]/proxy/{path}`. As in the apiserver the name is resolved
//! to one pod address (a Service's through its ready endpoints, as `ResourceLocation`
//! does), the GET goes there (here: through the loopback port the engine published for the
//! container) and the container's status, headers and body are the answer. What cannot be
//! reached answers the apiserver's `Status`: 503 ServiceUnavailable `error trying to reach
//! service: dial tcp …`. Not modelled: `https:` targets, rewriting links in HTML answers,
//! methods other than GET (405).

use std::io::ErrorKind;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::request::Parts;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::{Call, KErr, Res};
use crate::json::Selector;
use crate::store::State;
use crate::{Reply, Shared, engine};

/// Headers that belong to one connection and are not forwarded either way.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Where a proxied GET goes.
struct Target {
    /// `podIP:port`, as the apiserver dials it and names it in errors.
    shown: String,
    /// The address that reaches it from here, or the dial error.
    addr: Result<(String, u16), String>,
    /// The container's own address on the engine's network (to tell a refused connection
    /// from an empty answer: the engine's port forwarder accepts and then hangs up).
    direct: Option<(String, u16)>,
}

pub async fn get(shared: &Shared, call: &Call, parts: &Parts) -> Reply {
    let (Some(ns), Some(id)) = (call.ns.as_deref(), call.name.as_deref()) else {
        return KErr::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .reply();
    };
    let target = {
        let mut st = shared.lock();
        if call.res.plural == "pods" {
            pod_target(&st, ns, id)
        } else {
            service_target(&mut st, ns, id)
        }
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return e.reply(),
    };
    // The path after `proxy` as the client sent it (escaped, trailing slash kept).
    let raw = parts.uri.path();
    let marker = format!("/{}/{id}/proxy", call.res.plural);
    let rest = raw.find(&marker).map_or("", |i| &raw[i + marker.len()..]);
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    if rest.is_empty() {
        // The apiserver sends the proxy's root to `…/proxy/` (kubernetes issue 4958).
        return hyper::Response::builder()
            .status(301)
            .header(hyper::header::LOCATION, format!("{raw}/{query}"))
            .body(Full::new(Bytes::new()).boxed())
            .expect("a valid response");
    }
    match forward(&target, &format!("{rest}{query}"), parts).await {
        Ok(r) => r,
        Err(e) => KErr::new(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: {e}"),
        )
        .reply(),
    }
}

fn q(s: &str) -> String {
    Value::from(s).to_string()
}

/// `name`, `name:port` or `scheme:name:port`, as `utilnet.SplitSchemeNamePort` reads them.
fn split_id(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [n] => ("", *n, ""),
        [n, p] => ("", *n, *p),
        [s, n, p] => (*s, *n, *p),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

fn pod_target(st: &State, ns: &str, id: &str) -> Result<Target, KErr> {
    let (scheme, name, port) =
        split_id(id).ok_or_else(|| KErr::bad_request(format!("invalid pod request {}", q(id))))?;
    let pod = st
        .get("pods", ns, name)
        .ok_or_else(|| KErr::not_found(Res::by_plural("pods"), name))?;
    if pod["status"]["podIP"].as_str().is_none_or(str::is_empty) {
        return Err(KErr::bad_request("address not allowed"));
    }
    // No port: the first one a container declares (else HTTP's own). The apiserver does
    // not look container port names up (a TODO in the pod registry's `ResourceLocation`):
    // it dials `podIP:name`, a host no resolver knows.
    let port = match port {
        "" => Ok(pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|c| c["ports"][0]["containerPort"].as_u64())
            .map_or(80, |p| p as u16)),
        p if p.bytes().all(|b| b.is_ascii_digit()) => p
            .parse::<u16>()
            .map_err(|_| format!("dial tcp: address {p}: invalid port")),
        p => Err(format!(
            "dial tcp: lookup {}:{p}: no such host",
            pod["status"]["podIP"].as_str().unwrap_or("")
        )),
    };
    Ok(target(st, pod, scheme, port))
}

fn service_target(st: &mut State, ns: &str, id: &str) -> Result<Target, KErr> {
    let (scheme, name, port) = split_id(id)
        .ok_or_else(|| KErr::bad_request(format!("invalid service request {}", q(id))))?;
    let svc = st.get("services", ns, name).cloned();
    // A port number stands for the Service port with that number (looked up on the
    // Service); a name is the Service port's name; none is the unnamed port.
    let port_name = match port.parse::<i64>() {
        Ok(n) => {
            let svc = svc
                .as_ref()
                .ok_or_else(|| KErr::not_found(Res::by_plural("services"), name))?;
            let p = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["port"].as_i64() == Some(n));
            let p = p.ok_or_else(|| {
                KErr::new(
                    503,
                    "ServiceUnavailable",
                    format!("no service port {n} found for service {}", q(name)),
                )
            })?;
            p["name"].as_str().unwrap_or("").to_string()
        }
        Err(_) => port.to_string(),
    };
    // Then the apiserver reads the Service's Endpoints, which only a Service with a
    // selector gets from the endpoints controller.
    let Some(svc) = svc.filter(|s| !Selector::from_map(&s["spec"]["selector"]).is_empty()) else {
        let mut e = KErr::new(404, "NotFound", format!("endpoints {} not found", q(name)));
        e.details = Some(json!({"name": name, "kind": "endpoints"}));
        return Err(e);
    };
    if engine::selected_pods(st, &svc).is_empty() {
        return Err(KErr::new(
            503,
            "ServiceUnavailable",
            format!("no endpoints available for service {}", q(name)),
        ));
    }
    let sport = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str().unwrap_or("") == port_name)
        .cloned();
    let Some((pod, container_port)) = sport.and_then(|p| engine::next_endpoint(st, &svc, &p))
    else {
        return Err(KErr::new(
            503,
            "ServiceUnavailable",
            format!("no endpoints available for service {}", q(id)),
        ));
    };
    Ok(target(st, &pod, scheme, Ok(container_port)))
}

fn target(st: &State, pod: &Value, scheme: &str, port: Result<u16, String>) -> Target {
    let ip = pod["status"]["podIP"].as_str().unwrap_or("127.0.0.1");
    let shown = format!("{ip}:{}", port.as_ref().map_or(0, |p| *p));
    let direct = port.as_ref().ok().and_then(|p| {
        Some((
            st.runtime
                .get(pod["metadata"]["uid"].as_str()?)?
                .ip
                .clone()?,
            *p,
        ))
    });
    let addr = port.and_then(|p| {
        if scheme == "https" {
            return Err("fake-kube does not proxy https to pods".into());
        }
        engine::reach(st, pod, p)
            .ok_or_else(|| format!("dial tcp {ip}:{p}: connect: connection refused"))
    });
    Target {
        shown,
        addr,
        direct,
    }
}

/// The GET the apiserver's proxy sends to the pod, and the container's answer as the
/// reply; the error is what follows `error trying to reach service: `.
async fn forward(t: &Target, path: &str, parts: &Parts) -> Result<Reply, String> {
    let (host, port) = t.addr.clone()?;
    let refused = || format!("dial tcp {}: connect: connection refused", t.shown);
    let mut s = match tokio::time::timeout(
        Duration::from_secs(30),
        TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => return Err(refused()),
        Ok(Err(e)) => return Err(format!("dial tcp {}: {e}", t.shown)),
        Err(_) => return Err(format!("dial tcp {}: i/o timeout", t.shown)),
    };
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", t.shown);
    for (k, v) in &parts.headers {
        if HOP.contains(&k.as_str())
            || k == hyper::header::HOST
            || k == hyper::header::AUTHORIZATION
        {
            continue;
        }
        if let Ok(v) = v.to_str() {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    let api_host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    head.push_str(&format!("X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: {api_host}\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Uri: {}\r\nConnection: close\r\n\r\n", parts.uri.path()));
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("write tcp {}: {e}", t.shown))?;

    // The head.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if buf.is_empty() && e.kind() == ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(format!("read tcp {}: {e}", t.shown)),
        };
        if n == 0 && buf.is_empty() {
            // The engine's forwarder accepts even when nothing listens in the container.
            let refused_inside = match &t.direct {
                Some((ip, p)) => {
                    matches!(tokio::time::timeout(Duration::from_secs(1), TcpStream::connect((ip.as_str(), *p))).await, Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused)
                }
                None => false,
            };
            return Err(if refused_inside {
                refused()
            } else {
                "EOF".into()
            });
        }
        if n == 0 {
            return Err("unexpected EOF".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("malformed HTTP response")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };

    // The body: none, chunked, sized or up to the end.
    let mut body = buf[end + 4..].to_vec();
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
    let body = if matches!(status, 100..=199 | 204 | 304) {
        Vec::new()
    } else {
        loop {
            if chunked && let Some(b) = dechunk(&body) {
                break b;
            }
            if let Some(l) = length.filter(|_| !chunked)
                && body.len() >= l
            {
                body.truncate(l);
                break body;
            }
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read tcp {}: {e}", t.shown))?;
            if n == 0 {
                // Cut short: what came (the apiserver has sent the head by then).
                break if chunked {
                    dechunk_partial(&body)
                } else {
                    body
                };
            }
            body.extend_from_slice(&chunk[..n]);
        }
    };
    let mut r = hyper::Response::builder().status(status);
    for (k, v) in &headers {
        if !HOP.contains(&k.to_ascii_lowercase().as_str()) {
            r = r.header(k.as_str(), v.as_str());
        }
    }
    if header("content-type").is_none() && !body.is_empty() {
        // Go's server sniffs a type for an answer that names none.
        r = r.header(hyper::header::CONTENT_TYPE, sniff(&body));
    }
    r.body(Full::new(Bytes::from(body)).boxed())
        .map_err(|e| format!("malformed HTTP response: {e}"))
}

/// A whole chunked body, decoded; `None` until its last chunk came.
fn dechunk(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = raw;
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..eol])
            .ok()?
            .split(';')
            .next()?
            .trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if rest.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The complete chunks of a chunked body that ended early.
fn dechunk_partial(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let Some(size) = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
        else {
            break;
        };
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    out
}

/// The gist of Go's `http.DetectContentType` for what test servers answer.
fn sniff(body: &[u8]) -> &'static str {
    let start = String::from_utf8_lossy(&body[..body.len().min(512)])
        .trim_start()
        .to_ascii_lowercase();
    if start.starts_with("<!doctype html")
        || start.starts_with("<html")
        || start.starts_with("<head")
        || start.starts_with("<body")
    {
        "text/html; charset=utf-8"
    } else if std::str::from_utf8(body).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

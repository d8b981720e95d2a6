//! ConfigMaps are served as the real apiserver serves them (core/v1, the verbs of
//! Secrets): create, get, list, update with a `resourceVersion` (409 on a stale one),
//! patch, delete, and gone with their namespace.

use std::io::{Read, Write};
use std::net::TcpStream;

use pym_fake_kube::{FakeKube, Options};
use serde_json::{Value, json};

/// One request, answered with its status and JSON body.
fn call(fake: &FakeKube, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    call_as(fake, method, path, body, "application/json")
}

fn call_as(
    fake: &FakeKube,
    method: &str,
    path: &str,
    body: Option<&Value>,
    content_type: &str,
) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", fake.port)).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    // A chunked body: the JSON sits between the chunk sizes.
    let json_text = match head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        true => {
            let mut out = String::new();
            let mut rest = rest;
            while let Some((size, after)) = rest.split_once("\r\n") {
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                if n == 0 {
                    break;
                }
                out.push_str(&after[..n]);
                rest = &after[n + 2..];
            }
            out
        }
        false => rest.to_string(),
    };
    (
        status,
        serde_json::from_str(&json_text).unwrap_or(Value::Null),
    )
}

#[test]
fn configmaps_are_served_as_core_v1_serves_them() {
    let fake = FakeKube::start(Options::default()).unwrap();
    let ns = "cm-test";
    let (code, _) = call(
        &fake,
        "POST",
        "/api/v1/namespaces",
        Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
    );
    assert_eq!(code, 201);
    let (_, discovery) = call(&fake, "GET", "/api/v1", None);
    assert!(
        discovery["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "configmaps" && r["kind"] == "ConfigMap"),
        "{discovery}"
    );

    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    let (code, made) = call(
        &fake,
        "POST",
        &base,
        Some(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rec"}, "data": {"history": "live@v1@1"}}),
        ),
    );
    assert_eq!(code, 201, "{made}");
    assert!(made["metadata"]["resourceVersion"].is_string(), "{made}");
    assert!(
        made.get("status").is_none(),
        "a ConfigMap has no status: {made}"
    );
    let (code, again) = call(
        &fake,
        "POST",
        &base,
        Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rec"}})),
    );
    assert_eq!(
        (code, again["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    let (code, got) = call(&fake, "GET", &format!("{base}/rec"), None);
    assert_eq!(
        (code, got["data"]["history"].as_str()),
        (200, Some("live@v1@1"))
    );
    let (code, list) = call(&fake, "GET", &base, None);
    assert_eq!((code, list["kind"].as_str()), (200, Some("ConfigMapList")));
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // An update carries the resourceVersion read; a stale one is a Conflict.
    let mut next = got.clone();
    next["data"]["history"] = json!("live@v1@1 live@v2@2");
    let (code, updated) = call(&fake, "PUT", &format!("{base}/rec"), Some(&next));
    assert_eq!(code, 200, "{updated}");
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        got["metadata"]["resourceVersion"]
    );
    let (code, stale) = call(&fake, "PUT", &format!("{base}/rec"), Some(&next));
    assert_eq!(
        (code, stale["reason"].as_str()),
        (409, Some("Conflict")),
        "{stale}"
    );

    // Keys are config keys; values are strings.
    let (code, bad) = call(
        &fake,
        "POST",
        &base,
        Some(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad"}, "data": {"no/slash": "x"}}),
        ),
    );
    assert_eq!(
        (code, bad["reason"].as_str()),
        (422, Some("Invalid")),
        "{bad}"
    );

    let (code, patched) = call_as(
        &fake,
        "PATCH",
        &format!("{base}/rec"),
        Some(&json!({"data": {"other": "y"}})),
        "application/merge-patch+json",
    );
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["data"]["other"], "y");
    assert_eq!(patched["data"]["history"], "live@v1@1 live@v2@2");

    let (code, _) = call(&fake, "DELETE", &format!("{base}/rec"), None);
    assert_eq!(code, 200);
    let (code, gone) = call(&fake, "GET", &format!("{base}/rec"), None);
    assert_eq!((code, gone["reason"].as_str()), (404, Some("NotFound")));

    // Deleting the namespace deletes its ConfigMaps.
    call(
        &fake,
        "POST",
        &base,
        Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rec"}})),
    );
    let (code, _) = call(&fake, "DELETE", &format!("/api/v1/namespaces/{ns}"), None);
    assert!(code == 200 || code == 202, "{code}");
    for _ in 0..50 {
        if call(&fake, "GET", &format!("{base}/rec"), None).0 == 404 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the namespace's ConfigMap outlived it");
}

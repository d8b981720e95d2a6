//! OpenAPI v3 (`/openapi/v3` and one document per group version) for the kinds served,
//! generated from the same field tables the protobuf decoder reads (`proto_schema`): each
//! kind's schema (fields, types, no descriptions) tagged with its group, version and kind,
//! and each resource's paths with the query parameters the apiserver takes. What kubectl
//! 1.32 reads it for: whether a kind's PATCH takes `fieldValidation` (then `kubectl apply`
//! leaves validation to the server, which checks unknown fields: [`unknown_fields`]), and
//! `kubectl explain`.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::api::{GROUPS, RESOURCES, Res, group_version};
use crate::proto_schema::{self, F, Ty};

/// A field's schema.
fn schema(ty: Ty, repeated: bool) -> Value {
    let one = match ty {
        Ty::Str => json!({"type": "string"}),
        Ty::Int => json!({"type": "integer", "format": "int64"}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::Bytes => json!({"type": "string", "format": "byte"}),
        Ty::Msg(t) => object(t),
        Ty::MapStr => {
            json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}})
        }
        Ty::MapBytes => {
            json!({"type": "object", "additionalProperties": {"type": "string", "format": "byte"}})
        }
        Ty::MapMsg(t) => json!({"type": "object", "additionalProperties": object(t)}),
        Ty::Time => json!({"type": "string", "format": "date-time"}),
        Ty::Quantity => {
            json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]})
        }
        Ty::IntOrString => {
            json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}], "format": "int-or-string"})
        }
        Ty::Raw => json!({"type": "object"}),
    };
    match repeated {
        true => json!({"type": "array", "items": one}),
        false => one,
    }
}

/// A message's schema: its fields (an inline struct's merged in), or the value of a
/// one-field message of an unnamed scalar.
fn object(table: &[F]) -> Value {
    if let [only] = table
        && only.name.is_empty()
        && !matches!(only.ty, Ty::Msg(_))
    {
        return schema(only.ty, false);
    }
    let mut props = Map::new();
    for f in table {
        match (f.name.is_empty(), f.ty) {
            (true, Ty::Msg(inner)) => {
                if let Some(p) = object(inner)["properties"].as_object() {
                    props.extend(p.clone());
                }
            }
            _ => {
                props.insert(f.name.to_string(), schema(f.ty, f.repeated));
            }
        }
    }
    json!({"type": "object", "properties": props})
}

/// The name the apiserver's OpenAPI gives a kind's schema.
fn schema_name(res: &Res) -> String {
    let package = match res.group {
        "" => "core",
        "discovery.k8s.io" => "discovery",
        g => g,
    };
    format!("io.k8s.api.{package}.v1.{}", res.kind)
}

fn table_of(res: &Res) -> Option<&'static [F]> {
    proto_schema::of(group_version(res.group), res.kind)
}

/// `api/v1`, `apis/apps/v1`: a group version's key in `/openapi/v3`.
fn key(group: &str) -> String {
    match group {
        "" => "api/v1".to_string(),
        g => format!("apis/{g}/v1"),
    }
}

/// The query parameters of a resource's writes, as the apiserver documents them.
fn write_params(patch: bool) -> Vec<Value> {
    let q = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let mut p = vec![q("dryRun"), q("fieldManager"), q("fieldValidation")];
    if patch {
        p.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    p
}

/// A group version's OpenAPI document.
fn document(group: &str) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for res in RESOURCES.iter().filter(|r| r.group == group) {
        let Some(table) = table_of(res) else {
            continue;
        };
        let name = schema_name(res);
        let gvk = json!([{"group": res.group, "kind": res.kind, "version": "v1"}]);
        let mut s = object(table);
        s["properties"]["kind"] = json!({"type": "string"});
        s["properties"]["apiVersion"] = json!({"type": "string"});
        s["x-kubernetes-group-version-kind"] = gvk.clone();
        schemas.insert(name.clone(), s);
        let body = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}});
        let op = |verb: &str, action: &str, params: Vec<Value>| {
            let mut o = json!({
                "operationId": format!("{verb}{}", res.kind),
                "parameters": params,
                "responses": {"200": body.clone()},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk[0].clone(),
            });
            if matches!(action, "post" | "put" | "patch") {
                o["requestBody"] = body.clone();
            }
            o
        };
        let base = match (group, res.namespaced) {
            ("", true) => format!("/api/v1/namespaces/{{namespace}}/{}", res.plural),
            ("", false) => format!("/api/v1/{}", res.plural),
            (g, true) => format!("/apis/{g}/v1/namespaces/{{namespace}}/{}", res.plural),
            (g, false) => format!("/apis/{g}/v1/{}", res.plural),
        };
        paths.insert(
            base.clone(),
            json!({"get": op("list", "list", vec![]), "post": op("create", "post", write_params(false))}),
        );
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": op("read", "get", vec![]),
                "put": op("replace", "put", write_params(false)),
                "patch": op("patch", "patch", write_params(true)),
                "delete": op("delete", "delete", vec![json!({"name": "dryRun", "in": "query", "schema": {"type": "string"}})]),
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The documents, made once: the index's text and each group version's `(key, text)`.
fn documents() -> &'static (String, Vec<(String, String)>) {
    static DOCS: OnceLock<(String, Vec<(String, String)>)> = OnceLock::new();
    DOCS.get_or_init(|| {
        let docs: Vec<(String, String)> = std::iter::once("")
            .chain(GROUPS.iter().copied())
            .map(|g| (key(g), document(g).to_string()))
            .collect();
        let mut index = Map::new();
        for (k, text) in &docs {
            // The hash the apiserver puts in each document's URL: here, of its text.
            let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            index.insert(
                k.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={hash:016X}")}),
            );
        }
        (json!({"paths": index}).to_string(), docs)
    })
}

/// `/openapi/v3` or `/openapi/v3/<group version>`: the JSON text, if there is one.
pub fn get(path: &str) -> Option<&'static str> {
    let (index, docs) = documents();
    match path.strip_prefix("/openapi/v3")? {
        "" | "/" => Some(index),
        rest => docs
            .iter()
            .find(|(k, _)| rest.strip_prefix('/') == Some(k.as_str()))
            .map(|(_, t)| t.as_str()),
    }
}

/// The fields of `obj` its kind does not have, as the apiserver's strict decoding names
/// them (`spec.replica`, `spec.template.spec.containers[0].imag`).
pub fn unknown_fields(res: &Res, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(table), Some(map)) = (table_of(res), obj.as_object()) {
        let known = |k: &str| matches!(k, "kind" | "apiVersion");
        walk(table, map, "", &known, &mut out);
    }
    out
}

fn walk(
    table: &'static [F],
    obj: &Map<String, Value>,
    at: &str,
    extra: &dyn Fn(&str) -> bool,
    out: &mut Vec<String>,
) {
    let fields = flatten(table);
    for (k, v) in obj {
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        let Some(f) = fields.iter().find(|f| f.name == k) else {
            if !extra(k) {
                out.push(path);
            }
            continue;
        };
        let inner = match f.ty {
            Ty::Msg(t) => Some(t),
            Ty::MapMsg(t) => {
                if let Some(m) = v.as_object() {
                    for (mk, mv) in m {
                        if let Some(o) = mv.as_object() {
                            walk(t, o, &format!("{path}.{mk}"), &|_| false, out);
                        }
                    }
                }
                None
            }
            _ => None,
        };
        let Some(t) = inner else { continue };
        match (f.repeated, v) {
            (true, Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(o) = item.as_object() {
                        walk(t, o, &format!("{path}[{i}]"), &|_| false, out);
                    }
                }
            }
            (false, Value::Object(o)) => walk(t, o, &path, &|_| false, out),
            _ => {}
        }
    }
}

/// A table's fields with its inline structs' merged in.
fn flatten(table: &'static [F]) -> Vec<&'static F> {
    let mut out = Vec::new();
    for f in table {
        match (f.name.is_empty(), f.ty) {
            (true, Ty::Msg(inner)) => out.extend(flatten(inner)),
            _ => out.push(f),
        }
    }
    out
}

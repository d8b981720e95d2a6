//! The protobuf bodies kubectl's typed clients send (`kubectl create deployment`,
//! `kubectl create configmap`, `kubectl expose`, …): the `k8s\0` envelope
//! (`runtime.Unknown`) around an object of a kind the server serves, decoded into the JSON
//! a JSON client would have sent, field by field with the tables of `proto_schema`.
//! Scalars at their zero value are left out unless Go keeps them (pointers, no
//! `omitempty`); inline structs are merged into their parent.

use serde_json::{Map, Value, json};

use crate::json::{b64encode, rfc3339};
use crate::proto_schema::{self, F, Ty};

/// A protobuf field's value by wire type.
enum Field<'a> {
    Varint(u64),
    /// fixed64 or fixed32: no field of the kinds served has one; skipped.
    Fixed,
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn fields(b: &[u8]) -> Option<Vec<(u32, Field<'_>)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let num = u32::try_from(key >> 3).ok()?;
        let value = match key & 7 {
            0 => Field::Varint(varint(b, &mut i)?),
            1 => {
                b.get(i..i + 8)?;
                i += 8;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(b, &mut i)?).ok()?;
                let v = b.get(i..i.checked_add(len)?)?;
                i += len;
                Field::Bytes(v)
            }
            5 => {
                b.get(i..i + 4)?;
                i += 4;
                Field::Fixed
            }
            _ => return None,
        };
        out.push((num, value));
    }
    Some(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A scalar of `ty` from one field, `None` when the wire type does not fit.
fn scalar(ty: Ty, f: &Field<'_>) -> Option<Value> {
    Some(match (ty, f) {
        (Ty::Str, Field::Bytes(b)) => Value::from(text(b)),
        (Ty::Int, Field::Varint(v)) => Value::from(*v as i64),
        (Ty::Bool, Field::Varint(v)) => Value::from(*v != 0),
        (Ty::Bytes, Field::Bytes(b)) => Value::from(b64encode(b)),
        _ => return None,
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

/// A `map<string, V>` entry: its key and its value's field.
fn entry<'a>(b: &'a [u8]) -> Option<(String, Option<Field<'a>>)> {
    let mut key = String::new();
    let mut value = None;
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = text(k),
            (2, f) => value = Some(f),
            _ => {}
        }
    }
    Some((key, value))
}

/// One field's value in JSON.
fn value(ty: Ty, f: &Field<'_>) -> Option<Value> {
    let bytes = || match f {
        Field::Bytes(b) => Some(*b),
        _ => None,
    };
    Some(match ty {
        Ty::Str | Ty::Int | Ty::Bool | Ty::Bytes => scalar(ty, f)?,
        Ty::Msg(table) => message(bytes()?, table)?,
        Ty::MapStr | Ty::MapBytes | Ty::MapMsg(_) => unreachable!("maps are read entry by entry"),
        Ty::Time => {
            let (mut secs, mut nanos) = (0i64, 0i64);
            for (n, f) in fields(bytes()?)? {
                match (n, f) {
                    (1, Field::Varint(v)) => secs = v as i64,
                    (2, Field::Varint(v)) => nanos = v as i64,
                    _ => {}
                }
            }
            match (secs, nanos) {
                (0, 0) => Value::Null,
                _ => Value::from(rfc3339(secs * 1000 + nanos / 1_000_000)),
            }
        }
        Ty::Quantity => {
            let mut q = String::new();
            for (n, f) in fields(bytes()?)? {
                if let (1, Field::Bytes(s)) = (n, f) {
                    q = text(s);
                }
            }
            Value::from(q)
        }
        Ty::IntOrString => {
            let (mut kind, mut int, mut string) = (0, 0i64, String::new());
            for (n, f) in fields(bytes()?)? {
                match (n, f) {
                    (1, Field::Varint(v)) => kind = v,
                    (2, Field::Varint(v)) => int = i64::from(v as i32),
                    (3, Field::Bytes(s)) => string = text(s),
                    _ => {}
                }
            }
            match kind {
                1 => Value::from(string),
                _ => Value::from(int),
            }
        }
        Ty::Raw => {
            let mut raw = &[][..];
            for (n, f) in fields(bytes()?)? {
                if let (1, Field::Bytes(b)) = (n, f) {
                    raw = b;
                }
            }
            serde_json::from_slice(raw).unwrap_or(Value::Null)
        }
    })
}

/// A message as JSON: an object, or the value of a one-field message of an unnamed scalar
/// (a Quantity in a map).
fn message(b: &[u8], table: &[F]) -> Option<Value> {
    if let [only] = table
        && only.name.is_empty()
        && !matches!(only.ty, Ty::Msg(_))
    {
        let mut out = Value::Null;
        for (n, f) in fields(b)? {
            if n == only.num {
                out = value(only.ty, &f)?;
            }
        }
        return Some(out);
    }
    let mut obj = Map::new();
    for (n, f) in fields(b)? {
        let Some(spec) = table.iter().find(|s| s.num == n) else {
            continue;
        };
        match spec.ty {
            Ty::MapStr | Ty::MapBytes | Ty::MapMsg(_) => {
                let Field::Bytes(e) = f else { return None };
                let (k, v) = entry(e)?;
                let v = match (spec.ty, v) {
                    (_, None) => Value::from(""),
                    (Ty::MapStr, Some(f)) => scalar(Ty::Str, &f)?,
                    (Ty::MapBytes, Some(f)) => scalar(Ty::Bytes, &f)?,
                    (_, Some(Field::Bytes(m))) => match spec.ty {
                        Ty::MapMsg(t) => message(m, t)?,
                        _ => return None,
                    },
                    _ => return None,
                };
                let map = obj
                    .entry(spec.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                map[k] = v;
            }
            // Packed repeated numbers (proto3 style; Kubernetes' proto2 sends them one by one).
            Ty::Int | Ty::Bool if spec.repeated && matches!(f, Field::Bytes(_)) => {
                let Field::Bytes(packed) = f else { return None };
                let mut i = 0;
                while i < packed.len() {
                    let v = scalar(spec.ty, &Field::Varint(varint(packed, &mut i)?))?;
                    push(&mut obj, spec.name, v);
                }
            }
            ty => {
                let v = value(ty, &f)?;
                if spec.name.is_empty() {
                    // An inline struct: its fields are the parent's.
                    if let Value::Object(inner) = v {
                        obj.extend(inner);
                    }
                } else if spec.repeated {
                    push(&mut obj, spec.name, v);
                } else if spec.keep || !is_zero(&v) {
                    obj.insert(spec.name.to_string(), v);
                }
            }
        }
    }
    Some(Value::Object(obj))
}

fn push(obj: &mut Map<String, Value>, name: &str, v: Value) {
    match obj.entry(name).or_insert_with(|| Value::Array(Vec::new())) {
        Value::Array(a) => a.push(v),
        other => *other = Value::Array(vec![v]),
    }
}

/// Decodes a protobuf request body, or says why not.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let malformed = || "malformed protobuf body".to_string();
    let inner = body
        .strip_prefix(b"k8s\x00")
        .ok_or("a protobuf body must start with the k8s envelope")?;
    let (mut kind, mut api_version, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(inner).ok_or_else(malformed)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm).ok_or_else(malformed)? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = text(x),
                        (2, Field::Bytes(x)) => kind = text(x),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let table = proto_schema::of(&api_version, &kind)
        .ok_or_else(|| format!("no protobuf decoding for {api_version} {kind}; send it as JSON"))?;
    let mut obj = message(raw, table).ok_or_else(malformed)?;
    obj["kind"] = Value::from(kind);
    obj["apiVersion"] = Value::from(api_version);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field `n` holding `payload` (length-delimited).
    fn ld(n: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3 | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn var(n: u32, v: u8) -> Vec<u8> {
        vec![(n << 3) as u8, v]
    }

    #[test]
    fn a_deployment_as_kubectl_create_sends_it() {
        // metadata{name: web, labels{app: web}}, spec{replicas: 0, selector{matchLabels},
        // template{metadata{labels}, spec{containers[{name: nginx, image: nginx,
        // resources{}}]}}, strategy{}}, status{}
        let labels = ld(11, &[ld(1, b"app"), ld(2, b"web")].concat());
        let meta = [ld(1, b"web"), labels.clone()].concat();
        let selector = ld(1, &[ld(1, b"app"), ld(2, b"web")].concat());
        let container = [ld(1, b"nginx"), ld(2, b"nginx"), ld(8, b"")].concat();
        let pod_spec = ld(2, &container);
        let template = [ld(1, &labels), ld(2, &pod_spec)].concat();
        let spec = [var(1, 0), ld(2, &selector), ld(3, &template), ld(4, b"")].concat();
        let raw = [ld(1, &meta), ld(2, &spec), ld(3, b"")].concat();
        let type_meta = [ld(1, b"apps/v1"), ld(2, b"Deployment")].concat();
        let body = [b"k8s\x00".to_vec(), ld(1, &type_meta), ld(2, &raw)].concat();
        let obj = decode(&body).unwrap();
        assert_eq!(
            obj,
            json!({
                "kind": "Deployment", "apiVersion": "apps/v1",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}},
                    "strategy": {},
                },
                "status": {},
            })
        );
    }

    #[test]
    fn int_or_string() {
        let port = [var(1, 1), ld(3, b"http")].concat();
        assert_eq!(
            value(Ty::IntOrString, &Field::Bytes(&port)),
            Some(json!("http"))
        );
        let port = [var(1, 0), var(2, 80)].concat();
        assert_eq!(
            value(Ty::IntOrString, &Field::Bytes(&port)),
            Some(json!(80))
        );
    }
}

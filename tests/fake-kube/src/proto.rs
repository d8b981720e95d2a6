//! The protobuf bodies kubectl's typed clients send (`kubectl create namespace`,
//! `kubectl create secret generic`): the `k8s\0` envelope (`runtime.Unknown`) around a
//! Namespace or a Secret, decoded into JSON. Other kinds are not decoded.

use serde_json::{Map, Value, json};

use crate::json::b64encode;

/// A protobuf field: its number and its value (varint or bytes).
enum Field<'a> {
    Varint(u64),
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

fn fields(b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let (num, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((num, Field::Varint(varint(b, &mut i)?))),
            1 => i += 8,
            2 => {
                let len = varint(b, &mut i)? as usize;
                let v = b.get(i..i + len)?;
                i += len;
                out.push((num, Field::Bytes(v)));
            }
            5 => i += 4,
            _ => return None,
        }
    }
    Some(out)
}

fn string(b: &[u8]) -> Value {
    Value::from(String::from_utf8_lossy(b).into_owned())
}

/// A `map<string, string|bytes>` entry.
fn entry(b: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut k = String::new();
    let mut v = Vec::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = String::from_utf8_lossy(x).into_owned(),
            (2, Field::Bytes(x)) => v = x.to_vec(),
            _ => {}
        }
    }
    Some((k, v))
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    let mut finalizers = Vec::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                m.insert("name".into(), string(x));
            }
            (2, Field::Bytes(x)) => {
                m.insert("generateName".into(), string(x));
            }
            (3, Field::Bytes(x)) => {
                m.insert("namespace".into(), string(x));
            }
            (6, Field::Bytes(x)) => {
                m.insert("resourceVersion".into(), string(x));
            }
            (11, Field::Bytes(x)) => {
                let (k, v) = entry(x)?;
                labels.insert(k, Value::from(String::from_utf8_lossy(&v).into_owned()));
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = entry(x)?;
                annotations.insert(k, Value::from(String::from_utf8_lossy(&v).into_owned()));
            }
            (14, Field::Bytes(x)) => finalizers.push(string(x)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::from(finalizers));
    }
    Some(Value::Object(m))
}

/// Decodes a protobuf request body, or says why not.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let unsupported = || {
        "this fake apiserver reads protobuf bodies only for Namespaces and Secrets; send JSON (kubectl create -f / apply -f)".to_string()
    };
    let inner = body
        .strip_prefix(b"k8s\x00")
        .ok_or("a protobuf body must start with the k8s envelope")?;
    let (mut kind, mut api_version, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(inner).ok_or("malformed protobuf")? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm).ok_or("malformed protobuf")? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => {
                            api_version = String::from_utf8_lossy(x).into_owned()
                        }
                        (2, Field::Bytes(x)) => kind = String::from_utf8_lossy(x).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let top = fields(raw).ok_or("malformed protobuf")?;
    let mut obj = json!({"kind": kind, "apiVersion": api_version, "metadata": {}});
    match kind.as_str() {
        "Namespace" => {
            for (n, f) in top {
                if let (1, Field::Bytes(x)) = (n, f) {
                    obj["metadata"] = object_meta(x).ok_or("malformed protobuf")?;
                }
            }
        }
        "Secret" => {
            let (mut data, mut string_data) = (Map::new(), Map::new());
            for (n, f) in top {
                match (n, f) {
                    (1, Field::Bytes(x)) => {
                        obj["metadata"] = object_meta(x).ok_or("malformed protobuf")?
                    }
                    (2, Field::Bytes(x)) => {
                        let (k, v) = entry(x).ok_or("malformed protobuf")?;
                        data.insert(k, Value::from(b64encode(&v)));
                    }
                    (3, Field::Bytes(x)) => obj["type"] = string(x),
                    (4, Field::Bytes(x)) => {
                        let (k, v) = entry(x).ok_or("malformed protobuf")?;
                        string_data
                            .insert(k, Value::from(String::from_utf8_lossy(&v).into_owned()));
                    }
                    (5, Field::Varint(v)) => obj["immutable"] = Value::from(v != 0),
                    _ => {}
                }
            }
            if !data.is_empty() {
                obj["data"] = Value::Object(data);
            }
            if !string_data.is_empty() {
                obj["stringData"] = Value::Object(string_data);
            }
        }
        _ => return Err(unsupported()),
    }
    Ok(obj)
}

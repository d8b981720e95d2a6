//! JSON helpers: the three patch formats of the apiserver (merge, strategic merge,
//! JSON patch), label and field selectors, base64, times as Kubernetes writes them,
//! and the hashes and random suffixes of generated names.

use pym_fake_common::time::from_date_time;
use serde_json::{Map, Value};

/// Milliseconds since the Unix epoch, and `2026-11-28T18:25:00Z` (metav1.Time: seconds)
/// from them.
pub use pym_fake_common::time::{now_ms, rfc3339};

pub fn now() -> String {
    rfc3339(now_ms())
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±hh:mm)` back into milliseconds.
pub fn parse_time(t: &str) -> Option<i64> {
    let t = t.trim();
    let (date, time) = t.split_once('T')?;
    let (time, offset) = if let Some(t) = time.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (t, o) = time.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':')?;
        (
            t,
            sign * (oh.parse::<i64>().ok()? * 60 + om.parse::<i64>().ok()?) * 60_000,
        )
    } else {
        (time, 0)
    };
    Some(from_date_time(date, time)? - offset)
}

/// `duration.HumanDuration` of apimachinery (the AGE column).
pub fn human_duration(ms: i64) -> String {
    let s = ms / 1000;
    if s < -1 {
        return "<invalid>".into();
    }
    if s < 0 {
        return "0s".into();
    }
    if s < 60 * 2 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        let rest = s % 60;
        return if rest == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rest}s")
        };
    }
    if m < 60 * 3 {
        return format!("{m}m");
    }
    let h = m / 60;
    if h < 8 {
        let rest = m % 60;
        return if rest == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rest}m")
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        let rest = h % 24;
        return if rest == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{rest}h", h / 24)
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    if h < 24 * 365 * 8 {
        let dy = h / 24 % 365;
        return if dy == 0 {
            format!("{}y", h / 24 / 365)
        } else {
            format!("{}y{dy}d", h / 24 / 365)
        };
    }
    format!("{}y", h / 24 / 365)
}

/// The age of an object from its `creationTimestamp`.
pub fn age(v: &Value) -> String {
    match v["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_time)
    {
        Some(t) => human_duration(now_ms() - t),
        None => "<unknown>".into(),
    }
}

/// Standard base64 (Secret `data`).
pub use pym_fake_common::base64::{decode as b64decode, encode as b64encode};

/// FNV-1a 32 (the pod-template-hash's hash).
pub fn fnv32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The alphabet of `rand.SafeEncodeString` and generated name suffixes (no vowels, no
/// look-alikes).
pub const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// JSON with sorted keys, for hashing.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), canonical(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge key of a list in the built-in types' strategic merge patch metadata, by the
/// list's field name (and, for `ports`, by what its elements hold).
pub fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "hostAliases"
        | "resourceClaims" => {
            if field == "hostAliases" {
                "ip"
            } else {
                "name"
            }
        }
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if sample.is_some_and(|s| s.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// A strategic merge patch as the apiserver applies it to the built-in types: maps merge,
/// lists with a merge key merge element by element (`$patch: delete` removes one),
/// other lists are replaced; `$patch: replace` replaces a map, `$setElementOrder/<list>`
/// orders a merged list, `$retainKeys` keeps only the keys it names,
/// `$deleteFromPrimitiveList/<list>` removes values.
pub fn strategic_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut v = patch.clone();
        strip_directives(&mut v);
        *target = v;
        return;
    }
    if p.get("$patch").and_then(Value::as_str) == Some("delete") {
        *target = Value::Object(Map::new());
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("an object");
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()) || p.contains_key(k));
    }
    for (k, v) in p {
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Value::Array(del)) = (t.get_mut(list), v) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Array(items) => {
                let key = merge_key(
                    k,
                    items
                        .first()
                        .or_else(|| t.get(k).and_then(|c| c.as_array()).and_then(|a| a.first())),
                );
                let order = p
                    .get(&format!("$setElementOrder/{k}"))
                    .and_then(Value::as_array);
                match (key, t.get_mut(k)) {
                    (Some(key), Some(Value::Array(cur))) => {
                        merge_list(cur, items, key);
                        if let Some(order) = order {
                            let pos = |x: &Value| {
                                order
                                    .iter()
                                    .position(|o| o.get(key) == x.get(key))
                                    .unwrap_or(usize::MAX)
                            };
                            cur.sort_by_key(|x| pos(x));
                        }
                    }
                    _ => {
                        let mut items: Vec<Value> = items
                            .iter()
                            .filter(|x| x.get("$patch").and_then(Value::as_str) != Some("delete"))
                            .cloned()
                            .collect();
                        items.iter_mut().for_each(strip_directives);
                        t.insert(k.clone(), Value::Array(items));
                    }
                }
            }
            Value::Object(_) => strategic_patch(t.entry(k.clone()).or_insert(Value::Null), v),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list(cur: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key);
        let at = cur.iter().position(|c| id.is_some() && c.get(key) == id);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (at, delete) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_patch(&mut cur[i], item),
            (None, false) => {
                let mut v = item.clone();
                strip_directives(&mut v);
                cur.push(v);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// RFC 6902 JSON patch: `add`, `replace`, `remove`, `test`, `copy`, `move`.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("the JSON patch must be a list of operations")?;
    for op in ops {
        let kind = op["op"]
            .as_str()
            .ok_or("a JSON patch operation has no \"op\"")?;
        let path = op["path"]
            .as_str()
            .ok_or("a JSON patch operation has no \"path\"")?;
        match kind {
            "add" => add(target, path, op["value"].clone())?,
            "replace" => {
                let slot = target.pointer_mut(path).ok_or_else(|| {
                    format!("replace operation does not apply: doc is missing key: {path}")
                })?;
                *slot = op["value"].clone();
            }
            "remove" => {
                remove(target, path)?;
            }
            "test" => {
                if target.pointer(path) != Some(&op["value"]) {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            "copy" | "move" => {
                let from = op["from"]
                    .as_str()
                    .ok_or("a copy/move operation has no \"from\"")?;
                let v = target.pointer(from).cloned().ok_or_else(|| {
                    format!("{kind} operation does not apply: doc is missing from path: {from}")
                })?;
                if kind == "move" {
                    remove(target, from)?;
                }
                add(target, path, v)?;
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let p = target
        .pointer_mut(&parent)
        .ok_or_else(|| format!("add operation does not apply: doc is missing path: \"{path}\""))?;
    match p {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("invalid index {last:?}"))?;
                if i > a.len() {
                    return Err(format!(
                        "add operation does not apply: index {i} out of bounds"
                    ));
                }
                a.insert(i, value);
            }
        }
        _ => {
            return Err(format!(
                "add operation does not apply: doc is missing path: \"{path}\""
            ));
        }
    }
    Ok(())
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("remove operation does not apply: doc is missing path: \"{path}\"");
    match target.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// One requirement of a label selector.
#[derive(Clone, Debug)]
pub enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (all requirements must hold).
#[derive(Clone, Debug, Default)]
pub struct Selector(pub Vec<Req>);

impl Selector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        for p in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("unable to parse requirement: {p}"))?;
                Ok(inner
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect())
            };
            if let Some(k) = p.strip_prefix('!') {
                reqs.push(Req::NotExists(k.trim().to_string()));
            } else if let Some((k, v)) = p.split_once("!=") {
                reqs.push(Req::Ne(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                reqs.push(Req::NotIn(k.trim().into(), set(rest)?));
            } else if let Some((k, rest)) = p.split_once(" in ") {
                reqs.push(Req::In(k.trim().into(), set(rest)?));
            } else if p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                reqs.push(Req::Exists(p.to_string()));
            } else {
                return Err(format!("unable to parse requirement: {p}"));
            }
        }
        Ok(Selector(reqs))
    }

    /// A `metav1.LabelSelector` (`matchLabels`, `matchExpressions`).
    pub fn from_label_selector(v: &Value) -> Selector {
        let mut reqs = Vec::new();
        if let Some(m) = v["matchLabels"].as_object() {
            for (k, x) in m {
                reqs.push(Req::Eq(k.clone(), x.as_str().unwrap_or("").into()));
            }
        }
        for e in v["matchExpressions"].as_array().into_iter().flatten() {
            let key = e["key"].as_str().unwrap_or("").to_string();
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
            reqs.push(match e["operator"].as_str().unwrap_or("") {
                "In" => Req::In(key, values),
                "NotIn" => Req::NotIn(key, values),
                "Exists" => Req::Exists(key),
                _ => Req::NotExists(key),
            });
        }
        Selector(reqs)
    }

    /// A Service's `spec.selector` (a plain map; empty selects nothing there, but this is
    /// the caller's to decide).
    pub fn from_map(v: &Value) -> Selector {
        Selector(
            v.as_object()
                .into_iter()
                .flatten()
                .map(|(k, x)| Req::Eq(k.clone(), x.as_str().unwrap_or("").into()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// `app=x,tier in (a,b)`: how `kubectl` and Scale's `status.selector` write it.
impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Req::Eq(k, v) => format!("{k}={v}"),
                Req::Ne(k, v) => format!("{k}!={v}"),
                Req::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Req::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Req::Exists(k) => k.clone(),
                Req::NotExists(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A field selector: `metadata.name=x,involvedObject.kind!=Pod`, compared as strings
/// against the dotted path in the object.
#[derive(Clone, Debug, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> FieldSelector {
        let mut out = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some((k, v)) = p.split_once("!=") {
                out.push((k.trim().to_string(), false, v.trim().to_string()));
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                out.push((k.trim().to_string(), true, v.trim().to_string()));
            }
        }
        FieldSelector(out)
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, eq, v)| {
            let mut cur = obj;
            for part in k.split('.') {
                cur = &cur[part];
            }
            let s = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (s == *v) == *eq
        })
    }
}

/// Go's `%#v` of a `map[string]string` (in validation messages).
pub fn go_map(v: &Value) -> String {
    let mut pairs: Vec<(String, String)> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, x)| (k.clone(), x.as_str().unwrap_or("").to_string()))
        .collect();
    pairs.sort();
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), Value::from(v.as_str())))
        .collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn selectors() {
        let s = super::Selector::parse("app=x,tier in (a, b),!gone,env,color!=red").unwrap();
        assert!(s.matches(&json!({"app": "x", "tier": "b", "env": "", "color": "blue"})));
        assert!(!s.matches(&json!({"app": "x", "tier": "c", "env": ""})));
        assert!(!s.matches(&json!({"app": "x", "tier": "a", "env": "", "gone": "1"})));
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "1", "env": [{"name": "X", "value": "1"}]}, {"name": "b", "image": "2"}]}});
        let p = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "b", "image": "3"}, {"name": "a", "env": [{"name": "Y", "value": "2"}]}]}});
        super::strategic_patch(&mut t, &p);
        assert_eq!(t["spec"]["containers"][1]["image"], "3");
        assert_eq!(
            t["spec"]["containers"][0]["env"].as_array().unwrap().len(),
            2
        );
    }

    #[test]
    fn times() {
        let ms = super::parse_time("2026-11-28T18:25:00Z").unwrap();
        assert_eq!(super::rfc3339(ms), "2026-11-28T18:25:00Z");
        assert_eq!(super::human_duration(125_000), "2m5s");
    }
}

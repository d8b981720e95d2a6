//! Server-side apply (`PATCH` with `application/apply-patch+yaml`): each field manager's
//! set of fields (the leaves of what it applied, list items keyed by their merge keys) is
//! kept in `metadata.managedFields` as FieldsV1; applying a value to a field another
//! applier owns with another value is a conflict (409, one cause per field) unless forced,
//! which takes the field over; fields a manager applied before and no longer applies are
//! removed when no other manager owns them. The merge is the strategic merge patch's.
//! Not modelled: the Update operations of other writes as managers (only appliers own
//! fields here).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A field as FieldsV1 names it: `f:spec`, `f:replicas`, `k:{"name":"web"}`.
pub type Path = Vec<String>;

/// Metadata and top-level fields the server owns: no manager's.
fn ignored(at: &[String], key: &str) -> bool {
    match at {
        [] => matches!(key, "apiVersion" | "kind" | "status"),
        [m] if m == "f:metadata" => matches!(
            key,
            "name"
                | "namespace"
                | "resourceVersion"
                | "uid"
                | "managedFields"
                | "creationTimestamp"
                | "generation"
                | "selfLink"
        ),
        _ => false,
    }
}

/// The leaves of an applied object.
pub fn fields(obj: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    walk(obj, None, &mut Vec::new(), &mut out);
    out
}

fn walk(v: &Value, field: Option<&str>, at: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                if ignored(at, k) {
                    continue;
                }
                at.push(format!("f:{k}"));
                walk(x, Some(k), at, out);
                at.pop();
            }
        }
        Value::Array(items)
            if !items.is_empty()
                && items.iter().all(Value::is_object)
                && field
                    .and_then(|f| crate::json::merge_key(f, items.first()))
                    .is_some() =>
        {
            let key = crate::json::merge_key(field.unwrap_or(""), items.first()).unwrap_or("");
            for item in items {
                at.push(format!("k:{}", json!({key: item[key]})));
                out.insert([at.as_slice(), &[".".to_string()]].concat());
                walk(item, None, at, out);
                at.pop();
            }
        }
        _ => {
            out.insert(at.clone());
        }
    }
}

/// FieldsV1 of a set of fields.
pub fn fields_v1(set: &BTreeSet<Path>) -> Value {
    let mut root = Value::Object(Map::new());
    for path in set {
        let mut node = &mut root;
        for seg in path {
            node = node
                .as_object_mut()
                .expect("an object")
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

/// The set of fields a FieldsV1 holds.
pub fn from_v1(v: &Value) -> BTreeSet<Path> {
    fn go(v: &Value, at: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() {
            out.insert(at.clone());
            return;
        }
        for (k, x) in m {
            at.push(k.clone());
            go(x, at, out);
            at.pop();
        }
    }
    let mut out = BTreeSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

/// One step of a field's path: a map key (`f:`), or a list item by its key fields (`k:`).
enum Seg<'a> {
    Key(&'a str),
    Item(Map<String, Value>),
}

impl Seg<'_> {
    fn parse(seg: &str) -> Option<Seg<'_>> {
        match (seg.strip_prefix("f:"), seg.strip_prefix("k:")) {
            (Some(f), _) => Some(Seg::Key(f)),
            (_, Some(k)) => serde_json::from_str(k).ok().map(Seg::Item),
            _ => None,
        }
    }

    /// Whether a list item is the one this `k:` step names.
    fn names(key: &Map<String, Value>, item: &Value) -> bool {
        key.iter().all(|(k, v)| &item[k] == v)
    }
}

/// The value a field has in `obj`.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = obj;
    for seg in path {
        if seg == "." {
            return Some(v);
        }
        v = match Seg::parse(seg)? {
            Seg::Key(f) => v.get(f)?,
            Seg::Item(key) => v.as_array()?.iter().find(|i| Seg::names(&key, i))?,
        };
    }
    Some(v)
}

/// `.spec.template.spec.containers[name="web"].image`: a field as conflicts name it.
pub fn show(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        match Seg::parse(seg) {
            Some(Seg::Key(f)) => {
                s.push('.');
                s.push_str(f);
            }
            Some(Seg::Item(key)) => {
                let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            None => {}
        }
    }
    s
}

/// Removes a field (a map key, or a whole list item) from `obj`.
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    if last == "." {
        return remove(obj, parent);
    }
    let mut v = obj;
    for seg in parent {
        let next = match Seg::parse(seg) {
            Some(Seg::Key(f)) => v.get_mut(f),
            Some(Seg::Item(key)) => v
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| Seg::names(&key, i))),
            None => None,
        };
        let Some(next) = next else { return };
        v = next;
    }
    match Seg::parse(last) {
        Some(Seg::Key(f)) => {
            if let Some(m) = v.as_object_mut() {
                m.remove(f);
            }
        }
        Some(Seg::Item(key)) => {
            if let Some(a) = v.as_array_mut() {
                a.retain(|i| !Seg::names(&key, i));
            }
        }
        None => {}
    }
}

/// One manager's entry of `managedFields`.
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub fields: BTreeSet<Path>,
    pub raw: Value,
}

pub fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or("").to_string(),
            operation: e["operation"].as_str().unwrap_or("").to_string(),
            fields: from_v1(&e["fieldsV1"]),
            raw: e.clone(),
        })
        .collect()
}

/// The `managedFields` after an Update by `manager` that set these fields of `obj`
/// (whose own `managedFields` are the ones before); `None` when it set none.
pub fn updated(
    obj: &Value,
    set: &BTreeSet<Path>,
    manager: &str,
    api_version: &str,
) -> Option<Value> {
    if set.is_empty() {
        return None;
    }
    let mut all = entries(obj);
    for e in &mut all {
        if !(e.manager == manager && e.operation == "Update") {
            e.fields.retain(|p| !set.contains(p));
        }
    }
    let mut managed: Vec<Value> = Vec::new();
    let mut mine = false;
    for e in all {
        let mut raw = e.raw;
        let mut fields = e.fields;
        if e.manager == manager && e.operation == "Update" {
            fields.extend(set.iter().cloned());
            raw["time"] = Value::from(crate::json::now());
            mine = true;
        }
        if fields.is_empty() {
            continue;
        }
        raw["fieldsV1"] = fields_v1(&fields);
        managed.push(raw);
    }
    if !mine {
        managed.push(json!({
            "manager": manager, "operation": "Update", "apiVersion": api_version,
            "time": crate::json::now(), "fieldsType": "FieldsV1", "fieldsV1": fields_v1(set),
        }));
    }
    Some(Value::from(managed))
}

/// The fields an update changed: those of `new` whose value is not `cur`'s.
pub fn changed(cur: &Value, new: &Value) -> BTreeSet<Path> {
    fields(new)
        .into_iter()
        .filter(|p| value_at(cur, p) != value_at(new, p))
        .collect()
}

/// What an apply does to `cur` (`{}` for a new object): the object it makes, or the
/// conflicts `(manager, field)` that stop it.
pub fn apply(
    cur: &Value,
    applied: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
) -> Result<Value, Vec<(String, Path)>> {
    let mine = fields(applied);
    let mut others: Vec<Entry> = entries(cur)
        .into_iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        .collect();
    let before: BTreeSet<Path> = entries(cur)
        .into_iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.fields)
        .unwrap_or_default();
    let mut conflicts = Vec::new();
    for e in &others {
        for p in mine.intersection(&e.fields) {
            if p.last().is_some_and(|s| s == ".") {
                continue;
            }
            if value_at(cur, p) != value_at(applied, p) {
                conflicts.push((e.manager.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for e in &mut others {
        for (_, p) in conflicts.iter().filter(|(m, _)| *m == e.manager) {
            e.fields.remove(p);
        }
    }
    let mut out = cur.clone();
    crate::json::strategic_patch(&mut out, applied);
    // What this manager applied before and no longer does, and no one else owns, goes.
    let owned_by_others = |p: &Path| {
        others
            .iter()
            .any(|e| e.fields.iter().any(|f| f.starts_with(p)))
    };
    for p in before.difference(&mine) {
        if owned_by_others(p) || mine.iter().any(|m| m.starts_with(p)) {
            continue;
        }
        remove(&mut out, p);
        // A list or map left empty that no one owns anything in goes too.
        let mut parent: &[String] = p.strip_suffix(&[".".to_string()]).unwrap_or(p);
        while let Some((_, up)) = parent.split_last() {
            parent = up;
            let empty = match value_at(&out, parent) {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(o)) => o.is_empty(),
                _ => false,
            };
            let owned = |f: &Path| f.starts_with(parent);
            if parent.is_empty()
                || !empty
                || mine.iter().any(owned)
                || others.iter().any(|e| e.fields.iter().any(owned))
            {
                break;
            }
            remove(&mut out, parent);
        }
    }
    let mut managed: Vec<Value> = others
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut raw = e.raw;
            raw["fieldsV1"] = fields_v1(&e.fields);
            raw
        })
        .collect();
    managed.push(json!({
        "manager": manager, "operation": "Apply", "apiVersion": api_version,
        "time": crate::json::now(), "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&mine),
    }));
    out["metadata"]["managedFields"] = Value::from(managed);
    Ok(out)
}

/// The apiserver's words for conflicts: `Apply failed with 1 conflict: conflict with
/// "a" using apps/v1: .spec.replicas`, and one line per field when there are several.
pub fn conflict_message(conflicts: &[(String, Path)], api_version: &str) -> String {
    let n = conflicts.len();
    let mut managers: Vec<&str> = conflicts.iter().map(|(m, _)| m.as_str()).collect();
    managers.dedup();
    let head = format!(
        "Apply failed with {n} conflict{}: ",
        if n == 1 { "" } else { "s" }
    );
    let parts: Vec<String> = managers
        .iter()
        .map(|m| {
            let fields: Vec<String> = conflicts
                .iter()
                .filter(|(mm, _)| mm == m)
                .map(|(_, p)| show(p))
                .collect();
            match fields.as_slice() {
                [one] => format!("conflict with \"{m}\" using {api_version}: {one}"),
                many => format!(
                    "conflicts with \"{m}\" using {api_version}:\n- {}",
                    many.join("\n- ")
                ),
            }
        })
        .collect();
    head + &parts.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_name_themselves() {
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "a:1", "args": ["x"]}]}}}});
        let set = fields(&obj);
        assert_eq!(from_v1(&fields_v1(&set)), set);
        let shown: Vec<String> = set.iter().map(|p| show(p)).collect();
        assert!(shown.contains(&".spec.replicas".to_string()), "{shown:?}");
        assert!(
            shown.contains(&".spec.template.spec.containers[name=\"web\"].image".to_string()),
            "{shown:?}"
        );
        assert!(
            shown.contains(&".spec.template.spec.containers[name=\"web\"].args".to_string()),
            "{shown:?}"
        );
        assert!(
            !shown.iter().any(|s| s.starts_with(".metadata.name")),
            "{shown:?}"
        );
    }

    #[test]
    fn a_second_manager_conflicts_until_forced_and_a_dropped_field_goes() {
        let a = json!({"metadata": {"name": "x"}, "data": {"k": "1", "old": "o"}});
        let one = apply(&json!({}), &a, "a", "v1", false).unwrap();
        let b = json!({"metadata": {"name": "x"}, "data": {"k": "2"}});
        let err = apply(&one, &b, "b", "v1", false).unwrap_err();
        assert_eq!(
            conflict_message(&err, "v1"),
            "Apply failed with 1 conflict: conflict with \"a\" using v1: .data.k"
        );
        let forced = apply(&one, &b, "b", "v1", true).unwrap();
        assert_eq!(forced["data"], json!({"k": "2", "old": "o"}));
        // `a` applies again without `old`: it goes; `k` is b's now, so a's value for it
        // conflicts no more once a leaves it out.
        let again = apply(
            &forced,
            &json!({"metadata": {"name": "x"}, "data": {}}),
            "a",
            "v1",
            false,
        )
        .unwrap();
        assert_eq!(again["data"], json!({"k": "2"}));
    }
}

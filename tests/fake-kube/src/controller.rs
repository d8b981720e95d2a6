//! The controllers of kube-controller-manager that a deploy needs: deployment (rolling
//! updates, Recreate, status and conditions), replicaset, namespace (emptying a deleted
//! namespace), garbage collection of orphans; plus starting a kubelet for each new pod.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::delete_object;
use crate::json::{self, Selector};
use crate::store::State;
use crate::{Shared, kubelet};

pub async fn run(shared: Arc<Shared>) {
    let mut changed = shared.lock().notify.subscribe();
    loop {
        sync(&shared);
        tokio::select! {
            _ = changed.changed() => tokio::time::sleep(Duration::from_millis(20)).await,
            _ = tokio::time::sleep(shared.opts.step_delay) => {}
        }
    }
}

fn sync(shared: &Arc<Shared>) {
    let mut st = shared.lock();
    start_kubelets(shared, &mut st);
    namespaces(&mut st);
    garbage_collect(&mut st);
    for (ns, name) in keys(&st, "deployments") {
        sync_deployment(shared, &mut st, &ns, &name);
    }
    for (ns, name) in keys(&st, "replicasets") {
        sync_replicaset(shared, &mut st, &ns, &name);
    }
    for (ns, name) in keys(&st, "deployments") {
        deployment_status(shared, &mut st, &ns, &name);
    }
    crate::endpoints::sync(shared, &mut st);
    start_kubelets(shared, &mut st);
}

fn keys(st: &State, resource: &str) -> Vec<(String, String)> {
    st.list(resource, None)
        .into_iter()
        .map(|o| (s(&o["metadata"]["namespace"]), s(&o["metadata"]["name"])))
        .collect()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn start_kubelets(shared: &Arc<Shared>, st: &mut State) {
    let pods: Vec<(String, String, String)> = st
        .list("pods", None)
        .into_iter()
        .map(|p| {
            (
                s(&p["metadata"]["namespace"]),
                s(&p["metadata"]["name"]),
                s(&p["metadata"]["uid"]),
            )
        })
        .filter(|(_, _, uid)| !st.kubelets.contains(uid))
        .collect();
    for (ns, name, uid) in pods {
        st.kubelets.insert(uid.clone());
        tokio::spawn(kubelet::run(shared.clone(), ns, name, uid));
    }
}

/// Empties namespaces being deleted; removes them once no pod is left.
fn namespaces(st: &mut State) {
    let dying: Vec<String> = st
        .list("namespaces", None)
        .into_iter()
        .filter(|n| n["status"]["phase"] == "Terminating")
        .map(|n| s(&n["metadata"]["name"]))
        .collect();
    for ns in dying {
        for res in [
            "deployments",
            "replicasets",
            "services",
            "secrets",
            "configmaps",
            "pods",
        ] {
            let names: Vec<String> = st
                .list(res, Some(&ns))
                .into_iter()
                .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
                .map(|o| s(&o["metadata"]["name"]))
                .collect();
            for n in names {
                delete_object(st, res, &ns, &n, None, "Background");
            }
        }
        if st.list("pods", Some(&ns)).is_empty() {
            let events: Vec<String> = st
                .list("events", Some(&ns))
                .into_iter()
                .map(|o| s(&o["metadata"]["name"]))
                .collect();
            for n in events {
                st.remove("events", &ns, &n);
            }
            st.remove("namespaces", "", &ns);
        }
    }
}

fn controller_ref(o: &Value) -> Option<&Value> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
}

/// Deletes ReplicaSets and pods whose controller is gone.
fn garbage_collect(st: &mut State) {
    for (res, owner) in [("replicasets", "deployments"), ("pods", "replicasets")] {
        let orphans: Vec<(String, String)> = st
            .list(res, None)
            .into_iter()
            .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
            .filter(|o| {
                controller_ref(o).is_some_and(|r| {
                    let ns = s(&o["metadata"]["namespace"]);
                    st.get(owner, &ns, r["name"].as_str().unwrap_or(""))
                        .is_none_or(|x| x["metadata"]["uid"] != r["uid"])
                })
            })
            .map(|o| (s(&o["metadata"]["namespace"]), s(&o["metadata"]["name"])))
            .collect();
        for (ns, n) in orphans {
            delete_object(st, res, &ns, &n, None, "Background");
        }
    }
}

/// `intstr.GetScaledValueFromIntOrPercent`.
pub fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
        {
            Some(p) if round_up => (p * total + 99) / 100,
            Some(p) => p * total / 100,
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// `(maxSurge, maxUnavailable)` of a deployment (`ResolveFenceposts`).
fn fenceposts(d: &Value) -> (i64, i64) {
    let replicas = int(&d["spec"]["replicas"]);
    if d["spec"]["strategy"]["type"] != "RollingUpdate" {
        return (0, 0);
    }
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let surge = int_or_percent(&ru["maxSurge"], replicas, true);
    let unavailable = int_or_percent(&ru["maxUnavailable"], replicas, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn max_unavailable(d: &Value) -> i64 {
    let replicas = int(&d["spec"]["replicas"]);
    if d["spec"]["strategy"]["type"] != "RollingUpdate" || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

fn owned_by<'a>(st: &'a State, resource: &str, ns: &str, uid: &str) -> Vec<&'a Value> {
    st.list(resource, Some(ns))
        .into_iter()
        .filter(|o| controller_ref(o).is_some_and(|r| r["uid"] == uid))
        .collect()
}

/// A template without its `pod-template-hash` label (`EqualIgnoreHash`).
fn without_hash(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove("pod-template-hash");
    }
    t
}

fn revision(o: &Value) -> i64 {
    o["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// `SetDeploymentCondition`: no change when status and reason are the same; keeps the
/// transition time when only the reason changes.
fn set_condition(status: &mut Value, kind: &str, ok: bool, reason: &str, message: &str) {
    let now = json::now();
    let want = if ok { "True" } else { "False" };
    let list = status["conditions"].as_array().cloned().unwrap_or_default();
    let cur = list.iter().find(|c| c["type"] == kind);
    if let Some(c) = cur
        && c["status"] == want
        && c["reason"] == reason
    {
        return;
    }
    let transition = match cur {
        Some(c) if c["status"] == want => c["lastTransitionTime"].clone(),
        _ => Value::from(now.clone()),
    };
    let mut next: Vec<Value> = list.iter().filter(|c| c["type"] != kind).cloned().collect();
    next.push(json!({"type": kind, "status": want, "lastUpdateTime": now, "lastTransitionTime": transition, "reason": reason, "message": message}));
    status["conditions"] = Value::from(next);
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Scales a ReplicaSet and records the deployment's ScalingReplicaSet event.
fn scale_rs(st: &mut State, d: &Value, ns: &str, rs: &str, to: i64) {
    let Some(cur) = st.get("replicasets", ns, rs) else {
        return;
    };
    let from = int(&cur["spec"]["replicas"]);
    if from == to {
        return;
    }
    let (surge, _) = fenceposts(d);
    let replicas = int(&d["spec"]["replicas"]);
    st.update("replicasets", ns, rs, |r| {
        r["spec"]["replicas"] = Value::from(to);
        r["metadata"]["generation"] = Value::from(int(&r["metadata"]["generation"]) + 1);
        r["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
            Value::from(replicas.to_string());
        r["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] =
            Value::from((replicas + surge).to_string());
    });
    let op = if to > from { "up" } else { "down" };
    st.event(
        d,
        "Normal",
        "ScalingReplicaSet",
        &format!("Scaled {op} replica set {rs} from {from} to {to}"),
        "deployment-controller",
        None,
    );
}

fn sync_deployment(shared: &Shared, st: &mut State, ns: &str, name: &str) {
    let Some(d) = st.get("deployments", ns, name).cloned() else {
        return;
    };
    if d["metadata"]["deletionTimestamp"].is_string() {
        return;
    }
    let uid = s(&d["metadata"]["uid"]);
    let replicas = int(&d["spec"]["replicas"]);
    let template = d["spec"]["template"].clone();
    let mut rss: Vec<Value> = owned_by(st, "replicasets", ns, &uid)
        .into_iter()
        .cloned()
        .collect();
    rss.sort_by_key(|r| {
        (
            s(&r["metadata"]["creationTimestamp"]),
            s(&r["metadata"]["name"]),
        )
    });
    let target = without_hash(&template);
    let new_rs = rss
        .iter()
        .find(|r| without_hash(&r["spec"]["template"]) == target)
        .cloned();
    let olds: Vec<Value> = rss
        .iter()
        .filter(|r| {
            Some(r["metadata"]["uid"].clone())
                != new_rs.as_ref().map(|n| n["metadata"]["uid"].clone())
        })
        .cloned()
        .collect();
    let max_old_rev = olds.iter().map(revision).max().unwrap_or(0);
    let recreate = d["spec"]["strategy"]["type"] == "Recreate";
    let has_deadline = d["spec"]["progressDeadlineSeconds"].is_i64();
    let mut status = d["status"].clone();
    if !status.is_object() {
        status = json!({});
    }

    // The new ReplicaSet.
    let new_name = match &new_rs {
        Some(rs) => {
            let n = s(&rs["metadata"]["name"]);
            if revision(rs) <= max_old_rev {
                st.update("replicasets", ns, &n, |r| {
                    r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                        Value::from((max_old_rev + 1).to_string())
                });
            }
            if has_deadline && condition(&status, "Progressing").is_none() {
                set_condition(
                    &mut status,
                    "Progressing",
                    true,
                    "FoundNewReplicaSet",
                    &format!("Found new replica set \"{n}\""),
                );
            }
            n
        }
        None => {
            if recreate
                && (olds.iter().any(|r| int(&r["spec"]["replicas"]) > 0)
                    || olds
                        .iter()
                        .any(|r| !owned_by(st, "pods", ns, &s(&r["metadata"]["uid"])).is_empty()))
            {
                // Recreate: the old pods go first.
                for r in &olds {
                    scale_rs(st, &d, ns, &s(&r["metadata"]["name"]), 0);
                }
                store_status(st, ns, name, status);
                return;
            }
            let hash = json::safe_encode(
                &json::fnv32(json::canonical(&target).as_bytes())
                    .wrapping_add(int(&status["collisionCount"]) as u32)
                    .to_string(),
            );
            let rs_name = format!("{name}-{hash}");
            let initial = if recreate {
                replicas
            } else {
                let (surge, _) = fenceposts(&d);
                let current: i64 = olds.iter().map(|r| int(&r["spec"]["replicas"])).sum();
                (replicas + surge - current).clamp(0, replicas)
            };
            if st.get("replicasets", ns, &rs_name).is_some() {
                // A hash collision: try another name next time.
                status["collisionCount"] = Value::from(int(&status["collisionCount"]) + 1);
                store_status(st, ns, name, status);
                return;
            }
            let mut t = template.clone();
            t["metadata"]["labels"]["pod-template-hash"] = Value::from(hash.clone());
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"]["pod-template-hash"] = Value::from(hash.clone());
            let mut labels = template["metadata"]["labels"].clone();
            labels["pod-template-hash"] = Value::from(hash.clone());
            let (surge, _) = fenceposts(&d);
            let mut annotations = d["metadata"]["annotations"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            annotations.insert(
                "deployment.kubernetes.io/revision".into(),
                Value::from((max_old_rev + 1).to_string()),
            );
            annotations.insert(
                "deployment.kubernetes.io/desired-replicas".into(),
                Value::from(replicas.to_string()),
            );
            annotations.insert(
                "deployment.kubernetes.io/max-replicas".into(),
                Value::from((replicas + surge).to_string()),
            );
            let mut spec = json!({"replicas": initial, "selector": selector, "template": t});
            if let Some(m) = d["spec"]["minReadySeconds"].as_i64() {
                spec["minReadySeconds"] = Value::from(m);
            }
            let rs = json!({
                "kind": "ReplicaSet", "apiVersion": "apps/v1",
                "metadata": {
                    "name": rs_name, "namespace": ns, "uid": shared.ids.uuid(), "generation": 1, "creationTimestamp": json::now(),
                    "labels": labels, "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                },
                "spec": spec, "status": {"replicas": 0},
            });
            st.put("replicasets", rs);
            st.event(
                &d,
                "Normal",
                "ScalingReplicaSet",
                &format!("Scaled up replica set {rs_name} from 0 to {initial}"),
                "deployment-controller",
                None,
            );
            if has_deadline {
                set_condition(
                    &mut status,
                    "Progressing",
                    true,
                    "NewReplicaSetCreated",
                    &format!("Created new replica set \"{rs_name}\""),
                );
            }
            rs_name
        }
    };
    // Annotations the deployment carries: its revision.
    let rev = st
        .get("replicasets", ns, &new_name)
        .map(revision)
        .unwrap_or(1);
    st.update("deployments", ns, name, |x| {
        x["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
            Value::from(rev.to_string());
    });
    let minready = d["spec"]["minReadySeconds"].as_i64();
    st.update("replicasets", ns, &new_name, |r| match minready {
        Some(m) => r["spec"]["minReadySeconds"] = Value::from(m),
        None => {
            r["spec"]
                .as_object_mut()
                .map(|m| m.remove("minReadySeconds"));
        }
    });

    if recreate {
        for r in &olds {
            scale_rs(st, &d, ns, &s(&r["metadata"]["name"]), 0);
        }
        let old_pods = olds
            .iter()
            .any(|r| !owned_by(st, "pods", ns, &s(&r["metadata"]["uid"])).is_empty());
        if !old_pods {
            scale_rs(st, &d, ns, &new_name, replicas);
        }
    } else {
        rolling(st, &d, ns, &new_name, &olds);
    }
    cleanup_history(st, &d, ns);
    store_status(st, ns, name, status);
}

fn store_status(st: &mut State, ns: &str, name: &str, status: Value) {
    st.update("deployments", ns, name, |d| {
        let conditions = status["conditions"].clone();
        let count = status["collisionCount"].clone();
        if !conditions.is_null() {
            d["status"]["conditions"] = conditions;
        }
        if !count.is_null() {
            d["status"]["collisionCount"] = count;
        }
    });
}

fn rolling(st: &mut State, d: &Value, ns: &str, new_name: &str, olds: &[Value]) {
    let replicas = int(&d["spec"]["replicas"]);
    let (surge, unavailable) = fenceposts(d);
    let spec_of = |st: &State, n: &str| {
        st.get("replicasets", ns, n)
            .map_or(0, |r| int(&r["spec"]["replicas"]))
    };
    // Scale up the new ReplicaSet.
    let new_spec = spec_of(st, new_name);
    let total: i64 = olds
        .iter()
        .map(|r| spec_of(st, r["metadata"]["name"].as_str().unwrap_or("")))
        .sum::<i64>()
        + new_spec;
    if new_spec > replicas {
        scale_rs(st, d, ns, new_name, replicas);
    } else if new_spec < replicas {
        let up = (replicas + surge - total).min(replicas - new_spec);
        if up > 0 {
            scale_rs(st, d, ns, new_name, new_spec + up);
        }
    }
    // Scale down the old ones.
    let mut olds: Vec<(String, i64, i64)> = olds
        .iter()
        .map(|r| {
            let n = s(&r["metadata"]["name"]);
            let cur = st
                .get("replicasets", ns, &n)
                .cloned()
                .unwrap_or(Value::Null);
            (
                n,
                int(&cur["spec"]["replicas"]),
                int(&cur["status"]["availableReplicas"]),
            )
        })
        .collect();
    let new = st
        .get("replicasets", ns, new_name)
        .cloned()
        .unwrap_or(Value::Null);
    let all: i64 = olds.iter().map(|o| o.1).sum::<i64>() + int(&new["spec"]["replicas"]);
    let min_available = replicas - unavailable.min(replicas);
    let new_unavailable =
        (int(&new["spec"]["replicas"]) - int(&new["status"]["availableReplicas"])).max(0);
    let mut max_down = all - min_available - new_unavailable;
    if max_down <= 0 {
        return;
    }
    // Unhealthy old replicas first.
    for o in olds.iter_mut() {
        if max_down <= 0 {
            break;
        }
        if o.1 == 0 || o.1 <= o.2 {
            continue;
        }
        let down = max_down.min(o.1 - o.2);
        scale_rs(st, d, ns, &o.0, o.1 - down);
        o.1 -= down;
        max_down -= down;
    }
    let available: i64 =
        olds.iter().map(|o| o.2.min(o.1)).sum::<i64>() + int(&new["status"]["availableReplicas"]);
    if available <= min_available {
        return;
    }
    let mut total_down = available - min_available;
    for o in olds.iter_mut() {
        if total_down <= 0 {
            break;
        }
        if o.1 == 0 {
            continue;
        }
        let down = o.1.min(total_down);
        scale_rs(st, d, ns, &o.0, o.1 - down);
        o.1 -= down;
        total_down -= down;
    }
}

fn cleanup_history(st: &mut State, d: &Value, ns: &str) {
    let limit = d["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    let uid = s(&d["metadata"]["uid"]);
    let template = without_hash(&d["spec"]["template"]);
    let mut idle: Vec<Value> = owned_by(st, "replicasets", ns, &uid)
        .into_iter()
        .filter(|r| {
            without_hash(&r["spec"]["template"]) != template
                && int(&r["spec"]["replicas"]) == 0
                && int(&r["status"]["replicas"]) == 0
        })
        .cloned()
        .collect();
    if idle.len() <= limit {
        return;
    }
    idle.sort_by_key(revision);
    let extra = idle.len() - limit;
    for r in idle.into_iter().take(extra) {
        delete_object(
            st,
            "replicasets",
            ns,
            &s(&r["metadata"]["name"]),
            None,
            "Background",
        );
    }
}

/// Whether a pod has been ready for `min_ready` seconds.
fn available(p: &Value, min_ready: i64) -> bool {
    let Some(c) = p["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
    else {
        return false;
    };
    if c["status"] != "True" {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    c["lastTransitionTime"]
        .as_str()
        .and_then(json::parse_time)
        .is_some_and(|t| t + min_ready * 1000 <= json::now_ms())
}

fn sync_replicaset(shared: &Shared, st: &mut State, ns: &str, name: &str) {
    let Some(rs) = st.get("replicasets", ns, name).cloned() else {
        return;
    };
    let uid = s(&rs["metadata"]["uid"]);
    let want = int(&rs["spec"]["replicas"]);
    let active: Vec<Value> = owned_by(st, "pods", ns, &uid)
        .into_iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        })
        .cloned()
        .collect();
    let have = active.len() as i64;
    if have < want {
        for _ in have..want {
            let pod_name = format!("{name}-{}", shared.suffix(5));
            let template = &rs["spec"]["template"];
            let mut meta = template["metadata"].clone();
            if !meta.is_object() {
                meta = json!({});
            }
            let meta_map = meta.as_object_mut().expect("an object");
            meta_map.remove("creationTimestamp");
            meta_map.insert("name".into(), Value::from(pod_name.clone()));
            meta_map.insert("generateName".into(), Value::from(format!("{name}-")));
            meta_map.insert("namespace".into(), Value::from(ns));
            meta_map.insert("uid".into(), Value::from(shared.ids.uuid()));
            meta_map.insert("creationTimestamp".into(), Value::from(json::now()));
            meta_map.insert(
                "ownerReferences".into(),
                json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]),
            );
            let mut spec = template["spec"].clone();
            crate::api::default_pod_spec(&mut spec);
            let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": {"phase": "Pending", "qosClass": "BestEffort"}});
            st.put("pods", pod);
            st.event(
                &rs,
                "Normal",
                "SuccessfulCreate",
                &format!("Created pod: {pod_name}"),
                "replicaset-controller",
                None,
            );
        }
    } else if have > want {
        let mut victims = active.clone();
        // Unscheduled, pending, not ready, then the newest first.
        victims.sort_by_key(|p| {
            let scheduled = p["spec"]["nodeName"].is_string();
            let running = p["status"]["phase"] == "Running";
            let ready = kubelet::is_ready(p);
            let created =
                json::parse_time(p["metadata"]["creationTimestamp"].as_str().unwrap_or(""))
                    .unwrap_or(0);
            (scheduled, running, ready, -created)
        });
        for p in victims.into_iter().take((have - want) as usize) {
            let pn = s(&p["metadata"]["name"]);
            delete_object(st, "pods", ns, &pn, None, "Background");
            st.event(
                &rs,
                "Normal",
                "SuccessfulDelete",
                &format!("Deleted pod: {pn}"),
                "replicaset-controller",
                None,
            );
        }
    }
    // Status.
    let min_ready = int(&rs["spec"]["minReadySeconds"]);
    let pods: Vec<Value> = owned_by(st, "pods", ns, &uid)
        .into_iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        })
        .cloned()
        .collect();
    let sel = Selector::from_label_selector(&rs["spec"]["selector"]);
    let total = pods.len() as i64;
    let labeled = pods
        .iter()
        .filter(|p| sel.matches(&p["metadata"]["labels"]))
        .count() as i64;
    let ready = pods.iter().filter(|p| kubelet::is_ready(p)).count() as i64;
    let avail = pods.iter().filter(|p| available(p, min_ready)).count() as i64;
    let generation = rs["metadata"]["generation"].clone();
    st.update("replicasets", ns, name, |r| {
        let mut status = json!({"replicas": total, "observedGeneration": generation});
        for (k, v) in [
            ("fullyLabeledReplicas", labeled),
            ("readyReplicas", ready),
            ("availableReplicas", avail),
        ] {
            if v > 0 {
                status[k] = Value::from(v);
            }
        }
        r["status"] = status;
    });
}

fn deployment_status(shared: &Shared, st: &mut State, ns: &str, name: &str) {
    let _ = shared;
    let Some(d) = st.get("deployments", ns, name).cloned() else {
        return;
    };
    let uid = s(&d["metadata"]["uid"]);
    let replicas = int(&d["spec"]["replicas"]);
    let rss: Vec<Value> = owned_by(st, "replicasets", ns, &uid)
        .into_iter()
        .cloned()
        .collect();
    let target = without_hash(&d["spec"]["template"]);
    let new_rs = rss
        .iter()
        .find(|r| without_hash(&r["spec"]["template"]) == target);
    let sum = |k: &str, list: &mut dyn Iterator<Item = &Value>| -> i64 {
        list.map(|r| int(&r["status"][k])).sum()
    };
    let available = sum("availableReplicas", &mut rss.iter());
    let spec_total: i64 = rss.iter().map(|r| int(&r["spec"]["replicas"])).sum();
    let actual = sum("replicas", &mut rss.iter());
    let updated = new_rs.map_or(0, |r| int(&r["status"]["replicas"]));
    let ready = sum("readyReplicas", &mut rss.iter());
    let unavailable = (spec_total - available).max(0);
    let old = d["status"].clone();
    let mut status = json!({"observedGeneration": d["metadata"]["generation"]});
    for (k, v) in [
        ("replicas", actual),
        ("updatedReplicas", updated),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("unavailableReplicas", unavailable),
    ] {
        if v != 0 {
            status[k] = Value::from(v);
        }
    }
    if let Some(c) = old.get("collisionCount") {
        status["collisionCount"] = c.clone();
    }
    status["conditions"] = old["conditions"].clone();
    if available >= replicas - max_unavailable(&d) {
        set_condition(
            &mut status,
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        );
    } else {
        set_condition(
            &mut status,
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        );
    }
    // syncRolloutStatus
    let cur = condition(&old, "Progressing").cloned();
    let complete_before = actual == updated
        && cur
            .as_ref()
            .is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
    if d["spec"]["progressDeadlineSeconds"].is_i64() && !complete_before {
        let new_name = new_rs.map(|r| s(&r["metadata"]["name"]));
        let complete = updated == replicas
            && actual == replicas
            && available == replicas
            && int(&status["observedGeneration"]) >= int(&d["metadata"]["generation"]);
        let old_old = int(&old["replicas"]) - int(&old["updatedReplicas"]);
        let new_old = actual - updated;
        let progressing = updated > int(&old["updatedReplicas"])
            || ready > int(&old["readyReplicas"])
            || new_old < old_old
            || available > int(&old["availableReplicas"]);
        if complete {
            let msg = match &new_name {
                Some(n) => format!("ReplicaSet \"{n}\" has successfully progressed."),
                None => format!("Deployment \"{name}\" has successfully progressed."),
            };
            set_condition(
                &mut status,
                "Progressing",
                true,
                "NewReplicaSetAvailable",
                &msg,
            );
        } else if progressing {
            let msg = match &new_name {
                Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
                None => format!("Deployment \"{name}\" is progressing."),
            };
            // Always refresh lastUpdateTime on progress, keep the transition time.
            let transition = cur
                .as_ref()
                .filter(|c| c["status"] == "True")
                .map(|c| c["lastTransitionTime"].clone());
            let now = json::now();
            let mut list: Vec<Value> = status["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c["type"] != "Progressing")
                .collect();
            list.push(json!({"type": "Progressing", "status": "True", "lastUpdateTime": now, "lastTransitionTime": transition.unwrap_or(Value::from(now.clone())), "reason": "ReplicaSetUpdated", "message": msg}));
            status["conditions"] = Value::from(list);
        } else if let Some(c) = condition(&status, "Progressing").cloned() {
            let deadline = int(&d["spec"]["progressDeadlineSeconds"]) as f64
                * shared.opts.progress_deadline_scale;
            let timed_out = c["reason"] == "ProgressDeadlineExceeded"
                || (c["reason"] != "NewReplicaSetAvailable"
                    && c["lastUpdateTime"]
                        .as_str()
                        .and_then(json::parse_time)
                        .is_some_and(|t| (t as f64) + deadline * 1000.0 < json::now_ms() as f64));
            if timed_out {
                let msg = match &new_name {
                    Some(n) => format!("ReplicaSet \"{n}\" has timed out progressing."),
                    None => format!("Deployment \"{name}\" has timed out progressing."),
                };
                set_condition(
                    &mut status,
                    "Progressing",
                    false,
                    "ProgressDeadlineExceeded",
                    &msg,
                );
            }
        }
    }
    if status["conditions"].is_null() {
        status.as_object_mut().map(|m| m.remove("conditions"));
    }
    st.update("deployments", ns, name, |x| x["status"] = status);
}

//! The endpoints and endpointslice controllers of kube-controller-manager: for each
//! Service with a selector, the pods it selects, as an `Endpoints` of the Service's name
//! (ready pods in `addresses`, the others in `notReadyAddresses`, terminating pods left
//! out) and one `EndpointSlice` (`<service>-<5 characters>`, labelled
//! `kubernetes.io/service-name`, owned by the Service; terminating pods kept with their
//! conditions). A pod's address is its `podIP`; each port is the Service port's
//! `targetPort`, a name resolved against the pod's container ports. Written only when
//! they change; both go when their Service goes (a Service that loses its selector keeps
//! them, as with the real controllers).

use serde_json::{Map, Value, json};

use crate::Shared;
use crate::json::Selector;
use crate::kubelet::{NODE, is_ready};
use crate::store::State;

/// What the endpoints controller writes on the Endpoints it manages.
const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const CONTROLLER: &str = "endpointslice-controller.k8s.io";
const SERVICE_NAME: &str = "kubernetes.io/service-name";

pub fn sync(shared: &Shared, st: &mut State) {
    let services: Vec<Value> = st.list("services", None).into_iter().cloned().collect();
    for svc in &services {
        if svc["spec"]["selector"]
            .as_object()
            .is_none_or(Map::is_empty)
            || svc["spec"]["type"] == "ExternalName"
        {
            continue;
        }
        let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
        let selector = Selector::from_map(&svc["spec"]["selector"]);
        let pods: Vec<Value> = st
            .list("pods", Some(ns))
            .into_iter()
            .filter(|p| selector.matches(&p["metadata"]["labels"]))
            .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .filter(|p| {
                p["status"]["podIP"]
                    .as_str()
                    .is_some_and(|ip| !ip.is_empty())
            })
            .cloned()
            .collect();
        endpoints(shared, st, svc, &pods);
        slice(shared, st, svc, &pods);
    }
    // What belonged to a Service that is gone goes with it.
    let gone: Vec<(String, String, String)> = st
        .list("endpoints", None)
        .into_iter()
        .filter(|e| e["metadata"]["annotations"][TRIGGER_TIME].is_string())
        .map(|e| ("endpoints", e))
        .chain(
            st.list("endpointslices", None)
                .into_iter()
                .filter(|e| e["metadata"]["labels"][MANAGED_BY] == CONTROLLER)
                .map(|e| ("endpointslices", e)),
        )
        .filter_map(|(res, e)| {
            let ns = e["metadata"]["namespace"].as_str().unwrap_or("");
            let service = match res {
                "endpoints" => e["metadata"]["name"].as_str(),
                _ => e["metadata"]["labels"][SERVICE_NAME].as_str(),
            }
            .unwrap_or("");
            st.get("services", ns, service).is_none().then(|| {
                (
                    res.to_string(),
                    ns.to_string(),
                    e["metadata"]["name"].as_str().unwrap_or("").to_string(),
                )
            })
        })
        .collect();
    for (res, ns, name) in gone {
        st.remove(&res, &ns, &name);
    }
}

/// The port a Service port reaches on a pod: its `targetPort` (a number, or the name of a
/// container port), by default its `port`. `None`: the pod has no port of that name.
fn target_port(port: &Value, pod: &Value) -> Option<i64> {
    match &port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => match name.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => pod["spec"]["containers"]
                .as_array()?
                .iter()
                .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                .find(|p| p["name"] == name.as_str())?["containerPort"]
                .as_i64(),
        },
        _ => port["port"].as_i64(),
    }
}

fn target_ref(pod: &Value) -> Value {
    let m = &pod["metadata"];
    json!({"kind": "Pod", "namespace": m["namespace"], "name": m["name"], "uid": m["uid"]})
}

fn terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

/// The Service's ports as an endpoint lists them, reached on `pod`.
fn ports(svc: &Value, pod: &Value) -> Option<Vec<Value>> {
    svc["spec"]["ports"]
        .as_array()?
        .iter()
        .map(|p| {
            let mut e = json!({"port": target_port(p, pod)?, "protocol": p["protocol"].as_str().unwrap_or("TCP")});
            if let Some(name) = p["name"].as_str().filter(|n| !n.is_empty()) {
                e["name"] = Value::from(name);
            }
            Some(e)
        })
        .collect()
}

/// Stores `obj` under its name unless it is there already as it is (apart from what the
/// server sets), keeping what the server set.
fn store(shared: &Shared, st: &mut State, resource: &str, mut obj: Value) {
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    match st.get(resource, &ns, &name) {
        Some(cur) => {
            for k in ["uid", "creationTimestamp", "resourceVersion"] {
                obj["metadata"][k] = cur["metadata"][k].clone();
            }
            if *cur != obj {
                st.put(resource, obj);
            }
        }
        None => {
            obj["metadata"]["uid"] = Value::from(shared.ids.uuid());
            obj["metadata"]["creationTimestamp"] = Value::from(crate::json::now());
            st.put(resource, obj);
        }
    }
}

fn endpoints(shared: &Shared, st: &mut State, svc: &Value, pods: &[Value]) {
    let meta = &svc["metadata"];
    // One subset per set of ports (pods whose named ports resolve alike share one).
    let mut subsets: Vec<(Vec<Value>, Vec<Value>, Vec<Value>)> = Vec::new();
    for pod in pods.iter().filter(|p| !terminating(p)) {
        let Some(ports) = ports(svc, pod) else {
            continue;
        };
        let address =
            json!({"ip": pod["status"]["podIP"], "nodeName": NODE, "targetRef": target_ref(pod)});
        let i = match subsets.iter().position(|s| s.2 == ports) {
            Some(i) => i,
            None => {
                subsets.push((Vec::new(), Vec::new(), ports));
                subsets.len() - 1
            }
        };
        match is_ready(pod) {
            true => subsets[i].0.push(address),
            false => subsets[i].1.push(address),
        }
    }
    let mut obj = json!({
        "kind": "Endpoints", "apiVersion": "v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": meta["labels"]},
    });
    if meta["labels"].is_null() {
        obj["metadata"].as_object_mut().map(|m| m.remove("labels"));
    }
    if !subsets.is_empty() {
        obj["subsets"] = subsets
            .into_iter()
            .map(|(ready, not_ready, ports)| {
                let mut s = json!({"ports": ports});
                if !ready.is_empty() {
                    s["addresses"] = Value::from(ready);
                }
                if !not_ready.is_empty() {
                    s["notReadyAddresses"] = Value::from(not_ready);
                }
                s
            })
            .collect();
    }
    // The time of the change, kept while nothing changes.
    let ns = meta["namespace"].as_str().unwrap_or("");
    let cur = st.get("endpoints", ns, meta["name"].as_str().unwrap_or(""));
    let same = cur.is_some_and(|c| {
        c["subsets"] == obj["subsets"] && c["metadata"]["labels"] == obj["metadata"]["labels"]
    });
    obj["metadata"]["annotations"][TRIGGER_TIME] = match (same, cur) {
        (true, Some(c)) => c["metadata"]["annotations"][TRIGGER_TIME].clone(),
        _ => Value::from(crate::json::now()),
    };
    store(shared, st, "endpoints", obj);
}

fn slice(shared: &Shared, st: &mut State, svc: &Value, pods: &[Value]) {
    let meta = &svc["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or("");
    let service = meta["name"].as_str().unwrap_or("");
    let existing = st
        .list("endpointslices", Some(ns))
        .into_iter()
        .find(|e| {
            e["metadata"]["labels"][SERVICE_NAME] == service
                && e["metadata"]["labels"][MANAGED_BY] == CONTROLLER
        })
        .and_then(|e| e["metadata"]["name"].as_str().map(String::from));
    let name = existing.unwrap_or_else(|| format!("{service}-{}", shared.suffix(5)));
    let mut ports_of_slice = None;
    let mut endpoints = Vec::new();
    for pod in pods {
        let Some(ports) = ports(svc, pod) else {
            continue;
        };
        ports_of_slice.get_or_insert(ports);
        let ready = is_ready(pod) && !terminating(pod);
        endpoints.push(json!({
            "addresses": [pod["status"]["podIP"]],
            "conditions": {"ready": ready, "serving": is_ready(pod), "terminating": terminating(pod)},
            "nodeName": NODE, "targetRef": target_ref(pod),
        }));
    }
    let mut labels = meta["labels"].as_object().cloned().unwrap_or_default();
    labels.insert(SERVICE_NAME.into(), Value::from(service));
    labels.insert(MANAGED_BY.into(), Value::from(CONTROLLER));
    let obj = json!({
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name, "namespace": ns, "labels": labels, "generateName": format!("{service}-"),
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": meta["uid"], "controller": true, "blockOwnerDeletion": true}],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports_of_slice.unwrap_or_default(),
    });
    store(shared, st, "endpointslices", obj);
}

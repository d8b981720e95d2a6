//! Server-side printing: the `meta.k8s.io/v1` Tables `kubectl get` asks for, with the
//! columns of the apiserver's own printers.

use serde_json::{Value, json};

use crate::api::Res;
use crate::json::{self, Selector};
use crate::store::State;

fn col(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

fn columns(res: &Res) -> Vec<Value> {
    let name = col("Name", "string", 0, NAME_DESC);
    let age = col("Age", "string", 0, AGE_DESC);
    match res.plural {
        "deployments" => vec![
            name,
            col("Ready", "string", 0, "Number of the pod with ready state"),
            col(
                "Up-to-date",
                "integer",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            col(
                "Available",
                "integer",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age,
            col(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            col(
                "Selector",
                "string",
                1,
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            ),
        ],
        "replicasets" => vec![
            name,
            col(
                "Desired",
                "integer",
                0,
                "Replicas is the number of desired pods.",
            ),
            col(
                "Current",
                "integer",
                0,
                "Replicas is the most recently observed number of replicas.",
            ),
            col(
                "Ready",
                "integer",
                0,
                "The number of ready replicas for this replica set.",
            ),
            age,
            col(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            col(
                "Selector",
                "string",
                1,
                "Selector is a label query over pods that should match the replica count.",
            ),
        ],
        "pods" => vec![
            name,
            col(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age,
            col(
                "IP",
                "string",
                1,
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            col(
                "Node",
                "string",
                1,
                "NodeName is a request to schedule this pod onto a specific node.",
            ),
            col(
                "Nominated Node",
                "string",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
            ),
            col(
                "Readiness Gates",
                "string",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        "services" => vec![
            name,
            col(
                "Type",
                "string",
                0,
                "type determines how the Service is exposed.",
            ),
            col(
                "Cluster-IP",
                "string",
                0,
                "clusterIP is the IP address of the service.",
            ),
            col(
                "External-IP",
                "string",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            col(
                "Port(s)",
                "string",
                0,
                "The list of ports that are exposed by this service.",
            ),
            age,
            col(
                "Selector",
                "string",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        "namespaces" => vec![
            name,
            col("Status", "string", 0, "The status of the namespace"),
            age,
        ],
        "endpoints" => vec![
            name,
            col("Endpoints", "string", 0, "Endpoints of the resource"),
            age,
        ],
        "endpointslices" => vec![
            name,
            col("AddressType", "string", 0, "The IP protocol for this slice"),
            col("Ports", "string", 0, "List of ports exposed by this slice"),
            col(
                "Endpoints",
                "string",
                0,
                "List of endpoints exposed by this slice",
            ),
            age,
        ],
        "configmaps" => vec![
            name,
            col(
                "Data",
                "string",
                0,
                "The number of entries in the data and binaryData",
            ),
            age,
        ],
        "secrets" => vec![
            name,
            col("Type", "string", 0, "The type of data stored in the secret"),
            col(
                "Data",
                "string",
                0,
                "The number of entries in the data/stringData",
            ),
            age,
        ],
        "events" => vec![
            col("Last Seen", "string", 0, "Time when last event occurred"),
            col(
                "Type",
                "string",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future.",
            ),
            col(
                "Reason",
                "string",
                0,
                "Reason is why the action was taken. It is human-readable. This field can have at most 128 characters.",
            ),
            col(
                "Object",
                "string",
                0,
                "The object that this event is about. Mapped from Event.regarding",
            ),
            col(
                "Subobject",
                "string",
                1,
                "The subobject that this event is about.",
            ),
            col(
                "Source",
                "string",
                1,
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            col(
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
            ),
            col(
                "First Seen",
                "string",
                1,
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            col(
                "Count",
                "string",
                1,
                "The number of times this event has occurred.",
            ),
            col("Name", "string", 1, NAME_DESC),
        ],
        _ => vec![name, age],
    }
}

fn images(spec: &Value) -> (String, String) {
    let cs = spec["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| c["image"].as_str()).collect();
    (names.join(","), images.join(","))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The STATUS column of a pod, as `kubectl get pods` computes it.
pub fn pod_status(p: &Value) -> String {
    let mut reason = p["status"]["reason"]
        .as_str()
        .or(p["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .to_string();
    let mut has_running = false;
    for c in p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
    {
        let s = &c["state"];
        if let Some(r) = s["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
            reason = r.to_string();
        } else if s["terminated"].is_object() {
            reason = match s["terminated"]["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => r.to_string(),
                None => format!("ExitCode:{}", int(&s["terminated"]["exitCode"])),
            };
        } else if s["running"].is_object() && c["ready"] == true {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        reason = "Running".into();
    }
    if p["metadata"]["deletionTimestamp"].is_string() {
        reason = "Terminating".into();
    }
    reason
}

fn restarts(p: &Value) -> String {
    let mut n = 0;
    let mut last: Option<i64> = None;
    for c in p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        n += int(&c["restartCount"]);
        if let Some(t) = c["lastState"]["terminated"]["finishedAt"]
            .as_str()
            .and_then(json::parse_time)
        {
            last = Some(last.map_or(t, |l: i64| l.max(t)));
        }
    }
    match last {
        Some(t) if n > 0 => format!("{n} ({} ago)", json::human_duration(json::now_ms() - t)),
        _ => n.to_string(),
    }
}

fn service_ports(s: &Value) -> String {
    let ports: Vec<String> = s["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", int(&p["port"])),
                None => format!("{}/{proto}", int(&p["port"])),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

fn external_ip(s: &Value) -> String {
    let spec = &s["spec"];
    let ext: Vec<String> = spec["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect();
    match spec["type"].as_str().unwrap_or("ClusterIP") {
        "LoadBalancer" => {
            let mut ips: Vec<String> = s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i["ip"]
                        .as_str()
                        .or(i["hostname"].as_str())
                        .map(String::from)
                })
                .collect();
            ips.extend(ext);
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => spec["externalName"].as_str().unwrap_or("").to_string(),
        _ if !ext.is_empty() => ext.join(","),
        _ => "<none>".into(),
    }
}

fn selector_map(v: &Value) -> String {
    let s = Selector::from_map(v).to_string();
    if s.is_empty() { "<none>".into() } else { s }
}

fn cells(st: &State, res: &Res, o: &Value) -> Vec<Value> {
    let name = Value::from(o["metadata"]["name"].as_str().unwrap_or(""));
    let age = Value::from(json::age(o));
    let spec = &o["spec"];
    let status = &o["status"];
    match res.plural {
        "deployments" => {
            let (c, i) = images(spec);
            vec![
                name,
                Value::from(format!(
                    "{}/{}",
                    int(&status["readyReplicas"]),
                    int(&spec["replicas"])
                )),
                Value::from(int(&status["updatedReplicas"])),
                Value::from(int(&status["availableReplicas"])),
                age,
                Value::from(c),
                Value::from(i),
                Value::from(Selector::from_label_selector(&spec["selector"]).to_string()),
            ]
        }
        "replicasets" => {
            let (c, i) = images(spec);
            vec![
                name,
                Value::from(int(&spec["replicas"])),
                Value::from(int(&status["replicas"])),
                Value::from(int(&status["readyReplicas"])),
                age,
                Value::from(c),
                Value::from(i),
                Value::from(Selector::from_label_selector(&spec["selector"]).to_string()),
            ]
        }
        "pods" => {
            let statuses = status["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            vec![
                name,
                Value::from(format!("{ready}/{total}")),
                Value::from(pod_status(o)),
                Value::from(restarts(o)),
                age,
                Value::from(status["podIP"].as_str().unwrap_or("<none>")),
                Value::from(spec["nodeName"].as_str().unwrap_or("<none>")),
                Value::from("<none>"),
                Value::from("<none>"),
            ]
        }
        "services" => vec![
            name,
            Value::from(spec["type"].as_str().unwrap_or("ClusterIP")),
            Value::from(spec["clusterIP"].as_str().unwrap_or("<none>")),
            Value::from(external_ip(o)),
            Value::from(service_ports(o)),
            age,
            Value::from(selector_map(&spec["selector"])),
        ],
        "namespaces" => vec![
            name,
            Value::from(status["phase"].as_str().unwrap_or("Active")),
            age,
        ],
        "configmaps" => vec![
            name,
            Value::from(
                o["data"].as_object().map_or(0, |m| m.len())
                    + o["binaryData"].as_object().map_or(0, |m| m.len()),
            ),
            age,
        ],
        "secrets" => vec![
            name,
            Value::from(o["type"].as_str().unwrap_or("Opaque")),
            Value::from(o["data"].as_object().map_or(0, |m| m.len())),
            age,
        ],
        "events" => {
            let last = o["lastTimestamp"]
                .as_str()
                .or(o["eventTime"].as_str())
                .and_then(json::parse_time);
            let first = o["firstTimestamp"].as_str().and_then(json::parse_time);
            let ago = |t: Option<i64>| {
                t.map_or("<unknown>".to_string(), |t| {
                    json::human_duration(json::now_ms() - t)
                })
            };
            let inv = &o["involvedObject"];
            let object = format!(
                "{}/{}",
                inv["kind"].as_str().unwrap_or("").to_ascii_lowercase(),
                inv["name"].as_str().unwrap_or("")
            );
            let _ = st;
            vec![
                Value::from(ago(last)),
                Value::from(o["type"].as_str().unwrap_or("")),
                Value::from(o["reason"].as_str().unwrap_or("")),
                Value::from(object),
                Value::from(inv["fieldPath"].as_str().unwrap_or("")),
                Value::from(
                    format!(
                        "{}, {}",
                        o["source"]["component"].as_str().unwrap_or(""),
                        o["source"]["host"].as_str().unwrap_or("")
                    )
                    .trim_end_matches(", ")
                    .to_string(),
                ),
                Value::from(o["message"].as_str().unwrap_or("").trim()),
                Value::from(ago(first)),
                Value::from(int(&o["count"]).to_string()),
                name,
            ]
        }
        "endpoints" => {
            let all: Vec<String> = o["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| {
                    let ports: Vec<i64> = s["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| int(&p["port"]))
                        .collect();
                    s["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(move |a| {
                            let ip = a["ip"].as_str().unwrap_or("").to_string();
                            ports.clone().into_iter().map(move |p| format!("{ip}:{p}"))
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            vec![name, Value::from(first_three(all, "<none>")), age]
        }
        "endpointslices" => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| int(&p["port"]).to_string())
                .collect();
            let addresses: Vec<String> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            vec![
                name,
                Value::from(o["addressType"].as_str().unwrap_or("")),
                Value::from(first_three(ports, "<unset>")),
                Value::from(first_three(addresses, "<unset>")),
                age,
            ]
        }
        _ => vec![name, age],
    }
}

/// The apiserver printer's list of at most three, then ` + N more...`.
fn first_three(all: Vec<String>, none: &str) -> String {
    match all.len() {
        0 => none.to_string(),
        n if n <= 3 => all.join(","),
        n => format!("{} + {} more...", all[..3].join(","), n - 3),
    }
}

/// A Table of `objs` (one row each).
pub fn table(st: &State, res: &Res, objs: &[&Value], rv: &str, include: Option<&str>) -> Value {
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(st, res, o)});
            match include.unwrap_or("Metadata") {
                "None" => {}
                "Object" => row["object"] = (*o).clone(),
                _ => row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "columnDefinitions": columns(res), "rows": rows})
}

//! The object store: every object as JSON under `(resource, namespace, name)`, one global
//! `resourceVersion` counter, and the recent changes that watches replay.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use pym_fake_common::{CallLog, Faults};
use serde_json::{Value, json};

use crate::json::{self};
use crate::{Fault, Shared};

/// `(resource plural, namespace or "", name)`.
pub type Key = (String, String, String);

/// How many changes a watch can resume from.
const HISTORY: usize = 4000;

pub struct Change {
    pub rv: u64,
    pub resource: String,
    pub ns: String,
    /// ADDED, MODIFIED or DELETED.
    pub kind: &'static str,
    pub obj: Value,
    pub prev: Option<Value>,
}

/// What the kubelet knows of a running pod that the store does not say.
#[derive(Clone, Debug, Default)]
pub struct PodRuntime {
    /// containerPort → published loopback port.
    pub host_ports: HashMap<u16, u16>,
    /// The container's address on the engine's network.
    pub ip: Option<String>,
}

/// A service port's forwarder.
pub struct Proxy {
    pub node_port: u16,
    pub task: tokio::task::AbortHandle,
}

/// A LoadBalancer Service's address: a loopback IP of its own where each of its ports
/// answers.
pub struct Balancer {
    pub ip: std::net::Ipv4Addr,
    /// (`port`, `nodePort`) per Service port.
    pub ports: Vec<(u16, u16)>,
    pub tasks: Vec<tokio::task::AbortHandle>,
}

pub struct State {
    pub objects: BTreeMap<Key, Value>,
    pub rv: u64,
    /// Numbers the events.
    pub serial: u64,
    pub history: VecDeque<Change>,
    /// The highest resourceVersion no longer in `history` (older watches get 410).
    pub compacted: u64,
    pub notify: tokio::sync::watch::Sender<u64>,
    /// Pods (by uid) whose kubelet task runs.
    pub kubelets: HashSet<String>,
    pub runtime: HashMap<String, PodRuntime>,
    /// nodePort → its forwarder.
    pub proxies: HashMap<u16, Proxy>,
    pub round_robin: HashMap<u16, usize>,
    /// `namespace/name` of each LoadBalancer Service → its address.
    pub balancers: HashMap<String, Balancer>,
    pub faults: Faults<Fault>,
    pub log: CallLog,
}

impl State {
    pub fn new() -> State {
        State {
            objects: BTreeMap::new(),
            rv: 1,
            serial: 0,
            history: VecDeque::new(),
            compacted: 0,
            notify: tokio::sync::watch::channel(1).0,
            kubelets: HashSet::new(),
            runtime: HashMap::new(),
            proxies: HashMap::new(),
            round_robin: HashMap::new(),
            balancers: HashMap::new(),
            faults: Faults::default(),
            log: CallLog::default(),
        }
    }

    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(resource.to_string(), ns.to_string(), name.to_string()))
    }

    /// The objects of a resource, in one namespace or all.
    pub fn list(&self, resource: &str, ns: Option<&str>) -> Vec<&Value> {
        let lo = (
            resource.to_string(),
            ns.unwrap_or("").to_string(),
            String::new(),
        );
        self.objects
            .range(lo..)
            .take_while(|((r, n, _), _)| r == resource && ns.is_none_or(|ns| n == ns))
            .map(|(_, v)| v)
            .collect()
    }

    fn record(
        &mut self,
        resource: &str,
        ns: &str,
        kind: &'static str,
        obj: Value,
        prev: Option<Value>,
    ) {
        self.history.push_back(Change {
            rv: self.rv,
            resource: resource.to_string(),
            ns: ns.to_string(),
            kind,
            obj,
            prev,
        });
        while self.history.len() > HISTORY {
            if let Some(c) = self.history.pop_front() {
                self.compacted = c.rv;
            }
        }
        self.notify.send_replace(self.rv);
    }

    /// Stores an object (new or changed), giving it the next resourceVersion; returns it.
    pub fn put(&mut self, resource: &str, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::from(self.rv.to_string());
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let prev = self
            .objects
            .insert((resource.to_string(), ns.clone(), name), obj.clone());
        let kind = if prev.is_some() { "MODIFIED" } else { "ADDED" };
        self.record(resource, &ns, kind, obj.clone(), prev);
        obj
    }

    /// Changes an object with `f` and stores it when that changed anything.
    pub fn update(
        &mut self,
        resource: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let cur = self.get(resource, ns, name)?.clone();
        let mut next = cur.clone();
        f(&mut next);
        if next == cur {
            Some(cur)
        } else {
            Some(self.put(resource, next))
        }
    }

    pub fn remove(&mut self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let mut obj =
            self.objects
                .remove(&(resource.to_string(), ns.to_string(), name.to_string()))?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::from(self.rv.to_string());
        self.record(resource, ns, "DELETED", obj.clone(), None);
        Some(obj)
    }

    /// Records a v1 Event about `involved` (or counts a repeat of the same one).
    pub fn event(
        &mut self,
        involved: &Value,
        kind: &str,
        reason: &str,
        message: &str,
        component: &str,
        field_path: Option<&str>,
    ) {
        let meta = &involved["metadata"];
        let ns = meta["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string();
        let uid = meta["uid"].as_str().unwrap_or("").to_string();
        let now = json::now();
        let same = self
            .list("events", Some(&ns))
            .into_iter()
            .find(|e| {
                e["involvedObject"]["uid"] == uid.as_str()
                    && e["reason"] == reason
                    && e["message"] == message
                    && e["type"] == kind
            })
            .map(|e| e["metadata"]["name"].as_str().unwrap_or("").to_string());
        if let Some(name) = same {
            self.update("events", &ns, &name, |e| {
                e["count"] = Value::from(e["count"].as_u64().unwrap_or(1) + 1);
                e["lastTimestamp"] = Value::from(now.clone());
            });
            return;
        }
        if !self
            .objects
            .contains_key(&("namespaces".to_string(), String::new(), ns.clone()))
        {
            return;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        self.serial += 1;
        let name = format!(
            "{}.{:x}",
            meta["name"].as_str().unwrap_or(""),
            nanos + u128::from(self.serial)
        );
        let event_uid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (nanos >> 32) as u32,
            (nanos >> 16) as u16,
            self.serial & 0xfff,
            self.rv & 0xfff,
            nanos & 0xffff_ffff_ffff
        );
        let mut involved_ref = json!({
            "kind": involved["kind"], "namespace": ns, "name": meta["name"], "uid": uid,
            "apiVersion": involved["apiVersion"], "resourceVersion": meta["resourceVersion"],
        });
        if let Some(fp) = field_path {
            involved_ref["fieldPath"] = Value::from(fp);
        }
        let host = if component == "kubelet" {
            json!({"component": component, "host": "fake-node"})
        } else {
            json!({"component": component})
        };
        let e = json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": ns, "uid": event_uid, "creationTimestamp": now},
            "involvedObject": involved_ref, "reason": reason, "message": message, "source": host,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": kind, "eventTime": null,
            "reportingComponent": component, "reportingInstance": if component == "kubelet" { "fake-node" } else { "" },
        });
        self.put("events", e);
    }
}

/// The namespaces every cluster starts with.
pub fn bootstrap(shared: &Shared) {
    let mut st = shared.lock();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": ns, "uid": shared.ids.uuid(), "creationTimestamp": json::now(), "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
        });
        st.put("namespaces", obj);
    }
}

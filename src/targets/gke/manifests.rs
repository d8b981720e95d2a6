//! The objects pymdeploy makes: its Deployments and Services, as JSON.

use serde_json::{Value, json};

use super::check::memory;
use super::{CONTAINER, DEPLOYMENT, ENV, MANAGED_BY, NAME, Names, VERSION};
use crate::config::gke_about::ServiceType;
use crate::config::{Config, PymEnv};

fn labels(names: &Names, version: &str, env: PymEnv, deployment: &str) -> Value {
    json!({NAME: names.app, VERSION: version, ENV: env.as_str(), MANAGED_BY: "pymdeploy", DEPLOYMENT: deployment})
}

/// The Deployment of `name`: `image` with `PYM_ENV=env`, probes on `health_path`, a preStop
/// sleep inside a grace period, resources, the secrets by reference.
pub fn deployment(
    c: &Config,
    names: &Names,
    name: &str,
    version: &str,
    image: &str,
    env: PymEnv,
    replicas: i32,
) -> Value {
    let mut vars = vec![
        json!({"name": "PYM_ENV", "value": env.as_str()}),
        json!({"name": "PORT", "value": c.port.to_string()}),
        json!({"name": "PYM_VERSION", "value": version}),
    ];
    vars.extend(
        c.env_secrets
            .iter()
            .map(|s| json!({"name": s, "valueFrom": {"secretKeyRef": {"name": name, "key": s}}})),
    );
    let probe = |period: u32, failures: u32| json!({"httpGet": {"path": c.health_path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": failures});
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    if let Some(cpu) = &c.k8s_cpu {
        requests.insert("cpu".into(), json!(cpu));
    }
    if let Some(m) = memory(c) {
        requests.insert("memory".into(), json!(m));
        limits.insert("memory".into(), json!(m));
    }
    let grace = c.k8s_prestop_seconds + 30;
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": names.ns, "labels": labels(names, version, env, name), "annotations": {"pymdeploy.dev/image": image}},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": c.k8s_timeout,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": {NAME: names.app, ENV: env.as_str(), DEPLOYMENT: name}},
            // New pods are ready before an old one stops: nothing serving is lost mid-rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(names, version, env, name)},
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "containers": [{
                        "name": CONTAINER,
                        "image": image,
                        "ports": [{"name": "http", "containerPort": c.port}],
                        "env": vars,
                        "startupProbe": probe(1, c.health_timeout.get().clamp(1, 3600) as u32),
                        "readinessProbe": probe(2, 2),
                        "livenessProbe": probe(10, 3),
                        // Load balancers and kube-proxy learn late that a pod stops: it keeps
                        // serving meanwhile, then gets SIGTERM.
                        "lifecycle": {"preStop": {"sleep": {"seconds": c.k8s_prestop_seconds}}},
                        "resources": {"requests": requests, "limits": limits},
                    }],
                },
            },
        },
    })
}

pub(super) fn service(c: &Config, names: &Names, env: PymEnv, version: Option<&str>) -> Value {
    let mut selector = json!({NAME: names.app, ENV: env.as_str()});
    if let Some(v) = version {
        selector[VERSION] = json!(v);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": names.service(env), "namespace": names.ns, "labels": {NAME: names.app, ENV: env.as_str(), MANAGED_BY: "pymdeploy"}},
        "spec": {"type": c.k8s_service_type, "selector": selector, "ports": [{"name": "http", "port": c.k8s_service_port, "targetPort": "http", "protocol": "TCP"}]},
    })
}

/// Gives a Service read from the cluster the configured type and port (the nodePort and
/// clusterIP it has stay: the apiserver keeps them); whether anything changed.
pub(super) fn conform(svc: &mut Value, c: &Config) -> bool {
    let before = svc.clone();
    svc["spec"]["type"] = json!(c.k8s_service_type);
    let node_port = svc
        .pointer("/spec/ports/0/nodePort")
        .cloned()
        .filter(|_| c.k8s_service_type != ServiceType::ClusterIP);
    let mut port = json!({"name": "http", "port": c.k8s_service_port, "targetPort": "http", "protocol": "TCP"});
    if let Some(n) = node_port {
        port["nodePort"] = n;
    }
    svc["spec"]["ports"] = json!([port]);
    *svc != before
}

//! What pymdeploy knows of the gke target without its SDK: the keys of
//! `pym-config.yaml` only it reads, and what `new` and `init` write and say
//! for it. `config` includes this file (one line in its `target_kinds!`): it belongs to
//! the config layer, beside the target it describes, and uses nothing else.

use serde::{Deserialize, Serialize};

use super::{Introduction, Schema};

/// The type of the staging and live Services (`k8s_service_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceType {
    /// An external address the checks and acceptance tests reach.
    LoadBalancer,
    /// A port on every node.
    NodePort,
    /// Inside the cluster only: reached through a port-forward.
    ClusterIP,
}

impl Schema for ServiceType {
    fn schema() -> serde_json::Value {
        serde_json::json!({"type": "string", "enum": ["LoadBalancer", "NodePort", "ClusterIP"]})
    }
}

target_keys! { gke_keys {
    /// gke target: the GKE cluster; with gcp_project and gcp_region it names the kubeconfig context gcloud writes (`gke_<project>_<region>_<cluster>`)
    gke_cluster: Option<String> = None => Gke,
    /// gke target: the kubeconfig context (default: gke_cluster's, else the kubeconfig's current one); an overlay may name another cluster's
    k8s_context: Option<String> = None => Gke,
    /// gke target: the namespace (default: `name`), created when missing
    k8s_namespace: Option<String> = None => Gke,
    /// gke target: pods per Deployment (more than one only for a service that keeps no state in memory: a Service spreads connections over them)
    k8s_replicas: NonZeroU32 = nonzero!(1) => Gke,
    /// gke target: CPU each pod requests, e.g. `250m` or `1`
    k8s_cpu: Option<String> = None => Gke,
    /// gke target: memory each pod requests and is limited to, e.g. `512Mi` (default: gcp_memory)
    k8s_memory: Option<String> = None => Gke,
    /// gke target: the type of the staging and live Services: LoadBalancer (an external address the checks and acceptance tests reach), NodePort or ClusterIP (reached through a port-forward)
    k8s_service_type: gke_about::ServiceType = gke_about::ServiceType::LoadBalancer => Gke,
    /// gke target: the port the Services answer on
    k8s_service_port: Port = nonzero!(80) => Gke,
    /// gke target: seconds a pod keeps serving after it is told to stop (its preStop hook), while load balancers stop sending it requests
    k8s_prestop_seconds: u32 = 5 => Gke,
    /// gke target: seconds a rollout may make no progress before it fails (the Deployments' progressDeadlineSeconds)
    k8s_timeout: NonZeroU32 = nonzero!(600) => Gke,
    /// gke target: the URL the staging acceptance tests use instead of the staging Service's address
    staging_url: Option<String> = None => Gke,
} }

/// The keys this target cannot deploy without, each with an example value: refused before
/// the first step when unset, and required by the JSON Schema when `deploy_target` names it.
pub const REQUIRES: &[(&str, &str)] = &[("docker_repo", "<registry>/<namespace>")];

/// What `new` and `init` write and say for this target.
pub const INTRODUCTION: Introduction = Introduction {
    config: "# gke (any Kubernetes cluster): the kubeconfig's context, a namespace, Deployments and\n\
             # Services. It needs docker_repo above: the cluster pulls the image from that registry.\n\
             # For GKE, these three name the context `gcloud container clusters get-credentials` writes:\n\
             # gke_cluster: my-cluster\n\
             # gcp_project: my-project\n\
             # gcp_region: us-central1\n\
             # Or any cluster: k8s_context: my-context\n\
             # k8s_namespace: {{name}}\n\
             # Pods per Deployment (1 by default); more only if the service keeps no state in memory.\n\
             # k8s_replicas: 2\n\
             # k8s_cpu: 250m\n\
             # k8s_memory: 512Mi\n\
             # k8s_service_type: LoadBalancer\n",
    readme: include_str!("../../../template/common/README-gke.md"),
    next: ", set `docker_repo` and the cluster (`gke_cluster` or `k8s_context`) in pym-config.yaml (README.md says how, and how to try it on a local apiserver), then `cargo xtask deploy`",
    decide: &[
        "docker_repo and the gke settings in pym-config.yaml (README: the gke target)",
    ],
};

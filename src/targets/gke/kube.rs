//! The client: connecting through the kubeconfig, the APIs of the namespace, and every
//! apiserver error read from its `Status`.

use anyhow::{Result, anyhow};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::{Api, PostParams};
use kube::config::KubeConfigOptions;
use serde_json::{Value, json};

use super::check::{context_of, kubeconfig};
use super::{MANAGED_BY, Names};
use crate::config::Config;
use crate::error::hinted;

pub(super) fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| anyhow!("pymdeploy made an object its client cannot read: {e}"))
}

/// The apiserver's verdict on one call, as one error: what was asked, its `Status`,
/// what to do.
pub(super) fn kube_error(
    verb: &str,
    resource: &str,
    what: &str,
    ns: &str,
    e: kube::Error,
) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => {
            let msg = &s.message;
            match (s.code, s.reason.as_str()) {
                (403, _) | (_, "Forbidden") => hinted(
                    format!(
                        "the cluster refused to {verb} {resource} `{what}` in namespace {ns} (Forbidden): {msg}"
                    ),
                    format!(
                        "the credentials in use need `{verb}` on `{resource}` in {ns}: check with `kubectl auth can-i {verb} {resource} -n {ns}`, and ask for a Role that grants it"
                    ),
                ),
                (401, _) | (_, "Unauthorized") => hinted(
                    format!(
                        "the cluster did not accept the credentials for {verb} {resource} (Unauthorized): {msg}"
                    ),
                    "refresh them (for GKE: `gcloud auth login`; the kubeconfig's exec plugin is `gke-gcloud-auth-plugin`) and check with `kubectl get ns`",
                ),
                (409, "Conflict") => hinted(
                    format!(
                        "{verb} {resource} `{what}` in {ns}: someone changed it since it was read (Conflict): {msg}"
                    ),
                    "another deploy is running against this namespace: look with `cargo xtask status`, then run again",
                ),
                (code, reason) => {
                    anyhow!("{verb} {resource} `{what}` in {ns} failed: {reason} ({code}): {msg}")
                }
            }
        }
        kube::Error::Auth(a) => hinted(
            format!("cannot get credentials for the cluster: {a}"),
            "check the kubeconfig's user (its exec plugin, e.g. gke-gcloud-auth-plugin, must be on PATH): `kubectl get ns` shows the same error",
        ),
        other => {
            let detail = std::iter::successors(std::error::Error::source(&other), |s| s.source())
                .map(|s| s.to_string())
                .last()
                .unwrap_or_default();
            hinted(
                format!("cannot reach the cluster for {verb} {resource}: {other} {detail}"),
                "check the kubeconfig's server and the network: `kubectl cluster-info`",
            )
        }
    }
}

pub(super) fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub(super) fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

pub(super) struct Kube {
    pub(super) client: kube::Client,
    pub(super) names: Names,
    pub(super) context: String,
}

pub(super) async fn connect(c: &Config) -> Result<Kube> {
    // rustls may have more than one provider compiled in (the AWS SDK brings aws-lc-rs):
    // ring, as the rest of pymdeploy.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kubeconfig()?;
    let context = context_of(c, &kc)?;
    let opts = KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let gke = gke_cluster(&kc, &context);
    let mut config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| {
            hinted(
                format!("cannot use the kubeconfig's context `{context}`: {e}"),
                "check it with `kubectl --context {context} get ns`",
            )
        })?;
    // A GKE cluster takes Google's access tokens: where this process's Google credentials
    // are a CI job's federated identity, they stand for the kubeconfig's own (gcloud's
    // plugin, which would need gcloud logged in there).
    if gke && crate::ops::gcp::federated().is_some() {
        let token = crate::ops::gcp::google_access_token().await.map_err(|e| {
            hinted(
                format!("workload identity federation gave no token for the cluster: {e:#}"),
                "check gcp_workload_identity_provider and gcp_deploy_service_account in pym-config.yaml",
            )
        })?;
        config.auth_info.exec = None;
        config.auth_info.auth_provider = None;
        config.auth_info.token_file = None;
        config.auth_info.token = Some(token.into());
    }
    let client = kube::Client::try_from(config)
        .map_err(|e| anyhow!("cannot make a client for the context `{context}`: {e}"))?;
    Ok(Kube {
        client,
        names: Names::of(c),
        context,
    })
}

/// Whether `context` is a GKE cluster's: named as gcloud names them (`gke_<project>_…`),
/// or its user's credentials come from gcloud's `gke-gcloud-auth-plugin`.
fn gke_cluster(kc: &kube::config::Kubeconfig, context: &str) -> bool {
    let user = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone());
    let plugin = kc
        .auth_infos
        .iter()
        .find(|a| Some(&a.name) == user.as_ref())
        .and_then(|a| a.auth_info.as_ref())
        .and_then(|a| a.exec.as_ref())
        .and_then(|e| e.command.as_deref())
        .is_some_and(|c| c.ends_with("gke-gcloud-auth-plugin"));
    context.starts_with("gke_") || plugin
}

impl Kube {
    pub(super) fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.names.ns)
    }
    pub(super) fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.names.ns)
    }
    pub(super) fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.names.ns)
    }
    pub(super) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.names.ns)
    }
    pub(super) fn err(
        &self,
        verb: &str,
        resource: &str,
        what: &str,
    ) -> impl FnOnce(kube::Error) -> anyhow::Error {
        let ns = self.names.ns.clone();
        let (verb, resource, what) = (verb.to_string(), resource.to_string(), what.to_string());
        move |e| kube_error(&verb, &resource, &what, &ns, e)
    }

    /// Makes the namespace unless it exists; whether this call made it.
    pub(super) async fn ensure_namespace(&self) -> Result<bool> {
        let ns: Namespace = typed(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.names.ns, "labels": {MANAGED_BY: "pymdeploy"}}}),
        )?;
        match Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            r => r
                .map(|_| true)
                .map_err(self.err("create", "namespaces", &self.names.ns)),
        }
    }
}

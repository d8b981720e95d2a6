//! The refusals that need no cluster: names, sizes, the Service type, and the kubeconfig
//! context each environment deploys through.

use anyhow::Result;
use kube::config::Kubeconfig;

use super::{APP_MAX, Names};
use crate::config::Config;
use crate::error::hinted;

/// Why `name` is not a DNS-1123 label Kubernetes takes, if it is not.
pub(super) fn bad_label(name: &str, max: usize) -> Option<String> {
    if name.is_empty() || name.len() > max {
        return Some(format!("it must be 1 to {max} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("it may hold only lowercase letters, digits and '-'".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("it must start and end with a letter or digit".into());
    }
    None
}

/// A Kubernetes quantity (`250m`, `1`, `512Mi`, `1.5Gi`, `1e3`).
pub(super) fn is_quantity(q: &str) -> bool {
    let digits = q.trim_end_matches(|ch: char| ch.is_ascii_alphabetic());
    let suffix = &q[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|b| *b == b'.').count() <= 1
        && [
            "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
        ]
        .contains(&suffix)
}

pub(super) fn memory(c: &Config) -> Option<&String> {
    c.k8s_memory.as_ref().or(c.gcp_memory.as_ref())
}

/// Every refusal that needs no cluster: names, sizes, the Service type.
pub(super) fn check_config(c: &Config) -> Result<()> {
    if let Some(why) = bad_label(&c.name, APP_MAX) {
        return Err(hinted(
            format!(
                "{}: `name: {}` cannot name Kubernetes objects: {why}",
                c.at("name"),
                c.name
            ),
            format!(
                "the gke target names its Deployments `<name>-<version>`: use a lowercase `name` of at most {APP_MAX} characters"
            ),
        ));
    }
    let ns = Names::of(c).ns;
    if let Some(why) = bad_label(&ns, 63) {
        return Err(hinted(
            format!(
                "{}: the namespace `{ns}` is not one Kubernetes takes: {why}",
                c.at(if c.k8s_namespace.is_some() { "k8s_namespace" } else { "name" })
            ),
            "set `k8s_namespace` to a lowercase DNS label, e.g. `my-team`",
        ));
    }
    for (key, value) in [("k8s_cpu", c.k8s_cpu.as_ref()), ("k8s_memory", memory(c))] {
        if let Some(v) = value.filter(|v| !is_quantity(v)) {
            return Err(hinted(
                format!("{}: `{key}: {v}` is not a Kubernetes quantity", c.at(key)),
                "write it as Kubernetes does: CPU as `250m` or `1`, memory as `512Mi` or `2Gi`",
            ));
        }
    }
    if c.k8s_timeout.get() < 10 {
        return Err(hinted(
            format!(
                "{}: `k8s_timeout: {}` is too short for any rollout",
                c.at("k8s_timeout"),
                c.k8s_timeout
            ),
            "give rollouts at least 10 seconds (Kubernetes' default is 600)",
        ));
    }
    Ok(())
}

/// The kubeconfig as kubectl reads it (`KUBECONFIG`, its files merged, else
/// `~/.kube/config`).
pub(super) fn kubeconfig() -> Result<Kubeconfig> {
    Kubeconfig::read().map_err(|e| {
        hinted(
            format!("cannot read the kubeconfig: {e}"),
            "point KUBECONFIG at one (for GKE: `gcloud container clusters get-credentials CLUSTER --region REGION --project PROJECT` writes it)",
        )
    })
}

/// The context an environment deploys through: `k8s_context`, else the one gcloud names
/// for `gke_cluster`, else the kubeconfig's current one; an error with the exact command
/// that would add it when the kubeconfig has no such context.
pub(super) fn context_of(c: &Config, kc: &Kubeconfig) -> Result<String> {
    let file = c.at(if c.k8s_context.is_some() || c.gke_cluster.is_none() {
        "k8s_context"
    } else {
        "gke_cluster"
    });
    let gke = match (&c.gke_cluster, &c.gcp_project, &c.gcp_region) {
        (Some(cluster), Some(project), Some(region)) => Some((
            format!("gke_{project}_{region}_{cluster}"),
            format!(
                "gcloud container clusters get-credentials {cluster} --region {region} --project {project}"
            ),
        )),
        (Some(cluster), _, _) => Some((
            String::new(),
            format!(
                "set gcp_project and gcp_region, then `gcloud container clusters get-credentials {cluster} --region REGION --project PROJECT`"
            ),
        )),
        _ => None,
    };
    let wanted = c
        .k8s_context
        .clone()
        .or_else(|| gke.as_ref().map(|g| g.0.clone()).filter(|n| !n.is_empty()))
        .or_else(|| kc.current_context.clone().filter(|n| !n.is_empty()));
    let known: Vec<&str> = kc.contexts.iter().map(|n| n.name.as_str()).collect();
    let hint = |what: &str| {
        match &gke {
        Some((_, cmd)) if cmd.starts_with("gcloud") => format!("add it with `{cmd}`"),
        Some((_, how)) => how.clone(),
        None if known.is_empty() => "add the cluster's context to the kubeconfig (for GKE: `gcloud container clusters get-credentials CLUSTER --region REGION --project PROJECT`)".to_string(),
        None => format!("{what}: the kubeconfig has {} (`kubectl config get-contexts`)", known.join(", ")),
    }
    };
    match wanted {
        Some(w) if known.contains(&w.as_str()) => Ok(w),
        Some(w) => Err(hinted(
            format!("{file}: the kubeconfig has no context `{w}`"),
            hint("or set `k8s_context` to one it has"),
        )),
        None => Err(hinted(
            format!(
                "{file}: no Kubernetes context: the kubeconfig has no current context and neither `k8s_context` nor `gke_cluster` is set"
            ),
            hint("set `k8s_context`"),
        )),
    }
}

//! The gke target: any Kubernetes cluster a kubeconfig reaches (GKE's included), driven by
//! the `kube` client with k8s-openapi's types (feature `gke`).
//!
//! In the namespace `k8s_namespace` (default `name`), one Deployment per role: `<app>-staging`
//! for staging and `<app>-<version>` per live version, each with its own Secret of the
//! `env_secrets` (referenced by `secretKeyRef`, never as values), readiness, liveness and
//! startup probes on `health_path`, a `preStop` sleep and a grace period so a stopping pod
//! finishes what it serves. Two Services: `<app>-staging` selects the staging pods, `<app>`
//! selects the pods of one live version.
//!
//! - `stage` moves the staging Deployment to the pushed image **by digest** with
//!   `PYM_ENV=staging` and waits as `kubectl rollout status` does; a rollout that fails
//!   shows the pods' events and last log lines, and puts the Deployment back as it was.
//! - `promote` is blue/green: the version's own Deployment (`PYM_ENV=live`, the staged
//!   digest) rolled out, each of its pods checked through the apiserver's pod proxy (health,
//!   then `version_path` names the version with `PYM_ENV=live`), then the live Service's
//!   selector moved to it in one update that carries the resourceVersion it was read at (a
//!   Conflict is read again and retried, unless someone else moved live meanwhile), live
//!   checked to serve it, and only then the version live before scaled to zero, kept for
//!   `rollback` (`keep_previous` of them; older ones deleted). A failure before the switch
//!   takes back what it made; a failure after it moves the selector back.
//! - `promote` makes live what staging runs (the staging Deployment's version and digest,
//!   read through the target's `Ledger`), never HEAD's version, and only once it passed
//!   staging acceptance on that digest (checked by `steps::deploy`).
//! - The deploy record (`targets::history`: accepted, live, rolled back) is the ConfigMap
//!   `<app>-deploy-record` in the live namespace, written with the resourceVersion read (a
//!   Conflict is read again), so any machine can roll back; rollback, cleanup and status go
//!   by it. A cluster with only an older pymdeploy's annotations on the live Service
//!   (`pymdeploy.dev/live-history`, `pymdeploy.dev/rolled-back`) is read by converting
//!   them. Its first write (staging acceptance's, usually) makes the live namespace if need
//!   be, so a first promote never makes, nor on failure deletes, the namespace holding it.
//! - Each command observes the cluster, decides its `Act`s (pure, unit-tested) and hands
//!   them to `targets::plan::execute` through the `Cluster` actor; `--dry-run` prints the
//!   same lines.
//!
//! Every apiserver error is read from its `Status` (reason, message, code), never from text.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event as KubeEvent, Namespace, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use super::history::{self, Event, History};
use super::plan::{self, Actor};
use super::{Address, Cleanup, Fate, Ledger, Staged, Table, url_host};
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::output::StepProgress;

const NAME: &str = "app.kubernetes.io/name";
const VERSION: &str = "app.kubernetes.io/version";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Which environment a Deployment and its pods are for: `staging` or `live`.
const ENV: &str = "pymdeploy.dev/env";
/// On pods: the Deployment they belong to (its selector).
const DEPLOYMENT: &str = "pymdeploy.dev/deployment";
/// What older pymdeploys recorded on the live Service (comma-separated versions, oldest
/// first): read only, converted, when there is no deploy record yet.
const LIVE_HISTORY: &str = "pymdeploy.dev/live-history";
const ROLLED_BACK: &str = "pymdeploy.dev/rolled-back";
/// The key of the deploy record's ConfigMap that holds `History::render()`.
const RECORD_KEY: &str = "history";
/// On a live Deployment: when its version went live last.
const LIVE_SINCE: &str = "pymdeploy.dev/live-since";
const CONTAINER: &str = "app";
/// The longest `name` as a Deployment name's stem: `<app>-<version>` must fit a label value
/// (63), with room for a dirty version.
const APP_MAX: usize = 30;
const SERVICE_TYPES: [&str; 3] = ["LoadBalancer", "NodePort", "ClusterIP"];

pub struct GkeTarget;

/// The names pymdeploy gives its objects in the cluster.
#[derive(Clone, Debug)]
pub struct Names {
    pub app: String,
    pub ns: String,
}

impl Names {
    pub fn of(c: &Config) -> Names {
        Names {
            app: c.name.clone(),
            ns: c.k8s_namespace.clone().unwrap_or_else(|| c.name.clone()),
        }
    }
    pub fn staging(&self) -> String {
        format!("{}-staging", self.app)
    }
    pub fn live(&self, version: &str) -> String {
        format!("{}-{version}", self.app)
    }
    /// The ConfigMap holding the deploy record, in the live namespace.
    pub fn record(&self) -> String {
        format!("{}-deploy-record", self.app)
    }
    pub fn service(&self, env: PymEnv) -> String {
        match env {
            PymEnv::Live => self.app.clone(),
            _ => self.staging(),
        }
    }
}

/// Why `name` is not a DNS-1123 label Kubernetes takes, if it is not.
fn bad_label(name: &str, max: usize) -> Option<String> {
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
fn is_quantity(q: &str) -> bool {
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

fn memory(c: &Config) -> Option<&String> {
    c.k8s_memory.as_ref().or(c.gcp_memory.as_ref())
}

/// Every refusal that needs no cluster: names, sizes, the Service type.
fn check_config(c: &Config, file: &str) -> Result<()> {
    if let Some(why) = bad_label(&c.name, APP_MAX) {
        return Err(hinted(
            format!(
                "{file}: `name: {}` cannot name Kubernetes objects: {why}",
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
            format!("{file}: the namespace `{ns}` is not one Kubernetes takes: {why}"),
            "set `k8s_namespace` to a lowercase DNS label, e.g. `my-team`",
        ));
    }
    for (key, value) in [("k8s_cpu", c.k8s_cpu.as_ref()), ("k8s_memory", memory(c))] {
        if let Some(v) = value.filter(|v| !is_quantity(v)) {
            return Err(hinted(
                format!("{file}: `{key}: {v}` is not a Kubernetes quantity"),
                "write it as Kubernetes does: CPU as `250m` or `1`, memory as `512Mi` or `2Gi`",
            ));
        }
    }
    if !SERVICE_TYPES.contains(&c.k8s_service_type.as_str()) {
        return Err(hinted(
            format!(
                "{file}: `k8s_service_type: {}` is not a Service type pymdeploy makes",
                c.k8s_service_type
            ),
            "use LoadBalancer, NodePort or ClusterIP",
        ));
    }
    if c.k8s_replicas == 0 {
        return Err(hinted(
            format!("{file}: `k8s_replicas: 0` would run nothing"),
            "set `k8s_replicas` to 1 or more",
        ));
    }
    if c.k8s_timeout < 10 {
        return Err(hinted(
            format!(
                "{file}: `k8s_timeout: {}` is too short for any rollout",
                c.k8s_timeout
            ),
            "give rollouts at least 10 seconds (Kubernetes' default is 600)",
        ));
    }
    Ok(())
}

/// The kubeconfig as kubectl reads it (`KUBECONFIG`, its files merged, else
/// `~/.kube/config`).
fn kubeconfig() -> Result<Kubeconfig> {
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
fn context_of(c: &Config, kc: &Kubeconfig, file: &str) -> Result<String> {
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

// ---------------------------------------------------------------------------------------
// What is seen, and the decisions (pure)

/// A Deployment pymdeploy made.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dep {
    pub name: String,
    /// `staging` or `live`.
    pub env: String,
    pub version: String,
    pub image: String,
    pub replicas: i32,
    pub ready: i32,
    pub created: String,
    pub live_since: Option<String>,
}

/// A Service pymdeploy made.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Svc {
    pub name: String,
    pub selector: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Its external address (`status.loadBalancer.ingress`), if it has one.
    pub external: Option<String>,
    pub port: u16,
}

impl Svc {
    /// The version the live Service selects.
    pub fn selects(&self) -> Option<&str> {
        self.selector.get(VERSION).map(String::as_str)
    }
    /// The record older pymdeploys kept in the Service's annotations, as a deploy record:
    /// each version live in its order, then those rolled back from (entries at time 0).
    pub fn legacy_history(&self) -> History {
        let mut h = History::default();
        for v in split_list(self.annotations.get(LIVE_HISTORY)) {
            h.push(Event::Live, &v, None, 0);
        }
        for v in split_list(self.annotations.get(ROLLED_BACK)) {
            h.push(Event::RolledBack, &v, None, 0);
        }
        h
    }
}

fn split_list(v: Option<&String>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// The namespace's pymdeploy objects of this service.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub namespace: bool,
    pub deployments: Vec<Dep>,
    pub live: Option<Svc>,
    pub staging: Option<Svc>,
    /// The deploy record (`<app>-deploy-record`, else the live Service's old annotations).
    pub history: History,
}

impl Seen {
    fn dep(&self, name: &str) -> Option<&Dep> {
        self.deployments.iter().find(|d| d.name == name)
    }
    /// The versions whose live Deployments exist, newest first.
    pub fn available(&self) -> Vec<String> {
        self.deployments
            .iter()
            .filter(|d| d.env == "live")
            .map(|d| d.version.clone())
            .collect()
    }
    /// The version the live Service selects.
    pub fn selects(&self) -> Option<&str> {
        self.live.as_ref().and_then(Svc::selects)
    }
    /// The live Deployment the live Service selects.
    pub fn current(&self, names: &Names) -> Option<&Dep> {
        self.live
            .as_ref()
            .and_then(Svc::selects)
            .and_then(|v| self.dep(&names.live(v)))
    }
}

/// One thing `stage`, `promote` or `rollback` does, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    Namespace,
    /// Puts the `env_secrets` of `env` in the Secret `name` (the Deployment's own).
    Secret {
        name: String,
        env: PymEnv,
    },
    /// Creates the Deployment, or moves it to this spec.
    Deploy {
        name: String,
        version: String,
        image: String,
        env: PymEnv,
        replicas: i32,
    },
    Scale {
        name: String,
        replicas: i32,
    },
    /// Waits as `kubectl rollout status` does.
    Rollout {
        name: String,
    },
    /// Each pod of `name` answers the service contract (through the apiserver's pod proxy).
    CheckPods {
        name: String,
        version: String,
        env: PymEnv,
    },
    /// Makes the staging Service, or gives it the configured type and port.
    Service {
        env: PymEnv,
    },
    /// Moves the live Service's selector from `from` to `to`, then adds `record` to the
    /// deploy record.
    Select {
        from: Option<String>,
        to: String,
        record: Vec<(Event, String)>,
    },
    /// The live Service serves `version` with `PYM_ENV=live`.
    Verify {
        version: String,
    },
    /// Deletes a Deployment and its Secret.
    Delete {
        name: String,
    },
    // The undos, which `plan::execute` runs in reverse when a later act fails.
    /// The namespace this run made (with what it made in it).
    DeleteNamespace,
    DeleteDeployment {
        name: String,
    },
    RestoreDeployment(Box<Deployment>),
    DeleteSecret {
        name: String,
    },
    RestoreSecret(Box<Secret>),
    /// Moves the selector back from `from` (and records it), or deletes the live Service
    /// when nothing was live before.
    Unselect {
        back_to: Option<String>,
        from: String,
    },
}

impl Act {
    pub fn describe(&self, names: &Names) -> String {
        let ns = &names.ns;
        match self {
            Act::Namespace => format!("create namespace {ns}"),
            Act::Secret { name, env } => format!("put the {env} env_secrets in secret {ns}/{name}"),
            Act::Deploy {
                name,
                version,
                image,
                env,
                replicas,
            } => format!(
                "deploy {ns}/{name}: {version} ({image}), PYM_ENV={env}, {replicas} replicas"
            ),
            Act::Scale { name, replicas } => format!("scale {ns}/{name} to {replicas}"),
            Act::Rollout { name } => format!("wait for {ns}/{name} to roll out"),
            Act::CheckPods { name, version, env } => {
                format!("check each pod of {ns}/{name} serves {version} with PYM_ENV={env}")
            }
            Act::Service { env } => format!(
                "create service {ns}/{}, or give it the configured type and port",
                names.service(*env)
            ),
            Act::Select {
                from: Some(f), to, ..
            } => format!("switch service {ns}/{} from {f} to {to}", names.app),
            Act::Select { from: None, to, .. } => {
                format!("point service {ns}/{} at {to}", names.app)
            }
            Act::Verify { version } => format!("check live serves {version} with PYM_ENV=live"),
            Act::Delete { name } => format!("delete {ns}/{name} and its secret"),
            Act::DeleteNamespace => format!("delete the new namespace {ns}"),
            Act::DeleteDeployment { name } => format!("delete the new deployment {ns}/{name}"),
            Act::RestoreDeployment(d) => format!(
                "put deployment {ns}/{} back as it was",
                d.metadata.name.as_deref().unwrap_or_default()
            ),
            Act::DeleteSecret { name } => format!("delete the new secret {ns}/{name}"),
            Act::RestoreSecret(s) => format!(
                "put secret {ns}/{} back as it was",
                s.metadata.name.as_deref().unwrap_or_default()
            ),
            Act::Unselect {
                back_to: Some(v),
                from,
            } => format!("switch service {ns}/{} back from {from} to {v}", names.app),
            Act::Unselect { back_to: None, .. } => {
                format!("delete the new live service {ns}/{}", names.app)
            }
        }
    }
}

/// Stage: the staging Deployment to `image` (a digest), rolled out.
pub fn decide_stage(
    seen: &Seen,
    names: &Names,
    version: &str,
    image: &str,
    replicas: i32,
    secrets: bool,
) -> Result<Vec<Act>> {
    if !image.contains("@sha256:") {
        bail!(
            "Kubernetes runs images by digest here, and {image} has none: push it first (`cargo xtask push`)"
        );
    }
    let name = names.staging();
    let mut acts = Vec::new();
    if !seen.namespace {
        acts.push(Act::Namespace);
    }
    if secrets {
        acts.push(Act::Secret {
            name: name.clone(),
            env: PymEnv::Staging,
        });
    }
    acts.push(Act::Deploy {
        name: name.clone(),
        version: version.into(),
        image: image.into(),
        env: PymEnv::Staging,
        replicas,
    });
    acts.push(Act::Rollout { name: name.clone() });
    acts.push(Act::CheckPods {
        name,
        version: version.into(),
        env: PymEnv::Staging,
    });
    acts.push(Act::Service {
        env: PymEnv::Staging,
    });
    Ok(acts)
}

/// The previous versions to keep and to delete, as Deployment names, with `live` live and
/// `history` the record: those beyond the `keep` a rollback can use go
/// (`history::beyond_kept`), so what is kept is what rollback needs.
fn retire(
    seen: &Seen,
    names: &Names,
    history: &History,
    live: Option<&str>,
    keep: usize,
) -> (Vec<String>, Vec<String>) {
    let mut available = seen.available();
    if let Some(l) = live.filter(|l| !available.iter().any(|a| a == l)) {
        available.insert(0, l.to_string());
    }
    let previous = history::previous(history, live, &available);
    let gone = history::beyond_kept(history, live, &available, keep);
    let kept = previous
        .iter()
        .filter(|v| !gone.contains(v))
        .map(|v| names.live(v))
        .collect();
    (kept, gone.iter().map(|v| names.live(v)).collect())
}

/// Promote what staging runs (`staged`: its version and image, never HEAD's): its live
/// Deployment rolled out and checked, the switch (recorded), the check, then the version
/// live before scaled to zero and those beyond `keep` deleted.
pub fn decide_promote(
    seen: &Seen,
    names: &Names,
    staged: Option<&Staged>,
    replicas: i32,
    secrets: bool,
    keep: usize,
) -> Result<Vec<Act>> {
    let staged = staged.ok_or_else(|| {
        hinted(
            format!("cannot promote: nothing runs on staging in {}", names.ns),
            "stage and test a version first: `cargo xtask deploy --from stage`",
        )
    })?;
    let (version, image) = (staged.version.as_str(), staged.image.as_str());
    if !image.contains('@') {
        return Err(hinted(
            format!("cannot promote {version}: staging runs {image}, which names no digest"),
            "stage it again (`cargo xtask deploy --from stage`): Kubernetes runs images by digest here",
        ));
    }
    let name = names.live(version);
    let from = seen.selects().map(String::from);
    if from.as_deref() == Some(version)
        && seen
            .dep(&name)
            .is_some_and(|d| d.ready >= d.replicas && d.replicas > 0 && d.image == image)
    {
        return Ok(vec![Act::Verify {
            version: version.into(),
        }]);
    }
    // What the record will say once the selector moved (a live version it does not know,
    // left by a record written elsewhere, first).
    let mut record = Vec::new();
    if let Some(f) = from.as_deref().filter(|f| *f != version)
        && seen.history.live_order().first() != Some(&f)
    {
        record.push((Event::Live, f.to_string()));
    }
    record.push((Event::Live, version.to_string()));
    let mut acts = Vec::new();
    if !seen.namespace {
        acts.push(Act::Namespace);
    }
    if secrets {
        acts.push(Act::Secret {
            name: name.clone(),
            env: PymEnv::Live,
        });
    }
    acts.push(Act::Deploy {
        name: name.clone(),
        version: version.into(),
        image: image.into(),
        env: PymEnv::Live,
        replicas,
    });
    acts.push(Act::Rollout { name: name.clone() });
    acts.push(Act::CheckPods {
        name: name.clone(),
        version: version.into(),
        env: PymEnv::Live,
    });
    let mut after = seen.history.clone();
    for (e, v) in &record {
        after.push(*e, v, None, i64::MAX);
    }
    acts.push(Act::Select {
        from: from.clone(),
        to: version.into(),
        record,
    });
    acts.push(Act::Verify {
        version: version.into(),
    });
    acts.extend(after_switch(
        seen,
        names,
        &after,
        version,
        from.as_deref(),
        keep,
    ));
    Ok(acts)
}

/// After a switch to `live`: the one live before scaled to zero, those beyond `keep`
/// deleted (by `history`, the record as the switch left it).
fn after_switch(
    seen: &Seen,
    names: &Names,
    history: &History,
    live: &str,
    from: Option<&str>,
    keep: usize,
) -> Vec<Act> {
    let mut acts = Vec::new();
    let (kept, gone) = retire(seen, names, history, Some(live), keep);
    if let Some(f) = from.filter(|f| *f != live) {
        let old = names.live(f);
        if seen.dep(&old).is_some_and(|d| d.replicas > 0) && !gone.contains(&old) {
            acts.push(Act::Scale {
                name: old,
                replicas: 0,
            });
        }
    }
    for k in kept {
        if seen.dep(&k).is_some_and(|d| d.replicas > 0)
            && Some(k.as_str()) != from.map(|f| names.live(f)).as_deref()
        {
            acts.push(Act::Scale {
                name: k,
                replicas: 0,
            });
        }
    }
    acts.extend(gone.into_iter().map(|name| Act::Delete { name }));
    acts
}

/// Rollback: the version `history::rollback_to` chooses (`to` when named; never back to
/// one a rollback left otherwise) scaled up, checked, selected (recorded); the current one
/// scaled to zero. Returns the current version, the one rolled back to, and the acts.
pub fn decide_rollback(
    seen: &Seen,
    names: &Names,
    replicas: i32,
    to: Option<&str>,
) -> Result<(String, String, Vec<Act>)> {
    if seen.live.is_none() {
        return Err(hinted(
            format!(
                "nothing is live in {}: there is nothing to roll back",
                names.ns
            ),
            "deploy first: `cargo xtask deploy`",
        ));
    }
    let current = seen
        .selects()
        .ok_or_else(|| {
            anyhow!(
                "the live service {}/{} selects no version",
                names.ns,
                names.app
            )
        })?
        .to_string();
    let target = history::rollback_to(&seen.history, Some(&current), &seen.available(), to)?;
    let name = names.live(&target);
    Ok((
        current.clone(),
        target.clone(),
        vec![
            Act::Scale {
                name: name.clone(),
                replicas,
            },
            Act::Rollout { name: name.clone() },
            Act::CheckPods {
                name,
                version: target.clone(),
                env: PymEnv::Live,
            },
            Act::Select {
                from: Some(current.clone()),
                to: target.clone(),
                record: vec![
                    (Event::RolledBack, current.clone()),
                    (Event::Live, target.clone()),
                ],
            },
            Act::Verify {
                version: target.clone(),
            },
            Act::Scale {
                name: names.live(&current),
                replicas: 0,
            },
        ],
    ))
}

/// Cleanup: the previous live Deployments, kept or deleted as `retire` says: those beyond
/// `keep` a rollback can use go.
pub fn decide_cleanup(seen: &Seen, names: &Names, keep: usize) -> Vec<(Dep, Fate)> {
    let (kept, gone) = retire(seen, names, &seen.history, seen.selects(), keep);
    let fate = |n: &String| match gone.contains(n) {
        true => Fate::Go {
            done: false,
            did: "deleted",
            would: "delete",
        },
        false => Fate::Keep(None),
    };
    kept.iter()
        .chain(&gone)
        .filter_map(|n| seen.dep(n).map(|d| (d.clone(), fate(n))))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The objects

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
                        "startupProbe": probe(1, c.health_timeout.clamp(1, 3600) as u32),
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

fn service(c: &Config, names: &Names, env: PymEnv, version: Option<&str>) -> Value {
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
fn conform(svc: &mut Value, c: &Config) -> bool {
    let before = svc.clone();
    svc["spec"]["type"] = json!(c.k8s_service_type);
    let node_port = svc
        .pointer("/spec/ports/0/nodePort")
        .cloned()
        .filter(|_| c.k8s_service_type != "ClusterIP");
    let mut port = json!({"name": "http", "port": c.k8s_service_port, "targetPort": "http", "protocol": "TCP"});
    if let Some(n) = node_port {
        port["nodePort"] = n;
    }
    svc["spec"]["ports"] = json!([port]);
    *svc != before
}

/// Whether a Deployment (as JSON) is rolled out, as `kubectl rollout status` says, with
/// every replica ready.
fn rolled_out(v: &Value) -> bool {
    let i = |p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let want = v
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    want > 0
        && i("/metadata/generation") <= i("/status/observedGeneration")
        && i("/status/updatedReplicas") >= want
        && i("/status/replicas") <= i("/status/updatedReplicas")
        && i("/status/availableReplicas") >= want
        && i("/status/readyReplicas") >= want
}

fn dep_of(d: &Deployment) -> Dep {
    let v = serde_json::to_value(d).unwrap_or_default();
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let i = |p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0) as i32;
    let label = |k: &str| {
        v["metadata"]["labels"][k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    Dep {
        name: s("/metadata/name"),
        env: label(ENV),
        version: label(VERSION),
        image: s("/spec/template/spec/containers/0/image"),
        replicas: v
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1) as i32,
        ready: i("/status/readyReplicas"),
        created: s("/metadata/creationTimestamp"),
        live_since: v["metadata"]["annotations"][LIVE_SINCE]
            .as_str()
            .map(String::from),
    }
}

fn svc_of(s: &Service) -> Svc {
    let v = serde_json::to_value(s).unwrap_or_default();
    let map = |p: &str| -> BTreeMap<String, String> {
        v.pointer(p)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let ingress = v.pointer("/status/loadBalancer/ingress/0");
    Svc {
        name: v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        selector: map("/spec/selector"),
        annotations: map("/metadata/annotations"),
        external: ingress
            .and_then(|i| i["ip"].as_str().or(i["hostname"].as_str()))
            .map(String::from),
        port: v
            .pointer("/spec/ports/0/port")
            .and_then(Value::as_u64)
            .unwrap_or(80) as u16,
    }
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| anyhow!("pymdeploy made an object its client cannot read: {e}"))
}

// ---------------------------------------------------------------------------------------
// The cluster (side effects)

/// The apiserver's verdict on one call, as one error: what was asked, its `Status`,
/// what to do.
fn kube_error(verb: &str, resource: &str, what: &str, ns: &str, e: kube::Error) -> anyhow::Error {
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

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

struct Kube {
    client: kube::Client,
    names: Names,
    context: String,
}

async fn connect(c: &Config) -> Result<Kube> {
    // rustls may have more than one provider compiled in (the AWS SDK brings aws-lc-rs):
    // ring, as the rest of pymdeploy.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kubeconfig()?;
    let context = context_of(c, &kc, "pym-config")?;
    let opts = KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| {
            hinted(
                format!("cannot use the kubeconfig's context `{context}`: {e}"),
                "check it with `kubectl --context {context} get ns`",
            )
        })?;
    let client = kube::Client::try_from(config)
        .map_err(|e| anyhow!("cannot make a client for the context `{context}`: {e}"))?;
    Ok(Kube {
        client,
        names: Names::of(c),
        context,
    })
}

impl Kube {
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.names.ns)
    }
    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.names.ns)
    }
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.names.ns)
    }
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.names.ns)
    }
    fn err(
        &self,
        verb: &str,
        resource: &str,
        what: &str,
    ) -> impl FnOnce(kube::Error) -> anyhow::Error {
        let ns = self.names.ns.clone();
        let (verb, resource, what) = (verb.to_string(), resource.to_string(), what.to_string());
        move |e| kube_error(&verb, &resource, &what, &ns, e)
    }

    async fn observe(&self) -> Result<Seen> {
        let names = &self.names;
        let ns = Api::<Namespace>::all(self.client.clone())
            .get_opt(&names.ns)
            .await
            .map_err(self.err("get", "namespaces", &names.ns))?;
        if ns.is_none() {
            return Ok(Seen::default());
        }
        let selector = format!("{NAME}={},{MANAGED_BY}=pymdeploy", names.app);
        let deps = self
            .deployments()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(self.err("list", "deployments", &selector))?;
        let svc = |env: PymEnv| async move {
            let n = names.service(env);
            self.services()
                .get_opt(&n)
                .await
                .map_err(self.err("get", "services", &n))
                .map(|s| s.as_ref().map(svc_of))
        };
        let mut deployments: Vec<Dep> = deps
            .items
            .iter()
            .map(dep_of)
            .filter(|d| d.env == "staging" || d.env == "live")
            .collect();
        deployments.sort_by(|a, b| b.created.cmp(&a.created));
        let live = svc(PymEnv::Live).await?;
        let history = match self.read_record().await? {
            Some((h, _)) => h,
            None => live.as_ref().map(Svc::legacy_history).unwrap_or_default(),
        };
        Ok(Seen {
            namespace: true,
            deployments,
            live,
            staging: svc(PymEnv::Staging).await?,
            history,
        })
    }

    fn records(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.names.ns)
    }

    /// The deploy record's ConfigMap: its history and the resourceVersion it was read at;
    /// `None` when there is none (nor its namespace).
    async fn read_record(&self) -> Result<Option<(History, String)>> {
        let n = self.names.record();
        let cm = match self.records().get_opt(&n).await {
            Err(e) if not_found(&e) => None,
            r => r.map_err(self.err("get", "configmaps", &n))?,
        };
        Ok(cm.map(|cm| {
            let text = cm
                .data
                .as_ref()
                .and_then(|d| d.get(RECORD_KEY))
                .cloned()
                .unwrap_or_default();
            (
                History::parse(&text),
                cm.metadata.resource_version.unwrap_or_default(),
            )
        }))
    }

    /// The deploy record: its ConfigMap, else what the live Service's old annotations say.
    async fn history(&self) -> Result<History> {
        if let Some((h, _)) = self.read_record().await? {
            return Ok(h);
        }
        let n = self.names.service(PymEnv::Live);
        let svc = match self.services().get_opt(&n).await {
            Err(e) if not_found(&e) => None,
            r => r.map_err(self.err("get", "services", &n))?,
        };
        Ok(svc
            .as_ref()
            .map(|s| svc_of(s).legacy_history())
            .unwrap_or_default())
    }

    /// Adds `entries` to the deploy record, written with the resourceVersion it was read
    /// at and read again on a Conflict. The first write makes the ConfigMap (and the
    /// namespace, when staging acceptance records before anything was live), starting
    /// from what the live Service's old annotations say.
    async fn record(&self, entries: &[(Event, String, Option<String>)]) -> Result<()> {
        let n = self.names.record();
        let now = crate::ops::state::now();
        for attempt in 1..=5u64 {
            let (mut history, rv) = match self.read_record().await? {
                Some((h, rv)) => (h, Some(rv)),
                None => (self.history().await?, None),
            };
            for (event, version, digest) in entries {
                history.push(*event, version, digest.as_deref(), now);
            }
            let mut cm = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": n, "namespace": self.names.ns, "labels": {NAME: self.names.app, MANAGED_BY: "pymdeploy"}},
                "data": {RECORD_KEY: history.render()},
            });
            let r = match &rv {
                Some(rv) => {
                    cm["metadata"]["resourceVersion"] = json!(rv);
                    self.records()
                        .replace(&n, &PostParams::default(), &typed(cm)?)
                        .await
                }
                None => {
                    self.ensure_namespace().await?;
                    self.records()
                        .create(&PostParams::default(), &typed(cm)?)
                        .await
                }
            };
            match r {
                Ok(_) => return Ok(()),
                // Written meanwhile by another run: read again.
                Err(e) if conflict(&e) && attempt < 5 => {
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await
                }
                Err(e) => {
                    let verb = if rv.is_some() { "update" } else { "create" };
                    return Err(self.err(verb, "configmaps", &n)(e));
                }
            }
        }
        unreachable!()
    }

    /// Makes the namespace unless it exists; whether this call made it.
    async fn ensure_namespace(&self) -> Result<bool> {
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

    /// What staging runs: the staging Deployment, rolled out and ready, its version and
    /// image (by digest); `None` when there is none, or it is not all ready.
    async fn staged(&self) -> Result<Option<Staged>> {
        let n = self.names.staging();
        let d = match self.deployments().get_opt(&n).await {
            Err(e) if not_found(&e) => None,
            r => r.map_err(self.err("get", "deployments", &n))?,
        };
        let Some(d) = d else { return Ok(None) };
        let v = serde_json::to_value(&d)?;
        if !rolled_out(&v) {
            return Ok(None);
        }
        let dep = dep_of(&d);
        let digest = dep
            .image
            .rsplit_once('@')
            .map_or(dep.image.as_str(), |(_, d)| d)
            .to_string();
        Ok(Some(Staged {
            version: dep.version,
            image: dep.image,
            digest,
        }))
    }

    /// `observe`, with the staging Deployment read where staging runs: another cluster
    /// or namespace when the staging overlay names one (PyMacaron's separate clusters).
    async fn observe_with_staging(&self, ctx: &Ctx) -> Result<Seen> {
        let mut seen = self.observe().await?;
        let sc = ctx.config_for(PymEnv::Staging)?;
        let staging = Names::of(&sc);
        let kc = kubeconfig()?;
        if context_of(&sc, &kc, "pym-config (for staging)")? == self.context
            && staging.ns == self.names.ns
        {
            return Ok(seen);
        }
        let there = connect(&sc).await?.observe().await?;
        seen.deployments.retain(|d| d.env != "staging");
        seen.deployments
            .extend(there.deployments.into_iter().filter(|d| d.env == "staging"));
        Ok(seen)
    }

    /// Does one act; returns what undoes it, if anything does.
    async fn run_act(
        &self,
        c: &Config,
        a: &Act,
        progress: &StepProgress<'_>,
    ) -> Result<Option<Act>> {
        let names = &self.names;
        match a {
            Act::Namespace => {
                if self.ensure_namespace().await? {
                    return Ok(Some(Act::DeleteNamespace));
                }
            }
            Act::Secret { name, .. } => {
                let values: BTreeMap<String, String> =
                    crate::ops::service::secrets(c)?.into_iter().collect();
                let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": name, "namespace": names.ns, "labels": {NAME: names.app, MANAGED_BY: "pymdeploy"}}, "stringData": values});
                // `data` replaced whole: a key no longer listed goes.
                let old = self
                    .put(&self.secrets(), "secrets", name, secret, |_, want| {
                        want["data"] = json!({})
                    })
                    .await?;
                return Ok(Some(old.map_or_else(
                    || Act::DeleteSecret { name: name.clone() },
                    |o| Act::RestoreSecret(Box::new(o)),
                )));
            }
            Act::Deploy {
                name,
                version,
                image,
                env,
                replicas,
            } => {
                let want = deployment(c, names, name, version, image, *env, *replicas);
                let keep_since = |old: &Deployment, want: &mut Value| {
                    if let Some(since) = old
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(LIVE_SINCE))
                    {
                        want["metadata"]["annotations"][LIVE_SINCE] = json!(since);
                    }
                };
                let old = self
                    .put(&self.deployments(), "deployments", name, want, keep_since)
                    .await?;
                return Ok(Some(old.map_or_else(
                    || Act::DeleteDeployment { name: name.clone() },
                    |o| Act::RestoreDeployment(Box::new(o)),
                )));
            }
            Act::Scale { name, replicas } => {
                let old = self.deployments().get(name).await.map_err(self.err(
                    "get",
                    "deployments",
                    name,
                ))?;
                self.scale(name, *replicas).await?;
                return Ok(Some(Act::Scale {
                    name: name.clone(),
                    replicas: old.spec.and_then(|s| s.replicas).unwrap_or(1),
                }));
            }
            Act::Rollout { name } => self.rollout(c, name, progress).await?,
            Act::CheckPods { name, version, env } => {
                self.check_pods(c, name, version, *env, progress).await?
            }
            Act::Service { env } => {
                let n = names.service(*env);
                match self
                    .services()
                    .get_opt(&n)
                    .await
                    .map_err(self.err("get", "services", &n))?
                {
                    None => {
                        self.services()
                            .create(
                                &PostParams::default(),
                                &typed(service(c, names, *env, None))?,
                            )
                            .await
                            .map_err(self.err("create", "services", &n))?;
                    }
                    Some(now) => {
                        let mut v = serde_json::to_value(&now)?;
                        if conform(&mut v, c) {
                            self.services()
                                .replace(&n, &PostParams::default(), &typed(v)?)
                                .await
                                .map_err(self.err("update", "services", &n))?;
                        }
                    }
                }
            }
            Act::Select { from, to, record } => {
                self.select(c, from.as_deref(), to, progress).await?;
                let entries: Vec<_> = record.iter().map(|(e, v)| (*e, v.clone(), None)).collect();
                // The record says what the selector does: unwritten, the selector goes back.
                if let Err(e) = self.record(&entries).await {
                    let back = match from {
                        Some(f) => self.select(c, Some(to), f, progress).await,
                        None => self.unselect().await,
                    };
                    return Err(match back {
                        Ok(()) => e.context(format!(
                            "the deploy record was not written, so the live service was put back to {}",
                            from.as_deref().unwrap_or("nothing")
                        )),
                        Err(b) => e.context(format!(
                            "the deploy record was not written, and putting the live service back failed too: {b:#}"
                        )),
                    });
                }
                // When it went live, for `status`; the switch stands without it.
                let patch = json!({"metadata": {"annotations": {LIVE_SINCE: k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}}});
                let name = names.live(to);
                if let Err(e) = self
                    .deployments()
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    progress.line(&format!(
                        "warning: {name} does not say since when it is live: {e}"
                    ));
                }
                return Ok(Some(Act::Unselect {
                    back_to: from.clone(),
                    from: to.clone(),
                }));
            }
            Act::Verify { version } => {
                let reach = self.reach(c, PymEnv::Live).await?;
                check_serves(self, c, &reach, version, PymEnv::Live).await?;
                progress.line(&format!(
                    "{} serves {version} with PYM_ENV=live",
                    reach.describe()
                ));
            }
            Act::Delete { name } => self.delete(name).await?,
            Act::DeleteNamespace => {
                let ns = &self.names.ns;
                Api::<Namespace>::all(self.client.clone())
                    .delete(ns, &DeleteParams::background())
                    .await
                    .map_err(self.err("delete", "namespaces", ns))?;
            }
            Act::DeleteDeployment { name } => {
                self.deployments()
                    .delete(name, &DeleteParams::background())
                    .await
                    .map_err(self.err("delete", "deployments", name))?;
            }
            Act::RestoreDeployment(old) => {
                let n = old.metadata.name.clone().unwrap_or_default();
                let now =
                    self.deployments()
                        .get(&n)
                        .await
                        .map_err(self.err("get", "deployments", &n))?;
                let mut back = serde_json::to_value(old.as_ref())?;
                back["metadata"]["resourceVersion"] = json!(now.metadata.resource_version);
                back.as_object_mut().map(|o| o.remove("status"));
                self.deployments()
                    .replace(&n, &PostParams::default(), &typed(back)?)
                    .await
                    .map_err(self.err("update", "deployments", &n))?;
            }
            Act::DeleteSecret { name } => {
                self.secrets()
                    .delete(name, &DeleteParams::default())
                    .await
                    .map_err(self.err("delete", "secrets", name))?;
            }
            Act::RestoreSecret(old) => {
                let n = old.metadata.name.clone().unwrap_or_default();
                let now = self
                    .secrets()
                    .get(&n)
                    .await
                    .map_err(self.err("get", "secrets", &n))?;
                let mut back = old.as_ref().clone();
                back.metadata.resource_version = now.metadata.resource_version;
                self.secrets()
                    .replace(&n, &PostParams::default(), &back)
                    .await
                    .map_err(self.err("update", "secrets", &n))?;
            }
            Act::Unselect { back_to, from } => {
                match back_to {
                    // The first live version: nothing was live before, so the Service goes.
                    None => self.unselect().await?,
                    Some(to) => self.select(c, Some(from), to, progress).await?,
                }
                // The record says so: a rollback went away from `from`.
                let mut entries = vec![(Event::RolledBack, from.clone(), None)];
                entries.extend(back_to.iter().map(|v| (Event::Live, v.clone(), None)));
                if let Err(e) = self.record(&entries).await {
                    progress.line(&format!(
                        "warning: the deploy record does not say {from} was switched away from: {e:#}"
                    ));
                }
            }
        }
        Ok(None)
    }

    /// Deletes a Deployment (its pods with it) and its Secret; gone already is fine.
    async fn delete(&self, name: &str) -> Result<()> {
        match self
            .deployments()
            .delete(name, &DeleteParams::background())
            .await
        {
            Err(e) if !not_found(&e) => return Err(self.err("delete", "deployments", name)(e)),
            _ => {}
        }
        match self.secrets().delete(name, &DeleteParams::default()).await {
            Err(e) if !not_found(&e) => Err(self.err("delete", "secrets", name)(e)),
            _ => Ok(()),
        }
    }

    /// Creates `want`, or replaces the object there (with the resourceVersion it was read
    /// at, and what `carry` keeps of it); returns the object that was there.
    async fn put<K>(
        &self,
        api: &Api<K>,
        resource: &str,
        name: &str,
        mut want: Value,
        carry: impl FnOnce(&K, &mut Value),
    ) -> Result<Option<K>>
    where
        K: kube::Resource
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        match api
            .get_opt(name)
            .await
            .map_err(self.err("get", resource, name))?
        {
            None => {
                api.create(&PostParams::default(), &typed(want)?)
                    .await
                    .map_err(self.err("create", resource, name))?;
                Ok(None)
            }
            Some(old) => {
                want["metadata"]["resourceVersion"] = json!(old.meta().resource_version);
                carry(&old, &mut want);
                api.replace(name, &PostParams::default(), &typed(want)?)
                    .await
                    .map_err(self.err("update", resource, name))?;
                Ok(Some(old))
            }
        }
    }

    /// Deletes the live Service (the undo of the first switch: nothing was live before).
    async fn unselect(&self) -> Result<()> {
        let n = self.names.service(PymEnv::Live);
        match self.services().delete(&n, &DeleteParams::default()).await {
            Err(e) if !not_found(&e) => Err(self.err("delete", "services", &n)(e)),
            _ => Ok(()),
        }
    }

    async fn scale(&self, name: &str, replicas: i32) -> Result<()> {
        let patch = json!({"spec": {"replicas": replicas}});
        self.deployments()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(self.err("patch", "deployments", name))?;
        Ok(())
    }

    /// Moves the live Service's selector to `to`, in one update carrying the
    /// resourceVersion it was read at; a Conflict is read again and retried, unless the
    /// Service no longer selects `from` (someone else moved live meanwhile).
    async fn select(
        &self,
        c: &Config,
        from: Option<&str>,
        to: &str,
        progress: &StepProgress<'_>,
    ) -> Result<()> {
        let n = self.names.service(PymEnv::Live);
        let api = self.services();
        for attempt in 1.. {
            let want = match api
                .get_opt(&n)
                .await
                .map_err(self.err("get", "services", &n))?
            {
                None => service(c, &self.names, PymEnv::Live, Some(to)),
                Some(now) => {
                    let seen = svc_of(&now);
                    if seen.selects() != from && seen.selects() != Some(to) {
                        bail!(
                            "the live service {}/{n} selects {} now, not {}: someone else changed live meanwhile; live is left as they set it",
                            self.names.ns,
                            seen.selects().unwrap_or("nothing"),
                            from.unwrap_or("nothing")
                        );
                    }
                    let mut v = serde_json::to_value(&now)?;
                    v["spec"]["selector"][VERSION] = json!(to);
                    conform(&mut v, c);
                    v
                }
            };
            let created = want["metadata"]["resourceVersion"].is_null();
            let r = match created {
                true => api.create(&PostParams::default(), &typed(want)?).await,
                false => api.replace(&n, &PostParams::default(), &typed(want)?).await,
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if conflict(&e) && attempt < 5 => {
                    progress.line(&format!(
                        "the service {n} changed since it was read (Conflict): reading it again"
                    ));
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    return Err(self.err(
                        if created { "create" } else { "update" },
                        "services",
                        &n,
                    )(e));
                }
            }
        }
        unreachable!()
    }

    /// Waits as `kubectl rollout status` does: the spec observed, every replica updated,
    /// no old one left, every updated one available; `ProgressDeadlineExceeded` fails,
    /// with the pods' events and last log lines.
    async fn rollout(&self, c: &Config, name: &str, progress: &StepProgress<'_>) -> Result<()> {
        let api = self.deployments();
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(u64::from(c.k8s_timeout) + 60);
        let mut last = String::new();
        loop {
            let d = api
                .get(name)
                .await
                .map_err(self.err("get", "deployments", name))?;
            let v = serde_json::to_value(&d)?;
            let i = |p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            let (generation, observed) =
                (i("/metadata/generation"), i("/status/observedGeneration"));
            let want = v
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let (updated, total, available) = (
                i("/status/updatedReplicas"),
                i("/status/replicas"),
                i("/status/availableReplicas"),
            );
            let stuck = v["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
            let now = if generation > observed {
                "waiting for the deployment spec update to be observed".to_string()
            } else if let Some(s) = stuck {
                let msg = s["message"].as_str().unwrap_or_default().to_string();
                return Err(self
                    .stuck(
                        name,
                        &format!("deployment {name} exceeded its progress deadline: {msg}"),
                        progress,
                    )
                    .await);
            } else if updated < want {
                format!("{updated} of {want} new replicas updated")
            } else if total > updated {
                format!("{} old replicas pending termination", total - updated)
            } else if available < updated {
                format!("{available} of {updated} updated replicas available")
            } else {
                progress.line(&format!(
                    "{name} rolled out: {available} of {want} replicas available"
                ));
                return Ok(());
            };
            if now != last {
                progress.line(&format!("{name}: {now}"));
                last = now;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self
                    .stuck(
                        name,
                        &format!(
                            "deployment {name} did not roll out within {}s: {last}",
                            c.k8s_timeout + 60
                        ),
                        progress,
                    )
                    .await);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The error of a rollout that failed, after showing its pods' events and last log
    /// lines (as `kubectl describe pod` and `kubectl logs --tail` would).
    async fn stuck(&self, name: &str, why: &str, progress: &StepProgress<'_>) -> anyhow::Error {
        let pods = self
            .pods()
            .list(&ListParams::default().labels(&format!("{DEPLOYMENT}={name}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let events: Api<KubeEvent> = Api::namespaced(self.client.clone(), &self.names.ns);
        let mut shown = 0;
        // The pods of the newest ReplicaSet (the youngest) are the ones that fail.
        let mut pods: Vec<&Pod> = pods.iter().collect();
        pods.sort_by(|a, b| {
            b.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .cmp(
                    &a.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string()),
                )
        });
        for pod in pods.into_iter().take(2) {
            let p = pod.metadata.name.clone().unwrap_or_default();
            if let Ok(list) = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={p}")))
                .await
            {
                progress.line(&format!("events of pod {p}:"));
                for e in list.items.iter().rev().take(10).rev() {
                    progress.line(&format!(
                        "  {} {}: {}",
                        e.type_.as_deref().unwrap_or(""),
                        e.reason.as_deref().unwrap_or(""),
                        e.message.as_deref().unwrap_or("").trim()
                    ));
                }
            }
            let lp = LogParams {
                container: Some(CONTAINER.into()),
                tail_lines: Some(20),
                ..Default::default()
            };
            match self.pods().logs(&p, &lp).await {
                Ok(text) if !text.trim().is_empty() => {
                    progress.line(&format!("last log lines of pod {p}:"));
                    for l in text.lines() {
                        progress.line(&format!("  {l}"));
                    }
                }
                _ => progress.line(&format!("pod {p} wrote no log")),
            }
            shown += 1;
        }
        let how = format!(
            "`kubectl --context {} -n {} describe deployment {name}` and `kubectl logs` tell more",
            self.context, self.names.ns
        );
        match shown {
            0 => hinted(why.to_string(), format!("no pod of it exists: {how}")),
            _ => hinted(
                why.to_string(),
                format!("its pods' events and logs are above; {how}"),
            ),
        }
    }

    /// Each running pod of `name` answers healthy and names `version` in `env`, asked
    /// through the apiserver's pod proxy, before any Service sends it requests.
    async fn check_pods(
        &self,
        c: &Config,
        name: &str,
        version: &str,
        env: PymEnv,
        progress: &StepProgress<'_>,
    ) -> Result<()> {
        let selector = format!("{DEPLOYMENT}={name},{VERSION}={version}");
        let pods = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(self.err("list", "pods", &selector))?;
        let running: Vec<String> = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        if running.is_empty() {
            bail!("no pod of {name} runs {version}");
        }
        for pod in &running {
            let base = format!(
                "/api/v1/namespaces/{}/pods/{pod}:{}/proxy",
                self.names.ns, c.port
            );
            // Whether the proxy refused outright (the one error `proxy_get` gives up on).
            let refused = std::cell::Cell::new(false);
            let what = format!("pod {pod}");
            let asked = super::serves_contract(c, &what, version, env, |path| {
                let (base, refused) = (&base, &refused);
                async move {
                    let answer = self.proxy_get(base, &path).await;
                    refused.set(answer.is_err());
                    answer
                }
            });
            match asked.await {
                Err(e) if refused.get() => {
                    progress.line(&format!("warning: the pods cannot be asked through the apiserver (pods/proxy is forbidden): their readiness probes vouch for them: {e:#}"));
                    return Ok(());
                }
                r => r?,
            }
        }
        progress.line(&format!(
            "{} pod(s) of {name} serve {version} with PYM_ENV={env}",
            running.len()
        ));
        Ok(())
    }

    /// How to reach the Service of `env` from here: its external address, else through
    /// the apiserver's service proxy.
    async fn reach(&self, c: &Config, env: PymEnv) -> Result<Reach> {
        let n = self.names.service(env);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(c.k8s_timeout));
        loop {
            let s = self
                .services()
                .get(&n)
                .await
                .map_err(self.err("get", "services", &n))?;
            let svc = svc_of(&s);
            if let Some(host) = svc.external {
                return Ok(Reach::Direct {
                    host,
                    port: svc.port,
                });
            }
            // A new LoadBalancer gets its address in a minute or two.
            if c.k8s_service_type != "LoadBalancer" || tokio::time::Instant::now() >= deadline {
                return Ok(Reach::Proxy {
                    path: format!(
                        "/api/v1/namespaces/{}/services/{n}:http/proxy",
                        self.names.ns
                    ),
                    what: format!("service {n}"),
                });
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// A loopback port forwarded to the Service of `env`, as `kubectl port-forward
    /// svc/NAME` does: each connection to it goes to a ready pod the Service selects,
    /// through the apiserver (`pods/portforward`), until the `Forward` is dropped.
    async fn port_forward(&self, c: &Config, env: PymEnv) -> Result<(u16, Forward)> {
        let n = self.names.service(env);
        let svc = svc_of(
            &self
                .services()
                .get(&n)
                .await
                .map_err(self.err("get", "services", &n))?,
        );
        let selector = svc
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (pods, target) = (self.pods(), c.port);
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (pods, selector) = (pods.clone(), selector.clone());
                tokio::spawn(async move {
                    let list = pods
                        .list(&ListParams::default().labels(&selector))
                        .await
                        .ok()?;
                    let pod = list
                        .items
                        .iter()
                        .find(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))?
                        .metadata
                        .name
                        .clone()?;
                    let mut pf = pods.portforward(&pod, &[target]).await.ok()?;
                    let mut upstream = pf.take_stream(target)?;
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                    drop(upstream);
                    pf.join().await.ok()
                });
            }
        });
        Ok((port, Forward(task.abort_handle())))
    }

    /// GET `path` through the apiserver's proxy: the status and body the pod answered. A
    /// Forbidden proxy ends the checks (asking again cannot help).
    async fn proxy_get(&self, base: &str, path: &str) -> super::Answer {
        let req = hyper::Request::get(format!("{base}{path}")).body(Vec::new())?;
        Ok(match self.client.request_text(req).await {
            Ok(body) => Ok((200, body)),
            // The pod's own answer (the proxy passes its status through) or the apiserver's.
            Err(kube::Error::Api(s)) if s.code == 403 && s.reason == "Forbidden" => {
                return Err(kube_error(
                    "get",
                    "pods/proxy",
                    base,
                    &self.names.ns,
                    kube::Error::Api(s),
                ));
            }
            Err(kube::Error::Api(s)) if s.code != 0 => Ok((s.code, s.message)),
            Err(e) => Err(format!(
                "{:#}",
                kube_error("get", "proxy", base, &self.names.ns, e)
            )),
        })
    }
}

/// The gke target's actor: carries out its `Act`s on one environment's cluster for
/// `plan::execute`, which says each line, keeps the undos and unwinds them.
struct Cluster {
    kube: Kube,
    config: Config,
    /// Live serves the new version: retiring old ones after it only warns.
    verified: bool,
}

impl Cluster {
    fn new(kube: Kube, config: Config) -> Cluster {
        Cluster {
            kube,
            config,
            verified: false,
        }
    }
}

impl Actor for Cluster {
    type Act = Act;

    fn describe(&self, act: &Act) -> String {
        act.describe(&self.kube.names)
    }

    /// Live checked to serve the version after the selector moved: the switch is kept.
    fn commits(&self, act: &Act) -> bool {
        matches!(act, Act::Verify { .. })
    }

    fn waits(&self, act: &Act) -> bool {
        matches!(
            act,
            Act::Rollout { .. } | Act::CheckPods { .. } | Act::Verify { .. }
        )
    }

    fn run(&mut self, ctx: &Ctx, act: &Act, progress: &StepProgress<'_>) -> Result<Option<Act>> {
        let done = ctx.wait(self.kube.run_act(&self.config, act, progress));
        match done {
            Ok(undo) => {
                self.verified |= matches!(act, Act::Verify { .. });
                Ok(undo)
            }
            // Retiring what was live before: `cleanup` finishes it later.
            Err(e) if self.verified => {
                progress.line(&format!(
                    "warning: {e:#} (`cargo xtask cleanup` tries again)"
                ));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// A port-forward's listener: stops (with its connections) when dropped.
struct Forward(tokio::task::AbortHandle);

impl Drop for Forward {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Where a check asks: an address, or a path through the apiserver's proxy.
enum Reach {
    Direct { host: String, port: u16 },
    Proxy { path: String, what: String },
}

impl Reach {
    fn describe(&self) -> String {
        match self {
            Reach::Direct { host, port } => format!("{host}:{port}"),
            Reach::Proxy { what, .. } => what.clone(),
        }
    }
}

/// Asks `reach` for the service contract until it holds (`targets::serves_contract`).
async fn check_serves(
    k: &Kube,
    c: &Config,
    reach: &Reach,
    version: &str,
    env: PymEnv,
) -> Result<()> {
    super::serves_contract(c, &reach.describe(), version, env, |path| async move {
        match reach {
            Reach::Direct { host, port } => {
                Ok(
                    crate::ops::http::get(host, *port, &path, Duration::from_secs(5))
                        .await
                        .map_err(|e| format!("{e:#}")),
                )
            }
            Reach::Proxy { path: base, .. } => k.proxy_get(base, &path).await,
        }
    })
    .await
}

/// The image to run: what `push` pushed (by digest), as the other targets take it.
fn pushed(ctx: &Ctx) -> Result<String> {
    super::image_reference(ctx)
}

impl super::Target for GkeTarget {
    fn units(&self) -> (&'static str, &'static str) {
        ("deployment", "deployments")
    }

    /// Before the first step: names and sizes Kubernetes takes, and a kubeconfig context
    /// for each environment (no call to the cluster).
    fn check(&self, ctx: &Ctx) -> Result<()> {
        let kc = kubeconfig()?;
        for env in [PymEnv::Staging, PymEnv::Live] {
            let c = ctx.config_for(env)?;
            let file = format!("pym-config (for {env})");
            check_config(&c, &file)?;
            context_of(&c, &kc, &file)?;
        }
        Ok(())
    }

    fn address(&self, ctx: &Ctx, env: PymEnv) -> Result<Address> {
        let c = ctx.config_for(env)?;
        let given = match env {
            PymEnv::Local => bail!("the local environment is not on a deploy target"),
            PymEnv::Staging => c.staging_url.clone(),
            PymEnv::Live => c.live_url.clone(),
        };
        if let Some(url) = given {
            let (host, port) = url_host(&url);
            return Ok(Address {
                host,
                port,
                tls: url.starts_with("https://"),
                token: None,
                hold: None,
            });
        }
        ctx.wait(async {
            let k = connect(&c).await?;
            match k.reach(&c, env).await? {
                Reach::Direct { host, port } => Ok(Address {
                    host,
                    port,
                    tls: false,
                    token: None,
                    hold: None,
                }),
                // No external address: a port-forward, closed when the tests are done.
                Reach::Proxy { .. } => {
                    let (port, forward) = k.port_forward(&c, env).await?;
                    Ok(Address {
                        host: "127.0.0.1".into(),
                        port,
                        tls: false,
                        token: None,
                        hold: Some(Box::new(forward)),
                    })
                }
            }
        })
    }

    fn plan(
        &self,
        ctx: &Ctx,
        change: super::Change,
        staged: Option<&Staged>,
    ) -> Result<Vec<String>> {
        let c = ctx.config_for(change.env())?;
        let k = ctx.wait(connect(&c))?;
        let seen = ctx.wait(k.observe())?;
        let names = &k.names;
        let secrets = !c.env_secrets.is_empty();
        let acts = match change {
            super::Change::Stage => {
                let image = pushed(ctx)
                    .ok()
                    .filter(|i| i.contains("@sha256:"))
                    .unwrap_or_else(|| format!("{}@sha256:<pushed>", c.image_repo()));
                decide_stage(
                    &seen,
                    names,
                    &ctx.version()?.to_string(),
                    &image,
                    c.k8s_replicas as i32,
                    secrets,
                )?
            }
            super::Change::Promote => {
                // In a deploy's dry run stage has not run yet: the image it will push.
                let staged = staged.map(|s| match s.image.contains('@') {
                    true => s.clone(),
                    false => Staged {
                        image: format!("{}@{}", c.image_repo(), s.digest),
                        ..s.clone()
                    },
                });
                decide_promote(
                    &seen,
                    names,
                    staged.as_ref(),
                    c.k8s_replicas as i32,
                    secrets,
                    c.keep_previous as usize,
                )?
            }
            super::Change::Rollback => {
                decide_rollback(
                    &seen,
                    names,
                    c.k8s_replicas as i32,
                    ctx.opts.rollback_to.as_deref(),
                )?
                .2
            }
        };
        Ok(plan::describe(&Cluster::new(k, c), &acts))
    }

    fn ledger(&self) -> Option<&dyn Ledger> {
        Some(self)
    }

    fn stage(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let c = ctx.config_for(PymEnv::Staging)?;
        let version = ctx.version()?.to_string();
        let image = pushed(ctx)?;
        let k = ctx.wait(connect(&c))?;
        let seen = ctx.wait(k.observe())?;
        let acts = decide_stage(
            &seen,
            &k.names,
            &version,
            &image,
            c.k8s_replicas as i32,
            !c.env_secrets.is_empty(),
        )?;
        let names = k.names.clone();
        plan::execute(ctx, &mut Cluster::new(k, c), &acts, progress)?;
        Ok(format!("{version} on {}/{}", names.ns, names.staging()))
    }

    /// Makes live what staging runs (`staged`, read through the `Ledger` and checked to
    /// have passed staging acceptance by `steps::deploy`), never HEAD's version.
    fn promote(
        &self,
        ctx: &Ctx,
        staged: Option<&Staged>,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let c = ctx.config_for(PymEnv::Live)?;
        let version = staged.map(|s| s.version.clone()).unwrap_or_default();
        let k = ctx.wait(connect(&c))?;
        let seen = ctx.wait(k.observe())?;
        let acts = decide_promote(
            &seen,
            &k.names,
            staged,
            c.k8s_replicas as i32,
            !c.env_secrets.is_empty(),
            c.keep_previous as usize,
        )?;
        let names = k.names.clone();
        plan::execute(ctx, &mut Cluster::new(k, c), &acts, progress)?;
        Ok(format!("{version} live on {}/{}", names.ns, names.app))
    }

    fn rollback(&self, ctx: &Ctx, to: Option<&str>, progress: &StepProgress<'_>) -> Result<String> {
        let c = ctx.config_for(PymEnv::Live)?;
        let k = ctx.wait(connect(&c))?;
        let seen = ctx.wait(k.observe())?;
        let (current, target, acts) = decide_rollback(&seen, &k.names, c.k8s_replicas as i32, to)?;
        let names = k.names.clone();
        plan::execute(ctx, &mut Cluster::new(k, c), &acts, progress)?;
        ctx.set_rolled_back_to(target.clone());
        Ok(format!(
            "{target} live again on {}/{} (was {current})",
            names.ns, names.app
        ))
    }

    fn status(&self, ctx: &Ctx) -> Result<Table> {
        let c = ctx.config_for(PymEnv::Live)?;
        ctx.wait(async {
            let k = connect(&c).await?;
            let seen = k.observe_with_staging(ctx).await?;
            let names = &k.names;
            let mut table = Table::new(&[
                "ROLE",
                "DEPLOYMENT",
                "VERSION",
                "READY",
                "SELECTED",
                "IMAGE",
                "SINCE",
            ]);
            let live = seen
                .live
                .as_ref()
                .and_then(Svc::selects)
                .map(|v| names.live(v));
            let mut deps: Vec<&Dep> = seen.deployments.iter().collect();
            let role = |d: &Dep| match (d.env.as_str(), Some(&d.name) == live.as_ref()) {
                ("staging", _) => ("staging", 0),
                (_, true) => ("live", 1),
                _ if d.replicas > 0 => ("previous", 2),
                _ => ("previous", 3),
            };
            // The previous versions in the order a rollback walks them, by the record.
            let available = seen.available();
            let order = history::previous(&seen.history, seen.selects(), &available);
            let rank = |d: &Dep| order.iter().position(|v| *v == d.version);
            deps.sort_by_key(|d| (role(d).1, rank(d)));
            for d in deps {
                let selected = match role(d).0 {
                    "live" => format!("service/{}", names.app),
                    "staging" if seen.staging.is_some() => format!("service/{}", names.staging()),
                    _ => String::new(),
                };
                // Live since the record says it went live (converted entries have no time),
                // else since the Deployment says, else since it was made.
                let recorded = seen
                    .history
                    .live_since(&d.version)
                    .filter(|at| *at > 0)
                    .map(|at| crate::version::fmt_utc(at).replacen(' ', "T", 1));
                let since = recorded
                    .or_else(|| d.live_since.clone())
                    .filter(|_| d.env == "live")
                    .unwrap_or_else(|| d.created.clone());
                table.rows.push(vec![
                    role(d).0.into(),
                    d.name.clone(),
                    d.version.clone(),
                    format!("{}/{}", d.ready, d.replicas),
                    selected,
                    d.image.clone(),
                    since,
                ]);
            }
            Ok(table)
        })
    }

    fn cleanup(&self, ctx: &Ctx, execute: bool) -> Result<Vec<Cleanup>> {
        let c = ctx.config_for(PymEnv::Live)?;
        ctx.wait(async {
            let k = connect(&c).await?;
            let seen = k.observe().await?;
            let mut lines = Vec::new();
            for (d, fate) in decide_cleanup(&seen, &k.names, c.keep_previous as usize) {
                let fate = match fate {
                    Fate::Go { did, would, .. } if execute => {
                        k.delete(&d.name).await?;
                        Fate::Go {
                            done: true,
                            did,
                            would,
                        }
                    }
                    f => f,
                };
                lines.push(Cleanup {
                    name: d.name.clone(),
                    version: Some(d.version.clone()),
                    fate,
                });
            }
            Ok(lines)
        })
    }
}

/// The deploy record is the ConfigMap `<app>-deploy-record` in the live namespace (read
/// with the live config's connection); what staging runs is the staging Deployment where
/// the staging overlay's context and namespace put it.
impl Ledger for GkeTarget {
    fn staged(&self, ctx: &Ctx) -> Result<Option<Staged>> {
        let sc = ctx.config_for(PymEnv::Staging)?;
        ctx.wait(async { connect(&sc).await?.staged().await })
    }

    fn history(&self, ctx: &Ctx) -> Result<History> {
        let c = ctx.config_for(PymEnv::Live)?;
        ctx.wait(async { connect(&c).await?.history().await })
    }

    fn record(&self, ctx: &Ctx, event: Event, version: &str, digest: Option<&str>) -> Result<()> {
        let c = ctx.config_for(PymEnv::Live)?;
        let entries = [(event, version.to_string(), digest.map(str::to_string))];
        ctx.wait(async { connect(&c).await?.record(&entries).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            app: "hello".into(),
            ns: "team".into(),
        }
    }

    fn dep(name: &str, env: &str, version: &str, replicas: i32) -> Dep {
        Dep {
            name: name.into(),
            env: env.into(),
            version: version.into(),
            image: format!("r/hello@sha256:{version}"),
            replicas,
            ready: replicas,
            created: format!("2026-11-28T00:00:0{}Z", version.len() % 10),
            live_since: None,
        }
    }

    fn live_svc(selects: &str) -> Svc {
        let mut s = Svc {
            name: "hello".into(),
            port: 80,
            ..Svc::default()
        };
        s.selector.insert(VERSION.into(), selects.into());
        s
    }

    fn history(events: &[(Event, &str)]) -> History {
        let mut h = History::default();
        for (i, (e, v)) in events.iter().enumerate() {
            h.push(*e, v, None, i as i64);
        }
        h
    }

    fn staged(version: &str) -> Staged {
        Staged {
            version: version.into(),
            image: format!("r/hello@sha256:{version}"),
            digest: format!("sha256:{version}"),
        }
    }

    fn live(selects: &str, deps: &[(&str, i32)], h: History) -> Seen {
        Seen {
            namespace: true,
            deployments: deps
                .iter()
                .map(|(v, r)| dep(&format!("hello-{v}"), "live", v, *r))
                .collect(),
            live: Some(live_svc(selects)),
            staging: None,
            history: h,
        }
    }

    #[test]
    fn names_and_sizes_are_refused_as_kubernetes_would_refuse_them() {
        assert!(bad_label("hello-world", 30).is_none());
        assert!(bad_label("Hello", 30).is_some());
        assert!(bad_label("hello_world", 30).is_some());
        assert!(bad_label("-hello", 30).is_some());
        assert!(bad_label(&"a".repeat(31), 30).is_some());
        for q in ["250m", "1", "0.5", "512Mi", "2Gi", "1G"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "1.2.3", "512MB", "Mi", "lots"] {
            assert!(!is_quantity(q), "{q}");
        }
    }

    #[test]
    fn stage_moves_the_staging_deployment_by_digest_and_makes_what_is_missing() {
        let acts = decide_stage(
            &Seen::default(),
            &names(),
            "v2",
            "r/hello@sha256:2",
            1,
            true,
        )
        .unwrap();
        assert_eq!(acts[0], Act::Namespace);
        assert_eq!(
            acts[1],
            Act::Secret {
                name: "hello-staging".into(),
                env: PymEnv::Staging
            }
        );
        assert!(
            matches!(&acts[2], Act::Deploy { name, env: PymEnv::Staging, .. } if name == "hello-staging")
        );
        assert_eq!(
            acts.last(),
            Some(&Act::Service {
                env: PymEnv::Staging
            })
        );
        // With the namespace and the Service there: no namespace to make, the Service
        // still given the configured type and port.
        let again = decide_stage(
            &Seen {
                namespace: true,
                staging: Some(Svc::default()),
                ..Seen::default()
            },
            &names(),
            "v2",
            "r/hello@sha256:2",
            1,
            true,
        )
        .unwrap();
        assert!(
            !again.contains(&Act::Namespace)
                && again.contains(&Act::Service {
                    env: PymEnv::Staging
                }),
            "{again:?}"
        );
        assert!(decide_stage(&Seen::default(), &names(), "v2", "r/hello:v2", 1, false).is_err());
    }

    #[test]
    fn promote_rolls_out_checks_switches_verifies_then_retires() {
        use Event::*;
        let mut seen = live(
            "v2",
            &[("v2", 2), ("v1", 0), ("v0", 0)],
            history(&[(Live, "v0"), (Live, "v1"), (Live, "v2")]),
        );
        seen.deployments
            .push(dep("hello-staging", "staging", "v3", 1));
        let acts = decide_promote(&seen, &names(), Some(&staged("v3")), 2, false, 1).unwrap();
        let kinds: Vec<String> = acts.iter().map(|a| a.describe(&names())).collect();
        let select = acts
            .iter()
            .position(|a| matches!(a, Act::Select { .. }))
            .unwrap();
        let verify = acts
            .iter()
            .position(|a| matches!(a, Act::Verify { .. }))
            .unwrap();
        let scale = acts
            .iter()
            .position(|a| {
                *a == Act::Scale {
                    name: "hello-v2".into(),
                    replicas: 0,
                }
            })
            .unwrap();
        assert_eq!(
            acts[select],
            Act::Select {
                from: Some("v2".into()),
                to: "v3".into(),
                record: vec![(Live, "v3".into())]
            },
            "{kinds:?}"
        );
        assert!(
            matches!(&acts[0], Act::Deploy { image, env: PymEnv::Live, .. } if image == "r/hello@sha256:v3"),
            "{kinds:?}"
        );
        assert!(select < verify && verify < scale, "{kinds:?}");
        // keep 1: v2 (just live) is kept; v1 and v0 go.
        assert!(
            acts.contains(&Act::Delete {
                name: "hello-v1".into()
            }) && acts.contains(&Act::Delete {
                name: "hello-v0".into()
            }),
            "{kinds:?}"
        );
        assert!(
            !acts.contains(&Act::Delete {
                name: "hello-v2".into()
            }),
            "{kinds:?}"
        );
    }

    #[test]
    fn the_first_promote_makes_the_namespace_and_points_the_service_at_what_staging_runs() {
        let acts =
            decide_promote(&Seen::default(), &names(), Some(&staged("v1")), 2, true, 1).unwrap();
        assert_eq!(
            acts,
            vec![
                Act::Namespace,
                Act::Secret {
                    name: "hello-v1".into(),
                    env: PymEnv::Live
                },
                Act::Deploy {
                    name: "hello-v1".into(),
                    version: "v1".into(),
                    image: "r/hello@sha256:v1".into(),
                    env: PymEnv::Live,
                    replicas: 2
                },
                Act::Rollout {
                    name: "hello-v1".into()
                },
                Act::CheckPods {
                    name: "hello-v1".into(),
                    version: "v1".into(),
                    env: PymEnv::Live
                },
                Act::Select {
                    from: None,
                    to: "v1".into(),
                    record: vec![(Event::Live, "v1".into())]
                },
                Act::Verify {
                    version: "v1".into()
                },
            ]
        );
    }

    #[test]
    fn promote_makes_live_what_staging_runs_and_is_refused_without_it() {
        use Event::*;
        // Staging runs v2 (HEAD may be ahead): v2 and its image go live, nothing else.
        let seen = live("v1", &[("v1", 2)], history(&[(Live, "v1")]));
        let acts = decide_promote(&seen, &names(), Some(&staged("v2")), 2, false, 1).unwrap();
        assert!(
            acts.iter().all(|a| match a {
                Act::Deploy { version, image, .. } =>
                    version == "v2" && image == "r/hello@sha256:v2",
                Act::Select { to, .. } | Act::Verify { version: to } => to == "v2",
                _ => true,
            }),
            "{acts:?}"
        );
        // Nothing staged, or an image with no digest: refused.
        let e = decide_promote(&seen, &names(), None, 2, false, 1).unwrap_err();
        assert!(format!("{e}").contains("nothing runs on staging"), "{e}");
        let tagged = Staged {
            image: "r/hello:v2".into(),
            ..staged("v2")
        };
        assert!(decide_promote(&seen, &names(), Some(&tagged), 2, false, 1).is_err());
    }

    #[test]
    fn promote_of_what_is_live_is_a_check_and_a_rebuilt_image_goes_live_again() {
        use Event::*;
        let mut seen = live("v3", &[("v3", 2)], history(&[(Live, "v3")]));
        seen.deployments
            .push(dep("hello-staging", "staging", "v3", 1));
        assert_eq!(
            decide_promote(&seen, &names(), Some(&staged("v3")), 2, false, 2).unwrap(),
            vec![Act::Verify {
                version: "v3".into()
            }]
        );
        let rebuilt = Staged {
            image: "r/hello@sha256:other".into(),
            digest: "sha256:other".into(),
            ..staged("v3")
        };
        let acts = decide_promote(&seen, &names(), Some(&rebuilt), 2, false, 2).unwrap();
        assert!(
            acts.iter()
                .any(|a| matches!(a, Act::Deploy { image, .. } if image == "r/hello@sha256:other")),
            "{acts:?}"
        );
    }

    #[test]
    fn a_version_rolled_back_from_can_be_promoted_again() {
        use Event::*;
        let seen = live(
            "v1",
            &[("v2", 0), ("v1", 2)],
            history(&[(Live, "v1"), (Live, "v2"), (RolledBack, "v2"), (Live, "v1")]),
        );
        let acts = decide_promote(&seen, &names(), Some(&staged("v2")), 2, false, 1).unwrap();
        assert!(
            acts.contains(&Act::Select {
                from: Some("v1".into()),
                to: "v2".into(),
                record: vec![(Live, "v2".into())]
            }),
            "{acts:?}"
        );
        assert_eq!(
            acts.last(),
            Some(&Act::Scale {
                name: "hello-v1".into(),
                replicas: 0
            }),
            "v1 is what a rollback would go to: kept"
        );
        assert!(!acts.iter().any(|a| matches!(a, Act::Delete { .. })));
    }

    #[test]
    fn a_live_version_the_record_does_not_know_is_recorded_before_the_new_one() {
        let seen = live("v1", &[("v1", 2)], History::default());
        let acts = decide_promote(&seen, &names(), Some(&staged("v2")), 2, false, 1).unwrap();
        assert!(
            acts.iter().any(|a| matches!(a, Act::Select { record, .. }
                if *record == vec![(Event::Live, "v1".to_string()), (Event::Live, "v2".to_string())])),
            "{acts:?}"
        );
    }

    #[test]
    fn rollback_goes_to_the_last_live_before_never_to_one_rolled_back_from() {
        use Event::*;
        let seen = live(
            "v3",
            &[("v3", 2), ("v2", 0), ("v1", 0)],
            history(&[
                (Live, "v1"),
                (Live, "v2"),
                (RolledBack, "v2"),
                (Live, "v1"),
                (Live, "v3"),
            ]),
        );
        let (current, target, acts) = decide_rollback(&seen, &names(), 2, None).unwrap();
        assert_eq!((current.as_str(), target.as_str()), ("v3", "v1"));
        assert_eq!(
            acts[0],
            Act::Scale {
                name: "hello-v1".into(),
                replicas: 2
            }
        );
        assert_eq!(
            acts[3],
            Act::Select {
                from: Some("v3".into()),
                to: "v1".into(),
                record: vec![(RolledBack, "v3".into()), (Live, "v1".into())]
            }
        );
        assert_eq!(
            acts.last(),
            Some(&Act::Scale {
                name: "hello-v3".into(),
                replicas: 0
            })
        );
        // Nothing before: refused.
        let none = live("v1", &[("v1", 2)], history(&[(Live, "v1")]));
        assert!(decide_rollback(&none, &names(), 2, None).is_err());
        assert!(decide_rollback(&Seen::default(), &names(), 2, None).is_err());
    }

    #[test]
    fn rollback_without_a_record_goes_to_the_newest_previous_or_by_the_old_annotations() {
        let seen = live("v3", &[("v3", 2), ("v2", 0), ("v1", 0)], History::default());
        assert_eq!(decide_rollback(&seen, &names(), 2, None).unwrap().1, "v2");
        // An older pymdeploy's annotations on the live Service, converted.
        let mut svc = live_svc("v3");
        svc.annotations
            .insert(LIVE_HISTORY.into(), "v1,v2,v3".into());
        svc.annotations.insert(ROLLED_BACK.into(), "v2".into());
        let h = svc.legacy_history();
        assert_eq!(h.live_order(), ["v3", "v2", "v1"]);
        assert!(h.rolled_back_from("v2") && !h.rolled_back_from("v1"));
        let seen = Seen { history: h, ..seen };
        assert_eq!(decide_rollback(&seen, &names(), 2, None).unwrap().1, "v1");
    }

    #[test]
    fn rollback_twice_never_returns_to_the_version_it_left_unless_named() {
        use Event::*;
        // v1 → v2, rolled back to v1: a second rollback does not go to v2.
        let seen = live(
            "v1",
            &[("v2", 0), ("v1", 2)],
            history(&[(Live, "v1"), (Live, "v2"), (RolledBack, "v2"), (Live, "v1")]),
        );
        let e = decide_rollback(&seen, &names(), 2, None).unwrap_err();
        assert!(
            format!("{e}").contains("rolled back from: v2")
                && crate::error::hint_of(&e).unwrap().contains("--to"),
            "{e}"
        );
        // --to names it: it goes.
        let (current, target, acts) = decide_rollback(&seen, &names(), 2, Some("v2")).unwrap();
        assert_eq!((current.as_str(), target.as_str()), ("v1", "v2"));
        assert!(acts.contains(&Act::Select {
            from: Some("v1".into()),
            to: "v2".into(),
            record: vec![(RolledBack, "v1".into()), (Live, "v2".into())]
        }));
        // A second rollback goes further back: v3 → v2 → (rollback) v1 → (rollback) v0.
        let seen = live(
            "v1",
            &[("v2", 0), ("v1", 2), ("v0", 0)],
            history(&[
                (Live, "v0"),
                (Live, "v1"),
                (Live, "v2"),
                (RolledBack, "v2"),
                (Live, "v1"),
            ]),
        );
        assert_eq!(decide_rollback(&seen, &names(), 2, None).unwrap().1, "v0");
        // --to a version not kept, or the live one: refused.
        assert!(decide_rollback(&seen, &names(), 2, Some("v9")).is_err());
        assert!(decide_rollback(&seen, &names(), 2, Some("v1")).is_err());
    }

    #[test]
    fn cleanup_keeps_the_most_recently_live() {
        use Event::*;
        let mut seen = live(
            "v3",
            &[("v3", 2), ("v2", 0), ("v1", 0)],
            history(&[(Live, "v1"), (Live, "v2"), (Live, "v3")]),
        );
        seen.deployments
            .push(dep("hello-staging", "staging", "v3", 1));
        let fates: Vec<(String, bool)> = decide_cleanup(&seen, &names(), 1)
            .into_iter()
            .map(|(d, f)| (d.name, matches!(f, Fate::Go { .. })))
            .collect();
        assert_eq!(
            fates,
            [
                ("hello-v2".to_string(), false),
                ("hello-v1".to_string(), true)
            ]
        );
    }

    #[test]
    fn cleanup_after_a_rollback_keeps_what_the_next_rollback_needs() {
        use Event::*;
        // v1 → v2 → v3, rolled back to v2: the next rollback goes to v1, so keep_previous 1
        // keeps v1 and deletes v3 (live more recently, but rolled back from).
        let seen = live(
            "v2",
            &[("v3", 0), ("v2", 2), ("v1", 0)],
            history(&[
                (Live, "v1"),
                (Live, "v2"),
                (Live, "v3"),
                (RolledBack, "v3"),
                (Live, "v2"),
            ]),
        );
        let fates: Vec<(String, bool)> = decide_cleanup(&seen, &names(), 1)
            .into_iter()
            .map(|(d, f)| (d.name, matches!(f, Fate::Go { .. })))
            .collect();
        assert_eq!(
            fates,
            [
                ("hello-v1".to_string(), false),
                ("hello-v3".to_string(), true)
            ]
        );
        assert_eq!(decide_rollback(&seen, &names(), 2, None).unwrap().1, "v1");
        // A promote after it retires the same way: v2 (just live before) is kept.
        let acts = decide_promote(&seen, &names(), Some(&staged("v4")), 2, false, 1).unwrap();
        assert!(
            acts.contains(&Act::Delete {
                name: "hello-v3".into()
            }) && acts.contains(&Act::Delete {
                name: "hello-v1".into()
            }) && !acts.contains(&Act::Delete {
                name: "hello-v2".into()
            }),
            "{acts:?}"
        );
    }

    #[test]
    fn staging_runs_a_version_once_it_rolled_out_with_every_replica_ready() {
        let d = |ready: i64, observed: i64| json!({"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": {"observedGeneration": observed, "replicas": 2, "updatedReplicas": 2, "availableReplicas": ready, "readyReplicas": ready}});
        assert!(rolled_out(&d(2, 2)));
        assert!(!rolled_out(&d(1, 2)), "a replica not ready");
        assert!(!rolled_out(&d(2, 1)), "the spec not observed yet");
    }

    #[test]
    fn secrets_are_referenced_never_written_in_the_deployment() {
        let dir = std::env::temp_dir().join(format!("pym-gke-decide-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(crate::config::CONFIG_FILE),
            "name: hello\ndeploy_target: gke\ndocker_repo: r\n",
        )
        .unwrap();
        let mut c = Config::load(&dir, PymEnv::Live).unwrap();
        c.env_secrets = vec!["API_KEY".into()];
        let d = deployment(
            &c,
            &names(),
            "hello-v1",
            "v1",
            "r@sha256:1",
            PymEnv::Live,
            2,
        );
        let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(
            env[3],
            json!({"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "hello-v1", "key": "API_KEY"}}})
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"],
            5
        );
        let _: Deployment = typed(d).unwrap();
    }
}

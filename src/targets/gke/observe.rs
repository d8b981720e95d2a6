//! What is seen in the cluster: the Deployments and Services pymdeploy made, read into
//! `Seen`, and what staging runs.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::check::{context_of, kubeconfig};
use super::kube::{Kube, connect, not_found};
use super::{CANARY_BESIDE, ENV, LIVE_HISTORY, LIVE_SINCE, MANAGED_BY, NAME, Names, ROLLED_BACK, VERSION};
use crate::config::PymEnv;
use crate::ctx::Ctx;
use crate::targets::Staged;
use crate::targets::history::{Event, History};

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
    /// The version the Service selects: its selector's, or during a canary (the
    /// selector holds every live pod) the version live beside it, as the Service says.
    pub fn selects(&self) -> Option<&str> {
        self.selector
            .get(VERSION)
            .or_else(|| self.annotations.get(CANARY_BESIDE))
            .map(String::as_str)
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
    pub(super) fn dep(&self, name: &str) -> Option<&Dep> {
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

/// Whether a Deployment (as JSON) is rolled out, as `kubectl rollout status` says, with
/// every replica ready.
pub(super) fn rolled_out(v: &Value) -> bool {
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

pub(super) fn svc_of(s: &Service) -> Svc {
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

impl Kube {
    pub(super) async fn observe(&self) -> Result<Seen> {
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

    /// What staging runs: the staging Deployment, rolled out and ready, its version and
    /// image (by digest); `None` when there is none, or it is not all ready.
    pub(super) async fn staged(&self) -> Result<Option<Staged>> {
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
    pub(super) async fn observe_with_staging(&self, ctx: &Ctx) -> Result<Seen> {
        let mut seen = self.observe().await?;
        let sc = ctx.config_for(PymEnv::Staging)?;
        let staging = Names::of(&sc);
        let kc = kubeconfig()?;
        if context_of(&sc, &kc)? == self.context
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
}

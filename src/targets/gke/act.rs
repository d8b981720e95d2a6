//! The `Cluster` actor: carries out each `Act` and returns its undo.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::decide::Act;
use super::kube::{Kube, conflict, not_found, typed};
use super::manifests::{conform, deployment, service};
use super::observe::svc_of;
use super::reach::check_serves;
use super::signals::{Signals, source};
use super::{CANARY, CANARY_BESIDE, LIVE_SINCE, MANAGED_BY, NAME, VERSION};
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::output::StepProgress;
use crate::targets::history::Event;
use crate::targets::plan::Actor;
use crate::targets::rollout;

/// The gke target's actor: carries out its `Act`s on one environment's cluster for
/// `plan::execute`, which says each line, keeps the undos and unwinds them.
pub(super) struct Cluster {
    kube: Kube,
    config: Config,
    /// Live serves the new version (and baked, where it bakes): retiring old ones after
    /// it only warns.
    verified: bool,
    /// Whether the plan bakes: its bake, not the verify, commits the switch.
    pub(super) bakes: bool,
}

impl Cluster {
    pub(super) fn new(kube: Kube, config: Config) -> Cluster {
        Cluster {
            kube,
            config,
            verified: false,
            bakes: false,
        }
    }

    fn signals(&self, version: &str, name: &str) -> Signals<'_> {
        Signals {
            kube: &self.kube,
            config: &self.config,
            version: version.to_string(),
            deployment: name.to_string(),
            restarts: None,
        }
    }
}

impl Actor for Cluster {
    type Act = Act;

    fn describe(&self, act: &Act) -> String {
        let (r, source) = (&self.config.rollout, source(&self.config));
        match act {
            Act::Judge {
                version, percent, ..
            } => format!(
                "{} ({})",
                rollout::step_line(r, version, *percent, &source),
                act.describe(&self.kube.names)
            ),
            Act::Bake { version, .. } => rollout::bake_line(r, version, &source),
            _ => act.describe(&self.kube.names),
        }
    }

    /// Live checked to serve the version after the selector moved (or where the plan
    /// bakes, the bake passed): the switch is kept.
    fn commits(&self, act: &Act) -> bool {
        match act {
            Act::Verify { .. } => !self.bakes,
            Act::Bake { .. } => true,
            _ => false,
        }
    }

    fn waits(&self, act: &Act) -> bool {
        matches!(
            act,
            Act::Rollout { .. }
                | Act::CheckPods { .. }
                | Act::Verify { .. }
                | Act::Judge { .. }
                | Act::Bake { .. }
        )
    }

    fn run(&mut self, ctx: &Ctx, act: &Act, progress: &StepProgress<'_>) -> Result<Option<Act>> {
        let done = match act {
            Act::Judge {
                version,
                name,
                percent,
                ..
            } => {
                let mut signals = self.signals(version, name);
                rollout::step(ctx, &mut signals, &self.config.rollout, version, *percent, progress)
                    .map(|_| None)
            }
            Act::Bake { version, name } => {
                let mut signals = self.signals(version, name);
                let note = (Event::KnownGood, version.clone(), None);
                let kube = &self.kube;
                rollout::bake(ctx, &mut signals, &self.config.rollout, version, progress, &mut || {
                    ctx.wait(kube.record(std::slice::from_ref(&note)))
                })
                .map(|_| None)
            }
            _ => ctx.wait(self.kube.run_act(&self.config, act, progress)),
        };
        match done {
            Ok(undo) => {
                self.verified |= match act {
                    Act::Verify { .. } => !self.bakes,
                    Act::Bake { .. } => true,
                    _ => false,
                };
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

impl Kube {
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
            Act::Pool { live, canary } => {
                self.pool(c, live, canary, progress).await?;
                return Ok(Some(Act::Unpool {
                    live: live.clone(),
                    canary: canary.clone(),
                }));
            }
            Act::Unpool { live, canary } => {
                self.select(c, Some(live), live, progress).await?;
                self.record(&[(Event::RolledBack, canary.clone(), None)])
                    .await?;
            }
            Act::Judge { .. } | Act::Bake { .. } => {
                unreachable!("judgements run in `Cluster::run`, which has the context")
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
            Act::DeleteService { env } => {
                let n = self.names.service(*env);
                match self.services().delete(&n, &DeleteParams::default()).await {
                    Err(e) if !not_found(&e) => return Err(self.err("delete", "services", &n)(e)),
                    _ => {}
                }
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
    pub(super) async fn delete(&self, name: &str) -> Result<()> {
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
    /// The live Service selects every live pod (its version out of the selector), and
    /// says that `live` is the version live beside the canary meanwhile.
    async fn pool(
        &self,
        c: &Config,
        live: &str,
        canary: &str,
        progress: &StepProgress<'_>,
    ) -> Result<()> {
        let n = self.names.service(PymEnv::Live);
        let api = self.services();
        for attempt in 1.. {
            let now = api.get(&n).await.map_err(self.err("get", "services", &n))?;
            if svc_of(&now).selects() != Some(live) {
                bail!(
                    "the live service {}/{n} selects {} now, not {live}: someone else changed live meanwhile; live is left as they set it",
                    self.names.ns,
                    svc_of(&now).selects().unwrap_or("nothing")
                );
            }
            let mut v = serde_json::to_value(&now)?;
            if let Some(sel) = v["spec"]["selector"].as_object_mut() {
                sel.remove(VERSION);
            }
            v["metadata"]["annotations"][CANARY_BESIDE] = json!(live);
            v["metadata"]["annotations"][CANARY] = json!(canary);
            conform(&mut v, c);
            match api.replace(&n, &PostParams::default(), &typed(v)?).await {
                Ok(_) => return Ok(()),
                Err(e) if conflict(&e) && attempt < 5 => {
                    progress.line(&format!(
                        "the service {n} changed since it was read (Conflict): reading it again"
                    ));
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(self.err("update", "services", &n)(e)),
            }
        }
        unreachable!()
    }

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
                    // A canary's sharing of the Service ends with it.
                    if let Some(a) = v["metadata"]["annotations"].as_object_mut() {
                        a.remove(CANARY_BESIDE);
                        a.remove(CANARY);
                    }
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
}

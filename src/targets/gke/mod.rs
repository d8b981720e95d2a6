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
//! - Each command observes the cluster (`observe`, the deploy record in `record`), decides
//!   its `Act`s (`decide`, pure, unit-tested in `tests`) and hands them to
//!   `targets::plan::execute` through the `Cluster` actor (`act`, which waits in `rollout`
//!   and checks what runs through `reach`); `--dry-run` prints the same lines. `check`
//!   holds the refusals that need no cluster, `manifests` the objects' JSON, `kube` the
//!   client and its errors.
//!
//! Every apiserver error is read from its `Status` (reason, message, code), never from text.

mod act;
mod check;
mod decide;
mod kube;
mod manifests;
mod observe;
mod reach;
mod record;
mod rollout;
mod signals;
#[cfg(test)]
mod tests;

use anyhow::{Result, bail};

use self::act::Cluster;
use self::check::{check_config, context_of, kubeconfig};
pub use self::decide::{Act, decide_cleanup, decide_promote, decide_rollback, decide_stage};
use self::kube::connect;
pub use self::manifests::deployment;
pub use self::observe::{Dep, Seen, Svc};
use self::reach::Reach;
use super::history::{self, Event, History};
use super::plan;
use super::{Address, Cleanup, Fate, Ledger, Staged, Table, url_host};
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
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
/// On the live Service while a canary shares it: the version live beside the canary
/// (the selector then has no version), and the canary's.
const CANARY_BESIDE: &str = "pymdeploy.dev/canary-beside";
const CANARY: &str = "pymdeploy.dev/canary";
/// The key of the deploy record's ConfigMap that holds `History::render()`.
const RECORD_KEY: &str = "history";
/// On a live Deployment: when its version went live last.
const LIVE_SINCE: &str = "pymdeploy.dev/live-since";
const CONTAINER: &str = "app";
/// The longest `name` as a Deployment name's stem: `<app>-<version>` must fit a label value
/// (63), with room for a dirty version.
const APP_MAX: usize = 30;

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
            check_config(&c)?;
            context_of(&c, &kc)?;
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
        if let super::Change::Destroy(scope) = change {
            let mut lines = Vec::new();
            for (k, c, acts) in destroy_plans(ctx, scope)? {
                lines.extend(plan::describe(&Cluster::new(k, c), &acts));
            }
            return Ok(lines);
        }
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
                    c.k8s_replicas.get() as i32,
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
                    c.k8s_replicas.get() as i32,
                    secrets,
                    c.keep_previous as usize,
                    &c.rollout,
                )?
            }
            super::Change::Destroy(_) => unreachable!("answered above"),
            super::Change::Rollback => {
                decide_rollback(
                    &seen,
                    names,
                    c.k8s_replicas.get() as i32,
                    ctx.opts.rollback_to.as_deref(),
                    c.rollout.bakes(),
                )?
                .2
            }
        };
        Ok(plan::describe(&Cluster::new(k, c), &acts))
    }

    /// The canary's share is its pods' among live's; its pods' health (and Prometheus,
    /// where set) judges it.
    fn judged_by(&self, ctx: &Ctx) -> Result<String> {
        Ok(signals::source(&ctx.config_for(PymEnv::Live)?))
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
            c.k8s_replicas.get() as i32,
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
            c.k8s_replicas.get() as i32,
            !c.env_secrets.is_empty(),
            c.keep_previous as usize,
            &c.rollout,
        )?;
        let names = k.names.clone();
        let mut cluster = Cluster::new(k, c);
        cluster.bakes = acts.iter().any(|a| matches!(a, decide::Act::Bake { .. }));
        plan::execute(ctx, &mut cluster, &acts, progress)?;
        Ok(format!("{version} live on {}/{}", names.ns, names.app))
    }

    fn rollback(&self, ctx: &Ctx, to: Option<&str>, progress: &StepProgress<'_>) -> Result<String> {
        let c = ctx.config_for(PymEnv::Live)?;
        let k = ctx.wait(connect(&c))?;
        let seen = ctx.wait(k.observe())?;
        let (current, target, acts) = decide_rollback(&seen, &k.names, c.k8s_replicas.get() as i32, to, c.rollout.bakes())?;
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

    /// Staging's then live's, each where its config points (they may be two clusters).
    fn destroy(
        &self,
        ctx: &Ctx,
        scope: super::Scope,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let mut removed = Vec::new();
        for (k, c, acts) in destroy_plans(ctx, scope)? {
            let ns = k.names.ns.clone();
            plan::execute(ctx, &mut Cluster::new(k, c), &acts, progress).map_err(|e| {
                e.context(format!(
                    "destroying {scope} stopped; deleted before it: {}; `cargo xtask destroy` again takes the rest",
                    if removed.is_empty() { "nothing".to_string() } else { removed.join(", ") }
                ))
            })?;
            removed.extend(acts.iter().filter_map(|a| match a {
                Act::Delete { name } => Some(format!("{ns}/{name}")),
                _ => None,
            }));
        }
        let name = &ctx.config().name;
        Ok(match removed.is_empty() {
            true => format!("nothing of {name} to delete for {scope}"),
            false => format!(
                "{scope} of {name} deleted ({}); the deploy record stays",
                removed.join(", ")
            ),
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

/// Destroy's plans: staging's then live's, each with the cluster its config names.
fn destroy_plans(ctx: &Ctx, scope: super::Scope) -> Result<Vec<(self::kube::Kube, Config, Vec<Act>)>> {
    let envs = [
        (scope.staging(), PymEnv::Staging),
        (scope.live(), PymEnv::Live),
    ];
    let mut plans = Vec::new();
    for (_, env) in envs.into_iter().filter(|(on, _)| *on) {
        let c = ctx.config_for(env)?;
        let k = ctx.wait(connect(&c))?;
        let seen = ctx.wait(k.observe())?;
        let acts = decide::decide_destroy(&seen, &k.names, env);
        if !acts.is_empty() {
            plans.push((k, c, acts));
        }
    }
    Ok(plans)
}

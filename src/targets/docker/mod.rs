//! The docker target: one Docker engine (the local one unless `DOCKER_HOST` names
//! another) serves staging and live.
//!
//! - staging is one container, `pym-<name>-staging`, published on `staging_port`, replaced
//!   by each `stage`;
//! - live is the proxy `pym-<name>-proxy` (see `ops::proxy`) on `live_port`, in front of
//!   one running container per live version, `pym-<name>-live-<version>`, on the network
//!   `pym-<name>`. The running one is live; stopped ones are the previous versions kept
//!   for rollback, `keep_previous` of them and the one a rollback would go to;
//! - the deploy record (`targets::history`) is the label of a never-started container
//!   (`record`).
//!
//! Each changing command observes the engine (`observe`), decides its actions (`decide`,
//! pure and unit-tested) and hands them to `targets::plan::execute`, through the actor
//! in `act`; `--dry-run` prints the same decision through the same `describe`.
//!
//! Every container the target makes carries the labels `org.pymacaron.name`,
//! `org.pymacaron.env` and `org.pymacaron.version`, from which `status` reads the state:
//! there is no state file to drift from the engine.

mod act;
mod decide;
mod names;
mod observe;
mod proxy;
mod record;

use std::collections::HashMap;

use anyhow::{Result, bail};
use bollard::Docker;
use bollard::models::ContainerSummary;

use self::act::Engine;
use self::decide::{decide_cleanup, decide_promote, decide_rollback, decide_stage};
use self::names::lock_name;
use self::observe::{container_name, is_running, label, observe};
pub use self::proxy::make_proxy_image;
use super::history::{Event, History};
use super::plan;
use super::{Address, Change, Ledger, Staged};
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::ops::service::{LABEL_ENV, LABEL_NAME, LABEL_SERVICE_ID, owned_labels};
use crate::ops::{self, state};
use crate::output::StepProgress;

pub const LABEL_VERSION: &str = "org.pymacaron.version";

/// The host the checks reach a published port on (the engine's host when it is remote).
fn check_host(ctx: &Ctx, c: &Config) -> Result<String> {
    Ok(ctx.published(&c.publish_ip)?.1)
}

/// The engine lock: a container `pym-<name>-lock`, never started, whose labels name its
/// holder. The engine refuses to create two containers of one name, so two machines
/// deploying to one engine exclude each other (the file lock only excludes the runs of
/// one machine). Removed when the run ends; a holder killed outright leaves it, and the
/// next run takes it over when the holder provably is gone (a dead process of this very
/// host), else only with `--break-lock`.
pub struct EngineLock {
    docker: Docker,
    name: String,
    rt: tokio::runtime::Handle,
}

impl Drop for EngineLock {
    fn drop(&mut self) {
        ops::docker::remove_now(&self.rt, &self.docker, &self.name);
    }
}

const LABEL_LOCK: &str = "org.pymacaron.lock";
/// The docker target, behind `super::Target`.
pub struct DockerTarget;

impl DockerTarget {
    /// Where live answers, as the outcome of a promote says it: through the edge, its
    /// first host name; else the live proxy's address.
    fn live_at(&self, ctx: &Ctx, engine: &Engine) -> String {
        use super::Target;
        self.address(ctx, PymEnv::Live).map_or_else(
            |_| format!("{}:{}", engine.host, engine.config.live_port),
            |a| a.url(),
        )
    }

    /// The actor for one environment, with the image it runs when already known.
    fn engine(ctx: &Ctx, env: PymEnv, image: Option<String>, had_route: bool) -> Result<Engine> {
        let config = ctx.config_for(env)?;
        let host = check_host(ctx, &config)?;
        Ok(Engine::new(
            config,
            host,
            ctx.image_tag()?,
            image,
            had_route,
        ))
    }

    /// Stage's, promote's or rollback's actor and actions, decided from the engine now:
    /// what a run carries out and what its dry run prints (`staged` for promote, `to`
    /// for rollback).
    fn decide(
        ctx: &Ctx,
        change: Change,
        staged: Option<&Staged>,
        to: Option<&str>,
    ) -> Result<(Engine, Vec<decide::Action>, decide::Seen)> {
        let config = ctx.config_for(change.env())?;
        match change {
            Change::Stage => Ok((
                Self::engine(ctx, PymEnv::Staging, None, false)?,
                decide_stage(
                    &config,
                    &ctx.version()?.to_string(),
                    staging_has_site(ctx)?,
                ),
                decide::Seen::default(),
            )),
            Change::Promote => {
                let staged = staged.ok_or_else(|| {
                    anyhow::anyhow!("promote on the docker target needs what staging runs")
                })?;
                let seen = observe(ctx, &config, Some(&staged.version))?;
                let plan = decide_promote(&seen, &config, &staged.version, &staged.digest)?;
                let mut engine = Self::engine(
                    ctx,
                    PymEnv::Live,
                    Some(staged.image.clone()),
                    !seen.routes.is_empty(),
                )?;
                engine.bakes = plan.iter().any(|a| matches!(a, decide::Action::Bake { .. }));
                Ok((engine, plan, seen))
            }
            Change::Rollback => {
                let seen = observe(ctx, &config, None)?;
                let plan = decide_rollback(&seen, to, config.rollout.bakes())?;
                Ok((
                    Self::engine(ctx, PymEnv::Live, None, !seen.routes.is_empty())?,
                    plan,
                    seen,
                ))
            }
            Change::Destroy(scope) => {
                let docker = ctx.docker()?;
                let made = ctx.wait(observe::made(docker, &config))?;
                let net = ctx.wait(ops::docker::network_exists(docker, &names::network(&config)))?;
                // No version of HEAD is needed to take things away.
                let host = check_host(ctx, &config)?;
                let mut plan = decide::decide_destroy(&made, net, scope);
                // The service's sites go from the edge first (the edge itself stays: it
                // serves other services).
                let live = ctx.config_for(PymEnv::Live)?;
                for (env, wanted) in [(PymEnv::Staging, scope.staging()), (PymEnv::Live, scope.live())] {
                    let c = ctx.config_for(env)?;
                    let own = env == PymEnv::Live || c.hosts != live.hosts;
                    if wanted && own && !c.hosts.is_empty() {
                        plan.insert(0, decide::Action::RemoveSite { env });
                    }
                }
                Ok((
                    Engine::new(config, host, String::new(), None, false),
                    plan,
                    decide::Seen::default(),
                ))
            }
        }
    }
}

impl super::Target for DockerTarget {
    fn units(&self) -> (&'static str, &'static str) {
        ("container", "containers")
    }

    fn lock(&self, ctx: &Ctx, command: &str, break_lock: bool) -> Result<Option<super::Guard>> {
        Ok(Some(Box::new(engine_lock(ctx, command, break_lock)?)))
    }

    /// What can be known before the first step: the engine is one pymdeploy can name, and
    /// staging and live publish where this machine can reach them.
    fn check(&self, ctx: &Ctx) -> Result<()> {
        for env in [PymEnv::Staging, PymEnv::Live] {
            ctx.published(&ctx.config_for(env)?.publish_ip)?;
        }
        refuse_foreign(ctx, ctx.config())?;
        let docker = ctx.docker()?;
        if ctx.config().proxy_image.is_none() {
            let engine = ctx.wait(ops::docker::platform(docker))?;
            if !proxy::can_make_proxy(&engine) {
                return Err(hinted(
                    format!(
                        "the live proxy's image is made from the running pymdeploy, a {} {} binary, and the engine at {} runs {} {} containers",
                        std::env::consts::OS,
                        std::env::consts::ARCH,
                        ctx.engine()?.describe(),
                        engine.0,
                        engine.1
                    ),
                    format!(
                        "on a {} {} machine, run `pymdeploy proxy-image --push REGISTRY/TEAM` once and set `proxy_image:` in pym-config.yaml to the image it prints",
                        engine.0, engine.1
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_address(&self, ctx: &Ctx, env: PymEnv) -> Result<()> {
        check_port(ctx, env)
    }

    /// Where an environment answers, read from that environment's config (its overlay may
    /// set the ports), as `stage` and `promote` publish it.
    fn address(&self, ctx: &Ctx, env: PymEnv) -> Result<Address> {
        if env == PymEnv::Local {
            bail!("the local environment is not on a deploy target");
        }
        let c = ctx.config_for(env)?;
        // Through the edge, the tests reach the first host name (which must resolve
        // where they run), over HTTPS where the site has TLS.
        if env == PymEnv::Live
            && let (_, Some(vhost)) = act::live_reach(&c)
        {
            let tls = c.tls.is_some();
            return Ok(Address {
                host: vhost.to_string(),
                port: match tls {
                    true => c.edge_https_port.get(),
                    false => c.edge_http_port.get(),
                },
                tls,
                token: None,
                hold: None,
            });
        }
        let port = if env == PymEnv::Staging {
            c.staging_port.get()
        } else {
            c.live_port.get()
        };
        Ok(Address {
            host: check_host(ctx, &c)?,
            port,
            tls: false,
            token: None,
            hold: None,
        })
    }

    fn plan(&self, ctx: &Ctx, change: Change, staged: Option<&Staged>) -> Result<Vec<String>> {
        let (engine, plan, _) = Self::decide(ctx, change, staged, ctx.opts.rollback_to.as_deref())?;
        Ok(plan::describe(&engine, &plan))
    }

    fn ledger(&self) -> Option<&dyn Ledger> {
        Some(self)
    }

    /// The live proxy splits live's requests and counts each version's.
    fn judged_by(&self, _ctx: &Ctx) -> Result<String> {
        Ok(act::SOURCE.into())
    }

    /// A new staging container replaces the previous one, then must be healthy and serve
    /// the version; one that does not is removed, its logs shown.
    fn stage(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let version = ctx.version()?.to_string();
        let (mut engine, actions, _) = Self::decide(ctx, Change::Stage, None, None)?;
        plan::execute(ctx, &mut engine, &actions, progress)
            .map_err(|e| e.context(format!("staging {version} failed")))?;
        let c = &engine.config;
        Ok(format!(
            "{version} on {}:{} (healthy in {:.1}s)",
            engine.host,
            c.staging_port,
            engine.waited.as_secs_f64()
        ))
    }

    fn promote(
        &self,
        ctx: &Ctx,
        staged: Option<&Staged>,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let (mut engine, actions, seen) = Self::decide(ctx, Change::Promote, staged, None)?;
        let version = staged.map(|s| s.version.clone()).unwrap_or_default();
        if let Err(e) = plan::execute(ctx, &mut engine, &actions, progress) {
            return Err(match (plan::kept(&e), seen.routes.is_empty()) {
                (true, _) => e.context(format!(
                    "{version} is live and verified, but promoting it did not finish"
                )),
                (false, true) => e.context(format!(
                    "promoting {version} failed; nothing was live, and nothing is"
                )),
                (false, false) => {
                    e.context(format!("promoting {version} failed; live is unchanged"))
                }
            });
        }
        let stopped: Vec<&str> = actions
            .iter()
            .filter_map(|a| {
                if let decide::Action::StopStray { version } = a {
                    Some(version.as_str())
                } else {
                    None
                }
            })
            .collect();
        if !actions
            .iter()
            .any(|a| matches!(a, decide::Action::Switch { .. }))
        {
            let strays = if stopped.is_empty() {
                String::new()
            } else {
                format!("; stopped the stray {}", stopped.join(", "))
            };
            return Ok(format!(
                "{version} is already live on {}{strays}",
                self.live_at(ctx, &engine)
            ));
        }
        let replaced: Vec<&str> = actions
            .iter()
            .filter_map(|a| {
                if let decide::Action::Retire { versions } = a {
                    Some(versions.iter().map(String::as_str))
                } else {
                    None
                }
            })
            .flatten()
            .collect();
        let was = if replaced.is_empty() {
            "first live version".to_string()
        } else {
            format!("replaced {}", replaced.join(", "))
        };
        Ok(format!(
            "{version} live on {} ({was})",
            self.live_at(ctx, &engine)
        ))
    }

    fn rollback(&self, ctx: &Ctx, to: Option<&str>, progress: &StepProgress<'_>) -> Result<String> {
        // A switch earlier in this run may still be retiring the version rolled back to.
        ctx.settle();
        let (mut engine, actions, seen) = Self::decide(ctx, Change::Rollback, None, to)?;
        let (back, why) = actions
            .iter()
            .find_map(|a| match a {
                decide::Action::Start { version, why } => Some((version.clone(), why.clone())),
                _ => None,
            })
            .unwrap_or_default();
        let from = seen.current().unwrap_or("nothing").to_string();
        plan::execute(ctx, &mut engine, &actions, progress).map_err(|e| match plan::kept(&e) {
            true => e.context(format!(
                "{back} is live again and verified, but the rollback did not finish"
            )),
            false => e.context(format!(
                "rolling back to {back} failed; live is unchanged ({from})"
            )),
        })?;
        ctx.set_rolled_back_to(back.clone());
        Ok(format!("{back} live again (was {from}): {why}"))
    }

    fn destroy(
        &self,
        ctx: &Ctx,
        scope: super::Scope,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let (mut engine, actions, _) = Self::decide(ctx, Change::Destroy(scope), None, None)?;
        let name = engine.config.name.clone();
        if actions.is_empty() {
            return Ok(format!("nothing of {name} on the engine for {scope}"));
        }
        let result = plan::execute(ctx, &mut engine, &actions, progress);
        let removed = match engine.removed.is_empty() {
            true => "nothing".to_string(),
            false => engine.removed.join(", "),
        };
        result.map_err(|e| {
            e.context(format!(
                "destroying {scope} of {name} stopped; removed: {removed}; `cargo xtask destroy` again takes the rest"
            ))
        })?;
        Ok(format!("{scope} of {name} removed ({removed}); the deploy record stays"))
    }

    fn maintenance(&self, ctx: &Ctx, env: PymEnv, on: bool) -> Result<String> {
        let c = ctx.config_for(env)?;
        let docker = ctx.docker()?;
        let at = names::front(&c, env);
        if env == PymEnv::Staging && at.site.is_none() {
            bail!("staging answers on its own port, with no proxy in front of it: set `hosts` in pym-config.staging.yaml to serve it through the edge");
        }
        if ctx.wait(proxy::existing_state(docker, &at.container))? != Some(None) {
            return Err(hinted(
                format!("{env} of {} has no running proxy ({}) to answer for it", c.name, at.container),
                "deploy it first (`cargo xtask deploy`)",
            ));
        }
        proxy::maintenance(ctx, docker, &c, env, on)?;
        Ok(match on {
            true => format!("{env} of {} answers 503 (maintenance) on {}; the version keeps running", c.name, at.container),
            false => format!("{env} of {} is out of maintenance", c.name),
        })
    }

    /// One line per container of the service: env, version, state, image, since.
    fn status(&self, ctx: &Ctx) -> Result<super::Table> {
        let config = ctx.config();
        let docker = ctx.docker()?;
        let mut list = ctx.wait(ops::docker::list(
            docker,
            &[format!("{LABEL_NAME}={}", config.name)],
        ))?;
        list.retain(|c| label(c, LABEL_ENV) != record::RECORD_ENV);
        // Live first, then the previous versions in the order a rollback walks them.
        let seen = ctx.wait(observe::engine(docker, config))?;
        let order = seen.previous();
        let rank = |c: &ContainerSummary| {
            order
                .iter()
                .position(|v| v == label(c, LABEL_VERSION))
                .unwrap_or(usize::MAX)
        };
        list.sort_by_key(|c| {
            (
                label(c, LABEL_ENV).to_string(),
                !is_running(c),
                rank(c),
                std::cmp::Reverse(c.created.unwrap_or(0)),
            )
        });
        // What live's versions answered over the last minute, as the proxy counted it.
        let counted = ctx
            .wait(async {
                Ok(proxy::counts(docker, &names::front(config, PymEnv::Live).container, 60).await.ok())
            })?;
        let mut table = super::Table::new(&[
            "ENV", "VERSION", "STATE", "HEALTH", "RATE", "ERRORS", "P95", "SINCE", "IMAGE",
        ]);
        for c in &list {
            // A stopped live version is a previous one, or one a rollback went away from
            // (which a bare rollback never returns to).
            let env = match label(c, LABEL_ENV) {
                "live" if !is_running(c) && seen.history.rolled_back_from(label(c, LABEL_VERSION)) => {
                    "rolled-back"
                }
                "live" if !is_running(c) => "previous",
                other => other,
            };
            // Live since it was made live, by the record; else since it was made.
            let since = match env {
                "live" => seen
                    .history
                    .live_since(label(c, LABEL_VERSION))
                    .or(c.created),
                _ => c.created,
            };
            let since = since.map(crate::version::fmt_utc).unwrap_or_default();
            let state = c.status.clone().unwrap_or_default();
            let state = state.split(' ').next().unwrap_or("").to_lowercase();
            // Health as a client sees it: the health path on the container's published port.
            let health = match (is_running(c), env) {
                (false, _) => "-".to_string(),
                (true, "proxy") => probe(
                    ctx,
                    &check_host(ctx, config)?,
                    config.live_port.get(),
                    &config.health_path,
                ),
                (true, _) => {
                    let port = c
                        .ports
                        .as_ref()
                        .and_then(|ps| {
                            ps.iter()
                                .find(|p| p.private_port == config.port.get() && p.public_port.is_some())
                        })
                        .and_then(|p| p.public_port);
                    match port {
                        Some(p) => probe(ctx, &check_host(ctx, config)?, p, &config.health_path),
                        None => "unknown".into(),
                    }
                }
            };
            let upstream = format!("{}:{}", container_name(c), config.port);
            let [rate, errors, p95] = match (&counted, env) {
                (Some(w), "live") if w.upstreams.contains_key(&upstream) => {
                    let f = act::figures_of(w, &upstream);
                    [
                        format!("{:.1}/s", f.requests as f64 / f.seconds.max(1.0)),
                        format!("{}%", crate::config::fmt_percent(f.error_rate())),
                        f.p95_ms.map_or("-".into(), |ms| format!("{ms:.0}ms")),
                    ]
                }
                _ => ["-".into(), "-".into(), "-".into()],
            };
            table.rows.push(vec![
                env.to_string(),
                label(c, LABEL_VERSION).to_string(),
                state,
                health,
                rate,
                errors,
                p95,
                since,
                c.image.clone().unwrap_or_default(),
            ]);
        }
        edge_rows(ctx, config, &mut table)?;
        Ok(table)
    }

    /// Removes the stopped live versions beyond the `keep_previous` most recently live, but
    /// never the one a rollback would go to (promote prunes as it goes, so this finds work
    /// only after `keep_previous` was lowered); with `execute` false, only says which.
    fn cleanup(&self, ctx: &Ctx, execute: bool) -> Result<Vec<super::Cleanup>> {
        let config = ctx.config_for(PymEnv::Live)?;
        refuse_foreign(ctx, &config)?;
        let docker = ctx.docker()?;
        let seen = ctx.wait(observe::engine(docker, &config))?;
        let gone = decide_cleanup(&seen, config.keep_previous as usize);
        let mut lines = Vec::new();
        for version in seen.previous() {
            let fate = match gone.contains(&version) {
                false => super::Fate::Keep(None),
                true => {
                    if execute {
                        let id = seen
                            .live
                            .iter()
                            .find(|l| l.version == version)
                            .map(|l| l.id.clone())
                            .unwrap_or_default();
                        ctx.wait(ops::docker::remove(docker, &id))?;
                    }
                    super::Fate::Go {
                        done: execute,
                        did: "removed",
                        would: "remove",
                    }
                }
            };
            lines.push(super::Cleanup {
                name: version,
                version: None,
                fate,
            });
        }
        if execute {
            let removed = ctx.wait(act::unused_images(
                docker,
                &config.name,
                &config.image_repo(),
                ctx.image_tag().ok().as_deref(),
            ))?;
            if !removed.is_empty() {
                ctx.out.status(
                    "Removed",
                    &format!("the images no kept version uses: {}", removed.join(", ")),
                );
            }
        }
        Ok(lines)
    }
}

/// The deploy record lives on the engine (`record`); what staging runs is its staging
/// container.
impl Ledger for DockerTarget {
    fn staged(&self, ctx: &Ctx) -> Result<Option<Staged>> {
        observe::staged(ctx, &ctx.config_for(PymEnv::Staging)?)
    }

    fn history(&self, ctx: &Ctx) -> Result<History> {
        ctx.wait(record::read(ctx.docker()?, &ctx.config().name))
    }

    fn record(&self, ctx: &Ctx, event: Event, version: &str, digest: Option<&str>) -> Result<()> {
        let now = state::now();
        ctx.wait(record::update(ctx.docker()?, ctx.config(), |h| {
            h.push(event, version, digest, now)
        }))
    }
}

fn probe(ctx: &Ctx, host: &str, port: u16, path: &str) -> String {
    match ctx.wait(async {
        Ok(ops::http::get(host, port, path, std::time::Duration::from_secs(2)).await)
    }) {
        Ok(Ok((status, _))) if (200..300).contains(&status) => "healthy".into(),
        Ok(Ok((status, _))) => format!("http-{status}"),
        _ => "no-answer".into(),
    }
}

/// Takes the engine's lock: a container of a fixed name the engine creates only once,
/// labelled with its holder; taken over when its holder is a dead process of this host,
/// else only with `break_lock`.
fn engine_lock(ctx: &Ctx, command: &str, break_lock: bool) -> Result<EngineLock> {
    let config = ctx.config();
    let docker = ctx.docker()?;
    let name = lock_name(config);
    ctx.wait(ops::docker::empty_image(
        docker,
        record::EMPTY_IMAGE.0,
        record::EMPTY_IMAGE.1,
    ))?;
    let image = format!("{}:{}", record::EMPTY_IMAGE.0, record::EMPTY_IMAGE.1);
    let me = serde_json::to_string(&state::Holder::me(command))?;
    for _ in 0..3 {
        // Its identity but not its name: the lock is no environment of the service.
        let mut labels = HashMap::from([(LABEL_LOCK.to_string(), me.clone())]);
        if let Some(id) = &config.service_id {
            labels.insert(LABEL_SERVICE_ID.to_string(), id.clone());
        }
        if ctx.wait(ops::docker::create_named(docker, &name, &image, labels))? {
            return Ok(EngineLock {
                docker: docker.clone(),
                name,
                rt: ctx.runtime(),
            });
        }
        let Some((labels, _)) = ctx.wait(ops::docker::container_state(docker, &name))? else {
            continue;
        };
        let holder = labels
            .get(LABEL_LOCK)
            .and_then(|h| serde_json::from_str::<state::Holder>(h).ok());
        let who = holder
            .as_ref()
            .map(|h| h.describe())
            .unwrap_or_else(|| format!("a container {name} that is not a pymdeploy lock"));
        match (holder.as_ref().is_some_and(|h| h.is_gone()), break_lock) {
            (true, _) => ctx.out.warn(&format!(
                "taking over the engine lock of {} from {who}: that process is gone",
                config.name
            )),
            (false, true) => ctx.out.warn(&format!(
                "breaking the engine lock of {} held by {who} (--break-lock)",
                config.name
            )),
            (false, false) => {
                return Err(hinted(
                    format!(
                        "{} is being deployed to the engine at {} by {who}",
                        config.name,
                        ctx.engine()?.describe()
                    ),
                    format!(
                        "wait for that deploy to finish; if it is gone for good (its machine died), run again with --break-lock, or remove the lock with `docker rm {name}`"
                    ),
                ));
            }
        }
        ctx.wait(ops::docker::remove(docker, &name))?;
    }
    bail!("cannot take the engine lock {name}: it was taken again each time it was freed")
}

fn labels(c: &Config, env: PymEnv, version: &str) -> HashMap<String, String> {
    let mut labels = owned_labels(c, env.as_str());
    labels.insert(LABEL_VERSION.to_string(), version.to_string());
    labels
}

/// Refuses an engine where containers of this service's name carry another identity: a
/// same-named service of another repository, whose containers, network and images this
/// one would otherwise replace, route to or remove. Containers without the label (made
/// by an older pymdeploy) are taken as this service's.
fn refuse_foreign(ctx: &Ctx, config: &Config) -> Result<()> {
    let Some(id) = &config.service_id else {
        return Ok(());
    };
    let docker = ctx.docker()?;
    let list = ctx.wait(ops::docker::list(
        docker,
        &[format!("{LABEL_NAME}={}", config.name)],
    ))?;
    let foreign: Vec<String> = list
        .iter()
        .filter(|c| !matches!(label(c, LABEL_SERVICE_ID), "") && label(c, LABEL_SERVICE_ID) != id)
        .map(container_name)
        .collect();
    if let Some(first) = foreign.first() {
        let theirs = list
            .iter()
            .find(|c| container_name(c) == *first)
            .map(|c| label(c, LABEL_SERVICE_ID).to_string())
            .unwrap_or_default();
        return Err(hinted(
            format!(
                "the engine at {} runs a service named {} of another repository (service_id {theirs}; this one is {id}): {}",
                ctx.engine()?.describe(),
                config.name,
                foreign.join(", ")
            ),
            "give this service its own `name:` in pym-config.yaml; if that service is gone for good, remove its containers (`docker rm -f ...`) first",
        ));
    }
    Ok(())
}

/// Refuses a run whose staging or live port (as `env` is configured) is taken by a
/// container of the engine that is not this service's, or by anything else listening
/// there, before the first step rather than at `docker run`'s "address already in use".
fn check_port(ctx: &Ctx, env: PymEnv) -> Result<()> {
    let c = ctx.config_for(env)?;
    check_hosts(ctx, &c)?;
    if env == PymEnv::Live && !c.hosts.is_empty() {
        return check_edge(ctx, &c, env);
    }
    if env == PymEnv::Staging && staging_has_site(ctx)? {
        check_edge(ctx, &c, env)?;
    }
    let (key, port) = match env {
        PymEnv::Staging => ("staging_port", c.staging_port.get()),
        _ => ("live_port", c.live_port.get()),
    };
    let ours = |s: &bollard::models::ContainerSummary| {
        label(s, LABEL_NAME) == c.name
            && c.service_id
                .as_ref()
                .is_none_or(|id| label(s, LABEL_SERVICE_ID) == id)
    };
    port_free_or(ctx, &c, key, port, env.as_str(), "this service's", ours)
}

/// Refused unless `port` (the config's `key`, for `what`) is free on the engine's host
/// or published by a container `ours` accepts (`whose` it must be, said otherwise).
fn port_free_or(
    ctx: &Ctx,
    c: &Config,
    key: &str,
    port: u16,
    what: &str,
    whose: &str,
    ours: impl Fn(&bollard::models::ContainerSummary) -> bool,
) -> Result<()> {
    let docker = ctx.docker()?;
    let (_, host) = ctx.published(&c.publish_ip)?;
    let fix = format!("stop what holds it, or give `{key}` a free port in pym-config.yaml");
    let holders = ctx.wait(ops::docker::publishing(docker, port))?;
    if let Some(other) = holders.iter().find(|s| !ours(s)) {
        return Err(hinted(
            format!(
                "{}: port {port} ({what}) is taken on the engine by container {}, which is not {whose}",
                c.at(key),
                container_name(other)
            ),
            fix,
        ));
    }
    if holders.is_empty() && ctx.wait(async { Ok(ops::http::listening(&host, port).await) })? {
        return Err(hinted(
            format!(
                "{}: port {port} ({what}) is taken: something that is not a container of the engine listens on {host}:{port}",
                c.at(key)
            ),
            fix,
        ));
    }
    Ok(())
}

/// The service's sites on the edge, a row each: its hosts and path, whether it serves or
/// is in maintenance, health through the edge, its certificates' expiry.
fn edge_rows(ctx: &Ctx, config: &Config, table: &mut super::Table) -> Result<()> {
    let docker = ctx.docker()?;
    for env in [PymEnv::Live, PymEnv::Staging] {
        let c = ctx.config_for(env)?;
        let at = names::front(&c, env);
        let Some(key) = at.site else { continue };
        if env == PymEnv::Staging && c.hosts == config.hosts {
            continue;
        }
        let status = match ctx.wait(proxy::existing_state(docker, &at.container))? {
            Some(None) => ctx.wait(proxy::edge_status(docker, &at.container)).ok(),
            _ => None,
        };
        let site = status
            .as_ref()
            .and_then(|s| s.sites.iter().find(|x| x.key == key));
        let state = match site {
            None => "no site".to_string(),
            Some(s) if s.maintenance => "maintenance".into(),
            Some(s) if s.live.is_none() => "no route".into(),
            Some(_) => "serving".into(),
        };
        let (port, vhost) = act::live_reach(&c);
        let health = match (site, vhost) {
            (Some(_), Some(v)) => {
                let host = check_host(ctx, &c)?;
                let path = c.health_path.clone();
                ctx.wait(async {
                    Ok(
                        match ops::http::get_as(&host, port, Some(v), &path, std::time::Duration::from_secs(2)).await {
                            Ok((code, _)) => code.to_string(),
                            Err(_) => "no answer".into(),
                        },
                    )
                })?
            }
            _ => "-".into(),
        };
        let certs: Vec<String> = match (&c.tls, &status) {
            (None, _) => vec!["plain HTTP".into()],
            (Some(_), Some(s)) => c
                .hosts
                .iter()
                .map(|h| {
                    let h = h.to_ascii_lowercase();
                    match s.certificates.iter().find(|(n, _)| *n == h) {
                        Some((_, until)) => format!("{h} until {}", crate::version::fmt_utc(*until)),
                        None => format!("{h} pending"),
                    }
                })
                .collect(),
            (Some(_), None) => vec!["-".into()],
        };
        table.rows.push(vec![
            format!("edge-{env}"),
            format!("{}{}", c.hosts.join(","), c.path_prefix.as_deref().unwrap_or("")),
            state,
            health,
            "-".into(),
            "-".into(),
            "-".into(),
            certs.join("; "),
            format!("{} :{}/:{}", at.container, c.edge_http_port, c.edge_https_port),
        ]);
    }
    Ok(())
}

/// What is wrong with `hosts`, `path_prefix` and `tls` as written, and the TLS files.
fn check_hosts(ctx: &Ctx, c: &Config) -> Result<()> {
    let fix_hosts = "`hosts` lists host names like `api.example.com` or `*.example.com`";
    for h in &c.hosts {
        let name = h.strip_prefix("*.").unwrap_or(h);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !valid {
            return Err(hinted(
                format!("{}: `{h}` in `hosts` is not a host name", c.at("hosts")),
                fix_hosts,
            ));
        }
        if h.contains('*') && matches!(c.tls, Some(crate::config::Tls::Acme(_))) {
            return Err(hinted(
                format!("{}: `{h}` is a wildcard, and `tls: acme` proves each host over HTTP-01, which cannot prove a wildcard", c.at("tls")),
                "name each host in `hosts`, or give a wildcard certificate with `tls: {cert: FILE, key: FILE}`",
            ));
        }
    }
    if let Some(p) = &c.path_prefix
        && (!p.starts_with('/') || p.contains(['?', '#', ' ']))
    {
        return Err(hinted(
            format!("{}: `path_prefix: {p}` is not a path", c.at("path_prefix")),
            "write it as an absolute path, like `/api`",
        ));
    }
    for key in ["path_prefix", "tls"] {
        let set = match key {
            "path_prefix" => c.path_prefix.is_some(),
            "tls" => c.tls.is_some(),
            _ => false,
        };
        if set && c.hosts.is_empty() {
            return Err(hinted(
                format!("{}: `{key}` is for the edge proxy, and `hosts` is not set", c.at(key)),
                "add `hosts: [your.host.name]` (the edge routes by host name), or remove it",
            ));
        }
    }
    if !c.hosts.is_empty() {
        proxy::site_conf(ctx, c, PymEnv::Live)?;
    }
    Ok(())
}

/// The edge's ports are the edge's or free, and no other service's site claims a host
/// (and path) of this one.
/// A host of `c`'s that `hosts` names too, under the same path prefix.
fn shared_host<'a>(c: &'a Config, hosts: &[String], prefix: &Option<String>) -> Option<&'a String> {
    c.hosts.iter().find(|h| {
        *prefix == c.path_prefix && hosts.iter().any(|o| o.eq_ignore_ascii_case(h))
    })
}

/// Whether staging has a site of its own on the edge: its overlay names hosts other than
/// live's.
fn staging_has_site(ctx: &Ctx) -> Result<bool> {
    let staging = ctx.config_for(PymEnv::Staging)?;
    Ok(!staging.hosts.is_empty() && staging.hosts != ctx.config_for(PymEnv::Live)?.hosts)
}

/// Refuses `env`'s site (`c` is that environment's config) where the edge's ports are
/// another's, or where a host (and prefix) of it is another site's: another service's,
/// or this service's other environment's.
fn check_edge(ctx: &Ctx, c: &Config, env: PymEnv) -> Result<()> {
    let docker = ctx.docker()?;
    let edge = names::edge_name(c);
    for (key, port) in [
        ("edge_http_port", c.edge_http_port.get()),
        ("edge_https_port", c.edge_https_port.get()),
    ] {
        let whose = format!("the edge {edge}");
        port_free_or(ctx, c, key, port, "the edge", &whose, |s| {
            container_name(s) == edge
        })?;
    }
    if env == PymEnv::Staging {
        let live = ctx.config_for(PymEnv::Live)?;
        if let Some(h) = shared_host(c, &live.hosts, &live.path_prefix) {
            return Err(hinted(
                format!(
                    "{}: staging names `{h}`{}, which live names too ({})",
                    c.at("hosts"),
                    c.path_prefix.as_deref().unwrap_or(""),
                    live.at("hosts")
                ),
                "give staging host names of its own in pym-config.staging.yaml, or the very same list as live's (staging then has no site of its own)",
            ));
        }
    }
    if ctx.wait(proxy::existing_state(docker, &edge))? != Some(None) {
        return Ok(());
    }
    let Ok(status) = ctx.wait(proxy::edge_status(docker, &edge)) else {
        return Ok(()); // an older edge, replaced by the deploy
    };
    let ours = ops::edge::site_key(&c.name, env.as_str());
    for site in status.sites.iter().filter(|s| s.key != ours) {
        if let Some(h) = shared_host(c, &site.hosts, &site.path_prefix) {
            return Err(hinted(
                format!(
                    "{}: `{h}`{} is served on the edge {edge} by {} ({})",
                    c.at("hosts"),
                    c.path_prefix.as_deref().unwrap_or(""),
                    site.service,
                    site.env
                ),
                "give this service other host names (or another `path_prefix`), or take that service off them first",
            ));
        }
    }
    Ok(())
}

/// The image to deploy, by digest: what `push` pushed in this run, or else the registry
/// digest the engine recorded for this version's tag; without `docker_repo`, the
/// engine's own image ID (content-addressed too).
pub(crate) fn reference(ctx: &Ctx, docker: &Docker) -> Result<String> {
    if let Some(r) = ctx.pushed_image() {
        return Ok(r);
    }
    let tag = ctx.image_tag()?;
    let repo = tag
        .rsplit_once(':')
        .map(|(r, _)| r.to_string())
        .unwrap_or(tag.clone());
    let inspect = ctx
        .wait(async { Ok(docker.inspect_image(&tag).await) })?
        .map_err(|_| {
            hinted(
                format!("no image {tag} in the engine"),
                "build and push it first: `cargo xtask build && cargo xtask push`",
            )
        })?;
    if !ctx.config().has_registry() {
        return inspect
            .id
            .ok_or_else(|| anyhow::anyhow!("the engine reports no ID for image {tag}"));
    }
    inspect
        .repo_digests
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.starts_with(&format!("{repo}@")))
        .ok_or_else(|| {
            hinted(
                format!(
                    "{tag} has not been pushed to {}",
                    ops::registry::registry_of(&tag)
                ),
                "push it first: `cargo xtask push`",
            )
        })
}

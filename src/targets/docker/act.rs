//! The docker target's actor: what each `Action` does to the engine and what undoes it.
//! `targets::plan::execute` runs the list, prints each line, and unwinds the undos.

use std::time::Duration;

use anyhow::{Result, anyhow};
use bollard::Docker;

use super::decide::Action;
use super::names::{edge_name, front, live_name, network, proxy_name, staging_name, upstream_container};
use super::{container_name, labels, observe, proxy, record};
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::ops::service::{LABEL_ENV, LABEL_NAME, container_env, wait_healthy};
use crate::ops::{self, docker::RunSpec};
use crate::output::StepProgress;
use crate::targets::history::Event;
use crate::targets::plan::Actor;
use crate::targets::rollout;

/// Carries out the docker target's actions for one environment's config.
pub(super) struct Engine {
    pub config: Config,
    /// Where this machine reaches published ports (the engine's host when remote).
    pub host: String,
    /// This version's tag, as the plan names the image.
    pub tag: String,
    /// The image to run, by digest: the staged one for promote; resolved on first use
    /// for stage (`super::reference`).
    pub image: Option<String>,
    /// Whether the proxy routed anywhere when the plan was decided.
    pub had_route: bool,
    /// The container the plan started last: the one `WaitHealthy` waits for.
    started: Option<String>,
    /// The route a switch replaced.
    old_route: Option<String>,
    /// How long the staged container took to be healthy.
    pub waited: Duration,
    /// What `destroy` removed so far, said in its summary.
    pub removed: Vec<String>,
    /// Whether a canary's share was given in this plan (its undo taken once).
    sharing: bool,
    /// Whether the plan bakes: its bake, not the verify, commits the switch.
    pub bakes: bool,
}

impl Engine {
    pub fn new(
        config: Config,
        host: String,
        tag: String,
        image: Option<String>,
        had_route: bool,
    ) -> Engine {
        Engine {
            config,
            host,
            tag,
            image,
            had_route,
            started: None,
            old_route: None,
            waited: Duration::ZERO,
            removed: Vec::new(),
            sharing: false,
            bakes: false,
        }
    }

    /// The figures of `version` as the live proxy counts them.
    fn signals(&self, docker: &Docker, version: &str) -> Signals {
        Signals {
            docker: docker.clone(),
            proxy: front(&self.config, PymEnv::Live).container,
            upstream: format!("{}:{}", live_name(&self.config, version), self.config.port),
        }
    }

    fn image(&mut self, ctx: &Ctx, docker: &Docker) -> Result<String> {
        if self.image.is_none() {
            self.image = Some(super::reference(ctx, docker)?);
        }
        Ok(self.image.clone().expect("set above"))
    }

    fn run_spec<'a>(
        &self,
        name: &'a str,
        image: &'a str,
        version: &str,
        env: PymEnv,
        bind: &'a str,
        reach: Reach<'a>,
    ) -> Result<RunSpec<'a>> {
        let c = &self.config;
        let (host_port, network) = match reach {
            Reach::Port(p) => (Some(p), None),
            Reach::Network(n) => (None, Some(n)),
        };
        Ok(RunSpec {
            name,
            image,
            env: container_env(version, c, env)?,
            container_port: c.port.get(),
            host_ip: bind,
            host_port,
            labels: labels(c, env, version),
            network,
            restart: true,
            cmd: None,
            locked_down: false,
            state_dir: None,
            more_ports: Vec::new(),
            state_volume: None,
        })
    }
}

/// How a container is reached: staging's on its own host port, a live version's on the
/// service's network, behind the live proxy.
enum Reach<'a> {
    Port(u16),
    Network(&'a str),
}

impl Actor for Engine {
    type Act = Action;

    fn describe(&self, act: &Action) -> String {
        let (c, host) = (&self.config, &self.host);
        match act {
            Action::Pull => format!(
                "pull {}, by the digest push reports, from {}",
                self.tag,
                ops::registry::registry_of(&self.tag)
            ),
            Action::ReplaceStaging => format!(
                "stop the previous {}, if any (removed beside the next steps)",
                staging_name(c)
            ),
            Action::RunStaging { .. } => format!(
                "start {} from {}, published on {}:{}, PYM_ENV=staging",
                staging_name(c),
                self.tag,
                c.publish_ip,
                c.staging_port
            ),
            Action::WaitStaging { version } => format!(
                "wait up to {}s for {} to answer {}, and check {} is {version}",
                c.health_timeout,
                c.health_path,
                c.health_statuses.join(" or "),
                c.version_path
            ),
            Action::StopStray { version } => {
                format!("stop the stray {version}: it runs, and live routes elsewhere")
            }
            Action::StagingSite { version } => format!(
                "route the edge {}'s site for {} to {version} (staging)",
                edge_name(c),
                c.hosts.join(", ")
            ),
            Action::EnsureProxy if !c.hosts.is_empty() => format!(
                "ensure network {}, the edge {} on {}:{} and :{}, and its site for {}{}",
                network(c),
                edge_name(c),
                c.publish_ip,
                c.edge_http_port,
                c.edge_https_port,
                c.hosts.join(", "),
                c.path_prefix.as_deref().unwrap_or("")
            ),
            Action::EnsureProxy => format!(
                "ensure network {} and the proxy {} on {}:{}",
                network(c),
                proxy_name(c),
                c.publish_ip,
                c.live_port
            ),
            Action::RemoveLeftover { version } => format!(
                "remove the stopped {} left by an earlier promote",
                live_name(c, version)
            ),
            Action::Run { version } => format!(
                "start {} beside the live version, PYM_ENV=live",
                live_name(c, version)
            ),
            Action::Start { version, why } => {
                format!("start {} again: {why}", live_name(c, version))
            }
            Action::WaitHealthy { version } if c.verify_version => format!(
                "wait up to {}s for {version} to answer {}, and check {} names it",
                c.health_timeout, c.health_path, c.version_path
            ),
            Action::WaitHealthy { version } => format!(
                "wait up to {}s for {version} to answer {}",
                c.health_timeout, c.health_path
            ),
            Action::Expose { version, .. } => format!(
                "from here on, a put-back records {version} as rolled back from"
            ),
            Action::Share { version, percent } => format!(
                "send {percent}% of live's requests to {version} (a client stays on one version)"
            ),
            Action::Judge { version, percent } => {
                rollout::step_line(&c.rollout, version, *percent, SOURCE)
            }
            Action::Switch { version } => format!("route the proxy to {version}"),
            Action::Bake { version } => rollout::bake_line(&c.rollout, version, SOURCE),
            Action::ShareOff { version } => format!("send none of live's requests to {version}"),
            Action::Withdrawn { version, .. } => {
                format!("record {version} rolled back from in the deploy record")
            }
            Action::Verify { version } => {
                let (port, vhost) = live_reach(c);
                format!(
                    "check {}:{port}{} is {version} (else route back)",
                    vhost.unwrap_or(host),
                    c.version_path
                )
            }
            Action::Record { entries } => {
                let said: Vec<String> = entries
                    .iter()
                    .map(|(e, v, _)| e.say(v))
                    .collect();
                format!(
                    "record {} in the deploy record on the engine",
                    said.join(", ")
                )
            }
            Action::Retire { versions } if versions.is_empty() => format!(
                "keep {} previous versions, remove unused images",
                c.keep_previous
            ),
            Action::Retire { versions } => format!(
                "drain {} (up to {}s), stop, keep {} previous versions, remove unused images",
                versions.join(", "),
                c.drain_seconds,
                c.keep_previous
            ),
            Action::Remove { name } => format!("remove {name}, its last 40 log lines shown"),
            Action::Stop { version } => format!("stop {} again", live_name(c, version)),
            Action::RouteBack { upstream } => {
                format!("route the proxy back to {}", upstream_container(upstream))
            }
            Action::RemoveProxy if !c.hosts.is_empty() => {
                format!("remove the site made by this run from the edge {}", edge_name(c))
            }
            Action::RemoveProxy => format!("remove the proxy {} made by this run", proxy_name(c)),
            Action::Discard { name, what } => format!("remove {name} ({what})"),
            Action::RemoveSite { env } => {
                format!("remove the {env} site of {} from the edge {}", c.name, edge_name(c))
            }
            Action::RemoveNetwork => format!("remove network {}", network(c)),
            Action::RemoveImages => format!(
                "remove the images of {} no container uses",
                c.image_repo()
            ),
        }
    }

    /// The verified switch, or where the service bakes, the bake passed.
    fn commits(&self, act: &Action) -> bool {
        match act {
            Action::Verify { .. } => !self.bakes,
            Action::Bake { .. } => true,
            _ => false,
        }
    }

    fn waits(&self, act: &Action) -> bool {
        matches!(
            act,
            Action::Pull
                | Action::WaitStaging { .. }
                | Action::WaitHealthy { .. }
                | Action::Verify { .. }
                | Action::Judge { .. }
                | Action::Bake { .. }
        )
    }

    fn run(
        &mut self,
        ctx: &Ctx,
        act: &Action,
        progress: &StepProgress<'_>,
    ) -> Result<Option<Action>> {
        let docker = ctx.docker()?;
        let c = self.config.clone();
        match act {
            Action::Pull => {
                let reference = self.image(ctx, docker)?;
                let creds =
                    ops::registry::credentials_for(&ops::registry::registry_of(&reference))?;
                if let Some(cr) = &creds {
                    ctx.out.add_secret(&cr.password);
                }
                progress.message(&format!("pulling {reference}"));
                ctx.wait(ops::docker::pull(
                    docker,
                    &reference,
                    creds.as_ref(),
                    progress,
                ))?;
            }
            Action::ReplaceStaging => {
                // Earlier runs killed before they removed theirs leave stopped ones: they
                // go too.
                let name = staging_name(&c);
                let old = format!("{name}-replaced-{}", std::process::id());
                ctx.wait(ops::docker::kill_and_rename(docker, &name, &old))?;
                let replaced: Vec<String> = ctx
                    .wait(ops::docker::list(
                        docker,
                        &[
                            format!("{LABEL_NAME}={}", c.name),
                            format!("{LABEL_ENV}=staging"),
                        ],
                    ))?
                    .iter()
                    .filter(|x| container_name(x).starts_with(&format!("{name}-replaced-")))
                    .filter_map(|x| x.id.clone())
                    .collect();
                if !replaced.is_empty() {
                    let d = docker.clone();
                    ctx.defer(&format!("removing the previous {name}"), async move {
                        for id in replaced {
                            ops::docker::remove(&d, &id).await?;
                        }
                        Ok(Vec::new())
                    });
                }
            }
            Action::RunStaging { version } => {
                let name = staging_name(&c);
                let image = self.image(ctx, docker)?;
                let spec = self.run_spec(
                    &name,
                    &image,
                    version,
                    PymEnv::Staging,
                    &c.publish_ip,
                    Reach::Port(c.staging_port.get()),
                )?;
                self.started = Some(ctx.wait(ops::docker::run(docker, spec))?);
                return Ok(Some(Action::Remove { name }));
            }
            Action::WaitStaging { version } => {
                let id = self
                    .started
                    .clone()
                    .ok_or_else(|| anyhow!("a plan runs the container before it waits for it"))?;
                progress.message(&format!(
                    "waiting for {}:{}{} to answer",
                    self.host, c.staging_port, c.health_path
                ));
                let host = self.host.clone();
                self.waited = ctx.wait(async {
                    let waited = wait_healthy(docker, &id, &host, c.staging_port.get(), &c).await?;
                    verify_version(&c, &host, (c.staging_port.get(), None), (version, None), Duration::from_secs(5))
                        .await?;
                    Ok::<_, anyhow::Error>(waited)
                })?;
            }
            Action::StopStray { version } => {
                ctx.wait(ops::docker::stop(docker, &live_name(&c, version), 10))?
            }
            Action::StagingSite { .. } => {
                let at = front(&c, PymEnv::Staging);
                let labels = crate::ops::service::owned_labels(&c, "network");
                ctx.wait(ops::docker::ensure_network(docker, &at.network, labels))?;
                let name = staging_name(&c);
                ctx.wait(ops::docker::connect_network(docker, &name, &at.network))?;
                proxy::ensure_edge(ctx, docker, &c, PymEnv::Staging, progress)?;
                let upstream = format!("{name}:{}", c.port);
                proxy::route_at(ctx, docker, &at, &upstream)?;
            }
            Action::EnsureProxy => {
                let made = proxy::ensure_proxy(ctx, docker, &c, progress)?;
                return Ok((made && !self.had_route).then_some(Action::RemoveProxy));
            }
            Action::RemoveLeftover { version } => {
                ctx.wait(ops::docker::remove(docker, &live_name(&c, version)))?
            }
            Action::Run { version } => {
                let name = live_name(&c, version);
                let (bind, _) = ctx.check_binding(&c.publish_ip)?;
                let image = self
                    .image
                    .clone()
                    .ok_or_else(|| anyhow!("promote runs the staged image, and none was given"))?;
                let net = network(&c);
                let spec = self.run_spec(
                    &name,
                    &image,
                    version,
                    PymEnv::Live,
                    &bind,
                    Reach::Network(&net),
                )?;
                self.started = Some(ctx.wait(ops::docker::run(docker, spec))?);
                return Ok(Some(Action::Remove { name }));
            }
            Action::Start { version, .. } => {
                let name = live_name(&c, version);
                ctx.wait(ops::docker::start(docker, &name))?;
                self.started = Some(name);
                return Ok(Some(Action::Stop {
                    version: version.clone(),
                }));
            }
            Action::WaitHealthy { version } => {
                let id = self
                    .started
                    .clone()
                    .ok_or_else(|| anyhow!("a plan starts a container before it waits for one"))?;
                let port = ctx.wait(ops::docker::published_port(docker, &id, c.port.get()))?;
                let host = ctx.check_binding(&c.publish_ip)?.1;
                // Healthy, and the version it was started as: whatever else answers on
                // that address is never taken for it.
                ctx.wait(async {
                    wait_healthy(docker, &id, &host, port, &c).await?;
                    let live = Some(PymEnv::Live);
                    verify_version(&c, &host, (port, None), (version, live), Duration::from_secs(5))
                        .await
                })?;
            }
            Action::Expose { version, back_to } => {
                return Ok(Some(Action::Withdrawn {
                    version: version.clone(),
                    back_to: back_to.clone(),
                }));
            }
            Action::Share { version, percent } => {
                let upstream = format!("{}:{}", live_name(&c, version), c.port);
                proxy::canary(ctx, docker, &c, &upstream, *percent)?;
                // One undo takes the share back, whichever step it is at.
                let first = !self.sharing;
                self.sharing = true;
                return Ok(first.then(|| Action::ShareOff {
                    version: version.clone(),
                }));
            }
            Action::Judge { version, percent } => {
                let mut signals = self.signals(docker, version);
                rollout::step(ctx, &mut signals, &c.rollout, version, *percent, progress)?;
            }
            Action::Switch { version } => {
                let new_route = format!("{}:{}", live_name(&c, version), c.port);
                self.old_route = proxy::current_route(ctx, docker, &c)?.filter(|r| *r != new_route);
                proxy::route(ctx, docker, &c, &new_route)?;
                // All of live now goes to it: the canary's share is moot.
                if self.sharing {
                    proxy::canary(ctx, docker, &c, &new_route, 0)?;
                }
                return Ok(self
                    .old_route
                    .clone()
                    .map(|upstream| Action::RouteBack { upstream }));
            }
            Action::Bake { version } => {
                let mut signals = self.signals(docker, version);
                let now = ops::state::now();
                rollout::bake(ctx, &mut signals, &c.rollout, version, progress, &mut || {
                    ctx.wait(record::update(docker, &c, |h| {
                        h.push(Event::KnownGood, version, None, now)
                    }))
                })?;
            }
            Action::ShareOff { version } => {
                let upstream = format!("{}:{}", live_name(&c, version), c.port);
                proxy::canary(ctx, docker, &c, &upstream, 0)?;
                self.sharing = false;
            }
            Action::Withdrawn { version, back_to } => {
                let now = ops::state::now();
                ctx.wait(record::update(docker, &c, |h| {
                    let made_live = h.live_order().first() == Some(&version.as_str());
                    h.push(Event::RolledBack, version, None, now);
                    if let (true, Some(back)) = (made_live, back_to) {
                        h.push(Event::Live, back, None, now);
                    }
                }))?;
            }
            Action::Verify { version } => ctx.wait(verify_version(
                &c,
                &self.host,
                live_reach(&c),
                (version, None),
                Duration::from_secs(10),
            ))?,
            Action::Record { entries } => {
                let now = ops::state::now();
                let written = ctx.wait(record::update(docker, &c, |h| {
                    for (event, version, digest) in entries {
                        h.push(*event, version, digest.as_deref(), now);
                    }
                }));
                // Live serves the version already: a record not written is a warning.
                if let Err(e) = written {
                    ctx.out
                        .warn(&format!("the deploy record was not updated: {e:#}"));
                }
            }
            Action::Retire { versions } => {
                retire(ctx, docker, &c, self.old_route.clone(), versions)
            }
            Action::Remove { name } => {
                let logs =
                    ctx.wait(async { Ok(ops::docker::logs_tail(docker, name, 40).await) })?;
                progress.suspend(|| {
                    ctx.out
                        .block(&format!("last 40 log lines of container {name}"), &logs)
                });
                ctx.wait(ops::docker::remove(docker, name))?;
            }
            Action::Stop { version } => {
                ctx.wait(ops::docker::stop(docker, &live_name(&c, version), 1))?
            }
            Action::RouteBack { upstream } => proxy::route(ctx, docker, &c, upstream)?,
            Action::RemoveProxy if !c.hosts.is_empty() => {
                proxy::remove_site(ctx, docker, &c, PymEnv::Live)?
            }
            Action::RemoveProxy => ctx.wait(ops::docker::remove(docker, &proxy_name(&c)))?,
            Action::RemoveSite { env } => {
                let ec = ctx.config_for(*env)?;
                proxy::remove_site(ctx, docker, &ec, *env)?;
                self.removed.push(format!("the {env} site on {}", edge_name(&ec)));
            }
            Action::Discard { name, .. } => {
                ctx.wait(ops::docker::remove(docker, name))?;
                self.removed.push(name.clone());
            }
            Action::RemoveNetwork => {
                ctx.wait(ops::docker::remove_network(docker, &network(&c)))?;
                self.removed.push(format!("network {}", network(&c)));
            }
            Action::RemoveImages => {
                let images =
                    ctx.wait(unused_images(docker, &c.name, &c.image_repo(), None))?;
                if !images.is_empty() {
                    progress.line(&format!("removed {}", images.join(", ")));
                    self.removed.push(match images.len() {
                        1 => "1 image".to_string(),
                        n => format!("{n} images"),
                    });
                }
            }
        }
        Ok(None)
    }
}

/// A version's figures, read from what the live proxy counts for its upstream.
pub(super) struct Signals {
    docker: Docker,
    proxy: String,
    upstream: String,
}

/// Where the docker target's figures come from, as `--dry-run` says it.
pub(super) const SOURCE: &str = "the live proxy's counts of each version's requests";

impl rollout::Signals for Signals {
    fn source(&self) -> String {
        SOURCE.into()
    }

    fn figures(&mut self, ctx: &Ctx, seconds: u64) -> Result<rollout::Figures> {
        let window = ctx.wait(proxy::counts(&self.docker, &self.proxy, seconds))?;
        Ok(figures_of(&window, &self.upstream))
    }
}

/// One upstream's figures in what the proxy counted.
pub(super) fn figures_of(window: &ops::proxy::Window, upstream: &str) -> rollout::Figures {
    let counts = window.upstreams.get(upstream).cloned().unwrap_or_default();
    rollout::Figures {
        seconds: window.seconds,
        requests: counts.requests,
        errors: counts.errors,
        failures: counts.failures,
        p95_ms: rollout::quantile(ops::proxy::LATENCY_BOUNDS_MS, &counts.latency, 0.95),
        unhealthy: None,
        uncounted: false,
    }
}

/// Asks `/version` on a local port (as `vhost` where given) every 50 ms until it names
/// `version` (and, with `env`, that `PYM_ENV`).
pub(super) async fn verify_version(
    config: &Config,
    host: &str,
    (port, vhost): (u16, Option<&str>),
    (version, env): (&str, Option<PymEnv>),
    within: Duration,
) -> Result<()> {
    crate::targets::verify_version(
        config,
        host,
        (port, vhost),
        version,
        env,
        within,
        crate::targets::Poll {
            every: Duration::from_millis(50),
            ask: Duration::from_secs(2),
        },
    )
    .await
}

/// Live serves the new version: what is left (drain the old ones, stop them, remove
/// versions beyond keep_previous and images nothing uses) is on no request's path, so it
/// runs beside the next steps, and the run ends once it is done.
fn retire(
    ctx: &Ctx,
    docker: &Docker,
    config: &Config,
    old_route: Option<String>,
    versions: &[String],
) {
    let retire = Retire {
        docker: docker.clone(),
        config: config.clone(),
        head: ctx.image_tag().ok(),
        old_route,
        old: versions
            .iter()
            .map(|v| (live_name(config, v), v.clone()))
            .collect(),
    };
    let what = if versions.is_empty() {
        "pruning old versions".to_string()
    } else {
        format!("retiring {}", versions.join(", "))
    };
    ctx.defer(&what, retire.run());
}

/// The work after a switch, done off the critical path (see `retire`).
struct Retire {
    docker: Docker,
    config: Config,
    head: Option<String>,
    old_route: Option<String>,
    old: Vec<(String, String)>,
}

impl Retire {
    /// Returns what it did, as lines for the run's output; warnings start with "warning: ".
    async fn run(self) -> Result<Vec<String>> {
        let mut said = Vec::new();
        let c = &self.config;
        if let Some(prev) = &self.old_route {
            let started = std::time::Instant::now();
            match proxy::drain(&self.docker, &front(c, PymEnv::Live).container, prev, c.drain_seconds).await? {
                0 => said.push(format!("drained {} in {:.2}s", upstream_container(prev), started.elapsed().as_secs_f64())),
                n => said.push(format!("warning: {n} request(s) still in flight to {} after drain_seconds ({}s); stopping it cut them", upstream_container(prev), c.drain_seconds)),
            }
        }
        for (id, version) in &self.old {
            ops::docker::stop(&self.docker, id, 10).await?;
            said.push(format!("stopped {version}"));
        }
        // Keep the `keep_previous` versions live most recently, and the one a rollback
        // would go to; remove the rest, and the images nothing uses any more.
        let seen = observe::engine(&self.docker, c).await?;
        let gone = super::decide::decide_cleanup(&seen, c.keep_previous as usize);
        for v in seen.live.iter().filter(|v| gone.contains(&v.version)) {
            ops::docker::remove(&self.docker, &v.id).await?;
            said.push(format!("removed {} (beyond keep_previous)", v.version));
        }
        match unused_images(&self.docker, &c.name, &c.image_repo(), self.head.as_deref()).await {
            Ok(tags) if !tags.is_empty() => said.push(format!(
                "removed the image{} {}",
                if tags.len() == 1 { "" } else { "s" },
                tags.join(", ")
            )),
            Ok(_) => {}
            Err(e) => said.push(format!("warning: old images were not removed: {e:#}")),
        }
        Ok(said)
    }
}

/// Removes the images of this service that no container of it uses (a version's image
/// goes with its last container), but the one HEAD builds: it may be deployed next.
/// Returns the tags removed.
pub(super) async fn unused_images(
    docker: &Docker,
    service: &str,
    repo: &str,
    head: Option<&str>,
) -> Result<Vec<String>> {
    let used: std::collections::HashSet<String> =
        ops::docker::list(docker, &[format!("{LABEL_NAME}={service}")])
            .await?
            .into_iter()
            .filter_map(|c| c.image_id)
            .collect();
    let mut removed = Vec::new();
    for (id, tags) in ops::docker::images_of(docker, repo).await? {
        if used.contains(&id) || head.is_some_and(|h| tags.iter().any(|t| t == h)) {
            continue;
        }
        ops::docker::remove_image(docker, &id).await?;
        removed.extend(tags);
    }
    Ok(removed)
}

/// Where live answers on the engine's host: the live port, or with `hosts` the edge's
/// HTTP port for the first host name that is not a wildcard.
pub(super) fn live_reach(c: &Config) -> (u16, Option<&str>) {
    match c.hosts.iter().find(|h| !h.contains('*')) {
        Some(h) => (c.edge_http_port.get(), Some(h.as_str())),
        None if !c.hosts.is_empty() => (c.edge_http_port.get(), c.hosts.first().map(String::as_str)),
        None => (c.live_port.get(), None),
    }
}

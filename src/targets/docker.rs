//! The docker target: one Docker engine (the local one unless `DOCKER_HOST` names
//! another) serves staging and live.
//!
//! - staging is one container, `pym-<name>-staging`, published on `staging_port`, replaced
//!   by each `stage`;
//! - live is the proxy `pym-<name>-proxy` (see `ops::proxy`) on `live_port`, in front of
//!   one running container per live version, `pym-<name>-live-<version>`, on the network
//!   `pym-<name>`. The running one is live; stopped ones are the previous versions kept
//!   for rollback, newest first, `keep_previous` of them.
//!
//! Every container the target makes carries the labels `org.pymacaron.name`,
//! `org.pymacaron.env` and `org.pymacaron.version`, from which `status` reads the state:
//! there is no state file to drift from the engine.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::models::ContainerSummary;

use super::Address;
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::ops::service::{LABEL_ENV, LABEL_NAME, container_env, wait_healthy};
use crate::ops::{self, docker::RunSpec, proxy, state};
use crate::output::StepProgress;

pub const LABEL_VERSION: &str = "org.pymacaron.version";

fn network(c: &Config) -> String {
    format!("pym-{}", c.name)
}
fn proxy_name(c: &Config) -> String {
    format!("pym-{}-proxy", c.name)
}
fn staging_name(c: &Config) -> String {
    format!("pym-{}-staging", c.name)
}
fn live_name(c: &Config, version: &str) -> String {
    format!("pym-{}-live-{version}", c.name)
}

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
        let _ = self
            .rt
            .block_on(ops::docker::remove(&self.docker, &self.name));
    }
}

const LABEL_LOCK: &str = "org.pymacaron.lock";
const LOCK_IMAGE: (&str, &str) = ("pym-lock", "1");

/// The docker target, behind `super::Target`.
pub struct DockerTarget;

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
        let docker = ctx.docker()?;
        if ctx.config().proxy_image.is_none() {
            let engine = ctx.block_on(ops::docker::platform(docker))?;
            if !can_make_proxy(&engine) {
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

    /// Where an environment answers, read from that environment's config (its overlay may
    /// set the ports), as `stage` and `promote` publish it.
    fn address(&self, ctx: &Ctx, env: PymEnv) -> Result<Address> {
        if env == PymEnv::Local {
            bail!("the local environment is not on a deploy target");
        }
        let c = ctx.config_for(env)?;
        let port = if env == PymEnv::Staging {
            c.staging_port
        } else {
            c.live_port
        };
        Ok(Address {
            host: check_host(ctx, &c)?,
            port,
            tls: false,
            token: None,
            hold: None,
        })
    }

    fn plan(&self, ctx: &Ctx, step: &str) -> Result<Vec<String>> {
        let c = &ctx.config_for(if step == "stage" {
            PymEnv::Staging
        } else {
            PymEnv::Live
        })?;
        let version = version_of(ctx)?;
        let tag = ctx.image_tag()?;
        let host = check_host(ctx, c)?;
        Ok(match step {
            "stage" => decide_stage(c)
                .iter()
                .map(|a| a.describe(c, &tag, &version))
                .collect(),
            // The very actions a run takes: decided from what the engine holds now.
            "promote" => decide_promote(&observe(ctx, c, Some(&version))?, c, &version)?
                .iter()
                .map(|a| a.describe(c, &host))
                .collect(),
            "rollback" => decide_rollback(&observe(ctx, c, None)?)?
                .iter()
                .map(|a| a.describe(c, &host))
                .collect(),
            other => vec![format!("{other}")],
        })
    }

    /// Decide (`decide_stage`), act (`act_stage`): a new staging container replaces the
    /// previous one, then must be healthy and serve the version.
    fn stage(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let config = ctx.config_for(PymEnv::Staging)?;
        let version = version_of(ctx)?;
        let waited = act_stage(ctx, &config, &version, &decide_stage(&config), progress)?;
        let host = check_host(ctx, &config)?;
        Ok(format!(
            "{version} on {host}:{} (healthy in {:.1}s)",
            config.staging_port,
            waited.as_secs_f64()
        ))
    }

    /// Observe the engine, decide the actions (`decide_promote`), act on them.
    fn promote(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let config = ctx.config_for(PymEnv::Live)?;
        let version = version_of(ctx)?;
        let seen = observe(ctx, &config, Some(&version))?;
        let host = check_host(ctx, &config)?;
        let plan = decide_promote(&seen, &config, &version)?;
        act(ctx, &config, &plan, !seen.routes.is_empty(), progress)?;
        let stopped: Vec<&str> = plan
            .iter()
            .filter_map(|a| {
                if let Action::StopStray { version } = a {
                    Some(version.as_str())
                } else {
                    None
                }
            })
            .collect();
        if !plan.iter().any(|a| matches!(a, Action::Switch { .. })) {
            let strays = if stopped.is_empty() {
                String::new()
            } else {
                format!("; stopped the stray {}", stopped.join(", "))
            };
            return Ok(format!(
                "{version} is already live on {host}:{}{strays}",
                config.live_port
            ));
        }
        let replaced: Vec<&str> = plan
            .iter()
            .filter_map(|a| {
                if let Action::Retire { versions } = a {
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
            "{version} live on {host}:{} ({was})",
            config.live_port
        ))
    }

    /// Observe the engine, decide the actions (`decide_rollback`), act on them.
    fn rollback(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        // A switch earlier in this run may still be retiring the version rolled back to.
        ctx.settle();
        let config = ctx.config_for(PymEnv::Live)?;
        let seen = observe(ctx, &config, None)?;
        let plan = decide_rollback(&seen)?;
        act(ctx, &config, &plan, !seen.routes.is_empty(), progress)?;
        let to = plan
            .iter()
            .find_map(|a| {
                if let Action::Start { version } = a {
                    Some(version.clone())
                } else {
                    None
                }
            })
            .unwrap_or_default();
        let from = seen
            .live
            .iter()
            .find(|v| v.running)
            .map_or_else(|| "nothing".to_string(), |v| v.version.clone());
        ctx.set_rolled_back_to(to.clone());
        Ok(format!("{to} live again (was {from})"))
    }

    /// One line per container of the service: env, version, state, image, since.
    fn status(&self, ctx: &Ctx) -> Result<super::Table> {
        let config = ctx.config();
        let docker = ctx.docker()?;
        let mut list = ctx.block_on(ops::docker::list(
            docker,
            &[format!("{LABEL_NAME}={}", config.name)],
        ))?;
        // Live first, then the previous versions in the order they were live (the order
        // `rollback` goes back along), newest first where the proxy does not remember.
        let history = route_history(ctx, docker, config)?;
        let rank = |c: &ContainerSummary| {
            history
                .iter()
                .position(|u| upstream_container(u) == container_name(c))
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
        let mut table = super::Table::new(&["ENV", "VERSION", "STATE", "HEALTH", "SINCE", "IMAGE"]);
        for c in &list {
            let env = match label(c, LABEL_ENV) {
                "live" if !is_running(c) => "previous",
                other => other,
            };
            let since = c.created.map(crate::version::fmt_utc).unwrap_or_default();
            let state = c.status.clone().unwrap_or_default();
            let state = state.split(' ').next().unwrap_or("").to_lowercase();
            // Health as a client sees it: the health path on the container's published port.
            let health = match (is_running(c), env) {
                (false, _) => "-".to_string(),
                (true, "proxy") => probe(
                    ctx,
                    &check_host(ctx, config)?,
                    config.live_port,
                    &config.health_path,
                ),
                (true, _) => {
                    let port = c
                        .ports
                        .as_ref()
                        .and_then(|ps| {
                            ps.iter()
                                .find(|p| p.private_port == config.port && p.public_port.is_some())
                        })
                        .and_then(|p| p.public_port);
                    match port {
                        Some(p) => probe(ctx, &check_host(ctx, config)?, p, &config.health_path),
                        None => "unknown".into(),
                    }
                }
            };
            table.rows.push(vec![
                env.to_string(),
                label(c, LABEL_VERSION).to_string(),
                state,
                health,
                since,
                c.image.clone().unwrap_or_default(),
            ]);
        }
        Ok(table)
    }

    /// Removes the stopped live versions beyond the `keep_previous` newest (promote prunes as
    /// it goes, so this finds work only after `keep_previous` was lowered); with `execute`
    /// false, only says which.
    fn cleanup(&self, ctx: &Ctx, execute: bool) -> Result<Vec<super::Cleanup>> {
        let config = ctx.config_for(PymEnv::Live)?;
        let docker = ctx.docker()?;
        let mut lines = Vec::new();
        let all = live_versions(&live_containers(ctx, docker, &config)?);
        let history = route_history(ctx, docker, &config)?;
        for (i, v) in previous_versions(&all, &history).into_iter().enumerate() {
            let what = v.version.clone();
            let fate = if i < config.keep_previous as usize {
                super::Fate::Keep(None)
            } else {
                if execute {
                    ctx.block_on(ops::docker::remove(docker, &v.id))?;
                }
                super::Fate::Go {
                    done: execute,
                    did: "removed",
                    would: "remove",
                }
            };
            lines.push(super::Cleanup {
                name: what,
                version: None,
                fate,
            });
        }
        if execute {
            let removed = prune_images(ctx, docker, &config)?;
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

/// Takes the engine's lock: a container of a fixed name the engine creates only once,
/// labelled with its holder; taken over when its holder is a dead process of this host,
/// else only with `break_lock`.
fn engine_lock(ctx: &Ctx, command: &str, break_lock: bool) -> Result<EngineLock> {
    let config = ctx.config();
    let docker = ctx.docker()?;
    let name = format!("pym-{}-lock", config.name);
    ctx.block_on(ops::docker::empty_image(docker, LOCK_IMAGE.0, LOCK_IMAGE.1))?;
    let image = format!("{}:{}", LOCK_IMAGE.0, LOCK_IMAGE.1);
    let me = serde_json::to_string(&state::Holder::me(command))?;
    for _ in 0..3 {
        let labels = HashMap::from([(LABEL_LOCK.to_string(), me.clone())]);
        if ctx.block_on(ops::docker::create_named(docker, &name, &image, labels))? {
            return Ok(EngineLock {
                docker: docker.clone(),
                name,
                rt: ctx.runtime(),
            });
        }
        let Some((labels, _)) = ctx.block_on(ops::docker::container_state(docker, &name))? else {
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
        ctx.block_on(ops::docker::remove(docker, &name))?;
    }
    bail!("cannot take the engine lock {name}: it was taken again each time it was freed")
}

fn labels(c: &Config, env: PymEnv, version: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_NAME.to_string(), c.name.clone()),
        (LABEL_ENV.to_string(), env.to_string()),
        (LABEL_VERSION.to_string(), version.to_string()),
    ])
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
    let inspect = ctx.block_on(docker.inspect_image(&tag)).map_err(|_| {
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

fn version_of(ctx: &Ctx) -> Result<String> {
    Ok(ctx.version()?.to_string())
}

/// Asks `/version` on a local port every 50 ms until it names `version`.
async fn verify_version(
    config: &Config,
    host: &str,
    port: u16,
    version: &str,
    within: Duration,
) -> Result<()> {
    super::verify_version(
        config,
        host,
        port,
        version,
        None,
        within,
        super::Poll {
            every: Duration::from_millis(50),
            ask: Duration::from_secs(2),
        },
    )
    .await
}

/// The proxy's image: `proxy_image` when set (pulled if the engine lacks it), else made
/// from the running binary.
fn proxy_image(ctx: &Ctx, docker: &Docker, progress: &StepProgress<'_>) -> Result<String> {
    let Some(image) = ctx.config().proxy_image.clone() else {
        return built_proxy_image(ctx, docker, progress);
    };
    if ctx
        .block_on(ops::docker::image_labels(docker, &image))?
        .is_none()
    {
        progress.message(&format!("pulling the proxy image {image}"));
        let credentials = ops::registry::credentials_for(&ops::registry::registry_of(&image))?;
        ctx.wait(ops::docker::pull(
            docker,
            &image,
            credentials.as_ref(),
            progress,
        ))?;
    }
    Ok(image)
}

/// Whether this machine can make the proxy image for the engine from the running
/// binary: a Linux binary of the engine's CPU architecture.
fn can_make_proxy(engine: &(String, String)) -> bool {
    std::env::consts::OS == "linux" && engine.0 == "linux" && engine.1 == std::env::consts::ARCH
}

/// `pymdeploy proxy-image`: makes the proxy image from the running binary and, with a
/// repository, pushes it there for `proxy_image` to name. Returns the image's reference.
pub fn make_proxy_image(ctx: &Ctx, push_to: Option<&str>) -> Result<String> {
    let docker = ctx.docker()?;
    let engine = ctx.block_on(ops::docker::platform(docker))?;
    if !can_make_proxy(&engine) {
        bail!(
            "the running pymdeploy is a {} {} binary; the engine runs {} {} containers",
            std::env::consts::OS,
            std::env::consts::ARCH,
            engine.0,
            engine.1
        );
    }
    let progress = ctx.out.step("proxy-image");
    let image = built_proxy_image(ctx, docker, &progress)?;
    let Some(repo) = push_to else {
        return Ok(image);
    };
    let repo = format!("{}/pym-proxy", repo.trim_end_matches('/'));
    let tag = format!(
        "{}-r{}-{}",
        env!("CARGO_PKG_VERSION"),
        proxy::REVISION,
        engine.1
    );
    ctx.block_on(ops::docker::tag(docker, &image, &repo, &tag))?;
    let reference = format!("{repo}:{tag}");
    let credentials = ops::registry::credentials_for(&ops::registry::registry_of(&reference))?;
    ctx.wait(ops::docker::push(
        docker,
        &reference,
        credentials.as_ref(),
        &progress,
    ))?;
    Ok(reference)
}

/// The proxy's image, built from the running binary on first use: the binary and the
/// shared libraries it loads, on an empty image, so the proxy does not depend on the
/// service's base (musl, distroless, Python: all the same to it).
fn built_proxy_image(ctx: &Ctx, docker: &Docker, progress: &StepProgress<'_>) -> Result<String> {
    let exe =
        std::env::current_exe().context("cannot find the running binary for the proxy image")?;
    let meta = std::fs::metadata(&exe).with_context(|| format!("cannot stat {}", exe.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let tag = format!(
        "{PROXY_REPO}:{}-r{}-{:x}-{mtime:x}",
        env!("CARGO_PKG_VERSION"),
        proxy::REVISION,
        meta.len()
    );
    if ctx
        .block_on(ops::docker::image_labels(docker, &tag))?
        .is_some()
    {
        return Ok(tag);
    }
    let dir = std::env::temp_dir().join(format!("pym-proxy-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let files = proxy::image_files(&exe)?;
    for (from, to) in &files {
        let dest = dir.join("rootfs").join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().expect("a file in the image has a directory"))?;
        std::fs::copy(from, &dest)
            .with_context(|| format!("cannot copy {} for the proxy image", from.display()))?;
    }
    // The state directory, owned by the proxy's user: its volume starts as a copy of it.
    std::fs::create_dir_all(dir.join("state"))?;
    std::fs::write(dir.join("state/.keep"), "")?;
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY rootfs/ /\nCOPY --chown=65534:65534 state/ {}/\nUSER 65534:65534\nENTRYPOINT [\"{}\", \"__proxy\"]\n",
            proxy::STATE_DIR,
            proxy::BINARY
        ),
    )?;
    progress.message(&format!("building the proxy image ({} files)", files.len()));
    let req = ops::docker::BuildRequest {
        root: &dir,
        dockerfile: "Dockerfile",
        tag: &tag,
        build_args: HashMap::new(),
        labels: HashMap::new(),
    };
    let built = ctx.wait(ops::docker::build(docker, req, progress));
    let _ = std::fs::remove_dir_all(&dir);
    built?;
    Ok(tag)
}

/// Where the proxy images made from the deploying binary are kept on the engine.
const PROXY_REPO: &str = "pym-proxy";

/// On the proxy container: the image and address it was made with, so a proxy of an
/// older pymdeploy, or on an address the config no longer names, is replaced.
const LABEL_PROXY: &str = "org.pymacaron.proxy";

/// Makes sure the network and a running proxy of this pymdeploy exist.
fn ensure_proxy(
    ctx: &Ctx,
    docker: &Docker,
    config: &Config,
    progress: &StepProgress<'_>,
) -> Result<()> {
    ctx.block_on(ops::docker::ensure_network(docker, &network(config)))?;
    let name = proxy_name(config);
    // Which proxy this is (its protocol, not the binary it was copied from: `pymdeploy`
    // and a service's xtask make the same proxy) and where it listens.
    // A `proxy_image` of the team's own counts as part of which proxy this is.
    let image = config
        .proxy_image
        .as_deref()
        .map(|i| format!(" {i}"))
        .unwrap_or_default();
    let made_as = format!(
        "{}-r{}/{}:{}{image}",
        env!("CARGO_PKG_VERSION"),
        proxy::REVISION,
        config.publish_ip,
        config.live_port
    );
    if let Some((labels, code)) = ctx.block_on(ops::docker::container_state(docker, &name))? {
        if labels.get(LABEL_PROXY) == Some(&made_as) && labels.get(LABEL_NAME) == Some(&config.name)
        {
            if code.is_some() {
                ctx.block_on(ops::docker::start(docker, &name))?;
            }
            return Ok(());
        }
        // Its route history lives in the container being replaced only; carry it over.
        let mut history = route_history(ctx, docker, config)?;
        if history.is_empty() {
            history = routes_in(ctx, docker, config, proxy::LEGACY_STATE_FILE)?;
        }
        ctx.out.warn(&format!("replacing the live proxy {name} (an older pymdeploy's, or on another address): connections to the live port are refused for about a second"));
        let image = proxy_image(ctx, docker, progress)?;
        ctx.block_on(ops::docker::remove(docker, &name))?;
        create_proxy(ctx, docker, config, &image, &made_as)?;
        for u in history.iter().rev() {
            route(ctx, docker, config, u)?;
        }
        return Ok(());
    }
    let image = proxy_image(ctx, docker, progress)?;
    create_proxy(ctx, docker, config, &image, &made_as)?;
    prune_proxy_images(ctx, docker);
    Ok(())
}

/// Proxy images made by earlier builds of pymdeploy pile up on the engine (one per build
/// of the deploying binary): when a proxy is made, those no container uses go. Images
/// younger than an hour stay, in case another service's deploy just made one and is
/// about to run it.
fn prune_proxy_images(ctx: &Ctx, docker: &Docker) {
    let before = state::now() - 3600;
    let Ok(ids) = ctx.block_on(ops::docker::unused_images_before(
        docker, PROXY_REPO, before,
    )) else {
        return;
    };
    for id in ids {
        let _ = ctx.block_on(ops::docker::remove_image_if_unused(docker, &id));
    }
}

fn create_proxy(
    ctx: &Ctx,
    docker: &Docker,
    config: &Config,
    image: &str,
    made_as: &str,
) -> Result<()> {
    let name = proxy_name(config);
    let spec = RunSpec {
        name: &name,
        image,
        env: vec![],
        container_port: proxy::PORT,
        host_ip: &config.publish_ip,
        host_port: Some(config.live_port),
        labels: HashMap::from([
            (LABEL_NAME.to_string(), config.name.clone()),
            (LABEL_ENV.to_string(), "proxy".to_string()),
            (LABEL_PROXY.to_string(), made_as.to_string()),
        ]),
        network: Some(&network(config)),
        restart: true,
        cmd: Some(vec![
            "--listen".into(),
            format!("0.0.0.0:{}", proxy::PORT),
            "--state".into(),
            proxy::STATE_FILE.into(),
        ]),
        locked_down: true,
        state_dir: Some(proxy::STATE_DIR),
    };
    ctx.block_on(ops::docker::run(docker, spec))?;
    Ok(())
}

/// `None` if there is no such container; `Some(None)` if it runs; `Some(Some(code))` if
/// it has stopped.
async fn existing_state(docker: &Docker, name: &str) -> Result<Option<Option<i64>>> {
    Ok(ops::docker::container_state(docker, name)
        .await?
        .map(|(_, code)| code))
}

/// Makes `upstream` (`<container>:<port>`) the live one. The proxy is given the
/// container's address on the network too, so it connects without a DNS lookup (the
/// engine's resolver can stall on names it forwards, as it does with AAAA queries where
/// no outside resolver answers).
fn route(ctx: &Ctx, docker: &Docker, config: &Config, upstream: &str) -> Result<()> {
    let ip = ctx
        .block_on(ops::docker::ip_on(
            docker,
            upstream_container(upstream),
            &network(config),
        ))
        .ok()
        .flatten();
    let port = upstream.rsplit_once(':').map_or("", |(_, p)| p);
    let addr = ip
        .map(|ip| format!("{ip}:{port}"))
        .unwrap_or_else(|| upstream.to_string());
    let (code, out) = ctx.block_on(ops::docker::exec(
        docker,
        &proxy_name(config),
        &[
            proxy::BINARY,
            "__proxy-route",
            upstream,
            "--addr",
            &addr,
            "--state",
            proxy::STATE_FILE,
        ],
    ))?;
    if code != 0 {
        bail!(
            "the proxy did not take the new route {upstream}: {}",
            out.trim()
        );
    }
    Ok(())
}

/// Waits until the proxy has no request in flight to `upstream`, for at most
/// `drain_seconds`; returns how many were left.
async fn drain(docker: &Docker, proxy: &str, upstream: &str, drain_seconds: u64) -> Result<usize> {
    let ms = (drain_seconds * 1000).to_string();
    let (code, out) = ops::docker::exec(
        docker,
        proxy,
        &[
            proxy::BINARY,
            "__proxy-drain",
            upstream,
            "--timeout-ms",
            &ms,
        ],
    )
    .await?;
    let left = out
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<usize>().ok());
    match (code, left) {
        (0, Some(n)) => Ok(n),
        _ => bail!(
            "the proxy could not say whether {upstream} is drained: {}",
            out.trim()
        ),
    }
}

fn current_route(ctx: &Ctx, docker: &Docker, config: &Config) -> Result<Option<String>> {
    Ok(route_history(ctx, docker, config)?.into_iter().next())
}

/// The upstreams in the order they were live, the current one first (kept in the proxy
/// container, so any machine deploying to this engine sees the same).
fn route_history(ctx: &Ctx, docker: &Docker, config: &Config) -> Result<Vec<String>> {
    routes_in(ctx, docker, config, proxy::STATE_FILE)
}

fn routes_in(ctx: &Ctx, docker: &Docker, config: &Config, state_file: &str) -> Result<Vec<String>> {
    ctx.block_on(routes(docker, &proxy_name(config), state_file))
}

async fn routes(docker: &Docker, proxy: &str, state_file: &str) -> Result<Vec<String>> {
    if existing_state(docker, proxy).await? != Some(None) {
        return Ok(Vec::new());
    }
    let (code, out) = ops::docker::exec(
        docker,
        proxy,
        &[proxy::BINARY, "__proxy-routes", "--state", state_file],
    )
    .await?;
    // Each line: `<container>:<port> <address>`; the first word names the upstream.
    Ok(if code == 0 {
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    } else {
        Vec::new()
    })
}

/// The container name of an upstream (`<name>:<port>`).
fn upstream_container(upstream: &str) -> &str {
    upstream.rsplit_once(':').map_or(upstream, |(n, _)| n)
}

fn container_name(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

/// The stopped live versions, in the order they were last live (most recent first, by
/// the proxy's route history; versions it does not remember last, newest first).
fn previous_versions<'a>(all: &'a [LiveVersion], history: &[String]) -> Vec<&'a LiveVersion> {
    let mut stopped: Vec<&LiveVersion> = all.iter().filter(|v| !v.running).collect();
    let rank = |v: &LiveVersion| {
        history
            .iter()
            .position(|u| upstream_container(u) == v.name)
            .unwrap_or(usize::MAX)
    };
    stopped.sort_by_key(|v| (rank(v), std::cmp::Reverse(v.created)));
    stopped
}

fn live_versions(list: &[ContainerSummary]) -> Vec<LiveVersion> {
    list.iter()
        .map(|c| LiveVersion {
            id: c.id.clone().unwrap_or_default(),
            version: label(c, LABEL_VERSION).to_string(),
            name: container_name(c),
            running: is_running(c),
            created: c.created.unwrap_or(0),
        })
        .collect()
}

/// The live containers of this service, newest first.
fn live_containers(ctx: &Ctx, docker: &Docker, config: &Config) -> Result<Vec<ContainerSummary>> {
    ctx.block_on(live_of(docker, &config.name))
}

async fn live_of(docker: &Docker, service: &str) -> Result<Vec<ContainerSummary>> {
    let mut list = ops::docker::list(
        docker,
        &[
            format!("{LABEL_NAME}={service}"),
            format!("{LABEL_ENV}=live"),
        ],
    )
    .await?;
    list.sort_by_key(|c| std::cmp::Reverse(c.created.unwrap_or(0)));
    Ok(list)
}

fn is_running(c: &ContainerSummary) -> bool {
    c.state.as_ref().is_some_and(|s| s.to_string() == "running")
}

fn label<'a>(c: &'a ContainerSummary, key: &str) -> &'a str {
    c.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
        .unwrap_or("")
}

/// Switches live to the container `id` (healthy already), verifies, drains and stops the
/// others, and prunes old versions. On a failed verification, the old route is restored.
/// One thing stage does on the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StageAct {
    /// The pushed image, by the digest push reported (proves the push, and brings the
    /// image to a remote engine).
    Pull,
    /// The previous staging container: killed and renamed at once, removed beside the
    /// next steps.
    ReplacePrevious,
    Run,
    /// Until it answers `health_path`, then `version_path` must name the version.
    WaitHealthy,
}

impl StageAct {
    fn describe(self, c: &Config, tag: &str, version: &str) -> String {
        match self {
            StageAct::Pull => format!(
                "pull {tag}, by the digest push reports, from {}",
                ops::registry::registry_of(tag)
            ),
            StageAct::ReplacePrevious => format!(
                "stop the previous {}, if any (removed beside the next steps)",
                staging_name(c)
            ),
            StageAct::Run => format!(
                "start {} from {tag}, published on {}:{}, PYM_ENV=staging",
                staging_name(c),
                c.publish_ip,
                c.staging_port
            ),
            StageAct::WaitHealthy => format!(
                "wait up to {}s for {} to answer {}, and check {} is {version}",
                c.health_timeout,
                c.health_path,
                c.health_statuses.join(" or "),
                c.version_path
            ),
        }
    }
}

/// Stage's decision: the image pulled when it comes from a registry (without
/// `docker_repo`, the engine that built it runs it), then the replacement.
fn decide_stage(c: &Config) -> Vec<StageAct> {
    let pull = c.has_registry().then_some(StageAct::Pull);
    pull.into_iter()
        .chain([
            StageAct::ReplacePrevious,
            StageAct::Run,
            StageAct::WaitHealthy,
        ])
        .collect()
}

/// Carries out stage's plan, each action shown as it starts; returns how long the new
/// container took to be healthy. A container that does not come up is removed, its
/// logs shown.
fn act_stage(
    ctx: &Ctx,
    config: &Config,
    version: &str,
    plan: &[StageAct],
    progress: &StepProgress<'_>,
) -> Result<Duration> {
    let docker = ctx.docker()?;
    let reference = reference(ctx, docker)?;
    let tag = ctx.image_tag()?;
    let name = staging_name(config);
    let host = check_host(ctx, config)?;
    let mut id = None;
    let mut waited = Duration::ZERO;
    for a in plan {
        progress.line(&format!("- {}", a.describe(config, &tag, version)));
        match a {
            StageAct::Pull => {
                let creds =
                    ops::registry::credentials_for(&ops::registry::registry_of(&reference))?;
                if let Some(c) = &creds {
                    ctx.out.add_secret(&c.password);
                }
                progress.message(&format!("pulling {reference}"));
                ctx.wait(ops::docker::pull(
                    docker,
                    &reference,
                    creds.as_ref(),
                    progress,
                ))?;
            }
            StageAct::ReplacePrevious => {
                // Earlier runs killed before they removed theirs leave stopped ones: they
                // go too.
                let old = format!("{name}-replaced-{}", std::process::id());
                ctx.block_on(ops::docker::kill_and_rename(docker, &name, &old))?;
                let replaced: Vec<String> = ctx
                    .block_on(ops::docker::list(
                        docker,
                        &[
                            format!("{LABEL_NAME}={}", config.name),
                            format!("{LABEL_ENV}=staging"),
                        ],
                    ))?
                    .iter()
                    .filter(|c| container_name(c).starts_with(&format!("{name}-replaced-")))
                    .filter_map(|c| c.id.clone())
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
            StageAct::Run => {
                let spec = RunSpec {
                    name: &name,
                    image: &reference,
                    env: container_env(version, config, PymEnv::Staging)?,
                    container_port: config.port,
                    host_ip: &config.publish_ip,
                    host_port: Some(config.staging_port),
                    labels: labels(config, PymEnv::Staging, version),
                    network: None,
                    restart: true,
                    cmd: None,
                    locked_down: false,
                    state_dir: None,
                };
                id = Some(ctx.block_on(ops::docker::run(docker, spec))?);
            }
            StageAct::WaitHealthy => {
                let id = id
                    .as_deref()
                    .expect("a plan runs the container before it waits for it");
                progress.message(&format!(
                    "waiting for {host}:{}{} to answer",
                    config.staging_port, config.health_path
                ));
                let ready = ctx.wait(async {
                    let waited =
                        wait_healthy(docker, id, &host, config.staging_port, config).await?;
                    verify_version(
                        config,
                        &host,
                        config.staging_port,
                        version,
                        Duration::from_secs(5),
                    )
                    .await?;
                    Ok::<_, anyhow::Error>(waited)
                });
                match ready {
                    Ok(w) => waited = w,
                    Err(e) => {
                        let logs = ctx.block_on(ops::docker::logs_tail(docker, id, 40));
                        progress.suspend(|| {
                            ctx.out
                                .block(&format!("last 40 log lines of container {name}"), &logs)
                        });
                        ctx.block_on(ops::docker::remove(docker, id))?;
                        return Err(e.context(format!("staging {version} failed")));
                    }
                }
            }
        }
    }
    Ok(waited)
}

/// A live container of the service, as `observe` reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LiveVersion {
    id: String,
    version: String,
    /// Its container's name (`pym-<name>-live-<version>`).
    name: String,
    running: bool,
    created: i64,
}

/// What promote and rollback read before they decide: the live containers (newest
/// first), the proxy's routes (the current one first), and whether the live address
/// already serves the version to promote.
#[derive(Clone, Debug, Default)]
struct Seen {
    live: Vec<LiveVersion>,
    routes: Vec<String>,
    serves: bool,
}

fn observe(ctx: &Ctx, config: &Config, promoting: Option<&str>) -> Result<Seen> {
    let docker = ctx.docker()?;
    let live = live_versions(&live_containers(ctx, docker, config)?);
    let routes = route_history(ctx, docker, config)?;
    // Asked only when this version's container runs: otherwise it cannot be what live
    // serves, and asking would wait out the check's window on every promote.
    let serves = match promoting {
        Some(version)
            if live
                .iter()
                .any(|v: &LiveVersion| v.running && v.name == live_name(config, version)) =>
        {
            let host = check_host(ctx, config)?;
            ctx.block_on(verify_version(
                config,
                &host,
                config.live_port,
                version,
                Duration::from_secs(2),
            ))
            .is_ok()
        }
        _ => false,
    };
    Ok(Seen {
        live,
        routes,
        serves,
    })
}

/// One thing promote or rollback does to the engine, decided before any is done, so that
/// `--dry-run` prints the list a run executes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    /// Stop a running version no route leads to (a promote interrupted between its
    /// switch and its stop leaves one).
    StopStray {
        version: String,
    },
    /// Make sure the network and the live proxy exist, current and running.
    EnsureProxy,
    /// Remove a stopped container of the version to promote (a failed, interrupted or
    /// rolled-back promote's).
    RemoveLeftover {
        version: String,
    },
    /// Start the version in a new container beside live.
    Run {
        version: String,
    },
    /// Start a stopped version's container again.
    Start {
        version: String,
    },
    WaitHealthy {
        version: String,
    },
    /// Route the proxy to it and check the live address serves it; the previous route
    /// comes back if not.
    Switch {
        version: String,
    },
    /// After the switch, beside the next steps: drain these, stop them, keep
    /// `keep_previous` stopped versions and remove unused images.
    Retire {
        versions: Vec<String>,
    },
}

impl Action {
    fn describe(&self, c: &Config, host: &str) -> String {
        match self {
            Action::StopStray { version } => {
                format!("stop the stray {version}: it runs, and live routes elsewhere")
            }
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
            Action::Start { version } => format!("start {} again", live_name(c, version)),
            Action::WaitHealthy { version } => format!(
                "wait up to {}s for {version} to answer {}",
                c.health_timeout, c.health_path
            ),
            Action::Switch { version } => format!(
                "route the proxy to {version}; check {host}:{}{} is {version} (else route back)",
                c.live_port, c.version_path
            ),
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
        }
    }
}

/// Promote: nothing to do but stop strays when live serves the version already; refused
/// when live routes to a container of this version that does not serve (removing it would
/// cut live); else a new container beside live, health, the switch, and the old versions
/// retired.
fn decide_promote(seen: &Seen, c: &Config, version: &str) -> Result<Vec<Action>> {
    let name = live_name(c, version);
    let this = seen.live.iter().find(|v| v.name == name);
    let strays = |except: &str| {
        seen.live
            .iter()
            .filter(|v| v.running && v.version != except)
            .map(|v| Action::StopStray {
                version: v.version.clone(),
            })
            .collect::<Vec<_>>()
    };
    if seen.serves && this.is_some_and(|v| v.running) {
        return Ok(strays(version));
    }
    if seen
        .routes
        .first()
        .is_some_and(|r| upstream_container(r) == name)
    {
        return Err(hinted(
            format!(
                "{name} is what live routes to, but the live address does not answer its /version"
            ),
            "look at `cargo xtask status` and the container's logs; `cargo xtask rollback` goes back to the previous version",
        ));
    }
    let mut plan = vec![Action::EnsureProxy];
    if this.is_some() {
        plan.push(Action::RemoveLeftover {
            version: version.to_string(),
        });
    }
    plan.extend([
        Action::Run {
            version: version.to_string(),
        },
        Action::WaitHealthy {
            version: version.to_string(),
        },
        Action::Switch {
            version: version.to_string(),
        },
    ]);
    let old: Vec<String> = seen
        .live
        .iter()
        .filter(|v| v.running && v.name != name)
        .map(|v| v.version.clone())
        .collect();
    plan.push(Action::Retire { versions: old });
    Ok(plan)
}

/// Rollback: to the version live before the current one (the proxy's routes say which;
/// not merely the newest stopped one), started again, healthy, switched to; the current
/// one retired.
fn decide_rollback(seen: &Seen) -> Result<Vec<Action>> {
    let Some(target) = previous_versions(&seen.live, &seen.routes)
        .into_iter()
        .next()
    else {
        return Err(hinted(
            "there is no previous live version to roll back to",
            "rollback needs a version that was live before; `keep_previous` sets how many are kept",
        ));
    };
    let version = target.version.clone();
    let current: Vec<String> = seen
        .live
        .iter()
        .filter(|v| v.running)
        .map(|v| v.version.clone())
        .collect();
    Ok(vec![
        Action::EnsureProxy,
        Action::Start {
            version: version.clone(),
        },
        Action::WaitHealthy {
            version: version.clone(),
        },
        Action::Switch { version },
        Action::Retire { versions: current },
    ])
}

/// Carries out a decided plan, each action shown as it starts. A failure undoes what
/// the plan started: a new container is removed (its logs shown), a restarted one
/// stopped, and a proxy made for a first promote that failed goes too, so nothing claims
/// the live port unless a version serves behind it.
/// `had_route`: whether the proxy routed anywhere when the plan was decided (`Seen`).
fn act(
    ctx: &Ctx,
    config: &Config,
    plan: &[Action],
    had_route: bool,
    progress: &StepProgress<'_>,
) -> Result<()> {
    let docker = ctx.docker()?;
    let host = check_host(ctx, config)?;
    // The container the plan started, and whether it is new (removed on failure) or
    // restarted (stopped on failure); and the route before the switch.
    let mut started: Option<(String, String, bool)> = None;
    let mut old_route: Option<String> = None;
    for action in plan {
        progress.line(&format!("- {}", action.describe(config, &host)));
        let done = (|| -> Result<()> {
            match action {
                Action::StopStray { version } => {
                    ctx.block_on(ops::docker::stop(docker, &live_name(config, version), 10))
                }
                Action::EnsureProxy => ensure_proxy(ctx, docker, config, progress),
                Action::RemoveLeftover { version } => {
                    ctx.block_on(ops::docker::remove(docker, &live_name(config, version)))
                }
                Action::Run { version } => {
                    let name = live_name(config, version);
                    let (bind, _) = ctx.check_binding(&config.publish_ip)?;
                    let spec = RunSpec {
                        name: &name,
                        image: &reference(ctx, docker)?,
                        env: container_env(version, config, PymEnv::Live)?,
                        container_port: config.port,
                        host_ip: &bind,
                        host_port: None,
                        labels: labels(config, PymEnv::Live, version),
                        network: Some(&network(config)),
                        restart: true,
                        cmd: None,
                        locked_down: false,
                        state_dir: None,
                    };
                    let id = ctx.block_on(ops::docker::run(docker, spec))?;
                    started = Some((id, version.clone(), true));
                    Ok(())
                }
                Action::Start { version } => {
                    let name = live_name(config, version);
                    ctx.block_on(ops::docker::start(docker, &name))?;
                    started = Some((name, version.clone(), false));
                    Ok(())
                }
                Action::WaitHealthy { .. } => {
                    let (id, _, _) = started
                        .as_ref()
                        .expect("a plan starts a container before it waits for one");
                    let port =
                        ctx.block_on(ops::docker::published_port(docker, id, config.port))?;
                    ctx.wait(wait_healthy(
                        docker,
                        id,
                        &ctx.check_binding(&config.publish_ip)?.1,
                        port,
                        config,
                    ))
                    .map(drop)
                }
                Action::Switch { version } => {
                    let new_route = format!("{}:{}", live_name(config, version), config.port);
                    old_route = current_route(ctx, docker, config)?.filter(|r| *r != new_route);
                    route(ctx, docker, config, &new_route)?;
                    if let Err(e) = ctx.wait(verify_version(
                        config,
                        &host,
                        config.live_port,
                        version,
                        Duration::from_secs(10),
                    )) {
                        if let Some(prev) = &old_route {
                            route(ctx, docker, config, prev)?;
                        }
                        return Err(e.context("live does not serve the new version after the switch; the previous route is restored"));
                    }
                    Ok(())
                }
                Action::Retire { versions } => {
                    retire(ctx, docker, config, old_route.clone(), versions)?;
                    Ok(())
                }
            }
        })();
        let Err(e) = done else { continue };
        let Some((id, version, new)) = &started else {
            return Err(e);
        };
        let name = live_name(config, version);
        if *new {
            let logs = ctx.block_on(ops::docker::logs_tail(docker, id, 40));
            progress.suspend(|| {
                ctx.out
                    .block(&format!("last 40 log lines of container {name}"), &logs)
            });
            ctx.block_on(ops::docker::remove(docker, id))?;
        } else {
            ctx.block_on(ops::docker::stop(docker, id, 10))?;
        }
        if !had_route
            && current_route(ctx, docker, config)?.is_none_or(|r| upstream_container(&r) == name)
        {
            ctx.block_on(ops::docker::remove(docker, &proxy_name(config)))?;
            return Err(e.context(format!(
                "promoting {version} failed; nothing was live, and nothing is"
            )));
        }
        let what = if *new { "promoting" } else { "rolling back to" };
        return Err(e.context(format!("{what} {version} failed; live is unchanged")));
    }
    Ok(())
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
) -> Result<()> {
    let retire = Retire {
        docker: docker.clone(),
        proxy: proxy_name(config),
        service: config.name.clone(),
        repo: config.image_repo(),
        head: ctx.image_tag().ok(),
        old_route,
        old: versions
            .iter()
            .map(|v| (live_name(config, v), v.clone()))
            .collect(),
        drain_seconds: config.drain_seconds,
        keep_previous: config.keep_previous as usize,
    };
    let what = if versions.is_empty() {
        "pruning old versions".to_string()
    } else {
        format!("retiring {}", versions.join(", "))
    };
    ctx.defer(&what, retire.run());
    Ok(())
}

/// The work after a switch, done off the critical path (see `retire`).
struct Retire {
    docker: Docker,
    proxy: String,
    service: String,
    repo: String,
    head: Option<String>,
    old_route: Option<String>,
    old: Vec<(String, String)>,
    drain_seconds: u64,
    keep_previous: usize,
}

impl Retire {
    /// Returns what it did, as lines for the run's output; warnings start with "warning: ".
    async fn run(self) -> Result<Vec<String>> {
        let mut said = Vec::new();
        if let Some(prev) = &self.old_route {
            let started = std::time::Instant::now();
            match drain(&self.docker, &self.proxy, prev, self.drain_seconds).await? {
                0 => said.push(format!("drained {} in {:.2}s", upstream_container(prev), started.elapsed().as_secs_f64())),
                n => said.push(format!("warning: {n} request(s) still in flight to {} after drain_seconds ({}s); stopping it cut them", upstream_container(prev), self.drain_seconds)),
            }
        }
        for (id, version) in &self.old {
            ops::docker::stop(&self.docker, id, 10).await?;
            said.push(format!("stopped {version}"));
        }
        // Keep the `keep_previous` versions live most recently; remove the rest, and the
        // images nothing uses any more.
        let after = live_versions(&live_of(&self.docker, &self.service).await?);
        let history = routes(&self.docker, &self.proxy, proxy::STATE_FILE).await?;
        for v in previous_versions(&after, &history)
            .into_iter()
            .skip(self.keep_previous)
        {
            ops::docker::remove(&self.docker, &v.id).await?;
            said.push(format!("removed {} (beyond keep_previous)", v.version));
        }
        match unused_images(
            &self.docker,
            &self.service,
            &self.repo,
            self.head.as_deref(),
        )
        .await
        {
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
fn prune_images(ctx: &Ctx, docker: &Docker, config: &Config) -> Result<Vec<String>> {
    ctx.block_on(unused_images(
        docker,
        &config.name,
        &config.image_repo(),
        ctx.image_tag().ok().as_deref(),
    ))
}

async fn unused_images(
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

fn probe(ctx: &Ctx, host: &str, port: u16, path: &str) -> String {
    match ctx.block_on(ops::http::get(host, port, path, Duration::from_secs(2))) {
        Ok((status, _)) if (200..300).contains(&status) => "healthy".into(),
        Ok((status, _)) => format!("http-{status}"),
        Err(_) => "no-answer".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live version of service `s` as `observe` reads it.
    fn live(version: &str, running: bool, created: i64) -> LiveVersion {
        LiveVersion {
            id: format!("id-{version}"),
            version: version.into(),
            name: format!("pym-s-live-{version}"),
            running,
            created,
        }
    }

    fn routes(versions: &[&str]) -> Vec<String> {
        versions
            .iter()
            .map(|v| format!("pym-s-live-{v}:8080"))
            .collect()
    }

    fn seen(live: Vec<LiveVersion>, routes_: &[&str], serves: bool) -> Seen {
        Seen {
            live,
            routes: routes(routes_),
            serves,
        }
    }

    fn config() -> Config {
        let dir = std::env::temp_dir().join(format!("pym-docker-decide-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(crate::config::CONFIG_FILE),
            "name: s\ndeploy_target: docker\n",
        )
        .unwrap();
        Config::load(&dir, PymEnv::Live).unwrap()
    }

    fn order(all: &[LiveVersion], history: &[String]) -> Vec<String> {
        previous_versions(all, history)
            .into_iter()
            .map(|v| v.version.clone())
            .collect()
    }

    #[test]
    fn rollback_and_cleanup_go_by_the_routes_history() {
        // The first deploy: one running version, nothing to go back to.
        assert!(order(&[live("v0", true, 1)], &routes(&["v0"])).is_empty());
        // A second deploy: the first version, stopped, is where rollback goes.
        assert_eq!(
            order(
                &[live("c1", true, 2), live("v0", false, 1)],
                &routes(&["c1", "v0"])
            ),
            ["v0"]
        );
        // V0 → C1 → rollback (V0) → C2: the routes read C2, V0, C1. Rollback goes to V0,
        // live before C2, though C1 is newer.
        let all = [
            live("c2", true, 3),
            live("c1", false, 2),
            live("v0", false, 1),
        ];
        assert_eq!(order(&all, &routes(&["c2", "v0", "c1"])), ["v0", "c1"]);
        // Versions the routes do not remember (a proxy replaced by hand): last, newest
        // first; cleanup keeps the first `keep_previous` of this order.
        let all = [
            live("c3", true, 4),
            live("c2", false, 3),
            live("c1", false, 2),
            live("v0", false, 1),
        ];
        assert_eq!(order(&all, &routes(&["c3", "v0"])), ["v0", "c2", "c1"]);
    }

    #[test]
    fn promote_decides_from_what_the_engine_holds() {
        use Action::*;
        let c = config();
        let v = |s: &str| s.to_string();
        // The first deploy: nothing live; a proxy, the version, its health, the switch.
        let first = decide_promote(&Seen::default(), &c, "v1").unwrap();
        assert_eq!(
            first,
            [
                EnsureProxy,
                Run { version: v("v1") },
                WaitHealthy { version: v("v1") },
                Switch { version: v("v1") },
                Retire { versions: vec![] }
            ]
        );
        // A second deploy: the one live is retired after the switch.
        let second =
            decide_promote(&seen(vec![live("v1", true, 1)], &["v1"], false), &c, "v2").unwrap();
        assert_eq!(
            second.last(),
            Some(&Retire {
                versions: vec![v("v1")]
            })
        );
        // A leftover of this version (a failed promote's) is removed before it starts.
        let again = decide_promote(
            &seen(
                vec![live("v2", false, 2), live("v1", true, 1)],
                &["v1"],
                false,
            ),
            &c,
            "v2",
        )
        .unwrap();
        assert_eq!(
            again[..3],
            [
                EnsureProxy,
                RemoveLeftover { version: v("v2") },
                Run { version: v("v2") }
            ]
        );
        // Already live: only strays are stopped, nothing is switched.
        let live_now = decide_promote(
            &seen(
                vec![live("v2", true, 2), live("v1", true, 1)],
                &["v2", "v1"],
                true,
            ),
            &c,
            "v2",
        )
        .unwrap();
        assert_eq!(live_now, [StopStray { version: v("v1") }]);
        // Live routes to this version's container, and it does not serve: refused, since
        // replacing it would cut live.
        let broken =
            decide_promote(&seen(vec![live("v2", true, 2)], &["v2"], false), &c, "v2").unwrap_err();
        assert!(
            format!("{broken}").contains("is what live routes to"),
            "{broken}"
        );
    }

    #[test]
    fn stage_pulls_only_from_a_registry() {
        use StageAct::*;
        let mut c = config();
        assert_eq!(
            decide_stage(&c),
            [ReplacePrevious, Run, WaitHealthy],
            "without docker_repo the engine that built the image runs it"
        );
        c.docker_repo = Some("registry.example.com/team".into());
        assert_eq!(decide_stage(&c), [Pull, ReplacePrevious, Run, WaitHealthy]);
    }

    #[test]
    fn rollback_decides_from_the_routes() {
        use Action::*;
        let v = |s: &str| s.to_string();
        // Without a previous version: refused.
        assert!(decide_rollback(&seen(vec![live("v1", true, 1)], &["v1"], false)).is_err());
        // V0 → C1 → rollback → C2, then rollback: back to V0, C2 retired.
        let plan = decide_rollback(&seen(
            vec![
                live("c2", true, 3),
                live("c1", false, 2),
                live("v0", false, 1),
            ],
            &["c2", "v0", "c1"],
            false,
        ))
        .unwrap();
        assert_eq!(
            plan,
            [
                EnsureProxy,
                Start { version: v("v0") },
                WaitHealthy { version: v("v0") },
                Switch { version: v("v0") },
                Retire {
                    versions: vec![v("c2")]
                }
            ]
        );
    }
}

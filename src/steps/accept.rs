//! `accept-local`: the image, started in the local engine, must become healthy and pass
//! the acceptance tests of `testaccept/`.
//!
//! The container gets `PYM_ENV=local`, `PORT`, and the `env_secrets` from the caller's
//! environment, and is published on a free loopback port. Health is polled every 25 ms;
//! if the container exits first, that is reported at once with its exit code instead of
//! waiting for the timeout. On any failure the container's last log lines are shown. The
//! container is removed in every case: success, failure, and Ctrl-C.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bollard::Docker;

use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::error::{Interrupted, hinted};
use crate::ops::service::{container_env, owned_labels, secrets, wait_healthy};
use crate::ops::{self, docker::RunSpec};
use crate::output::StepProgress;
use crate::pipeline::Step;
use crate::targets::Address;
use crate::version::Served;

const LOG_LINES: usize = 40;

pub struct AcceptLocal;

impl Step for AcceptLocal {
    fn name(&self) -> &str {
        "accept-local"
    }

    fn about(&self) -> &str {
        "Run the image locally, wait until healthy, run the acceptance tests against it"
    }

    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        let config = ctx.config_for(PymEnv::Local)?;
        let bind = ctx
            .check_binding(&config.publish_ip)
            .map_or_else(|_| config.publish_ip.clone(), |(bind, _)| bind);
        Ok(vec![
            format!(
                "run {} as a local container with PYM_ENV=local on a free port of {bind}",
                ctx.image_tag()?
            ),
            format!(
                "wait up to {}s for {} to answer {}, then check {} names the version",
                config.health_timeout,
                config.health_path,
                config.health_statuses.join(" or "),
                config.version_path
            ),
            match acceptance_command(ctx, &config) {
                Some(cmd) => format!("run `{cmd}` against it"),
                None => "no acceptance tests (`accept_command` is empty)".into(),
            },
            "remove the container".to_string(),
        ])
    }

    fn check(&self, ctx: &Ctx) -> Result<()> {
        ctx.check_binding(&ctx.config().publish_ip)?;
        secrets(ctx.config())?;
        check_acceptance_command(ctx, &ctx.config_for(PymEnv::Local)?)?;
        ctx.docker().map(drop)
    }

    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let config = ctx.config_for(PymEnv::Local)?;
        // Checked before anything starts, so a missing secret leaves nothing behind.
        let env = container_env(&ctx.version()?.to_string(), &config, PymEnv::Local)?;
        let image = ctx.local_image()?;
        let docker = ctx.docker()?;
        let name = format!("pym-{}-local-{}", config.name, std::process::id());
        let labels = owned_labels(&config, "local");
        let (bind, host) = ctx.check_binding(&config.publish_ip)?;
        progress.message(&format!("starting {image}"));
        let spec = RunSpec {
            name: &name,
            image: &image,
            env,
            container_port: config.port.get(),
            host_ip: &bind,
            host_port: None,
            labels,
            network: None,
            restart: false,
            cmd: None,
            locked_down: false,
            state_dir: None,
            more_ports: Vec::new(),
            state_volume: None,
        };
        let id = ctx.block_on(ops::docker::run(docker, spec))?;
        let result = accept_in(ctx, docker, &id, &config, &host, progress);
        if result.is_err() && !ctx.interrupted() {
            let logs = ctx.block_on(ops::docker::logs_tail(docker, &id, LOG_LINES));
            progress.suspend(|| {
                ctx.out.block(
                    &format!("last {LOG_LINES} log lines of container {name}"),
                    &logs,
                )
            });
        }
        if result.is_ok() {
            // Removing a container is slow on some storage drivers (vfs copies and deletes
            // whole file trees): after a pass it happens beside the next steps, and the
            // run ends once it is done.
            let (docker, what) = (docker.clone(), format!("removing {name}"));
            ctx.defer(&what.clone(), async move {
                ops::docker::remove(&docker, &id)
                    .await
                    .with_context(|| what)
                    .map(|()| Vec::new())
            });
            return result;
        }
        ctx.block_on(ops::docker::remove(docker, &id))
            .with_context(|| format!("cannot remove container {name}"))?;
        result
    }
}

fn accept_in(
    ctx: &Ctx,
    docker: &Docker,
    id: &str,
    config: &Config,
    host: &str,
    progress: &StepProgress<'_>,
) -> Result<String> {
    let port = match ctx.block_on(ops::docker::published_port(docker, id, config.port.get())) {
        Ok(port) => port,
        // A container that exits at once has no ports left to inspect: say it crashed.
        Err(e) => match ctx.block_on(ops::docker::exit_code(docker, id))? {
            Some(0) => {
                return Err(hinted(
                    format!(
                        "the container exited (status 0) at once, before answering {}",
                        config.health_path
                    ),
                    "a service must keep running: check its command (the Dockerfile's CMD or ENTRYPOINT) starts the server in the foreground",
                ));
            }
            Some(code) => {
                return Err(anyhow!(
                    "the container crashed during start-up: it exited with status {code} before answering {}",
                    config.health_path
                ));
            }
            None => return Err(e),
        },
    };
    progress.message(&format!(
        "waiting for {host}:{port}{} to answer {}",
        config.health_path,
        config.health_statuses.join(" or ")
    ));
    let waited = ctx.block_on(async {
        tokio::select! {
            r = wait_healthy(docker, id, host, port, config) => r,
            _ = ctx.on_interrupt() => Err(anyhow::Error::new(Interrupted)),
        }
    })?;
    progress.message(&format!(
        "healthy after {:.1}s; checking {}",
        waited.as_secs_f64(),
        config.version_path
    ));
    check_contract(ctx, config, host, port)?;
    run_acceptance(
        ctx,
        config,
        &Address {
            host: host.to_string(),
            port,
            tls: false,
            token: None,
            hold: None,
        },
        PymEnv::Local,
        progress,
    )?;
    if ctx.interrupted() {
        return Err(anyhow::Error::new(Interrupted));
    }
    let passed = match acceptance_command(ctx, config) {
        Some(_) => progress.tests().passed_note("acceptance tests"),
        None => "no acceptance tests (`accept_command` is empty)".into(),
    };
    Ok(format!("healthy in {:.1}s, {passed}", waited.as_secs_f64()))
}

/// The service contract's last part, checked on the local container so a service that
/// misses it fails before push, not at promote: `version_path` answers JSON naming the
/// version the image was built as and the `PYM_ENV` it runs in.
fn check_contract(ctx: &Ctx, config: &Config, host: &str, port: u16) -> Result<()> {
    if !config.verify_version {
        return Ok(());
    }
    let path = &config.version_path;
    let version = ctx.version()?.to_string();
    let shape = format!("JSON {{\"version\": $PYM_VERSION, \"pym_env\": $PYM_ENV}} at {path}");
    let answer = ctx.block_on(ops::http::get(host, port, path, Duration::from_secs(5)));
    let body = match answer {
        Ok((status, body)) if (200..300).contains(&status) => body,
        Ok((status, _)) => {
            return Err(hinted(
                format!(
                    "the service answers {path} with {status}: pymdeploy checks there that each environment serves the version just deployed"
                ),
                format!(
                    "serve {shape}; or set `version_path` to where the service says its version, or `verify_version: false` to rely on health alone"
                ),
            ));
        }
        Err(e) => return Err(e.context(format!("cannot ask the service for {path}"))),
    };
    let Some(Served {
        version: served,
        pym_env: env,
    }) = Served::parse(&body)
    else {
        let shown: String = body.chars().take(120).collect();
        return Err(hinted(
            format!("{path} answered `{shown}`, not JSON with the strings `version` and `pym_env`"),
            format!(
                "serve {shape}; or `verify_version: false` in pym-config.yaml to rely on health alone"
            ),
        ));
    };
    if served != version {
        return Err(hinted(
            format!("{path} says version `{served}`, and the image was built as {version}"),
            "take the version from the PYM_VERSION environment variable (pymdeploy sets it in the container, and passes it to the Dockerfile as a build argument)",
        ));
    }
    if env != PymEnv::Local.as_str() {
        return Err(hinted(
            format!("{path} says pym_env `{env}` in the local environment"),
            "take pym_env from the PYM_ENV environment variable (local, staging or live), which pymdeploy sets in every environment",
        ));
    }
    Ok(())
}

/// Runs the acceptance command against a server.
pub fn run_acceptance(
    ctx: &Ctx,
    config: &Config,
    at: &Address,
    env: PymEnv,
    progress: &StepProgress<'_>,
) -> Result<()> {
    let Some(command) = acceptance_command(ctx, config) else {
        progress.message("no acceptance tests (`accept_command` is empty)");
        return Ok(());
    };
    progress.message("running acceptance tests");
    let sh = xshell::Shell::new()?;
    let scheme = if at.tls { "https" } else { "http" };
    let cmd = ops::cmd::from_config(&sh, &command)?
        .env("PYM_SERVER_HOST", &at.host)
        .env("PYM_SERVER_PORT", at.port.to_string())
        .env(
            "PYM_SERVER_URL",
            format!("{scheme}://{}:{}", at.host, at.port),
        )
        .env("PYM_SERVER_TOKEN", at.token.as_deref().unwrap_or_default())
        .env("PYM_ENV", env.as_str());
    let limit = (
        "accept_timeout",
        Duration::from_secs(config.accept_timeout.get()),
    );
    ops::cmd::stream_within(cmd, &ctx.root, progress, false, Some(limit))
        .context("the acceptance tests failed")?;
    Ok(())
}

/// `accept_command`, or the default: the `testaccept` crate where there is one, pytest
/// over `testaccept/` otherwise.
pub fn acceptance_command(ctx: &Ctx, config: &Config) -> Option<String> {
    match &config.accept_command {
        Some(c) if c.trim().is_empty() => None,
        Some(c) => Some(c.clone()),
        None if ctx.root.join("testaccept/Cargo.toml").is_file() => {
            Some("cargo test --manifest-path testaccept/Cargo.toml".into())
        }
        None => Some(DEFAULT_PYTHON_ACCEPT.into()),
    }
}

const DEFAULT_PYTHON_ACCEPT: &str = "python3 -m pytest -q testaccept";

/// Before the first step: the acceptance command can start (its program there, the
/// default's `testaccept/` too).
pub fn check_acceptance_command(ctx: &Ctx, config: &Config) -> Result<()> {
    let Some(command) = acceptance_command(ctx, config) else {
        return Ok(());
    };
    let fix = "write acceptance tests in testaccept/ (they get PYM_SERVER_HOST, PYM_SERVER_PORT and PYM_ENV), set `accept_command` to how the service runs its own, or `accept_command: \"\"` for none (health and the version check alone)";
    let default_dir = (command == DEFAULT_PYTHON_ACCEPT).then_some("testaccept");
    crate::steps::test::check_command(ctx, config, "accept_command", &command, default_dir, fix)
}

//! The service as the pipeline runs it, shared by the steps and the targets: the
//! environment its containers get, the labels they carry, and the wait until it is
//! healthy.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use bollard::Docker;

use crate::config::{Config, PymEnv};
use crate::error::hinted;
use crate::ops;

/// `<name>/<full sha>`: which service and commit an image was built from.
pub const LABEL_COMMIT: &str = "org.pymacaron.commit";
/// On containers: which service they run.
pub const LABEL_NAME: &str = "org.pymacaron.name";
/// On what a target makes: which service identity (`service_id`) made it.
pub const LABEL_SERVICE_ID: &str = "org.pymacaron.service-id";
/// On containers: which environment (local, staging, live, proxy).
pub const LABEL_ENV: &str = "org.pymacaron.env";
const POLL: Duration = Duration::from_millis(25);

/// The environment a container of this service gets: `PYM_ENV`, `PORT`, and each
/// `env_secrets` variable from the caller's environment. A secret that is not set is an
/// error before anything starts; every secret value is registered with the printer so
/// it is masked wherever it would be shown.
pub fn container_env(version: &str, config: &Config, env: PymEnv) -> Result<Vec<String>> {
    let mut out = vec![
        format!("PYM_ENV={env}"),
        format!("PORT={}", config.port),
        format!("PYM_VERSION={version}"),
    ];
    out.extend(
        secrets(config)?
            .into_iter()
            .map(|(name, value)| format!("{name}={value}")),
    );
    Ok(out)
}

/// The `env_secrets` values from the caller's environment (masked in output since
/// `Ctx::register_secrets`, before the first step); an error naming every one not set.
pub fn secrets(config: &Config) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for name in &config.env_secrets {
        match std::env::var(name) {
            // Masked already: `Ctx::register_secrets` ran before the first step.
            Ok(value) => out.push((name.clone(), value)),
            Err(_) => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        return Err(hinted(
            format!(
                "env_secrets not set in the environment: {}",
                missing.join(", ")
            ),
            format!(
                "export {} before deploying, or remove them from `env_secrets` in pym-config.yaml",
                missing.join(", ")
            ),
        ));
    }
    Ok(out)
}

/// Polls `health_path` until it answers healthy, while watching the container: if it
/// exits first, the error says so with its exit code. Returns how long it took.
pub async fn wait_healthy(
    docker: &Docker,
    id: &str,
    host: &str,
    port: u16,
    config: &Config,
) -> Result<Duration> {
    let timeout = Duration::from_secs(config.health_timeout);
    poll_health(
        host,
        port,
        &config.health_path,
        |s| config.is_healthy_status(s),
        timeout,
        ops::docker::wait_exit(docker, id),
    )
    .await
}

/// Polls `path` every 25 ms until it answers a status `healthy` accepts, giving up after
/// `timeout` or as soon as `exited` resolves (the process behind the port stopped).
pub async fn poll_health(
    host: &str,
    port: u16,
    path: &str,
    healthy: impl Fn(u16) -> bool,
    timeout: Duration,
    exited: impl Future<Output = Result<i64>>,
) -> Result<Duration> {
    let started = Instant::now();
    tokio::pin!(exited);
    let crashed = |code: Result<i64>| -> anyhow::Error {
        match code {
            Ok(0) => hinted(
                format!("the container exited (status 0) during start-up, before answering {path}"),
                "a service must keep running: check its command (the Dockerfile's CMD or ENTRYPOINT) starts the server in the foreground",
            ),
            Ok(code) => anyhow!(
                "the container crashed during start-up: it exited with status {code} before answering {path}"
            ),
            Err(e) => e,
        }
    };
    loop {
        let probe = ops::http::get(host, port, path, Duration::from_secs(2));
        let last = tokio::select! {
            code = &mut exited => return Err(crashed(code)),
            answer = probe => match answer {
                Ok((status, _)) if healthy(status) => return Ok(started.elapsed()),
                Ok((status, body)) => format!("{path} answered {status}: {}", body.chars().take(200).collect::<String>()),
                Err(e) => format!("{e:#}"),
            }
        };
        if started.elapsed() >= timeout {
            return Err(hinted(
                format!(
                    "the service did not become healthy within {}s (last: {last})",
                    timeout.as_secs()
                ),
                format!(
                    "check that the service listens on $PORT and answers {path} with a 2xx (or set `health_path` and `health_statuses`); raise `health_timeout` in pym-config.yaml if it is only slow"
                ),
            ));
        }
        tokio::select! {
            code = &mut exited => return Err(crashed(code)),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

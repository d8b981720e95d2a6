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

/// The labels that say an object on the engine is this service's, in role `role` (an
/// environment, `proxy`, the record): its name, and its identity (`service_id`) when it
/// has one. Whoever cleans up, a test included, finds what a service made by that
/// identity, never by a name another repository may share.
pub fn owned_labels(c: &Config, role: &str) -> std::collections::HashMap<String, String> {
    let mut labels = std::collections::HashMap::from([
        (LABEL_NAME.to_string(), c.name.clone()),
        (LABEL_ENV.to_string(), role.to_string()),
    ]);
    if let Some(id) = &c.service_id {
        labels.insert(LABEL_SERVICE_ID.to_string(), id.clone());
    }
    labels
}

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
    let timeout = Duration::from_secs(config.health_timeout.get());
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

/// How many definite refusals in a row (an answer below 500 that `healthy` does not
/// accept, like a 404) end the wait at once: the service runs, and answers that path
/// otherwise than the config expects, which waiting will not change.
const DEFINITE: u32 = 3;

/// Polls `path` every 25 ms until it answers a status `healthy` accepts, giving up after
/// `timeout`, as soon as `exited` resolves (the process behind the port stopped), or
/// after `DEFINITE` definite refusals in a row. A 5xx or no answer is a service still
/// starting: only those are waited out.
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
    let mut refused = 0;
    loop {
        let probe = ops::http::get(host, port, path, Duration::from_secs(2));
        let answer = tokio::select! {
            code = &mut exited => return Err(crashed(code)),
            answer = probe => answer,
        };
        let last = match answer {
            Ok((status, _)) if healthy(status) => return Ok(started.elapsed()),
            Ok((status, body)) => {
                let body: String = body.chars().take(200).collect();
                refused = if status < 500 { refused + 1 } else { 0 };
                if refused >= DEFINITE {
                    return Err(hinted(
                        format!(
                            "{path} answered {status} {DEFINITE} times in a row after {:.1}s: the service runs but does not answer it as healthy ({body})",
                            started.elapsed().as_secs_f64()
                        ),
                        format!(
                            "set `health_path` in pym-config.yaml to the path that answers when the service is ready (`/health`, `/healthz`, ...), or `health_statuses` to what {path} answers then"
                        ),
                    ));
                }
                format!("{path} answered {status}: {body}")
            }
            Err(e) => {
                refused = 0;
                format!("{e:#}")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on loopback answering every request with `status`, counting them.
    fn answering(status: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU32>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = "no such route";
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (port, count)
    }

    fn poll(port: u16, timeout: Duration) -> (Result<Duration>, Duration) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = Instant::now();
        let r = rt.block_on(poll_health(
            "127.0.0.1",
            port,
            "/ping",
            |s| (200..300).contains(&s),
            timeout,
            std::future::pending(),
        ));
        (r, started.elapsed())
    }

    #[test]
    fn a_definite_refusal_fails_at_once_with_the_answer() {
        let (port, count) = answering(404);
        let (r, took) = poll(port, Duration::from_secs(30));
        let e = r.unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("/ping answered 404 3 times in a row") && msg.contains("(no such route)"),
            "{msg}"
        );
        assert!(crate::error::hint_of(&e).unwrap().contains("`health_path`"));
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), DEFINITE);
    }

    #[test]
    fn a_service_still_starting_is_waited_for() {
        let (port, count) = answering(503);
        let (r, took) = poll(port, Duration::from_millis(600));
        let msg = format!("{:#}", r.unwrap_err());
        assert!(
            msg.contains("did not become healthy within 0s") && msg.contains("/ping answered 503"),
            "{msg}"
        );
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(count.load(std::sync::atomic::Ordering::SeqCst) > DEFINITE);
    }
}

//! The parts of an environment that are real: containers on the local Docker engine (driven
//! through the `docker` CLI), their health checks, and the load balancer that routes a
//! CNAME to the container behind it.

use std::sync::Arc;
use std::time::Duration;

use pym_fake_common::docker::{docker, remove_labelled};
use pym_fake_common::net::{Head, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::Shared;

pub use pym_fake_common::docker::remove;

pub const LABEL: &str = "org.pymacaron.fake-aws";

/// Pulls `image` with the registry credentials of a Docker `config.json` (or the old
/// `.dockercfg` format, a map of registries), as an instance does before it runs the image.
pub async fn pull(image: &str, auth: Option<&[u8]>, tag: u64) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("pym-fake-aws-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = match auth {
        Some(raw) => {
            let v: serde_json::Value = serde_json::from_slice(raw)
                .map_err(|e| format!("the authentication file is not JSON: {e}"))?;
            if v.get("auths").is_some() {
                v
            } else {
                serde_json::json!({ "auths": v })
            }
        }
        None => serde_json::json!({}),
    };
    std::fs::write(dir.join("config.json"), config.to_string()).map_err(|e| e.to_string())?;
    let result = pym_fake_common::docker::pull(Some(&dir), image).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs `image` detached, its `container_port` published on a free loopback port; returns
/// that port.
pub async fn run(
    shared: &Shared,
    app: &str,
    name: &str,
    image: &str,
    env: &[(String, String)],
    container_port: u16,
) -> Result<u16, String> {
    let _ = docker(&["rm", "-f", name]).await;
    let label = format!("{LABEL}={}", shared.instance);
    let app_label = format!("{LABEL}.app={app}");
    let publish = format!("127.0.0.1::{container_port}");
    let mut args = vec![
        "run", "-d", "--name", name, "--label", &label, "--label", &app_label, "-p", &publish,
    ];
    let pairs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for p in &pairs {
        args.extend(["-e", p.as_str()]);
    }
    args.push(image);
    docker(&args).await?;
    let port = docker(&["port", name, &format!("{container_port}/tcp")]).await?;
    port.lines()
        .find_map(|l| l.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .ok_or_else(|| format!("the container publishes no port for {container_port}: {port:?}"))
}

/// Whether the container runs, and its exit code if it stopped.
pub async fn exited(name: &str) -> Option<i64> {
    let s = docker(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.State.ExitCode}}",
        name,
    ])
    .await
    .ok()?;
    let (running, code) = s.split_once(' ')?;
    if running == "true" {
        None
    } else {
        code.parse().ok()
    }
}

pub async fn logs_tail(name: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", "--tail", "5", name])
        .output()
        .await;
    out.map(|o| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
        .trim()
        .replace('\n', " | ")
    })
    .unwrap_or_default()
}

/// A container's log (stdout and stderr, in order of writing as far as the engine keeps
/// it): its last `lines`, or all of it.
pub async fn logs(name: &str, lines: Option<u32>) -> String {
    let tail = lines.map_or("all".to_string(), |n| n.to_string());
    let out = Command::new("docker")
        .args(["logs", "--tail", &tail, name])
        .output()
        .await;
    out.map(|o| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
    .unwrap_or_default()
}

/// Restarts a container (its process); returns the loopback port it publishes now (the
/// engine may pick another one).
pub async fn restart(name: &str) -> Result<u16, String> {
    docker(&["restart", "--time", "5", name]).await?;
    let port = docker(&["port", name]).await?;
    port.lines()
        .find_map(|l| l.rsplit_once(':').and_then(|(_, p)| p.trim().parse().ok()))
        .ok_or_else(|| format!("the restarted container publishes no port: {port:?}"))
}

/// Removes every container a server started (when it stops).
pub fn remove_all(instance: &str) {
    remove_labelled(&format!("{LABEL}={instance}"));
}

/// Removes the containers of one application's environments.
pub fn remove_app(app: &str) {
    remove_labelled(&format!("{LABEL}.app={app}"));
}

/// Whether a loopback port accepts a TCP connection within two seconds (a load
/// balancer's TCP health check).
pub async fn accepts(port: u16) -> bool {
    tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .is_ok_and(|c| c.is_ok())
}

/// The status of `GET path` on a loopback port, if anything answers within two seconds.
pub async fn health(port: u16, path: &str) -> Option<u16> {
    let probe = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: ELB-HealthChecker/2.0\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        String::from_utf8_lossy(&buf)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
}

/// The load balancer: reads a request's head, routes by its `Host` to the container of the
/// environment that holds that CNAME now, then relays bytes both ways.
pub async fn serve_lb(listener: TcpListener, shared: Arc<Shared>) {
    pym_fake_common::net::serve_front(listener, move |head: &Head| {
        let name = head.host();
        let backend = shared.lock().eb.backend_for(&name);
        match backend {
            Some(port) => Route::Backend { port, unreachable: "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into() },
            None => {
                let body = format!("no environment answers for {name:?}\n");
                Route::Answer(format!("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()))
            }
        }
    })
    .await
}

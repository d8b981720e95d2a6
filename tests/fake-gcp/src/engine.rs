//! The parts of a revision that are real: its container on the local Docker engine (driven
//! through the `docker` CLI), the startup probe, and the front door that routes a service
//! URL to the container of a revision that its traffic picks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pym_fake_common::docker::docker;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::Shared;
use crate::run::FrontRoute;

pub use pym_fake_common::docker::remove;

pub const LABEL: &str = "org.pymacaron.fake-gcp";

/// What a revision runs: its ingress container.
pub struct RunSpec {
    pub container: String,
    pub service: String,
    pub revision: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// The template's env (never printed: values may be secrets).
    pub env: Vec<(String, String)>,
    pub port: u16,
    pub probe: Probe,
}

pub enum Probe {
    Tcp(u16),
    Http(String, u16),
}

/// Why a revision failed: the condition's reason (`field` is `reason` or
/// `revisionReason`, the oneof of Condition) and Cloud Run's message.
pub struct Failure {
    pub field: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl RunSpec {
    /// The spec of a revision (its stored JSON).
    pub fn of(shared: &Shared, rev: &Value) -> RunSpec {
        let name = rev["name"].as_str().unwrap_or("");
        let parts: Vec<&str> = name.split('/').collect();
        let service = parts.get(5).copied().unwrap_or("").to_string();
        let revision = parts.get(7).copied().unwrap_or("").to_string();
        let containers = rev["containers"].as_array().cloned().unwrap_or_default();
        let c = containers
            .iter()
            .find(|c| c["ports"].as_array().is_some_and(|p| !p.is_empty()))
            .or(containers.first())
            .cloned()
            .unwrap_or_default();
        let port = c["ports"][0]["containerPort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(8080);
        let strings = |v: &Value| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut env: Vec<(String, String)> = c["env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| {
                        Some((
                            e["name"].as_str()?.to_string(),
                            e["value"].as_str().unwrap_or("").to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        env.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "PORT" | "K_SERVICE" | "K_REVISION" | "K_CONFIGURATION"
            )
        });
        env.push(("PORT".into(), port.to_string()));
        env.push(("K_SERVICE".into(), service.clone()));
        env.push(("K_REVISION".into(), revision.clone()));
        env.push(("K_CONFIGURATION".into(), service.clone()));
        let sp = &c["startupProbe"];
        let probe_port = |a: &Value| {
            a["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .unwrap_or(port)
        };
        let probe = if sp["httpGet"].is_object() {
            Probe::Http(
                sp["httpGet"]["path"]
                    .as_str()
                    .filter(|p| !p.is_empty())
                    .unwrap_or("/")
                    .to_string(),
                probe_port(&sp["httpGet"]),
            )
        } else if sp["tcpSocket"].is_object() {
            Probe::Tcp(probe_port(&sp["tcpSocket"]))
        } else {
            Probe::Tcp(port)
        };
        let tag = crate::json::base36(crate::json::fnv(&format!("{}/{name}", shared.instance)), 6);
        RunSpec {
            container: format!("fakegcp-{tag}-{revision}"),
            service,
            revision,
            image: c["image"].as_str().unwrap_or("").to_string(),
            command: strings(&c["command"]),
            args: strings(&c["args"]),
            env,
            port,
            probe,
        }
    }
}

/// Pulls (when not local), runs and probes a revision's container; returns the container
/// and the loopback port it publishes. A failed container is removed.
pub async fn deploy(shared: &Shared, spec: &RunSpec) -> Result<(String, u16), Failure> {
    let agent = format!(
        "service-{}@serverless-robot-prod.iam.gserviceaccount.com",
        shared.opts.project_number
    );
    if docker(&["image", "inspect", "--format", "{{.Id}}", &spec.image])
        .await
        .is_err()
        && let Err(e) =
            pym_fake_common::docker::pull(shared.opts.docker_config.as_deref(), &spec.image).await
    {
        let lower = e.to_ascii_lowercase();
        let denied = [
            "unauthorized",
            "denied",
            "authentication required",
            "forbidden",
            "no basic auth",
        ]
        .iter()
        .any(|w| lower.contains(w));
        return Err(if denied {
            Failure {
                field: "reason",
                reason: "CONTAINER_IMAGE_UNAUTHORIZED",
                message: format!(
                    "Google Cloud Run Service Agent {agent} must have permission to read the image, {}. Ensure that the provided container image URL is correct and that the above account has permission to access the image. If you just enabled the Cloud Run API, the permissions might take a few minutes to propagate. Note that the image is from project [{}]. If it is not the same as the project in which Cloud Run is deployed, the Cloud Run Service Agent in the project where Cloud Run is deployed must have permission to access the image.",
                    spec.image, shared.opts.project_number
                ),
            }
        } else {
            Failure {
                field: "reason",
                reason: "CONTAINER_MISSING",
                message: format!("Image '{}' not found.", spec.image),
            }
        });
    }
    let _ = docker(&["rm", "-f", &spec.container]).await;
    let label = format!("{LABEL}={}", shared.instance);
    let svc_label = format!("{LABEL}.service={}", spec.service);
    let rev_label = format!("{LABEL}.revision={}", spec.revision);
    let publish = format!("127.0.0.1::{}", spec.port);
    let pairs: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec![
        "run",
        "-d",
        "--name",
        &spec.container,
        "--label",
        &label,
        "--label",
        &svc_label,
        "--label",
        &rev_label,
        "-p",
        &publish,
    ];
    for p in &pairs {
        args.extend(["-e", p.as_str()]);
    }
    if let Some(entry) = spec.command.first() {
        args.extend(["--entrypoint", entry.as_str()]);
    }
    args.push(&spec.image);
    args.extend(spec.command.iter().skip(1).map(String::as_str));
    args.extend(spec.args.iter().map(String::as_str));
    let fail = |message: String| Failure {
        field: "revisionReason",
        reason: "HEALTH_CHECK_CONTAINER_ERROR",
        message,
    };
    if let Err(e) = shared
        .launching
        .run(Command::new("docker").args(&args))
        .await
    {
        remove(&spec.container).await;
        return Err(fail(format!(
            "The user-provided container failed to start: {e}. Logs for this revision might contain more information."
        )));
    }
    let published = match docker(&["port", &spec.container, &format!("{}/tcp", spec.port)]).await {
        Ok(p) => p.lines().find_map(|l| {
            l.rsplit_once(':')
                .and_then(|(_, p)| p.trim().parse::<u16>().ok())
        }),
        Err(_) => None,
    };
    let Some(port) = published else {
        // The engine unpublishes the port of a container that stopped already.
        let code = exited(&spec.container).await;
        remove(&spec.container).await;
        return Err(fail(match code {
            Some(code) => exit_message(code, spec.port),
            None => format!(
                "The user-provided container publishes no port {}.",
                spec.port
            ),
        }));
    };
    // A probe on another port than the ingress one goes to the container's own address.
    let probe_port = match &spec.probe {
        Probe::Tcp(p) | Probe::Http(_, p) => (*p == spec.port).then_some(port),
    };
    let deadline = Instant::now() + shared.opts.startup_timeout;
    let mut last_inspect = Instant::now();
    loop {
        if let Some(p) = probe_port
            && probe(&spec.probe, p).await
        {
            return Ok((spec.container.clone(), port));
        }
        if probe_port.is_none() && probe_other(&spec.container, &spec.probe).await {
            return Ok((spec.container.clone(), port));
        }
        if last_inspect.elapsed() >= Duration::from_millis(700) {
            last_inspect = Instant::now();
            if let Some(code) = exited(&spec.container).await {
                remove(&spec.container).await;
                return Err(fail(exit_message(code, spec.port)));
            }
        }
        if Instant::now() >= deadline {
            remove(&spec.container).await;
            return Err(fail(format!(
                "The user-provided container failed to start and listen on the port defined provided by the PORT={} environment variable within the allocated timeout. This can happen when the container port is misconfigured or if the timeout is too short. Logs for this revision might contain more information.",
                spec.port
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn exit_message(code: i64, port: u16) -> String {
    format!(
        "The user-provided container exited with code {code} before it listened on the port defined provided by the PORT={port} environment variable. Logs for this revision might contain more information."
    )
}

/// One try of a startup probe on a loopback port. The engine's proxy accepts a TCP
/// connection even when nothing listens in the container, then closes it: a TCP probe
/// passes when the connection stays open (or sends a greeting).
async fn probe(p: &Probe, port: u16) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        match p {
            Probe::Tcp(_) => {
                let mut b = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await {
                    Err(_) => Some(true),
                    Ok(Ok(n)) => Some(n > 0),
                    Ok(Err(_)) => Some(false),
                }
            }
            Probe::Http(path, _) => {
                s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: GoogleHC/1.0\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
                let status: u16 = String::from_utf8_lossy(&buf)
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((200..400).contains(&status))
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A probe on a port that is not published: from inside the container's network, with
/// the container's address.
async fn probe_other(container: &str, p: &Probe) -> bool {
    let Ok(ip) = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        container,
    ])
    .await
    else {
        return false;
    };
    let Some(ip) = ip.split_whitespace().next().map(String::from) else {
        return false;
    };
    let port = match p {
        Probe::Tcp(p) | Probe::Http(_, p) => *p,
    };
    let attempt = async {
        let mut s = TcpStream::connect((ip.as_str(), port)).await.ok()?;
        if let Probe::Http(path, _) = p {
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .ok()?;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            let status: u16 = String::from_utf8_lossy(&buf)
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            return Some((200..400).contains(&status));
        }
        Some(true)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The exit code of a container that stopped (or is gone: -1).
async fn exited(name: &str) -> Option<i64> {
    match docker(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.State.ExitCode}}",
        name,
    ])
    .await
    {
        Ok(s) => {
            let (running, code) = s.split_once(' ')?;
            if running == "true" {
                None
            } else {
                code.parse().ok()
            }
        }
        Err(_) => Some(-1),
    }
}

/// Removes every container a server started (when it stops).
pub fn remove_all(instance: &str) {
    pym_fake_common::docker::remove_labelled(&format!("{LABEL}={instance}"));
}

/// The front door: routes each request by its `Host` to the container of a revision the
/// service's traffic picks (per request, as Cloud Run's does: a keep-alive connection is
/// not pinned to one revision), and records what the revision answered and how long it
/// took, for Cloud Monitoring's request metrics. Bodies are read whole; upgrades are not
/// modelled.
pub async fn serve_front(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(front(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

type FrontReply = hyper::Response<http_body_util::Full<bytes::Bytes>>;

async fn front(shared: &Shared, req: hyper::Request<hyper::body::Incoming>) -> FrontReply {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let host = header("host").unwrap_or_default();
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(host.as_str(), |(h, _)| h)
        .to_ascii_lowercase();
    // Cloud Run wants an identity token whose audience is the service's URL.
    let audience = header("authorization")
        .and_then(|a| a.strip_prefix("Bearer ").and_then(crate::json::jwt_claims))
        .and_then(|c| c["aud"].as_str().map(String::from));
    let route = shared
        .lock()
        .run
        .front_route(shared, &host, audience.as_deref());
    let path = req.uri().path().to_string();
    match route {
        FrontRoute::Backend(port, revision) => {
            let started = Instant::now();
            let answer = forward(port, req).await;
            let code = answer.as_ref().map_or(503, |r| r.status().as_u16());
            shared.lock().metrics.add(crate::monitoring::Sample {
                at_ms: pym_fake_common::time::now_ms(),
                revision,
                code,
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            });
            answer.unwrap_or_else(|_| raw(&unavailable()))
        }
        FrontRoute::NotFound => raw(&page(
            "404 Not Found",
            "404 Page not found",
            "Error: Page not found",
            "The requested URL was not found on this server.",
        )),
        FrontRoute::Forbidden => raw(&page(
            "403 Forbidden",
            "403 Forbidden",
            "Error: Forbidden",
            &format!(
                "Your client does not have permission to get URL <code>{path}</code> from this server."
            ),
        )),
        FrontRoute::Unavailable => raw(&unavailable()),
    }
}

/// Sends the request to the container on `port` (a connection of its own) and reads the
/// whole answer.
async fn forward(
    port: u16,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<FrontReply, Box<dyn std::error::Error + Send + Sync>> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut out = hyper::Request::from_parts(parts, http_body_util::Full::new(body));
    out.headers_mut().remove(hyper::header::CONNECTION);
    let res = sender.send_request(out).await?;
    let (mut parts, body) = res.into_parts();
    let body = body.collect().await?.to_bytes();
    parts.headers.remove(hyper::header::CONNECTION);
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    Ok(hyper::Response::from_parts(
        parts,
        http_body_util::Full::new(body),
    ))
}

/// A raw HTTP answer (a status line, headers, a body) as a response.
fn raw(text: &str) -> FrontReply {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    let mut res = hyper::Response::builder().status(status);
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':')
            && !k.eq_ignore_ascii_case("content-length")
            && !k.eq_ignore_ascii_case("connection")
        {
            res = res.header(k.trim(), v.trim());
        }
    }
    res.body(http_body_util::Full::new(bytes::Bytes::from(
        body.to_string(),
    )))
    .expect("a valid response")
}

fn unavailable() -> String {
    page(
        "503 Service Unavailable",
        "503 Service Unavailable",
        "Error: Service Unavailable",
        "The service you requested is not available yet. Please try again in 30 seconds.",
    )
}

fn page(status: &str, title: &str, h1: &str, h2: &str) -> String {
    let body = format!(
        "\n<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n<title>{title}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n<h1>{h1}</h1>\n<h2>{h2}</h2>\n<h2></h2>\n</body></html>\n"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

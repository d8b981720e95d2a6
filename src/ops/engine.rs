//! Which Docker engine to talk to, and the connection to it.
//!
//! The engine is chosen as the Docker CLI chooses it: `DOCKER_HOST`, else the context
//! named by `DOCKER_CONTEXT`, else the `currentContext` of `$DOCKER_CONFIG/config.json`
//! (`~/.docker`), else the local socket. A context's endpoint and TLS files live under
//! `$DOCKER_CONFIG/contexts/{meta,tls}/<sha256 of its name>/`, as `docker context create`
//! writes them.
//!
//! Transports: `unix://` (the local socket), `tcp://` (plain, or TLS with
//! `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`, or a context's TLS files; needs the
//! `docker-tls` feature), and `ssh://[user@]host[:port]`, which runs
//! `ssh ... -- docker system dial-stdio` per connection exactly as the Docker CLI does, so
//! `~/.ssh/config`, agents and known hosts apply. `PYM_SSH_COMMAND` replaces the `ssh`
//! command (like `GIT_SSH_COMMAND`); ssh runs in batch mode, so a missing key fails
//! instead of prompting.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bollard::Docker;
use hyper_util::rt::TokioIo;
use sha2::Digest;

use crate::error::hinted;

const LOCAL_SOCKET: &str = "unix:///var/run/docker.sock";

/// The engine's address and how it was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `unix://...`, `tcp://host:port` or `ssh://[user@]host[:port]`.
    pub host: String,
    /// Where the address came from, for messages: "DOCKER_HOST", "context prod", "default".
    pub source: String,
    /// TLS client files (ca.pem, cert.pem, key.pem) for a `tcp://` engine that wants them.
    pub tls: Option<PathBuf>,
}

impl Endpoint {
    /// The engine the Docker CLI would use in this environment.
    pub fn resolve() -> Result<Endpoint> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let config_dir = env("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".docker")));
        if let Some(host) = env("DOCKER_HOST") {
            let tls = if env("DOCKER_TLS_VERIFY").is_some() {
                Some(
                    env("DOCKER_CERT_PATH")
                        .map(PathBuf::from)
                        .or(config_dir)
                        .ok_or_else(|| {
                            anyhow!(
                                "DOCKER_TLS_VERIFY is set but neither DOCKER_CERT_PATH nor HOME is"
                            )
                        })?,
                )
            } else {
                None
            };
            return Ok(Endpoint {
                host,
                source: "DOCKER_HOST".into(),
                tls,
            });
        }
        let (name, from) = match env("DOCKER_CONTEXT") {
            Some(name) => (Some(name), "DOCKER_CONTEXT"),
            None => (
                config_dir.as_deref().and_then(current_context),
                "the current Docker context",
            ),
        };
        match (name, config_dir) {
            (Some(name), Some(dir)) if name != "default" => context_endpoint(&dir, &name)
                .with_context(|| format!("cannot use the Docker context {name:?} named by {from}")),
            _ => Ok(Endpoint {
                host: LOCAL_SOCKET.into(),
                source: "default".into(),
                tls: None,
            }),
        }
    }

    /// The host of a remote engine (ssh or tcp) that is not this machine, as written in
    /// its address: where the engine's published ports are reached from here.
    pub fn remote_host(&self) -> Option<String> {
        let rest = self
            .host
            .strip_prefix("ssh://")
            .or_else(|| self.host.strip_prefix("tcp://"))
            .or_else(|| self.host.strip_prefix("https://"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = match hostport.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
        };
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        (!loopback).then(|| host.to_string())
    }

    /// How messages name the engine: its address, and the context it came from.
    pub fn describe(&self) -> String {
        match self.source.as_str() {
            "default" | "DOCKER_HOST" => self.host.clone(),
            source => format!("{} ({source})", self.host),
        }
    }
}

fn current_context(config_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config_dir.join("config.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("currentContext")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn context_endpoint(config_dir: &Path, name: &str) -> Result<Endpoint> {
    let id = hex(&sha2::Sha256::digest(name.as_bytes()));
    let meta = config_dir.join("contexts/meta").join(&id).join("meta.json");
    let text = std::fs::read_to_string(&meta).map_err(|e| {
        hinted(
            format!("no context {name:?} ({}: {e})", meta.display()),
            "list contexts with `docker context ls`, or create it with `docker context create`",
        )
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", meta.display()))?;
    let docker = &json["Endpoints"]["docker"];
    let host = docker["Host"].as_str().ok_or_else(|| {
        anyhow!(
            "{} names no docker endpoint (Endpoints.docker.Host)",
            meta.display()
        )
    })?;
    let tls_dir = config_dir.join("contexts/tls").join(&id).join("docker");
    let tls = (host.starts_with("tcp://") && tls_dir.join("ca.pem").is_file()).then_some(tls_dir);
    if docker["SkipTLSVerify"].as_bool() == Some(true) {
        return Err(hinted(
            format!("the context {name:?} skips TLS verification, which pymdeploy does not do"),
            "give the context the engine's CA (`docker context update --docker host=...,ca=...,cert=...,key=...`), or reach the engine over ssh://",
        ));
    }
    Ok(Endpoint {
        host: host.to_string(),
        source: format!("context {name}"),
        tls,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects to the engine and agrees on an API version with it.
pub async fn connect(ep: &Endpoint) -> Result<Docker> {
    let ssh_errors = SshErrors::default();
    let unreachable = |e: &bollard::errors::Error| {
        let said = ssh_errors.take();
        let e = if said.is_empty() { chain(e) } else { said };
        let hint = match ssh_command(&ep.host) {
            Ok(argv) if ep.host.starts_with("ssh://") => {
                let login: Vec<&str> = argv.iter().map(String::as_str).filter(|a| !matches!(*a, "-o" | "BatchMode=yes" | "ConnectTimeout=15" | "-T")).take_while(|a| *a != "--").collect();
                format!("check that `{} docker version` works from this machine (key, known_hosts, a docker CLI and engine on the server); PYM_SSH_COMMAND replaces `ssh`", login.join(" "))
            }
            _ => "start the engine (`sudo systemctl start docker`, or run `dockerd` in the background), or point DOCKER_HOST or DOCKER_CONTEXT at one".into(),
        };
        hinted(
            format!("no Docker engine reachable at {}: {e}", ep.describe()),
            hint,
        )
    };
    let docker = match ep.host.split_once("://").map(|(s, _)| s) {
        Some("ssh") => ssh_transport(&ep.host, ssh_errors.clone())?,
        Some("tcp" | "http" | "https") if ep.tls.is_some() || ep.host.starts_with("https://") => {
            tls(ep)?
        }
        Some("unix" | "tcp" | "http") => {
            Docker::connect_with_host(&ep.host).map_err(|e| unreachable(&e))?
        }
        _ => {
            return Err(hinted(
                format!(
                    "cannot reach a Docker engine at {:?} ({}): pymdeploy speaks unix://, tcp:// and ssh://",
                    ep.host, ep.source
                ),
                "write the address as unix:///var/run/docker.sock, tcp://HOST:2376 or ssh://USER@HOST",
            ));
        }
    };
    let reached = async {
        let docker = docker.negotiate_version().await?;
        docker.ping().await?;
        Ok::<_, bollard::errors::Error>(docker)
    };
    match reached.await {
        Ok(docker) => Ok(docker),
        Err(e) => {
            // ssh's last words arrive on its stderr, which may still be read when the
            // connection has already failed: give them a moment, they are the message.
            if ep.host.starts_with("ssh://") {
                ssh_errors.arrived(Duration::from_secs(2)).await;
            }
            Err(unreachable(&e))
        }
    }
}

/// An error and its sources, as one line: hyper's own message ("client error
/// (Connect)") says little; the cause below it ("Connection refused", a certificate
/// problem) says what is wrong.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(feature = "docker-tls")]
fn tls(ep: &Endpoint) -> Result<Docker> {
    let dir = ep.tls.clone().unwrap_or_default();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        if !dir.join(f).is_file() {
            return Err(hinted(
                format!(
                    "the TLS engine {} needs {}, which is not there",
                    ep.describe(),
                    dir.join(f).display()
                ),
                "point DOCKER_CERT_PATH at the folder with ca.pem, cert.pem and key.pem (what `dockerd --tlsverify` was given)",
            ));
        }
    }
    // With the aws-beanstalk feature rustls has two providers compiled in and will not
    // guess; ring is what bollard's `ssl` feature brings.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Docker::connect_with_ssl(
        &ep.host,
        &dir.join("key.pem"),
        &dir.join("cert.pem"),
        &dir.join("ca.pem"),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .with_context(|| format!("cannot set up TLS to {}", ep.describe()))
}

#[cfg(not(feature = "docker-tls"))]
fn tls(ep: &Endpoint) -> Result<Docker> {
    Err(hinted(
        format!(
            "the engine {} wants TLS, and this build of pymdeploy has no TLS support",
            ep.describe()
        ),
        "add `features = [\"docker-tls\"]` to the pymdeploy-xtask dependency in xtask/Cargo.toml, or reach the engine over ssh:// (DOCKER_HOST=ssh://user@host)",
    ))
}

/// What ssh said on stderr, kept for the error message when a connection fails.
#[derive(Clone, Default)]
struct SshErrors(Arc<Mutex<String>>);

impl SshErrors {
    /// Waits until ssh has said something, for at most `within`.
    async fn arrived(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.0.lock().unwrap().trim().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn take(&self) -> String {
        std::mem::take(&mut *self.0.lock().unwrap())
            .trim()
            .replace('\n', "; ")
    }
}

/// The ssh command line for one connection to `ssh://[user@]host[:port]`.
fn ssh_command(url: &str) -> Result<Vec<String>> {
    let rest = url.strip_prefix("ssh://").unwrap_or(url);
    if rest.contains('/') && !rest.ends_with('/') {
        return Err(hinted(
            format!("{url}: a path after the host is not supported over ssh"),
            "write DOCKER_HOST=ssh://USER@HOST[:PORT]",
        ));
    }
    let rest = rest.trim_end_matches('/');
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')) => {
            (h, Some(p))
        }
        _ => (hostport, None),
    };
    // `[fd00::1]` in a URL; ssh takes the address bare.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(hinted(
            format!("{url} names no host"),
            "write DOCKER_HOST=ssh://USER@HOST[:PORT]",
        ));
    }
    let base = std::env::var("PYM_SSH_COMMAND")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "ssh".into());
    let mut argv =
        shell_words::split(&base).context("PYM_SSH_COMMAND is not a valid command line")?;
    argv.extend(["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-T"].map(String::from));
    if let Some(u) = user {
        argv.extend(["-l".into(), u.into()]);
    }
    if let Some(p) = port {
        argv.extend(["-p".into(), p.into()]);
    }
    argv.extend([
        host.to_string(),
        "--".into(),
        "docker".into(),
        "system".into(),
        "dial-stdio".into(),
    ]);
    Ok(argv)
}

fn ssh_transport(url: &str, errors: SshErrors) -> Result<Docker> {
    let argv = ssh_command(url)?;
    let connector = SshConnector {
        argv: Arc::new(argv),
        errors,
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let client = Arc::new(client);
    let transport = move |req: bollard::BollardRequest| {
        let client = Arc::clone(&client);
        async move {
            client
                .request(req)
                .await
                .map_err(|e| bollard::errors::Error::HyperLegacyError { err: e })
        }
    };
    Docker::connect_with_custom_transport(
        transport,
        Some("http://docker.engine"),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(Into::into)
}

/// Opens a connection by starting `ssh host -- docker system dial-stdio`.
#[derive(Clone)]
struct SshConnector {
    argv: Arc<Vec<String>>,
    errors: SshErrors,
}

impl tower_service::Service<hyper::Uri> for SshConnector {
    type Response = SshStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<SshStream>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let argv = Arc::clone(&self.argv);
        let errors = self.errors.clone();
        Box::pin(async move {
            let mut child = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot run {}: {e}", argv[0]))
                })?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let mut stderr = child.stderr.take().expect("piped");
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = String::new();
                let _ = stderr.read_to_string(&mut buf).await;
                if !buf.trim().is_empty() {
                    *errors.0.lock().unwrap() = buf;
                }
            });
            Ok(SshStream {
                io: TokioIo::new(tokio::io::join(stdout, stdin)),
                _child: child,
            })
        })
    }
}

struct SshStream {
    io: TokioIo<tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>>,
    _child: tokio::process::Child,
}

impl hyper_util::client::legacy::connect::Connection for SshStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl hyper::rt::Read for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str) -> Endpoint {
        Endpoint {
            host: host.into(),
            source: "DOCKER_HOST".into(),
            tls: None,
        }
    }

    #[test]
    fn remote_host_is_the_address_host_unless_loopback() {
        assert_eq!(
            ep("ssh://deploy@build.example.com:2222")
                .remote_host()
                .as_deref(),
            Some("build.example.com")
        );
        assert_eq!(
            ep("tcp://10.0.0.5:2376").remote_host().as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(
            ep("ssh://[fd00::1]:22").remote_host().as_deref(),
            Some("fd00::1")
        );
        assert_eq!(ep("ssh://root@127.0.0.1:2222").remote_host(), None);
        assert_eq!(ep("tcp://localhost:2375").remote_host(), None);
        assert_eq!(ep("unix:///var/run/docker.sock").remote_host(), None);
    }

    #[test]
    fn ssh_command_runs_dial_stdio_in_batch_mode() {
        let argv = ssh_command("ssh://deploy@host.example:2222").unwrap();
        let line = argv.join(" ");
        assert!(line.starts_with("ssh -o BatchMode=yes"), "{line}");
        assert!(
            line.ends_with("-l deploy -p 2222 host.example -- docker system dial-stdio"),
            "{line}"
        );
        assert!(
            ssh_command("ssh://[fd00::1]:2222")
                .unwrap()
                .join(" ")
                .ends_with("-p 2222 fd00::1 -- docker system dial-stdio")
        );
        assert!(ssh_command("ssh://").is_err());
        assert!(ssh_command("ssh://host/some/path").is_err());
    }

    #[test]
    fn a_context_is_read_where_docker_context_create_writes_it() {
        let dir = std::env::temp_dir().join(format!("pym-ctx-{}", std::process::id()));
        let id = hex(&sha2::Sha256::digest(b"prod"));
        let meta = dir.join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(meta.join("meta.json"), r#"{"Name":"prod","Metadata":{},"Endpoints":{"docker":{"Host":"ssh://ops@prod.example","SkipTLSVerify":false}}}"#).unwrap();
        let e = context_endpoint(&dir, "prod").unwrap();
        assert_eq!(e.host, "ssh://ops@prod.example");
        assert_eq!(e.describe(), "ssh://ops@prod.example (context prod)");
        let missing = context_endpoint(&dir, "staging").unwrap_err();
        assert!(
            crate::error::hint_of(&missing)
                .unwrap()
                .contains("docker context ls")
        );
        std::fs::write(
            dir.join("config.json"),
            r#"{"auths":{},"currentContext":"prod"}"#,
        )
        .unwrap();
        assert_eq!(current_context(&dir).as_deref(), Some("prod"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

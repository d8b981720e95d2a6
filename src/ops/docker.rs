//! The Docker Engine API, through bollard.
//!
//! bollard speaks a newer API than many engines (0.21 defaults to 1.53; Debian's dockerd
//! 20.10 speaks 1.41), so every connection negotiates the version first. Errors name the
//! image or container they concern and, where the fix is known, carry a hint.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::error::hinted;
use crate::ops::context;
use crate::output::StepProgress;

/// The labels of a local image, or `None` when there is no such image.
pub async fn image_labels(docker: &Docker, image: &str) -> Result<Option<HashMap<String, String>>> {
    match docker.inspect_image(image).await {
        Ok(inspect) => Ok(Some(
            inspect.config.and_then(|c| c.labels).unwrap_or_default(),
        )),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot inspect image {image}")),
    }
}

/// Whether the engine can pull `image`: it asks the image's registry for its manifest
/// (the engine's own `/distribution` call, so a remote engine answers for its own
/// network). The error says why not, as the engine put it.
pub async fn pullable(
    docker: &Docker,
    image: &str,
    credentials: Option<&crate::ops::registry::Credentials>,
) -> Result<()> {
    let creds =
        credentials.map(|c| engine_credentials(c, &crate::ops::registry::registry_of(image)));
    let ask = docker.inspect_registry_image(image, creds);
    match tokio::time::timeout(std::time::Duration::from_secs(15), ask).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(bollard::errors::Error::DockerResponseServerError { message, .. })) => {
            Err(anyhow::anyhow!("{}", message.trim()))
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(anyhow::anyhow!("its registry did not answer within 15 s")),
    }
}

pub struct BuildRequest<'a> {
    pub root: &'a Path,
    pub dockerfile: &'a str,
    pub tag: &'a str,
    pub build_args: HashMap<String, String>,
    pub labels: HashMap<String, String>,
}

/// What a build sent and made.
pub struct Built {
    pub image_id: String,
    pub context_files: usize,
    pub context_bytes: u64,
}

/// The Dockerfile's text; an error with a hint when it is not there.
pub fn check_dockerfile(root: &Path, dockerfile: &str) -> Result<String> {
    let path = root.join(dockerfile);
    if !path.is_file() {
        return Err(hinted(
            format!("no Dockerfile at {}", path.display()),
            "add a Dockerfile, or set `dockerfile:` in pym-config.yaml to the one you use",
        ));
    }
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// Builds an image from `req.root`, streaming the context from disk and folding the
/// engine's output into `progress`.
pub async fn build(
    docker: &Docker,
    req: BuildRequest<'_>,
    progress: &StepProgress<'_>,
) -> Result<Built> {
    check_dockerfile(req.root, req.dockerfile)?;
    let root = req.root.to_path_buf();
    let dockerfile = req.dockerfile.to_string();
    let entries = tokio::task::spawn_blocking(move || context::list(&root, &dockerfile))
        .await
        .context("the context walk panicked")?
        .with_context(|| format!("cannot prepare the build context of {}", req.root.display()))?;
    let files = entries
        .iter()
        .filter(|e| e.kind == context::EntryKind::File)
        .count();
    let bytes: u64 = entries.iter().map(|e| e.size).sum();
    progress.message(&format!(
        "sending context: {files} files, {}",
        human_bytes(bytes)
    ));

    let (stream, _counter) = context::tar_stream(req.root.to_path_buf(), entries);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(req.dockerfile)
        .t(req.tag)
        .rm(true)
        .forcerm(true)
        .buildargs(&req.build_args)
        .labels(&req.labels)
        .build();
    let mut output = docker.build_image(options, None, Some(bollard::body_try_stream(stream)));
    let mut image_id = None;
    while let Some(item) = output.next().await {
        let info = item.map_err(|e| describe_build_error(e, req.tag))?;
        if let Some(line) = &info.stream {
            for l in line.lines() {
                progress.line(l);
            }
        }
        if let Some(status) = &info.status {
            progress.line(status);
        }
        if let Some(err) = info.error_detail.as_ref().and_then(|d| d.message.clone()) {
            progress.line(&err);
            return Err(anyhow!("docker build of {} failed: {err}", req.tag));
        }
        if let Some(id) = info.aux.as_ref().and_then(|a| a.id.clone()) {
            image_id = Some(id);
        }
    }
    let image_id = match image_id {
        Some(id) => id,
        None => docker
            .inspect_image(req.tag)
            .await
            .with_context(|| format!("the build of {} made no image", req.tag))?
            .id
            .unwrap_or_default(),
    };
    Ok(Built {
        image_id,
        context_files: files,
        context_bytes: bytes,
    })
}

fn describe_build_error(e: bollard::errors::Error, tag: &str) -> anyhow::Error {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. }
            if message.contains("pull access denied") || message.contains("not found") =>
        {
            hinted(
                format!("docker build of {tag} failed: {message}"),
                "the base image is not in the local engine: build or load it first (see README, \"Base image\")",
            )
        }
        e => anyhow::Error::new(e).context(format!("docker build of {tag} failed")),
    }
}

/// What to run.
pub struct RunSpec<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub env: Vec<String>,
    pub container_port: u16,
    /// The address the port is published on.
    pub host_ip: &'a str,
    /// `None` lets the engine choose a free port.
    pub host_port: Option<u16>,
    pub labels: HashMap<String, String>,
    /// A user-defined network to join, where containers find each other by name.
    pub network: Option<&'a str>,
    /// Restarted by the engine (`unless-stopped`): for what must outlive the deploy.
    pub restart: bool,
    /// Replaces the image's command.
    pub cmd: Option<Vec<String>>,
    /// For our own infrastructure (the live proxy): an unprivileged user, a read-only root
    /// filesystem with a small tmpfs at /tmp, no capabilities, no privilege escalation.
    pub locked_down: bool,
    /// A directory kept in a volume of the container's own: it survives restarts of the
    /// container and of the engine, and goes with the container. Its owner and content
    /// come from the image.
    pub state_dir: Option<&'a str>,
    /// More ports published on `host_ip`: (container port, host port).
    pub more_ports: Vec<(u16, u16)>,
    /// A named volume for `state_dir`, which outlives the container (the edge's, kept
    /// when a newer pymdeploy replaces it); unset, the volume is the container's own.
    pub state_volume: Option<&'a str>,
}

/// Creates and starts a container; returns its id. If starting fails, the created
/// container is removed before the error is returned.
pub async fn run(docker: &Docker, spec: RunSpec<'_>) -> Result<String> {
    let port_key = format!("{}/tcp", spec.container_port);
    let mut bindings = HashMap::from([(
        port_key.clone(),
        Some(vec![PortBinding {
            host_ip: Some(spec.host_ip.to_string()),
            host_port: Some(spec.host_port.map(|p| p.to_string()).unwrap_or_default()),
        }]),
    )]);
    let mut exposed = vec![port_key];
    for (container, host) in &spec.more_ports {
        let key = format!("{container}/tcp");
        bindings.insert(
            key.clone(),
            Some(vec![PortBinding {
                host_ip: Some(spec.host_ip.to_string()),
                host_port: Some(host.to_string()),
            }]),
        );
        exposed.push(key);
    }
    let host_config = HostConfig {
        port_bindings: Some(bindings),
        // An init process forwards SIGTERM, so `docker stop` is quick for any service.
        init: Some(true),
        network_mode: spec.network.map(str::to_string),
        restart_policy: spec.restart.then_some(bollard::models::RestartPolicy {
            name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        binds: spec
            .state_volume
            .zip(spec.state_dir)
            .map(|(v, d)| vec![format!("{v}:{d}")]),
        readonly_rootfs: spec.locked_down.then_some(true),
        cap_drop: spec.locked_down.then(|| vec!["ALL".to_string()]),
        security_opt: spec
            .locked_down
            .then(|| vec!["no-new-privileges".to_string()]),
        tmpfs: spec.locked_down.then(|| {
            HashMap::from([(
                "/tmp".to_string(),
                "rw,nosuid,nodev,size=1m,mode=1777".to_string(),
            )])
        }),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.to_string()),
        env: Some(spec.env),
        labels: Some(spec.labels),
        exposed_ports: Some(exposed),
        host_config: Some(host_config),
        cmd: spec.cmd,
        user: spec.locked_down.then(|| "65534:65534".to_string()),
        volumes: spec
            .state_dir
            .filter(|_| spec.state_volume.is_none())
            .map(|d| vec![d.to_string()]),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default()
        .name(spec.name)
        .build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message,
            } => hinted(
                format!(
                    "cannot create container {} from {}: {message}",
                    spec.name, spec.image
                ),
                "build the image first (`cargo xtask build`)",
            ),
            e => anyhow::Error::new(e).context(format!(
                "cannot create container {} from {}",
                spec.name, spec.image
            )),
        })?;
    if let Err(e) = docker.start_container(&created.id, None).await {
        let _ = remove(docker, &created.id).await;
        let msg = e.to_string();
        if msg.contains("port is already allocated") || msg.contains("address already in use") {
            return Err(hinted(
                format!("cannot start container {}: {msg}", spec.name),
                "another process holds that port: stop it, or choose another port",
            ));
        }
        return Err(anyhow::Error::new(e).context(format!("cannot start container {}", spec.name)));
    }
    Ok(created.id)
}

/// The host port a container's port was published on.
pub async fn published_port(docker: &Docker, id: &str, container_port: u16) -> Result<u16> {
    let inspect = docker
        .inspect_container(id, None)
        .await
        .with_context(|| format!("cannot inspect container {id}"))?;
    let key = format!("{container_port}/tcp");
    inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get(&key).cloned().flatten())
        .and_then(|b| b.into_iter().find_map(|b| b.host_port))
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("container {id} has no published port for {key}"))
}

/// The address of a running container on `network`, if it has one.
pub async fn ip_on(docker: &Docker, id: &str, network: &str) -> Result<Option<String>> {
    let inspect = docker
        .inspect_container(id, None)
        .await
        .with_context(|| format!("cannot inspect container {id}"))?;
    Ok(inspect
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|mut n| n.remove(network))
        .and_then(|e| e.ip_address)
        .filter(|ip| !ip.is_empty()))
}

/// The exit code of a container that has stopped, or `None` while it runs.
pub async fn exit_code(docker: &Docker, id: &str) -> Result<Option<i64>> {
    let inspect = docker
        .inspect_container(id, None)
        .await
        .with_context(|| format!("cannot inspect container {id}"))?;
    let state = inspect.state.unwrap_or_default();
    Ok(if state.running == Some(true) {
        None
    } else {
        state.exit_code
    })
}

/// Waits until the container stops; returns its exit code.
pub async fn wait_exit(docker: &Docker, id: &str) -> Result<i64> {
    let mut s = docker.wait_container(id, None);
    match s.next().await {
        Some(Ok(r)) => Ok(r.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(e).with_context(|| format!("cannot wait for container {id}")),
        None => Err(anyhow!("the engine closed the wait on container {id}")),
    }
}

/// The last `n` lines of a container's stdout and stderr.
pub async fn logs_tail(docker: &Docker, id: &str, n: usize) -> Vec<String> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&n.to_string())
        .build();
    let mut s = docker.logs(id, Some(options));
    let mut out = String::new();
    while let Some(Ok(chunk)) = s.next().await {
        out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    out.lines().map(str::to_string).collect()
}

/// Removes a container whatever its state. A container already gone is not an error.
pub async fn remove(docker: &Docker, id: &str) -> Result<()> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove container {id}")),
    }
}

/// `remove` from code that is not async and has no `Ctx` (a guard's drop), on `rt`.
pub fn remove_now(rt: &tokio::runtime::Handle, docker: &Docker, id: &str) {
    let _ = rt.block_on(remove(docker, id));
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// What a push did.
pub struct Pushed {
    /// `sha256:…`, as the registry reported it.
    pub digest: String,
    pub layers_pushed: usize,
    pub layers_existing: usize,
}

/// Registry credentials as the engine takes them.
fn engine_credentials(
    c: &crate::ops::registry::Credentials,
    host: &str,
) -> bollard::auth::DockerCredentials {
    bollard::auth::DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.clone()),
        serveraddress: Some(host.to_string()),
        ..Default::default()
    }
}

/// Pushes `image` (`<registry>/<repo>:<tag>`) with `credentials`, showing each layer's
/// progress.
pub async fn push(
    docker: &Docker,
    image: &str,
    credentials: Option<&crate::ops::registry::Credentials>,
    progress: &StepProgress<'_>,
) -> Result<Pushed> {
    let (name, tag) = image
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .with_context(|| format!("{image} has no tag"))?;
    let host = crate::ops::registry::registry_of(image);
    let creds = credentials.map(|c| engine_credentials(c, &host));
    let options = bollard::query_parameters::PushImageOptionsBuilder::default()
        .tag(tag)
        .build();
    let mut stream = docker.push_image(name, Some(options), creds);
    let (mut pushed, mut existing, mut digest) = (0, 0, None);
    let mut layers = Layers::default();
    let mut said = None;
    while let Some(item) = stream.next().await {
        let info =
            item.map_err(|e| describe_registry_error(e, "push", image, &host, credentials))?;
        let Some(status) = info.status else { continue };
        match status.as_str() {
            "Pushed" => pushed += 1,
            // Mounted: the registry had the layer in another repository and linked it.
            s if s == "Layer already exists" || s.starts_with("Mounted from") => existing += 1,
            _ => {}
        }
        if let Some(d) = status
            .split("digest: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        {
            digest = Some(d.to_string());
        }
        if let Some((current, total)) = info
            .progress_detail
            .and_then(|p| Some((p.current?, p.total?)))
        {
            layers.progress(current, total);
        }
        let layers_said = format!("(layers: {pushed} pushed, {existing} already there)");
        if status == "Pushing" {
            // A log gets a line per tenth of the bytes, a terminal every update.
            let (sent, total) = layers.sent();
            let tenth = (sent * 10).checked_div(total);
            if progress.is_live() || tenth != said {
                said = tenth;
                progress.line(&format!(
                    "Pushing {}/{} {layers_said}",
                    human_bytes(sent),
                    human_bytes(total)
                ));
            }
        } else {
            progress.line(&format!("{status} {layers_said}"));
        }
    }
    let digest = digest.with_context(|| format!("the registry reported no digest for {image}"))?;
    Ok(Pushed {
        digest,
        layers_pushed: pushed,
        layers_existing: existing,
    })
}

/// The bytes of a push, summed over its layers: the engine reports each layer's bytes
/// sent against its size, and the bytes sent can pass the size (they count what goes on
/// the wire), so each layer's count stops at its size. bollard's push report drops the
/// layer's id: a layer is known by its size (two of one size count once, too few bytes
/// rather than too many).
#[derive(Default)]
struct Layers(HashMap<u64, u64>);

impl Layers {
    fn progress(&mut self, current: i64, total: i64) {
        let total = u64::try_from(total).unwrap_or(0);
        let sent = self.0.entry(total).or_default();
        *sent = u64::try_from(current).unwrap_or(0).min(total).max(*sent);
    }

    /// Bytes sent and bytes to send, over the layers whose size is known.
    fn sent(&self) -> (u64, u64) {
        self.0.iter().fold((0, 0), |(sent, all), (total, current)| {
            (sent + current, all + total)
        })
    }
}

/// A registry's refusal or absence, said for what was being done (`push` or `pull`).
fn describe_registry_error(
    e: bollard::errors::Error,
    verb: &str,
    image: &str,
    host: &str,
    creds: Option<&crate::ops::registry::Credentials>,
) -> anyhow::Error {
    let msg = match &e {
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let lower = msg.to_lowercase();
    if lower.contains("unauthorized")
        || lower.contains("authentication required")
        || lower.contains("denied")
        || lower.contains("no basic auth")
    {
        let who = match creds {
            Some(c) => format!("the credentials of `{}` from {}", c.username, c.source),
            None => format!("an anonymous {verb} (no credentials found)"),
        };
        return hinted(
            format!("registry {host} refused {who} for {image}: {msg}"),
            format!(
                "check the password, or log in again with `docker login {host}` (in CI: set {} and {})",
                crate::ops::registry::ENV_USER,
                crate::ops::registry::ENV_PASSWORD
            ),
        );
    }
    if lower.contains("connection refused")
        || lower.contains("no such host")
        || lower.contains("dial tcp")
        || lower.contains("i/o timeout")
    {
        return hinted(
            format!("cannot reach registry {host} to {verb} {image}: {msg}"),
            format!(
                "check that the registry runs and that `docker_repo` in pym-config.yaml names it ({host})"
            ),
        );
    }
    anyhow::Error::new(e).context(format!("cannot {verb} {image}"))
}

/// Whether a network of this name exists.
pub async fn network_exists(docker: &Docker, name: &str) -> Result<bool> {
    match docker.inspect_network(name, None).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot inspect network {name}")),
    }
}

/// Removes a network; one already gone is not an error.
pub async fn remove_network(docker: &Docker, name: &str) -> Result<()> {
    match docker.remove_network(name).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove network {name}")),
    }
}

/// Connects a running container to a network, unless it is on it.
pub async fn connect_network(docker: &Docker, container: &str, network: &str) -> Result<()> {
    if ip_on(docker, container, network).await?.is_some() {
        return Ok(());
    }
    let req = bollard::models::NetworkConnectRequest {
        container: container.to_string(),
        ..Default::default()
    };
    match docker.connect_network(network, req).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { message, .. })
            if message.contains("already exists") =>
        {
            Ok(())
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot connect {container} to network {network}"))
        }
    }
}

/// Disconnects a container from a network; one not on it is not an error.
pub async fn disconnect_network(docker: &Docker, container: &str, network: &str) -> Result<()> {
    let req = bollard::models::NetworkDisconnectRequest {
        container: container.to_string(),
        force: Some(true),
    };
    match docker.disconnect_network(network, req).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409 | 500,
            ..
        }) => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("cannot disconnect {container} from network {network}"))
        }
    }
}

/// Creates a bridge network, with `labels`, unless it exists.
pub async fn ensure_network(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    match docker.inspect_network(name, None).await {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            let req = bollard::models::NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".into()),
                labels: Some(labels),
                ..Default::default()
            };
            docker
                .create_network(req)
                .await
                .with_context(|| format!("cannot create network {name}"))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot inspect network {name}")),
    }
}

/// Runs `cmd` in a running container; returns its exit code and output.
pub async fn exec(docker: &Docker, container: &str, cmd: &[&str]) -> Result<(i64, String)> {
    exec_with_input(docker, container, cmd, &[]).await
}

/// Runs `cmd` in a running container with `input` on its stdin (never on its command
/// line, which the engine shows in its events); returns its exit code and output.
pub async fn exec_with_input(
    docker: &Docker,
    container: &str,
    cmd: &[&str],
    input: &[u8],
) -> Result<(i64, String)> {
    let config = bollard::models::ExecConfig {
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: Some(!input.is_empty()),
        ..Default::default()
    };
    let created = docker
        .create_exec(container, config)
        .await
        .with_context(|| format!("cannot exec in {container}"))?;
    let mut output = String::new();
    if let bollard::exec::StartExecResults::Attached {
        output: mut out,
        input: mut stdin,
    } = docker
        .start_exec(&created.id, None)
        .await
        .with_context(|| format!("cannot exec in {container}"))?
    {
        if !input.is_empty() {
            use tokio::io::AsyncWriteExt;
            stdin
                .write_all(input)
                .await
                .with_context(|| format!("cannot write to an exec in {container}"))?;
            stdin.flush().await?;
        }
        while let Some(Ok(chunk)) = out.next().await {
            output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    }
    let inspect = docker
        .inspect_exec(&created.id)
        .await
        .with_context(|| format!("cannot inspect an exec in {container}"))?;
    Ok((inspect.exit_code.unwrap_or(-1), output))
}

/// Pulls `reference` (`repo:tag` or `repo@sha256:…`) from its registry.
pub async fn pull(
    docker: &Docker,
    reference: &str,
    credentials: Option<&crate::ops::registry::Credentials>,
    progress: &StepProgress<'_>,
) -> Result<()> {
    let host = crate::ops::registry::registry_of(reference);
    let creds = credentials.map(|c| engine_credentials(c, &host));
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_image(reference)
        .build();
    let mut stream = docker.create_image(Some(options), None, creds);
    while let Some(item) = stream.next().await {
        let info =
            item.map_err(|e| describe_registry_error(e, "pull", reference, &host, credentials))?;
        if let Some(status) = info.status {
            progress.line(&status);
        }
    }
    Ok(())
}

/// The images of `repo` (every tag): their IDs and tags.
pub async fn images_of(docker: &Docker, repo: &str) -> Result<Vec<(String, Vec<String>)>> {
    let filters = HashMap::from([("reference".to_string(), vec![repo.to_string()])]);
    let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let images = docker
        .list_images(Some(options))
        .await
        .with_context(|| format!("cannot list the images of {repo}"))?;
    Ok(images.into_iter().map(|i| (i.id, i.repo_tags)).collect())
}

/// The tags of the engine's images that could be a Dockerfile's base: those pymdeploy
/// did not build (no commit label, not the proxy), at most 10, sorted.
pub async fn base_images(docker: &Docker) -> Result<Vec<String>> {
    let images = docker
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await
        .context("cannot list the engine's images")?;
    let mut tags: Vec<String> = images
        .into_iter()
        .filter(|i| !i.labels.contains_key(crate::ops::service::LABEL_COMMIT))
        .flat_map(|i| i.repo_tags)
        .filter(|t| t != "<none>:<none>" && !t.starts_with("pym-proxy"))
        .collect();
    tags.sort();
    tags.truncate(10);
    Ok(tags)
}

/// The images of `repo` created before `before` (seconds since the epoch) that no
/// container uses, running or not: their IDs.
pub async fn unused_images_before(docker: &Docker, repo: &str, before: i64) -> Result<Vec<String>> {
    let filters = HashMap::from([("reference".to_string(), vec![repo.to_string()])]);
    let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let images = docker
        .list_images(Some(options))
        .await
        .with_context(|| format!("cannot list the images of {repo}"))?;
    let all = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .build();
    let used: std::collections::HashSet<String> = docker
        .list_containers(Some(all))
        .await
        .context("cannot list containers")?
        .into_iter()
        .filter_map(|c| c.image_id)
        .collect();
    Ok(images
        .into_iter()
        .filter(|i| i.created < before && !used.contains(&i.id))
        .map(|i| i.id)
        .collect())
}

/// Removes an image with all its tags. Call it only for an image no container uses.
pub async fn remove_image(docker: &Docker, id: &str) -> Result<()> {
    let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    match docker.remove_image(id, Some(options), None).await {
        Ok(_)
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove image {id}")),
    }
}

/// Removes an image unless a container (running or not) uses it: the engine refuses
/// then, and so do we, quietly.
pub async fn remove_image_if_unused(docker: &Docker, id: &str) -> Result<()> {
    match docker
        .remove_image(
            id,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
    {
        Ok(_)
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove image {id}")),
    }
}

/// Containers (running or not) carrying every one of `labels` (`key=value`).
pub async fn list(
    docker: &Docker,
    labels: &[String],
) -> Result<Vec<bollard::models::ContainerSummary>> {
    let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .context("cannot list containers")
}

/// The running containers that publish host port `port`.
pub async fn publishing(
    docker: &Docker,
    port: u16,
) -> Result<Vec<bollard::models::ContainerSummary>> {
    let filters = HashMap::from([("publish".to_string(), vec![port.to_string()])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .with_context(|| format!("cannot list the containers that publish port {port}"))
}

/// Stops a container, giving it `grace` seconds after SIGTERM.
pub async fn stop(docker: &Docker, id: &str, grace: i32) -> Result<()> {
    let options = bollard::query_parameters::StopContainerOptionsBuilder::default()
        .t(grace)
        .build();
    match docker.stop_container(id, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot stop container {id}")),
    }
}

pub async fn start(docker: &Docker, id: &str) -> Result<()> {
    match docker.start_container(id, None).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot start container {id}")),
    }
}

/// Creates (does not start) a container named `name` from `image`, carrying `labels`: the
/// engine refuses a second container of one name, which makes this an atomic
/// test-and-set on the engine. `Ok(false)` when a container of that name exists.
pub async fn create_named(
    docker: &Docker,
    name: &str,
    image: &str,
    labels: HashMap<String, String>,
) -> Result<bool> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        labels: Some(labels),
        // Never started: the command only has to be there for the engine to accept it.
        cmd: Some(vec!["held".to_string()]),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    match docker.create_container(Some(options), body).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot create container {name}")),
    }
}

/// A container's labels and, when it has stopped, its exit code (`None` while it runs);
/// `None` when there is no such container. One inspect.
pub async fn container_state(
    docker: &Docker,
    name: &str,
) -> Result<Option<(HashMap<String, String>, Option<i64>)>> {
    match docker.inspect_container(name, None).await {
        Ok(c) => {
            let state = c.state.unwrap_or_default();
            let code = if state.running == Some(true) {
                None
            } else {
                state.exit_code
            };
            Ok(Some((
                c.config.and_then(|c| c.labels).unwrap_or_default(),
                code,
            )))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot inspect container {name}")),
    }
}

/// What one inspect of a container says: its labels, the image reference it was created
/// from (as given: a digest reference or an image ID), and whether it runs.
pub struct Inspected {
    pub labels: HashMap<String, String>,
    pub image: String,
    pub running: bool,
}

/// `None` when there is no such container.
pub async fn inspect(docker: &Docker, name: &str) -> Result<Option<Inspected>> {
    match docker.inspect_container(name, None).await {
        Ok(c) => {
            let config = c.config.unwrap_or_default();
            Ok(Some(Inspected {
                labels: config.labels.unwrap_or_default(),
                image: config.image.unwrap_or_default(),
                running: c.state.and_then(|s| s.running) == Some(true),
            }))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot inspect container {name}")),
    }
}

/// An image with no files (`docker import` of an empty archive), made once per engine:
/// what the engine lock's container is created from (it is never started).
pub async fn empty_image(docker: &Docker, repo: &str, tag: &str) -> Result<()> {
    if image_labels(docker, &format!("{repo}:{tag}"))
        .await?
        .is_some()
    {
        return Ok(());
    }
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .build();
    // An empty tar archive: two zero blocks.
    let empty = bollard::body_full(bytes::Bytes::from(vec![0u8; 1024]));
    let mut out = docker.create_image(Some(options), Some(empty), None);
    while let Some(item) = out.next().await {
        let info = item.with_context(|| format!("cannot make the image {repo}:{tag}"))?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            return Err(anyhow!("cannot make the image {repo}:{tag}: {e}"));
        }
    }
    Ok(())
}

/// Tags `image` as `repo:tag`.
pub async fn tag(docker: &Docker, image: &str, repo: &str, tag: &str) -> Result<()> {
    let options = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    docker
        .tag_image(image, Some(options))
        .await
        .with_context(|| format!("cannot tag {image} as {repo}:{tag}"))
}

/// The engine's operating system and CPU architecture, in Rust's words (`linux`,
/// `x86_64`), so they compare with `std::env::consts`.
pub async fn platform(docker: &Docker) -> Result<(String, String)> {
    let v = docker
        .version()
        .await
        .context("cannot ask the engine its version")?;
    let arch = match v.arch.as_deref().unwrap_or_default() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "x86",
        "ppc64le" => "powerpc64",
        other => other,
    };
    Ok((v.os.unwrap_or_default(), arch.to_string()))
}

/// Takes a container out of the way of a new one of the same name and port at once:
/// kills it (freeing its port) and renames it to `to`. Its removal, slow on some storage
/// drivers, can then wait. `Ok(false)` when there is no such container.
pub async fn kill_and_rename(docker: &Docker, name: &str, to: &str) -> Result<bool> {
    match docker
        .kill_container(
            name,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
    {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot stop container {name}")),
    }
    let options = bollard::query_parameters::RenameContainerOptionsBuilder::default()
        .name(to)
        .build();
    docker
        .rename_container(name, options)
        .await
        .with_context(|| format!("cannot rename container {name} to {to}"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::Layers;

    #[test]
    fn push_progress_never_passes_the_size() {
        let mut layers = Layers::default();
        layers.progress(5, 10);
        layers.progress(150, 100);
        assert_eq!(layers.sent(), (105, 110));
        layers.progress(10, 10);
        assert_eq!(layers.sent(), (110, 110));
        // The bytes said never go back.
        layers.progress(20, 100);
        assert_eq!(layers.sent(), (110, 110));
    }
}

//! The live proxy's side on the engine: its image (made from the deploying binary, or
//! `proxy_image`), its container on the service's network, and the routes it keeps (the
//! current upstream first), changed and read by `docker exec` of the proxy's own
//! commands (`ops::proxy`).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use bollard::Docker;

use super::names::{Front, edge_name, edge_network, front, network, proxy_name, upstream_container};
use crate::config::{Config, PymEnv, Tls};
use crate::ctx::Ctx;
use crate::ops::service::LABEL_NAME;
use crate::ops::{self, docker::RunSpec, proxy, state};
use crate::output::StepProgress;

/// The proxy's image: `proxy_image` when set (pulled if the engine lacks it), else made
/// from the running binary.
pub(super) fn proxy_image(
    ctx: &Ctx,
    docker: &Docker,
    progress: &StepProgress<'_>,
) -> Result<String> {
    let Some(image) = ctx.config().proxy_image.clone() else {
        return built_proxy_image(ctx, docker, progress);
    };
    if ctx
        .wait(ops::docker::image_labels(docker, &image))?
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
pub(super) fn can_make_proxy(engine: &(String, String)) -> bool {
    std::env::consts::OS == "linux" && engine.0 == "linux" && engine.1 == std::env::consts::ARCH
}

/// `pymdeploy proxy-image`: makes the proxy image from the running binary and, with a
/// repository, pushes it there for `proxy_image` to name. Returns the image's reference.
pub fn make_proxy_image(ctx: &Ctx, push_to: Option<&str>) -> Result<String> {
    let docker = ctx.docker()?;
    let engine = ctx.wait(ops::docker::platform(docker))?;
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
    ctx.wait(ops::docker::tag(docker, &image, &repo, &tag))?;
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
pub(super) fn built_proxy_image(
    ctx: &Ctx,
    docker: &Docker,
    progress: &StepProgress<'_>,
) -> Result<String> {
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
    if ctx.wait(ops::docker::image_labels(docker, &tag))?.is_some() {
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
pub(super) const PROXY_REPO: &str = "pym-proxy";

/// On the proxy container: the image and address it was made with, so a proxy of an
/// older pymdeploy, or on an address the config no longer names, is replaced.
pub(super) const LABEL_PROXY: &str = "org.pymacaron.proxy";

/// Makes sure the network and a running proxy of this pymdeploy exist; true when it made
/// the proxy where there was none.
pub(super) fn ensure_proxy(
    ctx: &Ctx,
    docker: &Docker,
    config: &Config,
    progress: &StepProgress<'_>,
) -> Result<bool> {
    let labels = crate::ops::service::owned_labels(config, "network");
    ctx.wait(ops::docker::ensure_network(docker, &network(config), labels))?;
    if !config.hosts.is_empty() {
        return ensure_edge(ctx, docker, config, PymEnv::Live, progress);
    }
    let name = proxy_name(config);
    let made_as = made_as(config, &config.live_port.to_string());
    if let Some((labels, code)) = ctx.wait(ops::docker::container_state(docker, &name))? {
        if labels.get(LABEL_PROXY) == Some(&made_as) && labels.get(LABEL_NAME) == Some(&config.name)
        {
            if code.is_some() {
                ctx.wait(ops::docker::start(docker, &name))?;
            }
            return Ok(false);
        }
        // Its route history lives in the container being replaced only; carry it over.
        let mut history = route_history(ctx, docker, config)?;
        if history.is_empty() {
            history = routes_in(ctx, docker, config, proxy::LEGACY_STATE_FILE)?;
        }
        ctx.out.warn(&format!("replacing the live proxy {name} (an older pymdeploy's, or on another address): connections to the live port are refused for about a second"));
        let image = proxy_image(ctx, docker, progress)?;
        ctx.wait(ops::docker::remove(docker, &name))?;
        create_proxy(ctx, docker, config, &image, &made_as)?;
        for u in history.iter().rev() {
            route(ctx, docker, config, u)?;
        }
        return Ok(false);
    }
    let image = proxy_image(ctx, docker, progress)?;
    create_proxy(ctx, docker, config, &image, &made_as)?;
    prune_proxy_images(ctx, docker);
    Ok(true)
}

/// Which proxy a container is: its protocol (not the binary it was copied from:
/// `pymdeploy` and a service's xtask make the same proxy), the address and `ports` it
/// listens on, and a `proxy_image` of the team's own. A proxy or edge made otherwise is
/// replaced.
fn made_as(config: &Config, ports: &str) -> String {
    let image = config
        .proxy_image
        .as_deref()
        .map(|i| format!(" {i}"))
        .unwrap_or_default();
    format!(
        "{}-r{}/{}:{ports}{image}",
        env!("CARGO_PKG_VERSION"),
        proxy::REVISION,
        config.publish_ip,
    )
}

/// Proxy images made by earlier builds of pymdeploy pile up on the engine (one per build
/// of the deploying binary): when a proxy is made, those no container uses go. Images
/// younger than an hour stay, in case another service's deploy just made one and is
/// about to run it.
pub(super) fn prune_proxy_images(ctx: &Ctx, docker: &Docker) {
    let before = state::now() - 3600;
    let Ok(ids) = ctx.wait(ops::docker::unused_images_before(
        docker, PROXY_REPO, before,
    )) else {
        return;
    };
    for id in ids {
        let _ = ctx.wait(ops::docker::remove_image_if_unused(docker, &id));
    }
}

pub(super) fn create_proxy(
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
        host_port: Some(config.live_port.get()),
        labels: {
            let mut labels = crate::ops::service::owned_labels(config, "proxy");
            labels.insert(LABEL_PROXY.to_string(), made_as.to_string());
            labels
        },
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
        more_ports: Vec::new(),
            state_volume: None,
    };
    ctx.wait(ops::docker::run(docker, spec))?;
    Ok(())
}

/// `None` if there is no such container; `Some(None)` if it runs; `Some(Some(code))` if
/// it has stopped.
pub(super) async fn existing_state(docker: &Docker, name: &str) -> Result<Option<Option<i64>>> {
    Ok(ops::docker::container_state(docker, name)
        .await?
        .map(|(_, code)| code))
}

/// Makes `upstream` (`<container>:<port>`) the live one. The proxy is given the
/// container's address on the network too, so it connects without a DNS lookup (the
/// engine's resolver can stall on names it forwards, as it does with AAAA queries where
/// no outside resolver answers).
pub(super) fn route(ctx: &Ctx, docker: &Docker, config: &Config, upstream: &str) -> Result<()> {
    route_at(ctx, docker, &front(config, PymEnv::Live), upstream)
}

/// Makes `upstream` the one `at` routes to.
pub(super) fn route_at(ctx: &Ctx, docker: &Docker, at: &Front, upstream: &str) -> Result<()> {
    let addr = address_of(ctx, docker, &at.network, upstream);
    let (code, out) = ctx.wait(ops::docker::exec(
        docker,
        &at.container,
        &[
            proxy::BINARY,
            "__proxy-route",
            upstream,
            "--addr",
            &addr,
            "--state",
            &at.state,
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

/// Sends `percent` of live's requests to `upstream` (`<container>:<port>`), each client
/// kept on one side by its cookie; 0 sends none.
pub(super) fn canary(
    ctx: &Ctx,
    docker: &Docker,
    config: &Config,
    upstream: &str,
    percent: u8,
) -> Result<()> {
    let at = front(config, PymEnv::Live);
    let addr = address_of(ctx, docker, &at.network, upstream);
    let share = (u32::from(percent) * proxy::BUCKETS / 100).to_string();
    let (code, out) = ctx.wait(ops::docker::exec(
        docker,
        &at.container,
        &[
            proxy::BINARY,
            "__proxy-canary",
            upstream,
            "--addr",
            &addr,
            "--share",
            &share,
            "--state",
            &at.state,
        ],
    ))?;
    if code != 0 {
        bail!(
            "the proxy did not take the canary share {percent}% for {upstream}: {}",
            out.trim()
        );
    }
    Ok(())
}

/// What the proxy counted per upstream over the last `seconds`.
pub(super) async fn counts(docker: &Docker, proxy: &str, seconds: u64) -> Result<proxy::Window> {
    let secs = seconds.to_string();
    let (code, out) = ops::docker::exec(
        docker,
        proxy,
        &[proxy::BINARY, "__proxy-counts", "--seconds", &secs],
    )
    .await?;
    if code != 0 {
        bail!("the proxy did not say what it counted: {}", out.trim());
    }
    let json = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    serde_json::from_str(json)
        .with_context(|| format!("the proxy's counts are not what pymdeploy reads: {}", out.trim()))
}

/// Where the proxy connects to `upstream`: the container's address on the network (no
/// DNS lookup; see `route`), else its name.
fn address_of(ctx: &Ctx, docker: &Docker, network: &str, upstream: &str) -> String {
    let ip = ctx
        .wait(ops::docker::ip_on(
            docker,
            upstream_container(upstream),
            network,
        ))
        .ok()
        .flatten();
    let port = upstream.rsplit_once(':').map_or("", |(_, p)| p);
    ip.map(|ip| format!("{ip}:{port}"))
        .unwrap_or_else(|| upstream.to_string())
}

/// Waits until the proxy has no request in flight to `upstream`, for at most
/// `drain_seconds`; returns how many were left.
pub(super) async fn drain(
    docker: &Docker,
    proxy: &str,
    upstream: &str,
    drain_seconds: u64,
) -> Result<usize> {
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

pub(super) fn current_route(ctx: &Ctx, docker: &Docker, config: &Config) -> Result<Option<String>> {
    Ok(route_history(ctx, docker, config)?.into_iter().next())
}

/// The upstreams in the order they were live, the current one first (kept in the proxy
/// container, so any machine deploying to this engine sees the same).
pub(super) fn route_history(ctx: &Ctx, docker: &Docker, config: &Config) -> Result<Vec<String>> {
    ctx.wait(live_routes(docker, config))
}

pub(super) fn routes_in(
    ctx: &Ctx,
    docker: &Docker,
    config: &Config,
    state_file: &str,
) -> Result<Vec<String>> {
    ctx.wait(routes(docker, &proxy_name(config), state_file))
}

/// The live routes of `config`'s front (its proxy, or its site on the edge).
pub(super) async fn live_routes(docker: &Docker, config: &Config) -> Result<Vec<String>> {
    let at = front(config, PymEnv::Live);
    routes(docker, &at.container, &at.state).await
}

pub(super) async fn routes(docker: &Docker, proxy: &str, state_file: &str) -> Result<Vec<String>> {
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

/// On the edge's container: which edge it is (pymdeploy's version, the proxy's revision,
/// its address and ports), so an older pymdeploy's is replaced.
pub(super) const LABEL_EDGE: &str = "org.pymacaron.edge";

/// Makes sure the engine's edge (for `edge_http_port`) runs, current, on the service's
/// network, and holds the site of `env` as the config says it (hosts, path, TLS). True
/// when the site is new (no route of it yet).
pub(super) fn ensure_edge(
    ctx: &Ctx,
    docker: &Docker,
    config: &Config,
    env: PymEnv,
    progress: &StepProgress<'_>,
) -> Result<bool> {
    let name = edge_name(config);
    let made_as = made_as(
        config,
        &format!("{}/{}", config.edge_http_port, config.edge_https_port),
    );
    match ctx.wait(ops::docker::container_state(docker, &name))? {
        Some((labels, code)) if labels.get(LABEL_EDGE) == Some(&made_as) => {
            if code.is_some() {
                ctx.wait(ops::docker::start(docker, &name))?;
            }
        }
        found => {
            if found.is_some() {
                // Its sites and certificates are in a named volume: the new one has them.
                ctx.out.warn(&format!("replacing the edge {name} (an older pymdeploy's, or on other ports): connections to its ports are refused for about a second"));
            }
            let image = proxy_image(ctx, docker, progress)?;
            if found.is_some() {
                ctx.wait(ops::docker::remove(docker, &name))?;
            }
            create_edge(ctx, docker, config, &image, &made_as)?;
        }
    }
    let at = front(config, env);
    ctx.wait(ops::docker::connect_network(docker, &name, &at.network))?;
    let key = at.site.clone().expect("the edge's front names its site");
    let fresh = ctx
        .wait(routes(docker, &at.container, &at.state))?
        .is_empty();
    set_site(ctx, docker, config, env, &key)?;
    Ok(fresh)
}

fn create_edge(ctx: &Ctx, docker: &Docker, config: &Config, image: &str, made_as: &str) -> Result<()> {
    let name = edge_name(config);
    let net = edge_network(config);
    ctx.wait(ops::docker::ensure_network(
        docker,
        &net,
        HashMap::from([(LABEL_EDGE.to_string(), made_as.to_string())]),
    ))?;
    let spec = RunSpec {
        name: &name,
        image,
        env: vec![],
        container_port: proxy::PORT,
        host_ip: &config.publish_ip,
        host_port: Some(config.edge_http_port.get()),
        labels: HashMap::from([(LABEL_EDGE.to_string(), made_as.to_string())]),
        network: Some(&net),
        restart: true,
        cmd: Some(vec![
            "--listen".into(),
            format!("0.0.0.0:{}", proxy::PORT),
            "--listen-tls".into(),
            format!("0.0.0.0:{}", ops::edge::TLS_PORT),
            "--sites".into(),
            ops::edge::SITES_DIR.into(),
            "--https-port".into(),
            config.edge_https_port.to_string(),
        ]),
        locked_down: true,
        state_dir: Some(proxy::STATE_DIR),
        more_ports: vec![(ops::edge::TLS_PORT, config.edge_https_port.get())],
        state_volume: Some(&name),
    };
    match ctx.wait(ops::docker::run(docker, spec)) {
        Ok(_) => Ok(()),
        // Another service's deploy made it meanwhile.
        Err(e) if format!("{e:#}").contains("already in use") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the site of `env` on the edge as the config says it: the conf through the
/// edge's stdin (a key never on a command line).
fn set_site(ctx: &Ctx, docker: &Docker, config: &Config, env: PymEnv, key: &str) -> Result<()> {
    let conf = site_conf(ctx, config, env)?;
    let json = serde_json::to_vec(&conf)?;
    let bytes = json.len().to_string();
    let (code, out) = ctx.wait(ops::docker::exec_with_input(
        docker,
        &edge_name(config),
        &[
            proxy::BINARY,
            "__edge-site",
            key,
            "--sites",
            ops::edge::SITES_DIR,
            "--bytes",
            &bytes,
        ],
        &json,
    ))?;
    if code != 0 {
        bail!("the edge did not take the site {key}: {}", out.trim());
    }
    Ok(())
}

/// The site of `env` as the edge reads it, TLS files read from the service's root.
pub(super) fn site_conf(ctx: &Ctx, config: &Config, env: PymEnv) -> Result<ops::edge::SiteConf> {
    let read = |key: &str, file: &str| -> Result<String> {
        let path = ctx.root.join(file);
        std::fs::read_to_string(&path).map_err(|e| {
            crate::error::hinted(
                format!("{}: `{key}` names {}, which cannot be read: {e}", config.at(key), path.display()),
                format!("fix `{key}` in pym-config.yaml, or put the file there"),
            )
        })
    };
    let tls = match &config.tls {
        None => ops::edge::SiteTls::Off,
        Some(Tls::Files { cert, key }) => ops::edge::SiteTls::Files {
            cert_pem: read("tls", cert)?,
            key_pem: read("tls", key)?,
        },
        Some(Tls::Acme(_)) => ops::edge::SiteTls::Acme {
            directory: config.acme_directory.clone(),
            email: config.acme_email.clone(),
            ca_pem: config.acme_ca.as_deref().map(|f| read("acme_ca", f)).transpose()?,
        },
    };
    Ok(ops::edge::SiteConf {
        hosts: config.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        path_prefix: config.path_prefix.clone(),
        tls,
        service: config.name.clone(),
        env: env.as_str().to_string(),
    })
}

/// Removes the site of `env` from the edge, and the edge from the service's network.
pub(super) fn remove_site(ctx: &Ctx, docker: &Docker, config: &Config, env: PymEnv) -> Result<()> {
    let at = front(config, env);
    let Some(key) = at.site else { return Ok(()) };
    if ctx.wait(existing_state(docker, &at.container))? != Some(None) {
        return Ok(());
    }
    let (code, out) = ctx.wait(ops::docker::exec(
        docker,
        &at.container,
        &[proxy::BINARY, "__edge-site", &key, "--sites", ops::edge::SITES_DIR, "--remove"],
    ))?;
    if code != 0 {
        bail!("the edge did not remove the site {key}: {}", out.trim());
    }
    ctx.wait(ops::docker::disconnect_network(docker, &at.container, &at.network))?;
    if env == PymEnv::Staging {
        // Staging's own network goes with its site (its container stays on the default
        // bridge, where its port is published).
        let staging = super::names::staging_name(config);
        ctx.wait(ops::docker::disconnect_network(docker, &staging, &at.network))?;
        ctx.wait(ops::docker::remove_network(docker, &at.network))?;
    }
    Ok(())
}

/// Puts the site of `env` in maintenance or out of it: its proxy answers 503, the version
/// keeps running.
pub(super) fn maintenance(ctx: &Ctx, docker: &Docker, config: &Config, env: PymEnv, on: bool) -> Result<()> {
    let at = front(config, env);
    let page = match (&config.maintenance_page, on) {
        (Some(f), true) => {
            let path = ctx.root.join(f);
            std::fs::read_to_string(&path).map_err(|e| {
                crate::error::hinted(
                    format!("{}: `maintenance_page` names {}, which cannot be read: {e}", config.at("maintenance_page"), path.display()),
                    "fix `maintenance_page` in pym-config.yaml, or put the page there",
                )
            })?
        }
        (None, true) => format!("{} is down for maintenance; please try again in a few minutes.\n", config.name),
        (_, false) => String::new(),
    };
    let bytes = page.len().to_string();
    let mut cmd = vec![proxy::BINARY, "__proxy-maintenance", "--state", &at.state, "--bytes", &bytes];
    if !on {
        cmd.push("--off");
    }
    let (code, out) = ctx.wait(ops::docker::exec_with_input(docker, &at.container, &cmd, page.as_bytes()))?;
    if code != 0 {
        bail!("{} did not take maintenance {}: {}", at.container, if on { "on" } else { "off" }, out.trim());
    }
    Ok(())
}

/// The edge's sites and certificates, as it says them.
pub(super) async fn edge_status(docker: &Docker, edge: &str) -> Result<proxy::EdgeStatus> {
    let (code, out) = ops::docker::exec(docker, edge, &[proxy::BINARY, "__edge-status"]).await?;
    if code != 0 {
        bail!("the edge did not say its state: {}", out.trim());
    }
    let json = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    serde_json::from_str(json).with_context(|| format!("the edge's state is not what pymdeploy reads: {}", out.trim()))
}

//! What the docker target reads off the engine before it decides: the live containers,
//! the proxy's routes, the deploy record, and what staging runs.

use std::time::Duration;

use anyhow::Result;
use bollard::Docker;
use bollard::models::ContainerSummary;

use super::LABEL_VERSION;
use super::decide::{LiveVersion, Made, Seen};
use super::names::{live_name, staging_name};
use super::{act::verify_version, check_host, proxy, record};
use crate::config::Config;
use crate::ctx::Ctx;
use crate::ops::{
    self,
    service::{LABEL_ENV, LABEL_NAME, LABEL_SERVICE_ID},
};
use crate::targets::Staged;

/// The engine's state for `config`'s service; with `promoting`, whether live already
/// serves that version (asked only when its container runs: otherwise it cannot be what
/// live serves, and asking would wait out the check's window on every promote).
pub(super) fn observe(ctx: &Ctx, config: &Config, promoting: Option<&str>) -> Result<Seen> {
    let docker = ctx.docker()?;
    let mut seen = ctx.wait(engine(docker, config))?;
    if let Some(version) = promoting
        && seen
            .live
            .iter()
            .any(|v| v.running && v.name == live_name(config, version))
        {
            let host = check_host(ctx, config)?;
            seen.serves = ctx.wait(async {
                Ok(verify_version(
                    config,
                    &host,
                    super::act::live_reach(config),
                    (version, None),
                    Duration::from_secs(2),
                )
                .await
                .is_ok())
            })?;
        }
    Ok(seen)
}

/// The live containers, the routes and the record (not whether live serves).
pub(super) async fn engine(docker: &Docker, config: &Config) -> Result<Seen> {
    let live = live_versions(&live_of(docker, &config.name).await?);
    let routes = proxy::live_routes(docker, config).await?;
    let history = record::read(docker, &config.name).await?;
    Ok(Seen {
        live,
        routes,
        serves: false,
        history,
    })
}

/// What staging runs: the staging container's version and the image it was started
/// from (a digest reference, or the engine's image ID without a registry).
pub(super) fn staged(ctx: &Ctx, config: &Config) -> Result<Option<Staged>> {
    let Some(c) = ctx.wait(ops::docker::inspect(ctx.docker()?, &staging_name(config)))? else {
        return Ok(None);
    };
    let Some(version) = c.labels.get(LABEL_VERSION).cloned() else {
        return Ok(None);
    };
    if !c.running {
        return Ok(None);
    }
    let digest = c
        .image
        .rsplit_once('@')
        .map_or(c.image.clone(), |(_, d)| d.to_string());
    Ok(Some(Staged {
        version,
        image: c.image,
        digest,
    }))
}

/// What `destroy` may remove: the service's containers (this repository's, when it has
/// a `service_id`), its deploy record's left out.
pub(super) async fn made(docker: &Docker, config: &Config) -> Result<Vec<Made>> {
    let list = ops::docker::list(docker, &[format!("{LABEL_NAME}={}", config.name)]).await?;
    Ok(list
        .iter()
        .filter(|c| label(c, LABEL_ENV) != record::RECORD_ENV)
        .filter(|c| {
            config
                .service_id
                .as_deref()
                .is_none_or(|id| matches!(label(c, LABEL_SERVICE_ID), "") || label(c, LABEL_SERVICE_ID) == id)
        })
        .map(|c| Made {
            name: container_name(c),
            env: label(c, LABEL_ENV).to_string(),
            version: label(c, LABEL_VERSION).to_string(),
            running: is_running(c),
        })
        .collect())
}

pub(super) fn live_versions(list: &[ContainerSummary]) -> Vec<LiveVersion> {
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
pub(super) async fn live_of(docker: &Docker, service: &str) -> Result<Vec<ContainerSummary>> {
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

pub(super) fn container_name(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

pub(super) fn is_running(c: &ContainerSummary) -> bool {
    c.state.as_ref().is_some_and(|s| s.to_string() == "running")
}

pub(super) fn label<'a>(c: &'a ContainerSummary, key: &str) -> &'a str {
    c.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
        .unwrap_or("")
}

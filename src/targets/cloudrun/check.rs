//! What can be known to fail before any call: the config as Cloud Run would take it,
//! and where the service is (project, region, endpoint).

use anyhow::Result;

use super::names::{bad_service_id, service_id};
use crate::config::Config;
use crate::error::hinted;

/// Project, region and endpoint: the first two from the config (where the service goes is
/// versioned with it: `Configs::load` refuses a config without them), the endpoint from
/// gcloud's override variable.
pub(super) struct Place {
    pub(super) project: String,
    pub(super) region: String,
    pub(super) endpoint: Option<String>,
}

pub(super) fn place(c: &Config) -> Result<Place> {
    let key = |value: &Option<String>, key: &str| {
        value.clone().filter(|v| !v.is_empty()).ok_or_else(|| {
            hinted(
                format!("{}: the gcp-cloud-run target needs `{key}`", c.at(key)),
                format!("set `{key}` in pym-config.yaml"),
            )
        })
    };
    let endpoint = std::env::var("CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN")
        .ok()
        .filter(|e| !e.is_empty())
        .map(|e| e.trim_end_matches('/').to_string());
    Ok(Place {
        project: key(&c.gcp_project, "gcp_project")?,
        region: key(&c.gcp_region, "gcp_region")?,
        endpoint,
    })
}

/// What the config asks of Cloud Run, checked as Cloud Run would check it.
pub(super) fn check_config(c: &Config) -> Result<()> {
    let id = service_id(c);
    if let Some(why) = bad_service_id(&id) {
        let key = if c.gcp_service.is_some() {
            "gcp_service"
        } else {
            "name"
        };
        return Err(hinted(
            format!(
                "{}: the Cloud Run service name {id:?} (`{key}`) would be refused: {why}",
                c.at(key)
            ),
            "set `gcp_service` to a shorter name of lowercase letters, digits and dashes",
        ));
    }
    let memory_ok = |m: &str| {
        let digits = m.trim_end_matches(|ch: char| ch.is_ascii_alphabetic());
        let unit = &m[digits.len()..];
        digits.parse::<u64>().is_ok_and(|n| n > 0) && ["Mi", "Gi", "M", "G"].contains(&unit)
    };
    if let Some(m) = c.gcp_memory.as_deref().filter(|m| !memory_ok(m)) {
        return Err(hinted(
            format!("{}: `gcp_memory: {m}` is not a memory size Cloud Run takes", c.at("gcp_memory")),
            "write it as Cloud Run does: `512Mi`, `1Gi`, `2Gi`",
        ));
    }
    let cpu_ok = |x: &str| {
        x.parse::<f64>().is_ok_and(|n| n > 0.0)
            || x.strip_suffix('m')
                .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0))
    };
    if let Some(x) = c.gcp_cpu.as_deref().filter(|x| !cpu_ok(x)) {
        return Err(hinted(
            format!("{}: `gcp_cpu: {x}` is not a CPU count Cloud Run takes", c.at("gcp_cpu")),
            "write it as Cloud Run does: `1`, `2`, `4`, or `500m`",
        ));
    }
    if let Some(n) = c
        .gcp_request_concurrency
        .filter(|n| !(1..=1000).contains(&n.get()))
    {
        return Err(hinted(
            format!("{}: `gcp_request_concurrency: {n}` is outside Cloud Run's 1 to 1000", c.at("gcp_request_concurrency")),
            "set it between 1 and 1000 (80 is Cloud Run's default)",
        ));
    }
    if let (Some(min), Some(max)) = (c.gcp_min_instances, c.gcp_max_instances)
        && min > max.get()
    {
        return Err(hinted(
            format!(
                "{}: `gcp_min_instances` ({min}) is above `gcp_max_instances` ({max})",
                c.at("gcp_min_instances")
            ),
            "make gcp_min_instances at most gcp_max_instances",
        ));
    }
    if let Some(t) = c.gcp_request_timeout.filter(|t| !(1..=3600).contains(&t.get())) {
        return Err(hinted(
            format!("{}: `gcp_request_timeout: {t}` is outside Cloud Run's 1 to 3600 seconds", c.at("gcp_request_timeout")),
            "set it between 1 and 3600",
        ));
    }
    Ok(())
}

//! A canary's figures on Kubernetes: its pods' readiness and restarts, read from the
//! apiserver (any pod not ready, or restarted since the judging began, is a breach),
//! and where `rollout.prometheus_url` is set, its requests, 5xx answers and latency p95
//! from Prometheus' HTTP API (`/api/v1/query`, PromQL from `rollout.prometheus_*` or
//! the defaults for the conventional `http_requests_total` and
//! `http_request_duration_seconds`). Without Prometheus no request is counted: health
//! alone judges (`Figures::uncounted`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::api::ListParams;

use super::DEPLOYMENT;
use super::kube::Kube;
use crate::config::{Config, DEFAULT_ERRORS, DEFAULT_P95_MS, DEFAULT_REQUESTS};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::targets::rollout::{self, Figures};

pub(super) struct Signals<'a> {
    pub kube: &'a Kube,
    pub config: &'a Config,
    pub version: String,
    /// The canary's Deployment.
    pub deployment: String,
    /// Each pod's restarts when the judging began.
    pub restarts: Option<BTreeMap<String, i32>>,
}

/// Where the figures come from, as plans and events say it.
pub(super) fn source(c: &Config) -> String {
    match &c.rollout.prometheus_url {
        Some(url) => format!("the canary pods' readiness and restarts, and Prometheus at {url}"),
        None => "the canary pods' readiness and restarts (no request figures: `rollout.prometheus_url` adds them)".into(),
    }
}

impl rollout::Signals for Signals<'_> {
    fn source(&self) -> String {
        source(self.config)
    }

    fn figures(&mut self, ctx: &Ctx, seconds: u64) -> Result<Figures> {
        let pods = ctx.wait(async {
            let list = self
                .kube
                .pods()
                .list(&ListParams::default().labels(&format!("{DEPLOYMENT}={}", self.deployment)))
                .await
                .map_err(self.kube.err("list", "pods", &self.deployment))?;
            Ok(list.items)
        })?;
        let mut unhealthy = Vec::new();
        let mut now = BTreeMap::new();
        for p in &pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            let status = p.status.clone().unwrap_or_default();
            let restarts: i32 = status
                .container_statuses
                .iter()
                .flatten()
                .map(|c| c.restart_count)
                .sum();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let waiting = status
                .container_statuses
                .iter()
                .flatten()
                .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
            if !ready {
                unhealthy.push(format!(
                    "pod {name} is not ready{}",
                    waiting.map(|w| format!(" ({w})")).unwrap_or_default()
                ));
            }
            now.insert(name, restarts);
        }
        let before = self.restarts.get_or_insert_with(|| now.clone());
        for (name, n) in &now {
            let was = before.get(name).copied().unwrap_or(0);
            if *n > was {
                unhealthy.push(format!("pod {name} restarted {} time(s)", n - was));
            }
        }
        let mut f = Figures {
            seconds: seconds as f64,
            unhealthy: (!unhealthy.is_empty()).then(|| unhealthy.join("; ")),
            uncounted: true,
            ..Figures::default()
        };
        if let Some(url) = &self.config.rollout.prometheus_url {
            let r = &self.config.rollout;
            let fill = |q: &str| {
                q.replace("{namespace}", &self.kube.names.ns)
                    .replace("{deployment}", &self.deployment)
                    .replace("{version}", &self.version)
                    .replace("{app}", &self.kube.names.app)
                    .replace("{window}", &seconds.max(1).to_string())
            };
            let ask = |q: &str| ctx.wait(query(url, &fill(q)));
            f.requests = ask(r.prometheus_requests.as_deref().unwrap_or(DEFAULT_REQUESTS))?
                .map_or(0, |v| v.round().max(0.0) as u64);
            f.errors = ask(r.prometheus_errors.as_deref().unwrap_or(DEFAULT_ERRORS))?
                .map_or(0, |v| v.round().max(0.0) as u64);
            f.p95_ms = ask(r.prometheus_p95_ms.as_deref().unwrap_or(DEFAULT_P95_MS))?
                .filter(|v| v.is_finite());
            f.uncounted = false;
        }
        Ok(f)
    }
}

/// One instant PromQL query: the first sample's value (`None`: an empty vector, or NaN).
async fn query(url: &str, promql: &str) -> Result<Option<f64>> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| hinted(format!("`rollout.prometheus_url` is {url}"), "give Prometheus' address as http://HOST:PORT"))?;
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().with_context(|| format!("no port in {url}"))?),
        None => (authority, 80),
    };
    let prefix = match prefix.trim_end_matches('/') {
        "" => String::new(),
        p => format!("/{p}"),
    };
    let path = format!("{prefix}/api/v1/query?query={}", crate::ops::http::query_value(promql));
    let (status, body) = crate::ops::http::get(host, port, &path, Duration::from_secs(5))
        .await
        .with_context(|| format!("Prometheus at {url} did not answer"))?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("Prometheus at {url} answered {status} with no JSON"))?;
    if v["status"] != "success" {
        bail!(
            "Prometheus at {url} refused `{promql}`: {}",
            v["error"].as_str().unwrap_or(&body)
        );
    }
    Ok(v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|x| !x.is_nan()))
}


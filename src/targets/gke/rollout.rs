//! The wait for a rollout, as `kubectl rollout status` waits, and what a stuck one shows.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Pod};
use kube::api::{Api, ListParams, LogParams};
use serde_json::Value;

use super::kube::Kube;
use super::{CONTAINER, DEPLOYMENT};
use crate::config::Config;
use crate::error::hinted;
use crate::output::StepProgress;

impl Kube {
    /// Waits as `kubectl rollout status` does: the spec observed, every replica updated,
    /// no old one left, every updated one available; `ProgressDeadlineExceeded` fails,
    /// with the pods' events and last log lines.
    pub(super) async fn rollout(
        &self,
        c: &Config,
        name: &str,
        progress: &StepProgress<'_>,
    ) -> Result<()> {
        let api = self.deployments();
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(u64::from(c.k8s_timeout.get()) + 60);
        let mut last = String::new();
        loop {
            let d = api
                .get(name)
                .await
                .map_err(self.err("get", "deployments", name))?;
            let v = serde_json::to_value(&d)?;
            let i = |p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            let (generation, observed) =
                (i("/metadata/generation"), i("/status/observedGeneration"));
            let want = v
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let (updated, total, available) = (
                i("/status/updatedReplicas"),
                i("/status/replicas"),
                i("/status/availableReplicas"),
            );
            let stuck = v["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
            let now = if generation > observed {
                "waiting for the deployment spec update to be observed".to_string()
            } else if let Some(s) = stuck {
                let msg = s["message"].as_str().unwrap_or_default().to_string();
                return Err(self
                    .stuck(
                        name,
                        &format!("deployment {name} exceeded its progress deadline: {msg}"),
                        progress,
                    )
                    .await);
            } else if updated < want {
                format!("{updated} of {want} new replicas updated")
            } else if total > updated {
                format!("{} old replicas pending termination", total - updated)
            } else if available < updated {
                format!("{available} of {updated} updated replicas available")
            } else {
                progress.line(&format!(
                    "{name} rolled out: {available} of {want} replicas available"
                ));
                return Ok(());
            };
            if now != last {
                progress.line(&format!("{name}: {now}"));
                last = now;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self
                    .stuck(
                        name,
                        &format!(
                            "deployment {name} did not roll out within {}s: {last}",
                            c.k8s_timeout.get() + 60
                        ),
                        progress,
                    )
                    .await);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The error of a rollout that failed, after showing its pods' events and last log
    /// lines (as `kubectl describe pod` and `kubectl logs --tail` would).
    async fn stuck(&self, name: &str, why: &str, progress: &StepProgress<'_>) -> anyhow::Error {
        let pods = self
            .pods()
            .list(&ListParams::default().labels(&format!("{DEPLOYMENT}={name}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let events: Api<KubeEvent> = Api::namespaced(self.client.clone(), &self.names.ns);
        let mut shown = 0;
        // The pods of the newest ReplicaSet (the youngest) are the ones that fail.
        let mut pods: Vec<&Pod> = pods.iter().collect();
        pods.sort_by(|a, b| {
            b.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .cmp(
                    &a.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string()),
                )
        });
        for pod in pods.into_iter().take(2) {
            let p = pod.metadata.name.clone().unwrap_or_default();
            if let Ok(list) = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={p}")))
                .await
            {
                progress.line(&format!("events of pod {p}:"));
                for e in list.items.iter().rev().take(10).rev() {
                    progress.line(&format!(
                        "  {} {}: {}",
                        e.type_.as_deref().unwrap_or(""),
                        e.reason.as_deref().unwrap_or(""),
                        e.message.as_deref().unwrap_or("").trim()
                    ));
                }
            }
            let lp = LogParams {
                container: Some(CONTAINER.into()),
                tail_lines: Some(20),
                ..Default::default()
            };
            match self.pods().logs(&p, &lp).await {
                Ok(text) if !text.trim().is_empty() => {
                    progress.line(&format!("last log lines of pod {p}:"));
                    for l in text.lines() {
                        progress.line(&format!("  {l}"));
                    }
                }
                _ => progress.line(&format!("pod {p} wrote no log")),
            }
            shown += 1;
        }
        let how = format!(
            "`kubectl --context {} -n {} describe deployment {name}` and `kubectl logs` tell more",
            self.context, self.names.ns
        );
        match shown {
            0 => hinted(why.to_string(), format!("no pod of it exists: {how}")),
            _ => hinted(
                why.to_string(),
                format!("its pods' events and logs are above; {how}"),
            ),
        }
    }
}

//! The deploy record: the ConfigMap `<app>-deploy-record` in the live namespace.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::kube::{Kube, conflict, not_found, typed};
use super::observe::svc_of;
use super::{MANAGED_BY, NAME, RECORD_KEY};
use crate::config::PymEnv;
use crate::targets::history::{Event, History};

impl Kube {
    fn records(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.names.ns)
    }

    /// The deploy record's ConfigMap: its history and the resourceVersion it was read at;
    /// `None` when there is none (nor its namespace).
    pub(super) async fn read_record(&self) -> Result<Option<(History, String)>> {
        let n = self.names.record();
        let cm = match self.records().get_opt(&n).await {
            Err(e) if not_found(&e) => None,
            r => r.map_err(self.err("get", "configmaps", &n))?,
        };
        Ok(cm.map(|cm| {
            let text = cm
                .data
                .as_ref()
                .and_then(|d| d.get(RECORD_KEY))
                .cloned()
                .unwrap_or_default();
            (
                History::parse(&text),
                cm.metadata.resource_version.unwrap_or_default(),
            )
        }))
    }

    /// The deploy record: its ConfigMap, else what the live Service's old annotations say.
    pub(super) async fn history(&self) -> Result<History> {
        if let Some((h, _)) = self.read_record().await? {
            return Ok(h);
        }
        let n = self.names.service(PymEnv::Live);
        let svc = match self.services().get_opt(&n).await {
            Err(e) if not_found(&e) => None,
            r => r.map_err(self.err("get", "services", &n))?,
        };
        Ok(svc
            .as_ref()
            .map(|s| svc_of(s).legacy_history())
            .unwrap_or_default())
    }

    /// Adds `entries` to the deploy record, written with the resourceVersion it was read
    /// at and read again on a Conflict. The first write makes the ConfigMap (and the
    /// namespace, when staging acceptance records before anything was live), starting
    /// from what the live Service's old annotations say.
    pub(super) async fn record(&self, entries: &[(Event, String, Option<String>)]) -> Result<()> {
        let n = self.names.record();
        let now = crate::ops::state::now();
        for attempt in 1..=5u64 {
            let (mut history, rv) = match self.read_record().await? {
                Some((h, rv)) => (h, Some(rv)),
                None => (self.history().await?, None),
            };
            for (event, version, digest) in entries {
                history.push(*event, version, digest.as_deref(), now);
            }
            let mut cm = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": n, "namespace": self.names.ns, "labels": {NAME: self.names.app, MANAGED_BY: "pymdeploy"}},
                "data": {RECORD_KEY: history.render()},
            });
            let r = match &rv {
                Some(rv) => {
                    cm["metadata"]["resourceVersion"] = json!(rv);
                    self.records()
                        .replace(&n, &PostParams::default(), &typed(cm)?)
                        .await
                }
                None => {
                    self.ensure_namespace().await?;
                    self.records()
                        .create(&PostParams::default(), &typed(cm)?)
                        .await
                }
            };
            match r {
                Ok(_) => return Ok(()),
                // Written meanwhile by another run: read again.
                Err(e) if conflict(&e) && attempt < 5 => {
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await
                }
                Err(e) => {
                    let verb = if rv.is_some() { "update" } else { "create" };
                    return Err(self.err(verb, "configmaps", &n)(e));
                }
            }
        }
        unreachable!()
    }
}

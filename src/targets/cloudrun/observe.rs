//! What is read from Cloud Run, as the decisions see it: the service (`Svc`), its
//! revisions (`Rev`), and together with the deploy record, `Seen`.

use std::collections::HashMap;

use anyhow::Result;
use google_cloud_run_v2::model::condition::State;
use google_cloud_run_v2::model::{self, Revision, Service, TrafficTargetAllocationType};

use super::gcp::{Gcp, gcp_error, is_not_found};
use super::record::record_of;
use super::{LABEL_ENV, LABEL_VERSION, TAG_STAGING};
use crate::targets::Staged;
use crate::targets::history::History;

/// One traffic entry, always pinned to a named revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub revision: String,
    pub percent: i32,
    pub tag: Option<String>,
}

/// Whether a revision can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    Yes,
    Pending,
    Failed(String),
}

/// A revision as the decisions see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rev {
    pub name: String,
    pub version: Option<String>,
    pub env: Option<String>,
    pub image: String,
    pub ready: Ready,
    /// Seconds since the epoch.
    pub created: i64,
}

impl Rev {
    /// The version the deploy record knows it by: its `pym-version`, else (a revision
    /// pymdeploy did not make) its name.
    pub fn key(&self) -> &str {
        self.version
            .as_deref()
            .filter(|v| !v.is_empty())
            .unwrap_or(&self.name)
    }

    pub(super) fn is_staging(&self) -> bool {
        self.env.as_deref() == Some("staging")
    }
}

/// The service as the decisions see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Svc {
    pub etag: String,
    /// Resolved to named revisions: a LATEST entry reads as the revision it serves now.
    pub traffic: Vec<Route>,
    pub annotations: HashMap<String, String>,
    pub reconciling: bool,
    /// The revision Cloud Run made last (its template's): never deleted.
    pub latest_created: String,
}

impl Svc {
    /// The revision with the most traffic.
    pub fn live(&self) -> Option<&Route> {
        self.traffic
            .iter()
            .filter(|r| r.percent > 0)
            .max_by_key(|r| r.percent)
    }

    pub(super) fn tagged(&self, tag: &str) -> Option<&Route> {
        self.traffic.iter().find(|r| r.tag.as_deref() == Some(tag))
    }
}

/// Everything a decision reads.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub service: Option<Svc>,
    /// Newest first.
    pub revisions: Vec<Rev>,
    /// The deploy record (`record_of`).
    pub history: History,
}

impl Seen {
    pub(super) fn revision(&self, name: &str) -> Option<&Rev> {
        self.revisions.iter().find(|r| r.name == name)
    }

    /// The revision with the most traffic.
    pub(super) fn current(&self) -> Option<&Rev> {
        self.service
            .as_ref()?
            .live()
            .and_then(|l| self.revision(&l.revision))
    }

    /// The revision a rollback to `version` makes live: its newest ready revision made
    /// for live (or by other means than pymdeploy).
    pub(super) fn live_revision(&self, version: &str) -> Option<&Rev> {
        self.revisions
            .iter()
            .find(|r| r.key() == version && !r.is_staging() && r.ready == Ready::Yes)
    }

    /// The versions that have such a revision, newest first.
    pub(super) fn available(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.revisions {
            if !r.is_staging() && r.ready == Ready::Yes && !out.iter().any(|v| v == r.key()) {
                out.push(r.key().to_string());
            }
        }
        out
    }

    /// What staging runs: the ready revision the `staging` tag points to, its version and
    /// image by digest.
    pub fn staged(&self) -> Option<Staged> {
        let r = self
            .service
            .as_ref()?
            .tagged(TAG_STAGING)
            .and_then(|t| self.revision(&t.revision))?;
        if r.ready != Ready::Yes {
            return None;
        }
        let version = r.version.clone().filter(|v| !v.is_empty())?;
        let (_, digest) = r.image.rsplit_once('@')?;
        Some(Staged {
            version,
            image: r.image.clone(),
            digest: digest.to_string(),
        })
    }
}

fn unix(t: Option<&google_cloud_wkt::Timestamp>) -> i64 {
    t.map(|t| t.seconds()).unwrap_or(0)
}

pub(super) fn ready_of(conditions: &[model::Condition]) -> Ready {
    match conditions.iter().find(|c| c.r#type == "Ready") {
        Some(c) if c.state == State::ConditionSucceeded => Ready::Yes,
        Some(c) if c.state == State::ConditionFailed => Ready::Failed(condition_text(c)),
        _ => Ready::Pending,
    }
}

/// A condition as Cloud Run says it: its message and its reason.
pub(super) fn condition_text(c: &model::Condition) -> String {
    let reason = match &c.reasons {
        Some(model::condition::Reasons::Reason(r)) => r.name().map(String::from),
        Some(model::condition::Reasons::RevisionReason(r)) => r.name().map(String::from),
        Some(model::condition::Reasons::ExecutionReason(r)) => r.name().map(String::from),
        _ => None,
    };
    match reason {
        Some(r)
            if !r.is_empty()
                && r != "REVISION_REASON_UNDEFINED"
                && r != "COMMON_REASON_UNDEFINED" =>
        {
            format!("{} (reason {r})", c.message)
        }
        _ => c.message.clone(),
    }
}

fn rev_of(r: &Revision) -> Rev {
    Rev {
        name: r.name.rsplit('/').next().unwrap_or_default().to_string(),
        version: r.labels.get(LABEL_VERSION).cloned(),
        env: r.labels.get(LABEL_ENV).cloned(),
        image: r
            .containers
            .first()
            .map(|c| c.image.clone())
            .unwrap_or_default(),
        ready: ready_of(&r.conditions),
        created: unix(r.create_time.as_ref()),
    }
}

pub(super) fn svc_of(s: &Service) -> Svc {
    let traffic = s
        .traffic
        .iter()
        .map(|t| {
            // LATEST reads as what it serves now: the next update pins it.
            let revision = match t.r#type {
                TrafficTargetAllocationType::Latest => s
                    .traffic_statuses
                    .iter()
                    .find(|st| st.tag == t.tag && st.percent == t.percent)
                    .map(|st| st.revision.clone())
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| {
                        s.latest_ready_revision
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_string()
                    }),
                _ => t
                    .revision
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            };
            Route {
                revision,
                percent: t.percent,
                tag: Some(t.tag.clone()).filter(|t| !t.is_empty()),
            }
        })
        .filter(|r| !r.revision.is_empty())
        .collect();
    let latest_created = s
        .latest_created_revision
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    Svc {
        etag: s.etag.clone(),
        traffic,
        annotations: s.annotations.clone(),
        reconciling: s.reconciling,
        latest_created,
    }
}

impl Gcp {
    pub(super) async fn service(&self) -> Result<Option<Service>> {
        match self
            .services
            .get_service()
            .set_name(self.name())
            .send()
            .await
        {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(gcp_error("services.get", &self.name(), e)),
        }
    }

    async fn list_revisions(&self) -> Result<Vec<Revision>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = match self
                .revisions
                .list_revisions()
                .set_parent(self.name())
                .set_page_token(token.clone())
                .send()
                .await
            {
                Ok(p) => p,
                Err(e) if is_not_found(&e) => return Ok(out),
                Err(e) => return Err(gcp_error("revisions.list", &self.name(), e)),
            };
            out.extend(page.revisions);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        out.sort_by_key(|r| std::cmp::Reverse(unix(r.create_time.as_ref())));
        Ok(out)
    }

    pub(super) async fn observe(&self) -> Result<(Option<Service>, Seen)> {
        let service = self.service().await?;
        let revisions = match &service {
            Some(_) => self.list_revisions().await?.iter().map(rev_of).collect(),
            None => Vec::new(),
        };
        let history = service
            .as_ref()
            .map(|s| record_of(&s.annotations, &revisions))
            .unwrap_or_default();
        let seen = Seen {
            service: service.as_ref().map(svc_of),
            revisions,
            history,
        };
        Ok((service, seen))
    }
}

#[cfg(test)]
mod tests {
    use google_cloud_run_v2::model::TrafficTarget;

    use super::*;
    use crate::targets::cloudrun::gcp::targets_of;

    fn route(revision: &str, percent: i32, tag: Option<&str>) -> Route {
        Route {
            revision: revision.into(),
            percent,
            tag: tag.map(String::from),
        }
    }

    #[test]
    fn a_latest_entry_reads_as_the_revision_it_serves() {
        let s = Service::new()
            .set_traffic([TrafficTarget::new()
                .set_type(TrafficTargetAllocationType::Latest)
                .set_percent(100)])
            .set_traffic_statuses([model::TrafficTargetStatus::new()
                .set_type(TrafficTargetAllocationType::Latest)
                .set_revision("hello-00002-xyz")
                .set_percent(100)])
            .set_latest_ready_revision(
                "projects/p/locations/l/services/hello/revisions/hello-00002-xyz",
            )
            .set_latest_created_revision(
                "projects/p/locations/l/services/hello/revisions/hello-00003-bad",
            );
        let svc = svc_of(&s);
        assert_eq!(svc.traffic, vec![route("hello-00002-xyz", 100, None)]);
        assert_eq!(svc.latest_created, "hello-00003-bad");
        // Pinned by the next update: a named revision, never LATEST.
        let t = targets_of(&svc.traffic);
        assert_eq!(
            (t[0].r#type.clone(), t[0].revision.as_str()),
            (TrafficTargetAllocationType::Revision, "hello-00002-xyz")
        );
    }
}

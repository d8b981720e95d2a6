//! The gcp-cloud-run target: one Cloud Run service, a revision per version and environment,
//! traffic always pinned to named revisions; driven by Google's official client,
//! `google-cloud-run-v2` (feature `gcp-cloud-run`).
//!
//! - `stage` adds the revision `<service>-<version>-s<n>` (creating the service the first
//!   time) running the pushed image **by digest** with `PYM_ENV=staging`, tagged `staging`,
//!   with no traffic change: every traffic entry names a revision, never LATEST, so a staged
//!   revision can never take live traffic (on the first stage Cloud Run routes the new
//!   service to it: it has nothing else).
//! - `promote` adds `<service>-<version>-l<n>`: the staged revision's image (the same
//!   digest) with `PYM_ENV=live`, tagged `next`, checks it serves the version on its own tag
//!   URL, then moves 100% of the traffic to it in one update, and checks the service URL.
//!   The revision live before keeps running at 0%, ready for `rollback`.
//! - What was live when is recorded on the service (annotation `pymdeploy.dev/live-history`,
//!   and `pymdeploy.dev/rolled-back`), so any machine can roll back and clean up.
//!
//! Every update carries the etag of the service it was decided from: a service changed by
//! someone else meanwhile is refused by Cloud Run (ABORTED), never overwritten. Calls that
//! answer 429 or 503 are retried with backoff (a retried update cannot apply twice: its
//! etag is stale the second time). Credentials are Application Default Credentials; the
//! endpoint is gcloud's `CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN` when set.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::{RetryPolicy, RetryPolicyExt};
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;
use google_cloud_lro::{Poller, PollingResult};
use google_cloud_run_v2::client::{Revisions, Services};
use google_cloud_run_v2::model::condition::State;
use google_cloud_run_v2::model::{
    self, Revision, RevisionTemplate, Service, TrafficTarget, TrafficTargetAllocationType,
};

use super::{Address, Cleanup, Fate, Table, url_host};
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::output::StepProgress;

/// The tag of the staged revision, and of the live candidate while promote checks it.
pub const TAG_STAGING: &str = "staging";
pub const TAG_NEXT: &str = "next";
/// Service annotations: the revisions live, oldest first; those rolled back from.
const LIVE_HISTORY: &str = "pymdeploy.dev/live-history";
const ROLLED_BACK: &str = "pymdeploy.dev/rolled-back";
/// Revision labels: the version and environment a revision runs.
const LABEL_VERSION: &str = "pym-version";
const LABEL_ENV: &str = "pym-env";
/// Cloud Run: a tag and its service name make one DNS label of the tag URL.
const TAG_AND_SERVICE_MAX: usize = 46;
const REVISION_MAX: usize = 63;
const HISTORY_MAX: usize = 30;

/// The gcp-cloud-run target, behind `super::Target`.
pub struct CloudRunTarget;

// ---------------------------------------------------------------------------------------
// Names and what can be known before any call.

/// The Cloud Run service: `gcp_service`, else `name`.
pub fn service_id(c: &Config) -> String {
    c.gcp_service.clone().unwrap_or_else(|| c.name.clone())
}

/// Why Cloud Run would refuse this service name, if it would.
fn bad_service_id(id: &str) -> Option<String> {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if id.is_empty() || id.len() > 49 {
        return Some(format!(
            "it has {} characters (Cloud Run takes 1 to 49)",
            id.len()
        ));
    }
    if !ok_chars || !id.starts_with(|c: char| c.is_ascii_lowercase()) || id.ends_with('-') {
        return Some("Cloud Run takes lowercase letters, digits and dashes, starting with a letter and not ending with a dash".into());
    }
    let longest_tag = TAG_STAGING.len().max(TAG_NEXT.len());
    if id.len() + longest_tag > TAG_AND_SERVICE_MAX {
        return Some(format!(
            "with the tag `{TAG_STAGING}` it has {} characters, and Cloud Run takes at most {TAG_AND_SERVICE_MAX} for a tag and its service together",
            id.len() + longest_tag
        ));
    }
    None
}

/// The stem of a version's revisions: `<service>-<version>`, the version shortened to
/// `<count>-<sha6>` where the whole would not fit Cloud Run's 63 characters.
fn revision_stem(id: &str, version: &str) -> String {
    let full = format!("{id}-{version}");
    if full.len() + 4 <= REVISION_MAX {
        return full;
    }
    let short: Vec<&str> = version.split('-').skip(2).collect();
    format!("{id}-{}", short.join("-"))
}

/// The first free revision name of a version in an environment: `<stem>-s1`, `-s2` for
/// staging, `-l1`... for live.
fn next_revision_name(id: &str, version: &str, env: PymEnv, taken: &[Rev]) -> String {
    let prefix = format!(
        "{}-{}",
        revision_stem(id, version),
        if env == PymEnv::Live { "l" } else { "s" }
    );
    (1..)
        .map(|n| format!("{prefix}{n}"))
        .find(|n| !taken.iter().any(|r| &r.name == n))
        .unwrap_or_default()
}

/// Project, region and endpoint, from the config or gcloud's environment variables.
struct Place {
    project: String,
    region: String,
    endpoint: Option<String>,
}

fn place(c: &Config) -> Result<Place> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let project = c
        .gcp_project
        .clone()
        .or_else(|| env("GOOGLE_CLOUD_PROJECT"))
        .or_else(|| env("CLOUDSDK_CORE_PROJECT"))
        .or_else(adc_project);
    let project = project.ok_or_else(|| {
        hinted(
            "no Google Cloud project is set",
            "set `gcp_project` in pym-config.yaml (or GOOGLE_CLOUD_PROJECT)",
        )
    })?;
    let region = c.gcp_region.clone().or_else(|| env("CLOUDSDK_RUN_REGION"));
    let region = region.ok_or_else(|| hinted("no Cloud Run region is set", "set `gcp_region` in pym-config.yaml, e.g. `gcp_region: us-central1` (or CLOUDSDK_RUN_REGION)"))?;
    let endpoint =
        env("CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN").map(|e| e.trim_end_matches('/').to_string());
    Ok(Place {
        project,
        region,
        endpoint,
    })
}

/// The `project_id` of a service-account key in GOOGLE_APPLICATION_CREDENTIALS.
fn adc_project() -> Option<String> {
    let path = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["project_id"].as_str().map(String::from)
}

/// What the config asks of Cloud Run, checked as Cloud Run would check it.
fn check_config(c: &Config, file: &str) -> Result<()> {
    let id = service_id(c);
    if let Some(why) = bad_service_id(&id) {
        let key = if c.gcp_service.is_some() {
            "gcp_service"
        } else {
            "name"
        };
        return Err(hinted(
            format!("{file}: the Cloud Run service name {id:?} (`{key}`) would be refused: {why}"),
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
            format!("{file}: `gcp_memory: {m}` is not a memory size Cloud Run takes"),
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
            format!("{file}: `gcp_cpu: {x}` is not a CPU count Cloud Run takes"),
            "write it as Cloud Run does: `1`, `2`, `4`, or `500m`",
        ));
    }
    if let Some(n) = c
        .gcp_request_concurrency
        .filter(|n| !(1..=1000).contains(n))
    {
        return Err(hinted(
            format!("{file}: `gcp_request_concurrency: {n}` is outside Cloud Run's 1 to 1000"),
            "set it between 1 and 1000 (80 is Cloud Run's default)",
        ));
    }
    if let (Some(min), Some(max)) = (c.gcp_min_instances, c.gcp_max_instances)
        && min > max
    {
        return Err(hinted(
            format!("{file}: `gcp_min_instances` ({min}) is above `gcp_max_instances` ({max})"),
            "make gcp_min_instances at most gcp_max_instances",
        ));
    }
    if let Some(t) = c.gcp_request_timeout.filter(|t| !(1..=3600).contains(t)) {
        return Err(hinted(
            format!("{file}: `gcp_request_timeout: {t}` is outside Cloud Run's 1 to 3600 seconds"),
            "set it between 1 and 3600",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// What is read from Cloud Run, and the decisions made from it (pure, unit-tested).

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
    /// Revisions live, oldest first.
    pub fn history(&self) -> Vec<String> {
        split_list(self.annotations.get(LIVE_HISTORY))
    }

    pub fn rolled_back(&self) -> Vec<String> {
        split_list(self.annotations.get(ROLLED_BACK))
    }

    /// The revision with the most traffic.
    pub fn live(&self) -> Option<&Route> {
        self.traffic
            .iter()
            .filter(|r| r.percent > 0)
            .max_by_key(|r| r.percent)
    }

    fn tagged(&self, tag: &str) -> Option<&Route> {
        self.traffic.iter().find(|r| r.tag.as_deref() == Some(tag))
    }
}

fn split_list(v: Option<&String>) -> Vec<String> {
    v.map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

fn join_list(mut items: Vec<String>) -> String {
    if items.len() > HISTORY_MAX {
        items.drain(..items.len() - HISTORY_MAX);
    }
    items.join(" ")
}

/// Everything a decision reads.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub service: Option<Svc>,
    /// Newest first.
    pub revisions: Vec<Rev>,
}

impl Seen {
    fn revision(&self, name: &str) -> Option<&Rev> {
        self.revisions.iter().find(|r| r.name == name)
    }
}

/// One thing a step does to Cloud Run, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    /// CreateService with its first revision, all traffic pinned to it (tagged).
    Create {
        revision: String,
        image: String,
        env: PymEnv,
        traffic: Vec<Route>,
    },
    /// UpdateService(template, traffic): a new revision; the traffic as given.
    Deploy {
        revision: String,
        image: String,
        env: PymEnv,
        traffic: Vec<Route>,
    },
    /// UpdateService(traffic, annotations): traffic moves; the records with it.
    Route {
        traffic: Vec<Route>,
        history: Vec<String>,
        rolled_back: Vec<String>,
    },
    /// SetIamPolicy when needed: `allUsers` may invoke the service (public), or no longer
    /// may (private: callers need an identity token).
    Access { public: bool },
    /// GET the tag's URL (None: the service URL) until it serves the version in `env`.
    Check {
        tag: Option<String>,
        version: String,
        env: PymEnv,
    },
}

impl Act {
    pub fn describe(&self, service: &str) -> String {
        let routes = |t: &[Route]| {
            t.iter()
                .map(|r| {
                    format!(
                        "{} {}%{}",
                        r.revision,
                        r.percent,
                        r.tag
                            .as_ref()
                            .map(|t| format!(" tag {t}"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Act::Create {
                revision,
                image,
                env,
                traffic,
            } => {
                format!(
                    "create the Cloud Run service {service} with revision {revision} ({image}, PYM_ENV={env}); traffic: {}",
                    routes(traffic)
                )
            }
            Act::Deploy {
                revision,
                image,
                env,
                traffic,
            } => format!(
                "add revision {revision} to {service} ({image}, PYM_ENV={env}); traffic: {}",
                routes(traffic)
            ),
            Act::Route { traffic, .. } => format!(
                "move {service}'s traffic: {}; record what is live",
                routes(traffic)
            ),
            Act::Access { public: true } => {
                format!("let allUsers invoke {service} (roles/run.invoker)")
            }
            Act::Access { public: false } => format!(
                "keep {service} private: no roles/run.invoker for allUsers (checks and tests send an identity token)"
            ),
            Act::Check {
                tag: Some(t),
                version,
                env,
            } => format!("check the `{t}` tag URL serves {version} with PYM_ENV={env}"),
            Act::Check {
                tag: None,
                version,
                env,
            } => format!("check the service URL serves {version} with PYM_ENV={env}"),
        }
    }
}

/// A traffic list with `tag` moved to `revision` (added at 0% where it has no entry).
fn with_tag(traffic: &[Route], tag: &str, revision: &str) -> Vec<Route> {
    let mut out: Vec<Route> = traffic
        .iter()
        .cloned()
        .map(|mut r| {
            if r.tag.as_deref() == Some(tag) {
                r.tag = None;
            }
            r
        })
        .collect();
    match out
        .iter_mut()
        .find(|r| r.revision == revision && r.tag.is_none())
    {
        Some(r) => r.tag = Some(tag.to_string()),
        None => out.push(Route {
            revision: revision.to_string(),
            percent: 0,
            tag: Some(tag.to_string()),
        }),
    }
    tidy(out)
}

/// Drops entries that neither carry traffic nor a tag, and merges duplicates.
fn tidy(traffic: Vec<Route>) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    for r in traffic {
        if r.percent == 0 && r.tag.is_none() {
            continue;
        }
        match out.iter_mut().find(|o| {
            o.revision == r.revision
                && (o.tag.is_none() || r.tag.is_none())
                && !(o.tag.is_some() && r.tag.is_some())
        }) {
            Some(o) if o.percent == 0 || r.percent == 0 => {
                o.percent += r.percent;
                o.tag = o.tag.take().or(r.tag);
            }
            _ => out.push(r),
        }
    }
    out
}

/// All traffic to `revision`, the tags kept where they were (except `next`).
fn all_to(traffic: &[Route], revision: &str) -> Vec<Route> {
    let mut out: Vec<Route> = traffic
        .iter()
        .filter(|r| r.tag.as_deref() != Some(TAG_NEXT))
        .map(|r| Route {
            percent: 0,
            ..r.clone()
        })
        .collect();
    out.insert(
        0,
        Route {
            revision: revision.to_string(),
            percent: 100,
            tag: None,
        },
    );
    tidy(out)
}

/// Stage: a new revision of this version with `PYM_ENV=staging`, tagged `staging`, no
/// traffic moved; or, when this version's staged revision is ready with the same image,
/// only the tag. Every refusal comes before any call that changes anything.
pub fn decide_stage(
    seen: &Seen,
    id: &str,
    version: &str,
    image: &str,
    dirty: bool,
    public: bool,
) -> Result<Vec<Act>> {
    let check = Act::Check {
        tag: Some(TAG_STAGING.into()),
        version: version.into(),
        env: PymEnv::Staging,
    };
    let Some(svc) = &seen.service else {
        let revision = next_revision_name(id, version, PymEnv::Staging, &[]);
        let traffic = vec![Route {
            revision: revision.clone(),
            percent: 100,
            tag: Some(TAG_STAGING.into()),
        }];
        return Ok(vec![
            Act::Create {
                revision,
                image: image.into(),
                env: PymEnv::Staging,
                traffic,
            },
            Act::Access { public },
            check,
        ]);
    };
    if svc.reconciling {
        return Err(hinted(
            format!("the Cloud Run service {id} is being changed by another operation"),
            "wait for it to finish (`gcloud run services describe`), then run again",
        ));
    }
    let reusable = (!dirty)
        .then(|| {
            seen.revisions.iter().find(|r| {
                r.version.as_deref() == Some(version)
                    && r.env.as_deref() == Some("staging")
                    && r.image == image
                    && r.ready == Ready::Yes
            })
        })
        .flatten();
    if let Some(r) = reusable {
        if svc
            .tagged(TAG_STAGING)
            .is_some_and(|t| t.revision == r.name)
        {
            return Ok(vec![Act::Access { public }, check]);
        }
        return Ok(vec![
            Act::Route {
                traffic: with_tag(&svc.traffic, TAG_STAGING, &r.name),
                history: svc.history(),
                rolled_back: svc.rolled_back(),
            },
            Act::Access { public },
            check,
        ]);
    }
    let revision = next_revision_name(id, version, PymEnv::Staging, &seen.revisions);
    // Entries on revisions that cannot serve (a first stage that failed) go: Cloud Run
    // refuses traffic to them. With none left, the new revision takes it all, as on a
    // first stage.
    let serving: Vec<Route> = svc
        .traffic
        .iter()
        .filter(|r| {
            !seen
                .revision(&r.revision)
                .is_some_and(|x| matches!(x.ready, Ready::Failed(_)))
        })
        .cloned()
        .collect();
    let mut traffic = with_tag(&serving, TAG_STAGING, &revision);
    if traffic.iter().all(|r| r.percent == 0) {
        traffic = vec![Route {
            revision: revision.clone(),
            percent: 100,
            tag: Some(TAG_STAGING.into()),
        }];
    }
    Ok(vec![
        Act::Deploy {
            revision,
            image: image.into(),
            env: PymEnv::Staging,
            traffic,
        },
        Act::Access { public },
        check,
    ])
}

/// Promote: a revision of the staged image with `PYM_ENV=live`, checked on its `next` tag,
/// then all traffic to it and the service URL checked. Refused unless this version is
/// the one tagged `staging` and ready.
pub fn decide_promote(seen: &Seen, id: &str, version: &str) -> Result<Vec<Act>> {
    let stage_first = || {
        hinted(
            format!("version {version} is not staged on the Cloud Run service {id}"),
            "stage it first: `cargo xtask stage` (and `cargo xtask accept-staging`)",
        )
    };
    let svc = seen.service.as_ref().ok_or_else(stage_first)?;
    let staged = svc
        .tagged(TAG_STAGING)
        .and_then(|t| seen.revision(&t.revision))
        .ok_or_else(stage_first)?;
    if staged.version.as_deref() != Some(version) {
        return Err(hinted(
            format!(
                "the `staging` tag of {id} holds {} ({}), not {version}",
                staged.name,
                staged.version.as_deref().unwrap_or("no version label")
            ),
            "stage this version first: `cargo xtask stage`",
        ));
    }
    if staged.ready != Ready::Yes {
        return Err(hinted(
            format!("the staged revision {} is not ready", staged.name),
            "stage again: `cargo xtask stage`",
        ));
    }
    if svc.reconciling {
        return Err(hinted(
            format!("the Cloud Run service {id} is being changed by another operation"),
            "wait for it to finish, then run again",
        ));
    }
    let check_live = Act::Check {
        tag: None,
        version: version.into(),
        env: PymEnv::Live,
    };
    let mut history = svc.history();
    // Already live (a promote run again): only the check.
    if let Some(live) = svc.live().and_then(|l| seen.revision(&l.revision))
        && live.version.as_deref() == Some(version)
        && live.env.as_deref() == Some("live")
    {
        return Ok(vec![check_live]);
    }
    // A live revision of this image made by an earlier promote that stopped before the
    // switch is used again; otherwise a new one.
    let candidate = seen.revisions.iter().find(|r| {
        r.version.as_deref() == Some(version)
            && r.env.as_deref() == Some("live")
            && r.image == staged.image
            && r.ready == Ready::Yes
    });
    let mut acts = Vec::new();
    let revision = match candidate {
        Some(r) => {
            if svc.tagged(TAG_NEXT).is_none_or(|t| t.revision != r.name) {
                acts.push(Act::Route {
                    traffic: with_tag(&svc.traffic, TAG_NEXT, &r.name),
                    history: history.clone(),
                    rolled_back: svc.rolled_back(),
                });
            }
            r.name.clone()
        }
        None => {
            let revision = next_revision_name(id, version, PymEnv::Live, &seen.revisions);
            acts.push(Act::Deploy {
                revision: revision.clone(),
                image: staged.image.clone(),
                env: PymEnv::Live,
                traffic: with_tag(&svc.traffic, TAG_NEXT, &revision),
            });
            revision
        }
    };
    acts.push(Act::Check {
        tag: Some(TAG_NEXT.into()),
        version: version.into(),
        env: PymEnv::Live,
    });
    // The revision live until now goes into the history first: ours with PYM_ENV=live, or
    // one made by other means (a service moved to pymdeploy), not a staged one (the first
    // stage's revision holds the traffic of a new service).
    if let Some(live) = svc
        .live()
        .and_then(|l| seen.revision(&l.revision))
        .filter(|r| r.env.as_deref() != Some("staging"))
        && history.last() != Some(&live.name)
    {
        history.push(live.name.clone());
    }
    history.push(revision.clone());
    // Live again: no longer one rolled back from.
    let mut rolled_back = svc.rolled_back();
    rolled_back.retain(|n| *n != revision);
    let after_next = with_tag(&svc.traffic, TAG_NEXT, &revision);
    acts.push(Act::Route {
        traffic: all_to(&after_next, &revision),
        history,
        rolled_back,
    });
    acts.push(check_live);
    Ok(acts)
}

/// Rollback: all traffic back to the revision live most recently before the current one
/// (never one rolled back from), if it is still there and ready.
pub fn decide_rollback(seen: &Seen, id: &str) -> Result<(Rev, Rev, Vec<Act>)> {
    let svc = seen.service.as_ref().ok_or_else(|| {
        hinted(
            format!("the Cloud Run service {id} does not exist"),
            "deploy first: `cargo xtask deploy`",
        )
    })?;
    let current = svc
        .live()
        .and_then(|l| seen.revision(&l.revision))
        .ok_or_else(|| anyhow!("no revision of {id} serves traffic"))?
        .clone();
    let rolled_back = svc.rolled_back();
    let target = svc
        .history()
        .iter()
        .rev()
        .filter(|n| **n != current.name && !rolled_back.contains(n))
        .find_map(|n| seen.revision(n).filter(|r| r.ready == Ready::Yes))
        .cloned()
        .ok_or_else(|| hinted(format!("{id} has no earlier live revision to roll back to (ready, and not rolled back from)"), "deploy the version you want: `cargo xtask deploy`"))?;
    let mut history = svc.history();
    history.push(target.name.clone());
    let mut back = rolled_back;
    back.push(current.name.clone());
    let version = target.version.clone().unwrap_or_default();
    // A tag left on a revision that cannot serve would fail the update: it goes.
    let serving: Vec<Route> = svc
        .traffic
        .iter()
        .filter(|r| {
            !seen
                .revision(&r.revision)
                .is_some_and(|x| matches!(x.ready, Ready::Failed(_)))
        })
        .cloned()
        .collect();
    let acts = vec![
        Act::Route {
            traffic: all_to(&serving, &target.name),
            history,
            rolled_back: back,
        },
        Act::Check {
            tag: None,
            version,
            env: PymEnv::Live,
        },
    ];
    Ok((current, target, acts))
}

/// Each revision's role: live (most traffic), staging (the tag), previous (live before,
/// newest first), rolled-back, or none.
pub fn roles(seen: &Seen) -> Vec<(&Rev, &'static str)> {
    let Some(svc) = &seen.service else {
        return Vec::new();
    };
    let live = svc.live().map(|l| l.revision.clone());
    let staging = svc.tagged(TAG_STAGING).map(|t| t.revision.clone());
    let history = svc.history();
    let back = svc.rolled_back();
    let mut out: Vec<(&Rev, &'static str, usize)> = seen
        .revisions
        .iter()
        .map(|r| {
            let recency = history.iter().rposition(|h| *h == r.name);
            let (role, order) = if Some(&r.name) == live.as_ref() {
                ("live", 0)
            } else if Some(&r.name) == staging.as_ref() {
                ("staging", 1)
            } else if back.contains(&r.name) {
                ("rolled-back", 4)
            } else if recency.is_some() {
                ("previous", 2)
            } else {
                ("", 3)
            };
            (
                r,
                role,
                order * 1000 + (999 - recency.unwrap_or(0).min(999)),
            )
        })
        .collect();
    out.sort_by_key(|(_, _, k)| *k);
    out.into_iter().map(|(r, role, _)| (r, role)).collect()
}

/// Cleanup: revisions with no traffic and no tag go, but the `keep` previous live ones.
pub fn decide_cleanup(seen: &Seen, keep: usize) -> Vec<(&Rev, Fate)> {
    let Some(svc) = &seen.service else {
        return Vec::new();
    };
    let mut kept = 0;
    roles(seen)
        .into_iter()
        .filter(|(_, role)| !matches!(*role, "live" | "staging"))
        .map(|(r, role)| {
            let routed = svc.traffic.iter().find(|t| t.revision == r.name);
            let fate = if let Some(t) = routed {
                Fate::Keep(Some(match &t.tag {
                    Some(tag) => format!("tagged {tag}"),
                    None => format!("serves {}%", t.percent),
                }))
            } else if r.name == svc.latest_created {
                Fate::Keep(Some("the service's latest revision".into()))
            } else if role == "previous" && kept < keep {
                kept += 1;
                Fate::Keep(None)
            } else if r.ready == Ready::Pending {
                Fate::Keep(Some("not ready yet".into()))
            } else {
                Fate::Go {
                    done: false,
                    did: "deleted",
                    would: "delete",
                }
            };
            (r, fate)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The client.

/// 429 and 503 are retried, whatever the method: a retried update carries an etag that
/// is stale if the first attempt applied, so it cannot apply twice.
#[derive(Debug)]
struct Transient;

impl RetryPolicy for Transient {
    fn on_error(&self, _state: &RetryState, error: google_cloud_gax::error::Error) -> RetryResult {
        match error.status().map(|s| s.code) {
            Some(Code::Unavailable | Code::ResourceExhausted) => RetryResult::Continue(error),
            _ if error.is_transient_and_before_rpc() => RetryResult::Continue(error),
            _ => RetryResult::Permanent(error),
        }
    }
}

struct Gcp {
    services: Services,
    revisions: Revisions,
    /// `projects/P/locations/L`
    parent: String,
    id: String,
}

impl Gcp {
    fn name(&self) -> String {
        format!("{}/services/{}", self.parent, self.id)
    }
}

async fn connect(c: &Config) -> Result<Gcp> {
    let p = place(c)?;
    crate::ops::gcp::adc_source()?;
    // reqwest is built without a TLS provider (the Google crates choose none): ring, as
    // the rest of pymdeploy.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let credentials = google_cloud_auth::credentials::Builder::default()
        .build()
        .map_err(|e| hinted(format!("cannot load Google Cloud credentials: {e}"), "`gcloud auth application-default login`, or GOOGLE_APPLICATION_CREDENTIALS=<a service-account key file>"))?;
    let backoff = || {
        google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(300))
            .with_maximum_delay(Duration::from_secs(10))
            .clamp()
    };
    macro_rules! client {
        ($t:ty) => {{
            let mut b = <$t>::builder()
                .with_credentials(credentials.clone())
                .with_retry_policy(Transient.with_attempt_limit(6))
                .with_backoff_policy(backoff());
            if let Some(e) = &p.endpoint {
                b = b.with_endpoint(e.clone());
            }
            b.build()
                .await
                .map_err(|e| anyhow!("cannot make the Cloud Run client: {e}"))?
        }};
    }
    Ok(Gcp {
        services: client!(Services),
        revisions: client!(Revisions),
        parent: format!("projects/{}/locations/{}", p.project, p.region),
        id: service_id(c),
    })
}

/// One error for a failed call: what was asked, what Google said, what to do.
fn gcp_error(method: &str, resource: &str, e: google_cloud_gax::error::Error) -> anyhow::Error {
    if let Some(s) = e.status() {
        let msg = &s.message;
        return match s.code {
            Code::PermissionDenied => hinted(
                format!("Google Cloud denied run.{method} on {resource}: {msg}"),
                match method {
                    "services.setIamPolicy" | "services.getIamPolicy" => "grant the credentials in use roles/run.admin on the project or the service (setting a service's IAM policy needs it), or set `gcp_allow_unauthenticated: false`".to_string(),
                    _ => "grant the credentials in use roles/run.developer (or roles/run.admin) on the project, and roles/iam.serviceAccountUser on the runtime service account".to_string(),
                },
            ),
            Code::Unauthenticated => hinted(format!("Google Cloud rejected the credentials for run.{method}: {msg}"), "refresh them: `gcloud auth application-default login`, or a valid service-account key in GOOGLE_APPLICATION_CREDENTIALS"),
            Code::Aborted => hinted(
                format!("run.{method} on {resource} was refused because the service changed since it was read: {msg}"),
                "another deploy changed it (or a retried request of ours had gone through): look with `cargo xtask status`, then run again",
            ),
            Code::ResourceExhausted | Code::Unavailable => hinted(format!("run.{method} kept failing ({}): {msg}", s.code.name()), "Google Cloud is busy or over quota: wait a minute and run again"),
            code => anyhow!("run.{method} on {resource} failed: {}: {msg}", code.name()),
        };
    }
    if e.is_authentication() {
        return hinted(
            format!("cannot get Google Cloud credentials for run.{method}: {e}"),
            "`gcloud auth application-default login`, or GOOGLE_APPLICATION_CREDENTIALS=<a service-account key file>",
        );
    }
    let detail = std::iter::successors(std::error::Error::source(&e), |s| s.source())
        .map(|s| s.to_string())
        .last()
        .unwrap_or_default();
    hinted(
        format!("cannot reach Cloud Run for run.{method}: {e} {detail}"),
        "check the network (and CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN if it is set)",
    )
}

fn is_not_found(e: &google_cloud_gax::error::Error) -> bool {
    e.status().is_some_and(|s| s.code == Code::NotFound)
}

fn unix(t: Option<&google_cloud_wkt::Timestamp>) -> i64 {
    t.map(|t| t.seconds()).unwrap_or(0)
}

fn ready_of(conditions: &[model::Condition]) -> Ready {
    match conditions.iter().find(|c| c.r#type == "Ready") {
        Some(c) if c.state == State::ConditionSucceeded => Ready::Yes,
        Some(c) if c.state == State::ConditionFailed => Ready::Failed(condition_text(c)),
        _ => Ready::Pending,
    }
}

/// A condition as Cloud Run says it: its message and its reason.
fn condition_text(c: &model::Condition) -> String {
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

fn svc_of(s: &Service) -> Svc {
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

fn targets_of(traffic: &[Route]) -> Vec<TrafficTarget> {
    traffic
        .iter()
        .map(|r| {
            TrafficTarget::new()
                .set_type(TrafficTargetAllocationType::Revision)
                .set_revision(r.revision.clone())
                .set_percent(r.percent)
                .set_tag(r.tag.clone().unwrap_or_default())
        })
        .collect()
}

/// The revision template for a version in an environment.
fn template(
    c: &Config,
    revision: &str,
    image: &str,
    version: &str,
    env: PymEnv,
) -> Result<RevisionTemplate> {
    let mut vars = vec![
        model::EnvVar::new()
            .set_name("PYM_ENV")
            .set_value(env.as_str()),
        model::EnvVar::new()
            .set_name("PYM_VERSION")
            .set_value(version),
    ];
    // PORT is Cloud Run's to set (from the container port): it refuses it as a variable.
    vars.extend(
        crate::ops::service::secrets(c)?
            .into_iter()
            .map(|(k, v)| model::EnvVar::new().set_name(k).set_value(v)),
    );
    let mut limits = HashMap::new();
    if let Some(m) = &c.gcp_memory {
        limits.insert("memory".to_string(), m.clone());
    }
    if let Some(cpu) = &c.gcp_cpu {
        limits.insert("cpu".to_string(), cpu.clone());
    }
    let mut container = model::Container::new()
        .set_name(c.name.clone())
        .set_image(image)
        .set_env(vars)
        .set_ports([model::ContainerPort::new()
            .set_name("http1")
            .set_container_port(i32::from(c.port))]);
    if !limits.is_empty() {
        container = container.set_resources(model::ResourceRequirements::new().set_limits(limits));
    }
    let mut t = RevisionTemplate::new()
        .set_revision(revision)
        .set_labels([
            (LABEL_VERSION.to_string(), version.to_lowercase()),
            (LABEL_ENV.to_string(), env.as_str().to_string()),
        ])
        .set_containers([container]);
    if c.gcp_min_instances.is_some() || c.gcp_max_instances.is_some() {
        let mut s = model::RevisionScaling::new();
        if let Some(n) = c.gcp_min_instances {
            s = s.set_min_instance_count(n as i32);
        }
        if let Some(n) = c.gcp_max_instances {
            s = s.set_max_instance_count(n as i32);
        }
        t = t.set_scaling(s);
    }
    if let Some(n) = c.gcp_request_concurrency {
        t = t.set_max_instance_request_concurrency(n as i32);
    }
    if let Some(secs) = c.gcp_request_timeout {
        t = t.set_timeout(google_cloud_wkt::Duration::clamp(secs as i64, 0));
    }
    if let Some(sa) = &c.gcp_service_account {
        t = t.set_service_account(sa.clone());
    }
    Ok(t)
}

impl Gcp {
    async fn service(&self) -> Result<Option<Service>> {
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

    async fn observe(&self) -> Result<(Option<Service>, Seen)> {
        let service = self.service().await?;
        let revisions = match &service {
            Some(_) => self.list_revisions().await?.iter().map(rev_of).collect(),
            None => Vec::new(),
        };
        let seen = Seen {
            service: service.as_ref().map(svc_of),
            revisions,
        };
        Ok((service, seen))
    }

    /// Waits for an operation (Ctrl-C stops the wait), a line for each change of the
    /// service's conditions.
    async fn wait<P: Poller<Service, Service>>(
        &self,
        ctx: &Ctx,
        method: &str,
        poller: P,
        timeout: Duration,
        progress: &StepProgress<'_>,
    ) -> Result<Service> {
        ctx.interruptible(self.wait_through(method, poller, timeout, progress))
            .await
    }

    /// Waits for an operation whatever happens: what undoes a change must finish. Polls
    /// with backoff (one second, up to five); an error while polling is retried until
    /// the deadline, as the operation goes on regardless.
    async fn wait_through<P: Poller<Service, Service>>(
        &self,
        method: &str,
        mut poller: P,
        timeout: Duration,
        progress: &StepProgress<'_>,
    ) -> Result<Service> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut said: Vec<String> = Vec::new();
        let mut pause = Duration::from_millis(250);
        let mut last_error = None;
        loop {
            match poller.poll().await {
                None => bail!("run.{method}: the operation ended without a result"),
                Some(PollingResult::Completed(r)) => {
                    return r.map_err(|e| gcp_error(method, &self.name(), e));
                }
                Some(PollingResult::PollingError(e)) => last_error = Some(e),
                Some(PollingResult::InProgress(meta)) => {
                    for c in meta
                        .iter()
                        .flat_map(|s| s.terminal_condition.iter().chain(&s.conditions))
                    {
                        let state = c
                            .state
                            .name()
                            .unwrap_or("?")
                            .trim_start_matches("CONDITION_")
                            .to_lowercase();
                        let line = format!(
                            "{}: {state}{}",
                            c.r#type,
                            if c.message.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", c.message)
                            }
                        );
                        if !said.contains(&line) {
                            progress.line(&line);
                            said.push(line);
                        }
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let why = last_error
                    .map(|e| format!(" (polling it failed: {e})"))
                    .unwrap_or_default();
                return Err(hinted(
                    format!(
                        "run.{method} on {} did not finish within {}s{why}",
                        self.name(),
                        timeout.as_secs()
                    ),
                    "raise `gcp_timeout`, or look at the service: `gcloud run services describe`",
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).clamp(Duration::from_secs(1), Duration::from_secs(5));
        }
    }

    /// The URL of `tag` (None: the service URL), and the service URL: a private
    /// service's identity tokens are for the latter, whichever URL is asked.
    async fn urls(&self, tag: Option<&str>) -> Result<(String, String)> {
        let s = self.service().await?.ok_or_else(|| {
            hinted(
                format!("the Cloud Run service {} does not exist", self.id),
                "deploy first: `cargo xtask deploy`",
            )
        })?;
        let service_url = Some(s.uri.clone())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| anyhow!("the Cloud Run service {} has no URL yet", self.id))?;
        let url = match tag {
            None => service_url.clone(),
            Some(t) => s
                .traffic_statuses
                .iter()
                .find(|st| st.tag == t)
                .map(|st| st.uri.clone())
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    hinted(
                        format!("no revision of {} carries the tag `{t}`", self.id),
                        "stage first: `cargo xtask stage`",
                    )
                })?,
        };
        Ok((url, service_url))
    }

    /// Makes the service public (`allUsers` as run.invoker) or private (no such binding),
    /// changing the IAM policy only when it differs.
    async fn set_access(&self, public: bool, progress: &StepProgress<'_>) -> Result<()> {
        let name = self.name();
        let mut policy = self
            .services
            .get_iam_policy()
            .set_resource(name.clone())
            .send()
            .await
            .map_err(|e| gcp_error("services.getIamPolicy", &name, e))?;
        let everyone = |m: &String| m == "allUsers" || m == "allAuthenticatedUsers";
        let is_public = policy
            .bindings
            .iter()
            .any(|b| b.role == "roles/run.invoker" && b.members.iter().any(everyone));
        if is_public == public {
            return Ok(());
        }
        if public {
            match policy
                .bindings
                .iter_mut()
                .find(|b| b.role == "roles/run.invoker" && b.condition.is_none())
            {
                Some(b) => b.members.push("allUsers".into()),
                None => policy.bindings.push(
                    google_cloud_iam_v1::model::Binding::new()
                        .set_role("roles/run.invoker")
                        .set_members(["allUsers"]),
                ),
            }
        } else {
            for b in policy
                .bindings
                .iter_mut()
                .filter(|b| b.role == "roles/run.invoker")
            {
                b.members.retain(|m| !everyone(m));
            }
            policy.bindings.retain(|b| !b.members.is_empty());
        }
        self.services
            .set_iam_policy()
            .set_resource(name.clone())
            .set_policy(policy)
            .send()
            .await
            .map_err(|e| gcp_error("services.setIamPolicy", &name, e))?;
        progress.line(&match public {
            true => format!(
                "{} allows unauthenticated invocations (allUsers: roles/run.invoker)",
                self.id
            ),
            false => format!("{} no longer allows unauthenticated invocations", self.id),
        });
        Ok(())
    }

    /// Carries out `acts` in order: the service is read again after each update, and each
    /// update carries the etag of the last read.
    async fn act(
        &self,
        ctx: &Ctx,
        c: &Config,
        service: Option<Service>,
        version: &str,
        acts: &[Act],
        progress: &StepProgress<'_>,
    ) -> Result<()> {
        let timeout = Duration::from_secs(c.gcp_timeout);
        let mut current = service;
        for a in acts {
            progress.line(&format!("- {}", a.describe(&self.id)));
            match a {
                Act::Create {
                    revision,
                    image,
                    env,
                    traffic,
                } => {
                    let svc = Service::new()
                        .set_template(template(c, revision, image, version, *env)?)
                        .set_traffic(targets_of(traffic))
                        .set_labels([("managed-by".to_string(), "pymdeploy".to_string())]);
                    let poller = self
                        .services
                        .create_service()
                        .set_parent(self.parent.clone())
                        .set_service_id(self.id.clone())
                        .set_service(svc)
                        .poller();
                    let done = self
                        .wait(ctx, "services.create", poller, timeout, progress)
                        .await;
                    current = Some(self.revision_outcome(done, revision).await?);
                }
                Act::Deploy {
                    revision,
                    image,
                    env,
                    traffic,
                } => {
                    let base = current
                        .clone()
                        .ok_or_else(|| anyhow!("the service {} vanished", self.id))?;
                    let before = base.traffic.clone();
                    let svc = base
                        .set_template(template(c, revision, image, version, *env)?)
                        .set_traffic(targets_of(traffic));
                    let mask =
                        google_cloud_wkt::FieldMask::default().set_paths(["template", "traffic"]);
                    let poller = self
                        .services
                        .update_service()
                        .set_service(svc)
                        .set_update_mask(mask)
                        .poller();
                    let done = self
                        .wait(ctx, "services.update", poller, timeout, progress)
                        .await;
                    match self.revision_outcome(done, revision).await {
                        Ok(s) => current = Some(s),
                        Err(e) => {
                            // Cloud Run keeps the traffic asked for (a tag on the failed
                            // revision) beside what it serves: put it back as it was.
                            return Err(
                                match self.put_back(before, None, timeout, progress).await {
                                    Ok(()) => e,
                                    Err(r) => e.context(format!(
                                        "putting the traffic back as it was failed too: {r:#}"
                                    )),
                                },
                            );
                        }
                    }
                }
                Act::Route {
                    traffic,
                    history,
                    rolled_back,
                } => {
                    let base = current
                        .clone()
                        .ok_or_else(|| anyhow!("the service {} vanished", self.id))?;
                    let mut annotations = base.annotations.clone();
                    annotations.insert(LIVE_HISTORY.into(), join_list(history.clone()));
                    annotations.insert(ROLLED_BACK.into(), join_list(rolled_back.clone()));
                    annotations.retain(|_, v| !v.is_empty());
                    let svc = base
                        .set_traffic(targets_of(traffic))
                        .set_annotations(annotations);
                    let mask = google_cloud_wkt::FieldMask::default()
                        .set_paths(["traffic", "annotations"]);
                    let poller = self
                        .services
                        .update_service()
                        .set_service(svc)
                        .set_update_mask(mask)
                        .poller();
                    current = Some(
                        self.wait(ctx, "services.update", poller, timeout, progress)
                            .await?,
                    );
                }
                Act::Access { public } => self.set_access(*public, progress).await?,
                Act::Check { tag, version, env } => {
                    let (url, service_url) = self.urls(tag.as_deref()).await?;
                    let token = token_for(c, &service_url).await?;
                    check_serves(c, &url, token.as_deref(), version, *env).await?;
                    progress.line(&format!("{url} serves {version} with PYM_ENV={env}"));
                }
            }
        }
        Ok(())
    }

    /// Sets the service's traffic (and, given, its annotations) back to what was read
    /// before a change; not stopped by Ctrl-C, as it undoes.
    async fn put_back(
        &self,
        traffic: Vec<TrafficTarget>,
        annotations: Option<HashMap<String, String>>,
        timeout: Duration,
        progress: &StepProgress<'_>,
    ) -> Result<()> {
        let now = self
            .service()
            .await?
            .ok_or_else(|| anyhow!("the service {} vanished", self.id))?;
        if now.traffic == traffic && annotations.as_ref().is_none_or(|a| *a == now.annotations) {
            return Ok(());
        }
        let mut paths = vec!["traffic"];
        let mut svc = now.set_traffic(traffic);
        if let Some(a) = annotations {
            svc = svc.set_annotations(a);
            paths.push("annotations");
        }
        let mask = google_cloud_wkt::FieldMask::default().set_paths(paths);
        let poller = self
            .services
            .update_service()
            .set_service(svc)
            .set_update_mask(mask)
            .poller();
        self.wait_through("services.update", poller, timeout, progress)
            .await?;
        progress.line("the service's traffic is back as it was");
        Ok(())
    }

    /// The service after an operation that made `revision`, or why the revision failed
    /// in Cloud Run's words (its failed conditions and their reasons).
    async fn revision_outcome(&self, done: Result<Service>, revision: &str) -> Result<Service> {
        let name = format!("{}/revisions/{revision}", self.name());
        let r = match self
            .revisions
            .get_revision()
            .set_name(name.clone())
            .send()
            .await
        {
            Ok(r) => r,
            // Refused before any revision was made: Cloud Run's own error says why.
            Err(e) if is_not_found(&e) => {
                return done.and_then(|_| bail!("Cloud Run made no revision {revision}"));
            }
            Err(e) => {
                return Err(done
                    .err()
                    .unwrap_or_else(|| gcp_error("revisions.get", &name, e)));
            }
        };
        match ready_of(&r.conditions) {
            Ready::Yes => done,
            not => {
                let mut why: Vec<String> = r
                    .conditions
                    .iter()
                    .filter(|c| c.state == State::ConditionFailed)
                    .map(|c| format!("{}: {}", c.r#type, condition_text(c)))
                    .collect();
                why.dedup();
                if why.is_empty() {
                    why.push(if not == Ready::Pending {
                        "it is not ready yet".into()
                    } else {
                        "no reason given".into()
                    });
                }
                let msg = format!(
                    "revision {revision} failed: {}; no traffic moved",
                    why.join("; ")
                );
                Err(match done {
                    Err(e) => e.context(msg),
                    Ok(_) => anyhow!(msg),
                })
            }
        }
    }
}

/// The identity token a private service wants, for its URL `service_url`; none for a
/// public one.
async fn token_for(c: &Config, service_url: &str) -> Result<Option<String>> {
    match c.gcp_allow_unauthenticated {
        true => Ok(None),
        false => crate::ops::gcp::identity_token(service_url).await.map(Some),
    }
}

/// Asks `url` for the service contract until it holds (`targets::serves_contract`), over
/// HTTP or HTTPS, a new connection each time (traffic splits by connection).
async fn check_serves(
    c: &Config,
    url: &str,
    token: Option<&str>,
    version: &str,
    env: PymEnv,
) -> Result<()> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse()?,
        );
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .default_headers(headers)
        .build()?;
    let base = url.trim_end_matches('/');
    super::serves_contract(c, url, version, env, |path| {
        let request = client.get(format!("{base}{path}"));
        async move {
            Ok(match request.send().await {
                Ok(r) => Ok((r.status().as_u16(), r.text().await.unwrap_or_default())),
                Err(e) => Err(format!("{e}")),
            })
        }
    })
    .await
}

fn pushed(ctx: &Ctx) -> Result<String> {
    let image = super::docker::reference(ctx, ctx.docker()?)?;
    if !image.contains("@sha256:") {
        bail!(
            "Cloud Run runs images by digest, and {image} has none: push it first (`cargo xtask push`)"
        );
    }
    Ok(image)
}

impl super::Target for CloudRunTarget {
    fn units(&self) -> (&'static str, &'static str) {
        ("revision", "revisions")
    }

    /// Before the first step: the service name Cloud Run would take, the sizes, the
    /// project and region, and that credentials exist somewhere.
    fn check(&self, ctx: &Ctx) -> Result<()> {
        for env in [PymEnv::Staging, PymEnv::Live] {
            let c = ctx.config_for(env)?;
            check_config(&c, &format!("pym-config (for {env})"))?;
            place(&c)?;
        }
        crate::ops::gcp::adc_source()?;
        Ok(())
    }

    fn address(&self, ctx: &Ctx, env: PymEnv) -> Result<Address> {
        let c = ctx.config_for(env)?;
        if env == PymEnv::Local {
            bail!("the local environment is not on a deploy target");
        }
        let tag = (env == PymEnv::Staging).then_some(TAG_STAGING);
        // Live at `live_url` needs no call, unless it is private (the token's audience is
        // the service URL Cloud Run gives).
        let (url, token) = match (&c.live_url, tag) {
            (Some(u), None) if c.gcp_allow_unauthenticated => (u.clone(), None),
            _ => ctx.block_on(async {
                let (url, service_url) = connect(&c).await?.urls(tag).await?;
                let url = c.live_url.clone().filter(|_| tag.is_none()).unwrap_or(url);
                Ok::<_, anyhow::Error>((url, token_for(&c, &service_url).await?))
            })?,
        };
        if let Some(t) = &token {
            ctx.out.add_secret(t);
        }
        let (host, port) = url_host(&url);
        Ok(Address {
            host,
            port,
            tls: url.starts_with("https://"),
            token,
            hold: None,
        })
    }

    fn plan(
        &self,
        ctx: &Ctx,
        change: super::Change,
        _staged: Option<&super::Staged>,
    ) -> Result<Vec<String>> {
        let env = if change == super::Change::Stage {
            PymEnv::Staging
        } else {
            PymEnv::Live
        };
        let c = ctx.config_for(env)?;
        let version = ctx.version()?.to_string();
        let id = service_id(&c);
        let (_, mut seen) = ctx.block_on(async { connect(&c).await?.observe().await })?;
        let acts = match change {
            super::Change::Stage => {
                let image = pushed(ctx).unwrap_or_else(|_| {
                    format!(
                        "{}@sha256:<pushed>",
                        ctx.image_tag()
                            .unwrap_or_default()
                            .rsplit_once(':')
                            .map(|(r, _)| r.to_string())
                            .unwrap_or_default()
                    )
                });
                decide_stage(
                    &seen,
                    &id,
                    &version,
                    &image,
                    ctx.version()?.dirty,
                    c.gcp_allow_unauthenticated,
                )?
            }
            super::Change::Promote => {
                // In a deploy's dry run stage has not run yet: assume it staged this version.
                if seen
                    .service
                    .as_ref()
                    .and_then(|s| s.tagged(TAG_STAGING))
                    .and_then(|t| seen.revision(&t.revision))
                    .is_none_or(|r| r.version.as_deref() != Some(version.as_str()))
                {
                    let name = next_revision_name(&id, &version, PymEnv::Staging, &seen.revisions);
                    let svc = seen.service.get_or_insert_with(Svc::default);
                    svc.traffic = with_tag(&svc.traffic, TAG_STAGING, &name);
                    if svc.traffic.iter().all(|r| r.percent == 0) {
                        svc.traffic[0].percent = 100;
                    }
                    seen.revisions.insert(
                        0,
                        Rev {
                            name,
                            version: Some(version.clone()),
                            env: Some("staging".into()),
                            image: "<the staged image>".into(),
                            ready: Ready::Yes,
                            created: 0,
                        },
                    );
                }
                decide_promote(&seen, &id, &version)?
            }
            super::Change::Rollback => decide_rollback(&seen, &id)?.2,
        };
        Ok(acts.iter().map(|a| a.describe(&id)).collect())
    }

    fn stage(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let c = ctx.config_for(PymEnv::Staging)?;
        let version = ctx.version()?.to_string();
        let image = pushed(ctx)?;
        let dirty = ctx.version()?.dirty;
        ctx.block_on(async {
            let gcp = connect(&c).await?;
            let (service, seen) = gcp.observe().await?;
            let acts = decide_stage(
                &seen,
                &gcp.id,
                &version,
                &image,
                dirty,
                c.gcp_allow_unauthenticated,
            )?;
            gcp.act(ctx, &c, service, &version, &acts, progress).await?;
            Ok(format!("{version} on {}'s `{TAG_STAGING}` tag", gcp.id))
        })
    }

    fn promote(
        &self,
        ctx: &Ctx,
        _staged: Option<&super::Staged>,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let c = ctx.config_for(PymEnv::Live)?;
        let version = ctx.version()?.to_string();
        ctx.block_on(async {
            let gcp = connect(&c).await?;
            let (service, seen) = gcp.observe().await?;
            let acts = decide_promote(&seen, &gcp.id, &version)?;
            let original = service.clone();
            let Err(e) = gcp.act(ctx, &c, service, &version, &acts, progress).await else {
                return Ok(format!(
                    "{version} live on {} (100% of the traffic)",
                    gcp.id
                ));
            };
            // If the traffic moved (the check after the switch failed, or Ctrl-C came
            // during it), it goes back to what it was, with the records as they were and
            // the new revision marked rolled back from. This undo is not interrupted.
            let Some(original) = original else {
                return Err(e);
            };
            let live_of = |s: &Service| svc_of(s).live().map(|l| l.revision.clone());
            let now = gcp.service().await.ok().flatten();
            if now
                .as_ref()
                .is_none_or(|n| live_of(n) == live_of(&original))
            {
                return Err(e);
            }
            let new = acts.iter().find_map(|a| match a {
                Act::Route { traffic, .. } => traffic
                    .iter()
                    .find(|r| r.percent == 100)
                    .map(|r| r.revision.clone()),
                _ => None,
            });
            let mut annotations = original.annotations.clone();
            let mut back = svc_of(&original).rolled_back();
            back.extend(new);
            annotations.insert(ROLLED_BACK.into(), join_list(back));
            match gcp
                .put_back(
                    original.traffic.clone(),
                    Some(annotations),
                    Duration::from_secs(c.gcp_timeout),
                    progress,
                )
                .await
            {
                Ok(()) => Err(e.context("the traffic went back to the revision live before")),
                Err(r) => Err(e.context(format!(
                    "moving the traffic back to the revision live before failed too: {r:#}"
                ))),
            }
        })
    }

    fn rollback(
        &self,
        ctx: &Ctx,
        _to: Option<&str>,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let c = ctx.config_for(PymEnv::Live)?;
        ctx.block_on(async {
            let gcp = connect(&c).await?;
            let (service, seen) = gcp.observe().await?;
            let (current, target, acts) = decide_rollback(&seen, &gcp.id)?;
            let to_version = target.version.clone().unwrap_or_default();
            gcp.act(ctx, &c, service, &to_version, &acts, progress)
                .await?;
            ctx.set_rolled_back_to(to_version.clone());
            Ok(format!(
                "{to_version} live again on {} (was {})",
                target.name,
                current.version.as_deref().unwrap_or(current.name.as_str())
            ))
        })
    }

    fn status(&self, ctx: &Ctx) -> Result<Table> {
        let c = ctx.config_for(PymEnv::Live)?;
        ctx.block_on(async {
            let gcp = connect(&c).await?;
            let (service, seen) = gcp.observe().await?;
            let mut table = Table::new(&[
                "ROLE", "REVISION", "VERSION", "READY", "TRAFFIC", "TAGS", "IMAGE", "URL",
            ]);
            let Some(service) = service else {
                return Ok(table);
            };
            for (r, role) in roles(&seen) {
                let routes: Vec<&TrafficTarget> = service
                    .traffic
                    .iter()
                    .filter(|t| t.revision.rsplit('/').next() == Some(r.name.as_str()))
                    .collect();
                let percent: i32 = routes.iter().map(|t| t.percent).sum();
                let tags: Vec<&str> = routes
                    .iter()
                    .map(|t| t.tag.as_str())
                    .filter(|t| !t.is_empty())
                    .collect();
                let url = match role {
                    "live" => service.uri.clone(),
                    _ => service
                        .traffic_statuses
                        .iter()
                        .find(|s| !s.tag.is_empty() && tags.contains(&s.tag.as_str()))
                        .map(|s| s.uri.clone())
                        .unwrap_or_default(),
                };
                let ready = match &r.ready {
                    Ready::Yes => "ready".to_string(),
                    Ready::Pending => "pending".to_string(),
                    Ready::Failed(_) => "failed".to_string(),
                };
                table.rows.push(vec![
                    role.to_string(),
                    r.name.clone(),
                    r.version.clone().unwrap_or_default(),
                    ready,
                    format!("{percent}%"),
                    tags.join(","),
                    r.image.clone(),
                    url,
                ]);
            }
            Ok(table)
        })
    }

    fn cleanup(&self, ctx: &Ctx, execute: bool) -> Result<Vec<Cleanup>> {
        let c = ctx.config_for(PymEnv::Live)?;
        ctx.block_on(async {
            let gcp = connect(&c).await?;
            let (_, seen) = gcp.observe().await?;
            let mut lines = Vec::new();
            for (r, fate) in decide_cleanup(&seen, c.keep_previous as usize) {
                let fate = match fate {
                    Fate::Go { did, would, .. } if execute => {
                        let name = format!("{}/revisions/{}", gcp.name(), r.name);
                        let poller = gcp
                            .revisions
                            .delete_revision()
                            .set_name(name.clone())
                            .poller();
                        poller
                            .until_done()
                            .await
                            .map_err(|e| gcp_error("revisions.delete", &name, e))?;
                        Fate::Go {
                            done: true,
                            did,
                            would,
                        }
                    }
                    f => f,
                };
                lines.push(Cleanup {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    fate,
                });
            }
            Ok(lines)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "261128-1200-10-aaaaaa";
    const V2: &str = "261128-1300-11-bbbbbb";

    fn rev(name: &str, version: &str, env: &str, ready: Ready) -> Rev {
        Rev {
            name: name.into(),
            version: Some(version.into()),
            env: Some(env.into()),
            image: format!("r/app@sha256:{version}"),
            ready,
            created: 0,
        }
    }

    fn route(revision: &str, percent: i32, tag: Option<&str>) -> Route {
        Route {
            revision: revision.into(),
            percent,
            tag: tag.map(String::from),
        }
    }

    fn svc(traffic: Vec<Route>, history: &str) -> Svc {
        let mut annotations = HashMap::new();
        if !history.is_empty() {
            annotations.insert(LIVE_HISTORY.to_string(), history.to_string());
        }
        Svc {
            etag: "e".into(),
            traffic,
            annotations,
            reconciling: false,
            latest_created: String::new(),
        }
    }

    #[test]
    fn names_are_refused_before_any_call_as_cloud_run_would_refuse_them() {
        assert_eq!(bad_service_id("hello"), None);
        assert!(bad_service_id("Hello").is_some());
        assert!(bad_service_id("hello-").is_some());
        assert!(bad_service_id("1hello").is_some());
        let long = "a".repeat(40);
        assert!(
            bad_service_id(&long).unwrap().contains("at most 46"),
            "{:?}",
            bad_service_id(&long)
        );
        assert_eq!(bad_service_id(&"a".repeat(39)), None);
        // Revision names stay within 63 characters.
        let stem = revision_stem(&"a".repeat(39), V1);
        assert_eq!(stem, format!("{}-10-aaaaaa", "a".repeat(39)));
        assert_eq!(revision_stem("hello", V1), format!("hello-{V1}"));
    }

    #[test]
    fn the_first_stage_creates_the_service_pinned_to_its_staged_revision() {
        let acts =
            decide_stage(&Seen::default(), "hello", V1, "r/app@sha256:1", false, true).unwrap();
        let name = format!("hello-{V1}-s1");
        assert_eq!(
            acts[0],
            Act::Create {
                revision: name.clone(),
                image: "r/app@sha256:1".into(),
                env: PymEnv::Staging,
                traffic: vec![route(&name, 100, Some("staging"))]
            }
        );
        assert_eq!(acts[1], Act::Access { public: true });
        assert!(
            matches!(&acts[2], Act::Check { tag: Some(t), env: PymEnv::Staging, .. } if t == "staging")
        );
    }

    #[test]
    fn a_later_stage_moves_only_the_tag_never_the_traffic() {
        let live = format!("hello-{V1}-l1");
        let seen = Seen {
            service: Some(svc(
                vec![
                    route(&live, 100, None),
                    route(&format!("hello-{V1}-s1"), 0, Some("staging")),
                ],
                &live,
            )),
            revisions: vec![
                rev(&live, V1, "live", Ready::Yes),
                rev(&format!("hello-{V1}-s1"), V1, "staging", Ready::Yes),
            ],
        };
        let acts = decide_stage(&seen, "hello", V2, "r/app@sha256:2", false, true).unwrap();
        let Act::Deploy {
            revision,
            traffic,
            env,
            ..
        } = &acts[0]
        else {
            panic!("{acts:?}")
        };
        assert_eq!(revision, &format!("hello-{V2}-s1"));
        assert_eq!(*env, PymEnv::Staging);
        assert_eq!(
            traffic,
            &vec![route(&live, 100, None), route(revision, 0, Some("staging"))]
        );
    }

    #[test]
    fn stage_pins_a_latest_entry_and_reuses_a_ready_staged_revision() {
        // A service made elsewhere, 100% LATEST (read as the revision it serves).
        let seen = Seen {
            service: Some(svc(vec![route("hello-00001-abc", 100, None)], "")),
            revisions: vec![rev("hello-00001-abc", "", "", Ready::Yes)],
        };
        let acts = decide_stage(&seen, "hello", V1, "i@sha256:1", false, true).unwrap();
        let Act::Deploy { traffic, .. } = &acts[0] else {
            panic!()
        };
        assert_eq!(traffic[0], route("hello-00001-abc", 100, None));
        // The same version staged and ready: only the check (or the tag).
        let mut r = rev(&format!("hello-{V1}-s1"), V1, "staging", Ready::Yes);
        r.image = "i@sha256:1".into();
        let seen = Seen {
            service: Some(svc(
                vec![
                    route("hello-00001-abc", 100, None),
                    route(&r.name, 0, Some("staging")),
                ],
                "",
            )),
            revisions: vec![r.clone()],
        };
        assert!(matches!(
            decide_stage(&seen, "hello", V1, "i@sha256:1", false, true).unwrap()[..],
            [Act::Access { public: true }, Act::Check { .. }]
        ));
        // Dirty: a new revision every time.
        assert!(
            matches!(&decide_stage(&seen, "hello", V1, "i@sha256:1", true, true).unwrap()[0], Act::Deploy { revision, .. } if revision.ends_with("-s2"))
        );
    }

    #[test]
    fn a_stage_after_a_failed_first_stage_gives_the_new_revision_all_traffic() {
        let failed = format!("hello-{V1}-s1");
        let seen = Seen {
            service: Some(svc(vec![route(&failed, 100, Some("staging"))], "")),
            revisions: vec![rev(&failed, V1, "staging", Ready::Failed("deaf".into()))],
        };
        let acts = decide_stage(&seen, "hello", V2, "i@sha256:2", false, true).unwrap();
        let new = format!("hello-{V2}-s1");
        assert!(
            matches!(&acts[0], Act::Deploy { traffic, .. } if traffic == &vec![route(&new, 100, Some("staging"))]),
            "{acts:?}"
        );
    }

    #[test]
    fn promote_checks_the_next_tag_before_moving_all_traffic_and_records_history() {
        let (l1, s1, s2) = (
            format!("hello-{V1}-l1"),
            format!("hello-{V1}-s1"),
            format!("hello-{V2}-s1"),
        );
        let seen = Seen {
            service: Some(svc(
                vec![route(&l1, 100, None), route(&s2, 0, Some("staging"))],
                &l1,
            )),
            revisions: vec![
                rev(&s2, V2, "staging", Ready::Yes),
                rev(&l1, V1, "live", Ready::Yes),
                rev(&s1, V1, "staging", Ready::Yes),
            ],
        };
        let acts = decide_promote(&seen, "hello", V2).unwrap();
        let l2 = format!("hello-{V2}-l1");
        assert_eq!(
            acts[0],
            Act::Deploy {
                revision: l2.clone(),
                image: format!("r/app@sha256:{V2}"),
                env: PymEnv::Live,
                traffic: vec![
                    route(&l1, 100, None),
                    route(&s2, 0, Some("staging")),
                    route(&l2, 0, Some("next"))
                ]
            }
        );
        assert_eq!(
            acts[1],
            Act::Check {
                tag: Some("next".into()),
                version: V2.into(),
                env: PymEnv::Live
            }
        );
        assert_eq!(
            acts[2],
            Act::Route {
                traffic: vec![route(&l2, 100, None), route(&s2, 0, Some("staging"))],
                history: vec![l1.clone(), l2.clone()],
                rolled_back: vec![]
            }
        );
        assert_eq!(
            acts[3],
            Act::Check {
                tag: None,
                version: V2.into(),
                env: PymEnv::Live
            }
        );
    }

    #[test]
    fn promote_refuses_what_is_not_staged_and_is_a_check_when_already_live() {
        let s1 = format!("hello-{V1}-s1");
        let seen = Seen {
            service: Some(svc(vec![route(&s1, 100, Some("staging"))], "")),
            revisions: vec![rev(&s1, V1, "staging", Ready::Yes)],
        };
        let msg = decide_promote(&seen, "hello", V2).unwrap_err().to_string();
        assert!(msg.contains("holds"), "{msg}");
        assert!(decide_promote(&Seen::default(), "hello", V1).is_err());
        // The first promote: the staged revision holds all traffic (Cloud Run had nothing else); it is not history.
        let acts = decide_promote(&seen, "hello", V1).unwrap();
        let l1 = format!("hello-{V1}-l1");
        assert!(matches!(&acts[2], Act::Route { history, .. } if history == &vec![l1.clone()]));
        let seen = Seen {
            service: Some(svc(
                vec![route(&l1, 100, None), route(&s1, 0, Some("staging"))],
                &l1,
            )),
            revisions: vec![
                rev(&l1, V1, "live", Ready::Yes),
                rev(&s1, V1, "staging", Ready::Yes),
            ],
        };
        assert!(matches!(
            decide_promote(&seen, "hello", V1).unwrap()[..],
            [Act::Check { tag: None, .. }]
        ));
    }

    #[test]
    fn rollback_goes_to_the_last_live_before_never_to_one_rolled_back_from() {
        let (a, b, c) = ("hello-a-l1", "hello-b-l1", "hello-c-l1");
        let mut s = svc(vec![route(c, 100, None)], &format!("{a} {b} {c}"));
        s.annotations.insert(ROLLED_BACK.into(), b.into());
        let seen = Seen {
            service: Some(s),
            revisions: vec![
                rev(c, "c", "live", Ready::Yes),
                rev(b, "b", "live", Ready::Yes),
                rev(a, "a", "live", Ready::Yes),
            ],
        };
        let (current, target, acts) = decide_rollback(&seen, "hello").unwrap();
        assert_eq!((current.name.as_str(), target.name.as_str()), (c, a));
        assert_eq!(
            acts[0],
            Act::Route {
                traffic: vec![route(a, 100, None)],
                history: vec![a.into(), b.into(), c.into(), a.into()],
                rolled_back: vec![b.into(), c.into()]
            }
        );
        // Nothing earlier: refused.
        let seen = Seen {
            service: Some(svc(vec![route(c, 100, None)], c)),
            revisions: vec![rev(c, "c", "live", Ready::Yes)],
        };
        assert!(decide_rollback(&seen, "hello").is_err());
    }

    #[test]
    fn cleanup_keeps_the_newest_previous_and_what_is_routed() {
        let names = ["hello-a-l1", "hello-b-l1", "hello-c-l1", "hello-d-l1"];
        let s = svc(
            vec![
                route("hello-d-l1", 100, None),
                route("hello-d-s1", 0, Some("staging")),
            ],
            &names.join(" "),
        );
        let mut revisions: Vec<Rev> = names
            .iter()
            .map(|n| rev(n, n, "live", Ready::Yes))
            .collect();
        revisions.push(rev("hello-d-s1", "d", "staging", Ready::Yes));
        revisions.push(rev("hello-c-s1", "c", "staging", Ready::Yes));
        revisions.push(rev(
            "hello-x-s1",
            "x",
            "staging",
            Ready::Failed("no".into()),
        ));
        let seen = Seen {
            service: Some(s),
            revisions,
        };
        let fates: Vec<(String, bool)> = decide_cleanup(&seen, 1)
            .into_iter()
            .map(|(r, f)| (r.name.clone(), matches!(f, Fate::Go { .. })))
            .collect();
        assert_eq!(
            fates,
            vec![
                ("hello-c-l1".into(), false),
                ("hello-b-l1".into(), true),
                ("hello-a-l1".into(), true),
                ("hello-c-s1".into(), true),
                ("hello-x-s1".into(), true)
            ]
        );
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

    #[test]
    fn a_re_promoted_revision_is_no_longer_rolled_back_from_and_a_foreign_live_one_is_history() {
        let (a, b) = (format!("hello-{V1}-l1"), format!("hello-{V2}-s1"));
        let mut s = svc(
            vec![route(&a, 100, None), route(&b, 0, Some("staging"))],
            &a,
        );
        s.annotations
            .insert(ROLLED_BACK.into(), format!("hello-{V2}-l1"));
        let l2 = format!("hello-{V2}-l1");
        let seen = Seen {
            service: Some(s),
            revisions: vec![
                rev(&b, V2, "staging", Ready::Yes),
                rev(&l2, V2, "live", Ready::Yes),
                rev(&a, V1, "live", Ready::Yes),
            ],
        };
        let acts = decide_promote(&seen, "hello", V2).unwrap();
        assert!(
            matches!(&acts[..], [Act::Route { .. }, Act::Check { .. }, Act::Route { rolled_back, .. }, Act::Check { .. }] if rolled_back.is_empty()),
            "{acts:?}"
        );
        // A service made by gcloud: its live revision (no labels) becomes history.
        let seen = Seen {
            service: Some(svc(
                vec![
                    route("hello-00001-abc", 100, None),
                    route(&b, 0, Some("staging")),
                ],
                "",
            )),
            revisions: vec![
                rev(&b, V2, "staging", Ready::Yes),
                Rev {
                    name: "hello-00001-abc".into(),
                    version: None,
                    env: None,
                    image: "x".into(),
                    ready: Ready::Yes,
                    created: 0,
                },
            ],
        };
        let acts = decide_promote(&seen, "hello", V2).unwrap();
        assert!(
            matches!(&acts[2], Act::Route { history, .. } if history == &vec!["hello-00001-abc".to_string(), l2.clone()]),
            "{acts:?}"
        );
        // A live revision that reports Unknown for a moment keeps its traffic at a stage.
        let seen = Seen {
            service: Some(svc(vec![route(&a, 100, None)], &a)),
            revisions: vec![rev(&a, V1, "live", Ready::Pending)],
        };
        assert!(
            matches!(&decide_stage(&seen, "hello", V2, "i@sha256:2", false, true).unwrap()[0], Act::Deploy { traffic, .. } if traffic[0] == route(&a, 100, None))
        );
    }

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            url_host("https://hello-abc-uc.a.run.app"),
            ("hello-abc-uc.a.run.app".into(), 443)
        );
        assert_eq!(
            url_host("http://staging---hello-abc-uc.a.run.localhost:8123/"),
            ("staging---hello-abc-uc.a.run.localhost".into(), 8123)
        );
    }
}

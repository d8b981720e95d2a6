//! The gcp-cloud-run target: one Cloud Run service, a revision per version and environment,
//! traffic always pinned to named revisions; driven by Google's official client,
//! `google-cloud-run-v2` (feature `gcp-cloud-run`).
//!
//! - `stage` adds the revision `<service>-<version>-s<n>` (creating the service the first
//!   time) running the pushed image **by digest** with `PYM_ENV=staging`, tagged `staging`,
//!   with no traffic change: every traffic entry names a revision, never LATEST, so a staged
//!   revision can never take live traffic (on the first stage Cloud Run routes the new
//!   service to it: it has nothing else).
//! - `promote` makes live what staging runs (`super::Staged`, read through the `Ledger`):
//!   it adds `<service>-<version>-l<n>`, the staged revision's image (the same digest) with
//!   `PYM_ENV=live`, tagged `next`, checks it serves the version on its own tag URL, then
//!   moves 100% of the traffic to it in one update, and checks the service URL. The
//!   revision live before keeps running at 0%, ready for `rollback`.
//! - The deploy record (`targets::history`) is one service annotation,
//!   `pymdeploy.dev/record`, written in the very update that moves the traffic (and by
//!   `Ledger::record` alone, for staging acceptance); rollback, cleanup and status go by
//!   it. A service an older pymdeploy deployed has `pymdeploy.dev/live-history` and
//!   `pymdeploy.dev/rolled-back` (revision names) instead: they are read through the
//!   revisions' labels, and the first write replaces them.
//!
//! Each changing command observes the service, decides its `Act`s (pure, unit-tested) and
//! hands them to `targets::plan::execute` through `Runner`; `--dry-run` prints the same
//! decision through the same `describe`. Every update carries the etag of the service it
//! was decided from: a service changed by someone else meanwhile is refused by Cloud Run
//! (ABORTED), never overwritten. Calls that answer 429 or 503 are retried with backoff (a
//! retried update cannot apply twice: its etag is stale the second time). Credentials are
//! Application Default Credentials; the endpoint is gcloud's
//! `CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN` when set.

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

use super::history::{self, Event, History};
use super::plan::{self, Actor};
use super::{Address, Change, Cleanup, Fate, Ledger, Staged, Table, url_host};
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::ops::state;
use crate::output::StepProgress;

/// The tag of the staged revision, and of the live candidate while promote checks it.
pub const TAG_STAGING: &str = "staging";
pub const TAG_NEXT: &str = "next";
/// The service annotation that holds the deploy record (`History::render`).
const RECORD: &str = "pymdeploy.dev/record";
/// What an older pymdeploy recorded instead, read once and replaced by `RECORD`: the
/// revisions live, oldest first; those rolled back from.
const LIVE_HISTORY: &str = "pymdeploy.dev/live-history";
const ROLLED_BACK: &str = "pymdeploy.dev/rolled-back";
/// Revision labels: the version and environment a revision runs.
const LABEL_VERSION: &str = "pym-version";
const LABEL_ENV: &str = "pym-env";
/// Cloud Run: a tag and its service name make one DNS label of the tag URL.
const TAG_AND_SERVICE_MAX: usize = 46;
const REVISION_MAX: usize = 63;

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

impl Rev {
    /// The version the deploy record knows it by: its `pym-version`, else (a revision
    /// pymdeploy did not make) its name.
    pub fn key(&self) -> &str {
        self.version
            .as_deref()
            .filter(|v| !v.is_empty())
            .unwrap_or(&self.name)
    }

    fn is_staging(&self) -> bool {
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

    fn tagged(&self, tag: &str) -> Option<&Route> {
        self.traffic.iter().find(|r| r.tag.as_deref() == Some(tag))
    }
}

fn split_list(v: Option<&String>) -> Vec<String> {
    v.map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// A service's deploy record: its `pymdeploy.dev/record`; or, for a service only an
/// older pymdeploy deployed, its revision-name annotations read through the revisions'
/// labels (revisions since deleted are passed over).
pub fn record_of(annotations: &HashMap<String, String>, revisions: &[Rev]) -> History {
    if let Some(text) = annotations.get(RECORD) {
        return History::parse(text);
    }
    let mut h = History::default();
    let rev = |n: &str| revisions.iter().find(|r| r.name == n);
    for name in split_list(annotations.get(LIVE_HISTORY)) {
        if let Some(r) = rev(&name) {
            h.push(Event::Live, r.key(), None, r.created);
        }
    }
    // The old list held the revisions rolled back from and not made live since.
    for name in split_list(annotations.get(ROLLED_BACK)) {
        if let Some(r) = rev(&name) {
            h.push(Event::RolledBack, r.key(), None, r.created);
        }
    }
    h
}

/// The annotations with `notes` added to the deploy record (read from them, else
/// `base`), the older annotations replaced by it.
fn recorded(
    annotations: &HashMap<String, String>,
    base: &History,
    notes: &[Note],
    now: i64,
) -> HashMap<String, String> {
    let mut h = annotations
        .get(RECORD)
        .map(|t| History::parse(t))
        .unwrap_or_else(|| base.clone());
    for (event, version, digest) in notes {
        h.push(*event, version, digest.as_deref(), now);
    }
    let mut out = annotations.clone();
    out.remove(LIVE_HISTORY);
    out.remove(ROLLED_BACK);
    out.insert(RECORD.into(), h.render());
    out
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
    fn revision(&self, name: &str) -> Option<&Rev> {
        self.revisions.iter().find(|r| r.name == name)
    }

    /// The revision with the most traffic.
    fn current(&self) -> Option<&Rev> {
        self.service
            .as_ref()?
            .live()
            .and_then(|l| self.revision(&l.revision))
    }

    /// The revision a rollback to `version` makes live: its newest ready revision made
    /// for live (or by other means than pymdeploy).
    fn live_revision(&self, version: &str) -> Option<&Rev> {
        self.revisions
            .iter()
            .find(|r| r.key() == version && !r.is_staging() && r.ready == Ready::Yes)
    }

    /// The versions that have such a revision, newest first.
    fn available(&self) -> Vec<String> {
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

/// An entry to add to the deploy record: what happened, to which version, on which
/// image's digest.
pub type Note = (Event, String, Option<String>);

/// One thing a step does to Cloud Run, in order. `PutBack` only undoes.
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
    /// UpdateService(traffic, annotations): traffic moves, and `record` is added to the
    /// deploy record in the same update. With `undo`, a switch of live: undone by putting
    /// the traffic back and adding `undo` to the record.
    Route {
        traffic: Vec<Route>,
        record: Vec<Note>,
        undo: Option<Vec<Note>>,
    },
    /// Undo of a switch: the traffic as it was (the service read afresh), `record` added.
    PutBack {
        traffic: Vec<Route>,
        record: Vec<Note>,
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

fn said(notes: &[Note]) -> String {
    notes
        .iter()
        .map(|(e, v, _)| match e {
            Event::Live => format!("{v} live"),
            Event::RolledBack => format!("{v} rolled back from"),
            Event::Accepted => format!("{v} accepted"),
        })
        .collect::<Vec<_>>()
        .join(", ")
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
        let record = |notes: &[Note]| match notes.is_empty() {
            true => String::new(),
            false => format!("; record {} on the service", said(notes)),
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
            Act::Route {
                traffic, record: r, ..
            } => format!("move {service}'s traffic: {}{}", routes(traffic), record(r)),
            Act::PutBack { traffic, record: r } => format!(
                "put {service}'s traffic back: {}{}",
                routes(traffic),
                record(r)
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

/// The traffic without entries on revisions that cannot serve (a first stage that
/// failed): Cloud Run refuses an update that keeps them.
fn serving(seen: &Seen, svc: &Svc) -> Vec<Route> {
    svc.traffic
        .iter()
        .filter(|r| {
            !seen
                .revision(&r.revision)
                .is_some_and(|x| matches!(x.ready, Ready::Failed(_)))
        })
        .cloned()
        .collect()
}

fn busy(id: &str) -> anyhow::Error {
    hinted(
        format!("the Cloud Run service {id} is being changed by another operation"),
        "wait for it to finish (`gcloud run services describe`), then run again",
    )
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
        return Err(busy(id));
    }
    let reusable = (!dirty)
        .then(|| {
            seen.revisions.iter().find(|r| {
                r.version.as_deref() == Some(version)
                    && r.is_staging()
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
                record: Vec::new(),
                undo: None,
            },
            Act::Access { public },
            check,
        ]);
    }
    let revision = next_revision_name(id, version, PymEnv::Staging, &seen.revisions);
    // With no serving entry left, the new revision takes all traffic, as on a first stage.
    let mut traffic = with_tag(&serving(seen, svc), TAG_STAGING, &revision);
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

/// Promote: makes live what staging runs (`staged`, never HEAD's version): a revision of
/// the staged image with `PYM_ENV=live`, checked on its `next` tag, then all traffic to it
/// (its `Live` entry recorded in the same update) and the service URL checked. Refused
/// unless the `staging` tag still points to that ready revision.
pub fn decide_promote(seen: &Seen, id: &str, staged: &Staged) -> Result<Vec<Act>> {
    let version = staged.version.as_str();
    let stage_first = || {
        hinted(
            format!("version {version} is not staged on the Cloud Run service {id}"),
            "stage it first: `cargo xtask stage` (and `cargo xtask accept-staging`)",
        )
    };
    let svc = seen.service.as_ref().ok_or_else(stage_first)?;
    let on_staging = svc
        .tagged(TAG_STAGING)
        .and_then(|t| seen.revision(&t.revision))
        .ok_or_else(stage_first)?;
    if on_staging.version.as_deref() != Some(version) || on_staging.image != staged.image {
        return Err(hinted(
            format!(
                "the `staging` tag of {id} holds {} ({}, {}), not {version} ({})",
                on_staging.name,
                on_staging.version.as_deref().unwrap_or("no version label"),
                on_staging.image,
                staged.image
            ),
            "staging changed meanwhile: test what it runs with `cargo xtask accept-staging`, then promote",
        ));
    }
    if on_staging.ready != Ready::Yes {
        return Err(hinted(
            format!("the staged revision {} is not ready", on_staging.name),
            "stage again: `cargo xtask stage`",
        ));
    }
    if svc.reconciling {
        return Err(busy(id));
    }
    let check_live = Act::Check {
        tag: None,
        version: version.into(),
        env: PymEnv::Live,
    };
    // Already live (a promote run again): only the check.
    let current = seen.current();
    if current
        .is_some_and(|c| c.version.as_deref() == Some(version) && c.env.as_deref() == Some("live"))
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
                    record: Vec::new(),
                    undo: None,
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
    // The version live until now enters the record first when it is not there: one made
    // by other means (a service moved to pymdeploy); not a staged one (the first stage's
    // revision holds the traffic of a new service).
    let before = current.filter(|r| !r.is_staging());
    let mut record = Vec::new();
    if let Some(b) = before
        && seen.history.live_order().first() != Some(&b.key())
    {
        record.push((Event::Live, b.key().to_string(), None));
    }
    record.push((
        Event::Live,
        version.to_string(),
        Some(staged.digest.clone()),
    ));
    // Undone, it was rolled back from, and what was live before is live again.
    let mut undo = vec![(Event::RolledBack, version.to_string(), None)];
    undo.extend(before.map(|b| (Event::Live, b.key().to_string(), None)));
    let after_next = with_tag(&svc.traffic, TAG_NEXT, &revision);
    acts.push(Act::Route {
        traffic: all_to(&after_next, &revision),
        record,
        undo: Some(undo),
    });
    acts.push(check_live);
    Ok(acts)
}

/// Rollback: all traffic to the version `history::rollback_to` chooses among those whose
/// live revisions are still there and ready (`to` when named; never one a rollback left
/// unless named), recorded in the same update. Returns the revision live now, the one
/// rolled back to, and the actions.
pub fn decide_rollback(seen: &Seen, id: &str, to: Option<&str>) -> Result<(Rev, Rev, Vec<Act>)> {
    let svc = seen.service.as_ref().ok_or_else(|| {
        hinted(
            format!("the Cloud Run service {id} does not exist"),
            "deploy first: `cargo xtask deploy`",
        )
    })?;
    let current = seen
        .current()
        .ok_or_else(|| anyhow!("no revision of {id} serves traffic"))?
        .clone();
    if svc.reconciling {
        return Err(busy(id));
    }
    let version = history::rollback_to(&seen.history, Some(current.key()), &seen.available(), to)?;
    let target = seen
        .live_revision(&version)
        .cloned()
        .ok_or_else(|| anyhow!("no ready revision of {version} on {id}"))?;
    let from = current.key().to_string();
    let acts = vec![
        Act::Route {
            traffic: all_to(&serving(seen, svc), &target.name),
            record: vec![
                (Event::RolledBack, from.clone(), None),
                (Event::Live, version.clone(), None),
            ],
            undo: Some(vec![
                (Event::RolledBack, version.clone(), None),
                (Event::Live, from, None),
            ]),
        },
        Act::Check {
            tag: None,
            version,
            env: PymEnv::Live,
        },
    ];
    Ok((current, target, acts))
}

/// Each revision's role: live (most traffic), staging (the tag), previous (made for live,
/// its version live before; the most recent first), rolled-back (its version a rollback
/// left), or none.
pub fn roles(seen: &Seen) -> Vec<(&Rev, &'static str)> {
    let Some(svc) = &seen.service else {
        return Vec::new();
    };
    let live = svc.live().map(|l| l.revision.clone());
    let staging = svc.tagged(TAG_STAGING).map(|t| t.revision.clone());
    let order = seen.history.live_order();
    let mut out: Vec<(&Rev, &'static str, usize)> = seen
        .revisions
        .iter()
        .map(|r| {
            let recency = order
                .iter()
                .position(|v| *v == r.key())
                .filter(|_| !r.is_staging());
            let (role, rank) = if Some(&r.name) == live.as_ref() {
                ("live", 0)
            } else if Some(&r.name) == staging.as_ref() {
                ("staging", 1)
            } else if !r.is_staging() && seen.history.rolled_back_from(r.key()) {
                ("rolled-back", 4)
            } else if recency.is_some() {
                ("previous", 2)
            } else {
                ("", 3)
            };
            (r, role, rank * 1000 + recency.unwrap_or(999).min(999))
        })
        .collect();
    out.sort_by_key(|(_, _, k)| *k);
    out.into_iter().map(|(r, role, _)| (r, role)).collect()
}

/// Cleanup: revisions with no traffic and no tag go, but the revisions of the `keep`
/// previous versions rollback needs (`history::beyond_kept`).
pub fn decide_cleanup(seen: &Seen, keep: usize) -> Vec<(&Rev, Fate)> {
    let Some(svc) = &seen.service else {
        return Vec::new();
    };
    let current = seen.current().map(|r| r.key().to_string());
    let available = seen.available();
    let gone = history::beyond_kept(&seen.history, current.as_deref(), &available, keep);
    let needed = |r: &Rev| {
        Some(r.key()) != current.as_deref()
            && !gone.contains(&r.key())
            && seen
                .live_revision(r.key())
                .is_some_and(|l| l.name == r.name)
    };
    roles(seen)
        .into_iter()
        .filter(|(_, role)| !matches!(*role, "live" | "staging"))
        .map(|(r, _)| {
            let routed = svc.traffic.iter().find(|t| t.revision == r.name);
            let fate = if let Some(t) = routed {
                Fate::Keep(Some(match &t.tag {
                    Some(tag) => format!("tagged {tag}"),
                    None => format!("serves {}%", t.percent),
                }))
            } else if r.name == svc.latest_created {
                Fate::Keep(Some("the service's latest revision".into()))
            } else if needed(r) {
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

    /// Adds `notes` to the deploy record by an update of the annotations alone (no
    /// revision is made), carrying the etag read; a service changed meanwhile is read
    /// again and the update retried.
    async fn append(&self, notes: &[Note], now: i64) -> Result<()> {
        for _ in 0..5 {
            let (service, seen) = self.observe().await?;
            let service = service.ok_or_else(|| {
                hinted(
                    format!("the Cloud Run service {} does not exist", self.id),
                    "deploy first: `cargo xtask deploy`",
                )
            })?;
            let annotations = recorded(&service.annotations, &seen.history, notes, now);
            let mask = google_cloud_wkt::FieldMask::default().set_paths(["annotations"]);
            let done = self
                .services
                .update_service()
                .set_service(service.set_annotations(annotations))
                .set_update_mask(mask)
                .poller()
                .until_done()
                .await;
            match done {
                Ok(_) => return Ok(()),
                Err(e) if e.status().is_some_and(|s| s.code == Code::Aborted) => continue,
                Err(e) => return Err(gcp_error("services.update", &self.name(), e)),
            }
        }
        bail!(
            "cannot write the deploy record of {}: the service kept changing while it was written",
            self.id
        )
    }

    /// Waits for an operation, a line for each change of the service's conditions. Polls
    /// with backoff (one second, up to five); an error while polling is retried until
    /// the deadline, as the operation goes on regardless. Ctrl-C is the caller's
    /// (`Ctx::wait`, which the executor holds off while a change is made or undone).
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

    /// Sets the service's traffic back to what was read before a change, adding `record`
    /// to the deploy record (read afresh, so that entries written meanwhile stay); the
    /// service read again first. Returns the service after it.
    async fn put_back(
        &self,
        traffic: Vec<TrafficTarget>,
        record: &[Note],
        base: &History,
        timeout: Duration,
        progress: &StepProgress<'_>,
    ) -> Result<Service> {
        let now = self
            .service()
            .await?
            .ok_or_else(|| anyhow!("the service {} vanished", self.id))?;
        if now.traffic == traffic && record.is_empty() {
            return Ok(now);
        }
        let annotations = match record.is_empty() {
            true => now.annotations.clone(),
            false => recorded(&now.annotations, base, record, state::now()),
        };
        let svc = now.set_traffic(traffic).set_annotations(annotations);
        let mask = google_cloud_wkt::FieldMask::default().set_paths(["traffic", "annotations"]);
        let poller = self
            .services
            .update_service()
            .set_service(svc)
            .set_update_mask(mask)
            .poller();
        let s = self
            .wait_through("services.update", poller, timeout, progress)
            .await?;
        progress.line("the service's traffic is back as it was");
        Ok(s)
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

/// Carries out the Cloud Run target's actions (`targets::plan::execute` runs them): each
/// update carries the etag of the service as last read or written.
struct Runner {
    gcp: Gcp,
    c: Config,
    /// The service as last read or written.
    current: Option<Service>,
    /// The deploy record as observed: the base of the first write to a service that has
    /// only the older annotations.
    base: History,
    /// The version the revisions made run (their `pym-version`).
    version: String,
}

impl Runner {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.c.gcp_timeout)
    }

    fn base(&self) -> Result<Service> {
        self.current
            .clone()
            .ok_or_else(|| anyhow!("the service {} vanished", self.gcp.id))
    }

    async fn act(&mut self, act: &Act, progress: &StepProgress<'_>) -> Result<Option<Act>> {
        let (gcp, c, timeout) = (&self.gcp, &self.c, self.timeout());
        match act {
            Act::Create {
                revision,
                image,
                env,
                traffic,
            } => {
                let svc = Service::new()
                    .set_template(template(c, revision, image, &self.version, *env)?)
                    .set_traffic(targets_of(traffic))
                    .set_labels([("managed-by".to_string(), "pymdeploy".to_string())]);
                let poller = gcp
                    .services
                    .create_service()
                    .set_parent(gcp.parent.clone())
                    .set_service_id(gcp.id.clone())
                    .set_service(svc)
                    .poller();
                let done = gcp
                    .wait_through("services.create", poller, timeout, progress)
                    .await;
                self.current = Some(gcp.revision_outcome(done, revision).await?);
                Ok(None)
            }
            Act::Deploy {
                revision,
                image,
                env,
                traffic,
            } => {
                let base = self.base()?;
                let before = base.traffic.clone();
                let svc = base
                    .set_template(template(c, revision, image, &self.version, *env)?)
                    .set_traffic(targets_of(traffic));
                let mask =
                    google_cloud_wkt::FieldMask::default().set_paths(["template", "traffic"]);
                let poller = gcp
                    .services
                    .update_service()
                    .set_service(svc)
                    .set_update_mask(mask)
                    .poller();
                let done = gcp
                    .wait_through("services.update", poller, timeout, progress)
                    .await;
                match gcp.revision_outcome(done, revision).await {
                    Ok(s) => {
                        self.current = Some(s);
                        Ok(None)
                    }
                    // Cloud Run keeps the traffic asked for (a tag on the failed revision)
                    // beside what it serves: put it back as it was.
                    Err(e) => Err(
                        match gcp
                            .put_back(before, &[], &self.base, timeout, progress)
                            .await
                        {
                            Ok(_) => e,
                            Err(r) => e.context(format!(
                                "putting the traffic back as it was failed too: {r:#}"
                            )),
                        },
                    ),
                }
            }
            Act::Route {
                traffic,
                record,
                undo,
            } => {
                let base = self.base()?;
                let before = svc_of(&base).traffic;
                let annotations = match record.is_empty() {
                    true => base.annotations.clone(),
                    false => recorded(&base.annotations, &self.base, record, state::now()),
                };
                let svc = base
                    .set_traffic(targets_of(traffic))
                    .set_annotations(annotations);
                let mask =
                    google_cloud_wkt::FieldMask::default().set_paths(["traffic", "annotations"]);
                let poller = gcp
                    .services
                    .update_service()
                    .set_service(svc)
                    .set_update_mask(mask)
                    .poller();
                self.current = Some(
                    gcp.wait_through("services.update", poller, timeout, progress)
                        .await?,
                );
                Ok(undo.clone().map(|record| Act::PutBack {
                    traffic: before,
                    record,
                }))
            }
            Act::PutBack { traffic, record } => {
                let s = gcp
                    .put_back(targets_of(traffic), record, &self.base, timeout, progress)
                    .await?;
                self.current = Some(s);
                Ok(None)
            }
            Act::Access { public } => {
                gcp.set_access(*public, progress).await?;
                Ok(None)
            }
            Act::Check { tag, version, env } => {
                let (url, service_url) = gcp.urls(tag.as_deref()).await?;
                let token = token_for(c, &service_url).await?;
                check_serves(c, &url, token.as_deref(), version, *env).await?;
                progress.line(&format!("{url} serves {version} with PYM_ENV={env}"));
                Ok(None)
            }
        }
    }
}

impl Actor for Runner {
    type Act = Act;

    fn describe(&self, act: &Act) -> String {
        act.describe(&self.gcp.id)
    }

    /// The check of the service URL after a switch: live serves what it was switched to.
    fn commits(&self, act: &Act) -> bool {
        matches!(act, Act::Check { tag: None, .. })
    }

    fn waits(&self, act: &Act) -> bool {
        matches!(act, Act::Check { .. })
    }

    fn run(&mut self, ctx: &Ctx, act: &Act, progress: &StepProgress<'_>) -> Result<Option<Act>> {
        ctx.wait(self.act(act, progress))
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
    let image = super::image_reference(ctx)?;
    if !image.contains("@sha256:") {
        bail!(
            "Cloud Run runs images by digest, and {image} has none: push it first (`cargo xtask push`)"
        );
    }
    Ok(image)
}

impl CloudRunTarget {
    /// Connects and reads the service as `env`'s config names it.
    fn read(ctx: &Ctx, env: PymEnv) -> Result<(Config, Gcp, Option<Service>, Seen)> {
        let c = ctx.config_for(env)?;
        let (gcp, service, seen) = ctx.wait(async {
            let gcp = connect(&c).await?;
            let (service, seen) = gcp.observe().await?;
            Ok((gcp, service, seen))
        })?;
        Ok((c, gcp, service, seen))
    }

    /// The actor for `env`, and what it read.
    fn runner(ctx: &Ctx, env: PymEnv, version: &str) -> Result<(Runner, Seen)> {
        let (c, gcp, current, seen) = Self::read(ctx, env)?;
        let runner = Runner {
            gcp,
            c,
            current,
            base: seen.history.clone(),
            version: version.to_string(),
        };
        Ok((runner, seen))
    }

    /// Stage's, promote's or rollback's actor and actions, decided from the service now:
    /// what a run carries out and what its dry run prints. With `simulate`, a promote of
    /// a version this very run stages (a dry run's) pretends it is staged.
    fn decide(
        ctx: &Ctx,
        change: Change,
        staged: Option<&Staged>,
        to: Option<&str>,
        simulate: bool,
    ) -> Result<(Runner, Seen, Vec<Act>)> {
        match change {
            Change::Stage => {
                let version = ctx.version()?;
                let image = match simulate {
                    false => pushed(ctx)?,
                    true => pushed(ctx).unwrap_or_else(|_| {
                        format!(
                            "{}@sha256:<pushed>",
                            ctx.image_tag()
                                .unwrap_or_default()
                                .rsplit_once(':')
                                .map(|(r, _)| r.to_string())
                                .unwrap_or_default()
                        )
                    }),
                };
                let (runner, seen) = Self::runner(ctx, PymEnv::Staging, &version.to_string())?;
                let acts = decide_stage(
                    &seen,
                    &runner.gcp.id,
                    &version.to_string(),
                    &image,
                    version.dirty,
                    runner.c.gcp_allow_unauthenticated,
                )?;
                Ok((runner, seen, acts))
            }
            Change::Promote => {
                let staged = staged.ok_or_else(|| {
                    anyhow!("promote on the Cloud Run target needs what staging runs")
                })?;
                let (runner, seen) = Self::runner(ctx, PymEnv::Live, &staged.version)?;
                let mut assumed = seen.clone();
                if simulate && assumed.staged().as_ref() != Some(staged) {
                    // In a deploy's dry run stage has not run yet: assume it staged this.
                    let name = next_revision_name(
                        &runner.gcp.id,
                        &staged.version,
                        PymEnv::Staging,
                        &assumed.revisions,
                    );
                    let svc = assumed.service.get_or_insert_with(Svc::default);
                    svc.traffic = with_tag(&svc.traffic, TAG_STAGING, &name);
                    if svc.traffic.iter().all(|r| r.percent == 0) {
                        svc.traffic[0].percent = 100;
                    }
                    assumed.revisions.insert(
                        0,
                        Rev {
                            name,
                            version: Some(staged.version.clone()),
                            env: Some("staging".into()),
                            image: staged.image.clone(),
                            ready: Ready::Yes,
                            created: 0,
                        },
                    );
                }
                let acts = decide_promote(&assumed, &runner.gcp.id, staged)?;
                Ok((runner, seen, acts))
            }
            Change::Rollback => {
                let (mut runner, seen) = Self::runner(ctx, PymEnv::Live, "")?;
                let (_, target, acts) = decide_rollback(&seen, &runner.gcp.id, to)?;
                runner.version = target.key().to_string();
                Ok((runner, seen, acts))
            }
        }
    }
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
            _ => ctx.wait(async {
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

    fn plan(&self, ctx: &Ctx, change: Change, staged: Option<&Staged>) -> Result<Vec<String>> {
        let to = ctx.opts.rollback_to.as_deref();
        let (runner, _, acts) = Self::decide(ctx, change, staged, to, true)?;
        Ok(plan::describe(&runner, &acts))
    }

    fn ledger(&self) -> Option<&dyn Ledger> {
        Some(self)
    }

    fn stage(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let version = ctx.version()?.to_string();
        let (mut runner, _, acts) = Self::decide(ctx, Change::Stage, None, None, false)?;
        plan::execute(ctx, &mut runner, &acts, progress)?;
        Ok(format!(
            "{version} on {}'s `{TAG_STAGING}` tag",
            runner.gcp.id
        ))
    }

    /// Makes live what staging runs (`staged`), whatever HEAD is.
    fn promote(
        &self,
        ctx: &Ctx,
        staged: Option<&Staged>,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let (mut runner, _, acts) = Self::decide(ctx, Change::Promote, staged, None, false)?;
        let version = runner.version.clone();
        plan::execute(ctx, &mut runner, &acts, progress)
            .map_err(|e| e.context(format!("promoting {version} failed")))?;
        if matches!(acts[..], [Act::Check { .. }]) {
            return Ok(format!("{version} is already live on {}", runner.gcp.id));
        }
        Ok(format!(
            "{version} live on {} (100% of the traffic)",
            runner.gcp.id
        ))
    }

    fn rollback(&self, ctx: &Ctx, to: Option<&str>, progress: &StepProgress<'_>) -> Result<String> {
        let (mut runner, seen, acts) = Self::decide(ctx, Change::Rollback, None, to, false)?;
        let back = runner.version.clone();
        let (from, revision) = match &acts[0] {
            Act::Route { traffic, .. } => (
                seen.current()
                    .map(|r| r.key().to_string())
                    .unwrap_or_default(),
                traffic[0].revision.clone(),
            ),
            _ => Default::default(),
        };
        plan::execute(ctx, &mut runner, &acts, progress).map_err(|e| {
            e.context(format!(
                "rolling back to {back} failed; live is unchanged ({from})"
            ))
        })?;
        ctx.set_rolled_back_to(back.clone());
        Ok(format!("{back} live again on {revision} (was {from})"))
    }

    fn status(&self, ctx: &Ctx) -> Result<Table> {
        let (_, _, service, seen) = Self::read(ctx, PymEnv::Live)?;
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
    }

    fn cleanup(&self, ctx: &Ctx, execute: bool) -> Result<Vec<Cleanup>> {
        let (c, gcp, _, seen) = Self::read(ctx, PymEnv::Live)?;
        let mut lines = Vec::new();
        for (r, fate) in decide_cleanup(&seen, c.keep_previous as usize) {
            let fate = match fate {
                Fate::Go { did, would, .. } if execute => {
                    let name = format!("{}/revisions/{}", gcp.name(), r.name);
                    ctx.wait(async {
                        gcp.revisions
                            .delete_revision()
                            .set_name(name.clone())
                            .poller()
                            .until_done()
                            .await
                            .map_err(|e| gcp_error("revisions.delete", &name, e))
                    })?;
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
    }
}

/// What staging runs is the revision its tag points to; the deploy record is the
/// service's annotation (`record_of`).
impl Ledger for CloudRunTarget {
    fn staged(&self, ctx: &Ctx) -> Result<Option<Staged>> {
        Ok(Self::read(ctx, PymEnv::Live)?.3.staged())
    }

    fn history(&self, ctx: &Ctx) -> Result<History> {
        Ok(Self::read(ctx, PymEnv::Live)?.3.history)
    }

    fn record(&self, ctx: &Ctx, event: Event, version: &str, digest: Option<&str>) -> Result<()> {
        let c = ctx.config_for(PymEnv::Live)?;
        let note = (event, version.to_string(), digest.map(String::from));
        ctx.wait(async { connect(&c).await?.append(&[note], state::now()).await })
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
            history: History::default(),
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
            history: History::default(),
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
            history: History::default(),
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
            history: History::default(),
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

    fn seen(service: Svc, revisions: Vec<Rev>) -> Seen {
        let history = record_of(&service.annotations, &revisions);
        Seen {
            service: Some(service),
            revisions,
            history,
        }
    }

    fn record(events: &[(Event, &str)]) -> History {
        let mut h = History::default();
        for (i, (e, v)) in events.iter().enumerate() {
            h.push(*e, v, None, i as i64);
        }
        h
    }

    /// What staging runs when `r` is what its tag points to.
    fn staged(r: &Rev) -> Staged {
        Staged {
            version: r.version.clone().unwrap(),
            image: r.image.clone(),
            digest: r.image.rsplit_once('@').unwrap().1.to_string(),
        }
    }

    fn note(e: Event, v: &str) -> Note {
        (e, v.to_string(), None)
    }

    #[test]
    fn staged_is_the_ready_revision_of_the_staging_tag_by_digest() {
        let s2 = rev(&format!("hello-{V2}-s1"), V2, "staging", Ready::Yes);
        let l1 = rev(&format!("hello-{V1}-l1"), V1, "live", Ready::Yes);
        let traffic = vec![
            route(&l1.name, 100, None),
            route(&s2.name, 0, Some("staging")),
        ];
        let s = seen(svc(traffic.clone(), ""), vec![s2.clone(), l1.clone()]);
        assert_eq!(
            s.staged(),
            Some(Staged {
                version: V2.into(),
                image: format!("r/app@sha256:{V2}"),
                digest: format!("sha256:{V2}"),
            })
        );
        let mut pending = s2.clone();
        pending.ready = Ready::Pending;
        assert_eq!(seen(svc(traffic, ""), vec![pending, l1]).staged(), None);
        assert_eq!(Seen::default().staged(), None);
    }

    #[test]
    fn the_record_is_one_annotation_and_older_services_are_read_through_their_labels() {
        let (a, b, c) = ("hello-a-l1", "hello-b-l1", "hello-c-l1");
        let revisions = vec![
            rev(c, "c", "live", Ready::Yes),
            rev(b, "b", "live", Ready::Yes),
            rev(a, "a", "live", Ready::Yes),
            Rev {
                name: "hello-00001-abc".into(),
                version: None,
                env: None,
                image: "x".into(),
                ready: Ready::Yes,
                created: 0,
            },
        ];
        let mut old = HashMap::new();
        old.insert(
            LIVE_HISTORY.to_string(),
            format!("hello-00001-abc {a} hello-gone-l1 {b} {c}"),
        );
        old.insert(ROLLED_BACK.to_string(), b.to_string());
        let h = record_of(&old, &revisions);
        assert_eq!(h.live_order(), ["c", "b", "a", "hello-00001-abc"]);
        assert!(h.rolled_back_from("b") && !h.rolled_back_from("c"));
        // The first write replaces the old annotations with the record, keeping them in it.
        let written = recorded(&old, &h, &[note(Event::Live, "d")], 9);
        assert!(!written.contains_key(LIVE_HISTORY) && !written.contains_key(ROLLED_BACK));
        let back = record_of(&written, &revisions);
        assert_eq!(back.live_order(), ["d", "c", "b", "a", "hello-00001-abc"]);
        assert!(back.rolled_back_from("b"));
        // Later writes add to what the annotation holds (entries written meanwhile stay),
        // not to what was read before.
        let mut meanwhile = written.clone();
        let mut now = back.clone();
        now.push(Event::Accepted, "e", Some("sha256:e"), 10);
        meanwhile.insert(RECORD.into(), now.render());
        let undone = recorded(&meanwhile, &h, &[note(Event::RolledBack, "d")], 11);
        let undone = record_of(&undone, &revisions);
        assert!(undone.accepted("e", "sha256:e") && undone.rolled_back_from("d"));
    }

    #[test]
    fn promote_checks_the_next_tag_before_moving_all_traffic_and_records_it_in_that_move() {
        let (l1, s1, s2) = (
            format!("hello-{V1}-l1"),
            format!("hello-{V1}-s1"),
            format!("hello-{V2}-s1"),
        );
        let staged_rev = rev(&s2, V2, "staging", Ready::Yes);
        let seen = seen(
            svc(
                vec![route(&l1, 100, None), route(&s2, 0, Some("staging"))],
                &l1,
            ),
            vec![
                staged_rev.clone(),
                rev(&l1, V1, "live", Ready::Yes),
                rev(&s1, V1, "staging", Ready::Yes),
            ],
        );
        let acts = decide_promote(&seen, "hello", &staged(&staged_rev)).unwrap();
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
                record: vec![(Event::Live, V2.into(), Some(format!("sha256:{V2}")))],
                undo: Some(vec![note(Event::RolledBack, V2), note(Event::Live, V1)]),
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
        // The switch is undone; its check keeps it.
        let id = "hello";
        assert!(acts[3].describe(id).starts_with("check the service URL"));
    }

    #[test]
    fn promote_makes_live_what_staging_runs_refuses_anything_else_and_is_a_check_when_live() {
        let s1 = rev(&format!("hello-{V1}-s1"), V1, "staging", Ready::Yes);
        let first = seen(
            svc(vec![route(&s1.name, 100, Some("staging"))], ""),
            vec![s1.clone()],
        );
        // Staging moved since it was read (another version, or another image): refused.
        let mut other = staged(&s1);
        other.version = V2.into();
        let msg = decide_promote(&first, "hello", &other)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("holds"), "{msg}");
        let mut rebuilt = staged(&s1);
        rebuilt.image = "r/app@sha256:other".into();
        assert!(decide_promote(&first, "hello", &rebuilt).is_err());
        assert!(decide_promote(&Seen::default(), "hello", &staged(&s1)).is_err());
        // The first deploy: the staged revision holds all traffic (Cloud Run had nothing
        // else); it is not recorded as live, and an undo has nothing to make live again.
        let acts = decide_promote(&first, "hello", &staged(&s1)).unwrap();
        let l1 = format!("hello-{V1}-l1");
        assert!(
            matches!(&acts[2], Act::Route { traffic, record, undo: Some(undo) }
                if traffic[0] == route(&l1, 100, None)
                && record == &vec![(Event::Live, V1.to_string(), Some(format!("sha256:{V1}")))]
                && undo == &vec![note(Event::RolledBack, V1)]),
            "{acts:?}"
        );
        // Already live: only the check.
        let live = seen(
            svc(
                vec![route(&l1, 100, None), route(&s1.name, 0, Some("staging"))],
                &l1,
            ),
            vec![rev(&l1, V1, "live", Ready::Yes), s1.clone()],
        );
        assert!(matches!(
            decide_promote(&live, "hello", &staged(&s1)).unwrap()[..],
            [Act::Check { tag: None, .. }]
        ));
    }

    #[test]
    fn a_re_promoted_version_is_no_longer_rolled_back_from_and_a_foreign_live_one_enters_the_record()
     {
        let (a, s2, l2) = (
            format!("hello-{V1}-l1"),
            format!("hello-{V2}-s1"),
            format!("hello-{V2}-l1"),
        );
        let staged_rev = rev(&s2, V2, "staging", Ready::Yes);
        let mut s = svc(
            vec![route(&a, 100, None), route(&s2, 0, Some("staging"))],
            "",
        );
        let mut h = record(&[
            (Event::Live, V1),
            (Event::Live, V2),
            (Event::RolledBack, V2),
            (Event::Live, V1),
        ]);
        s.annotations.insert(RECORD.into(), h.render());
        let seen_ = seen(
            s,
            vec![
                staged_rev.clone(),
                rev(&l2, V2, "live", Ready::Yes),
                rev(&a, V1, "live", Ready::Yes),
            ],
        );
        // V2's live revision of that image is used again: the `next` tag, then the switch.
        let acts = decide_promote(&seen_, "hello", &staged(&staged_rev)).unwrap();
        let [
            Act::Route { record: tagged, .. },
            Act::Check { .. },
            Act::Route { record, .. },
            Act::Check { .. },
        ] = &acts[..]
        else {
            panic!("{acts:?}")
        };
        assert!(tagged.is_empty());
        for (e, v, d) in record {
            h.push(*e, v, d.as_deref(), 9);
        }
        assert!(!h.rolled_back_from(V2));
        // A service made by gcloud: its live revision (no labels) enters the record first.
        let foreign = Rev {
            name: "hello-00001-abc".into(),
            version: None,
            env: None,
            image: "x".into(),
            ready: Ready::Yes,
            created: 0,
        };
        let seen_ = seen(
            svc(
                vec![
                    route(&foreign.name, 100, None),
                    route(&s2, 0, Some("staging")),
                ],
                "",
            ),
            vec![staged_rev.clone(), foreign.clone()],
        );
        let acts = decide_promote(&seen_, "hello", &staged(&staged_rev)).unwrap();
        assert!(
            matches!(&acts[2], Act::Route { record, .. }
                if record[0] == note(Event::Live, "hello-00001-abc") && record[1].1 == V2),
            "{acts:?}"
        );
        // A live revision that reports Unknown for a moment keeps its traffic at a stage.
        let seen_ = seen(
            svc(vec![route(&a, 100, None)], &a),
            vec![rev(&a, V1, "live", Ready::Pending)],
        );
        assert!(
            matches!(&decide_stage(&seen_, "hello", V2, "i@sha256:2", false, true).unwrap()[0], Act::Deploy { traffic, .. } if traffic[0] == route(&a, 100, None))
        );
    }

    fn three() -> Vec<Rev> {
        vec![
            rev("hello-c-l1", "c", "live", Ready::Yes),
            rev("hello-c-s1", "c", "staging", Ready::Yes),
            rev("hello-b-l1", "b", "live", Ready::Yes),
            rev("hello-a-l1", "a", "live", Ready::Yes),
        ]
    }

    /// The service with `live` serving and the record `events`.
    fn at(live: &str, events: &[(Event, &str)]) -> Seen {
        let mut s = svc(vec![route(live, 100, None)], "");
        s.annotations.insert(RECORD.into(), record(events).render());
        seen(s, three())
    }

    /// Where `decide_rollback` goes, and what it records.
    fn rollback(seen: &Seen, to: Option<&str>) -> Result<(String, Vec<Note>)> {
        let (_, target, acts) = decide_rollback(seen, "hello", to)?;
        let Act::Route {
            record, traffic, ..
        } = &acts[0]
        else {
            panic!("{acts:?}")
        };
        assert_eq!(traffic[0], route(&target.name, 100, None));
        assert!(
            matches!(&acts[1], Act::Check { tag: None, version, .. } if version == target.key())
        );
        Ok((target.name.clone(), record.clone()))
    }

    #[test]
    fn rollback_goes_to_the_version_live_before_never_to_one_rolled_back_from() {
        use Event::*;
        // With a record: a → b, rolled back to a, → c: back to a, not b (newer, but a
        // rollback left it).
        let s = at(
            "hello-c-l1",
            &[
                (Live, "a"),
                (Live, "b"),
                (RolledBack, "b"),
                (Live, "a"),
                (Live, "c"),
            ],
        );
        assert_eq!(
            rollback(&s, None).unwrap(),
            (
                "hello-a-l1".into(),
                vec![note(RolledBack, "c"), note(Live, "a")]
            )
        );
        // Without one (a service deployed by other means): the newest previous version
        // made for live, never a staged revision.
        let s = seen(svc(vec![route("hello-c-l1", 100, None)], ""), three());
        assert_eq!(rollback(&s, None).unwrap().0, "hello-b-l1");
        // Nothing earlier: refused.
        let s = seen(
            svc(vec![route("hello-c-l1", 100, None)], ""),
            vec![rev("hello-c-l1", "c", "live", Ready::Yes)],
        );
        assert!(decide_rollback(&s, "hello", None).is_err());
        // A version whose revision is not ready is not gone back to.
        let mut revs = three();
        revs[3].ready = Ready::Failed("gone".into());
        let mut sv = svc(vec![route("hello-c-l1", 100, None)], "");
        sv.annotations.insert(
            RECORD.into(),
            record(&[(Live, "b"), (RolledBack, "b"), (Live, "a"), (Live, "c")]).render(),
        );
        assert!(decide_rollback(&seen(sv, revs), "hello", None).is_err());
    }

    #[test]
    fn a_second_rollback_goes_further_back_never_returning_unless_named() {
        use Event::*;
        // a → b → c, rolled back to b: a second rollback goes to a, never c.
        let mut events = vec![
            (Live, "a"),
            (Live, "b"),
            (Live, "c"),
            (RolledBack, "c"),
            (Live, "b"),
        ];
        let s = at("hello-b-l1", &events);
        let (to, record) = rollback(&s, None).unwrap();
        assert_eq!(to, "hello-a-l1");
        // Once at a, with both b and c left by rollbacks: refused, naming --to.
        assert_eq!(record, vec![note(RolledBack, "b"), note(Live, "a")]);
        events.extend([(RolledBack, "b"), (Live, "a")]);
        let s = at("hello-a-l1", &events);
        let e = decide_rollback(&s, "hello", None).unwrap_err();
        assert!(
            format!("{e}").contains("rolled back from")
                && crate::error::hint_of(&e).unwrap().contains("--to"),
            "{e}"
        );
        // Named, it goes; a version not kept, or live already, is refused.
        assert_eq!(rollback(&s, Some("c")).unwrap().0, "hello-c-l1");
        assert!(decide_rollback(&s, "hello", Some("a")).is_err());
        assert!(decide_rollback(&s, "hello", Some("zz")).is_err());
    }

    #[test]
    fn cleanup_keeps_what_rollback_needs_and_what_is_routed() {
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
        let fates = |seen: &Seen| -> Vec<(String, bool)> {
            decide_cleanup(seen, 1)
                .into_iter()
                .map(|(r, f)| (r.name.clone(), matches!(f, Fate::Go { .. })))
                .collect()
        };
        assert_eq!(
            fates(&seen(s.clone(), revisions.clone())),
            vec![
                ("hello-c-l1".into(), false),
                ("hello-b-l1".into(), true),
                ("hello-a-l1".into(), true),
                ("hello-c-s1".into(), true),
                ("hello-x-s1".into(), true)
            ]
        );
        // c was rolled back from: rollback goes to b, so b is what one kept version is.
        let mut s = s;
        s.annotations.insert(
            RECORD.into(),
            record(&[
                (Event::Live, "hello-a-l1"),
                (Event::Live, "hello-b-l1"),
                (Event::Live, "hello-c-l1"),
                (Event::RolledBack, "hello-c-l1"),
                (Event::Live, "hello-b-l1"),
                (Event::Live, "hello-d-l1"),
            ])
            .render(),
        );
        let kept: Vec<(String, bool)> = fates(&seen(s, revisions))
            .into_iter()
            .filter(|(n, _)| n.ends_with("-l1"))
            .collect();
        assert_eq!(
            kept,
            vec![
                ("hello-b-l1".into(), false),
                ("hello-a-l1".into(), true),
                ("hello-c-l1".into(), true)
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

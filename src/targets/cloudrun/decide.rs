//! The decisions of stage, promote, rollback, cleanup and destroy: pure functions from `Seen` to a
//! list of `Act`s, unit-tested (`tests.rs`).

use anyhow::{Result, anyhow};

use super::names::next_revision_name;
use super::observe::{Ready, Rev, Route, Seen, Svc};
use super::record::Note;
use super::{TAG_NEXT, TAG_STAGING};
use crate::config::{PymEnv, Rollout};
use crate::error::hinted;
use crate::targets::history::{self, Event};
use crate::targets::{Fate, Scope, Staged};

#[cfg(test)]
mod tests;

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
    /// UpdateService(template, traffic): a new revision; the traffic as given. Undone by
    /// putting the traffic back as it was (the revision, with none, stays).
    Deploy {
        revision: String,
        image: String,
        env: PymEnv,
        traffic: Vec<Route>,
    },
    /// UpdateService(traffic, annotations): traffic moves, and `record` is added to the
    /// deploy record in the same update. Undone as `undo` says.
    Route {
        traffic: Vec<Route>,
        record: Vec<Note>,
        undo: Back,
    },
    /// Judge the new revision on its own requests at `percent` of live
    /// (`targets::rollout::step`, figures from Cloud Monitoring).
    Judge {
        version: String,
        revision: String,
        percent: u8,
    },
    /// The new revision has all of live for `rollout.bake_seconds`, the previous one
    /// still pinned in the traffic list at 0%; judged the same way; then known-good.
    /// Commits the switch.
    Bake { version: String, revision: String },
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
    /// `destroy`: DeleteService, every revision with it (one service holds live's and
    /// staging's) and the deploy record on it.
    DeleteService,
}

/// How a traffic move is undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Back {
    /// The traffic put back as it was before the move, these entries added to the record
    /// (a switch of live's: the version rolled back from, the one live again).
    To(Vec<Note>),
    /// An earlier move's undo puts the traffic back as it was before all of them (a
    /// canary's later steps and its switch: one update goes back, not one per step).
    Earlier,
}

/// Where Cloud Run's figures of a revision come from, as plans say it.
pub const SOURCE: &str = "Cloud Monitoring (run.googleapis.com/request_count and request_latencies of the new revision)";

fn said(notes: &[Note]) -> String {
    notes
        .iter()
        .map(|(e, v, _)| e.say(v))
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
            Act::Judge {
                version, percent, ..
            } => format!("judge {version} at {percent}% ({SOURCE})"),
            Act::Bake { version, .. } => format!("bake {version} ({SOURCE})"),
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
            Act::DeleteService => format!(
                "delete the Cloud Run service {service}, every revision with it (staging's and live's) and the deploy record on it"
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
pub(super) fn with_tag(traffic: &[Route], tag: &str, revision: &str) -> Vec<Route> {
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
                undo: Back::To(Vec::new()),
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
pub fn decide_promote(
    seen: &Seen,
    id: &str,
    staged: &Staged,
    rollout: &Rollout,
) -> Result<Vec<Act>> {
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
                    undo: Back::To(Vec::new()),
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
    // A judged rollout (a canary's steps, a bake) needs a live revision to judge the new
    // one beside and to go back to: the first version goes live whole.
    let judged = rollout.judges() && before.is_some();
    let mut back = Back::To(undo);
    if let Some(b) = before.filter(|_| judged) {
        for percent in rollout.shares() {
            acts.push(Act::Route {
                traffic: split(&after_next, &revision, &b.name, *percent),
                record: Vec::new(),
                undo: std::mem::replace(&mut back, Back::Earlier),
            });
            acts.push(Act::Judge {
                version: version.into(),
                revision: revision.clone(),
                percent: *percent,
            });
        }
    }
    acts.push(Act::Route {
        traffic: all_to(&after_next, &revision),
        record,
        undo: back,
    });
    acts.push(check_live);
    if judged && rollout.bakes() {
        acts.push(Act::Bake {
            version: version.into(),
            revision,
        });
    }
    Ok(acts)
}

/// `percent` of the traffic to `revision`, the rest to `live`, the tags kept.
fn split(traffic: &[Route], revision: &str, live: &str, percent: u8) -> Vec<Route> {
    let mut out = all_to(traffic, revision);
    out[0].percent = percent.into();
    out.insert(
        1,
        Route {
            revision: live.to_string(),
            percent: (100 - percent).into(),
            tag: None,
        },
    );
    tidy(out)
}

/// Rollback: all traffic to the version `history::rollback_to` chooses among those whose
/// live revisions are still there and ready (`to` when named; never one a rollback left
/// unless named), recorded in the same update. Returns the revision live now, the one
/// rolled back to, and the actions.
pub fn decide_rollback(
    seen: &Seen,
    id: &str,
    to: Option<&str>,
    known_good: bool,
) -> Result<(Rev, Rev, Vec<Act>)> {
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
    let version = history::rollback_to(&seen.history, Some(current.key()), &seen.available(), to, known_good)?;
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
            undo: Back::To(vec![
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

/// Destroy: with live serving, staging alone goes by its tag leaving the traffic (its
/// revision stays, as Cloud Run keeps a service's latest one); anything else is the whole
/// service, since a Cloud Run service cannot be without traffic. Nothing made: nothing.
pub fn decide_destroy(seen: &Seen, scope: Scope) -> Vec<Act> {
    let Some(svc) = &seen.service else {
        return Vec::new();
    };
    let live = seen.current().is_some_and(|r| !r.is_staging());
    if scope.live() || !live {
        return vec![Act::DeleteService];
    }
    let traffic: Vec<Route> = svc
        .traffic
        .iter()
        .filter(|r| r.tag.as_deref() != Some(TAG_STAGING))
        .cloned()
        .collect();
    match traffic.len() == svc.traffic.len() {
        true => Vec::new(),
        false => vec![Act::Route {
            traffic,
            record: Vec::new(),
            undo: Back::To(Vec::new()),
        }],
    }
}

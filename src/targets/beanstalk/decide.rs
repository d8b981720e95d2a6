//! The Beanstalk target's decisions: pure functions from what `observe` read to the list
//! of `Act`s the actor carries out (`targets::plan::execute`), the very list `--dry-run`
//! prints. Every refusal comes before the first action.

use anyhow::{Result, anyhow};

use super::observe::{Env, Seen, StageSeen};
use super::record::Note;
use super::{env_name, live_env_name};
use crate::config::Config;
use crate::error::hinted;
use crate::targets::history::{self, Event};
use crate::targets::{Fate, Scope, Staged};

/// One thing the target does on Beanstalk. `Restore` and `SwapBack` only undo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    CreateApplication,
    /// The Dockerrun.aws.json naming `image`, to Beanstalk's storage bucket, as
    /// application version `label`.
    UploadVersion {
        label: String,
        image: String,
    },
    /// The staged environment on its own CNAME, PYM_ENV=staging (undone: terminated).
    CreateEnvironment {
        env: String,
        label: String,
        stack: Option<String>,
        platform: Option<String>,
    },
    /// The first promote (nothing live): a new environment on the live CNAME from the
    /// staged one's application version and platform, `PYM_ENV=live` (undone:
    /// terminated).
    CreateLive {
        env: String,
        from: String,
        label: String,
        stack: Option<String>,
        platform: Option<String>,
    },
    /// Until these are Ready (and, with `green`, Green), showing their events.
    Wait {
        envs: Vec<String>,
        green: bool,
    },
    /// `PYM_ENV=live` on the staged environment (undone: `Restore`).
    SetLive {
        env: String,
    },
    /// `PYM_ENV=staging` again: the update aborted while it runs, else made again.
    Restore {
        env: String,
    },
    /// `env` takes the live CNAME from `from`, which keeps `env`'s (undone: `SwapBack`).
    Swap {
        env: String,
        from: String,
    },
    /// `from` takes the live CNAME back from `env`, once both are Ready; until they are
    /// again.
    SwapBack {
        env: String,
        from: String,
    },
    /// The live address serves the version with `PYM_ENV=live`: the switch is verified.
    Verify {
        version: String,
    },
    /// Entries added to the deploy record.
    Record {
        notes: Vec<Note>,
    },
    /// An environment ends.
    Terminate {
        env: String,
        why: String,
    },
}

/// Stage's decision: every refusal (the environment exists, its CNAME is taken, the
/// registry credentials are missing, no Docker platform) before any action; then the
/// application if new, the version's bundle unless it exists (a `-dirty` version gets a
/// label of its own each time: its image changes with the tree), the environment, the
/// wait.
pub fn decide_stage(
    seen: &StageSeen,
    c: &Config,
    version: &str,
    image: &str,
    dirty: bool,
    now_secs: u64,
) -> Result<Vec<Act>> {
    let name = env_name(c, version);
    if let Some((status, health, gone)) = &seen.existing {
        return Err(hinted(
            format!("environment {name} already exists ({status}, {health})"),
            if *gone {
                "it is being terminated (a failed launch): stage again once it is gone"
            } else {
                "this version is staged already: `cargo xtask promote` makes it live; commit a change to stage a new version, or terminate it (`cargo xtask cleanup --execute` once it is not live)"
            },
        ));
    }
    if !seen.cname.0 {
        return Err(hinted(
            format!("the CNAME {} is taken", seen.cname.1),
            "CNAME prefixes are unique per region across all accounts: rename the service, or set `aws_live_cname`",
        ));
    }
    if let (Some((false, bucket_exists)), Some(bucket)) = (seen.auth, &c.docker_bucket) {
        let contents = "a Docker config.json whose `auths` names the registry: {\"auths\": {\"REGISTRY\": {\"auth\": \"<base64 of user:password>\"}}}";
        return Err(match bucket_exists {
            true => hinted(
                format!(
                    "no registry credentials at s3://{bucket}/{} (the bucket exists; the object does not)",
                    c.docker_auth_key
                ),
                format!(
                    "upload {contents} there (`aws s3 cp ~/.docker/config.json s3://{bucket}/{}`), or remove `docker_bucket` for a public image",
                    c.docker_auth_key
                ),
            ),
            false => hinted(
                format!(
                    "there is no S3 bucket {bucket} (`docker_bucket`), where Beanstalk would read the registry credentials"
                ),
                format!(
                    "create it in {} (`aws s3 mb s3://{bucket}`) and upload {contents} as {}, or fix `docker_bucket`",
                    c.aws_region.as_deref().unwrap_or("your region"),
                    c.docker_auth_key
                ),
            ),
        });
    }
    let Some((stack, platform)) = seen.platform.clone() else {
        return Err(hinted(
            "AWS lists no Docker solution stack",
            "set `aws_solution_stack` (see `aws elasticbeanstalk list-available-solution-stacks`)",
        ));
    };
    let mut plan = Vec::new();
    if !seen.app_exists {
        plan.push(Act::CreateApplication);
    }
    let label = if seen.version_exists && dirty {
        format!("{version}.{now_secs}")
    } else {
        version.to_string()
    };
    if !seen.version_exists || dirty {
        plan.push(Act::UploadVersion {
            label: label.clone(),
            image: image.to_string(),
        });
    }
    plan.push(Act::CreateEnvironment {
        env: name.clone(),
        label,
        stack,
        platform,
    });
    plan.push(Act::Wait {
        envs: vec![name],
        green: true,
    });
    Ok(plan)
}

/// Promote: makes live what staging runs (`staged`, never HEAD's version), refused unless
/// the staging environment still runs that image, Ready and Green. Nothing live: a live
/// environment for it on the live CNAME, checked, and the staged one, redundant, ends.
/// Its version live already: only the check. Else `PYM_ENV=live` on it (unless it was
/// live before), the CNAME swap, the check; the record after the check.
pub fn decide_promote(seen: &Seen, c: &Config, staged: &Staged) -> Result<Vec<Act>> {
    let version = staged.version.as_str();
    let name = env_name(c, version);
    let Some(env) = seen.env(&name) else {
        return Err(hinted(
            format!("environment {name} does not exist: {version} is not staged"),
            "stage it first: `cargo xtask stage` (and `cargo xtask accept-staging`)",
        ));
    };
    if seen.staged.as_ref() != Some(staged) {
        return Err(hinted(
            format!(
                "staging runs {}, not {version} ({})",
                seen.staged
                    .as_ref()
                    .map(|s| format!("{} ({})", s.version, s.image))
                    .unwrap_or_else(|| "nothing Ready".into()),
                staged.image
            ),
            "staging changed meanwhile: test what it runs with `cargo xtask accept-staging`, then promote",
        ));
    }
    if !env.ready() || env.health != "Green" {
        return Err(hinted(
            format!(
                "environment {name} is {}, {}: only a Ready and Green environment is promoted",
                env.status, env.health
            ),
            "wait for it, or look at its events in the console",
        ));
    }
    let verify = Act::Verify {
        version: version.to_string(),
    };
    let live = seen.live();
    if live.is_some_and(|l| l.version == version) {
        return Ok(vec![verify]);
    }
    // The version live until now enters the record first when it is not its last.
    let mut notes: Vec<Note> = live
        .filter(|l| seen.history.live_order().first() != Some(&l.version.as_str()))
        .map(|l| (Event::Live, l.version.clone(), None))
        .into_iter()
        .collect();
    notes.push((
        Event::Live,
        version.to_string(),
        Some(staged.digest.clone()),
    ));
    let record = Act::Record { notes };
    let Some(holder) = live else {
        let first = live_env_name(c, version);
        return Ok(vec![
            Act::CreateLive {
                env: first.clone(),
                from: name.clone(),
                label: env.label.clone(),
                stack: env.stack.clone(),
                platform: env.platform.clone(),
            },
            Act::Wait {
                envs: vec![first.clone()],
                green: true,
            },
            verify,
            record,
            Act::Terminate {
                env: name,
                why: format!("{first} runs the same version"),
            },
        ]);
    };
    let mut plan = Vec::new();
    if !env.was_live() {
        plan.extend([
            Act::SetLive { env: name.clone() },
            Act::Wait {
                envs: vec![name.clone()],
                green: true,
            },
        ]);
    }
    plan.extend([
        Act::Swap {
            env: name.clone(),
            from: holder.name.clone(),
        },
        Act::Wait {
            envs: vec![name, holder.name.clone()],
            green: false,
        },
        verify,
        record,
    ]);
    Ok(plan)
}

/// Rollback: the live CNAME swapped to the environment of the version
/// `history::rollback_to` chooses among those live before and still Ready and not Red
/// (`to` when named; never one a rollback left unless named), checked, recorded. Returns
/// the environment live now, the one rolled back to, and the actions.
pub fn decide_rollback(
    seen: &Seen,
    to: Option<&str>,
    known_good: bool,
) -> Result<(Env, Env, Vec<Act>)> {
    let current = seen.live().ok_or_else(|| {
        hinted(
            format!(
                "no environment holds the live CNAME prefix {}",
                seen.live_prefix
            ),
            "nothing is live: deploy first",
        )
    })?;
    let version = history::rollback_to(
        &seen.history,
        Some(&current.version),
        &seen.available(false),
        to,
        known_good,
    )?;
    let target = seen
        .previous_env(&version)
        .ok_or_else(|| anyhow!("no Ready environment runs {version}"))?;
    let acts = vec![
        Act::Swap {
            env: target.name.clone(),
            from: current.name.clone(),
        },
        Act::Wait {
            envs: vec![target.name.clone(), current.name.clone()],
            green: false,
        },
        Act::Verify {
            version: version.clone(),
        },
        Act::Record {
            notes: vec![
                (Event::RolledBack, current.version.clone(), None),
                (Event::Live, version, None),
            ],
        },
    ];
    Ok((current.clone(), target.clone(), acts))
}

/// Each environment's role, in the order status shows them and cleanup keeps them: live
/// (the live CNAME), staging (the newest stage made, never live), previous (live before,
/// in the order rollback walks them), staged (never live), rolled-back (a rollback left
/// its version).
pub fn roles(seen: &Seen) -> Vec<(&Env, &'static str)> {
    let live = seen.live().map(|l| l.name.clone());
    let staging = seen.staging().map(|s| s.name.clone());
    let available = seen.available(true);
    let order = history::previous(
        &seen.history,
        seen.live().map(|l| l.version.as_str()),
        &available,
    );
    let mut out: Vec<(&Env, &'static str, (u8, usize, usize))> = seen
        .envs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (role, group, at) = if Some(&e.name) == live.as_ref() {
                ("live", 0, 0)
            } else if e.was_live() && seen.history.rolled_back_from(&e.version) {
                ("rolled-back", 4, 0)
            } else if e.was_live() {
                let at = order.iter().position(|v| *v == e.version);
                ("previous", 2, at.unwrap_or(usize::MAX))
            } else if Some(&e.name) == staging.as_ref() {
                ("staging", 1, 0)
            } else {
                ("staged", 3, 0)
            };
            (e, role, (group, at, i))
        })
        .collect();
    out.sort_by_key(|(_, _, k)| *k);
    out.into_iter().map(|(e, role, _)| (e, role)).collect()
}

/// Cleanup: environments off the live CNAME go, but the staging one, those of the
/// `keep` previous versions rollback needs (`history::beyond_kept`), and those Beanstalk
/// is working on.
pub fn decide_cleanup(seen: &Seen, keep: usize) -> Vec<(&Env, Fate)> {
    let current = seen.live().map(|l| l.version.clone());
    let available = seen.available(true);
    let gone = history::beyond_kept(&seen.history, current.as_deref(), &available, keep);
    roles(seen)
        .into_iter()
        .filter(|(_, role)| *role != "live")
        .map(|(e, role)| {
            let needed = seen.kept_env(&e.version).is_some_and(|p| p.name == e.name)
                && !gone.contains(&e.version.as_str());
            let fate = if role == "staging" {
                Fate::Keep(Some("staging".into()))
            } else if !e.ready() {
                // Launching or updating: another run is working on it.
                Fate::Keep(Some(e.status.clone()))
            } else if needed {
                Fate::Keep(None)
            } else {
                Fate::Go {
                    done: false,
                    did: "terminating",
                    would: "terminate",
                }
            };
            (e, fate)
        })
        .collect()
}

/// Destroy: every environment of the scope's roles terminated, staging's (never live)
/// first, then live's: the one on the live CNAME, then those live before. The
/// application, its versions and the deploy record (its tags) stay.
pub fn decide_destroy(seen: &Seen, scope: Scope) -> Vec<Act> {
    let roles = roles(seen);
    let of = |wanted: &[&str]| {
        roles
            .iter()
            .filter(|(e, role)| wanted.contains(role) && !e.status.starts_with("Terminat"))
            .map(|(e, role)| Act::Terminate {
                env: e.name.clone(),
                why: format!("{role}, {}", e.version),
            })
            .collect::<Vec<_>>()
    };
    let mut acts = Vec::new();
    if scope.staging() {
        acts.extend(of(&["staging", "staged"]));
    }
    if scope.live() {
        acts.extend(of(&["live", "previous", "rolled-back"]));
    }
    acts
}

#[cfg(test)]
mod tests;

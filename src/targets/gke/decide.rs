//! The decisions (pure): stage, promote, rollback and cleanup as lists of `Act`s.

use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;

use super::Names;
use super::observe::{Dep, Seen};
use crate::config::{PymEnv, Rollout};
use crate::error::hinted;
use crate::targets::history::{self, Event, History};
use crate::targets::{Fate, Staged};

/// One thing `stage`, `promote` or `rollback` does, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    Namespace,
    /// Puts the `env_secrets` of `env` in the Secret `name` (the Deployment's own).
    Secret {
        name: String,
        env: PymEnv,
    },
    /// Creates the Deployment, or moves it to this spec.
    Deploy {
        name: String,
        version: String,
        image: String,
        env: PymEnv,
        replicas: i32,
    },
    Scale {
        name: String,
        replicas: i32,
    },
    /// Waits as `kubectl rollout status` does.
    Rollout {
        name: String,
    },
    /// Each pod of `name` answers the service contract (through the apiserver's pod proxy).
    CheckPods {
        name: String,
        version: String,
        env: PymEnv,
    },
    /// Makes the staging Service, or gives it the configured type and port.
    Service {
        env: PymEnv,
    },
    /// Moves the live Service's selector from `from` to `to`, then adds `record` to the
    /// deploy record.
    Select {
        from: Option<String>,
        to: String,
        record: Vec<(Event, String)>,
    },
    /// The live Service serves `version` with `PYM_ENV=live`.
    Verify {
        version: String,
    },
    /// The live Service selects every live pod, `live`'s and the canary's (its
    /// `app.kubernetes.io/version` taken out of the selector; the Service says which
    /// version is live meanwhile): the canary's share is its pods' among them.
    Pool {
        live: String,
        canary: String,
    },
    /// Judge the canary `name` (`canary` pods beside `live` of live's, `percent` asked)
    /// on its pods' readiness and restarts, and Prometheus' figures where
    /// `rollout.prometheus_url` is set (`targets::rollout::step`).
    Judge {
        version: String,
        name: String,
        percent: u8,
        canary: i32,
        live: i32,
    },
    /// All of live for `rollout.bake_seconds`, the previous version's pods still
    /// running, judged the same way; then known-good. Commits the switch.
    Bake {
        version: String,
        name: String,
    },
    /// Undo of `Pool`: the live Service selects `live` alone again, and `canary` is
    /// recorded as rolled back from (it served live requests).
    Unpool {
        live: String,
        canary: String,
    },
    /// Deletes a Deployment and its Secret.
    Delete {
        name: String,
    },
    // The undos, which `plan::execute` runs in reverse when a later act fails.
    /// The namespace this run made (with what it made in it).
    DeleteNamespace,
    DeleteDeployment {
        name: String,
    },
    RestoreDeployment(Box<Deployment>),
    DeleteSecret {
        name: String,
    },
    RestoreSecret(Box<Secret>),
    /// Moves the selector back from `from` (and records it), or deletes the live Service
    /// when nothing was live before.
    Unselect {
        back_to: Option<String>,
        from: String,
    },
    /// `destroy`: deletes `env`'s Service.
    DeleteService {
        env: PymEnv,
    },
}

impl Act {
    pub fn describe(&self, names: &Names) -> String {
        let ns = &names.ns;
        match self {
            Act::Namespace => format!("create namespace {ns}"),
            Act::Secret { name, env } => format!("put the {env} env_secrets in secret {ns}/{name}"),
            Act::Deploy {
                name,
                version,
                image,
                env,
                replicas,
            } => format!(
                "deploy {ns}/{name}: {version} ({image}), PYM_ENV={env}, {replicas} replicas"
            ),
            Act::Scale { name, replicas } => format!("scale {ns}/{name} to {replicas}"),
            Act::Rollout { name } => format!("wait for {ns}/{name} to roll out"),
            Act::CheckPods { name, version, env } => {
                format!("check each pod of {ns}/{name} serves {version} with PYM_ENV={env}")
            }
            Act::Service { env } => format!(
                "create service {ns}/{}, or give it the configured type and port",
                names.service(*env)
            ),
            Act::Select {
                from: Some(f), to, ..
            } => format!("switch service {ns}/{} from {f} to {to}", names.app),
            Act::Select { from: None, to, .. } => {
                format!("point service {ns}/{} at {to}", names.app)
            }
            Act::Verify { version } => format!("check live serves {version} with PYM_ENV=live"),
            Act::Pool { live, canary } => format!(
                "let service {ns}/{} select the pods of {live} and of the canary {canary} (the version taken out of its selector)",
                names.app
            ),
            Act::Judge { canary, live, .. } => format!(
                "{canary} canary pod(s) beside {live} live ({}% of the requests)",
                share_of(*canary, *live)
            ),
            Act::Bake { version, .. } => format!("bake {version}"),
            Act::Unpool { live, canary } => format!(
                "let service {ns}/{} select {live} alone again; record {canary} rolled back from",
                names.app
            ),
            Act::Delete { name } => format!("delete {ns}/{name} and its secret"),
            Act::DeleteNamespace => format!("delete the new namespace {ns}"),
            Act::DeleteDeployment { name } => format!("delete the new deployment {ns}/{name}"),
            Act::RestoreDeployment(d) => format!(
                "put deployment {ns}/{} back as it was",
                d.metadata.name.as_deref().unwrap_or_default()
            ),
            Act::DeleteSecret { name } => format!("delete the new secret {ns}/{name}"),
            Act::RestoreSecret(s) => format!(
                "put secret {ns}/{} back as it was",
                s.metadata.name.as_deref().unwrap_or_default()
            ),
            Act::Unselect {
                back_to: Some(v),
                from,
            } => format!("switch service {ns}/{} back from {from} to {v}", names.app),
            Act::Unselect { back_to: None, .. } => {
                format!("delete the new live service {ns}/{}", names.app)
            }
            Act::DeleteService { env } => {
                format!("delete the {env} service {ns}/{}", names.service(*env))
            }
        }
    }
}

/// Destroy, for one environment (`seen` read where that environment's config points):
/// its Service first, so nothing routes to what goes next, then its Deployments with
/// their Secrets, live's selected one first. The namespace and the deploy record stay.
pub fn decide_destroy(seen: &Seen, names: &Names, env: PymEnv) -> Vec<Act> {
    let mut acts = Vec::new();
    let service = match env {
        PymEnv::Live => seen.live.is_some(),
        _ => seen.staging.is_some(),
    };
    if service {
        acts.push(Act::DeleteService { env });
    }
    let word = if env == PymEnv::Live { "live" } else { "staging" };
    let selected = seen.selects().map(|v| names.live(v));
    let mut deps: Vec<&Dep> = seen.deployments.iter().filter(|d| d.env == word).collect();
    deps.sort_by_key(|d| Some(&d.name) != selected.as_ref());
    acts.extend(deps.into_iter().map(|d| Act::Delete {
        name: d.name.clone(),
    }));
    acts
}

/// Stage: the staging Deployment to `image` (a digest), rolled out.
pub fn decide_stage(
    seen: &Seen,
    names: &Names,
    version: &str,
    image: &str,
    replicas: i32,
    secrets: bool,
) -> Result<Vec<Act>> {
    if !image.contains("@sha256:") {
        bail!(
            "Kubernetes runs images by digest here, and {image} has none: push it first (`cargo xtask push`)"
        );
    }
    let name = names.staging();
    let mut acts = Vec::new();
    if !seen.namespace {
        acts.push(Act::Namespace);
    }
    if secrets {
        acts.push(Act::Secret {
            name: name.clone(),
            env: PymEnv::Staging,
        });
    }
    acts.push(Act::Deploy {
        name: name.clone(),
        version: version.into(),
        image: image.into(),
        env: PymEnv::Staging,
        replicas,
    });
    acts.push(Act::Rollout { name: name.clone() });
    acts.push(Act::CheckPods {
        name,
        version: version.into(),
        env: PymEnv::Staging,
    });
    acts.push(Act::Service {
        env: PymEnv::Staging,
    });
    Ok(acts)
}

/// The previous versions to keep and to delete, as Deployment names, with `live` live and
/// `history` the record: those beyond the `keep` a rollback can use go
/// (`history::beyond_kept`), so what is kept is what rollback needs.
fn retire(
    seen: &Seen,
    names: &Names,
    history: &History,
    live: Option<&str>,
    keep: usize,
) -> (Vec<String>, Vec<String>) {
    let mut available = seen.available();
    if let Some(l) = live.filter(|l| !available.iter().any(|a| a == l)) {
        available.insert(0, l.to_string());
    }
    let previous = history::previous(history, live, &available);
    let gone = history::beyond_kept(history, live, &available, keep);
    let kept = previous
        .iter()
        .filter(|v| !gone.contains(v))
        .map(|v| names.live(v))
        .collect();
    (kept, gone.iter().map(|v| names.live(v)).collect())
}

/// Promote what staging runs (`staged`: its version and image, never HEAD's): its live
/// Deployment rolled out and checked, the switch (recorded), the check, then the version
/// live before scaled to zero and those beyond `keep` deleted.
/// How many canary pods beside `live` pods give it about `percent` of the requests (a
/// Service spreads connections over its pods evenly): at least one.
pub fn canary_pods(live: i32, percent: u8) -> i32 {
    let p = f64::from(percent);
    ((f64::from(live) * p / (100.0 - p)).round() as i32).max(1)
}

/// The share (percent, rounded) `canary` pods get beside `live` pods.
pub fn share_of(canary: i32, live: i32) -> i32 {
    (f64::from(canary) * 100.0 / f64::from((canary + live).max(1))).round() as i32
}

pub fn decide_promote(
    seen: &Seen,
    names: &Names,
    staged: Option<&Staged>,
    replicas: i32,
    secrets: bool,
    keep: usize,
    rollout: &Rollout,
) -> Result<Vec<Act>> {
    let staged = staged.ok_or_else(|| {
        hinted(
            format!("cannot promote: nothing runs on staging in {}", names.ns),
            "stage and test a version first: `cargo xtask deploy --from stage`",
        )
    })?;
    let (version, image) = (staged.version.as_str(), staged.image.as_str());
    if !image.contains('@') {
        return Err(hinted(
            format!("cannot promote {version}: staging runs {image}, which names no digest"),
            "stage it again (`cargo xtask deploy --from stage`): Kubernetes runs images by digest here",
        ));
    }
    let name = names.live(version);
    let from = seen.selects().map(String::from);
    if from.as_deref() == Some(version)
        && seen
            .dep(&name)
            .is_some_and(|d| d.ready >= d.replicas && d.replicas > 0 && d.image == image)
    {
        return Ok(vec![Act::Verify {
            version: version.into(),
        }]);
    }
    // What the record will say once the selector moved (a live version it does not know,
    // left by a record written elsewhere, first).
    let mut record = Vec::new();
    if let Some(f) = from.as_deref().filter(|f| *f != version)
        && seen.history.live_order().first() != Some(&f)
    {
        record.push((Event::Live, f.to_string()));
    }
    record.push((Event::Live, version.to_string()));
    let mut acts = Vec::new();
    if !seen.namespace {
        acts.push(Act::Namespace);
    }
    if secrets {
        acts.push(Act::Secret {
            name: name.clone(),
            env: PymEnv::Live,
        });
    }
    // A judged rollout needs a live version to judge the new one beside and to go back
    // to: the first version goes live whole.
    let judged = from.as_deref().filter(|f| rollout.judges() && *f != version);
    let live_pods = judged
        .and_then(|f| seen.dep(&names.live(f)))
        .map_or(replicas, |d| d.replicas.max(1));
    let shares: &[u8] = match judged {
        Some(_) => rollout.shares(),
        None => &[],
    };
    acts.push(Act::Deploy {
        name: name.clone(),
        version: version.into(),
        image: image.into(),
        env: PymEnv::Live,
        replicas: shares
            .first()
            .map_or(replicas, |p| canary_pods(live_pods, *p)),
    });
    acts.push(Act::Rollout { name: name.clone() });
    acts.push(Act::CheckPods {
        name: name.clone(),
        version: version.into(),
        env: PymEnv::Live,
    });
    if let Some(live) = judged.filter(|_| !shares.is_empty()) {
        for (i, percent) in shares.iter().enumerate() {
            let canary = canary_pods(live_pods, *percent);
            match i {
                0 => acts.push(Act::Pool {
                    live: live.to_string(),
                    canary: version.into(),
                }),
                _ => acts.extend([
                    Act::Scale {
                        name: name.clone(),
                        replicas: canary,
                    },
                    Act::Rollout { name: name.clone() },
                ]),
            }
            acts.push(Act::Judge {
                version: version.into(),
                name: name.clone(),
                percent: *percent,
                canary,
                live: live_pods,
            });
        }
        acts.extend([
            Act::Scale {
                name: name.clone(),
                replicas,
            },
            Act::Rollout { name: name.clone() },
        ]);
    }
    let mut after = seen.history.clone();
    for (e, v) in &record {
        after.push(*e, v, None, i64::MAX);
    }
    acts.push(Act::Select {
        from: from.clone(),
        to: version.into(),
        record,
    });
    acts.push(Act::Verify {
        version: version.into(),
    });
    if judged.is_some() && rollout.bakes() {
        acts.push(Act::Bake {
            version: version.into(),
            name: name.clone(),
        });
    }
    acts.extend(after_switch(
        seen,
        names,
        &after,
        version,
        from.as_deref(),
        keep,
    ));
    Ok(acts)
}

/// After a switch to `live`: the one live before scaled to zero, those beyond `keep`
/// deleted (by `history`, the record as the switch left it).
fn after_switch(
    seen: &Seen,
    names: &Names,
    history: &History,
    live: &str,
    from: Option<&str>,
    keep: usize,
) -> Vec<Act> {
    let mut acts = Vec::new();
    let (kept, gone) = retire(seen, names, history, Some(live), keep);
    if let Some(f) = from.filter(|f| *f != live) {
        let old = names.live(f);
        if seen.dep(&old).is_some_and(|d| d.replicas > 0) && !gone.contains(&old) {
            acts.push(Act::Scale {
                name: old,
                replicas: 0,
            });
        }
    }
    for k in kept {
        if seen.dep(&k).is_some_and(|d| d.replicas > 0)
            && Some(k.as_str()) != from.map(|f| names.live(f)).as_deref()
        {
            acts.push(Act::Scale {
                name: k,
                replicas: 0,
            });
        }
    }
    acts.extend(gone.into_iter().map(|name| Act::Delete { name }));
    acts
}

/// Rollback: the version `history::rollback_to` chooses (`to` when named; never back to
/// one a rollback left otherwise) scaled up, checked, selected (recorded); the current one
/// scaled to zero. Returns the current version, the one rolled back to, and the acts.
pub fn decide_rollback(
    seen: &Seen,
    names: &Names,
    replicas: i32,
    to: Option<&str>,
    known_good: bool,
) -> Result<(String, String, Vec<Act>)> {
    if seen.live.is_none() {
        return Err(hinted(
            format!(
                "nothing is live in {}: there is nothing to roll back",
                names.ns
            ),
            "deploy first: `cargo xtask deploy`",
        ));
    }
    let current = seen
        .selects()
        .ok_or_else(|| {
            anyhow!(
                "the live service {}/{} selects no version",
                names.ns,
                names.app
            )
        })?
        .to_string();
    let target = history::rollback_to(&seen.history, Some(&current), &seen.available(), to, known_good)?;
    let name = names.live(&target);
    Ok((
        current.clone(),
        target.clone(),
        vec![
            Act::Scale {
                name: name.clone(),
                replicas,
            },
            Act::Rollout { name: name.clone() },
            Act::CheckPods {
                name,
                version: target.clone(),
                env: PymEnv::Live,
            },
            Act::Select {
                from: Some(current.clone()),
                to: target.clone(),
                record: vec![
                    (Event::RolledBack, current.clone()),
                    (Event::Live, target.clone()),
                ],
            },
            Act::Verify {
                version: target.clone(),
            },
            Act::Scale {
                name: names.live(&current),
                replicas: 0,
            },
        ],
    ))
}

/// Cleanup: the previous live Deployments, kept or deleted as `retire` says: those beyond
/// `keep` a rollback can use go.
pub fn decide_cleanup(seen: &Seen, names: &Names, keep: usize) -> Vec<(Dep, Fate)> {
    let (kept, gone) = retire(seen, names, &seen.history, seen.selects(), keep);
    let fate = |n: &String| match gone.contains(n) {
        true => Fate::Go {
            done: false,
            did: "deleted",
            would: "delete",
        },
        false => Fate::Keep(None),
    };
    kept.iter()
        .chain(&gone)
        .filter_map(|n| seen.dep(n).map(|d| (d.clone(), fate(n))))
        .collect()
}

//! The docker target's decisions: from what `observe` read off the engine (`Seen`) and
//! the config to the list of `Action`s a stage, promote, rollback or destroy takes. Pure, so each
//! case is a unit test on a snapshot, and `--dry-run` prints the very list a run
//! carries out (`act::Engine::describe` says each action, for both).

use anyhow::Result;

use super::names::{live_name, upstream_container};
use crate::config::{Config, PymEnv};
use crate::error::hinted;
use crate::targets::Scope;
use crate::targets::history::{self, Event, History};

/// A live container of the service, as `observe` reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LiveVersion {
    pub id: String,
    pub version: String,
    /// Its container's name (`pym-<name>-live-<version>`).
    pub name: String,
    pub running: bool,
    pub created: i64,
}

/// What promote and rollback read before they decide: the live containers (newest
/// first), the proxy's routes (the current one first), whether the live address already
/// serves the version to promote, and the deploy record kept on the engine.
#[derive(Clone, Debug, Default)]
pub(super) struct Seen {
    pub live: Vec<LiveVersion>,
    pub routes: Vec<String>,
    pub serves: bool,
    pub history: History,
}

impl Seen {
    /// The version live routes to, if its container runs.
    pub fn current(&self) -> Option<&str> {
        let route = self.routes.first()?;
        self.live
            .iter()
            .find(|v| v.running && v.name == upstream_container(route))
            .map(|v| v.version.as_str())
    }

    /// The versions kept on the engine, newest first in the order the proxy's routes
    /// remember them (for versions the deploy record does not know yet).
    pub fn kept(&self) -> Vec<String> {
        let rank = |v: &LiveVersion| {
            self.routes
                .iter()
                .position(|u| upstream_container(u) == v.name)
                .unwrap_or(usize::MAX)
        };
        let mut all: Vec<&LiveVersion> = self.live.iter().collect();
        all.sort_by_key(|v| (rank(v), std::cmp::Reverse(v.created)));
        all.into_iter().map(|v| v.version.clone()).collect()
    }

    /// The stopped versions in the order a rollback walks them.
    pub fn previous(&self) -> Vec<String> {
        let kept = self.kept();
        let stopped: Vec<String> = kept
            .iter()
            .filter(|v| self.live.iter().any(|l| &l.version == *v && !l.running))
            .cloned()
            .collect();
        history::previous(&self.history, None, &stopped)
            .into_iter()
            .map(str::to_string)
            .collect()
    }
}

/// One thing the docker target does to the engine. The last four only undo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Pull the pushed image by its digest (proves the push, and brings the image to a
    /// remote engine).
    Pull,
    /// The previous staging container: killed and renamed at once, removed beside the
    /// next steps.
    ReplaceStaging,
    RunStaging {
        version: String,
    },
    /// Until it answers `health_path`, then `version_path` must name the version.
    WaitStaging {
        version: String,
    },
    /// Route staging's own site on the edge (its `hosts`) to the staging container.
    StagingSite {
        version: String,
    },
    /// Stop a running version no route leads to (a promote interrupted between its
    /// switch and its stop leaves one).
    StopStray {
        version: String,
    },
    /// Make sure the network and the live proxy exist, current and running.
    EnsureProxy,
    /// Remove a stopped container of the version to promote (a failed, interrupted or
    /// rolled-back promote's).
    RemoveLeftover {
        version: String,
    },
    /// Start the version in a new container beside live.
    Run {
        version: String,
    },
    /// Start a stopped version's container again (`why` it is the one).
    Start {
        version: String,
        why: String,
    },
    WaitHealthy {
        version: String,
    },
    /// From here on a put-back records the version as rolled back from (it served live
    /// requests): a judging promote's first act on live.
    Expose {
        version: String,
        /// What live serves now: live again after a put-back.
        back_to: Option<String>,
    },
    /// Send it `percent` of live's requests, each client kept on one side.
    Share {
        version: String,
        percent: u8,
    },
    /// Judge it on its own requests for `rollout.step_seconds` (`targets::rollout::step`).
    Judge {
        version: String,
        percent: u8,
    },
    /// Route the proxy to it (all of live; a canary's share goes).
    Switch {
        version: String,
    },
    /// All of live for `rollout.bake_seconds`, the previous version still running, judged
    /// the same way; then known-good if it proved itself. Commits the switch.
    Bake {
        version: String,
    },
    /// The live address serves it: the switch is kept from here on.
    Verify {
        version: String,
    },
    /// Add these entries to the deploy record on the engine.
    Record {
        entries: Vec<(Event, String, Option<String>)>,
    },
    /// After the switch, beside the next steps: drain these, stop them, keep
    /// `keep_previous` stopped versions and remove unused images.
    Retire {
        versions: Vec<String>,
    },
    /// Undo of a new container: its logs shown, then removed.
    Remove {
        name: String,
    },
    /// Undo of a restarted one.
    Stop {
        version: String,
    },
    /// Undo of a canary's share: none of live's requests to it.
    ShareOff {
        version: String,
    },
    /// Undo of `Expose`: the version is recorded as rolled back from, and `back_to` as
    /// live again where the record had made the version live.
    Withdrawn {
        version: String,
        back_to: Option<String>,
    },
    /// Undo of a switch: the route it replaced (none: the proxy routes nowhere yet).
    RouteBack {
        upstream: String,
    },
    /// Undo of a proxy made for a first promote.
    RemoveProxy,
    /// `destroy`: remove this container of the service, whatever its state (`what` it
    /// is, said with it).
    Discard {
        name: String,
        what: String,
    },
    /// `destroy`: remove the environment's site from the edge (and the edge from the
    /// service's network, for live).
    RemoveSite {
        env: PymEnv,
    },
    /// `destroy`: remove the live network.
    RemoveNetwork,
    /// `destroy`: remove the service's images that no container uses any more.
    RemoveImages,
}

/// A container of the service as `destroy` reads it: its name, its `org.pymacaron.env`
/// (`staging`, `live`, `proxy`), version and whether it runs. The deploy record's
/// containers are not among them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Made {
    pub name: String,
    pub env: String,
    pub version: String,
    pub running: bool,
}

/// Destroy's decision: staging's containers; for live, the proxy first (live stops
/// answering at once, never half-routed), then its versions, the running one first, and
/// the network; then the images nothing uses any more. The deploy record stays. Nothing
/// made: no action.
pub(super) fn decide_destroy(made: &[Made], network: bool, scope: Scope) -> Vec<Action> {
    let discard = |m: &Made, what: String| Action::Discard {
        name: m.name.clone(),
        what,
    };
    let mut plan = Vec::new();
    if scope.staging() {
        for m in made.iter().filter(|m| m.env == "staging") {
            plan.push(discard(m, format!("staging, {}", m.version)));
        }
    }
    if scope.live() {
        for m in made.iter().filter(|m| m.env == "proxy") {
            plan.push(discard(m, "the live proxy".into()));
        }
        let mut live: Vec<&Made> = made.iter().filter(|m| m.env == "live").collect();
        live.sort_by_key(|m| !m.running);
        for m in live {
            let state = if m.running { "live" } else { "previous" };
            plan.push(discard(m, format!("{state}, {}", m.version)));
        }
        if network {
            plan.push(Action::RemoveNetwork);
        }
    }
    if !plan.is_empty() {
        plan.push(Action::RemoveImages);
    }
    plan
}

/// Stage's decision: the image pulled when it comes from a registry (without
/// `docker_repo`, the engine that built it runs it), then the replacement.
pub(super) fn decide_stage(c: &Config, version: &str, edge_site: bool) -> Vec<Action> {
    let pull = c.has_registry().then_some(Action::Pull);
    let v = version.to_string();
    let site = edge_site.then(|| Action::StagingSite { version: v.clone() });
    pull.into_iter()
        .chain([
            Action::ReplaceStaging,
            Action::RunStaging { version: v.clone() },
            Action::WaitStaging { version: v },
        ])
        .chain(site)
        .collect()
}

/// Promote: nothing to do but stop strays when live serves the version already; refused
/// when live routes to a container of this version that does not serve (removing it would
/// cut live); else a new container beside live, health, the switch, its check, the
/// record, and the old versions retired.
pub(super) fn decide_promote(
    seen: &Seen,
    c: &Config,
    version: &str,
    digest: &str,
) -> Result<Vec<Action>> {
    let name = live_name(c, version);
    let this = seen.live.iter().find(|v| v.name == name);
    let strays = |except: &str| {
        seen.live
            .iter()
            .filter(|v| v.running && v.version != except)
            .map(|v| Action::StopStray {
                version: v.version.clone(),
            })
            .collect::<Vec<_>>()
    };
    if seen.serves && this.is_some_and(|v| v.running) {
        return Ok(strays(version));
    }
    if seen
        .routes
        .first()
        .is_some_and(|r| upstream_container(r) == name)
    {
        return Err(hinted(
            format!(
                "{name} is what live routes to, but the live address does not answer its /version"
            ),
            "look at `cargo xtask status` and the container's logs; `cargo xtask rollback` goes back to the previous version",
        ));
    }
    let v = version.to_string();
    let mut plan = vec![Action::EnsureProxy];
    if this.is_some() {
        plan.push(Action::RemoveLeftover { version: v.clone() });
    }
    plan.extend([
        Action::Run { version: v.clone() },
        Action::WaitHealthy { version: v.clone() },
    ]);
    // A first version has nothing to be judged against nor to go back to: it goes live
    // whole, as blue/green does.
    let r = &c.rollout;
    let judged = r.judges() && seen.current().is_some();
    if judged {
        plan.push(Action::Expose {
            version: v.clone(),
            back_to: seen.current().map(str::to_string),
        });
    }
    for percent in r.shares().iter().filter(|_| judged) {
        plan.extend([
            Action::Share {
                version: v.clone(),
                percent: *percent,
            },
            Action::Judge {
                version: v.clone(),
                percent: *percent,
            },
        ]);
    }
    plan.extend([
        Action::Switch { version: v.clone() },
        Action::Verify { version: v.clone() },
        Action::Record {
            entries: vec![(Event::Live, v.clone(), Some(digest.to_string()))],
        },
    ]);
    if judged && r.bakes() {
        plan.push(Action::Bake { version: v.clone() });
    }
    let old: Vec<String> = seen
        .live
        .iter()
        .filter(|v| v.running && v.name != name)
        .map(|v| v.version.clone())
        .collect();
    plan.push(Action::Retire { versions: old });
    Ok(plan)
}

/// Rollback: to the version `history::rollback_to` chooses among those kept (never one
/// rolled back from, unless named), started again, healthy, switched to; the current one
/// retired.
pub(super) fn decide_rollback(
    seen: &Seen,
    to: Option<&str>,
    known_good: bool,
) -> Result<Vec<Action>> {
    let current = seen.current();
    let mut available = seen.previous();
    available.extend(current.map(str::to_string));
    let version = history::rollback_to(&seen.history, current, &available, to, known_good)?;
    let running: Vec<String> = seen
        .live
        .iter()
        .filter(|v| v.running && v.version != version)
        .map(|v| v.version.clone())
        .collect();
    let mut entries: Vec<(Event, String, Option<String>)> = current
        .map(|c| (Event::RolledBack, c.to_string(), None))
        .into_iter()
        .collect();
    entries.push((Event::Live, version.clone(), None));
    let why = match to {
        Some(_) => "named with --to".to_string(),
        None => history::why_rollback_to(&seen.history, &version),
    };
    Ok(vec![
        Action::EnsureProxy,
        Action::Start {
            version: version.clone(),
            why,
        },
        Action::WaitHealthy {
            version: version.clone(),
        },
        Action::Switch {
            version: version.clone(),
        },
        Action::Verify { version },
        Action::Record { entries },
        Action::Retire { versions: running },
    ])
}

/// The stopped versions cleanup removes: beyond `keep_previous`, never the one a
/// rollback would go to.
pub(super) fn decide_cleanup(seen: &Seen, keep_previous: usize) -> Vec<String> {
    let previous = seen.previous();
    history::beyond_kept(&seen.history, None, &previous, keep_previous)
        .into_iter()
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PymEnv;

    /// A live version of service `s` as `observe` reads it.
    fn live(version: &str, running: bool, created: i64) -> LiveVersion {
        LiveVersion {
            id: format!("id-{version}"),
            version: version.into(),
            name: format!("pym-s-live-{version}"),
            running,
            created,
        }
    }

    fn routes(versions: &[&str]) -> Vec<String> {
        versions
            .iter()
            .map(|v| format!("pym-s-live-{v}:8080"))
            .collect()
    }

    fn seen(live: Vec<LiveVersion>, routes_: &[&str], serves: bool) -> Seen {
        Seen {
            live,
            routes: routes(routes_),
            serves,
            history: History::default(),
        }
    }

    fn record(events: &[(Event, &str)]) -> History {
        let mut h = History::default();
        for (i, (e, v)) in events.iter().enumerate() {
            h.push(*e, v, None, i as i64);
        }
        h
    }

    fn config() -> Config {
        let dir = std::env::temp_dir().join(format!("pym-docker-decide-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(crate::config::CONFIG_FILE),
            "name: s\ndeploy_target: docker\n",
        )
        .unwrap();
        Config::load(&dir, PymEnv::Live).unwrap()
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn rollback_and_cleanup_go_by_the_record_then_the_routes() {
        // The first deploy: one running version, nothing to go back to.
        assert!(
            seen(vec![live("v0", true, 1)], &["v0"], false)
                .previous()
                .is_empty()
        );
        // A second deploy: the first version, stopped, is where rollback goes.
        assert_eq!(
            seen(
                vec![live("c1", true, 2), live("v0", false, 1)],
                &["c1", "v0"],
                false
            )
            .previous(),
            ["v0"]
        );
        // V0 → C1 → rollback (V0) → C2: the routes read C2, V0, C1. Rollback goes to V0,
        // live before C2, though C1 is newer.
        let all = vec![
            live("c2", true, 3),
            live("c1", false, 2),
            live("v0", false, 1),
        ];
        assert_eq!(
            seen(all, &["c2", "v0", "c1"], false).previous(),
            ["v0", "c1"]
        );
        // Versions the routes do not remember (a proxy replaced by hand): last, newest
        // first; cleanup keeps the first `keep_previous` of this order.
        let all = vec![
            live("c3", true, 4),
            live("c2", false, 3),
            live("c1", false, 2),
            live("v0", false, 1),
        ];
        let mut s = seen(all, &["c3", "v0"], false);
        assert_eq!(s.previous(), ["v0", "c2", "c1"]);
        assert_eq!(decide_cleanup(&s, 1), ["c2", "c1"]);
        // The deploy record comes first: it knows C1 was live after C2.
        s.history = record(&[
            (Event::Live, "v0"),
            (Event::Live, "c2"),
            (Event::Live, "c1"),
            (Event::Live, "c3"),
        ]);
        assert_eq!(s.previous(), ["c1", "c2", "v0"]);
        // C1 rolled back from: keep_previous 1 keeps C2, where a rollback would go, not
        // C1, live more recently.
        s.history = record(&[
            (Event::Live, "v0"),
            (Event::Live, "c2"),
            (Event::Live, "c1"),
            (Event::RolledBack, "c1"),
            (Event::Live, "c2"),
            (Event::Live, "c3"),
        ]);
        assert_eq!(s.previous(), ["c2", "c1", "v0"]);
        s.history.push(Event::Live, "c1", None, 7);
        s.history.push(Event::RolledBack, "c1", None, 8);
        assert_eq!(s.previous(), ["c1", "c2", "v0"]);
        assert_eq!(decide_cleanup(&s, 1), ["v0", "c1"]);
    }

    #[test]
    fn promote_decides_from_what_the_engine_holds() {
        use Action::*;
        let c = config();
        let record = Record {
            entries: vec![(Event::Live, s("v2"), Some(s("sha256:2")))],
        };
        // The first deploy: nothing live; a proxy, the version, its health, the switch.
        let first = decide_promote(&Seen::default(), &c, "v2", "sha256:2").unwrap();
        assert_eq!(
            first,
            [
                EnsureProxy,
                Run { version: s("v2") },
                WaitHealthy { version: s("v2") },
                Switch { version: s("v2") },
                Verify { version: s("v2") },
                record.clone(),
                Retire { versions: vec![] }
            ]
        );
        // A second deploy: the one live is retired after the switch.
        let second = decide_promote(
            &seen(vec![live("v1", true, 1)], &["v1"], false),
            &c,
            "v2",
            "sha256:2",
        )
        .unwrap();
        assert_eq!(
            second.last(),
            Some(&Retire {
                versions: vec![s("v1")]
            })
        );
        // A leftover of this version (a failed promote's) is removed before it starts.
        let again = decide_promote(
            &seen(
                vec![live("v2", false, 2), live("v1", true, 1)],
                &["v1"],
                false,
            ),
            &c,
            "v2",
            "sha256:2",
        )
        .unwrap();
        assert_eq!(
            again[..3],
            [
                EnsureProxy,
                RemoveLeftover { version: s("v2") },
                Run { version: s("v2") }
            ]
        );
        // Already live: only strays are stopped, nothing is switched.
        let live_now = decide_promote(
            &seen(
                vec![live("v2", true, 2), live("v1", true, 1)],
                &["v2", "v1"],
                true,
            ),
            &c,
            "v2",
            "sha256:2",
        )
        .unwrap();
        assert_eq!(live_now, [StopStray { version: s("v1") }]);
        // Live routes to this version's container, and it does not serve: refused, since
        // replacing it would cut live.
        let broken = decide_promote(
            &seen(vec![live("v2", true, 2)], &["v2"], false),
            &c,
            "v2",
            "sha256:2",
        )
        .unwrap_err();
        assert!(
            format!("{broken}").contains("is what live routes to"),
            "{broken}"
        );
    }

    #[test]
    fn a_canary_promote_shares_judges_switches_and_bakes_before_the_old_version_goes() {
        let mut c = config();
        c.rollout = serde_yaml::from_str("{strategy: canary, steps: [10, 50], bake_seconds: 30}")
            .unwrap();
        let live = seen(vec![live("v1", true, 1)], &["v1"], false);
        let plan = decide_promote(&live, &c, "v2", "sha256:2").unwrap();
        let v = || s("v2");
        assert_eq!(
            plan,
            [
                Action::EnsureProxy,
                Action::Run { version: v() },
                Action::WaitHealthy { version: v() },
                Action::Expose {
                    version: v(),
                    back_to: Some(s("v1"))
                },
                Action::Share {
                    version: v(),
                    percent: 10
                },
                Action::Judge {
                    version: v(),
                    percent: 10
                },
                Action::Share {
                    version: v(),
                    percent: 50
                },
                Action::Judge {
                    version: v(),
                    percent: 50
                },
                Action::Switch { version: v() },
                Action::Verify { version: v() },
                Action::Record {
                    entries: vec![(Event::Live, v(), Some(s("sha256:2")))]
                },
                Action::Bake { version: v() },
                Action::Retire {
                    versions: vec![s("v1")]
                },
            ]
        );
        // Blue/green with a bake: no share, but the bake before the old version goes.
        c.rollout = serde_yaml::from_str("{bake_seconds: 30}").unwrap();
        let plan = decide_promote(&live, &c, "v2", "sha256:2").unwrap();
        assert!(!plan.iter().any(|a| matches!(a, Action::Share { .. })));
        let at = |want: fn(&Action) -> bool| plan.iter().position(want).unwrap();
        assert!(
            at(|a| matches!(a, Action::Expose { .. })) < at(|a| matches!(a, Action::Switch { .. }))
                && at(|a| matches!(a, Action::Bake { .. }))
                    < at(|a| matches!(a, Action::Retire { .. }))
        );
        // The default, blue/green without a bake, judges nothing.
        let plan = decide_promote(&live, &config(), "v2", "sha256:2").unwrap();
        assert!(!plan.iter().any(|a| matches!(
            a,
            Action::Expose { .. } | Action::Judge { .. } | Action::Bake { .. }
        )));
    }

    #[test]
    fn stage_pulls_only_from_a_registry() {
        use Action::*;
        let mut c = config();
        let run = [
            ReplaceStaging,
            RunStaging { version: s("v1") },
            WaitStaging { version: s("v1") },
        ];
        assert_eq!(
            decide_stage(&c, "v1", false),
            run,
            "without docker_repo the engine that built the image runs it"
        );
        c.docker_repo = Some("registry.example.com/team".into());
        assert_eq!(decide_stage(&c, "v1", false)[..2], [Pull, ReplaceStaging]);
    }

    #[test]
    fn rollback_decides_from_the_record_and_never_returns() {
        use Action::*;
        // Without a previous version: refused.
        assert!(decide_rollback(&seen(vec![live("v1", true, 1)], &["v1"], false), None, false).is_err());
        // V0 → C1 → rollback → C2, then rollback: back to V0, C2 retired, both recorded.
        let mut s2 = seen(
            vec![
                live("c2", true, 3),
                live("c1", false, 2),
                live("v0", false, 1),
            ],
            &["c2", "v0", "c1"],
            false,
        );
        let plan = decide_rollback(&s2, None, false).unwrap();
        let recorded = Record {
            entries: vec![
                (Event::RolledBack, s("c2"), None),
                (Event::Live, s("v0"), None),
            ],
        };
        assert_eq!(
            plan,
            [
                EnsureProxy,
                Start {
                    version: s("v0"),
                    why: s("the version live before, never rolled back from")
                },
                WaitHealthy { version: s("v0") },
                Switch { version: s("v0") },
                Verify { version: s("v0") },
                recorded,
                Retire {
                    versions: vec![s("c2")]
                }
            ]
        );
        // After that rollback: live is V0, C2 was rolled back from; a second rollback goes
        // further back (C1, never rolled back from per the record), not to C2.
        s2 = seen(
            vec![
                live("v0", true, 1),
                live("c2", false, 3),
                live("c1", false, 2),
            ],
            &["v0", "c2", "c1"],
            false,
        );
        s2.history = record(&[
            (Event::Live, "v0"),
            (Event::Live, "c1"),
            (Event::Live, "c2"),
            (Event::RolledBack, "c2"),
            (Event::Live, "v0"),
        ]);
        assert_eq!(
            decide_rollback(&s2, None, false).unwrap()[1],
            Start {
                version: s("c1"),
                why: s("the version live before, never rolled back from")
            }
        );
        // With C1 rolled back from too: refused, unless named.
        s2.history.push(Event::RolledBack, "c1", None, 9);
        let e = decide_rollback(&s2, None, false).unwrap_err();
        assert!(format!("{e}").contains("rolled back from"), "{e}");
        assert_eq!(
            decide_rollback(&s2, Some("c2"), false).unwrap()[1],
            Start {
                version: s("c2"),
                why: s("named with --to")
            }
        );
    }

    fn made(name: &str, env: &str, version: &str, running: bool) -> Made {
        Made {
            name: name.into(),
            env: env.into(),
            version: version.into(),
            running,
        }
    }

    #[test]
    fn destroy_takes_the_proxy_first_then_live_running_first_and_keeps_the_record() {
        use Action::*;
        let all = [
            made("pym-s-live-v1", "live", "v1", false),
            made("pym-s-staging", "staging", "v3", true),
            made("pym-s-live-v2", "live", "v2", true),
            made("pym-s-proxy", "proxy", "", true),
        ];
        let discard = |name: &str, what: &str| Discard {
            name: name.into(),
            what: what.into(),
        };
        assert_eq!(
            decide_destroy(&all, true, Scope::Live),
            [
                discard("pym-s-proxy", "the live proxy"),
                discard("pym-s-live-v2", "live, v2"),
                discard("pym-s-live-v1", "previous, v1"),
                RemoveNetwork,
                RemoveImages,
            ]
        );
        assert_eq!(
            decide_destroy(&all, true, Scope::Staging),
            [discard("pym-s-staging", "staging, v3"), RemoveImages]
        );
        let both = decide_destroy(&all, false, Scope::All);
        assert_eq!(both.first(), Some(&discard("pym-s-staging", "staging, v3")));
        assert!(!both.contains(&RemoveNetwork), "{both:?}");
        assert_eq!(both.len(), 5, "{both:?}");
        // Nothing made for the scope: nothing to do, not even images.
        assert_eq!(decide_destroy(&all[..1], true, Scope::Staging), []);
        assert_eq!(decide_destroy(&[], false, Scope::All), []);
    }
}

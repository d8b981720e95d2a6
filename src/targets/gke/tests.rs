//! The gke target's unit tests: names and sizes, the decisions on snapshots, the objects.

use k8s_openapi::api::apps::v1::Deployment;

use crate::config::Rollout;
use serde_json::json;

use super::check::{bad_label, is_quantity};
use super::decide::{canary_pods, share_of};
use super::kube::typed;
use super::observe::rolled_out;
use super::*;

fn names() -> Names {
    Names {
        app: "hello".into(),
        ns: "team".into(),
    }
}

fn dep(name: &str, env: &str, version: &str, replicas: i32) -> Dep {
    Dep {
        name: name.into(),
        env: env.into(),
        version: version.into(),
        image: format!("r/hello@sha256:{version}"),
        replicas,
        ready: replicas,
        created: format!("2026-11-28T00:00:0{}Z", version.len() % 10),
        live_since: None,
    }
}

fn live_svc(selects: &str) -> Svc {
    let mut s = Svc {
        name: "hello".into(),
        port: 80,
        ..Svc::default()
    };
    s.selector.insert(VERSION.into(), selects.into());
    s
}

fn history(events: &[(Event, &str)]) -> History {
    let mut h = History::default();
    for (i, (e, v)) in events.iter().enumerate() {
        h.push(*e, v, None, i as i64);
    }
    h
}

fn staged(version: &str) -> Staged {
    Staged {
        version: version.into(),
        image: format!("r/hello@sha256:{version}"),
        digest: format!("sha256:{version}"),
    }
}

fn live(selects: &str, deps: &[(&str, i32)], h: History) -> Seen {
    Seen {
        namespace: true,
        deployments: deps
            .iter()
            .map(|(v, r)| dep(&format!("hello-{v}"), "live", v, *r))
            .collect(),
        live: Some(live_svc(selects)),
        staging: None,
        history: h,
    }
}

#[test]
fn names_and_sizes_are_refused_as_kubernetes_would_refuse_them() {
    assert!(bad_label("hello-world", 30).is_none());
    assert!(bad_label("Hello", 30).is_some());
    assert!(bad_label("hello_world", 30).is_some());
    assert!(bad_label("-hello", 30).is_some());
    assert!(bad_label(&"a".repeat(31), 30).is_some());
    for q in ["250m", "1", "0.5", "512Mi", "2Gi", "1G"] {
        assert!(is_quantity(q), "{q}");
    }
    for q in ["", "1.2.3", "512MB", "Mi", "lots"] {
        assert!(!is_quantity(q), "{q}");
    }
}

#[test]
fn stage_moves_the_staging_deployment_by_digest_and_makes_what_is_missing() {
    let acts = decide_stage(
        &Seen::default(),
        &names(),
        "v2",
        "r/hello@sha256:2",
        1,
        true,
    )
    .unwrap();
    assert_eq!(acts[0], Act::Namespace);
    assert_eq!(
        acts[1],
        Act::Secret {
            name: "hello-staging".into(),
            env: PymEnv::Staging
        }
    );
    assert!(
        matches!(&acts[2], Act::Deploy { name, env: PymEnv::Staging, .. } if name == "hello-staging")
    );
    assert_eq!(
        acts.last(),
        Some(&Act::Service {
            env: PymEnv::Staging
        })
    );
    // With the namespace and the Service there: no namespace to make, the Service
    // still given the configured type and port.
    let again = decide_stage(
        &Seen {
            namespace: true,
            staging: Some(Svc::default()),
            ..Seen::default()
        },
        &names(),
        "v2",
        "r/hello@sha256:2",
        1,
        true,
    )
    .unwrap();
    assert!(
        !again.contains(&Act::Namespace)
            && again.contains(&Act::Service {
                env: PymEnv::Staging
            }),
        "{again:?}"
    );
    assert!(decide_stage(&Seen::default(), &names(), "v2", "r/hello:v2", 1, false).is_err());
}

#[test]
fn a_canary_is_a_replica_ratio_in_the_live_service_then_a_switch_and_a_bake() {
    use Event::*;
    let seen = live("v2", &[("v2", 3)], history(&[(Live, "v2")]));
    let canary: Rollout =
        serde_yaml::from_str("{strategy: canary, steps: [25, 50], bake_seconds: 30}").unwrap();
    let acts = decide_promote(&seen, &names(), Some(&staged("v3")), 3, false, 1, &canary).unwrap();
    let said: Vec<String> = acts.iter().map(|a| a.describe(&names())).collect();
    let at = |want: &Act| acts.iter().position(|a| a == want).unwrap_or_else(|| panic!("no {want:?} in {said:#?}"));
    let new = || "hello-v3".to_string();
    // 25% beside 3 live pods: 1 canary pod; 50%: 3; then all 3 before the switch.
    assert!(matches!(&acts[0], Act::Deploy { replicas: 1, .. }), "{said:#?}");
    let pool = at(&Act::Pool { live: "v2".into(), canary: "v3".into() });
    let first = acts.iter().position(|a| matches!(a, Act::Judge { percent: 25, canary: 1, live: 3, .. })).unwrap();
    let scaled = at(&Act::Scale { name: new(), replicas: 3 });
    let second = acts.iter().position(|a| matches!(a, Act::Judge { percent: 50, canary: 3, live: 3, .. })).unwrap();
    let select = acts.iter().position(|a| matches!(a, Act::Select { .. })).unwrap();
    let bake = acts.iter().position(|a| matches!(a, Act::Bake { .. })).unwrap();
    let retire = at(&Act::Scale { name: "hello-v2".into(), replicas: 0 });
    assert!(pool < first && first < scaled && scaled < second && second < select && select < bake && bake < retire, "{said:#?}");
    assert_eq!((canary_pods(3, 5), canary_pods(3, 25), canary_pods(3, 50), canary_pods(1, 90)), (1, 1, 3, 9));
    assert_eq!(share_of(1, 3), 25);
    // The first version goes live whole: nothing to judge beside.
    let first_deploy = decide_promote(&Seen::default(), &names(), Some(&staged("v1")), 3, false, 1, &canary).unwrap();
    assert!(!first_deploy.iter().any(|a| matches!(a, Act::Pool { .. } | Act::Judge { .. } | Act::Bake { .. })));
    // During a canary the Service has no version in its selector: it says which is live.
    let mut pooled = live_svc("v2");
    pooled.selector.remove(VERSION);
    pooled.annotations.insert(CANARY_BESIDE.into(), "v2".into());
    assert_eq!(pooled.selects(), Some("v2"));
}

#[test]
fn promote_rolls_out_checks_switches_verifies_then_retires() {
    use Event::*;
    let mut seen = live(
        "v2",
        &[("v2", 2), ("v1", 0), ("v0", 0)],
        history(&[(Live, "v0"), (Live, "v1"), (Live, "v2")]),
    );
    seen.deployments
        .push(dep("hello-staging", "staging", "v3", 1));
    let acts = decide_promote(&seen, &names(), Some(&staged("v3")), 2, false, 1, &Rollout::default()).unwrap();
    let kinds: Vec<String> = acts.iter().map(|a| a.describe(&names())).collect();
    let select = acts
        .iter()
        .position(|a| matches!(a, Act::Select { .. }))
        .unwrap();
    let verify = acts
        .iter()
        .position(|a| matches!(a, Act::Verify { .. }))
        .unwrap();
    let scale = acts
        .iter()
        .position(|a| {
            *a == Act::Scale {
                name: "hello-v2".into(),
                replicas: 0,
            }
        })
        .unwrap();
    assert_eq!(
        acts[select],
        Act::Select {
            from: Some("v2".into()),
            to: "v3".into(),
            record: vec![(Live, "v3".into())]
        },
        "{kinds:?}"
    );
    assert!(
        matches!(&acts[0], Act::Deploy { image, env: PymEnv::Live, .. } if image == "r/hello@sha256:v3"),
        "{kinds:?}"
    );
    assert!(select < verify && verify < scale, "{kinds:?}");
    // keep 1: v2 (just live) is kept; v1 and v0 go.
    assert!(
        acts.contains(&Act::Delete {
            name: "hello-v1".into()
        }) && acts.contains(&Act::Delete {
            name: "hello-v0".into()
        }),
        "{kinds:?}"
    );
    assert!(
        !acts.contains(&Act::Delete {
            name: "hello-v2".into()
        }),
        "{kinds:?}"
    );
}

#[test]
fn the_first_promote_makes_the_namespace_and_points_the_service_at_what_staging_runs() {
    let acts = decide_promote(&Seen::default(), &names(), Some(&staged("v1")), 2, true, 1, &Rollout::default()).unwrap();
    assert_eq!(
        acts,
        vec![
            Act::Namespace,
            Act::Secret {
                name: "hello-v1".into(),
                env: PymEnv::Live
            },
            Act::Deploy {
                name: "hello-v1".into(),
                version: "v1".into(),
                image: "r/hello@sha256:v1".into(),
                env: PymEnv::Live,
                replicas: 2
            },
            Act::Rollout {
                name: "hello-v1".into()
            },
            Act::CheckPods {
                name: "hello-v1".into(),
                version: "v1".into(),
                env: PymEnv::Live
            },
            Act::Select {
                from: None,
                to: "v1".into(),
                record: vec![(Event::Live, "v1".into())]
            },
            Act::Verify {
                version: "v1".into()
            },
        ]
    );
}

#[test]
fn promote_makes_live_what_staging_runs_and_is_refused_without_it() {
    use Event::*;
    // Staging runs v2 (HEAD may be ahead): v2 and its image go live, nothing else.
    let seen = live("v1", &[("v1", 2)], history(&[(Live, "v1")]));
    let acts = decide_promote(&seen, &names(), Some(&staged("v2")), 2, false, 1, &Rollout::default()).unwrap();
    assert!(
        acts.iter().all(|a| match a {
            Act::Deploy { version, image, .. } => version == "v2" && image == "r/hello@sha256:v2",
            Act::Select { to, .. } | Act::Verify { version: to } => to == "v2",
            _ => true,
        }),
        "{acts:?}"
    );
    // Nothing staged, or an image with no digest: refused.
    let e = decide_promote(&seen, &names(), None, 2, false, 1, &Rollout::default()).unwrap_err();
    assert!(format!("{e}").contains("nothing runs on staging"), "{e}");
    let tagged = Staged {
        image: "r/hello:v2".into(),
        ..staged("v2")
    };
    assert!(decide_promote(&seen, &names(), Some(&tagged), 2, false, 1, &Rollout::default()).is_err());
}

#[test]
fn promote_of_what_is_live_is_a_check_and_a_rebuilt_image_goes_live_again() {
    use Event::*;
    let mut seen = live("v3", &[("v3", 2)], history(&[(Live, "v3")]));
    seen.deployments
        .push(dep("hello-staging", "staging", "v3", 1));
    assert_eq!(
        decide_promote(&seen, &names(), Some(&staged("v3")), 2, false, 2, &Rollout::default()).unwrap(),
        vec![Act::Verify {
            version: "v3".into()
        }]
    );
    let rebuilt = Staged {
        image: "r/hello@sha256:other".into(),
        digest: "sha256:other".into(),
        ..staged("v3")
    };
    let acts = decide_promote(&seen, &names(), Some(&rebuilt), 2, false, 2, &Rollout::default()).unwrap();
    assert!(
        acts.iter()
            .any(|a| matches!(a, Act::Deploy { image, .. } if image == "r/hello@sha256:other")),
        "{acts:?}"
    );
}

#[test]
fn a_version_rolled_back_from_can_be_promoted_again() {
    use Event::*;
    let seen = live(
        "v1",
        &[("v2", 0), ("v1", 2)],
        history(&[(Live, "v1"), (Live, "v2"), (RolledBack, "v2"), (Live, "v1")]),
    );
    let acts = decide_promote(&seen, &names(), Some(&staged("v2")), 2, false, 1, &Rollout::default()).unwrap();
    assert!(
        acts.contains(&Act::Select {
            from: Some("v1".into()),
            to: "v2".into(),
            record: vec![(Live, "v2".into())]
        }),
        "{acts:?}"
    );
    assert_eq!(
        acts.last(),
        Some(&Act::Scale {
            name: "hello-v1".into(),
            replicas: 0
        }),
        "v1 is what a rollback would go to: kept"
    );
    assert!(!acts.iter().any(|a| matches!(a, Act::Delete { .. })));
}

#[test]
fn a_live_version_the_record_does_not_know_is_recorded_before_the_new_one() {
    let seen = live("v1", &[("v1", 2)], History::default());
    let acts = decide_promote(&seen, &names(), Some(&staged("v2")), 2, false, 1, &Rollout::default()).unwrap();
    assert!(
        acts.iter().any(|a| matches!(a, Act::Select { record, .. }
            if *record == vec![(Event::Live, "v1".to_string()), (Event::Live, "v2".to_string())])),
        "{acts:?}"
    );
}

#[test]
fn rollback_goes_to_the_last_live_before_never_to_one_rolled_back_from() {
    use Event::*;
    let seen = live(
        "v3",
        &[("v3", 2), ("v2", 0), ("v1", 0)],
        history(&[
            (Live, "v1"),
            (Live, "v2"),
            (RolledBack, "v2"),
            (Live, "v1"),
            (Live, "v3"),
        ]),
    );
    let (current, target, acts) = decide_rollback(&seen, &names(), 2, None, false).unwrap();
    assert_eq!((current.as_str(), target.as_str()), ("v3", "v1"));
    assert_eq!(
        acts[0],
        Act::Scale {
            name: "hello-v1".into(),
            replicas: 2
        }
    );
    assert_eq!(
        acts[3],
        Act::Select {
            from: Some("v3".into()),
            to: "v1".into(),
            record: vec![(RolledBack, "v3".into()), (Live, "v1".into())]
        }
    );
    assert_eq!(
        acts.last(),
        Some(&Act::Scale {
            name: "hello-v3".into(),
            replicas: 0
        })
    );
    // Nothing before: refused.
    let none = live("v1", &[("v1", 2)], history(&[(Live, "v1")]));
    assert!(decide_rollback(&none, &names(), 2, None, false).is_err());
    assert!(decide_rollback(&Seen::default(), &names(), 2, None, false).is_err());
}

#[test]
fn rollback_without_a_record_goes_to_the_newest_previous_or_by_the_old_annotations() {
    let seen = live("v3", &[("v3", 2), ("v2", 0), ("v1", 0)], History::default());
    assert_eq!(decide_rollback(&seen, &names(), 2, None, false).unwrap().1, "v2");
    // An older pymdeploy's annotations on the live Service, converted.
    let mut svc = live_svc("v3");
    svc.annotations
        .insert(LIVE_HISTORY.into(), "v1,v2,v3".into());
    svc.annotations.insert(ROLLED_BACK.into(), "v2".into());
    let h = svc.legacy_history();
    assert_eq!(h.live_order(), ["v3", "v2", "v1"]);
    assert!(h.rolled_back_from("v2") && !h.rolled_back_from("v1"));
    let seen = Seen { history: h, ..seen };
    assert_eq!(decide_rollback(&seen, &names(), 2, None, false).unwrap().1, "v1");
}

#[test]
fn rollback_twice_never_returns_to_the_version_it_left_unless_named() {
    use Event::*;
    // v1 → v2, rolled back to v1: a second rollback does not go to v2.
    let seen = live(
        "v1",
        &[("v2", 0), ("v1", 2)],
        history(&[(Live, "v1"), (Live, "v2"), (RolledBack, "v2"), (Live, "v1")]),
    );
    let e = decide_rollback(&seen, &names(), 2, None, false).unwrap_err();
    assert!(
        format!("{e}").contains("rolled back from: v2")
            && crate::error::hint_of(&e).unwrap().contains("--to"),
        "{e}"
    );
    // --to names it: it goes.
    let (current, target, acts) = decide_rollback(&seen, &names(), 2, Some("v2"), false).unwrap();
    assert_eq!((current.as_str(), target.as_str()), ("v1", "v2"));
    assert!(acts.contains(&Act::Select {
        from: Some("v1".into()),
        to: "v2".into(),
        record: vec![(RolledBack, "v1".into()), (Live, "v2".into())]
    }));
    // A second rollback goes further back: v3 → v2 → (rollback) v1 → (rollback) v0.
    let seen = live(
        "v1",
        &[("v2", 0), ("v1", 2), ("v0", 0)],
        history(&[
            (Live, "v0"),
            (Live, "v1"),
            (Live, "v2"),
            (RolledBack, "v2"),
            (Live, "v1"),
        ]),
    );
    assert_eq!(decide_rollback(&seen, &names(), 2, None, false).unwrap().1, "v0");
    // --to a version not kept, or the live one: refused.
    assert!(decide_rollback(&seen, &names(), 2, Some("v9"), false).is_err());
    assert!(decide_rollback(&seen, &names(), 2, Some("v1"), false).is_err());
}

#[test]
fn cleanup_keeps_the_most_recently_live() {
    use Event::*;
    let mut seen = live(
        "v3",
        &[("v3", 2), ("v2", 0), ("v1", 0)],
        history(&[(Live, "v1"), (Live, "v2"), (Live, "v3")]),
    );
    seen.deployments
        .push(dep("hello-staging", "staging", "v3", 1));
    let fates: Vec<(String, bool)> = decide_cleanup(&seen, &names(), 1)
        .into_iter()
        .map(|(d, f)| (d.name, matches!(f, Fate::Go { .. })))
        .collect();
    assert_eq!(
        fates,
        [
            ("hello-v2".to_string(), false),
            ("hello-v1".to_string(), true)
        ]
    );
}

#[test]
fn cleanup_after_a_rollback_keeps_what_the_next_rollback_needs() {
    use Event::*;
    // v1 → v2 → v3, rolled back to v2: the next rollback goes to v1, so keep_previous 1
    // keeps v1 and deletes v3 (live more recently, but rolled back from).
    let seen = live(
        "v2",
        &[("v3", 0), ("v2", 2), ("v1", 0)],
        history(&[
            (Live, "v1"),
            (Live, "v2"),
            (Live, "v3"),
            (RolledBack, "v3"),
            (Live, "v2"),
        ]),
    );
    let fates: Vec<(String, bool)> = decide_cleanup(&seen, &names(), 1)
        .into_iter()
        .map(|(d, f)| (d.name, matches!(f, Fate::Go { .. })))
        .collect();
    assert_eq!(
        fates,
        [
            ("hello-v1".to_string(), false),
            ("hello-v3".to_string(), true)
        ]
    );
    assert_eq!(decide_rollback(&seen, &names(), 2, None, false).unwrap().1, "v1");
    // A promote after it retires the same way: v2 (just live before) is kept.
    let acts = decide_promote(&seen, &names(), Some(&staged("v4")), 2, false, 1, &Rollout::default()).unwrap();
    assert!(
        acts.contains(&Act::Delete {
            name: "hello-v3".into()
        }) && acts.contains(&Act::Delete {
            name: "hello-v1".into()
        }) && !acts.contains(&Act::Delete {
            name: "hello-v2".into()
        }),
        "{acts:?}"
    );
}

#[test]
fn staging_runs_a_version_once_it_rolled_out_with_every_replica_ready() {
    let d = |ready: i64, observed: i64| json!({"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": {"observedGeneration": observed, "replicas": 2, "updatedReplicas": 2, "availableReplicas": ready, "readyReplicas": ready}});
    assert!(rolled_out(&d(2, 2)));
    assert!(!rolled_out(&d(1, 2)), "a replica not ready");
    assert!(!rolled_out(&d(2, 1)), "the spec not observed yet");
}

#[test]
fn secrets_are_referenced_never_written_in_the_deployment() {
    let dir = std::env::temp_dir().join(format!("pym-gke-decide-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(crate::config::CONFIG_FILE),
        "name: hello\ndeploy_target: gke\ndocker_repo: r\n",
    )
    .unwrap();
    let mut c = Config::load(&dir, PymEnv::Live).unwrap();
    c.env_secrets = vec!["API_KEY".into()];
    let d = deployment(
        &c,
        &names(),
        "hello-v1",
        "v1",
        "r@sha256:1",
        PymEnv::Live,
        2,
    );
    let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env[3],
        json!({"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "hello-v1", "key": "API_KEY"}}})
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"],
        5
    );
    let _: Deployment = typed(d).unwrap();
}

#[test]
fn destroy_deletes_the_service_first_then_each_deployment_live_first() {
    let mut seen = live("v2", &[("v1", 0), ("v2", 2)], History::default());
    seen.deployments.push(dep("hello-staging", "staging", "v3", 1));
    seen.staging = Some(Svc {
        name: "hello-staging".into(),
        ..Svc::default()
    });
    let delete = |name: &str| Act::Delete { name: name.into() };
    assert_eq!(
        super::decide::decide_destroy(&seen, &names(), PymEnv::Live),
        [
            Act::DeleteService { env: PymEnv::Live },
            delete("hello-v2"),
            delete("hello-v1"),
        ]
    );
    assert_eq!(
        super::decide::decide_destroy(&seen, &names(), PymEnv::Staging),
        [
            Act::DeleteService {
                env: PymEnv::Staging
            },
            delete("hello-staging"),
        ]
    );
    // Nothing made: nothing to do, and the record is never touched.
    let empty = Seen {
        namespace: true,
        deployments: Vec::new(),
        live: None,
        staging: None,
        history: history(&[(Event::Live, "v1")]),
    };
    assert_eq!(super::decide::decide_destroy(&empty, &names(), PymEnv::Live), []);
}

//! The decisions, on snapshots of what Beanstalk holds: no cloud, no engine.

use super::*;
use crate::config::PymEnv;
use crate::targets::history::History;

const IMAGE: &str = "registry.example.com/team/hello@sha256:aa";

/// The config of a Beanstalk service `hello`, with `extra` keys, for `env`.
fn hello(tag: &str, extra: &str, env: PymEnv) -> Config {
    let dir = std::env::temp_dir().join(format!("pym-eb-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(crate::config::CONFIG_FILE), format!("name: hello\ndeploy_target: aws-beanstalk\ndocker_repo: registry.example.com/team\n{extra}")).unwrap();
    Config::load(&dir, env).unwrap()
}

/// An environment of `version`: its name, whether stage made it, its PYM_ENV, and
/// whether it holds the live CNAME.
fn env(c: &Config, version: &str, stage: bool, pym_env: &str, live: bool) -> Env {
    let name = match stage {
        true => env_name(c, version),
        false => live_env_name(c, version),
    };
    Env {
        cname: match live {
            true => "hello-live.us-east-1.elasticbeanstalk.com".into(),
            false => format!("{}.us-east-1.elasticbeanstalk.com", name.to_lowercase()),
        },
        name,
        label: version.into(),
        version: version.into(),
        status: "Ready".into(),
        health: "Green".into(),
        pym_env: Some(pym_env.into()),
        stage,
        ..Env::default()
    }
}

fn staged(version: &str, digest: &str) -> Staged {
    Staged {
        version: version.into(),
        image: format!("registry.example.com/team/hello@{digest}"),
        digest: digest.into(),
    }
}

fn record(events: &[(Event, &str)]) -> History {
    let mut h = History::default();
    for (i, (e, v)) in events.iter().enumerate() {
        h.push(*e, v, None, i as i64);
    }
    h
}

/// Beanstalk as read: `envs` newest first, staging running `on_staging`.
fn seen(envs: Vec<Env>, history: History, on_staging: Option<Staged>) -> Seen {
    Seen {
        envs,
        live_prefix: "hello-live".into(),
        history,
        staged: on_staging,
    }
}

#[test]
fn the_first_promote_creates_the_live_environment_from_what_staging_runs() {
    use Act::*;
    let c = hello("first", "", PymEnv::Live);
    let s = staged("v1", "sha256:aa");
    let v1 = env(&c, "v1", true, "staging", false);
    let plan = decide_promote(
        &seen(vec![v1.clone()], History::default(), Some(s.clone())),
        &c,
        &s,
    )
    .unwrap();
    let first = live_env_name(&c, "v1");
    assert_eq!(
        plan,
        [
            CreateLive {
                env: first.clone(),
                from: v1.name.clone(),
                label: "v1".into(),
                stack: None,
                platform: None
            },
            Wait {
                envs: vec![first.clone()],
                green: true
            },
            Verify {
                version: "v1".into()
            },
            Record {
                notes: vec![(Event::Live, "v1".into(), Some("sha256:aa".into()))]
            },
            Terminate {
                env: v1.name,
                why: format!("{first} runs the same version")
            },
        ]
    );
}

#[test]
fn promote_swaps_to_what_staging_runs_and_is_a_check_when_it_is_live() {
    use Act::*;
    let c = hello("promote", "", PymEnv::Live);
    let s2 = staged("v2", "sha256:bb");
    let v1 = env(&c, "v1", false, "live", true);
    let v2 = env(&c, "v2", true, "staging", false);
    let h = record(&[(Event::Live, "v1")]);
    let plan = decide_promote(
        &seen(vec![v2.clone(), v1.clone()], h.clone(), Some(s2.clone())),
        &c,
        &s2,
    )
    .unwrap();
    assert_eq!(
        plan,
        [
            SetLive {
                env: v2.name.clone()
            },
            Wait {
                envs: vec![v2.name.clone()],
                green: true
            },
            Swap {
                env: v2.name.clone(),
                from: v1.name.clone()
            },
            Wait {
                envs: vec![v2.name.clone(), v1.name.clone()],
                green: false
            },
            Verify {
                version: "v2".into()
            },
            Record {
                notes: vec![(Event::Live, "v2".into(), Some("sha256:bb".into()))]
            },
        ]
    );
    // Re-promoted after a rollback left it (PYM_ENV=live already): the swap only; a
    // live version the record does not name last enters it first.
    let mut again = v2.clone();
    again.pym_env = Some("live".into());
    let plan = decide_promote(
        &seen(
            vec![again, v1.clone()],
            History::default(),
            Some(s2.clone()),
        ),
        &c,
        &s2,
    )
    .unwrap();
    assert!(matches!(plan[0], Swap { .. }), "{plan:?}");
    assert_eq!(
        plan.last(),
        Some(&Record {
            notes: vec![
                (Event::Live, "v1".into(), None),
                (Event::Live, "v2".into(), Some("sha256:bb".into()))
            ]
        })
    );
    // Already live: only the check.
    let mut live = v2.clone();
    live.cname = v1.cname.clone();
    let plan = decide_promote(&seen(vec![live], h, Some(s2.clone())), &c, &s2).unwrap();
    assert_eq!(
        plan,
        [Verify {
            version: "v2".into()
        }]
    );
}

#[test]
fn promote_refuses_what_staging_does_not_run_or_what_is_not_green() {
    let c = hello("refused", "", PymEnv::Live);
    let s2 = staged("v2", "sha256:bb");
    let v1 = env(&c, "v1", false, "live", true);
    let v2 = env(&c, "v2", true, "staging", false);
    let refused = |envs: Vec<Env>, on: Option<Staged>| {
        format!(
            "{}",
            decide_promote(&seen(envs, History::default(), on), &c, &s2).unwrap_err()
        )
    };
    assert!(refused(vec![v1.clone()], None).contains("is not staged"));
    // Staging runs another image of it (staged again meanwhile), or another version.
    assert!(
        refused(
            vec![v2.clone(), v1.clone()],
            Some(staged("v2", "sha256:cc"))
        )
        .contains("staging runs v2")
    );
    let mut red = v2.clone();
    red.health = "Red".into();
    assert!(
        refused(vec![red, v1], Some(s2.clone()))
            .contains("only a Ready and Green environment is promoted")
    );
}

#[test]
fn rollback_goes_to_the_version_live_before_never_back_unless_named() {
    use Act::*;
    let c = hello("rollback", "", PymEnv::Live);
    let v0 = env(&c, "v0", false, "live", false);
    let c1 = env(&c, "c1", true, "live", false);
    let c2 = env(&c, "c2", true, "live", true);
    let envs = vec![c2.clone(), c1.clone(), v0.clone()];
    let h = record(&[
        (Event::Live, "v0"),
        (Event::Live, "c1"),
        (Event::Live, "c2"),
    ]);
    let (from, to, plan) = decide_rollback(&seen(envs.clone(), h, None), None, false).unwrap();
    assert_eq!(
        (from.name.as_str(), to.name.as_str()),
        (c2.name.as_str(), c1.name.as_str())
    );
    assert_eq!(
        plan,
        [
            Swap {
                env: c1.name.clone(),
                from: c2.name.clone()
            },
            Wait {
                envs: vec![c1.name.clone(), c2.name.clone()],
                green: false
            },
            Verify {
                version: "c1".into()
            },
            Record {
                notes: vec![
                    (Event::RolledBack, "c2".into(), None),
                    (Event::Live, "c1".into(), None)
                ]
            },
        ]
    );
    // Rolled back to c1 from c2: a second rollback goes to v0, never c2 again.
    let mut at_c1 = envs.clone();
    at_c1[0].cname = format!("{}.x", c2.name.to_lowercase());
    at_c1[1].cname = c2.cname.clone();
    let h = record(&[
        (Event::Live, "v0"),
        (Event::Live, "c1"),
        (Event::Live, "c2"),
        (Event::RolledBack, "c2"),
        (Event::Live, "c1"),
    ]);
    let (_, to, _) = decide_rollback(&seen(at_c1.clone(), h.clone(), None), None, false).unwrap();
    assert_eq!(to.version, "v0");
    let h = record(&[
        (Event::Live, "c1"),
        (Event::Live, "c2"),
        (Event::RolledBack, "c2"),
        (Event::Live, "c1"),
    ]);
    let two = vec![at_c1[0].clone(), at_c1[1].clone()];
    let e = decide_rollback(&seen(two.clone(), h.clone(), None), None, false).unwrap_err();
    assert!(format!("{e}").contains("rolled back from: c2"), "{e}");
    let (_, to, _) = decide_rollback(&seen(two, h, None), Some("c2"), false).unwrap();
    assert_eq!(to.version, "c2", "--to names it");
}

#[test]
fn rollback_without_a_record_goes_to_the_newest_previous_and_needs_one() {
    let c = hello("norecord", "", PymEnv::Live);
    let live = env(&c, "v3", true, "live", true);
    // Only a staged version beside live (never PYM_ENV=live): nowhere to go.
    let staged_only = vec![live.clone(), env(&c, "v4", true, "staging", false)];
    let e = decide_rollback(&seen(staged_only, History::default(), None), None, false).unwrap_err();
    assert!(format!("{e}").contains("no previous live version"), "{e}");
    // Nothing live: refused.
    assert!(decide_rollback(&seen(vec![], History::default(), None), None, false).is_err());
    // No record (an older pymdeploy's application without tags): the newest previous.
    let envs = vec![
        live,
        env(&c, "v2", true, "live", false),
        env(&c, "v1", false, "live", false),
    ];
    let (_, to, _) = decide_rollback(&seen(envs, History::default(), None), None, false).unwrap();
    assert_eq!(to.version, "v2");
}

/// Five environments, one of each role: live v3, staging v5, previous v1, staged v4,
/// rolled-back v2.
fn one_of_each_role() -> Seen {
    let c = hello("roles", "", PymEnv::Live);
    let envs = vec![
        env(&c, "v5", true, "staging", false),
        env(&c, "v3", true, "live", true),
        env(&c, "v2", true, "live", false),
        env(&c, "v4", true, "staging", false),
        env(&c, "v1", false, "live", false),
    ];
    let h = record(&[
        (Event::Live, "v1"),
        (Event::Live, "v2"),
        (Event::RolledBack, "v2"),
        (Event::Live, "v1"),
        (Event::Live, "v3"),
    ]);
    seen(envs, h, None)
}

#[test]
fn cleanup_keeps_staging_and_what_rollback_needs() {
    let s = one_of_each_role();
    let roles: Vec<(&str, &str)> = roles(&s)
        .iter()
        .map(|(e, r)| (e.version.as_str(), *r))
        .collect();
    assert_eq!(
        roles,
        [
            ("v3", "live"),
            ("v5", "staging"),
            ("v1", "previous"),
            ("v4", "staged"),
            ("v2", "rolled-back")
        ]
    );
    let fates: Vec<(&str, bool)> = decide_cleanup(&s, 1)
        .iter()
        .map(|(e, f)| (e.version.as_str(), matches!(f, Fate::Go { .. })))
        .collect();
    assert_eq!(
        fates,
        [("v5", false), ("v1", false), ("v4", true), ("v2", true)]
    );
    // A previous environment Red for a moment is still what rollback needs: kept.
    let mut red = s.clone();
    red.envs[4].health = "Red".into();
    assert!(
        decide_cleanup(&red, 1)
            .iter()
            .any(|(e, f)| e.version == "v1" && *f == Fate::Keep(None))
    );
    assert!(
        decide_cleanup(&s, 0)
            .iter()
            .any(|(e, f)| e.version == "v1" && matches!(f, Fate::Go { .. }))
    );
}

#[test]
fn stage_refuses_before_it_creates_and_creates_only_what_is_missing() {
    use Act::*;
    let c = hello("stage", "docker_bucket: creds\n", PymEnv::Staging);
    let v = "261127-1900-15-0ebaf1";
    let env = env_name(&c, v);
    let stack = Some("64bit Amazon Linux 2023 v4.7.1 running Docker".to_string());
    let fresh = StageSeen {
        existing: None,
        cname: (true, format!("{env}.x")),
        auth: Some((true, true)),
        platform: Some((stack.clone(), None)),
        app_exists: false,
        version_exists: false,
    };
    // The first deploy: the application, the version, the environment, the wait.
    assert_eq!(
        decide_stage(&fresh, &c, v, IMAGE, false, 7).unwrap(),
        [
            CreateApplication,
            UploadVersion {
                label: v.into(),
                image: IMAGE.into()
            },
            CreateEnvironment {
                env: env.clone(),
                label: v.into(),
                stack: stack.clone(),
                platform: None
            },
            Wait {
                envs: vec![env.clone()],
                green: true
            },
        ]
    );
    // A second version: the application exists; a version staged before (its
    // environment terminated since) is reused, unless dirty (a label of its own).
    let again = StageSeen {
        app_exists: true,
        version_exists: true,
        ..fresh.clone()
    };
    assert_eq!(
        decide_stage(&again, &c, v, IMAGE, false, 7).unwrap()[0],
        CreateEnvironment {
            env: env.clone(),
            label: v.into(),
            stack: stack.clone(),
            platform: None
        }
    );
    assert_eq!(
        decide_stage(&again, &c, v, IMAGE, true, 7).unwrap()[0],
        UploadVersion {
            label: format!("{v}.7"),
            image: IMAGE.into()
        }
    );
    // Refusals, before anything is created.
    let refused = |seen: StageSeen| {
        format!(
            "{}",
            decide_stage(&seen, &c, v, IMAGE, false, 7).unwrap_err()
        )
    };
    assert!(
        refused(StageSeen {
            existing: Some(("Ready".into(), "Green".into(), false)),
            ..fresh.clone()
        })
        .contains("already exists (Ready, Green)")
    );
    assert!(
        refused(StageSeen {
            cname: (false, "taken.x".into()),
            ..fresh.clone()
        })
        .contains("the CNAME taken.x is taken")
    );
    assert!(
        refused(StageSeen {
            auth: Some((false, true)),
            ..fresh.clone()
        })
        .contains("the bucket exists; the object does not")
    );
    assert!(
        refused(StageSeen {
            auth: Some((false, false)),
            ..fresh.clone()
        })
        .contains("there is no S3 bucket creds")
    );
    assert!(
        refused(StageSeen {
            platform: None,
            ..fresh.clone()
        })
        .contains("no Docker solution stack")
    );
}

#[test]
fn destroy_terminates_staging_first_then_live_and_what_was_live_before() {
    let s = one_of_each_role();
    let said = |scope: Scope| -> Vec<String> {
        decide_destroy(&s, scope)
            .iter()
            .map(|a| match a {
                Act::Terminate { why, .. } => why.clone(),
                other => panic!("destroy only terminates: {other:?}"),
            })
            .collect()
    };
    assert_eq!(said(Scope::Staging), ["staging, v5", "staged, v4"]);
    assert_eq!(
        said(Scope::Live),
        ["live, v3", "previous, v1", "rolled-back, v2"]
    );
    assert_eq!(said(Scope::All).len(), 5);
    // An environment already terminating is not asked again.
    let mut s = s;
    s.envs.iter_mut().for_each(|e| e.status = "Terminating".into());
    assert!(decide_destroy(&s, Scope::All).is_empty());
}

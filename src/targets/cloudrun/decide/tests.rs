use std::collections::HashMap;

use super::*;
use crate::targets::cloudrun::record::{LIVE_HISTORY, RECORD, ROLLED_BACK, record_of, recorded};
use crate::targets::history::History;

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
fn the_first_stage_creates_the_service_pinned_to_its_staged_revision() {
    let acts = decide_stage(&Seen::default(), "hello", V1, "r/app@sha256:1", false, true).unwrap();
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
    let acts = decide_promote(&seen, "hello", &staged(&staged_rev), &Rollout::default()).unwrap();
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
            undo: Back::To(vec![note(Event::RolledBack, V2), note(Event::Live, V1)]),
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
    let msg = decide_promote(&first, "hello", &other, &Rollout::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("holds"), "{msg}");
    let mut rebuilt = staged(&s1);
    rebuilt.image = "r/app@sha256:other".into();
    assert!(decide_promote(&first, "hello", &rebuilt, &Rollout::default()).is_err());
    assert!(decide_promote(&Seen::default(), "hello", &staged(&s1), &Rollout::default()).is_err());
    // The first deploy: the staged revision holds all traffic (Cloud Run had nothing
    // else); it is not recorded as live, and an undo has nothing to make live again.
    let acts = decide_promote(&first, "hello", &staged(&s1), &Rollout::default()).unwrap();
    let l1 = format!("hello-{V1}-l1");
    assert!(
        matches!(&acts[2], Act::Route { traffic, record, undo: Back::To(undo) }
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
        decide_promote(&live, "hello", &staged(&s1), &Rollout::default()).unwrap()[..],
        [Act::Check { tag: None, .. }]
    ));
}

#[test]
fn a_re_promoted_version_is_no_longer_rolled_back_from_and_a_foreign_live_one_enters_the_record() {
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
    let acts = decide_promote(&seen_, "hello", &staged(&staged_rev), &Rollout::default()).unwrap();
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
    // A canary: each share pinned between the new revision and live's, judged; the
    // first move's undo puts everything back in one update (the later ones have none);
    // then all of live, its check, and the bake.
    let canary: Rollout =
        serde_yaml::from_str("{strategy: canary, steps: [10, 50], bake_seconds: 30}").unwrap();
    let acts = decide_promote(&seen_, "hello", &staged(&staged_rev), &canary).unwrap();
    let [
        Act::Route { .. },
        Act::Check { .. },
        Act::Route {
            traffic: first,
            undo: Back::To(undo),
            ..
        },
        Act::Judge { percent: 10, .. },
        Act::Route {
            traffic: second,
            undo: Back::Earlier,
            ..
        },
        Act::Judge { percent: 50, .. },
        Act::Route {
            undo: Back::Earlier,
            record,
            ..
        },
        Act::Check { tag: None, .. },
        Act::Bake { .. },
    ] = &acts[..]
    else {
        panic!("{acts:?}")
    };
    let percent_of = |t: &[Route], r: &str| {
        t.iter()
            .filter(|x| x.revision == r)
            .map(|x| x.percent)
            .sum::<i32>()
    };
    assert_eq!((percent_of(first, &l2), percent_of(first, &a)), (10, 90));
    assert_eq!((percent_of(second, &l2), percent_of(second, &a)), (50, 50));
    assert!(first.iter().any(|x| x.tag.as_deref() == Some("staging")));
    assert!(undo.contains(&(Event::RolledBack, V2.to_string(), None)), "{undo:?}");
    assert!(record.iter().any(|n| n.0 == Event::Live && n.1 == V2));
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
    let acts = decide_promote(&seen_, "hello", &staged(&staged_rev), &Rollout::default()).unwrap();
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
    let (_, target, acts) = decide_rollback(seen, "hello", to, false)?;
    let Act::Route {
        record, traffic, ..
    } = &acts[0]
    else {
        panic!("{acts:?}")
    };
    assert_eq!(traffic[0], route(&target.name, 100, None));
    assert!(matches!(&acts[1], Act::Check { tag: None, version, .. } if version == target.key()));
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
    assert!(decide_rollback(&s, "hello", None, false).is_err());
    // A version whose revision is not ready is not gone back to.
    let mut revs = three();
    revs[3].ready = Ready::Failed("gone".into());
    let mut sv = svc(vec![route("hello-c-l1", 100, None)], "");
    sv.annotations.insert(
        RECORD.into(),
        record(&[(Live, "b"), (RolledBack, "b"), (Live, "a"), (Live, "c")]).render(),
    );
    assert!(decide_rollback(&seen(sv, revs), "hello", None, false).is_err());
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
    let e = decide_rollback(&s, "hello", None, false).unwrap_err();
    assert!(
        format!("{e}").contains("rolled back from")
            && crate::error::hint_of(&e).unwrap().contains("--to"),
        "{e}"
    );
    // Named, it goes; a version not kept, or live already, is refused.
    assert_eq!(rollback(&s, Some("c")).unwrap().0, "hello-c-l1");
    assert!(decide_rollback(&s, "hello", Some("a"), false).is_err());
    assert!(decide_rollback(&s, "hello", Some("zz"), false).is_err());
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
fn destroy_of_staging_drops_its_tag_while_live_serves_else_the_service_goes() {
    let live = route("hello-c-l1", 100, None);
    let tagged = route("hello-c-s1", 0, Some(TAG_STAGING));
    let both = seen(svc(vec![live.clone(), tagged], ""), three());
    assert_eq!(
        decide_destroy(&both, Scope::Staging),
        [Act::Route {
            traffic: vec![live.clone()],
            record: Vec::new(),
            undo: Back::To(Vec::new()),
        }]
    );
    for scope in [Scope::Live, Scope::All] {
        assert_eq!(decide_destroy(&both, scope), [Act::DeleteService]);
    }
    // Nothing tagged staging: nothing to drop.
    let untagged = seen(svc(vec![live], ""), three());
    assert_eq!(decide_destroy(&untagged, Scope::Staging), []);
    // Staging holding all the traffic (nothing was ever live): only the service can go.
    let first = seen(
        svc(vec![route("hello-c-s1", 100, Some(TAG_STAGING))], ""),
        three(),
    );
    assert_eq!(decide_destroy(&first, Scope::Staging), [Act::DeleteService]);
    // No service: nothing.
    let none = Seen {
        service: None,
        revisions: Vec::new(),
        history: History::default(),
    };
    assert_eq!(decide_destroy(&none, Scope::All), []);
}

//! The whole pipeline on the docker target, with a real registry: deploy, a second
//! deploy under load, rollback under load, and failures that must leave live alone.

use std::io::{BufRead, BufReader, Read};
use std::process::Command;

use crate::support::{
    KeepAliveLoop, Registry, RequestLoop, TestService, docker, need_engine, repo_root, version_on,
};

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn deploy_promote_and_rollback_without_a_failed_request() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new("live");
    let (live, staging) = svc.for_docker_target(&reg);

    // The first deploy, through the service's own xtask: all eight steps.
    let r = svc.xtask_env(&["deploy"], &reg.env());
    r.assert_ok();
    for step in [
        "test",
        "build",
        "accept-local",
        "push",
        "stage",
        "accept-staging",
        "promote",
        "accept-live",
    ] {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.starts_with(&format!("  {step} ")) && l.contains(" ok ")),
            "{step} not ok in the summary:\n{}",
            r.stderr
        );
    }
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();
    let on_live = version_on(live).expect("live answers");
    assert_eq!(
        (on_live["version"].as_str(), on_live["pym_env"].as_str()),
        (Some(v1.as_str()), Some("live"))
    );
    let on_staging = version_on(staging).expect("staging answers");
    assert_eq!(
        (
            on_staging["version"].as_str(),
            on_staging["pym_env"].as_str()
        ),
        (Some(v1.as_str()), Some("staging"))
    );
    r.assert_hides(&[&reg.password]);
    // The generated service serves every keep-alive connection, however many open at
    // once on a fresh process (tiny_http, which it used before, could leave one waiting
    // behind the others forever: the stall this pipeline's keep-alive test once caught).
    assert_eq!(
        crate::support::concurrent_keep_alive(staging, 24, std::time::Duration::from_secs(10)),
        24,
        "some keep-alive connections to a fresh service went unanswered"
    );

    // A changed service, deployed while requests never stop.
    svc.edit("src/main.rs", "\"not found\"", "\"no such route\"")
        .commit("v2");
    let v2 = svc.pym(&["version"]).stdout.trim().to_string();
    let load = RequestLoop::start(live);
    // Keep-alive clients across the whole deploy: the build beside them, then the switch.
    let kept = KeepAliveLoop::start(live, 8);
    svc.pym_env(&["deploy", "--to", "push"], &reg.env())
        .assert_ok();
    // The dry run of stage and promote lists the very actions they then take (each from
    // one decision over what the engine holds).
    let dry = svc.pym_env(
        &["deploy", "--from", "stage", "--to", "promote", "--dry-run"],
        &reg.env(),
    );
    let mut planned = crate::support::planned_actions(&dry.assert_ok().stdout);
    // accept-staging's line: the tests it runs, not an action on the engine.
    planned.retain(|a| !a.starts_with("run `"));
    let promoted = svc.pym_env(&["deploy", "--from", "stage"], &reg.env());
    promoted.assert_ok();
    let acted = crate::support::taken_actions(&promoted.stderr);
    assert!(
        planned
            .iter()
            .any(|a| a.starts_with("stop the previous pym-"))
            && planned
                .iter()
                .any(|a| a.starts_with(&format!("drain {v1}"))),
        "{}",
        dry.stdout
    );
    assert_eq!(
        acted, planned,
        "the promote did not do what its dry run said:\n{}",
        promoted.stderr
    );
    let (ok, failures, seen) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across promote: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    // Keep-alive clients too: their connections outlive the switch, and no request on them
    // is lost (each request goes to the version live when it arrives).
    let (kept_ok, kept_failures, opened) = kept.finish();
    let proxy_logs = || {
        let out = Command::new("docker")
            .args(["logs", "--tail", "40", &format!("pym-{}-proxy", svc.name)])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(
        kept_failures.is_empty(),
        "{} of {} keep-alive requests failed across promote: {kept_failures:?}\nthe proxy's log:\n{}",
        kept_failures.len(),
        kept_ok + kept_failures.len(),
        proxy_logs()
    );
    assert!(
        kept_ok > 100 && opened == 8,
        "{kept_ok} answers on {opened} connections: the connections were not kept across the switch"
    );
    assert_eq!(
        seen.iter().cloned().collect::<Vec<_>>(),
        {
            let mut v = vec![v1.clone(), v2.clone()];
            v.sort();
            v
        },
        "both versions served in turn"
    );
    assert_eq!(version_on(live).unwrap()["version"], v2.as_str());

    // Rollback, under load too.
    let load = RequestLoop::start(live);
    let kept = KeepAliveLoop::start(live, 8);
    // Its dry run names the version it would go back to, changes nothing, and is what the
    // rollback then does.
    let dry = svc.pym(&["rollback", "--dry-run"]);
    let planned = crate::support::planned_actions(&dry.assert_ok().stdout);
    assert!(
        planned
            .iter()
            .any(|a| a.contains(&format!("live-{v1} again"))),
        "{}",
        dry.stdout
    );
    assert_eq!(
        version_on(live).unwrap()["version"],
        v2.as_str(),
        "a dry rollback switched"
    );
    let rolled = svc.pym(&["rollback"]);
    rolled
        .assert_ok()
        .assert_stderr_has(&format!("{v1} live again (was {v2})"));
    let acted = crate::support::taken_actions(&rolled.stderr);
    assert_eq!(
        acted, planned,
        "the rollback did not do what its dry run said:\n{}",
        rolled.stderr
    );
    let (ok, failures, _) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across rollback: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    let (kept_ok, kept_failures, opened) = kept.finish();
    assert!(
        kept_failures.is_empty(),
        "{} of {} keep-alive requests failed across rollback: {kept_failures:?}\nthe proxy's log:\n{}",
        kept_failures.len(),
        kept_ok + kept_failures.len(),
        proxy_logs()
    );
    assert!(
        kept_ok > 100 && opened == 8,
        "{kept_ok} answers on {opened} connections across rollback"
    );
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str());

    svc.pym(&["accept", "--env", "live"])
        .assert_ok()
        .assert_stderr_has(&format!("2 acceptance tests passed on 127.0.0.1:{live}"));
    let status = svc.pym(&["status"]);
    let table = status.assert_ok().stdout.clone();
    assert!(
        table.lines().any(|l| l.starts_with("live ")
            && l.contains(&v1)
            && l.contains(" up ")
            && l.contains(" healthy ")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("proxy ") && l.contains(" healthy ")),
        "{table}"
    );
    // The proxy runs locked down, on an image of its own (no shell, not the service's base).
    let proxy = format!("pym-{}-proxy", svc.name);
    let locked = docker(&[
        "inspect",
        "--format",
        "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}",
        &proxy,
    ]);
    assert_eq!(locked, "65534:65534 true [ALL]");
    let no_shell = Command::new("docker")
        .args(["exec", &proxy, "sh", "-c", "true"])
        .output()
        .unwrap();
    assert!(
        !no_shell.status.success(),
        "the proxy image has a shell: it is not its own minimal image"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("rolled-back ") && l.contains(&v2)),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("staging ")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("proxy ")), "{table}");
    // The history is an audit log: the rollback is in it, by its own command, after the
    // deploys, each run with its own start.
    let history = svc.pym(&["history"]).assert_ok().stdout.clone();
    let commands: Vec<&str> = history
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(
        commands,
        ["deploy", "deploy", "deploy", "rollback"],
        "the first deploy, the second in its two runs (to push, from stage), the rollback:\n{history}"
    );
    assert!(
        history.lines().last().unwrap().contains(&v1)
            && history.lines().last().unwrap().contains(" ok "),
        "{history}"
    );

    // Bare `pymdeploy` runs the service's own pipeline. HEAD builds v2, which the
    // rollback left: refused before its first step, saying when and why, live untouched;
    // `--redeploy` means it, and v2 is promoted again.
    svc.pym_env(&[], &reg.env())
        .assert_failed()
        .assert_stderr_has("cargo xtask deploy (this service's own pipeline)")
        .assert_stderr_has(&format!(
            "error: `promote` cannot run, so nothing was started: {v2} was rolled back from at "
        ))
        .assert_stderr_has(": `rollback` by ")
        .assert_stderr_has("or deploy this one again on purpose with `--redeploy`");
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str());
    svc.pym_env(&["--redeploy"], &reg.env())
        .assert_ok()
        .assert_stderr_has("cargo xtask deploy (this service's own pipeline)");
    assert_eq!(version_on(live).unwrap()["version"], v2.as_str());
    // And once more: nothing to switch.
    svc.pym_env(&["promote"], &reg.env())
        .assert_ok()
        .assert_stderr_has("is already live");
    // A stray: an old version running beside live, as a promote killed between the switch
    // and the stop leaves it. Promoting the live version again stops it.
    let stray = format!("pym-{}-live-{v1}", svc.name);
    docker(&["start", &stray]);
    svc.pym_env(&["promote"], &reg.env())
        .assert_ok()
        .assert_stderr_has(&format!("stopped the stray {v1}"));
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.Running}}", &stray]),
        "false"
    );
    assert_eq!(version_on(live).unwrap()["version"], v2.as_str());

    // cleanup keeps `keep_previous` stopped versions; with fewer kept it lists, then removes.
    let kept = svc.pym(&["cleanup"]);
    assert_eq!(kept.assert_ok().stdout.trim(), format!("keep {v1}"));
    svc.write("pym-config.live.yaml", "keep_previous: 0\n");
    let listed = svc.pym(&["cleanup"]);
    assert_eq!(
        listed.assert_ok().stdout.trim(),
        format!("would remove {v1}")
    );
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.Running}}", &stray]),
        "false",
        "a dry cleanup removed it"
    );
    let removed = svc.pym(&["cleanup", "--execute"]);
    assert_eq!(removed.assert_ok().stdout.trim(), format!("removed {v1}"));
    // A step like the others: its line and the summary, on stderr.
    assert!(
        removed.stderr.lines().any(|l| l.starts_with("  cleanup ")
            && l.contains(" ok ")
            && l.contains("1 old container of")),
        "{}",
        removed.stderr
    );
    assert!(
        !svc.containers()
            .iter()
            .any(|c| docker(&["inspect", "--format", "{{.Name}}", c]).ends_with(&stray)),
        "{stray} is still there"
    );
    assert_eq!(version_on(live).unwrap()["version"], v2.as_str());
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn failed_acceptance_on_staging_or_live_leaves_the_right_version_live() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new("guard");
    let (live, _) = svc.for_docker_target(&reg);
    // With --json: one event per line on stdout, matching the summary on stderr.
    let r = svc.pym_env(&["deploy", "--json"], &reg.env());
    r.assert_ok();
    let events: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(events.first().unwrap()["event"], "run_started");
    assert_eq!(events.last().unwrap()["event"], "run_finished");
    assert_eq!(events.last().unwrap()["outcome"], "ok");
    let finished: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "step_finished")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        finished,
        [
            "test",
            "build",
            "accept-local",
            "push",
            "stage",
            "accept-staging",
            "promote",
            "accept-live"
        ]
    );
    for step in &finished {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.starts_with(&format!("  {step} ")) && l.contains(" ok ")),
            "{step} is not ok in the summary:\n{}",
            r.stderr
        );
    }
    assert!(
        events
            .iter()
            .all(|e| e["event"] != "step_finished" || e["duration_ms"].is_u64())
    );
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();

    // A wrong registry password: push fails, nothing after it runs, live is untouched.
    let r = svc.pym_env(
        &["deploy", "--from", "push"],
        &[
            ("PYM_REGISTRY_USER", &reg.user),
            ("PYM_REGISTRY_PASSWORD", "wrong-password-999"),
        ],
    );
    r.assert_failed()
        .assert_stderr_has("step `push` failed")
        .assert_stderr_has("refused the credentials");
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("  stage ") && l.contains("skipped")),
        "{}",
        r.stderr
    );
    r.assert_hides(&["wrong-password-999"]);
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str());

    // Staging acceptance fails: nothing is promoted.
    svc.edit("testaccept/tests/accept.rs", "    assert_eq!(v[\"name\"]", "    assert_ne!(server.env, \"staging\", \"staging-only failure\");\n    assert_eq!(v[\"name\"]")
        .commit("fails on staging");
    let r = svc.pym_env(&["deploy"], &reg.env());
    r.assert_failed()
        .assert_stderr_has("staging-only failure")
        .assert_stderr_has("step `accept-staging` failed");
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("  promote ") && l.contains("skipped")),
        "{}",
        r.stderr
    );
    assert_eq!(
        version_on(live).unwrap()["version"],
        v1.as_str(),
        "live changed after a failed staging acceptance"
    );

    // Live acceptance fails: rolled back automatically, and the run still fails.
    svc.edit(
        "testaccept/tests/accept.rs",
        "assert_ne!(server.env, \"staging\", \"staging-only failure\")",
        "assert_ne!(server.env, \"live\", \"live-only failure\")",
    )
    .commit("fails on live");
    let r = svc.pym_env(&["deploy"], &reg.env());
    r.assert_failed()
        .assert_stderr_has("live-only failure")
        .assert_stderr_has(&format!("rolled back: {v1} live again"));
    assert_eq!(
        version_on(live).unwrap()["version"],
        v1.as_str(),
        "live was not rolled back"
    );
    assert_eq!(version_on(live).unwrap()["pym_env"], "live");

    // The same failing tests run by hand only report: no rollback outside a deploy.
    let r = svc.pym(&["accept", "--env", "live"]);
    r.assert_failed().assert_stderr_has("live-only failure");
    assert!(!r.stderr.contains("rolled back"), "{}", r.stderr);
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str());

    // Every deploy is in the history, with its outcome.
    let history = svc.pym(&["history"]).assert_ok().stdout.clone();
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{history}");
    assert!(
        rows[0].contains(&v1) && rows[0].contains(" ok "),
        "{history}"
    );
    assert!(rows[1].contains("push:failed"), "{history}");
    assert!(
        rows[2].contains("accept-staging:failed") && rows[2].contains("promote:skipped"),
        "{history}"
    );
    assert!(rows[3].contains("accept-live:failed"), "{history}");

    // Deploying that commit again would make live the version just rolled back from:
    // refused before the first step, saying when and why; `--redeploy` means it.
    let failed = svc.pym(&["version"]).stdout.trim().to_string();
    let r = svc.pym_env(&["deploy"], &reg.env());
    r.assert_failed()
        .assert_stderr_has(&format!("error: `promote` cannot run, so nothing was started: {failed} was rolled back from at "))
        .assert_stderr_has(": its live acceptance tests failed in a deploy by ")
        .assert_stderr_has("hint: commit a fix (a new commit is a new version), or deploy this one again on purpose with `--redeploy`");
    assert!(
        !r.stderr.contains("==> test"),
        "a step started: {}",
        r.stderr
    );
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str());
    svc.pym_env(&["deploy", "--redeploy", "--dry-run"], &reg.env())
        .assert_ok();
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_dry_run_changes_nothing() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new("dryrun");
    svc.for_docker_target(&reg);
    let engine = || {
        [
            docker(&[
                "ps",
                "-a",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Names}} {{.Status}}",
            ]),
            docker(&[
                "images",
                "-a",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Repository}}:{{.Tag}}",
            ]),
            docker(&[
                "network",
                "ls",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Name}}",
            ]),
        ]
    };
    let before = engine();
    let r = svc.pym_env(&["deploy", "--dry-run"], &reg.env());
    r.assert_ok();
    for action in [
        "build image",
        "push ",
        "stop the previous",
        "route the proxy",
        "roll back",
    ] {
        assert!(
            r.stdout.contains(action),
            "the plan lacks {action:?}:\n{}",
            r.stdout
        );
    }
    // Other tests run beside this one: compare only what concerns this service.
    let mine = |state: [String; 3]| {
        state.map(|s| {
            s.lines()
                .filter(|l| l.contains(&svc.name))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(mine(engine()), mine(before));
    assert!(!svc.path(".pym").exists(), "a dry run wrote files");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn two_deploys_do_not_interleave_and_a_killed_deploy_resumes() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new("resume");
    let (live, _) = svc.for_docker_target(&reg);
    let version = svc.pym(&["version"]).stdout.trim().to_string();

    // Deploy A runs; deploy B, started meanwhile, fails at once naming A.
    let mut a = svc.spawn_pym_env(&["deploy"], &reg.env());
    let mut a_err = BufReader::new(a.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains("==> stage") {
        line.clear();
        assert!(
            a_err.read_line(&mut line).unwrap() > 0,
            "deploy A ended before stage:\n{seen}"
        );
        seen.push_str(&line);
        if seen.contains("==> build") && !seen.contains("B checked") {
            let b = svc.pym_env(&["deploy", "--from", "stage"], &reg.env());
            b.assert_failed()
                .assert_stderr_has(&format!("{}-docker is being deployed by", svc.name))
                .assert_stderr_has("`deploy`")
                .assert_stderr_has("the lock is released when its process exits");
            assert!(
                !b.stderr.contains("==> "),
                "deploy B ran a step:\n{}",
                b.stderr
            );
            seen.push_str("B checked\n");
        }
    }
    assert!(seen.contains("B checked"), "B was never tried:\n{seen}");
    // Deploy A is killed outright during stage.
    assert!(
        Command::new("kill")
            .args(["-KILL", &a.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = a.wait();
    let mut rest = String::new();
    let _ = a_err.read_to_string(&mut rest);

    let r = svc.pym_env(&["deploy", "--resume"], &reg.env());
    r.assert_ok()
        .assert_stderr_has("Resuming")
        .assert_stderr_has("taking over the deploy lock")
        .assert_stderr_has("done in the resumed run");
    for step in ["test", "build", "accept-local", "push"] {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.starts_with(&format!("  {step} ")) && l.contains("skipped")),
            "{step} was redone:\n{}",
            r.stderr
        );
    }
    let v = version_on(live).expect("live answers");
    assert_eq!(
        (v["version"].as_str(), v["pym_env"].as_str()),
        (Some(version.as_str()), Some("live"))
    );
    let mut names: Vec<String> = svc
        .containers()
        .iter()
        .map(|id| docker(&["inspect", "--format", "{{.Name}}", id]))
        .collect();
    names.sort();
    names.retain(|n| !n.starts_with(&format!("/pym-{}-record-", svc.name)));
    assert_eq!(
        names,
        [
            format!("/pym-{}-live-{version}", svc.name),
            format!("/pym-{}-proxy", svc.name),
            format!("/pym-{}-staging", svc.name)
        ],
        "leftover containers"
    );
    let version = svc.pym(&["version"]).stdout.trim().to_string();
    svc.pym(&["deploy", "--resume"])
        .assert_ok()
        .assert_stderr_has(&format!("to resume: the last deploy of {version} finished"));
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn rollback_goes_to_the_version_live_before_not_the_newest_stopped_one() {
    need_engine();
    // V0 → C1 → rollback (V0 live) → C2 → rollback: V0 again, not C1, the version already
    // rolled back from. keep_previous: 1 keeps only V0 then, since it was live last.
    let reg = Registry::start();
    let svc = TestService::new("order");
    let (live, _) = svc.for_docker_target(&reg);
    svc.edit(
        "pym-config.yaml",
        "drain_seconds: 10",
        "drain_seconds: 10\nkeep_previous: 1",
    )
    .commit("keep one");
    let quick = [
        "deploy",
        "--no-test",
        "--skip",
        "accept-local",
        "--skip",
        "accept-live",
    ];
    let deploy = |message: &str| -> String {
        svc.write(
            "src/main.rs",
            &format!("{}// {message}\n", svc.read("src/main.rs")),
        )
        .commit(message);
        svc.pym_env(&quick, &reg.env()).assert_ok();
        let v = svc.pym(&["version"]).stdout.trim().to_string();
        assert_eq!(version_on(live).unwrap()["version"], v.as_str());
        v
    };
    let v0 = deploy("v0");
    let c1 = deploy("c1");
    svc.pym(&["rollback"])
        .assert_ok()
        .assert_stderr_has(&format!("{v0} live again (was {c1})"));
    let c2 = deploy("c2");
    svc.pym(&["rollback"])
        .assert_ok()
        .assert_stderr_has(&format!("{v0} live again (was {c2})"));
    assert_eq!(version_on(live).unwrap()["version"], v0.as_str());
    // status lists the previous versions in the order they were live: c2 first.
    let table = svc.pym(&["status"]).assert_ok().stdout.clone();
    let previous: Vec<String> = table
        .lines()
        .filter(|l| l.starts_with("previous ") || l.starts_with("rolled-back "))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        previous,
        [format!("rolled-back {c2}")],
        "keep_previous: 1 keeps the version live last, and says a rollback left it:\n{table}"
    );
    // With --json, stdout is JSON lines only: the run's events and one object per row.
    let json = svc.pym(&["status", "--json"]).assert_ok().stdout.clone();
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{json}")))
        .collect();
    assert!(
        rows.iter().any(|r| r["event"] == "status_row"
            && r["env"] == "rolled-back"
            && r["version"] == c2.as_str()),
        "{json}"
    );
    // Images go with the versions: c1's image, which no container uses, was removed.
    let images = svc.images();
    assert!(
        !images.iter().any(|i| i.ends_with(&format!(":{c1}"))),
        "{images:?}"
    );
    assert!(
        images.iter().any(|i| i.ends_with(&format!(":{v0}")))
            && images.iter().any(|i| i.ends_with(&format!(":{c2}"))),
        "{images:?}"
    );

    // The proxy keeps its routes across a restart (what the engine's restart policy does
    // to it after an engine restart or a crash): live answers the same version at once,
    // and the order of previous versions is still known.
    docker(&["restart", "-t", "1", &format!("pym-{}-proxy", svc.name)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while version_on(live).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "live does not answer after the proxy restarted"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        version_on(live).unwrap()["version"],
        v0.as_str(),
        "the restarted proxy lost its route"
    );
    let table = svc.pym(&["status"]).assert_ok().stdout.clone();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("rolled-back ") && l.contains(c2.as_str())),
        "the restarted proxy lost its history:\n{table}"
    );

    // A third rollback would return to C2, which a rollback left: refused, live as it
    // was; named with --to, it goes.
    svc.pym(&["rollback"])
        .assert_failed()
        .assert_stderr_has(&format!(
            "every previous version kept was rolled back from: {c2}"
        ))
        .assert_stderr_has("rollback --to VERSION");
    assert_eq!(version_on(live).unwrap()["version"], v0.as_str());
    svc.pym(&["rollback", "--to", &c2])
        .assert_ok()
        .assert_stderr_has(&format!("{c2} live again (was {v0})"));
    assert_eq!(version_on(live).unwrap()["version"], c2.as_str());

    // Maintenance on the service's own proxy (no `hosts`): 503 with Retry-After, the
    // version not restarted; off, it serves again.
    let live_c2 = format!("pym-{}-live-{c2}", svc.name);
    let started = || docker(&["inspect", "-f", "{{.State.StartedAt}}", &live_c2]);
    let since = started();
    svc.pym(&["maintenance", "on"]).assert_ok();
    let raw = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", live)).unwrap();
        s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw
    };
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: "), "{raw}");
    svc.pym(&["maintenance", "off"]).assert_ok();
    assert_eq!(version_on(live).unwrap()["version"], c2.as_str());
    assert_eq!(started(), since, "maintenance restarted the version");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn promote_makes_live_what_staging_runs_and_only_once_it_passed_acceptance() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new("staged");
    let (live, staging) = svc.for_docker_target(&reg);
    // A run that would promote what it stages without testing it: refused before any step.
    let r = svc.pym_env(
        &["deploy", "--no-test", "--skip", "accept-staging"],
        &reg.env(),
    );
    r.assert_failed()
        .assert_stderr_has("without its staging acceptance tests")
        .assert_stderr_has("nothing was started");
    assert!(!r.stderr.contains("==> build"), "a step ran:\n{}", r.stderr);
    svc.pym_env(
        &["deploy", "--no-test", "--skip", "accept-local"],
        &reg.env(),
    )
    .assert_ok();
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();

    // V2 staged, its acceptance never run: promote refuses, live stays V1.
    svc.write(
        "src/main.rs",
        &format!("{}// v2\n", svc.read("src/main.rs")),
    )
    .commit("v2");
    let v2 = svc.pym(&["version"]).stdout.trim().to_string();
    svc.pym_env(
        &[
            "deploy",
            "--no-test",
            "--skip",
            "accept-local",
            "--to",
            "stage",
        ],
        &reg.env(),
    )
    .assert_ok();
    assert_eq!(version_on(staging).unwrap()["version"], v2.as_str());
    svc.pym(&["promote"])
        .assert_failed()
        .assert_stderr_has(&format!(
            "{v2} runs on staging but has not passed staging acceptance"
        ))
        .assert_stderr_has("cargo xtask accept-staging");
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str());

    // Staging acceptance fails: still refused.
    svc.edit(
        "pym-config.yaml",
        "accept_command: cargo test --manifest-path testaccept/Cargo.toml",
        "accept_command: \"false\"",
    )
    .commit("failing acceptance");
    svc.pym(&["accept-staging"])
        .assert_failed()
        .assert_stderr_has("step `accept-staging` failed: the acceptance tests failed");
    svc.pym(&["promote"])
        .assert_failed()
        .assert_stderr_has(&format!(
            "{v2} runs on staging but has not passed staging acceptance"
        ));
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str());

    // It passes; HEAD then moves ahead (V3, never staged): promote makes V2 live, what
    // staging ran and tested, not HEAD.
    svc.edit(
        "pym-config.yaml",
        "accept_command: \"false\"",
        "accept_command: cargo test --manifest-path testaccept/Cargo.toml",
    )
    .commit("v3");
    let v3 = svc.pym(&["version"]).stdout.trim().to_string();
    svc.pym(&["accept-staging"]).assert_ok();
    svc.pym(&["promote", "--dry-run"])
        .assert_ok()
        .assert_stdout_has(&format!(
            "pym-{}-live-{v2} beside the live version",
            svc.name
        ));
    svc.pym(&["promote"])
        .assert_ok()
        .assert_stderr_has(&format!("{v2}, what staging runs (HEAD is {v3})"))
        .assert_stderr_has(&format!("{v2} live on"));
    assert_eq!(version_on(live).unwrap()["version"], v2.as_str());
}

/// How long this engine takes to make a container of the service's image and remove it
/// again, measured now: what answering Ctrl-C during promote or stage may have to wait
/// for beyond pymdeploy's own 2 s (an action that makes a container runs whole, and its
/// undo removes it). On the vfs storage driver (where .ci/setup cannot mount an
/// overlay) each takes seconds; on overlay2, a fraction of one.
fn engine_put_back_time(svc: &TestService) -> std::time::Duration {
    let image = svc
        .images()
        .into_iter()
        .next()
        .expect("the service has an image");
    let name = format!("pym-{}-timing", svc.name);
    let started = std::time::Instant::now();
    docker(&["create", "--name", &name, &image]);
    docker(&["rm", "-f", &name]);
    started.elapsed()
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn ctrl_c_while_promote_or_stage_waits_leaves_live_as_it_was_and_answers_at_once() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new("promoteint");
    let (live, _) = svc.for_docker_target(&reg);
    svc.pym_env(&["deploy", "--no-test"], &reg.env())
        .assert_ok();
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();
    // The next version never becomes healthy on live (its overlay asks a path it answers
    // 503, not ready), so promote waits: that is where Ctrl-C comes.
    svc.edit(
        "src/main.rs",
        "_ => (404, serde_json::json!({ \"error\": \"not found\" }))",
        "_ => (503, serde_json::json!({ \"error\": \"not ready\" }))",
    );
    svc.write("pym-config.live.yaml", "health_path: /never\n")
        .commit("v2, unhealthy on live");
    let v2 = svc.pym(&["version"]).stdout.trim().to_string();
    let mut run = svc.spawn(&["deploy", "--no-test"], &reg.env());
    run.wait_for("beside the live version");
    // Ctrl-C once V2's live container runs, waiting to be healthy.
    let running = |env: &str, version: &str| {
        let filters = [
            format!("label=org.pymacaron.service-id={}", svc.service_id()),
            format!("label=org.pymacaron.env={env}"),
            format!("label=org.pymacaron.version={version}"),
        ];
        let mut args = vec!["ps", "-q"];
        for f in &filters {
            args.extend(["--filter", f.as_str()]);
        }
        !docker(&args).is_empty()
    };
    crate::support::wait_until(
        "V2's live container runs",
        std::time::Duration::from_secs(30),
        || running("live", &v2),
    );
    let seen = run.seen.clone();
    let (code, rest, took) = run.interrupt();
    let engine = engine_put_back_time(&svc);
    assert!(
        took < std::time::Duration::from_secs(2) + engine,
        "Ctrl-C took {took:?}, more than 2 s beyond the {engine:?} the engine takes to make and remove one container (health_timeout is 60 s)\n{seen}{rest}"
    );
    assert_eq!(code, Some(130), "{seen}{rest}");
    assert!(
        rest.contains(&format!("promoting {v2} failed; live is unchanged")),
        "{rest}"
    );
    assert_eq!(
        version_on(live).unwrap()["version"],
        v1.as_str(),
        "live changed"
    );
    let names: Vec<String> = svc
        .containers()
        .iter()
        .map(|id| docker(&["inspect", "--format", "{{.Name}}", id]))
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(&format!("live-{v2}"))),
        "the new version's container was left: {names:?}\n{rest}"
    );
    // History says what happened: this deploy failed at promote.
    let history = svc.pym(&["history"]).assert_ok().stdout.clone();
    let last = history.lines().last().unwrap();
    assert!(
        last.contains(&v2) && last.contains(" failed ") && last.contains("promote:failed"),
        "{history}"
    );

    // Ctrl-C while stage waits for a version that never gets healthy on staging: it
    // answers at once and leaves no staging container of that version; live is untouched.
    svc.write("pym-config.staging.yaml", "health_path: /never\n")
        .commit("v3, unhealthy on staging");
    let mut run = svc.spawn(
        &[
            "deploy",
            "--no-test",
            "--skip",
            "accept-local",
            "--to",
            "stage",
        ],
        &reg.env(),
    );
    run.wait_for("to answer");
    let v3 = svc.pym(&["version"]).stdout.trim().to_string();
    crate::support::wait_until(
        "V3's staging container runs",
        std::time::Duration::from_secs(30),
        || running("staging", &v3),
    );
    let (code, rest, took) = run.interrupt();
    let engine = engine_put_back_time(&svc);
    assert!(
        took < std::time::Duration::from_secs(2) + engine,
        "Ctrl-C took {took:?} (health_timeout is 60 s)"
    );
    assert_eq!(code, Some(130), "{rest}");
    assert!(
        svc.containers()
            .iter()
            .all(|id| docker(&["inspect", "--format", "{{.Name}}", id])
                != format!("/pym-{}-staging", svc.name)),
        "the interrupted stage left its container"
    );
    assert_eq!(
        version_on(live).unwrap()["version"],
        v1.as_str(),
        "live changed"
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn the_engine_lock_excludes_other_machines_and_is_broken_only_when_its_holder_is_gone() {
    need_engine();
    // Two "machines": two state directories, so their file locks are separate and only
    // the lock on the engine stands between them.
    let svc = TestService::new("enginelock");
    svc.on_free_ports();
    svc.edit(
        "pym-config.yaml",
        "accept_command: cargo test --manifest-path testaccept/Cargo.toml",
        "accept_command: sleep 600",
    )
    .commit("slow acceptance");
    let machine = |m: &str| {
        repo_root()
            .join(format!("target/it-state/{}-{m}", svc.name))
            .display()
            .to_string()
    };
    let (a_dir, b_dir) = (machine("a"), machine("b"));
    let lock = format!("pym-{}-lock", svc.name);

    let mut a = svc.spawn(
        &[
            "deploy",
            "--from",
            "accept-staging",
            "--to",
            "accept-staging",
        ],
        &[("PYM_STATE_DIR", a_dir.as_str())],
    );
    a.wait_for("==> accept-staging");
    let b = svc.pym_env(
        &["cleanup", "--execute"],
        &[("PYM_STATE_DIR", b_dir.as_str())],
    );
    b.assert_failed()
        .assert_stderr_has("is being deployed to the engine at")
        .assert_stderr_has("`deploy`")
        .assert_stderr_has("--break-lock");
    let (code, _, _) = a.interrupt();
    assert_eq!(code, Some(130), "deploy A did not end on Ctrl-C");
    assert!(
        docker(&["ps", "-a", "-q", "--filter", &format!("name=^{lock}$")]).is_empty(),
        "an interrupted run left its engine lock"
    );

    // A lock whose holder is a process of this host that no longer exists: taken over.
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let hold = |host: &str, pid: u32| {
        let label = format!(
            "org.pymacaron.lock={{\"user\":\"ann@example.com\",\"host\":\"{host}\",\"pid\":{pid},\"since\":0,\"command\":\"deploy\"}}"
        );
        docker(&[
            "create",
            "--name",
            &lock,
            "--label",
            &label,
            "pym-lock:1",
            "held",
        ]);
    };
    hold(&host, dead);
    svc.pym_env(
        &["cleanup", "--execute"],
        &[("PYM_STATE_DIR", b_dir.as_str())],
    )
    .assert_ok()
    .assert_stderr_has("taking over the engine lock");
    // A holder on another machine is never presumed gone: refused, then broken on request.
    hold("ci-runner-7", 4242);
    svc.pym_env(
        &["cleanup", "--execute"],
        &[("PYM_STATE_DIR", b_dir.as_str())],
    )
    .assert_failed()
    .assert_stderr_has("ann@example.com@ci-runner-7");
    assert!(
        !docker(&["ps", "-a", "-q", "--filter", &format!("name=^{lock}$")]).is_empty(),
        "a refused run removed the lock"
    );
    svc.pym_env(
        &["cleanup", "--execute", "--break-lock"],
        &[("PYM_STATE_DIR", b_dir.as_str())],
    )
    .assert_ok()
    .assert_stderr_has("breaking the engine lock");
    assert!(
        docker(&["ps", "-a", "-q", "--filter", &format!("name=^{lock}$")]).is_empty(),
        "the lock outlived its run"
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_same_named_service_of_another_repository_is_refused_and_left_alone() {
    need_engine();
    let reg = Registry::start();
    let ours = TestService::new("sameid");
    let (live, _) = ours.for_docker_target(&reg);
    ours.pym_env(
        &["deploy", "--no-test", "--skip", "accept-local"],
        &reg.env(),
    )
    .assert_ok();
    let v = ours.pym(&["version"]).stdout.trim().to_string();
    let before = ours.containers();
    // Another repository (its own `new`, so its own service_id) under the same name.
    let theirs = TestService::new("sameid2");
    let (their_live, _) = theirs.for_docker_target(&reg);
    theirs
        .edit(
            "pym-config.yaml",
            &format!("name: {}", theirs.name),
            &format!("name: {}", ours.name),
        )
        .commit("the same name as another service");
    for args in [
        &["deploy", "--no-test"][..],
        &["rollback"],
        &["status"],
        &["cleanup", "--execute"],
    ] {
        let r = theirs.pym_env(args, &reg.env());
        r.assert_failed()
            .assert_stderr_has(&format!(
                "runs a service named {} of another repository",
                ours.name
            ))
            .assert_stderr_has("own `name:`");
        assert!(
            !r.stderr.contains("==> build"),
            "{args:?} ran a step:\n{}",
            r.stderr
        );
    }
    assert_eq!(version_on(live).unwrap()["version"], v.as_str());
    assert!(
        version_on(their_live).is_none(),
        "the other service published something"
    );
    let mut after = ours.containers();
    let mut before = before;
    after.sort();
    before.sort();
    assert_eq!(
        after, before,
        "the other service touched this one's containers"
    );

    // What the other repository may make beside it (its image, its local run), and its
    // cleanup as every test's: this service stays running and untouched, its image,
    // network and record included. The suite's cleanup goes by identity, never by name.
    theirs.pym(&["build"]).assert_ok();
    theirs.pym(&["accept-local"]).assert_ok();
    assert!(
        !theirs.images().is_empty(),
        "the other service built nothing"
    );
    let images = ours.images();
    let network = format!("pym-{}", ours.name);
    let network_id = docker(&["network", "inspect", "--format", "{{.Id}}", &network]);
    drop(theirs);
    let mut after = ours.containers();
    after.sort();
    assert_eq!(
        after, before,
        "the other's cleanup touched this one's containers"
    );
    assert_eq!(
        ours.images(),
        images,
        "the other's cleanup removed this one's images"
    );
    assert_eq!(
        docker(&["network", "inspect", "--format", "{{.Id}}", &network]),
        network_id,
        "the other's cleanup removed this one's network"
    );
    assert_eq!(version_on(live).unwrap()["version"], v.as_str());
    ours.pym(&["status"]).assert_ok().assert_stdout_has(&v);
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_failure_after_any_action_of_promote_leaves_live_as_it_was_or_as_verified() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new("failpoint");
    let (live, _) = svc.for_docker_target(&reg);
    let quick = ["deploy", "--no-test", "--skip", "accept-local"];
    svc.pym_env(&quick, &reg.env()).assert_ok();
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();
    svc.write(
        "src/main.rs",
        &format!("{}// v2\n", svc.read("src/main.rs")),
    )
    .commit("v2");
    let v2 = svc.pym(&["version"]).stdout.trim().to_string();
    svc.pym_env(
        &[&quick[..], &["--to", "accept-staging"]].concat(),
        &reg.env(),
    )
    .assert_ok();
    let planned =
        crate::support::planned_actions(&svc.pym(&["promote", "--dry-run"]).assert_ok().stdout);
    let switch = planned
        .iter()
        .position(|a| a.starts_with("route the proxy to"))
        .expect("a switch");
    let verify = planned
        .iter()
        .position(|a| a.starts_with("check "))
        .expect("a check");
    assert_eq!(verify, switch + 1, "{planned:?}");
    let mut before = svc.containers();
    before.sort();
    // A failure where each action up to the check would start (the check itself
    // included): live serves V1, and what promote made is gone.
    for after in 1..=verify {
        let r = svc.pym_env(
            &["promote"],
            &[("PYMDEPLOY_FAIL_AFTER_ACTION", &after.to_string())],
        );
        r.assert_failed()
            .assert_stderr_has(&format!("failure injected after action {after}"))
            .assert_stderr_has("live is unchanged");
        if after > switch {
            r.assert_stderr_has(&format!(
                "put back: route the proxy back to pym-{}-live-{v1}",
                svc.name
            ));
        }
        assert_eq!(
            version_on(live).unwrap()["version"],
            v1.as_str(),
            "after action {after}:\n{}",
            r.stderr
        );
        let mut now = svc.containers();
        now.sort();
        assert_eq!(
            now, before,
            "promote failing after action {after} left something:\n{}",
            r.stderr
        );
    }
    // After the check, the switch is verified and kept: a failure then (recording it)
    // fails the run, live serves V2.
    let r = svc.pym_env(
        &["promote"],
        &[("PYMDEPLOY_FAIL_AFTER_ACTION", &(verify + 1).to_string())],
    );
    r.assert_failed()
        .assert_stderr_has(&format!("failure injected after action {}", verify + 1))
        .assert_stderr_has(&format!(
            "{v2} is live and verified, but promoting it did not finish"
        ));
    assert_eq!(version_on(live).unwrap()["version"], v2.as_str());
}

/// Holds a loopback port with a container that is not the service's, removed on drop.
struct PortHolder(String);

impl Drop for PortHolder {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn every_mistake_knowable_before_the_first_step_is_said_in_one_report() {
    need_engine();
    let svc = TestService::new("together");
    let (live, staging) = svc.on_free_ports();
    let config = svc.read("pym-config.yaml");

    // Values out of range, in two files: both said, each at its line, nothing run.
    svc.write(
        "pym-config.yaml",
        &config.replace("health_timeout: 60", "health_timeout: 0"),
    )
    .write("pym-config.staging.yaml", "staging_port: 0\n")
    .commit("zeros");
    let r = svc.pym(&["deploy"]);
    r.assert_failed()
        .assert_stderr_has("error: 2 problems, so nothing was started:\n  1. ")
        .assert_stderr_has("pym-config.yaml:")
        .assert_stderr_has(": key `health_timeout`: invalid value: integer `0`, expected a number above 0\n     hint: `health_timeout` is seconds to wait")
        .assert_stderr_has("pym-config.staging.yaml:1:15: key `staging_port`: invalid value: integer `0`, expected a number from 1 to 65535");
    svc.pym(&["deploy", "--dry-run"])
        .assert_failed()
        .assert_stderr_has("error: 2 problems, so nothing was started");

    // A base image the engine cannot get, an acceptance command that is not there and a
    // live port something else listens on: three steps' problems, one report.
    let held = std::net::TcpListener::bind(("127.0.0.1", live)).unwrap();
    std::fs::remove_file(svc.path("pym-config.staging.yaml")).unwrap();
    let nowhere: String = config
        .lines()
        .map(|l| match l.starts_with("accept_command:") {
            true => format!(
                "accept_command: pytest-nowhere-{} -q testaccept\n",
                std::process::id()
            ),
            false => format!("{l}\n"),
        })
        .collect();
    assert_ne!(nowhere, config, "the generated config sets accept_command");
    svc.write("pym-config.yaml", &nowhere)
        .write(
            "Dockerfile",
            &format!(
                "FROM registry.invalid/team/tools:1 AS tools\n{}",
                svc.read("Dockerfile")
            ),
        )
        .commit("three mistakes");
    let r = svc.pym(&["deploy"]);
    r.assert_failed()
        .assert_stderr_has("error: 3 problems, so nothing was started:\n  1. `build` cannot run: the engine at ")
        .assert_stderr_has("has not got these base images and cannot pull them:\n    Dockerfile:1: `registry.invalid/team/tools:1`: ")
        .assert_stderr_has(&format!("\n  2. `accept-local` cannot run: {}", svc.path("pym-config.yaml").display()))
        .assert_stderr_has(&format!(": `accept_command` `pytest-nowhere-{0} -q testaccept` cannot run: `pytest-nowhere-{0}` is not a program on this machine's PATH", std::process::id()))
        .assert_stderr_has(&format!("\n  3. `promote` cannot run: {}", svc.path("pym-config.yaml").display()))
        .assert_stderr_has(&format!(": port {live} (live) is taken: something that is not a container of the engine listens on 127.0.0.1:{live}"));
    assert!(
        !r.stderr.contains("==> test"),
        "a step started: {}",
        r.stderr
    );
    assert!(svc.containers().is_empty() && svc.images().is_empty());
    drop(held);

    // The staging port taken by a container of another: named.
    let holder = PortHolder(format!("pym-it-portholder-{}", std::process::id()));
    docker(&[
        "run",
        "-d",
        "--name",
        &holder.0,
        "-p",
        &format!("127.0.0.1:{staging}:80"),
        "debian:bookworm-slim",
        "sleep",
        "300",
    ]);
    svc.write("pym-config.yaml", &config)
        .write(
            "Dockerfile",
            &svc.read("Dockerfile").replacen(
                "FROM registry.invalid/team/tools:1 AS tools\n",
                "",
                1,
            ),
        )
        .commit("fixed");
    svc.pym(&["deploy", "--to", "stage"])
        .assert_failed()
        .assert_stderr_has(&format!("error: `stage` cannot run, so nothing was started: {}", svc.path("pym-config.yaml").display()))
        .assert_stderr_has(&format!(": port {staging} (staging) is taken on the engine by container {}, which is not this service's", holder.0));
    assert!(svc.containers().is_empty());
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn destroy_takes_staging_then_live_off_the_engine_keeping_the_record() {
    need_engine();
    let reg = Registry::start();
    let svc = TestService::new("destroy");
    let (live, staging) = svc.for_docker_target(&reg);
    svc.pym_env(&["deploy", "--no-test"], &reg.env())
        .assert_ok();
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();
    let name = &svc.name;
    let serves = |port: u16| version_on(port).and_then(|v| v["version"].as_str().map(String::from));
    assert_eq!(serves(live).as_deref(), Some(v1.as_str()));

    // No terminal to ask on and no --yes: refused before anything, nothing removed.
    let refused = svc.pym_env(&["destroy", "--env", "all"], &reg.env());
    refused
        .assert_failed()
        .assert_stderr_has("there is no terminal to confirm it on")
        .assert_stderr_has("add --yes");
    assert!(
        !refused.stderr.contains("==> destroy"),
        "{}",
        refused.stderr
    );
    assert_eq!(serves(staging).as_deref(), Some(v1.as_str()));

    // A run holding the deploy lock keeps destroy out.
    svc.write("src/lock.txt", "v2").commit("v2");
    let mut stage = svc.spawn(&["deploy", "--no-test", "--to", "stage"], &reg.env());
    stage.wait_for("==> stage");
    svc.pym_env(&["destroy", "--env", "staging", "--yes"], &reg.env())
        .assert_failed()
        .assert_stderr_has(&format!("{name}-docker is being deployed by"));
    let stage_seen = stage.seen.clone();
    let (code, rest) = stage.finish();
    assert_eq!(code, Some(0), "{}{rest}", stage_seen);
    let v2 = svc.pym(&["version"]).stdout.trim().to_string();
    assert_eq!(serves(staging).as_deref(), Some(v2.as_str()));

    // On a terminal it says what goes and asks for the service's name: anything else
    // removes nothing; the name goes on. Staging goes, live stays.
    let destroy_staging = ["destroy", "--env", "staging"];
    let asked = svc.pym_on_terminal(&destroy_staging, "yes", &reg.env());
    asked.assert_failed();
    for said in [
        format!("remove pym-{name}-staging (staging, {v2})"),
        format!("Type the service's name ({name}) to go on"),
        "not confirmed: nothing was removed".to_string(),
    ] {
        assert!(
            asked.stdout.contains(&said),
            "{said:?} not in\n{}",
            asked.stdout
        );
    }
    assert_eq!(serves(staging).as_deref(), Some(v2.as_str()));
    svc.pym_on_terminal(&destroy_staging, name, &reg.env())
        .assert_ok();
    assert_eq!(serves(staging), None, "staging still answers");
    assert_eq!(serves(live).as_deref(), Some(v1.as_str()));

    // Live goes: the proxy first, the version, the network, then the images; the record
    // stays. The dry run lists what the run then does, line for line.
    let plan = svc.pym_env(&["destroy", "--env", "live", "--dry-run"], &reg.env());
    let planned = crate::support::planned_actions(&plan.assert_ok().stdout);
    assert_eq!(
        planned,
        [
            format!("remove pym-{name}-proxy (the live proxy)"),
            format!("remove pym-{name}-live-{v1} (live, {v1})"),
            format!("remove network pym-{name}"),
            format!(
                "remove the images of {}/team/{name} no container uses",
                reg.host
            ),
        ]
    );
    let gone = svc.pym_env(&["destroy", "--env", "live", "--yes"], &reg.env());
    gone.assert_ok();
    assert_eq!(crate::support::taken_actions(&gone.stderr), planned);
    assert!(
        crate::support::http_get(live, "/ping").is_none(),
        "live still answers"
    );
    let left: Vec<String> = svc
        .containers()
        .iter()
        .map(|id| {
            docker(&[
                "inspect",
                "--format",
                "{{index .Config.Labels \"org.pymacaron.env\"}}",
                id,
            ])
        })
        .collect();
    assert_eq!(left, ["record"], "only the deploy record is left");
    assert!(svc.images().is_empty(), "{:?}", svc.images());
    assert!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^pym-{name}$")
        ])
        .is_empty(),
        "the network is left"
    );
    let history = svc.pym(&["history"]).assert_ok().stdout.clone();
    assert_eq!(
        history
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("destroy"))
            .count(),
        2,
        "{history}"
    );
    // Nothing left to take: said, and fine.
    svc.pym_env(&["destroy", "--env", "all", "--yes"], &reg.env())
        .assert_ok()
        .assert_stderr_has(&format!(
            "to remove: {name} has no staging and live on docker"
        ));
    // The record kept what was live: a new deploy is a first deploy again, and works.
    svc.pym_env(&["deploy", "--no-test"], &reg.env())
        .assert_ok();
    assert_eq!(serves(live).as_deref(), Some(v2.as_str()));
}

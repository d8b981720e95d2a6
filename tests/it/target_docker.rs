//! The whole pipeline on the docker target, with a real registry: deploy, a second
//! deploy under load, rollback under load, and failures that must leave live alone.

use crate::support::{Registry, RequestLoop, TestService, docker_available, version_on};

#[test]
fn deploy_promote_and_rollback_without_a_failed_request() {
    if !docker_available() {
        return;
    }
    let reg = Registry::start();
    let svc = TestService::new("live");
    let (live, staging) = svc.for_docker_target(&reg);

    // The first deploy, through the service's own xtask: all eight steps.
    let r = svc.xtask_env(&["deploy"], &reg.env());
    r.assert_ok();
    for step in ["test", "build", "accept-local", "push", "stage", "accept-staging", "promote", "accept-live"] {
        assert!(r.stderr.lines().any(|l| l.starts_with(&format!("  {step} ")) && l.contains(" ok ")), "{step} not ok in the summary:\n{}", r.stderr);
    }
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();
    let on_live = version_on(live).expect("live answers");
    assert_eq!((on_live["version"].as_str(), on_live["pym_env"].as_str()), (Some(v1.as_str()), Some("live")));
    let on_staging = version_on(staging).expect("staging answers");
    assert_eq!((on_staging["version"].as_str(), on_staging["pym_env"].as_str()), (Some(v1.as_str()), Some("staging")));
    assert!(!r.stderr.contains(&reg.password), "the registry password was printed");

    // A changed service, deployed while requests never stop.
    svc.edit("src/main.rs", "\"not found\"", "\"no such route\"").commit("v2");
    let v2 = svc.pym(&["version"]).stdout.trim().to_string();
    let load = RequestLoop::start(live);
    svc.pym_env(&["deploy"], &reg.env()).assert_ok();
    let (ok, failures, seen) = load.finish();
    assert!(failures.is_empty(), "{} of {} requests failed across promote: {failures:?}", failures.len(), ok + failures.len());
    assert_eq!(seen.iter().cloned().collect::<Vec<_>>(), { let mut v = vec![v1.clone(), v2.clone()]; v.sort(); v }, "both versions served in turn");
    assert_eq!(version_on(live).unwrap()["version"], v2.as_str());

    // Rollback, under load too.
    let load = RequestLoop::start(live);
    svc.pym(&["rollback"]).assert_ok().assert_stderr_has(&format!("{v1} live again (was {v2})"));
    let (ok, failures, _) = load.finish();
    assert!(failures.is_empty(), "{} of {} requests failed across rollback: {failures:?}", failures.len(), ok + failures.len());
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str());

    let status = svc.pym(&["status"]);
    let table = status.assert_ok().stdout.clone();
    assert!(table.lines().any(|l| l.starts_with("live ") && l.contains(&v1) && l.contains("up")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("previous ") && l.contains(&v2)), "{table}");
    assert!(table.lines().any(|l| l.starts_with("staging ")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("proxy ")), "{table}");

    // Bare `pymdeploy` runs the service's own pipeline; the live version is the commit's
    // (v2, rolled back from) so it is promoted again.
    svc.pym_env(&[], &reg.env()).assert_ok().assert_stderr_has("cargo xtask deploy (this service's own pipeline)");
    assert_eq!(version_on(live).unwrap()["version"], v2.as_str());
    // And once more: nothing to switch.
    svc.pym_env(&["promote"], &reg.env()).assert_ok().assert_stderr_has("is already live");
}

#[test]
fn failed_acceptance_on_staging_or_live_leaves_the_right_version_live() {
    if !docker_available() {
        return;
    }
    let reg = Registry::start();
    let svc = TestService::new("guard");
    let (live, _) = svc.for_docker_target(&reg);
    svc.pym_env(&["deploy"], &reg.env()).assert_ok();
    let v1 = svc.pym(&["version"]).stdout.trim().to_string();

    // Staging acceptance fails: nothing is promoted.
    svc.edit("testaccept/tests/accept.rs", "    assert_eq!(v[\"name\"]", "    assert_ne!(server.env, \"staging\", \"staging-only failure\");\n    assert_eq!(v[\"name\"]")
        .commit("fails on staging");
    let r = svc.pym_env(&["deploy"], &reg.env());
    r.assert_failed().assert_stderr_has("staging-only failure").assert_stderr_has("step `accept-staging` failed");
    assert!(r.stderr.lines().any(|l| l.starts_with("  promote ") && l.contains("skipped")), "{}", r.stderr);
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str(), "live changed after a failed staging acceptance");

    // Live acceptance fails: rolled back automatically, and the run still fails.
    svc.edit("testaccept/tests/accept.rs", "assert_ne!(server.env, \"staging\", \"staging-only failure\")", "assert_ne!(server.env, \"live\", \"live-only failure\")")
        .commit("fails on live");
    let r = svc.pym_env(&["deploy"], &reg.env());
    r.assert_failed().assert_stderr_has("live-only failure").assert_stderr_has(&format!("rolled back: {v1} live again"));
    assert_eq!(version_on(live).unwrap()["version"], v1.as_str(), "live was not rolled back");
    assert_eq!(version_on(live).unwrap()["pym_env"], "live");
}

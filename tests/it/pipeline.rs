//! test → build → accept-local on generated services, against the real Docker engine.

use std::io::{BufRead, BufReader, Read};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{TestService, docker_available};

#[test]
fn a_new_service_passes_test_build_accept_local_through_its_own_xtask() {
    if !docker_available() {
        return;
    }
    let svc = TestService::new("happy");
    svc.xtask(&["test"]).assert_ok().assert_stderr_has("3 tests passed");
    svc.xtask(&["build"]).assert_ok();
    let r = svc.xtask(&["accept-local"]);
    r.assert_ok()
        // The acceptance test that asserts `/version` answers with PYM_ENV=local and a
        // real version ran against the container and passed.
        .assert_stderr_has("test version_names_the_environment_it_runs_in ... ok")
        .assert_stderr_has("test ping_answers_an_empty_object ... ok")
        .assert_stderr_has("2 acceptance tests passed");
    let version = svc.xtask(&["version"]).assert_ok().stdout.trim().to_string();
    assert_eq!(svc.images(), [format!("{}:{version}", svc.name)]);
    assert!(svc.containers().is_empty(), "accept-local left containers: {:?}", svc.containers());

    // The same commit again: the image is reused, not rebuilt.
    svc.pym(&["build"]).assert_ok().assert_stderr_has("reused");
    // Unless asked.
    svc.pym(&["build", "--force-build"]).assert_ok().assert_stderr_has("built");
}

#[test]
fn a_failing_unit_test_stops_before_any_image_is_built() {
    if !docker_available() {
        return;
    }
    let svc = TestService::new("unitfail");
    svc.edit("src/main.rs", "    #[test]\n    fn ping_answers_an_empty_object() {", "    #[test]\n    fn broken() {\n        assert_eq!(1 + 1, 3, \"deliberately broken\");\n    }\n\n    #[test]\n    fn ping_answers_an_empty_object() {")
        .commit("break a unit test");
    let r = svc.pym(&["deploy"]);
    r.assert_failed().assert_stderr_has("deliberately broken").assert_stderr_has("step `test` failed");
    assert!(r.stderr.lines().any(|l| l.trim_start().starts_with("build") && l.contains("skipped")), "{}", r.stderr);
    assert!(svc.images().is_empty(), "an image was built: {:?}", svc.images());
}

#[test]
fn a_failing_acceptance_test_shows_logs_and_leaves_no_container() {
    if !docker_available() {
        return;
    }
    let svc = TestService::new("acceptfail");
    svc.edit("testaccept/tests/accept.rs", "assert_eq!(r.json(), serde_json::json!({}));", "assert_eq!(r.json(), serde_json::json!({\"pong\": true}), \"deliberately wrong\");")
        .commit("break an acceptance test");
    let r = svc.pym(&["deploy"]);
    r.assert_failed()
        .assert_stderr_has("deliberately wrong")
        .assert_stderr_has("step `accept-local` failed")
        .assert_stderr_has("log lines of container")
        // the service's own start-up line, from the container's logs
        .assert_stderr_has("listening on port 8080 (PYM_ENV=local)");
    assert!(svc.containers().is_empty(), "left behind: {:?}", svc.containers());
}

#[test]
fn a_service_that_never_becomes_healthy_times_out_with_its_logs() {
    if !docker_available() {
        return;
    }
    let svc = TestService::new("unhealthy");
    svc.edit("pym-config.yaml", "health_path: /ping\nhealth_timeout: 60", "health_path: /never\nhealth_timeout: 3").commit("a health path nobody answers");
    svc.pym(&["build"]).assert_ok();
    let started = Instant::now();
    let r = svc.pym(&["accept-local"]);
    r.assert_failed()
        .assert_stderr_has("did not become healthy within 3s")
        .assert_stderr_has("/never answered 404")
        .assert_stderr_has("hint: check that the service listens on $PORT")
        .assert_stderr_has("listening on port 8080");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(svc.containers().is_empty(), "left behind: {:?}", svc.containers());
}

#[test]
fn a_service_that_crashes_at_start_is_reported_without_waiting() {
    if !docker_available() {
        return;
    }
    let svc = TestService::new("crash");
    let entry = format!("ENTRYPOINT [\"/usr/local/bin/{}\"]", svc.name);
    svc.edit("Dockerfile", &entry, "ENTRYPOINT [\"/bin/sh\", \"-c\", \"echo boom: cannot open the database >&2; exit 3\"]")
        .edit("pym-config.yaml", "health_timeout: 60", "health_timeout: 300")
        .commit("crash at start");
    svc.pym(&["build"]).assert_ok();
    let started = Instant::now();
    let r = svc.pym(&["accept-local"]);
    r.assert_failed().assert_stderr_has("crashed during start-up: it exited with status 3").assert_stderr_has("boom: cannot open the database");
    assert!(started.elapsed() < Duration::from_secs(20), "waited {:?} for a crashed container", started.elapsed());
    assert!(svc.containers().is_empty(), "left behind: {:?}", svc.containers());
}

#[test]
fn a_missing_secret_is_refused_before_anything_starts() {
    if !docker_available() {
        return;
    }
    let svc = TestService::new("nosecret");
    svc.edit("pym-config.yaml", "env_secrets: []", "env_secrets: [PYM_IT_NOT_SET_ANYWHERE]").commit("needs a secret");
    svc.pym(&["accept-local"])
        .assert_failed()
        .assert_stderr_has("env_secrets not set in the environment: PYM_IT_NOT_SET_ANYWHERE")
        .assert_stderr_has("hint: export PYM_IT_NOT_SET_ANYWHERE");
    assert!(svc.containers().is_empty());
}

#[test]
fn ctrl_c_during_acceptance_stops_the_tests_and_removes_the_container() {
    if !docker_available() {
        return;
    }
    let svc = TestService::new("interrupt");
    // An acceptance suite that would run for minutes.
    svc.edit("pym-config.yaml", "accept_command: cargo test --manifest-path testaccept/Cargo.toml", "accept_command: sleep 600").commit("slow acceptance");
    svc.pym(&["build"]).assert_ok();
    let mut child = svc.spawn_pym(&["accept-local"]);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains("running acceptance tests") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "accept-local ended early:\n{seen}");
        seen.push_str(&line);
    }
    assert_eq!(svc.containers().len(), 1, "the container runs while the tests do");
    let pid = child.id().to_string();
    let started = Instant::now();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit code after Ctrl-C\n{seen}{rest}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?} to stop", started.elapsed());
    assert!(rest.contains("interrupted"), "{rest}");
    assert!(svc.containers().is_empty(), "left behind after Ctrl-C: {:?}", svc.containers());
    // No `sleep` of ours survives either.
    let ps = Command::new("pgrep").args(["-f", "^sleep 600$"]).output().unwrap();
    assert!(ps.stdout.is_empty(), "the acceptance command survived: {}", String::from_utf8_lossy(&ps.stdout));
}

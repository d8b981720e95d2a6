//! test → build → accept-local on generated services, against the real Docker engine.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{TestService, need_engine};

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_new_service_passes_test_build_accept_local_through_its_own_xtask() {
    need_engine();
    let svc = TestService::new("happy");
    svc.xtask(&["test"])
        .assert_ok()
        .assert_stderr_has("3 tests passed");
    svc.xtask(&["build"]).assert_ok();
    let r = svc.xtask(&["accept-local"]);
    r.assert_ok()
        // The acceptance test that asserts `/version` answers with PYM_ENV=local and a
        // real version ran against the container and passed.
        .assert_stderr_has("test version_names_the_environment_it_runs_in ... ok")
        .assert_stderr_has("test ping_answers_an_empty_object ... ok")
        .assert_stderr_has("2 acceptance tests passed");
    let version = svc.xtask_version();
    assert_eq!(svc.images(), [format!("{}:{version}", svc.name)]);
    assert!(
        svc.containers().is_empty(),
        "accept-local left containers: {:?}",
        svc.containers()
    );

    // The same commit again: the image is reused, not rebuilt.
    svc.pym(&["build"])
        .assert_ok()
        .assert_stderr_has(&format!("reused {}:{version}", svc.name));
    // Unless asked: "built <tag> from <n> files", which the reuse note ("already built for
    // this commit") does not say.
    let forced = svc.pym(&["build", "--force-build"]);
    forced
        .assert_ok()
        .assert_stderr_has(&format!("(built {}:{version} from ", svc.name));
    assert!(!forced.stderr.contains("reused"), "{}", forced.stderr);
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_failing_unit_test_stops_before_any_image_is_built() {
    need_engine();
    let svc = TestService::new("unitfail");
    svc.edit("src/main.rs", "    #[test]\n    fn ping_answers_an_empty_object() {", "    #[test]\n    fn broken() {\n        assert_eq!(1 + 1, 3, \"deliberately broken\");\n    }\n\n    #[test]\n    fn ping_answers_an_empty_object() {")
        .commit("break a unit test");
    let r = svc.pym(&["deploy"]);
    r.assert_failed()
        .assert_stderr_has("deliberately broken")
        .assert_stderr_has("step `test` failed");
    assert!(
        r.stderr
            .lines()
            .any(|l| l.trim_start().starts_with("build") && l.contains("skipped")),
        "{}",
        r.stderr
    );
    assert!(
        svc.images().is_empty(),
        "an image was built: {:?}",
        svc.images()
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_failing_acceptance_test_shows_logs_and_leaves_no_container() {
    need_engine();
    let svc = TestService::new("acceptfail");
    svc.edit(
        "testaccept/tests/accept.rs",
        "assert_eq!(r.json(), serde_json::json!({}));",
        "assert_eq!(r.json(), serde_json::json!({\"pong\": true}), \"deliberately wrong\");",
    )
    .commit("break an acceptance test");
    let r = svc.pym(&["deploy"]);
    r.assert_failed()
        .assert_stderr_has("deliberately wrong")
        .assert_stderr_has("step `accept-local` failed")
        .assert_stderr_has("log lines of container")
        // the service's own start-up line, from the container's logs
        .assert_stderr_has("listening on port 8080 (PYM_ENV=local)");
    assert!(
        svc.containers().is_empty(),
        "left behind: {:?}",
        svc.containers()
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_service_that_never_becomes_healthy_times_out_with_its_logs() {
    need_engine();
    let svc = TestService::new("unhealthy");
    // A definite answer (404, three times in a row) fails at once, whatever
    // health_timeout says, with the answer and the service's logs.
    svc.edit(
        "pym-config.yaml",
        "health_path: /ping\nhealth_timeout: 60",
        "health_path: /never\nhealth_timeout: 60",
    )
    .commit("a health path nobody answers");
    svc.pym(&["build"]).assert_ok();
    let started = Instant::now();
    let r = svc.pym(&["accept-local"]);
    r.assert_failed()
        .assert_stderr_has("/never answered 404 3 times in a row")
        .assert_stderr_has("the service runs but does not answer it as healthy")
        .assert_stderr_has("hint: set `health_path` in pym-config.yaml")
        .assert_stderr_has("listening on port 8080");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited for the 60 s health_timeout: {:?}",
        started.elapsed()
    );
    assert!(
        svc.containers().is_empty(),
        "left behind: {:?}",
        svc.containers()
    );

    // A service that answers 503 (not ready yet) is waited for, up to health_timeout.
    svc.edit(
        "src/main.rs",
        "_ => (404, serde_json::json!({ \"error\": \"not found\" }))",
        "_ => (503, serde_json::json!({ \"error\": \"not ready\" }))",
    )
    .edit("pym-config.yaml", "health_timeout: 60", "health_timeout: 3")
    .commit("not ready, ever");
    svc.pym(&["build"]).assert_ok();
    let started = Instant::now();
    let r = svc.pym(&["accept-local"]);
    r.assert_failed()
        .assert_stderr_has("did not become healthy within 3s")
        .assert_stderr_has("/never answered 503")
        .assert_stderr_has("hint: check that the service listens on $PORT")
        .assert_stderr_has("listening on port 8080");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(30),
        "took {took:?}"
    );
    assert!(
        svc.containers().is_empty(),
        "left behind: {:?}",
        svc.containers()
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_service_that_crashes_at_start_is_reported_without_waiting() {
    need_engine();
    let svc = TestService::new("crash");
    let entry = format!("ENTRYPOINT [\"/usr/local/bin/{}\"]", svc.name);
    svc.edit(
        "Dockerfile",
        &entry,
        "ENTRYPOINT [\"/bin/sh\", \"-c\", \"echo boom: cannot open the database >&2; exit 3\"]",
    )
    .edit(
        "pym-config.yaml",
        "health_timeout: 60",
        "health_timeout: 300",
    )
    .commit("crash at start");
    svc.pym(&["build"]).assert_ok();
    let started = Instant::now();
    let r = svc.pym(&["accept-local"]);
    r.assert_failed()
        .assert_stderr_has("crashed during start-up: it exited with status 3")
        .assert_stderr_has("boom: cannot open the database");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited {:?} for a crashed container",
        started.elapsed()
    );
    assert!(
        svc.containers().is_empty(),
        "left behind: {:?}",
        svc.containers()
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_missing_secret_is_refused_before_anything_starts() {
    need_engine();
    let svc = TestService::new("nosecret");
    svc.edit(
        "pym-config.yaml",
        "env_secrets: []",
        "env_secrets: [PYM_IT_NOT_SET_ANYWHERE]",
    )
    .commit("needs a secret");
    let r = svc.pym(&["accept-local"]);
    r.assert_failed()
        .assert_stderr_has("error: `accept-local` cannot run, so nothing was started: env_secrets not set in the environment: PYM_IT_NOT_SET_ANYWHERE")
        .assert_stderr_has("hint: export PYM_IT_NOT_SET_ANYWHERE");
    assert!(!r.stderr.contains("==> accept-local"), "{}", r.stderr);
    assert!(svc.containers().is_empty());
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn ctrl_c_during_acceptance_stops_the_tests_and_removes_the_container() {
    need_engine();
    let svc = TestService::new("interrupt");
    // An acceptance suite that would run for minutes, its command line this test's own
    // (600 s and a fraction no other test uses), so it is found by it alone.
    let sleep = format!("sleep 600.{}1", std::process::id());
    svc.edit(
        "pym-config.yaml",
        "accept_command: cargo test --manifest-path testaccept/Cargo.toml",
        &format!("accept_command: {sleep}"),
    )
    .commit("slow acceptance");
    svc.pym(&["build"]).assert_ok();
    let mut run = svc.spawn(&["accept-local"], &[]);
    run.wait_for("running acceptance tests");
    assert_eq!(
        svc.containers().len(),
        1,
        "the container runs while the tests do"
    );
    let seen = run.seen.clone();
    let (code, rest, took) = run.interrupt();
    assert_eq!(code, Some(130), "exit code after Ctrl-C\n{seen}{rest}");
    assert!(took < Duration::from_secs(15), "took {took:?} to stop");
    assert!(rest.contains("interrupted"), "{rest}");
    assert!(
        svc.containers().is_empty(),
        "left behind after Ctrl-C: {:?}",
        svc.containers()
    );
    // No `sleep` of ours survives either.
    let ps = Command::new("pgrep")
        .args(["-f", &format!("^{sleep}$")])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "the acceptance command survived: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn resume_keeps_the_steps_the_interrupted_run_chose() {
    need_engine();
    // The unit tests fail until .pym/ok exists (.pym is ignored: the version stays).
    let svc = TestService::new("resumeflags");
    svc.edit(
        "pym-config.yaml",
        "test_command: cargo test",
        "test_command: test -f .pym/ok",
    )
    .commit("a gate");
    let r = svc.pym(&[
        "deploy",
        "--no-push",
        "--skip",
        "build",
        "--skip",
        "accept-local",
    ]);
    r.assert_failed().assert_stderr_has("step `test` failed");
    std::fs::create_dir_all(svc.path(".pym")).unwrap();
    std::fs::write(svc.path(".pym/ok"), "").unwrap();
    // Other steps asked for with --resume: refused, naming both selections.
    svc.pym(&["deploy", "--resume", "--from", "stage"])
        .assert_failed()
        .assert_stderr_has("the deploy being resumed runs test; these flags select stage, accept-staging, promote, accept-live");
    // Resumed as it was: `--no-push` and the skips still hold, nothing is built or pushed.
    let r = svc.pym(&["deploy", "--resume"]);
    r.assert_ok()
        .assert_stderr_has("Resuming")
        .assert_stderr_has("==> test");
    for step in ["build", "accept-local", "push", "stage", "promote"] {
        assert!(
            !r.stderr.contains(&format!("==> {step}")),
            "{step} ran on resume:\n{}",
            r.stderr
        );
    }
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_corrupt_journal_or_history_line_is_named_not_fatal() {
    need_engine();
    let svc = TestService::new("corrupt");
    std::fs::create_dir_all(svc.path(".pym")).unwrap();
    std::fs::write(svc.path(".pym/journal.json"), "{\"version\": tru").unwrap();
    // Without --resume the journal is not read: the run goes on (and writes a new one).
    svc.pym(&["deploy", "--to", "test"]).assert_ok();
    std::fs::write(svc.path(".pym/journal.json"), "{\"version\": tru").unwrap();
    svc.pym(&["deploy", "--resume"])
        .assert_failed()
        .assert_stderr_has(&format!(
            "{} is not a journal pymdeploy can read",
            svc.path(".pym/journal.json").display()
        ))
        .assert_stderr_has("hint: remove it");
    // A history line cut short is passed over with a warning; the others are listed.
    let history = crate::support::repo_root()
        .join(format!("target/it-state/history/{}-docker.jsonl", svc.name));
    let mut text = std::fs::read_to_string(&history).unwrap();
    text.push_str("{\"user\": \"cut sh\n");
    std::fs::write(&history, text).unwrap();
    let r = svc.pym(&["history"]);
    r.assert_ok().assert_stderr_has(&format!(
        "{}:2: not a deploy record, passed over",
        history.display()
    ));
    assert_eq!(
        r.stdout.lines().filter(|l| l.contains(" ok ")).count(),
        1,
        "{}",
        r.stdout
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn secrets_are_masked_in_the_unit_tests_output_line_by_line() {
    need_engine();
    // A unit-test command that prints a two-line secret and fails: its output comes
    // before any step that starts the service, so the secret must be known by then.
    let svc = TestService::new("masking");
    svc.edit(
        "pym-config.yaml",
        "env_secrets: []",
        "env_secrets: [PYM_IT_MULTILINE, PYM_IT_SHORT]",
    )
    .edit(
        "pym-config.yaml",
        "test_command: cargo test",
        "test_command: sh -c 'printenv PYM_IT_MULTILINE; echo the probe crashed; exit 3'",
    )
    .commit("a test that prints a secret");
    let secret = "db-password-line-one\nline-two-of-the-key";
    let r = svc.pym_env(
        &["deploy"],
        &[("PYM_IT_MULTILINE", secret), ("PYM_IT_SHORT", "crash")],
    );
    r.assert_failed()
        .assert_stderr_has("step `test` failed")
        .assert_stderr_has(
            "the value of PYM_IT_SHORT (env_secrets) has a line shorter than 8 characters",
        );
    for line in secret.lines() {
        assert!(
            !r.stderr.contains(line) && !r.stdout.contains(line),
            "{line:?} was printed:\n{}",
            r.stderr
        );
    }
    // Each line of the secret masked on its own, the command's own output intact.
    r.assert_stderr_has("    ***\n    ***\n    the probe crashed\n");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_hanging_test_command_is_stopped_at_test_timeout() {
    need_engine();
    let svc = TestService::new("hang");
    // Sleeps whose command lines are this test's own, found by them alone.
    let (a, b) = (
        format!("sleep 300.{}2", std::process::id()),
        format!("sleep 301.{}2", std::process::id()),
    );
    svc.edit(
        "pym-config.yaml",
        "test_command: cargo test",
        &format!("test_command: sh -c '{a} & {b}; echo never'\ntest_timeout: 2"),
    )
    .commit("tests that hang");
    let started = Instant::now();
    let r = svc.pym(&["deploy"]);
    r.assert_failed()
        .assert_stderr_has("did not finish within 2s (`test_timeout`): it was stopped, with every process it started")
        .assert_stderr_has("hint: find what hangs");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    // Its children went with it (killed; on a loaded machine the kernel may take a moment
    // to let a killed process go, so it is asked for a few seconds).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let ps = Command::new("pgrep")
            .args(["-f", &format!("^({a}|{b})$")])
            .output()
            .unwrap();
        if ps.stdout.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the test command's processes survived: {}",
            String::from_utf8_lossy(&ps.stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn build_ships_this_checkouts_binary_when_another_checkout_shares_the_target_dir() {
    need_engine();
    // Two clones of one service (one package name) and one CARGO_TARGET_DIR, as the tests
    // (and many CI setups) share: cargo gives both the same unit hash.
    let a = TestService::new("twocopies");
    let b = a.clone_to("twocopies-b");
    // A marker long enough to sit in the binary as it is (short strings may be built by
    // instructions, not stored).
    const MARKER: &str = "this route is unknown to copy b of the service, marker 7f3a9c";
    b.edit("src/main.rs", "\"not found\"", &format!("\"{MARKER}\""))
        .commit("b differs");
    a.pym(&["build"]).assert_ok();
    b.pym(&["build"]).assert_ok();
    // A again: cargo judges its (older) sources fresh and would hand back B's binary.
    a.pym(&["build", "--force-build"]).assert_ok();
    let has_marker = |svc: &TestService| {
        let bytes = std::fs::read(svc.path(&format!(".pym/dist/{}", svc.name))).unwrap();
        bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())
    };
    assert!(!has_marker(&a), "A's image got B's binary");
    assert!(has_marker(&b), "B's binary is B's");
}

#[test]
fn the_test_step_runs_this_checkouts_tests_when_another_checkout_shares_the_target_dir() {
    // Two clones of one service share CARGO_TARGET_DIR (as `run` gives every test). B
    // has a failing test and sources older than A's test binary: cargo, left alone,
    // judges that binary fresh for B and runs A's tests.
    let a = TestService::new("twotests");
    let b = a.clone_to("twotests-b");
    b.edit(
        "src/main.rs",
        "#[cfg(test)]\nmod tests {\n",
        "#[cfg(test)]\nmod tests {\n    #[test]\n    fn only_in_b() {\n        panic!(\"b's own failing test\");\n    }\n\n",
    )
    .commit("b has a failing test");
    std::thread::sleep(Duration::from_millis(1100));
    let passed = a.pym(&["test"]).assert_ok().stderr.clone();
    let r = b.pym(&["test"]);
    r.assert_failed()
        .assert_stderr_has("b's own failing test")
        .assert_stderr_has("last ran another checkout's tests: building this one's");
    // And A again is A's: it passes, with as many tests as before.
    let again = a.pym(&["test"]).assert_ok().stderr.clone();
    // "3 tests passed", whatever the times beside it.
    let count = |s: &str| {
        s.split_once(" tests passed")
            .and_then(|(before, _)| before.rsplit(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u32>().ok())
    };
    assert!(count(&passed).is_some(), "{passed}");
    assert_eq!(count(&again), count(&passed), "{again}");
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn ctrl_c_during_the_image_build_stops_at_once() {
    need_engine();
    let svc = TestService::new("buildint");
    // A sleep of this test's own (GNU sleep takes fractions), found by its command line.
    let sleep = format!("sleep 120.{}", std::process::id());
    svc.edit(
        "Dockerfile",
        "USER 10001:10001",
        &format!("RUN {sleep}\nUSER 10001:10001"),
    )
    .commit("a slow build");
    let mut run = svc.spawn(&["build"], &[]);
    run.wait_for(&format!("RUN {sleep}"));
    // Ctrl-C once the builder runs that step in its container.
    let building = || {
        crate::support::docker(&["ps", "--no-trunc", "--format", "{{.Command}}"])
            .lines()
            .any(|c| c.contains(&sleep))
    };
    crate::support::wait_until(
        "the build runs its slow step",
        Duration::from_secs(30),
        building,
    );
    let seen = run.seen.clone();
    let (code, rest, took) = run.interrupt();
    assert_eq!(code, Some(130), "{seen}{rest}");
    assert!(
        took < Duration::from_secs(10),
        "Ctrl-C took {took:?} during the build"
    );
    // The engine is told too: the step's container does not run on.
    crate::support::wait_until(
        "the build's slow step stopped after Ctrl-C",
        Duration::from_secs(15),
        || !building(),
    );
    assert!(
        svc.images().is_empty(),
        "an image was tagged: {:?}",
        svc.images()
    );
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn a_file_size_limit_is_an_error_line_and_leaves_no_partial_binary() {
    need_engine();
    // Built once without a limit, then again under `ulimit -f` (1 MiB): cargo has nothing
    // to write, the copy of the binary into .pym/dist is what hits the limit. The process
    // must report it (not die of SIGXFSZ) and remove its partial copy.
    let svc = TestService::new("fsize");
    svc.pym(&["build"]).assert_ok();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -f 1024; exec \"$0\" build --force-build")
        .arg(crate::support::pymdeploy_bin())
        .current_dir(&svc.root);
    let r = crate::support::run(cmd);
    // The copy into .pym/dist is what fails, not cargo.
    r.assert_failed()
        .assert_stderr_has("error: step `build` failed: cannot copy ")
        .assert_stderr_has(&format!("/.pym/dist/.{}.tmp: File too large", svc.name));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let leftovers: Vec<_> = std::fs::read_dir(svc.path(".pym/dist"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "a partial binary was left: {leftovers:?}"
    );
}

//! The command line as users meet it: help text, clap's consistency, exit codes.

use pymdeploy::Pipeline;
use pymdeploy::cli::DeployArgs;
use snapbox::{assert_data_eq, file};

use crate::support::{pymdeploy_bin, run};

#[test]
fn clap_definitions_are_consistent() {
    pymdeploy::cli::pymdeploy_command().debug_assert();
    pymdeploy::cli::xtask_command(&Pipeline::standard()).debug_assert();
}

#[test]
fn pymdeploy_help() {
    let help = pymdeploy::cli::pymdeploy_command()
        .render_help()
        .to_string();
    assert_data_eq!(help, file!["snapshots/pymdeploy-help.txt"]);
}

#[test]
fn xtask_help() {
    let help = pymdeploy::cli::xtask_command(&Pipeline::standard())
        .render_help()
        .to_string();
    assert_data_eq!(help, file!["snapshots/xtask-help.txt"]);
}

#[test]
fn a_team_step_gets_its_own_subcommand() {
    let pipeline = Pipeline::standard().step_before(
        "test",
        pymdeploy::step("lint", "Run the linter", |_, _| Ok(String::new())),
    );
    assert_eq!(&pipeline.names()[..3], ["lint", "test", "build"]);
    let help = pymdeploy::cli::xtask_command(&pipeline)
        .render_help()
        .to_string();
    assert!(
        help.lines()
            .any(|l| l.starts_with("  lint ") && l.ends_with("Run the linter")),
        "{help}"
    );
}

fn select(args: DeployArgs) -> Result<Vec<String>, String> {
    let pipeline = Pipeline::standard();
    pymdeploy::cli::select(&pipeline, &args)
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .map_err(|e| format!("{e:#} / {}", pymdeploy::error::hint_of(&e).unwrap_or("")))
}

#[test]
fn deploy_flags_select_steps() {
    let all = [
        "test",
        "build",
        "accept-local",
        "push",
        "stage",
        "accept-staging",
        "promote",
        "accept-live",
    ];
    assert_eq!(select(DeployArgs::default()).unwrap(), all);
    assert_eq!(
        select(DeployArgs {
            from: Some("push".into()),
            to: Some("promote".into()),
            ..Default::default()
        })
        .unwrap(),
        ["push", "stage", "accept-staging", "promote"]
    );
    assert_eq!(
        select(DeployArgs {
            skip: vec!["accept-local".into(), "accept-staging".into()],
            no_test: true,
            ..Default::default()
        })
        .unwrap(),
        ["build", "push", "stage", "promote", "accept-live"]
    );
    assert_eq!(
        select(DeployArgs {
            no_push: true,
            ..Default::default()
        })
        .unwrap(),
        ["test", "build", "accept-local"]
    );
    assert_eq!(
        select(DeployArgs {
            no_deploy: true,
            ..Default::default()
        })
        .unwrap(),
        ["test", "build", "accept-local", "push"]
    );
    let err = select(DeployArgs {
        skip: vec!["lint".into()],
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        err,
        "unknown step `lint` / the steps of this pipeline are: test, build, accept-local, push, stage, accept-staging, promote, accept-live"
    );
    let err = select(DeployArgs {
        from: Some("promote".into()),
        to: Some("build".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        err.starts_with("--from promote comes after --to build"),
        "{err}"
    );
}

#[test]
fn no_push_and_no_deploy_follow_what_a_step_acts_on_not_where_it_sits() {
    use pymdeploy::Reach;
    let noop = |_: &pymdeploy::Ctx, _: &pymdeploy::StepProgress<'_>| Ok(String::new());
    // A local report after the deploy, and a team step that changes the target.
    let pipeline = Pipeline::standard()
        .step(pymdeploy::step("report", "Write a local report", noop))
        .step(
            pymdeploy::step("warm-cache", "Warm live's cache", noop).reaching(Reach::Target, true),
        );
    let pick = |args: DeployArgs| pymdeploy::cli::select(&pipeline, &args).unwrap();
    assert_eq!(
        pick(DeployArgs {
            no_push: true,
            ..Default::default()
        }),
        ["test", "build", "accept-local", "report"]
    );
    assert_eq!(
        pick(DeployArgs {
            no_deploy: true,
            ..Default::default()
        }),
        ["test", "build", "accept-local", "push", "report"]
    );
    let changes: Vec<&str> = pipeline
        .runnable()
        .filter(|s| s.changes())
        .map(|s| s.name())
        .collect();
    assert_eq!(
        changes,
        ["push", "stage", "promote", "warm-cache", "rollback"],
        "the steps that take the deploy lock when run alone"
    );
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let mut cmd = std::process::Command::new(pymdeploy_bin());
    cmd.arg("nope");
    let r = run(cmd);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("unrecognized subcommand 'nope'"),
        "{}",
        r.stderr
    );
}

#[test]
fn outside_a_service_the_error_says_where_to_start() {
    let dir = crate::support::temp_dir("nowhere");
    let mut cmd = std::process::Command::new(pymdeploy_bin());
    cmd.arg("build").current_dir(&dir);
    let r = run(cmd);
    r.assert_failed()
        .assert_stderr_has("no pym-config.yaml in")
        .assert_stderr_has("hint: run this in a service root");
}

#[test]
fn no_engine_is_one_error_with_a_hint() {
    let dir = crate::support::temp_dir("noengine");
    std::fs::write(
        dir.join("pym-config.yaml"),
        "name: lonely\ndeploy_target: docker\n",
    )
    .unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
    for args in [
        vec!["init", "-q"],
        vec!["add", "-A"],
        vec![
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "x",
        ],
    ] {
        assert!(
            std::process::Command::new("git")
                .args(&args)
                .current_dir(&dir)
                .status()
                .unwrap()
                .success()
        );
    }
    let mut cmd = std::process::Command::new(pymdeploy_bin());
    cmd.arg("build")
        .current_dir(&dir)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let r = run(cmd);
    r.assert_failed()
        .assert_stderr_has("error: `build` cannot run, so nothing was started: no Docker engine reachable at unix:///nonexistent/docker.sock")
        .assert_stderr_has("hint: start the engine");
    assert_eq!(
        r.stderr.matches("error:").count(),
        1,
        "one error, not a cascade:\n{}",
        r.stderr
    );
}

#[test]
fn a_missing_dockerfile_is_one_error_with_a_hint() {
    let dir = crate::support::temp_dir("nodockerfile");
    std::fs::write(
        dir.join("pym-config.yaml"),
        "name: lonely\ndeploy_target: docker\n",
    )
    .unwrap();
    let mut cmd = std::process::Command::new(pymdeploy_bin());
    cmd.arg("build").current_dir(&dir);
    run(cmd)
        .assert_failed()
        .assert_stderr_has("no Dockerfile at")
        .assert_stderr_has("hint: add a Dockerfile");
}

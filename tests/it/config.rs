//! Configuration errors and the merged config, through the binary.

use std::path::Path;
use std::process::Command;

use crate::support::{Run, pymdeploy_bin, run, temp_dir};

fn config(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(pymdeploy_bin());
    cmd.arg("config").args(args).current_dir(dir);
    run(cmd)
}

fn with_config(text: &str) -> std::path::PathBuf {
    let dir = temp_dir("config");
    std::fs::write(dir.join("pym-config.yaml"), text).unwrap();
    dir
}

#[test]
fn unknown_key_names_file_line_and_suggests() {
    let dir = with_config("name: hello\ndeploy_target: docker\ndocker_rpeo: x\n");
    let r = config(&dir, &[]);
    r.assert_failed()
        .assert_stderr_has("pym-config.yaml:3:1: unknown key `docker_rpeo`")
        .assert_stderr_has("hint: did you mean `docker_repo`?");
    assert!(
        r.stdout.is_empty(),
        "nothing on stdout on error: {}",
        r.stdout
    );
}

#[test]
fn wrong_type_names_file_line_and_key() {
    let dir = with_config("name: hello\ndeploy_target: docker\nhealth_timeout: soon\n");
    config(&dir, &[]).assert_failed().assert_stderr_has(
        "pym-config.yaml:3:17: key `health_timeout`: invalid type: string \"soon\", expected u64",
    );
}

#[test]
fn missing_name_is_an_error_with_the_fix() {
    let dir = with_config("deploy_target: docker\n");
    config(&dir, &[])
        .assert_failed()
        .assert_stderr_has("missing required key `name`")
        .assert_stderr_has("hint: add `name: ...`");
}

#[test]
fn overlay_applies_per_env_and_secrets_are_masked() {
    let dir =
        with_config("name: hello\ndeploy_target: docker\nenv_secrets: [PYM_IT_DB_PASSWORD]\n");
    std::fs::write(
        dir.join("pym-config.live.yaml"),
        "live_url: https://hello.example.com\n",
    )
    .unwrap();
    let mut cmd = Command::new(pymdeploy_bin());
    cmd.args(["config", "--env", "live"])
        .current_dir(&dir)
        .env("PYM_IT_DB_PASSWORD", "s3cr3t-value-123");
    let r = run(cmd);
    r.assert_ok();
    assert!(
        r.stdout.contains("live_url: https://hello.example.com"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("PYM_IT_DB_PASSWORD: '*** (set)'"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("s3cr3t") && !r.stderr.contains("s3cr3t"));
    let local = config(&dir, &[]);
    assert!(
        local.assert_ok().stdout.contains("live_url: null"),
        "{}",
        local.stdout
    );
}

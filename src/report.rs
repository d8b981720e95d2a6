//! What a run leaves for CI to read: its summary in Markdown (each step, its outcome and
//! time; the version, image digest, staging and live URLs; a failed step's last lines)
//! and its outputs (`version`, `digest`, `live_url`, `staging_url`, `outcome`).
//!
//! Every run of the pipeline's steps writes both to `.pym/last-run.md` and
//! `.pym/last-run.json` in the service root, for any CI (GitLab, Jenkins) to publish.
//! Under GitHub Actions the summary is also appended to `$GITHUB_STEP_SUMMARY` and the
//! outputs to `$GITHUB_OUTPUT`, so the job's page shows the one and later steps read the
//! other. Everything in them has been through the printer's secret masker.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::output::{Outcome, StepReport, fmt_duration};

/// One run, as its summary tells it.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// `deploy`, or the one step run (`promote`).
    pub command: String,
    pub service: String,
    pub target: String,
    pub version: Option<String>,
    /// The image deployed, by digest: `repo@sha256:…` where it was pushed, else (the
    /// docker target without a registry) the engine's image ID, `sha256:…`.
    pub image: Option<String>,
    pub staging_url: Option<String>,
    pub live_url: Option<String>,
    /// `ok`, `failed` or `interrupted`.
    pub outcome: String,
    /// The error the run ended with (masked).
    pub error: Option<String>,
    pub steps: Vec<StepReport>,
    pub total: Duration,
}

impl RunReport {
    /// The image's digest alone (`sha256:…`): a registry's, or the engine's image ID.
    pub fn digest(&self) -> Option<&str> {
        let image = self.image.as_deref()?;
        match image.split_once('@') {
            Some((_, d)) => Some(d),
            None => image.starts_with("sha256:").then_some(image),
        }
    }

    /// The step outputs, in a fixed order; an unknown one is empty.
    pub fn outputs(&self) -> Vec<(&'static str, String)> {
        let s = |v: Option<&str>| v.unwrap_or("").to_string();
        vec![
            ("version", s(self.version.as_deref())),
            ("digest", s(self.digest())),
            ("live_url", s(self.live_url.as_deref())),
            ("staging_url", s(self.staging_url.as_deref())),
            ("outcome", self.outcome.clone()),
        ]
    }

    /// `.pym/last-run.json`: the outputs, and the steps with their outcomes and times.
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::Map::new();
        for (k, value) in self.outputs() {
            v.insert(k.into(), value.into());
        }
        v.insert("command".into(), self.command.clone().into());
        v.insert("service".into(), self.service.clone().into());
        v.insert("target".into(), self.target.clone().into());
        v.insert(
            "image".into(),
            self.image.clone().unwrap_or_default().into(),
        );
        v.insert(
            "error".into(),
            self.error
                .clone()
                .map_or(serde_json::Value::Null, Into::into),
        );
        v.insert("duration_ms".into(), (self.total.as_millis() as u64).into());
        v.insert(
            "steps".into(),
            self.steps
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "name": r.name,
                        "outcome": r.outcome.as_str(),
                        "duration_ms": r.duration.as_millis() as u64,
                        "note": r.note,
                    })
                })
                .collect(),
        );
        serde_json::Value::Object(v)
    }

    /// The summary in GitHub-flavoured Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let failed = self.steps.iter().find(|r| r.outcome == Outcome::Failed);
        let version = self.version.as_deref().unwrap_or("(no version)");
        let headline = match (self.outcome.as_str(), failed) {
            ("ok", _) => "✅".to_string(),
            ("interrupted", _) => "⏹️ interrupted:".to_string(),
            (_, Some(f)) => format!("❌ `{}` failed:", f.name),
            _ => "❌ failed:".to_string(),
        };
        let _ = writeln!(
            md,
            "### {headline} pymdeploy {} of {} {version} to {}\n",
            self.command, self.service, self.target
        );
        md.push_str("| step | result | time | note |\n| --- | --- | --: | --- |\n");
        for r in &self.steps {
            let time = match r.outcome {
                Outcome::Skipped => "-".to_string(),
                _ => fmt_duration(r.duration),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {time} | {} |",
                cell(&r.name),
                r.outcome.as_str(),
                cell(&r.note)
            );
        }
        let _ = writeln!(md, "| **total** | | {} | |\n", fmt_duration(self.total));
        let _ = writeln!(md, "- **version**: `{version}`");
        if let Some(i) = &self.image {
            let _ = writeln!(md, "- **image**: `{i}`");
        }
        if let Some(u) = &self.staging_url {
            let _ = writeln!(md, "- **staging**: {u}");
        }
        if let Some(u) = &self.live_url {
            let _ = writeln!(md, "- **live**: {u}");
        }
        if let Some(e) = &self.error {
            let _ = writeln!(md, "\n**error**: {}", cell(e));
        }
        if let Some(f) = failed.filter(|f| !f.tail.is_empty()) {
            let _ = write!(
                md,
                "\n<details><summary>the last lines of <code>{}</code></summary>\n\n{}\n</details>\n",
                f.name,
                fenced(&f.tail.join("\n"))
            );
        }
        md
    }

    /// Writes `.pym/last-run.md` and `.pym/last-run.json` under `root`.
    pub fn write_files(&self, root: &Path) -> Result<()> {
        let dir = root.join(".pym");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, text) in [
            ("last-run.md", self.markdown()),
            (
                "last-run.json",
                serde_json::to_string_pretty(&self.json())? + "\n",
            ),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Under GitHub Actions: the summary appended to `$GITHUB_STEP_SUMMARY`, the outputs
    /// to `$GITHUB_OUTPUT` (each in the runner's `name<<delimiter` form, which holds any
    /// value). Files the runner did not name are left alone.
    pub fn write_github(&self) -> Result<()> {
        if let Some(path) = env_path("GITHUB_STEP_SUMMARY") {
            append(&path, &(self.markdown() + "\n"))?;
        }
        if let Some(path) = env_path("GITHUB_OUTPUT") {
            let mut text = String::new();
            for (k, v) in self.outputs() {
                let delimiter = delimiter_for(&v);
                let _ = writeln!(text, "{k}<<{delimiter}\n{v}\n{delimiter}");
            }
            append(&path, &text)?;
        }
        Ok(())
    }
}

/// A table cell's text: one line, its pipes escaped.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

/// `text` in a code fence longer than any run of backticks in it.
fn fenced(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}text\n{text}\n{fence}")
}

/// A `GITHUB_*` file the runner named, if any.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn append(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A heredoc delimiter for `$GITHUB_OUTPUT` that does not occur in `value`.
fn delimiter_for(value: &str) -> String {
    let mut n = 0u32;
    loop {
        let d = format!("pym_{n}_EOF");
        if !value.contains(&d) {
            return d;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> RunReport {
        RunReport {
            command: "deploy".into(),
            service: "hello".into(),
            target: "docker".into(),
            version: Some("241205-0110-12-abc123".into()),
            image: Some("reg/hello@sha256:0123".into()),
            staging_url: Some("http://127.0.0.1:18081".into()),
            live_url: None,
            outcome: "failed".into(),
            error: Some("step `accept-staging` failed: 1 test | failed".into()),
            steps: vec![
                StepReport {
                    name: "build".into(),
                    outcome: Outcome::Ok,
                    duration: Duration::from_millis(1500),
                    note: "built".into(),
                    tail: vec![],
                },
                StepReport {
                    name: "accept-staging".into(),
                    outcome: Outcome::Failed,
                    duration: Duration::from_secs(3),
                    note: "1 failed".into(),
                    tail: vec!["E   assert ```x``` == 2".into()],
                },
                StepReport {
                    name: "promote".into(),
                    outcome: Outcome::Skipped,
                    duration: Duration::ZERO,
                    note: String::new(),
                    tail: vec![],
                },
            ],
            total: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_summary_names_each_step_the_failure_and_its_last_lines() {
        let md = report().markdown();
        assert!(md.starts_with("### ❌ `accept-staging` failed: pymdeploy deploy of hello 241205-0110-12-abc123 to docker"), "{md}");
        assert!(md.contains("| build | ok | 1.5s | built |"), "{md}");
        assert!(md.contains("| promote | skipped | - |  |"), "{md}");
        assert!(md.contains("1 test \\| failed"), "{md}");
        assert!(md.contains("- **image**: `reg/hello@sha256:0123`"), "{md}");
        assert!(!md.contains("**live**"), "{md}");
        // The fence outlasts the backticks of the output it holds.
        assert!(
            md.contains("````text\nE   assert ```x``` == 2\n````"),
            "{md}"
        );
    }

    #[test]
    fn outputs_are_written_in_the_runners_delimited_form() {
        let r = report();
        assert_eq!(r.digest(), Some("sha256:0123"));
        let outputs = r.outputs();
        assert_eq!(
            outputs.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            ["version", "digest", "live_url", "staging_url", "outcome"]
        );
        assert_eq!(delimiter_for("a pym_0_EOF b"), "pym_1_EOF");
        let j = r.json();
        assert_eq!(j["outcome"], "failed");
        assert_eq!(j["live_url"], "");
        assert_eq!(j["steps"][1]["outcome"], "failed");
    }
}

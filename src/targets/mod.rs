//! Deploy targets: where `stage`, `promote` and `rollback` put the service. One file per
//! target; adding one touches that file and the match arms here.

#[cfg(feature = "aws-beanstalk")]
pub mod beanstalk;
pub mod docker;

use std::time::Duration;

use anyhow::{Result, bail};

use crate::config::{Config, PymEnv, TargetKind};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::output::StepProgress;
use crate::version::Served;

/// Where an environment answers: host and port for the acceptance tests.
pub struct Address {
    pub host: String,
    pub port: u16,
}

/// How often and how patiently `verify_version` asks.
pub(crate) struct Poll {
    /// The pause between two questions.
    pub every: Duration,
    /// How long one question may take.
    pub ask: Duration,
}

/// Asks `version_path` on `host:port` until it names `version` (and, with `env`, that
/// `PYM_ENV`), for at most `within`; the error says what it served last. With
/// `verify_version: false` the service has no such path and health alone decides.
pub(crate) async fn verify_version(config: &Config, host: &str, port: u16, version: &str, env: Option<PymEnv>, within: Duration, poll: Poll) -> Result<()> {
    if !config.verify_version {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + within;
    let env_note = env.map(|e| format!(" with PYM_ENV={e}")).unwrap_or_default();
    let path = &config.version_path;
    loop {
        let last = match crate::ops::http::get(host, port, path, poll.ask).await {
            Ok((status, body)) if (200..300).contains(&status) => match Served::parse(&body) {
                Some(s) if s.version == version && env.is_none_or(|e| s.pym_env == e.as_str()) => return Ok(()),
                Some(s) if env.is_some() => format!("it serves {} with PYM_ENV={}", s.version, s.pym_env),
                Some(s) => format!("it serves {}", s.version),
                None => format!("{path} answered no JSON with `version` and `pym_env`"),
            },
            Ok((status, _)) => format!("{path} answered {status}"),
            Err(e) => format!("{e:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{host}:{port} does not serve version {version}{env_note}: {last}");
        }
        tokio::time::sleep(poll.every).await;
    }
}

fn unsupported(kind: TargetKind) -> anyhow::Error {
    if kind == TargetKind::AwsBeanstalk {
        return hinted(
            "this pymdeploy was built without the aws-beanstalk feature",
            "run the service's own pipeline, `cargo xtask <command>` (its xtask enables the feature), or install pymdeploy with `--features aws-beanstalk`",
        );
    }
    hinted(
        format!("pymdeploy {} cannot deploy to the {kind} target yet (`deploy_target: {kind}` in pym-config.yaml)", env!("CARGO_PKG_VERSION")),
        "use `deploy_target: docker` or `aws-beanstalk`, or stop before the target: `cargo xtask deploy --to push` tests, builds, accepts and pushes",
    )
}

/// Whether this build can deploy to the configured target at all: checked before the
/// first step of any run that reaches the target.
pub fn check(ctx: &Ctx) -> Result<()> {
    match ctx.config().deploy_target {
        TargetKind::Docker => docker::check(ctx),
        #[cfg(feature = "aws-beanstalk")]
        TargetKind::AwsBeanstalk => beanstalk::check(ctx),
        other => Err(unsupported(other)),
    }
}

/// `pymdeploy proxy-image`: the docker target's live proxy image, made here and pushed
/// to `push_to` for engines that cannot have it made from the deploying binary.
pub fn proxy_image(ctx: &Ctx, push_to: Option<&str>) -> Result<String> {
    docker::make_proxy_image(ctx, push_to)
}

/// A target's own lock, held until dropped.
pub type Guard = Box<dyn std::any::Any>;

/// Takes the target's own lock, for a target that more than one machine deploys to and
/// that has no exclusion of its own: the docker engine's. Beanstalk refuses a second
/// update of an environment itself.
pub fn lock(ctx: &Ctx, command: &str, break_lock: bool) -> Result<Option<Guard>> {
    match ctx.config().deploy_target {
        TargetKind::Docker => Ok(Some(Box::new(docker::lock(ctx, command, break_lock)?))),
        _ => Ok(None),
    }
}

pub fn stage(ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
    match ctx.config().deploy_target {
        TargetKind::Docker => docker::stage(ctx, progress),
        #[cfg(feature = "aws-beanstalk")]
        TargetKind::AwsBeanstalk => beanstalk::stage(ctx, progress),
        other => Err(unsupported(other)),
    }
}

pub fn promote(ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
    match ctx.config().deploy_target {
        TargetKind::Docker => docker::promote(ctx, progress),
        #[cfg(feature = "aws-beanstalk")]
        TargetKind::AwsBeanstalk => beanstalk::promote(ctx, progress),
        other => Err(unsupported(other)),
    }
}

pub fn rollback(ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
    match ctx.config().deploy_target {
        TargetKind::Docker => docker::rollback(ctx, progress),
        #[cfg(feature = "aws-beanstalk")]
        TargetKind::AwsBeanstalk => beanstalk::rollback(ctx, progress),
        other => Err(unsupported(other)),
    }
}

/// What `status` shows: named columns and their rows, printed as an aligned table or,
/// with `--json`, as one JSON object per row.
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Table {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// The header and the rows, each column as wide as its widest cell (the last one
    /// unpadded).
    pub fn lines(&self) -> Vec<String> {
        let widths: Vec<usize> = (0..self.columns.len()).map(|i| self.rows.iter().map(|r| r.get(i).map_or(0, String::len)).chain([self.columns[i].len()]).max().unwrap_or(0)).collect();
        let line = |cells: Vec<&str>| {
            let last = cells.len().saturating_sub(1);
            cells.iter().enumerate().map(|(i, c)| if i == last { c.to_string() } else { format!("{c:<w$}", w = widths[i]) }).collect::<Vec<_>>().join(" ")
        };
        std::iter::once(line(self.columns.clone())).chain(self.rows.iter().map(|r| line(r.iter().map(String::as_str).collect()))).collect()
    }

    /// One object per row, keyed by the lowercased column names.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.rows
            .iter()
            .map(|r| serde_json::Value::Object(self.columns.iter().zip(r).map(|(c, v)| (c.to_lowercase(), serde_json::Value::String(v.clone()))).collect()))
            .collect()
    }
}

pub fn status(ctx: &Ctx) -> Result<Table> {
    match ctx.config().deploy_target {
        TargetKind::Docker => docker::status(ctx),
        #[cfg(feature = "aws-beanstalk")]
        TargetKind::AwsBeanstalk => beanstalk::status(ctx),
        other => Err(unsupported(other)),
    }
}

pub fn address(ctx: &Ctx, env: PymEnv) -> Result<Address> {
    match ctx.config().deploy_target {
        TargetKind::Docker => docker::address(ctx, env),
        #[cfg(feature = "aws-beanstalk")]
        TargetKind::AwsBeanstalk => beanstalk::address(ctx, env),
        other => Err(unsupported(other)),
    }
}

/// The actions of `stage`, `promote` or `rollback` on this target, for `--dry-run`.
pub fn plan(ctx: &Ctx, step: &str) -> Result<Vec<String>> {
    match ctx.config().deploy_target {
        TargetKind::Docker => docker::plan(ctx, step),
        #[cfg(feature = "aws-beanstalk")]
        TargetKind::AwsBeanstalk => beanstalk::plan(ctx, step),
        other => Err(unsupported(other)),
    }
}

/// Removes old environments beyond `keep_previous`; with `execute` false, says which.
pub fn cleanup(ctx: &Ctx, execute: bool) -> Result<Vec<String>> {
    match ctx.config().deploy_target {
        TargetKind::Docker => docker::cleanup(ctx, execute),
        #[cfg(feature = "aws-beanstalk")]
        TargetKind::AwsBeanstalk => beanstalk::cleanup(ctx, execute),
        other => Err(unsupported(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn a_table_aligns_its_columns_and_says_each_row_as_json() {
        let mut t = Table::new(&["ENV", "VERSION", "IMAGE"]);
        t.rows.push(vec!["previous".into(), "v1".into(), "repo@sha256:1".into()]);
        t.rows.push(vec!["live".into(), "261128-1300-12-abcdef".into(), "repo@sha256:2".into()]);
        assert_eq!(
            t.lines(),
            ["ENV      VERSION               IMAGE", "previous v1                    repo@sha256:1", "live     261128-1300-12-abcdef repo@sha256:2"]
        );
        assert_eq!(t.json()[1], serde_json::json!({"env": "live", "version": "261128-1300-12-abcdef", "image": "repo@sha256:2"}));
    }
}

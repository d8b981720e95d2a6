//! The steps after `push`, on the configured target: `stage`, `accept-staging`,
//! `promote`, `accept-live`, and the commands `rollback` and `status`.
//!
//! The invariants a user relies on are checked here, once for every target that keeps a
//! `targets::Ledger`: promote makes live only what staging runs, and only once that
//! image passed staging acceptance (recorded by `accept-staging`); a run that would
//! promote while skipping staging acceptance is refused before its first step.
//! Rollback's choice (never back to a version it left, unless `--to` names it) is
//! `targets::history::rollback_to`, which every target's decision calls.

use anyhow::{Context, Result};

use crate::config::PymEnv;
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::ops::service::secrets;
use crate::output::StepProgress;
use crate::pipeline::{Reach, Step};
use crate::steps::accept::run_acceptance;
use crate::targets::{self, Change, Ledger, Staged, history::Event};

/// What promote makes live: what staging runs, refused unless it passed staging
/// acceptance on that very image.
fn staged_and_accepted(ctx: &Ctx, ledger: &dyn Ledger) -> Result<Staged> {
    let staged = ledger
        .staged(ctx)?
        .ok_or_else(|| hinted("nothing runs on staging: there is no version to promote", "stage and test one first: `cargo xtask deploy --from stage` (or `--to accept-staging`)"))?;
    if !ledger
        .history(ctx)?
        .accepted(&staged.version, &staged.digest)
    {
        return Err(hinted(
            format!(
                "{} runs on staging but has not passed staging acceptance on that image ({})",
                staged.version, staged.digest
            ),
            "test it with `cargo xtask accept-staging`, then promote; `cargo xtask deploy --from stage` does both",
        ));
    }
    if ctx.version().is_ok_and(|v| v.to_string() != staged.version) {
        ctx.out.status(
            "Promoting",
            &format!(
                "{}, what staging runs (HEAD is {})",
                staged.version,
                ctx.version().map(|v| v.to_string()).unwrap_or_default()
            ),
        );
    }
    Ok(staged)
}

/// What a dry run's promote would make live: HEAD's version when this run stages it,
/// else what staging runs now.
fn planned_staged(ctx: &Ctx, ledger: &dyn Ledger) -> Result<Option<Staged>> {
    if ctx.runs("stage") {
        let tag = ctx.image_tag()?;
        return Ok(Some(Staged {
            version: ctx.version()?.to_string(),
            image: tag,
            digest: "<the pushed digest>".into(),
        }));
    }
    Ok(Some(staged_and_accepted(ctx, ledger)?))
}

pub struct Stage;

impl Step for Stage {
    fn reach(&self) -> Reach {
        Reach::Target
    }
    fn changes(&self) -> bool {
        true
    }
    fn name(&self) -> &str {
        "stage"
    }
    fn about(&self) -> &str {
        "Deploy the pushed image to the target's staging environment"
    }
    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        targets::of(ctx)?.stage(ctx, progress)
    }
    fn check(&self, ctx: &Ctx) -> Result<()> {
        let target = targets::of(ctx)?;
        target.check(ctx)?;
        secrets(&ctx.config_for(PymEnv::Staging)?)?;
        target.check_address(ctx, PymEnv::Staging)
    }
    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        targets::of(ctx)?.plan(ctx, Change::Stage, None)
    }
}

/// `accept-staging` and `accept-live`: the acceptance tests against an environment.
pub struct Accept(pub PymEnv);

impl Step for Accept {
    fn reach(&self) -> Reach {
        // accept-local is its own step (`steps::accept`); these test a target's
        // environment.
        Reach::Target
    }
    fn name(&self) -> &str {
        match self.0 {
            PymEnv::Staging => "accept-staging",
            PymEnv::Live => "accept-live",
            PymEnv::Local => "accept-local",
        }
    }
    fn about(&self) -> &str {
        match self.0 {
            PymEnv::Staging => "Run the acceptance tests against staging",
            _ => "Run the acceptance tests against live (in a deploy, a failure rolls back)",
        }
    }
    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        let config = ctx.config_for(self.0)?;
        // On a cloud target the environment may not exist before the run: say which it is.
        let addr = match targets::of(ctx).and_then(|t| t.address(ctx, self.0)) {
            Ok(a) => format!("{}:{}", a.host, a.port),
            Err(_) => format!("the {} environment's address", self.0),
        };
        let mut out = vec![
            match crate::steps::accept::acceptance_command(ctx, &config) {
                Some(cmd) => format!("run `{cmd}` against {addr} (PYM_ENV={})", self.0),
                None => {
                    format!("check {addr} answers (no acceptance tests: `accept_command` is empty)")
                }
            },
        ];
        if self.0 == PymEnv::Live {
            out.push(if config.rollback_on_failure {
                "if it fails, roll back to the previous version".into()
            } else {
                "if it fails, leave live as it is (rollback_on_failure: false)".into()
            });
        }
        Ok(out)
    }
    fn check(&self, ctx: &Ctx) -> Result<()> {
        crate::steps::accept::check_acceptance_command(ctx, &ctx.config_for(self.0)?)?;
        targets::of(ctx)?.check(ctx)
    }
    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let config = ctx.config_for(self.0)?;
        let target = targets::of(ctx)?;
        let addr = target.address(ctx, self.0)?;
        // A port-forward's local end is no address of the environment's.
        if addr.hold.is_none() {
            ctx.note_url(self.0, addr.url());
        }
        // Staging acceptance is recorded against the image staging ran before and after
        // the tests (a stage in between would have tested two images).
        let ledger = target.ledger().filter(|_| self.0 == PymEnv::Staging);
        let before = ledger.map(|l| l.staged(ctx)).transpose()?.flatten();
        let result = run_acceptance(ctx, &config, &addr, self.0, progress);
        if let (Ok(()), Some(l), Some(tested)) = (&result, ledger, &before) {
            match l.staged(ctx)? {
                Some(now) if now == *tested => l.record(ctx, Event::Accepted, &tested.version, Some(&tested.digest))?,
                _ => ctx.out.warn(&format!("staging changed while its acceptance tests ran: {} is not recorded as accepted", tested.version)),
            }
        }
        match (result, self.0) {
            (Ok(()), _) => Ok(format!(
                "{} on {}:{}",
                match crate::steps::accept::acceptance_command(ctx, &config) {
                    Some(_) => progress.tests().passed_note("acceptance tests"),
                    None => "no acceptance tests (`accept_command` is empty)".into(),
                },
                addr.host,
                addr.port
            )),
            // Only a deploy rolls back: a live acceptance run by hand only reports.
            (Err(e), PymEnv::Live)
                if config.rollback_on_failure && ctx.opts.deploying && !ctx.interrupted() =>
            {
                progress.message("live acceptance failed: rolling back");
                match targets::of(ctx)?.rollback(ctx, None, progress) {
                    Ok(note) => Err(e.context(format!("rolled back: {note}"))),
                    Err(rb) => Err(e.context(format!("and the rollback failed too: {rb:#}"))),
                }
            }
            (Err(e), _) => Err(e),
        }
    }
}

pub struct Promote;

impl Step for Promote {
    fn reach(&self) -> Reach {
        Reach::Target
    }
    fn changes(&self) -> bool {
        true
    }
    fn name(&self) -> &str {
        "promote"
    }
    fn about(&self) -> &str {
        "Make the staged version live (blue/green) and verify it serves"
    }
    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let target = targets::of(ctx)?;
        let staged = target
            .ledger()
            .map(|l| staged_and_accepted(ctx, l))
            .transpose()?;
        target.promote(ctx, staged.as_ref(), progress)
    }
    /// Before anything runs: a run that stages a version and promotes it must test it on
    /// staging in between.
    fn check(&self, ctx: &Ctx) -> Result<()> {
        if ctx.runs("stage") && !ctx.runs("accept-staging") {
            return Err(hinted(
                "this run stages a version and promotes it without its staging acceptance tests: live only ever serves a version that passed them",
                "drop `--skip accept-staging`, or stop at staging with `--to stage`",
            ));
        }
        let target = targets::of(ctx)?;
        let live = ctx.config_for(PymEnv::Live)?;
        if live.rollout.judges() {
            target
                .judged_by(ctx)
                .map_err(|e| e.context(live.at("rollout")))?;
        }
        target.check(ctx)?;
        secrets(&live)?;
        target.check_address(ctx, PymEnv::Live)?;
        // A deploy that would make live again what a rollback left (a standalone
        // promote asks for what staging runs by name, and is left to do so).
        match target.ledger() {
            Some(l) if !ctx.opts.redeploy && ctx.runs("stage") => refuse_rolled_back(ctx, l),
            _ => Ok(()),
        }
    }
    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        let target = targets::of(ctx)?;
        let staged = target
            .ledger()
            .map(|l| planned_staged(ctx, l))
            .transpose()?
            .flatten();
        target.plan(ctx, Change::Promote, staged.as_ref())
    }
}

/// Refuses a deploy of a version a rollback went away from (HEAD's), saying when and,
/// where this machine's history knows, why; `--redeploy` or a new commit is the way to
/// deploy it again.
fn refuse_rolled_back(ctx: &Ctx, l: &dyn Ledger) -> Result<()> {
    let version = ctx.version()?.to_string();
    let history = l.history(ctx)?;
    if !history.rolled_back_from(&version) {
        return Ok(());
    }
    let at = history
        .entries()
        .iter()
        .rev()
        .find(|e| e.event == Event::RolledBack && e.version == version)
        .map(|e| e.at);
    let when = at.map_or(String::new(), |t| {
        format!(" at {}", crate::version::fmt_utc(t))
    });
    // Why, from this machine's history: the last run that rolled live back from it.
    let records = crate::ops::state::history(&crate::ops::state::key(ctx.config()), |_| {})
        .unwrap_or_default();
    let why = records
        .iter()
        .rev()
        .find(|r| at.is_none_or(|t| r.started <= t))
        .and_then(|r| {
            let failed = |step: &str| {
                r.version == version
                    && r.steps
                        .iter()
                        .any(|s| s.name == step && s.outcome == "failed")
            };
            match (r.command.as_str(), failed("accept-live")) {
                (_, true) => Some(format!(
                    ": its live acceptance tests failed in a deploy by {}@{}",
                    r.user, r.host
                )),
                _ if failed("promote") => Some(format!(
                    ": its promote failed and was put back, in a run by {}@{}",
                    r.user, r.host
                )),
                ("rollback", _) => Some(format!(": `rollback` by {}@{}", r.user, r.host)),
                _ => None,
            }
        })
        .unwrap_or_default();
    Err(hinted(
        format!(
            "{version} was rolled back from{when}{why}; live does not go back to it by accident"
        ),
        "commit a fix (a new commit is a new version), or deploy this one again on purpose with `--redeploy`",
    ))
}

pub struct Rollback;

impl Step for Rollback {
    fn reach(&self) -> Reach {
        Reach::Target
    }
    fn changes(&self) -> bool {
        true
    }
    fn name(&self) -> &str {
        "rollback"
    }
    fn about(&self) -> &str {
        "Make the previous live version live again"
    }
    fn version_arg(&self) -> Option<&'static str> {
        Some("Go back to this previous version, even one a rollback left")
    }
    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        targets::of(ctx)?.rollback(ctx, ctx.opts.rollback_to.as_deref(), progress)
    }
    fn check(&self, ctx: &Ctx) -> Result<()> {
        let target = targets::of(ctx)?;
        if ctx.opts.rollback_to.is_some() && target.ledger().is_none() {
            return Err(hinted(
                format!(
                    "`rollback --to` is not available on the {} target yet",
                    ctx.config().deploy_target
                ),
                "run `rollback` without --to: it goes to the version live before",
            ));
        }
        target.check(ctx)?;
        secrets(&ctx.config_for(PymEnv::Live)?)?;
        target.check_address(ctx, PymEnv::Live)
    }
    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        targets::of(ctx)?.plan(ctx, Change::Rollback, None)
    }
}

pub struct Status;

impl Step for Status {
    fn reach(&self) -> Reach {
        Reach::Target
    }
    fn name(&self) -> &str {
        "status"
    }
    fn about(&self) -> &str {
        "Show what runs where: environment, version, state, since when"
    }
    fn check(&self, ctx: &Ctx) -> Result<()> {
        targets::of(ctx)?.check(ctx)
    }
    fn run(&self, ctx: &Ctx, _progress: &StepProgress<'_>) -> Result<String> {
        let table = targets::of(ctx)?
            .status(ctx)
            .context("cannot read the target's state")?;
        let n = table.rows.len();
        // With --json, stdout carries JSON lines only: a row is an event too.
        match ctx.out.json() {
            true => table.json().into_iter().for_each(|mut row| {
                row["event"] = serde_json::Value::String("status_row".into());
                ctx.out.data(&row.to_string());
            }),
            false => table.lines().iter().for_each(|l| ctx.out.data(l)),
        }
        let (one, many) = targets::of(ctx)?.units();
        Ok(if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        })
    }
}

//! The steps after `push`, on the configured target: `stage`, `accept-staging`,
//! `promote`, `accept-live`, and the commands `rollback` and `status`.

use anyhow::{Context, Result};

use crate::config::PymEnv;
use crate::ctx::Ctx;
use crate::ops::service::secrets;
use crate::output::StepProgress;
use crate::pipeline::{Reach, Step};
use crate::steps::accept::run_acceptance;
use crate::targets;

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
        targets::of(ctx)?.check(ctx)?;
        secrets(&ctx.config_for(PymEnv::Staging)?).map(drop)
    }
    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        targets::of(ctx)?.plan(ctx, "stage")
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
        let cmd = crate::steps::accept::acceptance_command(ctx, &config);
        let mut out = vec![format!("run `{cmd}` against {addr} (PYM_ENV={})", self.0)];
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
        targets::of(ctx)?.check(ctx)
    }
    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let config = ctx.config_for(self.0)?;
        let addr = targets::of(ctx).and_then(|t| t.address(ctx, self.0))?;
        let result = run_acceptance(ctx, &config, &addr, self.0, progress);
        match (result, self.0) {
            (Ok(()), _) => Ok(format!(
                "{} on {}:{}",
                progress.tests().passed_note("acceptance tests"),
                addr.host,
                addr.port
            )),
            // Only a deploy rolls back: a live acceptance run by hand only reports.
            (Err(e), PymEnv::Live)
                if config.rollback_on_failure && ctx.opts.deploying && !ctx.interrupted() =>
            {
                progress.message("live acceptance failed: rolling back");
                match targets::of(ctx)?.rollback(ctx, progress) {
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
        targets::of(ctx)?.promote(ctx, progress)
    }
    fn check(&self, ctx: &Ctx) -> Result<()> {
        targets::of(ctx)?.check(ctx)?;
        secrets(&ctx.config_for(PymEnv::Live)?).map(drop)
    }
    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        targets::of(ctx)?.plan(ctx, "promote")
    }
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
    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        targets::of(ctx)?.rollback(ctx, progress)
    }
    fn check(&self, ctx: &Ctx) -> Result<()> {
        targets::of(ctx)?.check(ctx)?;
        secrets(&ctx.config_for(PymEnv::Live)?).map(drop)
    }
    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        targets::of(ctx)?.plan(ctx, "rollback")
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

//! The pipeline: an ordered list of steps, run in a plain loop that stops at the first
//! failure and ends with a timing summary.
//!
//! A service's `xtask/src/main.rs` builds its pipeline from the standard steps and its
//! own, so the pipeline is versioned with the service.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use crate::output::{Outcome, StepProgress, StepReport};

/// What a step acts on. `--no-push` leaves out the steps that reach a registry or a
/// target, `--no-deploy` those that reach a target; a step that changes what it reaches
/// (`Step::changes`) takes the deploy lock when run alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// This machine and its engine only (test, build, accept-local, a team's lint).
    Local,
    /// The registry (push).
    Registry,
    /// The deploy target (stage, promote, rollback, the acceptance tests there, status).
    Target,
}

/// One step of the pipeline. `run` returns a short note for the summary.
pub trait Step {
    /// The step's name: its subcommand and its row in the summary.
    fn name(&self) -> &str;
    /// One line for `--help`.
    fn about(&self) -> &str;
    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String>;
    /// The actions `run` would take, for `--dry-run`. Reads, never changes anything.
    fn plan(&self, _ctx: &Ctx) -> Result<Vec<String>> {
        Ok(vec![self.about().to_string()])
    }
    /// What can be known to fail before anything runs: a secret not set, a target this
    /// build cannot deploy to, a Dockerfile that does not copy what `build` compiles.
    /// Every selected step is checked before the first one starts. Reads, never changes
    /// anything, and needs no engine.
    fn check(&self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }
    /// What the step acts on (by default this machine only).
    fn reach(&self) -> Reach {
        Reach::Local
    }
    /// The help of a `--to VERSION` argument, for a step that takes one (`rollback`).
    fn version_arg(&self) -> Option<&'static str> {
        None
    }
    /// Whether it changes what it reaches (pushes, stages, switches), rather than only
    /// reading it: run alone, such a step takes the deploy lock.
    fn changes(&self) -> bool {
        false
    }
}

/// A step made from a closure, for a team's own steps:
/// `pymdeploy::step("lint", "run clippy", |ctx, p| ...)`.
pub struct FnStep<F> {
    name: String,
    about: String,
    reach: Reach,
    changes: bool,
    f: F,
}

impl<F> FnStep<F> {
    /// Says what the step acts on and whether it changes it (`Reach::Local` and no
    /// change by default), so `--no-push`, `--no-deploy` and the deploy lock treat it
    /// like the standard steps that do the same.
    pub fn reaching(mut self, reach: Reach, changes: bool) -> FnStep<F> {
        (self.reach, self.changes) = (reach, changes);
        self
    }
}

impl<F: Fn(&Ctx, &StepProgress<'_>) -> Result<String>> Step for FnStep<F> {
    fn name(&self) -> &str {
        &self.name
    }
    fn about(&self) -> &str {
        &self.about
    }
    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        (self.f)(ctx, progress)
    }
    fn reach(&self) -> Reach {
        self.reach
    }
    fn changes(&self) -> bool {
        self.changes
    }
}

pub fn step<F: Fn(&Ctx, &StepProgress<'_>) -> Result<String>>(
    name: &str,
    about: &str,
    f: F,
) -> FnStep<F> {
    FnStep {
        name: name.to_string(),
        about: about.to_string(),
        reach: Reach::Local,
        changes: false,
        f,
    }
}

/// A team's step that runs a shell command (`sh -c`) in the service root, its output
/// streamed, a non-zero exit failing the pipeline; the version being deployed is in
/// `PYM_VERSION`. What `pymdeploy_xtask::command` declares.
pub struct ShellStep {
    pub name: String,
    pub about: String,
    pub run: String,
    pub reach: Reach,
    pub changes: bool,
}

impl Step for ShellStep {
    fn name(&self) -> &str {
        &self.name
    }
    fn about(&self) -> &str {
        &self.about
    }
    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        Ok(vec![format!(
            "run `sh -c {}` in {}",
            shell_words::quote(&self.run),
            ctx.root.display()
        )])
    }
    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let sh = xshell::Shell::new()?;
        let version = ctx.version().map(|v| v.to_string()).unwrap_or_default();
        let cmd = sh
            .cmd("sh")
            .args(["-c", &self.run])
            .env("PYM_VERSION", version);
        crate::ops::cmd::stream(cmd, &ctx.root, progress, false)
            .with_context(|| format!("`{}` failed", self.run))?;
        Ok(self.run.clone())
    }
    fn reach(&self) -> Reach {
        self.reach
    }
    fn changes(&self) -> bool {
        self.changes
    }
}

#[derive(Default)]
pub struct Pipeline {
    steps: Vec<Box<dyn Step>>,
    /// Run only when asked by name (`rollback`, `status`, a step not yet in `deploy`):
    /// each is a subcommand, none runs in `deploy`.
    commands: Vec<Box<dyn Step>>,
}

/// How a pipeline run ended.
pub struct RunResult {
    pub reports: Vec<StepReport>,
    pub error: Option<anyhow::Error>,
}

impl Pipeline {
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// Adds a command: a step that runs only when asked for by name, never in `deploy`.
    pub fn command(mut self, step: impl Step + 'static) -> Pipeline {
        self.commands.push(Box::new(step));
        self
    }

    /// Appends a step.
    pub fn step(self, step: impl Step + 'static) -> Pipeline {
        self.step_boxed(Box::new(step))
    }

    pub fn step_boxed(mut self, step: Box<dyn Step>) -> Pipeline {
        self.steps.push(step);
        self
    }

    pub fn command_boxed(mut self, step: Box<dyn Step>) -> Pipeline {
        self.commands.push(step);
        self
    }

    /// Inserts a step before the one named `before`; panics if there is none, since a
    /// pipeline is written by hand and a typo there should fail loudly.
    pub fn step_before(mut self, before: &str, step: impl Step + 'static) -> Pipeline {
        let i = self
            .steps
            .iter()
            .position(|s| s.name() == before)
            .unwrap_or_else(|| panic!("no step named `{before}` in the pipeline"));
        self.steps.insert(i, Box::new(step));
        self
    }

    /// The steps `deploy` runs, in order.
    pub fn steps(&self) -> impl Iterator<Item = &dyn Step> {
        self.steps.iter().map(|s| s.as_ref())
    }

    /// Every step and command: each is a subcommand.
    pub fn runnable(&self) -> impl Iterator<Item = &dyn Step> {
        self.steps.iter().chain(&self.commands).map(|s| s.as_ref())
    }

    pub fn names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name()).collect()
    }

    /// Runs the steps named in `selected`, in pipeline order, stopping at the first
    /// failure; later ones are reported as skipped. Steps in `done` (finished by the run
    /// being resumed) are skipped as done. `after` sees each step's report as it ends,
    /// for the journal.
    pub fn run(
        &self,
        ctx: &Ctx,
        selected: &[&str],
        done: &[String],
        mut after: impl FnMut(&StepReport),
    ) -> RunResult {
        let mut reports = Vec::new();
        let mut error = None;
        for s in self
            .steps
            .iter()
            .chain(&self.commands)
            .filter(|s| selected.contains(&s.name()))
        {
            let skipped = |note: &str| StepReport {
                name: s.name().to_string(),
                outcome: Outcome::Skipped,
                duration: Default::default(),
                note: note.to_string(),
                tail: Vec::new(),
            };
            if error.is_some() {
                reports.push(skipped(""));
                continue;
            }
            if done.iter().any(|d| d == s.name()) {
                ctx.out.event(serde_json::json!({"event": "step_skipped", "step": s.name(), "reason": "done in the resumed run"}));
                reports.push(skipped("done in the resumed run"));
                continue;
            }
            ctx.out
                .event(serde_json::json!({"event": "step_started", "step": s.name()}));
            let started = Instant::now();
            let progress = ctx.out.step(s.name());
            let result = s.run(ctx, &progress);
            // A step that finished despite an interrupt (a promote that completed its
            // switch and verification) is reported as done, which it is; the run stops
            // after it.
            let interrupted_after = result.is_ok() && ctx.interrupted();
            let (outcome, note) = match &result {
                Ok(note) => (Outcome::Ok, note.clone()),
                Err(e) => (Outcome::Failed, first_line(&format!("{e}"))),
            };
            let tail = match outcome {
                Outcome::Failed => progress.tail(crate::output::TAIL_LINES),
                _ => Vec::new(),
            };
            progress.finish(&outcome, &note);
            let report = StepReport {
                name: s.name().to_string(),
                outcome,
                duration: started.elapsed(),
                note,
                tail,
            };
            let event = if report.outcome == Outcome::Ok {
                "step_finished"
            } else {
                "step_failed"
            };
            let mut ev = serde_json::json!({"event": event, "step": report.name, "duration_ms": report.duration.as_millis() as u64, "note": ctx.out.mask(&report.note)});
            if let Err(e) = &result {
                ev["error"] = serde_json::Value::String(ctx.out.mask(&format!("{e:#}")));
            }
            ctx.out.event(ev);
            after(&report);
            reports.push(report);
            if interrupted_after {
                error = Some(
                    anyhow::Error::new(crate::error::Interrupted)
                        .context(format!("interrupted after `{}`, which finished", s.name())),
                );
            }
            if let Err(e) = result {
                let e = if ctx.interrupted()
                    && e.downcast_ref::<crate::error::Interrupted>().is_none()
                {
                    e.context(crate::error::Interrupted)
                } else {
                    e
                };
                error = Some(e.context(format!("step `{}` failed", s.name())));
            }
        }
        RunResult { reports, error }
    }

    /// Checks every selected step before any runs (see `Step::check`) and says every
    /// mistake found in one report. A check that fails because the engine cannot be
    /// reached is said last: the mistakes that need no engine (a config error, a missing
    /// secret, a dirty tree) are said first, so they are found and fixed on a machine
    /// without one.
    pub fn check(&self, ctx: &Ctx, selected: &[&str]) -> Result<()> {
        let mut found = Vec::new();
        let mut unreachable = None;
        for s in self
            .steps
            .iter()
            .chain(&self.commands)
            .filter(|s| selected.contains(&s.name()))
        {
            let misses = ctx.engine_misses();
            if let Err(e) = s.check(ctx) {
                if ctx.engine_misses() == misses {
                    found.push((s.name(), e));
                } else {
                    unreachable.get_or_insert((s.name(), e));
                }
            }
        }
        found.extend(unreachable);
        // The same mistake found by several steps (a missing secret, the engine) is said
        // once, for the first of them.
        let mut said = std::collections::HashSet::new();
        found.retain(|(_, e)| said.insert(format!("{e:#}")));
        if found.len() == 1 {
            let (name, e) = found.remove(0);
            return Err(e.context(format!("`{name}` cannot run, so nothing was started")));
        }
        let mut problems = crate::error::Problems::default();
        for (name, e) in found {
            problems.push(e.context(format!("`{name}` cannot run")));
        }
        problems.finish(", so nothing was started")
    }

    /// What each selected step would do, in order, without doing any of it.
    pub fn plan(&self, ctx: &Ctx, selected: &[&str]) -> Result<Vec<(String, Vec<String>)>> {
        self.steps
            .iter()
            .chain(&self.commands)
            .filter(|s| selected.contains(&s.name()))
            .map(|s| Ok((s.name().to_string(), s.plan(ctx)?)))
            .collect()
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > 100 {
        format!("{}…", line.chars().take(99).collect::<String>())
    } else {
        line.to_string()
    }
}

//! The one executor of every target's plan.
//!
//! A target observes its state, decides a list of typed actions (a pure function, unit
//! tested), and hands the list here. `execute` prints each action as it starts (the very
//! line `--dry-run` prints for it, from the same `Actor::describe`), runs it through the
//! target's `Actor`, and keeps the undo the actor returns. On a failure or Ctrl-C it
//! unwinds the undos in reverse order, saying each one, and the error names what was put
//! back. An action that `commits` (a verified switch) is kept: once it succeeds, what
//! came before it is no longer undone. Targets never write their own loop, undo or
//! interrupt handling.

use anyhow::Result;

use crate::ctx::Ctx;
use crate::error::Interrupted;
use crate::output::StepProgress;

/// Carries out one target's actions (its typed `Act`, decided before any is done).
pub trait Actor {
    type Act;
    /// The one line that says what `act` does: `--dry-run` prints it, and the run prints
    /// it as the action starts.
    fn describe(&self, act: &Self::Act) -> String;
    /// A verified switch: once it succeeded, the actions before it are kept whatever
    /// happens after.
    fn commits(&self, _act: &Self::Act) -> bool {
        false
    }
    /// Whether Ctrl-C may cut `act` short: only a wait (for health, a rollout, a pull)
    /// says so. Any other action runs whole, so that what it made has its undo recorded
    /// before the interrupt is answered.
    fn waits(&self, _act: &Self::Act) -> bool {
        false
    }
    /// Does `act`; returns what undoes it, if anything does. Waits go through `Ctx::wait`,
    /// so Ctrl-C ends them at once and the executor unwinds.
    fn run(
        &mut self,
        ctx: &Ctx,
        act: &Self::Act,
        progress: &StepProgress<'_>,
    ) -> Result<Option<Self::Act>>;
}

/// The lines of a plan, as `--dry-run` prints them and `execute` says them.
pub fn describe<R: Actor>(actor: &R, plan: &[R::Act]) -> Vec<String> {
    plan.iter().map(|a| actor.describe(a)).collect()
}

/// What a failed plan put back.
#[derive(Debug, Default)]
pub struct Unwound {
    /// The undos that ran, in the order they ran.
    pub done: Vec<String>,
    /// Undos that failed, with why: what is left as it was after the failure.
    pub failed: Vec<String>,
}

/// Runs `plan` through `actor`; on a failure or an interrupt, undoes what it did (see the
/// module's doc). The error carries `Unwound` in its chain's context line, and `Ctrl-C`
/// keeps `Interrupted` in the chain (exit 130).
pub fn execute<R: Actor>(
    ctx: &Ctx,
    actor: &mut R,
    plan: &[R::Act],
    progress: &StepProgress<'_>,
) -> Result<()> {
    let mut undo: Vec<R::Act> = Vec::new();
    // Once a verified switch is made, the rest (its record, retiring the old version)
    // finishes it: Ctrl-C no longer stops the plan.
    let mut committed = false;
    for act in plan {
        let interrupted = || ctx.interrupted() && !committed;
        let result = match (interrupted(), failpoint(act_index(plan, act))) {
            (true, _) => Err(anyhow::Error::new(Interrupted)),
            (_, Some(injected)) => Err(injected),
            (false, None) => {
                progress.line(&format!("- {}", actor.describe(act)));
                let _whole = (committed || !actor.waits(act)).then(|| ctx.uninterrupted());
                actor.run(ctx, act, progress)
            }
        };
        // An action run whole may have ended after Ctrl-C: answer it now, its undo kept.
        let result = result.and_then(|u| match interrupted() && !actor.commits(act) {
            true => {
                undo.extend(u);
                Err(anyhow::Error::new(Interrupted))
            }
            false => Ok(u),
        });
        match result {
            Ok(_) if actor.commits(act) => {
                committed = true;
                undo.clear();
            }
            Ok(u) => undo.extend(u),
            Err(e) => {
                let unwound = unwind(ctx, actor, undo, progress);
                let e = with_unwound(e, &unwound);
                return Err(match committed {
                    true => e.context(Kept),
                    false => e,
                });
            }
        }
    }
    Ok(())
}

/// In the chain of a plan's error when its verified switch was made and kept: what
/// failed came after it (a record, retiring the old version).
#[derive(Debug)]
pub struct Kept;

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the switch was verified and is kept")
    }
}

/// Whether `e` is a plan's error after its verified switch (see `Kept`).
pub fn kept(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Kept>().is_some()
}

/// The position of `act` in `plan`, from 1.
fn act_index<A>(plan: &[A], act: &A) -> usize {
    plan.iter()
        .position(|a| std::ptr::eq(a, act))
        .map_or(0, |i| i + 1)
}

/// The environment variable that makes the executor fail where the action after the one
/// of that position (from 1) would start, as if that action's call had failed: how the
/// tests show that a failure after any action of any target's plan is put back (and
/// that a verified switch is kept). A test sets it for one run.
pub const FAILPOINT: &str = "PYMDEPLOY_FAIL_AFTER_ACTION";

fn failpoint(index: usize) -> Option<anyhow::Error> {
    let after: usize = std::env::var(FAILPOINT).ok()?.parse().ok()?;
    (after + 1 == index)
        .then(|| anyhow::anyhow!("failure injected after action {after} ({FAILPOINT})"))
}

/// Runs the undos, newest first, to the end even after Ctrl-C (`Ctx::uninterrupted`).
fn unwind<R: Actor>(
    ctx: &Ctx,
    actor: &mut R,
    undo: Vec<R::Act>,
    progress: &StepProgress<'_>,
) -> Unwound {
    let mut unwound = Unwound::default();
    let _whole = ctx.uninterrupted();
    for act in undo.into_iter().rev() {
        let line = actor.describe(&act);
        progress.line(&format!("- undo: {line}"));
        match actor.run(ctx, &act, progress) {
            Ok(_) => unwound.done.push(line),
            Err(e) => unwound.failed.push(format!("{line}: {e:#}")),
        }
    }
    unwound
}

fn with_unwound(e: anyhow::Error, unwound: &Unwound) -> anyhow::Error {
    match (unwound.done.is_empty(), unwound.failed.is_empty()) {
        (true, true) => e,
        (_, true) => e.context(format!("put back: {}", unwound.done.join("; "))),
        (_, false) => e.context(format!(
            "could not put back: {} (put back: {})",
            unwound.failed.join("; "),
            if unwound.done.is_empty() {
                "nothing".into()
            } else {
                unwound.done.join("; ")
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    enum T {
        Make(&'static str),
        Switch,
        Fail,
        Remove(&'static str),
        SwitchBack,
    }

    #[derive(Default)]
    struct Log(Vec<T>);

    impl Actor for Log {
        type Act = T;
        fn describe(&self, act: &T) -> String {
            format!("{act:?}")
        }
        fn commits(&self, act: &T) -> bool {
            matches!(act, T::Switch)
        }
        fn run(&mut self, _ctx: &Ctx, act: &T, _p: &StepProgress<'_>) -> Result<Option<T>> {
            self.0.push(act.clone());
            match act {
                T::Make(n) => Ok(Some(T::Remove(n))),
                T::Switch => Ok(Some(T::SwitchBack)),
                T::Fail => anyhow::bail!("it failed"),
                _ => Ok(None),
            }
        }
    }

    fn ctx() -> Ctx {
        crate::ctx::scratch("plan")
    }

    #[test]
    fn a_failure_unwinds_in_reverse_and_says_what_it_put_back() {
        let ctx = ctx();
        let progress = ctx.out.step("t");
        let mut log = Log::default();
        let e = execute(
            &ctx,
            &mut log,
            &[T::Make("a"), T::Make("b"), T::Fail, T::Make("c")],
            &progress,
        )
        .unwrap_err();
        assert_eq!(
            log.0,
            [
                T::Make("a"),
                T::Make("b"),
                T::Fail,
                T::Remove("b"),
                T::Remove("a")
            ]
        );
        assert_eq!(
            format!("{e:#}"),
            "put back: Remove(\"b\"); Remove(\"a\"): it failed"
        );
    }

    #[test]
    fn a_verified_switch_is_kept() {
        let ctx = ctx();
        let progress = ctx.out.step("t");
        let mut log = Log::default();
        assert!(
            execute(
                &ctx,
                &mut log,
                &[T::Make("a"), T::Switch, T::Make("b"), T::Fail],
                &progress
            )
            .is_err()
        );
        assert_eq!(
            log.0,
            [
                T::Make("a"),
                T::Switch,
                T::Make("b"),
                T::Fail,
                T::Remove("b")
            ],
            "what the switch committed stays"
        );
        let mut log = Log::default();
        execute(&ctx, &mut log, &[T::Make("a"), T::Switch], &progress).unwrap();
        assert_eq!(log.0, [T::Make("a"), T::Switch]);
        assert_eq!(
            describe(&log, &[T::Make("a"), T::Switch]),
            ["Make(\"a\")", "Switch"]
        );
    }
}

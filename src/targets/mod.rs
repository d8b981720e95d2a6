//! Deploy targets: where `stage`, `promote` and `rollback` put the service. One file per
//! target; adding one touches that file and the match arms here.

#[cfg(feature = "aws-beanstalk")]
pub mod beanstalk;
pub mod docker;

use anyhow::Result;

use crate::config::{PymEnv, TargetKind};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::output::StepProgress;

/// Where an environment answers: host and port for the acceptance tests.
pub struct Address {
    pub host: String,
    pub port: u16,
}

fn unsupported(kind: TargetKind) -> anyhow::Error {
    if kind == TargetKind::AwsBeanstalk {
        return hinted(
            "this pymdeploy was built without the aws-beanstalk feature",
            "run the service's own pipeline, `cargo xtask <command>` (its xtask enables the feature), or install pymdeploy with `--features aws-beanstalk`",
        );
    }
    hinted(
        format!("the {kind} target cannot stage or promote yet"),
        "use `deploy_target: docker`, or stop the pipeline before `stage` (`cargo xtask deploy` with a pipeline that ends at push)",
    )
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

pub fn status(ctx: &Ctx) -> Result<Vec<String>> {
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

//! `test`: the service's unit tests. Their failure stops the pipeline before anything
//! is built.

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use crate::ops;
use crate::output::StepProgress;
use crate::pipeline::Step;

pub struct Test;

impl Step for Test {
    fn name(&self) -> &str {
        "test"
    }

    fn about(&self) -> &str {
        "Run the unit tests (`test_command`)"
    }

    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        Ok(vec![format!(
            "run `{}` in {}",
            unit_test_command(ctx),
            ctx.root.display()
        )])
    }

    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let command = unit_test_command(ctx);
        let sh = xshell::Shell::new()?;
        let cmd = ops::cmd::from_config(&sh, &command)?;
        let limit = (
            "test_timeout",
            std::time::Duration::from_secs(ctx.config().test_timeout),
        );
        ops::cmd::stream_within(cmd, &ctx.root, progress, false, Some(limit))
            .context("the unit tests failed")?;
        let t = progress.tests();
        Ok(format!("{} ({command})", t.passed_note("tests")))
    }
}

/// `test_command`, or the default for the kind of repository: `cargo test` where there
/// is a Cargo.toml, PyMacaron's `test/` directory under pytest otherwise.
pub fn unit_test_command(ctx: &Ctx) -> String {
    match &ctx.config().test_command {
        Some(c) => c.clone(),
        None if ctx.root.join("Cargo.toml").is_file() => "cargo test".into(),
        None => "python3 -m pytest -q test".into(),
    }
}

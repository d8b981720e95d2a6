//! `test`: the service's unit tests. Their failure stops the pipeline before anything
//! is built.

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use crate::error::hinted;
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
        Ok(vec![match unit_test_command(ctx) {
            Some(cmd) => format!("run `{cmd}` in {}", ctx.root.display()),
            None => "no unit tests (`test_command` is empty)".into(),
        }])
    }

    /// Before the first step: the command can start, and the default's `test/` is there.
    fn check(&self, ctx: &Ctx) -> Result<()> {
        let Some(command) = unit_test_command(ctx) else {
            return Ok(());
        };
        let fix = "set `test_command` to how the service runs its unit tests, or `test_command: \"\"` for none";
        let default_dir = (command == DEFAULT_PYTHON).then_some("test");
        check_command(
            ctx,
            ctx.config(),
            "test_command",
            &command,
            default_dir,
            fix,
        )
    }

    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let Some(command) = unit_test_command(ctx) else {
            return Ok("no unit tests (`test_command` is empty)".into());
        };
        if command.split_whitespace().next() == Some("cargo") {
            claim_target_dir(ctx, progress)?;
        }
        let sh = xshell::Shell::new()?;
        let cmd = ops::cmd::from_config(&sh, &command)?;
        let limit = (
            "test_timeout",
            std::time::Duration::from_secs(ctx.config().test_timeout.get()),
        );
        ops::cmd::stream_within(cmd, &ctx.root, progress, false, Some(limit))
            .context("the unit tests failed")?;
        let t = progress.tests();
        Ok(format!("{} ({command})", t.passed_note("tests")))
    }
}

/// `test_command`, or the default for the kind of repository: `cargo test` where there
/// is a Cargo.toml, PyMacaron's `test/` directory under pytest otherwise.
pub fn unit_test_command(ctx: &Ctx) -> Option<String> {
    match &ctx.config().test_command {
        Some(c) if c.trim().is_empty() => None,
        Some(c) => Some(c.clone()),
        None if ctx.root.join("Cargo.toml").is_file() => Some("cargo test".into()),
        None => Some(DEFAULT_PYTHON.into()),
    }
}

const DEFAULT_PYTHON: &str = "python3 -m pytest -q test";

/// Makes cargo build this checkout's tests. A target directory shared between checkouts
/// (`CARGO_TARGET_DIR`, `build.target-dir`) holds test binaries cargo may judge fresh for
/// another checkout of the same package: its fingerprints read source paths relative to
/// the package, and their times. So the checkout that last ran the package's tests is
/// written in the target directory, and when it was another one (or is unknown), this checkout's
/// entry files are touched: cargo compiles the service's own crates again, its
/// dependencies stay shared.
fn claim_target_dir(ctx: &Ctx, progress: &StepProgress<'_>) -> Result<()> {
    let sh = xshell::Shell::new()?;
    sh.change_dir(&ctx.root);
    let meta = xshell::cmd!(sh, "cargo metadata --format-version 1 --no-deps")
        .quiet()
        .ignore_stderr()
        .read()
        .context("cannot read the service's cargo metadata")?;
    let meta: serde_json::Value =
        serde_json::from_str(&meta).context("cargo metadata printed no JSON")?;
    let Some(target_dir) = meta["target_directory"].as_str() else {
        return Ok(());
    };
    let root = ctx.root.canonicalize().unwrap_or_else(|_| ctx.root.clone());
    // Kept per package: only checkouts of one package get the same unit hashes.
    let package = meta["packages"][0]["name"].as_str().unwrap_or("service");
    let owner_file = std::path::Path::new(target_dir).join(format!(".pym-tests-owner-{package}"));
    let owner = std::fs::read_to_string(&owner_file).ok();
    if owner.as_deref() != Some(&*root.to_string_lossy()) {
        let entries: Vec<&str> = meta["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["targets"].as_array().into_iter().flatten())
            .filter_map(|t| t["src_path"].as_str())
            .filter(|p| std::path::Path::new(p).starts_with(&root))
            .collect();
        if owner.is_some() {
            progress.message(&format!(
                "{target_dir} last ran another checkout's tests: building this one's"
            ));
        }
        for entry in entries {
            std::fs::File::options()
                .append(true)
                .open(entry)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()))
                .with_context(|| format!("cannot touch {entry}"))?;
        }
    }
    std::fs::create_dir_all(target_dir).with_context(|| format!("cannot create {target_dir}"))?;
    std::fs::write(&owner_file, root.to_string_lossy().as_bytes())
        .with_context(|| format!("cannot write {}", owner_file.display()))
}

/// Before the first step: a command from config (`key`, run as `command`) can start:
/// unset, its default's directory (`default_dir`) is there; its program is found. The
/// error names the key's line and `fix`.
pub fn check_command(
    ctx: &Ctx,
    config: &crate::config::Config,
    key: &str,
    command: &str,
    default_dir: Option<&str>,
    fix: &str,
) -> Result<()> {
    let unset = config.is_unset(key);
    if let Some(dir) = default_dir.filter(|d| unset && !ctx.root.join(d).is_dir()) {
        return Err(hinted(
            format!(
                "{}: no `{key}`, and no {dir}/ for the default `{command}`",
                config.at(key)
            ),
            fix,
        ));
    }
    ops::cmd::check_program(&ctx.root, command).map_err(|e| {
        hinted(
            format!("{}: `{key}` `{command}` cannot run: {e}", config.at(key)),
            fix,
        )
    })
}

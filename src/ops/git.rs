//! Git, through the `git` command: the commit a version names, and whether the tree is
//! clean.

use std::path::Path;

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::error::hinted;

/// What a version is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub sha: String,
    pub commit_count: u64,
    /// Committer time, seconds since the epoch.
    pub time: i64,
    pub dirty: bool,
}

pub fn head(root: &Path) -> Result<Head> {
    let sh = Shell::new()?;
    sh.change_dir(root);
    let sha = cmd!(sh, "git rev-parse HEAD").quiet().ignore_stderr().read().map_err(|_| {
        hinted(
            format!("{} is not a git repository with a commit", root.display()),
            "versions are made from git history: run `git init && git add -A && git commit -m init`",
        )
    })?;
    let count: u64 = cmd!(sh, "git rev-list --count HEAD")
        .quiet()
        .read()
        .context("cannot count commits")?
        .trim()
        .parse()
        .context("`git rev-list --count` printed something that is not a number")?;
    let time: i64 = cmd!(sh, "git show -s --format=%ct HEAD")
        .quiet()
        .read()
        .context("cannot read the commit time")?
        .trim()
        .parse()
        .context("`git show --format=%ct` printed something that is not a number")?;
    let status = cmd!(sh, "git status --porcelain --untracked-files=normal")
        .quiet()
        .read()
        .context("cannot run `git status`")?;
    Ok(Head {
        sha: sha.trim().to_string(),
        commit_count: count,
        time,
        dirty: !status.trim().is_empty(),
    })
}

/// The repository's first commit (the oldest root, abbreviated to 12 hex digits): the
/// same in every clone, different between repositories.
pub fn root_commit(root: &Path) -> Result<String> {
    let sh = Shell::new()?;
    sh.change_dir(root);
    let roots = cmd!(sh, "git rev-list --max-parents=0 HEAD")
        .quiet()
        .ignore_stderr()
        .read()
        .context("cannot find the repository's first commit")?;
    let first = roots.lines().last().unwrap_or_default().trim();
    Ok(first.chars().take(12).collect())
}

/// Files `git status` reports as changed, for the dirty-tree error.
pub fn changed_files(root: &Path) -> Result<Vec<String>> {
    let sh = Shell::new()?;
    sh.change_dir(root);
    let status = cmd!(sh, "git status --porcelain --untracked-files=normal")
        .quiet()
        .read()?;
    Ok(status
        .lines()
        .map(|l| l.get(3..).unwrap_or(l).to_string())
        .collect())
}

/// `git init` and a first commit of everything in `root`. Uses a neutral identity only
/// when none is configured, so a developer's own name is kept where they have one.
pub fn init_and_commit(root: &Path, message: &str) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(root);
    cmd!(sh, "git init --quiet --initial-branch=main")
        .quiet()
        .run()
        .context("cannot run `git init`")?;
    cmd!(sh, "git add -A")
        .quiet()
        .run()
        .context("cannot run `git add`")?;
    let has_identity = cmd!(sh, "git config user.email")
        .quiet()
        .ignore_status()
        .read()
        .is_ok_and(|s| !s.trim().is_empty());
    let mut c = cmd!(sh, "git commit --quiet --no-verify -m {message}").quiet();
    if !has_identity {
        c = c
            .env("GIT_AUTHOR_NAME", "pymdeploy")
            .env("GIT_AUTHOR_EMAIL", "pymdeploy@localhost");
        c = c
            .env("GIT_COMMITTER_NAME", "pymdeploy")
            .env("GIT_COMMITTER_EMAIL", "pymdeploy@localhost");
    }
    c.run().context("cannot make the first commit")?;
    Ok(())
}

//! `build`: the service's production image, tagged `<docker_repo>/<name>:<version>`.
//!
//! An image already built for the same commit (found by tag and checked by its
//! `org.pymacaron.commit` label, `<name>/<sha>`) is reused unless `--force-build`. For a Rust service
//! (`rust_binary` set) the binary is compiled on the host with cargo, which keeps its
//! incremental cache, and copied to `.pym/dist/` for the Dockerfile to `COPY`.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};

use crate::ctx::Ctx;
use crate::ops::{self, docker::human_bytes};
use crate::output::StepProgress;
use crate::pipeline::Step;

/// Where a compiled binary is placed for the Dockerfile, relative to the service root.
pub const DIST_DIR: &str = ".pym/dist";

pub struct Build;

impl Step for Build {
    fn name(&self) -> &str {
        "build"
    }

    fn about(&self) -> &str {
        "Build the service's docker image, tagged with the version"
    }

    fn plan(&self, ctx: &Ctx) -> Result<Vec<String>> {
        let config = ctx.config();
        let tag = ctx.image_tag()?;
        let mut out = Vec::new();
        if let Some(bin) = &config.rust_binary {
            out.push(format!("compile `cargo build --release --bin {bin}` and copy the binary to {DIST_DIR}/{bin}"));
        }
        out.push(format!(
            "build image {tag} from {} (reused if already built for commit {})",
            config.dockerfile,
            ctx.version()?.sha6()
        ));
        Ok(out)
    }

    fn check(&self, ctx: &Ctx) -> Result<()> {
        let config = ctx.config();
        let text = ops::docker::check_dockerfile(&ctx.root, &config.dockerfile)?;
        if let Some(bin) = &config.rust_binary {
            check_binary_is_copied(&config.dockerfile, &text, bin)?;
        }
        // The version the image is tagged with: a dirty tree is refused here, before
        // the unit tests, unless allowed.
        ctx.version()?;
        // An engine that cannot be reached fails the run before its unit tests.
        ctx.docker().map(drop)
    }

    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let config = ctx.config();
        // Before anything slow: no Dockerfile, no point compiling.
        self.check(ctx)?;
        let version = ctx.version()?.clone();
        let tag = ctx.image_tag()?;
        let docker = ctx.docker()?;
        if !ctx.opts.force_build
            && !version.dirty
            && let Some(labels) = ctx.block_on(ops::docker::image_labels(docker, &tag))?
            && labels.get(ops::service::LABEL_COMMIT)
                == Some(&format!("{}/{}", ctx.config().name, version.sha))
        {
            ctx.set_built_image(tag.clone());
            return Ok(format!("reused {tag}, already built for this commit"));
        }
        if let Some(bin) = &config.rust_binary {
            progress.message(&format!("cargo build --release --bin {bin}"));
            compile_rust_binary(ctx, bin, config.rust_target.as_deref(), progress)?;
        }
        let mut build_args = HashMap::from([("PYM_VERSION".to_string(), version.to_string())]);
        if let Some(base) = &config.docker_base {
            build_args.insert("PYM_BASE".into(), base.clone());
        }
        // One label: each is a build step of its own in the classic builder. The version
        // is the tag and the name is the repository.
        let labels = HashMap::from([(
            ops::service::LABEL_COMMIT.to_string(),
            format!("{}/{}", config.name, version.sha),
        )]);
        let req = ops::docker::BuildRequest {
            root: &ctx.root,
            dockerfile: &config.dockerfile,
            tag: &tag,
            build_args,
            labels,
        };
        let built = ctx.wait(ops::docker::build(docker, req, progress))?;
        ctx.set_built_image(tag.clone());
        Ok(format!(
            "built {tag} from {} files, {}",
            built.context_files,
            human_bytes(built.context_bytes)
        ))
    }
}

/// `rust_binary` makes `build` compile on the host for the Dockerfile to copy from
/// `.pym/dist/`: a Dockerfile that does not (one that compiles in a build stage of its
/// own) would ship something else, so that is refused before compiling anything.
fn check_binary_is_copied(dockerfile: &str, text: &str, bin: &str) -> Result<()> {
    if !dist_copies(text).is_empty() {
        return Ok(());
    }
    let stages = dockerfile_stages(text);
    let why = if stages > 1 {
        format!(" (it has {stages} stages: it builds the service itself)")
    } else {
        String::new()
    };
    Err(crate::error::hinted(
        format!(
            "{dockerfile} does not copy {DIST_DIR}/{bin}, the binary `rust_binary: {bin}` compiles on the host{why}"
        ),
        format!(
            "remove `rust_binary` from pym-config.yaml when the Dockerfile compiles the service, or add `COPY {DIST_DIR}/{bin} /usr/local/bin/{bin}` to it"
        ),
    ))
}

/// What a Dockerfile's `COPY` and `ADD` lines take from `.pym/dist/`: the word after it
/// on each such line (empty when the directory is copied whole).
pub fn dist_copies(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            l.get(..5).is_some_and(|w| w.eq_ignore_ascii_case("COPY "))
                || l.get(..4).is_some_and(|w| w.eq_ignore_ascii_case("ADD "))
        })
        .filter_map(|l| {
            l.split_once(DIST_DIR).map(|(_, rest)| {
                rest.trim_start_matches('/')
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
            })
        })
        .collect()
}

/// How many stages (`FROM` lines) a Dockerfile has.
pub fn dockerfile_stages(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            l.trim_start()
                .get(..5)
                .is_some_and(|w| w.eq_ignore_ascii_case("FROM "))
        })
        .count()
}

/// `cargo build --release` of one binary, then a copy into `.pym/dist/`.
///
/// Two checkouts of one package sharing a target directory (a shared `CARGO_TARGET_DIR`,
/// two clones of a service) get the same unit hash from cargo, whose fingerprint reads
/// source paths relative to the package and their times: cargo can judge the other
/// checkout's binary fresh and hand it back. So the binary's owner (the checkout that
/// built it) is written beside it, and a binary cargo calls fresh that this checkout did
/// not build is built again, after touching the entry file cargo watches.
fn compile_rust_binary(
    ctx: &Ctx,
    bin: &str,
    target: Option<&str>,
    progress: &StepProgress<'_>,
) -> Result<()> {
    let root = ctx
        .root
        .canonicalize()
        .unwrap_or_else(|_| ctx.root.clone())
        .display()
        .to_string();
    let mut artifact = cargo_build(ctx, bin, target, progress)?;
    let owner_file = format!("{}.pym-owner", artifact.executable);
    let owner = std::fs::read_to_string(&owner_file).ok();
    if artifact.fresh && owner.as_deref() != Some(root.as_str()) {
        progress.message(&format!(
            "{} was last built from another checkout; building it again from {root}",
            artifact.executable
        ));
        let entry = ctx.root.join(&artifact.src_path);
        std::fs::File::options()
            .append(true)
            .open(&entry)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .with_context(|| format!("cannot touch {}", entry.display()))?;
        artifact = cargo_build(ctx, bin, target, progress)?;
    }
    let executable = &artifact.executable;
    let dist = ctx.root.join(DIST_DIR);
    std::fs::create_dir_all(&dist).with_context(|| format!("cannot create {}", dist.display()))?;
    let dest = dist.join(bin);
    // Copy through a temporary name so a half-written binary is never picked up; remove
    // it if the copy fails (a full disk, a file size limit).
    let tmp = dist.join(format!(".{bin}.tmp"));
    if let Err(e) = std::fs::copy(executable, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot copy {executable} to {}", tmp.display()));
    }
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
    std::fs::write(&owner_file, &root).with_context(|| format!("cannot write {owner_file}"))?;
    Ok(())
}

/// What cargo said of the binary it built.
struct Artifact {
    executable: String,
    /// Cargo reused it without compiling.
    fresh: bool,
    /// The binary's entry file, as cargo watches it.
    src_path: String,
}

fn cargo_build(
    ctx: &Ctx,
    bin: &str,
    target: Option<&str>,
    progress: &StepProgress<'_>,
) -> Result<Artifact> {
    let sh = xshell::Shell::new()?;
    let target_args: Vec<&str> = match target {
        Some(t) => vec!["--target", t],
        None => vec![],
    };
    let cmd = xshell::cmd!(
        sh,
        "cargo build --release --bin {bin} {target_args...} --message-format=json-render-diagnostics"
    );
    let stdout = ops::cmd::stream(cmd, &ctx.root, progress, true)
        .with_context(|| format!("cannot compile the binary `{bin}`"))?;
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == bin)
        .filter_map(|v| {
            Some(Artifact {
                executable: v["executable"].as_str()?.to_string(),
                fresh: v["fresh"].as_bool().unwrap_or(false),
                src_path: v["target"]["src_path"].as_str()?.to_string(),
            })
        })
        .next_back()
        .ok_or_else(|| anyhow!("cargo built no executable named `{bin}`: is `rust_binary` in pym-config.yaml the name of a [[bin]]?"))
}

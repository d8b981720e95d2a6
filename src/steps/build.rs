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
        let docker = ctx.docker()?;
        if self.reusable(ctx)?.is_none() {
            check_bases(ctx, docker, &text)?;
        }
        Ok(())
    }

    fn run(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let config = ctx.config();
        // Before anything slow: no Dockerfile, no point compiling.
        self.check(ctx)?;
        let version = ctx.version()?.clone();
        let tag = ctx.image_tag()?;
        let docker = ctx.docker()?;
        if let Some(tag) = self.reusable(ctx)? {
            ctx.set_built_image(tag.clone());
            return Ok(format!("reused {tag}, already built for this commit"));
        }
        if let Some(bin) = &config.rust_binary {
            progress.message(&format!("cargo build --release --bin {bin}"));
            compile_rust_binary(ctx, bin, config.rust_target.as_deref(), progress)?;
        }
        let text = ops::docker::check_dockerfile(&ctx.root, &config.dockerfile)?;
        // Only the arguments the Dockerfile declares: the engine warns of any other.
        let declared = declared_args(&text);
        let build_args: HashMap<String, String> = build_args(ctx)?
            .into_iter()
            .filter(|(k, _)| declared.contains(k))
            .collect();
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

impl Build {
    /// The image already built for this commit, reused unless `--force-build` or the tree
    /// is dirty.
    fn reusable(&self, ctx: &Ctx) -> Result<Option<String>> {
        let version = ctx.version()?;
        if ctx.opts.force_build || version.dirty {
            return Ok(None);
        }
        let tag = ctx.image_tag()?;
        let labels = ctx.wait(ops::docker::image_labels(ctx.docker()?, &tag))?;
        let this = format!("{}/{}", ctx.config().name, version.sha);
        Ok(
            (labels.and_then(|l| l.get(ops::service::LABEL_COMMIT).cloned()) == Some(this))
                .then_some(tag),
        )
    }
}

/// The build arguments pymdeploy gives: `PYM_VERSION`, and `PYM_BASE` from `docker_base`.
fn build_args(ctx: &Ctx) -> Result<HashMap<String, String>> {
    let mut args = HashMap::from([("PYM_VERSION".to_string(), ctx.version()?.to_string())]);
    if let Some(base) = &ctx.config().docker_base {
        args.insert("PYM_BASE".into(), base.clone());
    }
    Ok(args)
}

/// Refuses a Dockerfile whose base images the engine neither has nor can pull, naming
/// each with its line and what the engine said, and the images it does have.
fn check_bases(ctx: &Ctx, docker: &bollard::Docker, text: &str) -> Result<()> {
    let config = ctx.config();
    let mut missing = Vec::new();
    for (line, image) in dockerfile_bases(text, &build_args(ctx)?) {
        if ctx
            .wait(ops::docker::image_labels(docker, &image))?
            .is_some()
        {
            continue;
        }
        let host = ops::registry::registry_of(&image);
        let credentials = ops::registry::credentials_for(&host).ok().flatten();
        if let Err(why) = ctx.wait(ops::docker::pullable(docker, &image, credentials.as_ref())) {
            missing.push(format!("{}:{line}: `{image}`: {why:#}", config.dockerfile));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let have = ctx.wait(ops::docker::base_images(docker))?;
    let have = match have.is_empty() {
        true => "none".to_string(),
        false => have.join(", "),
    };
    let rust = match &config.rust_binary {
        None if ctx.root.join("Cargo.toml").is_file() => {
            "; a Rust service can compile on this machine instead: set `rust_binary` and use a one-stage Dockerfile that copies .pym/dist/<binary> (README: \"A Rust service\")"
        }
        _ => "",
    };
    Err(crate::error::hinted(
        format!(
            "the engine at {} has not got these base images and cannot pull them:\n    {}",
            ctx.engine()?.describe(),
            missing.join("\n    ")
        ),
        format!(
            "base the Dockerfile on an image the engine has ({have}), set `docker_base` when the Dockerfile takes `ARG PYM_BASE`, or load the image into the engine (`docker load`){rust}"
        ),
    ))
}

/// The names of the build arguments a Dockerfile declares (`ARG NAME[=default]`).
pub fn declared_args(text: &str) -> Vec<String> {
    instructions(text)
        .filter(|(_, word, _)| word.eq_ignore_ascii_case("ARG"))
        .filter_map(|(_, _, rest)| {
            let name = rest.split_whitespace().next()?;
            Some(name.split('=').next().unwrap_or(name).to_string())
        })
        .collect()
}

/// A Dockerfile's instructions: the line each starts on, its word and the rest, with
/// continuation lines joined and comments left out.
fn instructions(text: &str) -> impl Iterator<Item = (usize, String, String)> + '_ {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (start, mut joined) = current.take().unwrap_or((i + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                current = Some((start, joined));
            }
            None => {
                joined.push_str(trimmed);
                out.push((start, joined));
            }
        }
    }
    out.extend(current);
    out.into_iter().filter_map(|(line, text)| {
        let (word, rest) = text.trim().split_once(char::is_whitespace)?;
        Some((line, word.to_string(), rest.trim().to_string()))
    })
}

/// The base images of a Dockerfile's stages as `(line, image)`: each `FROM`'s image with
/// the build arguments (else the `ARG` defaults before the first `FROM`) put in; not
/// `scratch`, not an earlier stage, not one whose arguments stay unknown.
pub fn dockerfile_bases(text: &str, args: &HashMap<String, String>) -> Vec<(usize, String)> {
    let mut known = HashMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut seen_from = false;
    for (line, word, rest) in instructions(text) {
        if word.eq_ignore_ascii_case("ARG") && !seen_from {
            let decl = rest.split_whitespace().next().unwrap_or("");
            let (name, default) = decl.split_once('=').unwrap_or((decl, ""));
            let value = args
                .get(name)
                .cloned()
                .unwrap_or_else(|| default.trim_matches('"').to_string());
            known.insert(name.to_string(), value);
            continue;
        }
        if !word.eq_ignore_ascii_case("FROM") {
            continue;
        }
        seen_from = true;
        let mut words = rest.split_whitespace().filter(|w| !w.starts_with("--"));
        let Some(image) = words.next() else { continue };
        let image = substitute(image, &known);
        if let Some(image) =
            image.filter(|i| !i.is_empty() && i != "scratch" && !stages.contains(&i.to_lowercase()))
            && !out.iter().any(|(_, i)| *i == image)
        {
            out.push((line, image));
        }
        if let (Some(as_), Some(name)) = (words.next(), words.next())
            && as_.eq_ignore_ascii_case("AS")
        {
            stages.push(name.to_lowercase());
        }
    }
    out
}

/// `$NAME`, `${NAME}` and `${NAME:-default}` replaced from `known`; `None` when one is
/// not known and has no default.
fn substitute(word: &str, known: &HashMap<String, String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = word;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (expr, after) = match rest.strip_prefix('{') {
            Some(inner) => {
                let end = inner.find('}')?;
                (&inner[..end], &inner[end + 1..])
            }
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match known.get(name).filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(v),
            None => out.push_str(default?),
        }
        rest = after;
    }
    out.push_str(rest);
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_are_the_images_the_engine_must_have() {
        let text = "# syntax=docker/dockerfile:1\n\
            ARG RUST=1.80\n\
            ARG PYM_BASE=debian:bookworm-slim\n\
            FROM --platform=$BUILDPLATFORM rust:${RUST}-slim AS build\n\
            RUN cargo build --release\n\
            FROM build AS test\n\
            FROM ${PYM_BASE}\n\
            COPY --from=build /app /app\n\
            FROM scratch\n\
            FROM registry.example.com:5000/team/base:${UNKNOWN}\n\
            FROM gcr.io/distroless/cc \\\n    AS tiny\n";
        let args = HashMap::from([("PYM_BASE".to_string(), "python:3.11-slim".to_string())]);
        assert_eq!(
            dockerfile_bases(text, &args),
            vec![
                (4, "rust:1.80-slim".to_string()),
                (7, "python:3.11-slim".to_string()),
                (11, "gcr.io/distroless/cc".to_string()),
            ]
        );
        // Without the build argument, the ARG's default.
        assert_eq!(
            dockerfile_bases(text, &HashMap::new())[1].1,
            "debian:bookworm-slim"
        );
        assert_eq!(declared_args(text), vec!["RUST", "PYM_BASE"]);
        assert_eq!(
            substitute(
                "${A:-x}/${B}:$C-z",
                &HashMap::from([("B".into(), "b".into()), ("C".into(), "c".into())])
            ),
            Some("x/b:c-z".to_string())
        );
    }
}

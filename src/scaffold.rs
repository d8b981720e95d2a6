//! `pymdeploy new` and `pymdeploy init`: the service template, embedded in the binary.
//!
//! `new` writes a complete service repository (a small HTTP service, its unit and
//! acceptance tests, Dockerfile, config, and the xtask crate that carries its pipeline)
//! and makes the first commit. `init` adds only the pipeline part to an existing
//! repository, and never overwrites a file unless told to.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{TargetKind, validate_name};
use crate::error::hinted;
use crate::output::Printer;

pub struct Options {
    pub name: String,
    pub target: TargetKind,
    /// A pymdeploy source checkout to depend on instead of the published crate.
    pub pymdeploy_path: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The service itself: only `new` writes these.
    Service,
    /// The pipeline: `new` and `init` write these.
    Pipeline,
}

macro_rules! template {
    ($($part:ident $dest:literal => $src:literal,)*) => {
        const FILES: &[(Part, &str, &str)] = &[
            $( (Part::$part, $dest, include_str!(concat!("../template/", $src))), )*
        ];
    };
}

template! {
    Service ".gitignore" => "gitignore",
    Service ".dockerignore" => "dockerignore",
    Service "Dockerfile" => "Dockerfile",
    Service "Cargo.toml" => "Cargo.toml.tmpl",
    Service "src/main.rs" => "src/main.rs",
    Service "testaccept/Cargo.toml" => "testaccept/Cargo.toml.tmpl",
    Service "testaccept/src/lib.rs" => "testaccept/src/lib.rs",
    Service "testaccept/tests/accept.rs" => "testaccept/tests/accept.rs",
    Service "README.md" => "README.md",
    Pipeline "pym-config.yaml" => "pym-config.yaml",
    Pipeline ".cargo/config.toml" => "cargo-config.toml",
    Pipeline "xtask/Cargo.toml" => "xtask/Cargo.toml.tmpl",
    Pipeline "xtask/src/main.rs" => "xtask/src/main.rs",
}

/// The files `new` writes, rendered, as (relative path, contents).
pub fn render_all(opts: &Options) -> Result<Vec<(String, String)>> {
    FILES.iter().map(|(_, dest, text)| Ok((dest.to_string(), render(text, opts)?))).collect()
}

fn render(text: &str, opts: &Options) -> Result<String> {
    let version = env!("CARGO_PKG_VERSION");
    let dep = match &opts.pymdeploy_path {
        Some(p) => {
            let abs = p.canonicalize().with_context(|| format!("cannot find the pymdeploy checkout at {}", p.display()))?;
            let abs = abs.to_str().context("the pymdeploy checkout's path is not valid UTF-8")?;
            format!("{{ version = \"={version}\", path = {abs:?} }}")
        }
        None => format!("\"={version}\""),
    };
    let features = match opts.target {
        TargetKind::Docker => String::new(),
        other => format!(", features = [\"{other}\"]"),
    };
    let dep = if features.is_empty() {
        dep
    } else if dep.starts_with('{') {
        dep.replacen(" }", &format!("{features} }}"), 1)
    } else {
        format!("{{ version = {dep}{features} }}")
    };
    Ok(text
        .replace("{{target_config}}", target_config(opts.target))
        .replace("{{name}}", &opts.name)
        .replace("{{target}}", opts.target.as_str())
        .replace("{{pymdeploy_dep}}", &dep))
}

/// The keys a new service on `target` is most likely to set, commented out.
fn target_config(target: TargetKind) -> &'static str {
    match target {
        TargetKind::AwsBeanstalk => {
            "# aws-beanstalk: credentials and region come from the AWS default chain unless set here.\n\
             # aws_user: my-profile\n\
             # aws_region: us-east-1\n\
             # The registry credentials Beanstalk pulls the image with (a Docker config.json in S3).\n\
             # docker_bucket: my-bucket\n\
             # docker_auth_key: docker.cfg\n\
             # aws_instance_type: t3.small\n\
             # aws_hosts_min: 1\n\
             # aws_hosts_max: 2\n\
             # The live environment holds this CNAME prefix (default: {{name}}-live).\n\
             # aws_live_cname: {{name}}-live\n"
        }
        _ => "",
    }
}

/// Creates a new service repository in `dir`.
pub fn new(dir: &Path, opts: &Options, out: &Printer) -> Result<()> {
    validate_name(&opts.name).map_err(|why| {
        hinted(format!("`{}` cannot be a service name: {why}", opts.name), "use lowercase letters, digits and dashes, starting with a letter, like `hello-world`")
    })?;
    if dir.exists() {
        let non_empty = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?.next().is_some();
        if non_empty {
            return Err(hinted(
                format!("{} exists and is not empty", dir.display()),
                "choose another --path, or use `pymdeploy init` inside an existing repository",
            ));
        }
    }
    let files = render_all(opts)?;
    for (rel, text) in &files {
        write(&dir.join(rel), text)?;
    }
    out.status("Created", &format!("{} ({} files, target {})", dir.display(), files.len(), opts.target));
    // Lock files make the first build reproducible and keep the tree clean after it.
    for manifest in ["Cargo.toml", "xtask/Cargo.toml"] {
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["generate-lockfile", "--quiet", "--manifest-path", manifest])
            .current_dir(dir)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            out.warn(&format!("could not generate the lock file for {manifest}; commit it after the first build"));
        }
    }
    crate::ops::git::init_and_commit(dir, &format!("Create {} with pymdeploy {}", opts.name, env!("CARGO_PKG_VERSION")))?;
    out.status("Committed", "the first commit");
    out.status("Next", &format!("cd {} && cargo xtask deploy", dir.display()));
    Ok(())
}

/// Adds the pipeline to the repository in `dir`. Lists what it would overwrite and
/// writes nothing unless `force`.
pub fn init(dir: &Path, opts: &Options, force: bool, out: &Printer) -> Result<()> {
    validate_name(&opts.name).map_err(|why| hinted(format!("`{}` cannot be a service name: {why}", opts.name), "pass --name NAME"))?;
    let files: Vec<(String, String)> =
        FILES.iter().filter(|(part, ..)| *part == Part::Pipeline).map(|(_, dest, text)| Ok((dest.to_string(), render(text, opts)?))).collect::<Result<_>>()?;
    let existing: Vec<&str> = files.iter().filter(|(rel, _)| dir.join(rel).exists()).map(|(rel, _)| rel.as_str()).collect();
    if !existing.is_empty() && !force {
        return Err(hinted(
            format!("init would overwrite {} file(s) in {}: {}", existing.len(), dir.display(), existing.join(", ")),
            "move them aside, merge by hand, or pass --force to overwrite them",
        ));
    }
    for (rel, text) in &files {
        write(&dir.join(rel), text)?;
        out.status("Wrote", rel);
    }
    out.status("Next", "review pym-config.yaml (test_command, accept_command, rust_binary), then commit and run `cargo xtask deploy`");
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

//! `pymdeploy new` and `pymdeploy init`: the service templates, embedded in the binary.
//!
//! `new` writes a complete service repository in one language (a small HTTP service, its
//! unit and acceptance tests, Dockerfile, config, and the xtask crate that carries its
//! pipeline) and makes the first commit. `init` adds only the pipeline to an existing
//! repository, fitted to what it finds there (Rust, Python, anything with a Dockerfile),
//! never overwrites a file unless told to, and commits nothing.
//!
//! Both point the xtask at a pymdeploy library that exists (see `Source`), write its
//! lock file, and leave nothing behind when they fail.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{TargetKind, validate_name};
use crate::error::hinted;
use crate::output::Printer;

/// The language of a service `new` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A Rust HTTP service, compiled on the host and copied into a slim image
    Rust,
    /// A PyMacaron-style Flask service served by gunicorn, tested with pytest
    Python,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
        }
    }
}

/// Where the xtask gets the pymdeploy library from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// crates.io, at exactly this binary's version.
    Registry,
    /// A checkout on this machine.
    Path(PathBuf),
    /// A git repository, at a revision when one is known.
    Git { url: String, rev: Option<String> },
}

/// The directory this binary was compiled from.
const BUILT_FROM: &str = env!("CARGO_MANIFEST_DIR");

impl Source {
    /// The source named on the command line, else the one this binary was built from:
    /// crates.io when it was installed from there, the git repository `cargo install
    /// --git` recorded, or the checkout `cargo install --path` used while it still exists.
    pub fn resolve(
        path: Option<PathBuf>,
        git: Option<String>,
        rev: Option<String>,
    ) -> Result<Source> {
        match (path, git) {
            (Some(_), Some(_)) => Err(hinted(
                "--pymdeploy-path and --pymdeploy-git both name where pymdeploy comes from",
                "pass one of them",
            )),
            (Some(p), None) => {
                let abs = p.canonicalize().with_context(|| {
                    format!("cannot find the pymdeploy checkout at {}", p.display())
                })?;
                if !is_pymdeploy_checkout(&abs) {
                    return Err(hinted(
                        format!(
                            "{} is not a pymdeploy checkout (no Cargo.toml of the package `pymdeploy`)",
                            abs.display()
                        ),
                        "pass the directory that holds pymdeploy's Cargo.toml",
                    ));
                }
                Ok(Source::Path(abs))
            }
            (None, Some(url)) => Ok(Source::Git { url, rev }),
            (None, None) => Source::built_from(Path::new(BUILT_FROM), &cargo_home()),
        }
    }

    fn built_from(dir: &Path, cargo_home: &Path) -> Result<Source> {
        let shown = dir.display().to_string();
        if shown.contains("/registry/src/") {
            return Ok(Source::Registry);
        }
        if shown.contains("/git/checkouts/")
            && let Some(git) = installed_from_git(cargo_home)
        {
            return Ok(git);
        }
        if is_pymdeploy_checkout(dir) {
            return Ok(Source::Path(dir.to_path_buf()));
        }
        Err(hinted(
            format!(
                "cannot tell where the service's xtask should get the pymdeploy library: this binary was built from {shown}, which is gone, and pymdeploy is not published on crates.io"
            ),
            "pass --pymdeploy-git <URL of the pymdeploy repository> (or --pymdeploy-path <a pymdeploy checkout>)",
        ))
    }

    /// The dependency line of the xtask's Cargo.toml: `pymdeploy-xtask`, the crate that
    /// runs the pipeline with the `pymdeploy` binary of the same version.
    fn dependency(&self, target: TargetKind) -> String {
        let version = env!("CARGO_PKG_VERSION");
        let mut fields = vec![format!("version = \"={version}\"")];
        match self {
            Source::Registry => {}
            Source::Path(p) => fields.push(format!(
                "path = {:?}",
                p.join(XTASK_CRATE_DIR).display().to_string()
            )),
            Source::Git { url, rev } => {
                fields = vec![format!("git = {url:?}")];
                if let Some(rev) = rev {
                    fields.push(format!("rev = {rev:?}"));
                }
            }
        }
        if target != TargetKind::Docker {
            fields.push(format!("features = [\"{target}\"]"));
        }
        match fields.as_slice() {
            [only] if *self == Source::Registry => {
                only.trim_start_matches("version = ").to_string()
            }
            _ => format!("{{ {} }}", fields.join(", ")),
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Registry => format!("pymdeploy {} from crates.io", env!("CARGO_PKG_VERSION")),
            Source::Path(p) => format!(
                "the pymdeploy checkout at {} (on this machine only: teammates and CI need --pymdeploy-git)",
                p.display()
            ),
            Source::Git {
                url,
                rev: Some(rev),
            } => format!("pymdeploy from {url} at {rev}"),
            Source::Git { url, rev: None } => format!("pymdeploy from {url}"),
        }
    }
}

/// The `pymdeploy-xtask` crate's directory in a pymdeploy checkout.
const XTASK_CRATE_DIR: &str = "shim";

/// The xtask's dependency that carries the pipeline: `pymdeploy-xtask` (the binary runs
/// it), or `pymdeploy` itself in an xtask that links the pipeline in (its own Rust steps).
const XTASK_DEPS: [&str; 2] = ["pymdeploy-xtask", "pymdeploy"];

fn cargo_home() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(h) => PathBuf::from(h),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cargo"),
    }
}

fn is_pymdeploy_checkout(dir: &Path) -> bool {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    manifest.parse::<toml_edit::DocumentMut>().is_ok_and(|doc| {
        doc.get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            == Some("pymdeploy")
    })
}

/// The git source `cargo install --git` recorded for this binary in `.crates2.json`:
/// `"pymdeploy 0.1.0 (git+https://host/repo#<sha>)"`.
fn installed_from_git(cargo_home: &Path) -> Option<Source> {
    let text = std::fs::read_to_string(cargo_home.join(".crates2.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let prefix = format!("pymdeploy {} (git+", env!("CARGO_PKG_VERSION"));
    json["installs"].as_object()?.keys().find_map(|k| {
        let rest = k.strip_prefix(&prefix)?.strip_suffix(')')?;
        let (url, sha) = rest.rsplit_once('#')?;
        // Cargo writes the branch or tag it was asked for as a query; the sha pins it.
        let url = url.split_once('?').map_or(url, |(u, _)| u);
        Some(Source::Git {
            url: url.to_string(),
            rev: Some(sha.to_string()),
        })
    })
}

pub struct Options {
    pub name: String,
    pub target: TargetKind,
    pub lang: Lang,
    pub source: Source,
}

macro_rules! template {
    ($($dest:literal => $src:literal,)*) => {
        const FILES: &[(&str, &str)] = &[
            $( ($dest, include_str!(concat!("../template/", $src))), )*
        ];
    };
}

// Each file once: `common/` for every service, then one folder per language; a file's
// destination is its path without the folder (and `.tmpl`, `dot` names fixed below).
template! {
    "common/pym-config.yaml" => "common/pym-config.yaml",
    "common/.cargo/config.toml" => "common/cargo-config.toml",
    "common/xtask/Cargo.toml" => "common/xtask/Cargo.toml.tmpl",
    "common/xtask/src/main.rs" => "common/xtask/src/main.rs",
    "rust/.gitignore" => "rust/gitignore",
    "rust/.dockerignore" => "rust/dockerignore",
    "rust/Dockerfile" => "rust/Dockerfile",
    "rust/Cargo.toml" => "rust/Cargo.toml.tmpl",
    "rust/src/main.rs" => "rust/src/main.rs",
    "rust/testaccept/Cargo.toml" => "rust/testaccept/Cargo.toml.tmpl",
    "rust/testaccept/src/lib.rs" => "rust/testaccept/src/lib.rs",
    "rust/testaccept/tests/accept.rs" => "rust/testaccept/tests/accept.rs",
    "rust/README.md" => "rust/README.md",
    "python/.gitignore" => "python/gitignore",
    "python/.dockerignore" => "python/dockerignore",
    "python/Dockerfile" => "python/Dockerfile",
    "python/server.py" => "python/server.py",
    "python/requirements.txt" => "python/requirements.txt",
    "python/test/test_server.py" => "python/test/test_server.py",
    "python/testaccept/test_accept.py" => "python/testaccept/test_accept.py",
    "python/README.md" => "python/README.md",
}

/// The JSON Schema the generated pym-config.yaml points editors at.
const SCHEMA_FILE: &str = "pym-config.schema.json";

/// The pipeline files: `new` and `init` write these.
const PIPELINE: &[&str] = &[
    "pym-config.yaml",
    ".cargo/config.toml",
    "xtask/Cargo.toml",
    "xtask/src/main.rs",
];

/// The registry lines of pym-config.yaml, commented out: the docker target needs none.
const REGISTRY: &str = "# Images are pushed to <docker_repo>/<name>:<version>. The docker target needs no\n\
                        # registry: without one, it runs the image from the engine that built it.\n\
                        # docker_repo: registry.example.com/team\n";

/// What goes into the placeholders of pym-config.yaml: the parts that depend on the
/// language (or on what `init` found).
struct ConfigParts {
    lang: String,
    port: u16,
    health_path: String,
    /// A new `service_id`: `s` and 11 random hex digits (never a YAML number).
    service_id: String,
}

/// A new service identity: what pymdeploy makes on a shared target carries it, so a
/// same-named service of another repository is told apart.
fn new_service_id() -> String {
    let mut bytes = [0u8; 6];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        // No /dev/urandom: the time and the process make it unique enough.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes.copy_from_slice(
            &(nanos as u64 ^ ((std::process::id() as u64) << 32)).to_le_bytes()[..6],
        );
    }
    // A letter first: all digits, or digits around one `e` (`7146285404e4`), would read
    // as a number to YAML tools (editors checking the JSON Schema, which wants a string).
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("s{}", &hex[1..])
}

impl ConfigParts {
    fn for_new(lang: Lang, name: &str) -> ConfigParts {
        let lang = match lang {
            Lang::Rust => format!(
                "docker_base: debian:bookworm-slim\n\
                 # `build` compiles this binary on the host and puts it in .pym/dist/ for the Dockerfile.\n\
                 rust_binary: {name}\n\
                 test_command: cargo test\n\
                 accept_command: cargo test --manifest-path testaccept/Cargo.toml\n"
            ),
            Lang::Python => {
                "# An image with python3; the Dockerfile pip-installs requirements.txt on it.\n\
                             docker_base: python:3.11-slim\n\
                             test_command: python3 -m pytest -q test\n\
                             accept_command: python3 -m pytest -q testaccept\n"
                    .to_string()
            }
        };
        ConfigParts {
            lang,
            health_path: "/ping".into(),
            port: 8080,
            service_id: new_service_id(),
        }
    }
}

fn render(text: &str, opts: &Options, parts: &ConfigParts) -> String {
    let intro = opts.target.introduction();
    text.replace("{{target_config}}", intro.config)
        .replace("{{target_readme}}", intro.readme)
        .replace("{{registry_config}}", REGISTRY)
        .replace("{{lang_config}}", &parts.lang)
        .replace("{{port}}", &parts.port.to_string())
        .replace("{{health_path}}", &parts.health_path)
        .replace("{{service_id}}", &parts.service_id)
        .replace("{{name}}", &opts.name)
        .replace("{{target}}", opts.target.as_str())
        .replace("{{pymdeploy_dep}}", &opts.source.dependency(opts.target))
}

/// The files `new` writes, rendered, as (relative path, contents).
pub fn render_all(opts: &Options) -> Vec<(String, String)> {
    let parts = ConfigParts::for_new(opts.lang, &opts.name);
    let lang = match opts.lang {
        Lang::Rust => "rust/",
        Lang::Python => "python/",
    };
    let mut files: Vec<(String, String)> = FILES
        .iter()
        .filter_map(|(dest, text)| {
            let rel = dest
                .strip_prefix("common/")
                .or_else(|| dest.strip_prefix(lang))?;
            Some((rel.to_string(), render(text, opts, &parts)))
        })
        .collect();
    files.push((SCHEMA_FILE.to_string(), schema_text()));
    files
}

fn schema_text() -> String {
    serde_json::to_string_pretty(&crate::config::json_schema()).expect("the schema serializes")
        + "\n"
}

fn check_name(name: &str, hint: &str) -> Result<()> {
    validate_name(name).map_err(|why| {
        hinted(
            format!("`{name}` cannot be a service name: {why}"),
            hint.to_string(),
        )
    })
}

/// Removes what a failed `new` or `init` wrote, so a failure leaves nothing behind.
struct Undo {
    /// Files to restore (with their old contents) or remove (`None`).
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
    /// Directories created, removed if empty, deepest last in the list.
    dirs: Vec<PathBuf>,
    done: bool,
}

impl Undo {
    fn new() -> Undo {
        Undo {
            files: Vec::new(),
            dirs: Vec::new(),
            done: false,
        }
    }

    fn write(&mut self, path: &Path, text: &str) -> Result<()> {
        let mut missing = Vec::new();
        let mut d = path.parent();
        while let Some(dir) = d.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            missing.push(dir.to_path_buf());
            d = dir.parent();
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        self.dirs.extend(missing.into_iter().rev());
        if !self.files.iter().any(|(p, _)| p == path) {
            self.files
                .push((path.to_path_buf(), std::fs::read(path).ok()));
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// A file something else (cargo) creates: removed on failure.
    fn created_by_others(&mut self, path: &Path) {
        if !path.exists() {
            self.files.push((path.to_path_buf(), None));
        }
    }

    fn keep(mut self) {
        self.done = true;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for (path, old) in self.files.iter().rev() {
            let _ = match old {
                Some(bytes) => std::fs::write(path, bytes),
                None => std::fs::remove_file(path),
            };
        }
        for dir in self.dirs.iter().rev() {
            // Whatever cargo or git left inside a directory we made goes with it.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `cargo generate-lockfile` for a manifest: without it the first deploy changes the
/// tree, and a changed tree is refused.
fn generate_lockfile(dir: &Path, manifest: &str) -> Result<()> {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["generate-lockfile", "--quiet", "--manifest-path", manifest])
        .current_dir(dir)
        .output()
        .map_err(|e| {
            hinted(
                format!("cannot run cargo: {e}"),
                "install Rust and cargo (https://rustup.rs)",
            )
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(hinted(
            format!(
                "cannot resolve the dependencies of {manifest}:\n```\n{}\n```",
                stderr.trim_end()
            ),
            "check that crates.io (or the pymdeploy source named in xtask/Cargo.toml) is reachable, or name another with --pymdeploy-path / --pymdeploy-git",
        ));
    }
    Ok(())
}

/// Creates a new service repository in `dir`.
pub fn new(dir: &Path, opts: &Options, out: &Printer) -> Result<()> {
    check_name(
        &opts.name,
        "use lowercase letters, digits and dashes, starting with a letter, like `hello-world`",
    )?;
    if dir.exists() {
        let non_empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some();
        if non_empty {
            return Err(hinted(
                format!("{} exists and is not empty", dir.display()),
                "choose another --path, or use `pymdeploy init` inside an existing repository",
            ));
        }
    }
    let mut undo = Undo::new();
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        undo.dirs.push(dir.to_path_buf());
    } else {
        // An empty directory that was there: emptied again on failure.
        undo.files.push((dir.join(".git"), None));
    }
    let files = render_all(opts);
    for (rel, text) in &files {
        undo.write(&dir.join(rel), text)?;
    }
    out.status(
        "Created",
        &format!(
            "{} ({} files, {} service, target {})",
            dir.display(),
            files.len(),
            opts.lang.as_str(),
            opts.target
        ),
    );
    out.status("Using", &opts.source.describe());
    let mut manifests = vec!["xtask/Cargo.toml"];
    if opts.lang == Lang::Rust {
        manifests.insert(0, "Cargo.toml");
    }
    for manifest in manifests {
        let lock = dir.join(manifest.replace("Cargo.toml", "Cargo.lock"));
        undo.created_by_others(&lock);
        generate_lockfile(dir, manifest)?;
    }
    if let Err(e) = crate::ops::git::init_and_commit(
        dir,
        &format!(
            "Create {} with pymdeploy {}",
            opts.name,
            env!("CARGO_PKG_VERSION")
        ),
    ) {
        let _ = std::fs::remove_dir_all(dir.join(".git"));
        return Err(e);
    }
    undo.keep();
    out.status("Committed", "the first commit");
    let cd = format!("cd {}", dir.display());
    out.status("Next", &format!("{cd}{}", opts.target.introduction().next));
    Ok(())
}

/// What `init` found in a repository.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Detected {
    /// "Rust", "Python" or "Dockerfile only", with the files that told.
    pub kind: &'static str,
    pub evidence: Vec<String>,
    /// The binary the Dockerfile copies from `.pym/dist/`, for `rust_binary`.
    pub rust_binary: Option<String>,
    pub test_command: Option<String>,
    pub accept_command: Option<String>,
    /// `EXPOSE` in the Dockerfile.
    pub port: Option<u16>,
    /// The Dockerfile's `ARG PYM_BASE=` default.
    pub docker_base: Option<String>,
    /// The health route the source declares (`/ping`, `/health`, `/healthz`, `/status`).
    pub health_path: Option<String>,
    /// The source declares a `/version` route.
    pub has_version: bool,
    /// Things the user must still decide, each one line.
    pub todo: Vec<String>,
}

/// Looks at a repository to fit the pipeline to it.
pub fn detect(dir: &Path) -> Detected {
    let exists = |rel: &str| dir.join(rel).exists();
    let has_py = |rel: &str| {
        std::fs::read_dir(dir.join(rel)).is_ok_and(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == "py"))
        })
    };
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).ok();
    let mut d = Detected::default();
    let rust = exists("Cargo.toml");
    let python_files: Vec<&str> = [
        "pyproject.toml",
        "requirements.txt",
        "setup.py",
        "setup.cfg",
        "Pipfile",
    ]
    .into_iter()
    .filter(|f| exists(f))
    .collect();
    let python = !python_files.is_empty() || has_py("test") || has_py("testaccept");
    if rust {
        d.kind = "Rust";
        d.evidence.push("Cargo.toml".into());
        d.test_command = Some("cargo test".into());
    } else if python {
        d.kind = "Python";
        d.evidence
            .extend(python_files.iter().map(|f| f.to_string()));
        let test_dir = ["test", "tests"].into_iter().find(|t| has_py(t));
        match test_dir {
            Some(t) => {
                d.evidence.push(format!("{t}/"));
                d.test_command = Some(format!("python3 -m pytest -q {t}"));
            }
            None => d.todo.push("test_command: no test/ or tests/ with Python files; set the command that runs your unit tests".into()),
        }
    } else {
        d.kind = "Dockerfile only";
        d.todo.push("test_command: set the command that runs your unit tests (run on this machine, from the repository root)".into());
    }
    if exists("testaccept/Cargo.toml") {
        d.evidence.push("testaccept/Cargo.toml".into());
        d.accept_command = Some("cargo test --manifest-path testaccept/Cargo.toml".into());
    } else if has_py("testaccept") {
        d.evidence.push("testaccept/".into());
        d.accept_command = Some("python3 -m pytest -q testaccept".into());
    } else {
        d.todo.push("accept_command: no testaccept/, so none for now (`accept_command: \"\"`: health and the version check alone); write tests of a running server at $PYM_SERVER_HOST:$PYM_SERVER_PORT and set the command".into());
    }
    match &dockerfile {
        None => d.todo.push("Dockerfile: there is none; `build` needs one (`pymdeploy new --lang python` or `--lang rust` writes an example)".into()),
        Some(text) => {
            d.evidence.push("Dockerfile".into());
            for line in text.lines().map(str::trim) {
                let upper = line.to_ascii_uppercase();
                if upper.starts_with("EXPOSE ") {
                    d.port = d.port.or_else(|| line[7..].split_whitespace().next()?.split('/').next()?.parse().ok());
                }
                if upper.starts_with("ARG PYM_BASE=") {
                    d.docker_base = Some(line["ARG PYM_BASE=".len()..].trim().to_string());
                }
            }
            d.rust_binary = crate::steps::build::dist_copies(text).last().filter(|b| !b.is_empty()).map(|b| b.to_string());
            let stages = crate::steps::build::dockerfile_stages(text);
            if rust && d.rust_binary.is_none() {
                d.evidence.push(format!("the Dockerfile builds the binary itself ({stages} stage{})", if stages == 1 { "" } else { "s" }));
            }
        }
    }
    if d.port.is_none() {
        d.todo.push("port: the port your service listens on in its container (no EXPOSE in the Dockerfile; 8080 assumed, given to it as $PORT)".into());
    }
    let sources = source_text(dir);
    let declares = |route: &str| {
        ['"', '\'', '`']
            .iter()
            .any(|q| sources.contains(&format!("{q}{route}{q}")))
    };
    d.health_path = HEALTH_ROUTES
        .iter()
        .find(|r| declares(r))
        .map(|r| r.to_string());
    match &d.health_path {
        Some(p) => d.evidence.push(format!("a {p} route")),
        None => d.todo.push("health_path: /ping assumed, and no source declares it (nor /health, /healthz, /status); set your health endpoint (any 2xx is healthy)".into()),
    }
    d.has_version = declares("/version");
    if !d.has_version {
        d.todo.push("verify_version: false for now, since no source declares /version; serve {\"version\": $PYM_VERSION, \"pym_env\": $PYM_ENV} there (README: What your service must do) and remove the line, so each switch is checked to serve the version deployed".into());
    }
    if rust && d.rust_binary.is_none() {
        d.todo.push("Dockerfile: it compiles the service in a build stage; where the engine lacks its base images, `build` says so before the first step, and README's host-built Dockerfile (`rust_binary`) needs none".into());
    }
    d
}

/// Health routes `init` looks for in the source, in the order it prefers them.
const HEALTH_ROUTES: &[&str] = &["/ping", "/health", "/healthz", "/status"];

/// The service's own source text (Python and Rust files, not too deep, not too many),
/// to see whether it mentions its health and version paths.
fn source_text(dir: &Path) -> String {
    fn walk(dir: &Path, depth: usize, out: &mut String, budget: &mut usize) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.')
                || [
                    "target",
                    "node_modules",
                    "venv",
                    "xtask",
                    "testaccept",
                    "test",
                    "tests",
                ]
                .contains(&name.as_ref())
            {
                continue;
            }
            if p.is_dir() && depth < 4 {
                walk(&p, depth + 1, out, budget);
            } else if p
                .extension()
                .is_some_and(|x| ["py", "rs", "js", "ts", "go"].iter().any(|e| x == *e))
                && *budget > 0
            {
                *budget -= 1;
                out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    let mut out = String::new();
    walk(dir, 0, &mut out, &mut 500);
    out
}

impl Detected {
    fn config_parts(&self) -> ConfigParts {
        let mut lang = String::new();
        match &self.docker_base {
            Some(base) => lang.push_str(&format!("# Passed to the Dockerfile as the build argument PYM_BASE.\ndocker_base: {base}\n")),
            None => lang.push_str("# docker_base: an image passed to the Dockerfile as the build argument PYM_BASE (yours does not use it)\n"),
        }
        if let Some(bin) = &self.rust_binary {
            lang.push_str(&format!("# `build` compiles this binary on the host and puts it in .pym/dist/ for the Dockerfile.\nrust_binary: {bin}\n"));
        }
        match &self.test_command {
            Some(c) => lang.push_str(&format!("test_command: {c}\n")),
            None => lang.push_str("# test_command: the command that runs your unit tests\n"),
        }
        match &self.accept_command {
            Some(c) => lang.push_str(&format!("accept_command: {c}\n")),
            None => lang.push_str("# No acceptance tests yet: set the command that tests a server at\n# $PYM_SERVER_HOST:$PYM_SERVER_PORT (health and the version check run without it).\naccept_command: \"\"\n"),
        }
        if !self.has_version {
            lang.push_str("# No /version route found: set this back to true once the service serves\n# {\"version\": $PYM_VERSION, \"pym_env\": $PYM_ENV} there.\nverify_version: false\n");
        }
        ConfigParts {
            lang,
            health_path: self.health_path.clone().unwrap_or_else(|| "/ping".into()),
            port: self.port.unwrap_or(8080),
            service_id: new_service_id(),
        }
    }
}

pub struct InitOptions {
    pub name: String,
    pub target: TargetKind,
    pub source: Source,
    pub force: bool,
}

/// The lines `init` keeps in `.gitignore`: what the pipeline writes and must not commit.
const GITIGNORE: &[&str] = &["/.pym", "/xtask/target"];

/// The lines `init` keeps in `.dockerignore`: what no image needs (and a `COPY . .` would
/// carry), the host-built binaries in `.pym/dist` excepted.
const DOCKERIGNORE: &[&str] = &[".git", "target", "xtask/target", ".pym", "!.pym/dist"];

/// Adds the pipeline to the repository in `dir`, fitted to what it finds. Lists what it
/// would overwrite and writes nothing unless `force`; merges the `xtask` alias into an
/// existing `.cargo/config.toml` and appends to `.gitignore`. Commits nothing.
pub fn init(dir: &Path, opts: &InitOptions, out: &Printer) -> Result<()> {
    check_name(&opts.name, "pass --name NAME")?;
    let detected = detect(dir);
    let parts = detected.config_parts();
    let new_opts = Options {
        name: opts.name.clone(),
        target: opts.target,
        lang: Lang::Rust,
        source: opts.source.clone(),
    };
    let common: Vec<(String, String)> = FILES
        .iter()
        .filter_map(|(dest, text)| {
            Some((
                dest.strip_prefix("common/")?.to_string(),
                render(text, &new_opts, &parts),
            ))
        })
        .filter(|(rel, _)| PIPELINE.contains(&rel.as_str()))
        .collect();
    let alias = common
        .iter()
        .find(|(rel, _)| rel == ".cargo/config.toml")
        .map(|(_, t)| t.clone())
        .expect("the template has the cargo config");
    let mut files: Vec<(String, String)> = common
        .into_iter()
        .filter(|(rel, _)| rel != ".cargo/config.toml")
        .collect();
    files.push((SCHEMA_FILE.to_string(), schema_text()));

    // What would be overwritten: whole files, and an `xtask` alias that says otherwise.
    let mut conflicts: Vec<String> = files
        .iter()
        .filter(|(rel, _)| dir.join(rel).exists())
        .map(|(rel, _)| rel.clone())
        .collect();
    let cargo_config = dir.join(".cargo/config.toml");
    let merged_alias = merge_alias(&cargo_config, &alias)?;
    if merged_alias.conflict {
        conflicts.push(".cargo/config.toml (its `xtask` alias)".into());
    }
    if !conflicts.is_empty() && !opts.force {
        return Err(hinted(
            format!(
                "init would overwrite {} file(s) in {}: {}",
                conflicts.len(),
                dir.display(),
                conflicts.join(", ")
            ),
            "move them aside, merge by hand, or pass --force to overwrite them",
        ));
    }
    out.status(
        "Detected",
        &format!(
            "{} service ({})",
            detected.kind,
            detected.evidence.join(", ")
        ),
    );
    out.status("Using", &opts.source.describe());
    let mut undo = Undo::new();
    for (rel, text) in &files {
        undo.write(&dir.join(rel), text)?;
        out.status("Wrote", rel);
    }
    if let Some(text) = &merged_alias.text {
        undo.write(&cargo_config, text)?;
        out.status(
            if merged_alias.existed {
                "Merged"
            } else {
                "Wrote"
            },
            ".cargo/config.toml (the `xtask` alias)",
        );
    }
    let gitignore = dir.join(".gitignore");
    let gitignore_existed = gitignore.exists();
    let old = std::fs::read_to_string(&gitignore).unwrap_or_default();
    let missing: Vec<&str> = GITIGNORE
        .iter()
        .copied()
        .filter(|l| {
            !old.lines()
                .any(|o| o.trim() == *l || o.trim() == l.trim_start_matches('/'))
        })
        .collect();
    if !missing.is_empty() {
        let sep = if old.is_empty() || old.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        undo.write(
            &gitignore,
            &format!(
                "{old}{sep}# pymdeploy's build output\n{}\n",
                missing.join("\n")
            ),
        )?;
        match gitignore_existed {
            true => out.status("Appended", &format!("{} to .gitignore", missing.join(", "))),
            false => out.status("Wrote", &format!(".gitignore ({})", missing.join(", "))),
        }
    }
    append_missing(
        &mut undo,
        &dir.join(".dockerignore"),
        DOCKERIGNORE,
        "# not part of the image: pymdeploy's and cargo's output, git",
        out,
    )?;
    undo.created_by_others(&dir.join("xtask/Cargo.lock"));
    generate_lockfile(dir, "xtask/Cargo.toml")?;
    out.status("Wrote", "xtask/Cargo.lock");
    undo.keep();

    let mut todo: Vec<String> = opts
        .target
        .introduction()
        .decide
        .iter()
        .map(|d| d.to_string())
        .collect();
    todo.extend(detected.todo.iter().cloned());
    for t in &todo {
        out.status("Decide", t);
    }
    out.status(
        "Next",
        "review pym-config.yaml, then commit what init wrote (`git add -A && git commit`; init commits nothing) and run `cargo xtask deploy`",
    );
    Ok(())
}

/// Appends to the file at `path` (made when missing) the `lines` it lacks, under `title`.
fn append_missing(
    undo: &mut Undo,
    path: &Path,
    lines: &[&str],
    title: &str,
    out: &Printer,
) -> Result<()> {
    let existed = path.exists();
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let missing: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            !old.lines().any(|o| {
                let o = o.trim().trim_end_matches('/');
                o == *l || o.trim_start_matches('/') == l.trim_start_matches('/')
            })
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let sep = if old.is_empty() || old.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    undo.write(
        path,
        &format!("{old}{sep}{title}\n{}\n", missing.join("\n")),
    )?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    match existed {
        true => out.status("Appended", &format!("{} to {name}", missing.join(", "))),
        false => out.status("Wrote", &format!("{name} ({})", missing.join(", "))),
    }
    Ok(())
}

/// `.cargo/config.toml` with the template's `xtask` alias merged in, keeping every other
/// setting (and its comments) as it was.
struct MergedAlias {
    /// The new text; `None` when the file already has the very alias.
    text: Option<String>,
    existed: bool,
    /// The file has an `xtask` alias of its own, which the merge replaces.
    conflict: bool,
}

fn merge_alias(path: &Path, template: &str) -> Result<MergedAlias> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(MergedAlias {
            text: Some(template.to_string()),
            existed: false,
            conflict: false,
        });
    };
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| {
        hinted(
            format!("{}: not valid TOML: {e}", path.display()),
            "fix it, then run init again",
        )
    })?;
    let ours: toml_edit::DocumentMut = template
        .parse()
        .expect("the template's cargo config is TOML");
    let our_alias = ours["alias"]["xtask"].clone();
    let alias = doc.entry("alias").or_insert(toml_edit::table());
    let Some(table) = alias.as_table_like_mut() else {
        return Err(hinted(
            format!("{}: `alias` is not a table", path.display()),
            "make it `[alias]`, then run init again",
        ));
    };
    let existing = table.get("xtask").map(|v| v.to_string());
    if existing.as_deref().map(str::trim)
        == our_alias
            .as_value()
            .map(|v| v.to_string())
            .as_deref()
            .map(str::trim)
    {
        return Ok(MergedAlias {
            text: None,
            existed: true,
            conflict: false,
        });
    }
    table.insert("xtask", our_alias);
    Ok(MergedAlias {
        text: Some(doc.to_string()),
        existed: true,
        conflict: existing.is_some(),
    })
}

/// What `pymdeploy target` is asked to do.
pub struct SwitchOptions {
    pub target: TargetKind,
    /// `--set KEY=VALUE`: values for the keys the target needs.
    pub set: Vec<(String, String)>,
    /// Ask on the terminal for a needed key no file or `--set` gives.
    pub ask: bool,
    /// Commit the files it changed.
    pub commit: bool,
}

/// Moves a service to another target in one go: `deploy_target` set; each key the new
/// target does not read turned into a comment (in pym-config.yaml and every overlay), so
/// its value is kept for a move back; the keys it needs set (from `--set`, else asked);
/// its feature turned on in the xtask's `pymdeploy` dependency, any other target's off.
/// Everything a value is missing for is said before any file changes; the result is
/// loaded as a run would load it, and a failure puts every file back. Commits nothing
/// unless asked.
pub fn switch_target(dir: &Path, opts: &SwitchOptions, out: &Printer) -> Result<()> {
    use crate::config::{CONFIG_FILE, KEYS, PymEnv};
    let to = opts.target;
    let base = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&base).map_err(|e| {
        hinted(
            format!("cannot read {}: {e}", base.display()),
            "run this in a service root (where pym-config.yaml is), or `pymdeploy init` first",
        )
    })?;
    let manifest_path = dir.join("xtask/Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path).map_err(|e| {
        hinted(
            format!("cannot read {}: {e}", manifest_path.display()),
            "add the pipeline with `pymdeploy init` first",
        )
    })?;
    for (key, _) in &opts.set {
        if !KEYS.iter().any(|k| k.name == key) {
            let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
            let hint = match crate::config::closest(key, &names) {
                Some(k) => format!("did you mean `{k}`?"),
                None => "see `pymdeploy config --keys`".into(),
            };
            return Err(hinted(
                format!("--set {key}: not a key of pym-config.yaml"),
                hint,
            ));
        }
    }
    // The files, each with the keys the new target refuses turned into comments.
    let mut files = vec![(base.clone(), text)];
    for env in [PymEnv::Local, PymEnv::Staging, PymEnv::Live] {
        let path = crate::config::overlay_path(dir, env);
        if let Ok(t) = std::fs::read_to_string(&path) {
            files.push((path, t));
        }
    }
    let mut moved = Vec::new();
    for (path, text) in &mut files {
        let (kept, gone) = comment_out_foreign_keys(text, to);
        *text = kept;
        for key in gone {
            moved.push(format!(
                "{}: {key}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    let base_text = files.first_mut().expect("pym-config.yaml is first");
    let mut base_text_new = set_top_level(&base_text.1, "deploy_target", to.as_str());
    // The keys the target cannot deploy without: already set, from --set, or asked.
    let mut missing = Vec::new();
    let mut added = Vec::new();
    for (key, example) in to.requires() {
        let given = opts
            .set
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone());
        let present = top_level_value(&base_text_new, key).is_some_and(|v| !v.is_empty());
        let value = match (given, present) {
            (Some(v), _) => Some(v),
            (None, true) => continue,
            (None, false) if opts.ask => ask(&format!("{key} (like {example})"))?,
            (None, false) => None,
        };
        match value.filter(|v| !v.is_empty()) {
            Some(v) => added.push((key.to_string(), v)),
            None => missing.push(format!("--set {key}={example}")),
        }
    }
    for (key, value) in &opts.set {
        if !added.iter().any(|(k, _)| k == key) {
            added.push((key.clone(), value.clone()));
        }
    }
    if !missing.is_empty() {
        return Err(hinted(
            format!(
                "the {to} target needs {} set, and nothing was changed",
                missing
                    .iter()
                    .map(|m| m
                        .trim_start_matches("--set ")
                        .split('=')
                        .next()
                        .unwrap_or(m))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("pass {}", missing.join(" ")),
        ));
    }
    for (key, value) in &added {
        base_text_new = set_top_level(&base_text_new, key, value);
    }
    base_text.1 = base_text_new;
    let new_manifest = with_target_feature(&manifest, to)
        .with_context(|| format!("cannot edit {}", manifest_path.display()))?;

    let mut undo = Undo::new();
    let mut changed = Vec::new();
    for (path, text) in &files {
        if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
            undo.write(path, text)?;
            changed.push(path.clone());
        }
    }
    if new_manifest != manifest {
        undo.write(&manifest_path, &new_manifest)?;
        changed.push(manifest_path.clone());
        // The lock gets what the feature brings in (cargo resolves it now, keeping every
        // version it has), so the next run finds a clean tree.
        let lock = dir.join("xtask/Cargo.lock");
        let old_lock = std::fs::read_to_string(&lock).ok();
        if let Some(old) = &old_lock {
            undo.write(&lock, old)?;
        }
        out.status(
            "Resolving",
            &format!("the {to} feature's dependencies in xtask/Cargo.lock"),
        );
        let sh = xshell::Shell::new()?;
        let manifest_arg = manifest_path.display().to_string();
        let resolved = xshell::cmd!(
            sh,
            "cargo metadata --format-version 1 --manifest-path {manifest_arg}"
        )
        .quiet()
        .ignore_status()
        .output()?;
        if !resolved.status.success() {
            anyhow::bail!(
                "cargo cannot resolve the xtask with the {to} feature, and every file is as it was: {}",
                String::from_utf8_lossy(&resolved.stderr).trim()
            );
        }
        if std::fs::read_to_string(&lock).ok() != old_lock {
            changed.push(lock);
        }
    }
    // Loaded as a run loads it: what it would refuse is said now, and nothing stays changed.
    crate::config::Configs::load(dir)
        .context("the config after the switch does not load; every file is as it was")?;
    undo.keep();
    for key in &moved {
        out.status(
            "Commented",
            &format!("{key} (the {to} target does not read it)"),
        );
    }
    for (key, value) in &added {
        out.status("Set", &format!("{key}: {value}"));
    }
    let rel: Vec<String> = changed
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
        .collect();
    if rel.is_empty() {
        out.status("Unchanged", &format!("the service already deploys to {to}"));
        return Ok(());
    }
    for r in &rel {
        out.status("Changed", r);
    }
    if opts.commit {
        let sh = xshell::Shell::new()?;
        sh.change_dir(dir);
        let message = format!("Deploy to the {to} target");
        let files = rel.clone();
        xshell::cmd!(sh, "git add -- {files...}").quiet().run()?;
        let files = rel.clone();
        xshell::cmd!(sh, "git commit -q -m {message} -- {files...}")
            .quiet()
            .run()?;
        out.status("Committed", &message);
    } else {
        out.status(
            "Next",
            &format!(
                "commit it (`git commit -m 'Deploy to {to}' -- {}`; `--commit` does), then `cargo xtask deploy` (the first run installs pymdeploy with the {to} feature, once per machine)",
                rel.join(" ")
            ),
        );
    }
    Ok(())
}

/// `text` with each top-level key scoped to other targets than `to` (and its indented
/// lines) commented out, and those keys.
fn comment_out_foreign_keys(text: &str, to: TargetKind) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut gone = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let top = !line.starts_with([' ', '\t', '-', '#']) && !line.trim().is_empty();
        if top {
            let key = line.split(':').next().unwrap_or("").trim();
            inside = crate::config::KEYS
                .iter()
                .any(|k| k.name == key && !k.targets().is_empty() && !k.targets().contains(&to));
            if inside {
                gone.push(key.to_string());
                out.push_str(&format!("# not read by the {to} target: "));
            }
        } else if inside && !line.trim().is_empty() && !line.starts_with('#') {
            out.push_str("# ");
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, gone)
}

/// The value of a top-level `key:` line, if there is one.
fn top_level_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.trim_start().strip_prefix(':')?;
        Some(
            rest.split(" #")
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .to_string(),
        )
    })
}

/// `text` with `key: value` replacing the key's top-level line, or added at the end.
fn set_top_level(text: &str, key: &str, value: &str) -> String {
    let line = format!("{key}: {}", yaml_scalar(value));
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            let is_key = l
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with(':'));
            if is_key && !found {
                found = true;
                line.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// A value as YAML reads it back as the same string.
fn yaml_scalar(value: &str) -> String {
    match serde_yaml::from_str::<serde_yaml::Value>(value) {
        Ok(serde_yaml::Value::String(s)) if s == value => value.to_string(),
        _ => format!("{value:?}"),
    }
}

/// The xtask manifest with `to`'s feature on the `pymdeploy` dependency, every other
/// target's off (other features, `docker-tls`, stay).
fn with_target_feature(manifest: &str, to: TargetKind) -> Result<String> {
    use clap::ValueEnum;
    let mut doc: toml_edit::DocumentMut = manifest.parse()?;
    let deps = doc["dependencies"]
        .as_table_like_mut()
        .context("no [dependencies]")?;
    let key = XTASK_DEPS
        .into_iter()
        .find(|k| deps.contains_key(k))
        .context("no `pymdeploy-xtask` (or `pymdeploy`) dependency")?;
    let dep = deps.get_mut(key).expect("found above");
    if let Some(version) = dep.as_str().map(str::to_string) {
        let mut t = toml_edit::InlineTable::new();
        t.insert("version", version.into());
        *dep = toml_edit::value(t);
    }
    let table = dep
        .as_table_like_mut()
        .with_context(|| format!("`{key}` is neither a version nor a table"))?;
    let targets: Vec<&str> = TargetKind::value_variants()
        .iter()
        .map(|t| t.as_str())
        .collect();
    let mut features: Vec<String> = table
        .get("features")
        .and_then(|f| f.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    features.retain(|f| !targets.contains(&f.as_str()));
    if to != TargetKind::Docker {
        features.insert(0, to.as_str().to_string());
    }
    match features.is_empty() {
        true => {
            table.remove("features");
        }
        false => {
            let array: toml_edit::Array = features.iter().map(String::as_str).collect();
            table.insert("features", toml_edit::value(array));
        }
    }
    Ok(doc.to_string())
}

/// One answer from the terminal; empty when none.
fn ask(what: &str) -> Result<Option<String>> {
    use std::io::Write;
    eprint!("{what}: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(Some(line.trim().to_string()).filter(|l| !l.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_id_is_a_string_to_any_yaml_reader() {
        // `7146285404e4` was one: YAML reads it as a float, and editors checking the JSON
        // Schema flagged the generated pym-config.yaml.
        for _ in 0..2000 {
            let id = new_service_id();
            assert_eq!(id.len(), 12);
            let v: serde_yaml::Value = serde_yaml::from_str(&format!("service_id: {id}")).unwrap();
            assert!(
                v["service_id"].is_string(),
                "{id} reads as {:?}",
                v["service_id"]
            );
        }
        let read =
            |id: &str| serde_yaml::from_str::<serde_yaml::Value>(&format!("k: {id}")).unwrap();
        assert!(
            !read("7146285404e4")["k"].is_string(),
            "the case this guards against"
        );
    }

    #[test]
    fn a_switch_turns_on_one_target_feature_and_keeps_the_rest() {
        let to_run = with_target_feature(
            "[dependencies]\npymdeploy = { path = \"/p\", features = [\"gke\", \"docker-tls\"] } # mine\n",
            TargetKind::GcpCloudRun,
        )
        .unwrap();
        assert_eq!(
            to_run,
            "[dependencies]\npymdeploy = { path = \"/p\", features = [\"gcp-cloud-run\", \"docker-tls\"] } # mine\n"
        );
        let back = with_target_feature(&to_run, TargetKind::Docker).unwrap();
        assert_eq!(
            back,
            "[dependencies]\npymdeploy = { path = \"/p\", features = [\"docker-tls\"] } # mine\n"
        );
        let from_version =
            with_target_feature("[dependencies]\npymdeploy = \"=0.1.0\"\n", TargetKind::Gke)
                .unwrap();
        assert_eq!(
            from_version,
            "[dependencies]\npymdeploy = { version = \"=0.1.0\", features = [\"gke\"] }\n"
        );
    }

    #[test]
    fn a_switch_comments_out_what_the_new_target_does_not_read() {
        let text = "name: a\ndeploy_target: docker\nlive_port: 9000\nenv_secrets:\n  - A\npublish_ip: 0.0.0.0 # here\n# live_port: 1\n";
        let (kept, gone) = comment_out_foreign_keys(text, TargetKind::Gke);
        assert_eq!(gone, ["live_port", "publish_ip"]);
        assert_eq!(
            kept,
            "name: a\ndeploy_target: docker\n# not read by the gke target: live_port: 9000\nenv_secrets:\n  - A\n# not read by the gke target: publish_ip: 0.0.0.0 # here\n# live_port: 1\n"
        );
        let set = set_top_level(&kept, "deploy_target", "gke");
        let set = set_top_level(&set, "docker_repo", "r.example.com:5000/team");
        assert!(
            set.contains("\ndeploy_target: gke\n")
                && set.ends_with("\ndocker_repo: r.example.com:5000/team\n"),
            "{set}"
        );
        assert_eq!(
            top_level_value(&set, "docker_repo").as_deref(),
            Some("r.example.com:5000/team")
        );
        assert_eq!(yaml_scalar("true"), "\"true\"");
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pym-scaffold-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_binary_from_crates_io_depends_on_crates_io() {
        let s = Source::built_from(
            Path::new(
                "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pymdeploy-0.1.0",
            ),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(s, Source::Registry);
        assert_eq!(
            s.dependency(TargetKind::Docker),
            format!("\"={}\"", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            s.dependency(TargetKind::AwsBeanstalk),
            format!(
                "{{ version = \"={}\", features = [\"aws-beanstalk\"] }}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn a_binary_from_cargo_install_git_depends_on_that_repository_at_its_commit() {
        let home = tmp("crates2");
        let key = format!(
            "pymdeploy {} (git+https://git.example.com/team/pymdeploy?branch=main#0123456789abcdef0123456789abcdef01234567)",
            env!("CARGO_PKG_VERSION")
        );
        std::fs::write(
            home.join(".crates2.json"),
            serde_json::json!({"installs": {key: {"bins": ["pymdeploy"]}}}).to_string(),
        )
        .unwrap();
        let s = Source::built_from(
            Path::new("/home/u/.cargo/git/checkouts/pymdeploy-5b1e2f/0123456"),
            &home,
        )
        .unwrap();
        assert_eq!(
            s,
            Source::Git {
                url: "https://git.example.com/team/pymdeploy".into(),
                rev: Some("0123456789abcdef0123456789abcdef01234567".into())
            }
        );
        assert_eq!(
            s.dependency(TargetKind::Docker),
            "{ git = \"https://git.example.com/team/pymdeploy\", rev = \"0123456789abcdef0123456789abcdef01234567\" }"
        );
    }

    #[test]
    fn a_binary_whose_checkout_is_gone_says_what_to_pass() {
        let e = Source::built_from(
            Path::new("/tmp/pym-removed-checkout-for-this-test"),
            Path::new("/nonexistent"),
        )
        .unwrap_err();
        assert!(
            format!("{e}").contains("which is gone, and pymdeploy is not published on crates.io"),
            "{e}"
        );
        assert!(
            crate::error::hint_of(&e)
                .unwrap()
                .contains("--pymdeploy-git")
        );
    }

    #[test]
    fn the_checkout_this_binary_was_built_from_is_used_while_it_exists() {
        let s = Source::resolve(None, None, None).unwrap();
        assert_eq!(s, Source::Path(PathBuf::from(BUILT_FROM)));
        assert!(
            s.dependency(TargetKind::Docker)
                .contains(&format!("path = \"{BUILT_FROM}/{XTASK_CRATE_DIR}\""))
        );
    }

    #[test]
    fn detect_reads_a_python_service() {
        let d = tmp("detect-py");
        std::fs::create_dir_all(d.join("test")).unwrap();
        std::fs::create_dir_all(d.join("testaccept")).unwrap();
        std::fs::write(d.join("requirements.txt"), "flask\n").unwrap();
        std::fs::write(d.join("test/test_app.py"), "").unwrap();
        std::fs::write(d.join("testaccept/test_live.py"), "").unwrap();
        std::fs::write(
            d.join("app.py"),
            "@app.get('/ping')\n@app.get('/version')\n",
        )
        .unwrap();
        std::fs::write(
            d.join("Dockerfile"),
            "FROM python:3.11-slim\nEXPOSE 5000\nCMD gunicorn app:app\n",
        )
        .unwrap();
        let found = detect(&d);
        assert_eq!(found.kind, "Python");
        assert_eq!(
            found.test_command.as_deref(),
            Some("python3 -m pytest -q test")
        );
        assert_eq!(
            found.accept_command.as_deref(),
            Some("python3 -m pytest -q testaccept")
        );
        assert_eq!(found.port, Some(5000));
        assert_eq!(found.rust_binary, None);
        assert!(found.todo.is_empty(), "{:?}", found.todo);
    }

    #[test]
    fn detect_sees_a_multi_stage_rust_build_and_compiles_nothing_on_the_host() {
        let d = tmp("detect-rs");
        std::fs::write(d.join("Cargo.toml"), "[package]\nname = \"api\"\n").unwrap();
        std::fs::write(d.join("Dockerfile"), "FROM rust:1 AS build\nRUN cargo build --release\nFROM debian:bookworm-slim\nCOPY --from=build /target/release/api /api\n").unwrap();
        let found = detect(&d);
        assert_eq!((found.kind, found.rust_binary.as_deref()), ("Rust", None));
        assert!(
            found.evidence.iter().any(|e| e.contains("2 stages")),
            "{:?}",
            found.evidence
        );
        assert!(
            found.todo.iter().any(|t| t.starts_with("port:")),
            "{:?}",
            found.todo
        );
        assert!(
            found
                .todo
                .iter()
                .any(|t| t.starts_with("verify_version: false for now"))
                && !found.has_version,
            "{:?}",
            found.todo
        );
        std::fs::write(
            d.join("Dockerfile"),
            "FROM debian:bookworm-slim\nCOPY .pym/dist/api /usr/local/bin/api\n",
        )
        .unwrap();
        assert_eq!(detect(&d).rust_binary.as_deref(), Some("api"));
    }

    #[test]
    fn the_alias_merges_into_a_cargo_config_and_keeps_the_rest() {
        let d = tmp("alias");
        let path = d.join("config.toml");
        let template = include_str!("../template/common/cargo-config.toml");
        std::fs::write(
            &path,
            "# ours\n[build]\njobs = 2\n\n[alias]\nb = \"build\"\n",
        )
        .unwrap();
        let m = merge_alias(&path, template).unwrap();
        let text = m.text.unwrap();
        assert!(!m.conflict);
        assert!(text.starts_with("# ours\n[build]\njobs = 2\n"), "{text}");
        assert!(
            text.contains("b = \"build\"")
                && text.contains("xtask = \"run --config build.build-dir="),
            "{text}"
        );
        std::fs::write(&path, &text).unwrap();
        assert!(
            merge_alias(&path, template).unwrap().text.is_none(),
            "the same alias again changes nothing"
        );
        std::fs::write(&path, "[alias]\nxtask = \"run -p xtask --\"\n").unwrap();
        assert!(
            merge_alias(&path, template).unwrap().conflict,
            "an xtask alias of the repository's own is a conflict"
        );
    }
}

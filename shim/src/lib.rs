//! What a service's xtask builds on: its pipeline, written in Rust and versioned with the
//! service, run by the `pymdeploy` binary of exactly this crate's version.
//!
//! The xtask compiles this crate alone (no dependencies: a second or two, cold), then
//! hands its pipeline to the binary. The binary is found, in order: `PYMDEPLOY_BIN`; the
//! copy installed for this version and these features under cargo's home
//! (`$CARGO_HOME/pymdeploy/bin/<version>-<features>/`, or under `PYMDEPLOY_HOME`); `pymdeploy` on `PATH` when it is
//! this version with these targets. Else it is installed there once per machine with
//! `cargo install` (from the pymdeploy checkout this crate comes from, or crates.io). From
//! a checkout on this machine (a path dependency), a binary older than the checkout's
//! sources is not used: it is installed anew, as cargo would rebuild it.
//!
//! ```no_run
//! use pymdeploy_xtask::{Pipeline, PymEnv::*, steps::*};
//! fn main() -> std::process::ExitCode {
//!     Pipeline::new()
//!         .step(Test)
//!         .step(pymdeploy_xtask::command("lint", "Run clippy", "cargo clippy -- -D warnings"))
//!         .step(Build)
//!         .command(Status)
//!         .run()
//! }
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The binary's version this crate runs: its own.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The environment variable the binary reads this pipeline from.
const PIPELINE_VAR: &str = "PYMDEPLOY_XTASK_PIPELINE";

/// Where the service runs, as `PYM_ENV` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PymEnv {
    Local,
    Staging,
    Live,
}

/// What a step acts on: `--no-push` leaves out the steps that reach a registry or a
/// target, `--no-deploy` those that reach a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Local,
    Registry,
    Target,
}

/// One step of the pipeline: a standard one (by name), or a team's own command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    name: String,
    /// A team's step: its help line and the shell command it runs in the service root.
    own: Option<Own>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Own {
    about: String,
    run: String,
    reach: Reach,
    changes: bool,
}

impl Step {
    /// Says what a team's step acts on and whether it changes it (this machine, and no
    /// change, by default), so `--no-push`, `--no-deploy` and the deploy lock treat it
    /// like the standard steps that do the same. No effect on a standard step.
    pub fn reaching(mut self, reach: Reach, changes: bool) -> Step {
        if let Some(own) = &mut self.own {
            (own.reach, own.changes) = (reach, changes);
        }
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A team's own step: `run` with `sh -c` in the service root, its output streamed, a
/// non-zero exit failing the pipeline. It sees the version being deployed as `PYM_VERSION`.
pub fn command(name: &str, about: &str, run: &str) -> Step {
    Step {
        name: name.to_string(),
        own: Some(Own {
            about: about.to_string(),
            run: run.to_string(),
            reach: Reach::Local,
            changes: false,
        }),
    }
}

/// The standard steps, under the names the `pymdeploy` library gives them.
pub mod steps {
    use super::{PymEnv, Step};

    macro_rules! standard {
        ($($(#[$doc:meta])* $ty:ident => $name:literal,)*) => {
            $(
                $(#[$doc])*
                pub struct $ty;
                impl From<$ty> for Step {
                    fn from(_: $ty) -> Step {
                        Step { name: $name.to_string(), own: None }
                    }
                }
            )*
        };
    }

    standard! {
        /// The unit tests: `test_command`.
        Test => "test",
        /// The docker image, tagged with the version.
        Build => "build",
        /// The image, run locally, against `accept_command`.
        AcceptLocal => "accept-local",
        /// The image, to the registry `docker_repo` names.
        Push => "push",
        /// The pushed image, as the staging environment of `deploy_target`.
        Stage => "stage",
        /// Staging's version made live, blue/green, verified.
        Promote => "promote",
        /// The previous live version, live again.
        Rollback => "rollback",
        /// What runs where.
        Status => "status",
    }

    /// The acceptance tests against an environment: `accept-staging`, `accept-live`.
    pub struct Accept(pub PymEnv);

    impl From<Accept> for Step {
        fn from(a: Accept) -> Step {
            let name = match a.0 {
                PymEnv::Local => "accept-local",
                PymEnv::Staging => "accept-staging",
                PymEnv::Live => "accept-live",
            };
            Step {
                name: name.to_string(),
                own: None,
            }
        }
    }
}

/// The pipeline: the steps `deploy` runs in order, and the commands run only by name.
#[derive(Default)]
pub struct Pipeline {
    steps: Vec<Step>,
    commands: Vec<Step>,
}

impl Pipeline {
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// Appends a step.
    pub fn step(mut self, step: impl Into<Step>) -> Pipeline {
        self.steps.push(step.into());
        self
    }

    /// Inserts a step before the one named `before`; panics if there is none, since a
    /// pipeline is written by hand and a typo there should fail loudly.
    pub fn step_before(mut self, before: &str, step: impl Into<Step>) -> Pipeline {
        let i = self
            .steps
            .iter()
            .position(|s| s.name == before)
            .unwrap_or_else(|| panic!("no step named `{before}` in the pipeline"));
        self.steps.insert(i, step.into());
        self
    }

    /// Adds a command: a step that runs only when asked for by name, never in `deploy`.
    pub fn command(mut self, step: impl Into<Step>) -> Pipeline {
        self.commands.push(step.into());
        self
    }

    /// The pipeline as the binary reads it: a JSON array of steps.
    pub fn to_json(&self) -> String {
        let mut out = String::from("[");
        let all = self.steps.iter().map(|s| (s, false));
        for (i, (s, command)) in all
            .chain(self.commands.iter().map(|s| (s, true)))
            .enumerate()
        {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "{{\"name\":{},\"command\":{command}",
                json_string(&s.name)
            ));
            if let Some(own) = &s.own {
                let reach = match own.reach {
                    Reach::Local => "local",
                    Reach::Registry => "registry",
                    Reach::Target => "target",
                };
                out.push_str(&format!(
                    ",\"about\":{},\"run\":{},\"reach\":\"{reach}\",\"changes\":{}",
                    json_string(&own.about),
                    json_string(&own.run),
                    own.changes
                ));
            }
            out.push('}');
        }
        out.push(']');
        out
    }

    /// Runs the pipeline with this command line: replaces this process with the
    /// `pymdeploy` binary of this version (so Ctrl-C and the process id are the binary's).
    pub fn run(self) -> ExitCode {
        let features = features();
        let binary = match find(&features) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut cmd = Command::new(&binary);
        cmd.args(std::env::args_os().skip(1))
            .env(PIPELINE_VAR, self.to_json());
        exec(cmd, &binary)
    }
}

#[cfg(unix)]
fn exec(mut cmd: Command, binary: &Path) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    eprintln!("error: cannot run {}: {e}", binary.display());
    ExitCode::FAILURE
}

#[cfg(not(unix))]
fn exec(mut cmd: Command, binary: &Path) -> ExitCode {
    match cmd.status() {
        Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: cannot run {}: {e}", binary.display());
            ExitCode::FAILURE
        }
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The features the xtask turned on: the targets the binary must have.
pub fn features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "aws-beanstalk") {
        f.push("aws-beanstalk");
    }
    if cfg!(feature = "gcp-cloud-run") {
        f.push("gcp-cloud-run");
    }
    if cfg!(feature = "gke") {
        f.push("gke");
    }
    if cfg!(feature = "docker-tls") {
        f.push("docker-tls");
    }
    f
}

/// What `pymdeploy --version` says: `pymdeploy <version> (features: a, b)`, or no
/// parenthesis when it has none. `None` when it is not that shape.
pub fn parse_version(line: &str) -> Option<(String, Vec<String>)> {
    let rest = line.trim().strip_prefix("pymdeploy ")?;
    let (version, features) = match rest.split_once(" (features: ") {
        Some((v, f)) => (
            v,
            f.strip_suffix(')')?
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        ),
        None => (rest, Vec::new()),
    };
    Some((version.trim().to_string(), features))
}

/// The binary's version and features, asked of it.
fn ask_version(binary: &Path) -> Option<(String, Vec<String>)> {
    let out = Command::new(binary)
        .arg("--version")
        .env_remove(PIPELINE_VAR)
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

fn fits(found: &(String, Vec<String>), features: &[&str]) -> bool {
    found.0 == VERSION && features.iter().all(|f| found.1.iter().any(|g| g == f))
}

fn cargo_home() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(h) => PathBuf::from(h),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"),
    }
}

/// Where pymdeploy keeps its binaries and their build: `PYMDEPLOY_HOME`, by default
/// `$CARGO_HOME/pymdeploy`.
fn pymdeploy_home() -> PathBuf {
    std::env::var_os("PYMDEPLOY_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_home().join("pymdeploy"))
}

/// Where this version with these features is installed: one directory per pair.
pub fn install_root(features: &[&str]) -> PathBuf {
    let key = match features {
        [] => "docker".to_string(),
        f => f.join("+"),
    };
    pymdeploy_home()
        .join("bin")
        .join(format!("{VERSION}-{key}"))
}

fn find(features: &[&str]) -> Result<PathBuf, String> {
    let wanted = || match features {
        [] => format!("pymdeploy {VERSION}"),
        f => format!("pymdeploy {VERSION} with {}", f.join(", ")),
    };
    if let Some(bin) = std::env::var_os("PYMDEPLOY_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return match ask_version(&bin) {
            Some(found) if fits(&found, features) => Ok(bin),
            Some((v, f)) => Err(format!(
                "PYMDEPLOY_BIN={} is pymdeploy {v} with [{}], and this xtask needs {}\n  hint: unset PYMDEPLOY_BIN (the right one is found or installed), or point it at {}",
                bin.display(),
                f.join(", "),
                wanted(),
                wanted()
            )),
            None => Err(format!(
                "PYMDEPLOY_BIN={} does not run as pymdeploy (`--version` says no version)\n  hint: unset PYMDEPLOY_BIN, or point it at {}",
                bin.display(),
                wanted()
            )),
        };
    }
    let root = install_root(features);
    let installed = root.join("bin").join(exe("pymdeploy"));
    if installed.is_file() && fresh(&installed) {
        return Ok(installed);
    }
    if let Some(on_path) = on_path("pymdeploy")
        && fresh(&on_path)
        && ask_version(&on_path).is_some_and(|found| fits(&found, features))
    {
        return Ok(on_path);
    }
    if installed.is_file() {
        // Stale: the checkout changed since. Installed anew over it.
        let _ = std::fs::remove_dir_all(&root);
    }
    install(features, &root, &wanted())?;
    Ok(installed)
}

/// Whether a binary is at least as new as the pymdeploy checkout this crate comes from
/// (its sources, templates and manifests), as cargo judges freshness: a path dependency
/// on a checkout that changed without a new version runs what the checkout says now. A
/// crates.io release never changes, nor does a git dependency's checkout of one commit.
fn fresh(binary: &Path) -> bool {
    let Some(dir) = checkout() else {
        return true;
    };
    if dir.components().any(|c| c.as_os_str() == "checkouts") {
        return true;
    }
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return false;
    };
    let mut newest = None;
    for part in ["src", "template", "Cargo.toml", "Cargo.lock", "build.rs"] {
        newest_mtime(&dir.join(part), &mut newest);
    }
    newest.is_none_or(|n| n <= built)
}

fn newest_mtime(path: &Path, newest: &mut Option<std::time::SystemTime>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            newest_mtime(&entry.path(), newest);
        }
    } else if let Ok(m) = meta.modified()
        && newest.is_none_or(|n| m > n)
    {
        *newest = Some(m);
    }
}

fn exe(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(exe(name)))
        .find(|p| p.is_file())
}

/// The pymdeploy checkout this crate was compiled from, when it was (a path or git
/// dependency): the directory above this crate's, holding pymdeploy of this version.
fn checkout() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let is_it = manifest.lines().any(|l| l.trim() == "name = \"pymdeploy\"")
        && manifest
            .lines()
            .any(|l| l.trim() == format!("version = \"{VERSION}\""));
    is_it.then(|| dir.to_path_buf())
}

/// `cargo install` of this version with these features into `root`, once per machine:
/// into a directory of its own first, then moved into place, so a run that stops halfway
/// or two installing at once never leave a half-installed binary where `find` looks.
fn install(features: &[&str], root: &Path, wanted: &str) -> Result<(), String> {
    let parent = root.parent().expect("the install root has a parent");
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let prefix = format!(
        ".installing-{}-",
        root.file_name().unwrap_or_default().to_string_lossy()
    );
    // An install stopped by Ctrl-C (this process dies with cargo) left its directory:
    // removed once no process of that id runs.
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.strip_prefix(&prefix)
            && !Path::new("/proc").join(pid).exists()
            && Path::new("/proc/self").exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let staging = parent.join(format!("{prefix}{}", std::process::id()));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.args(["install", "--locked", "--debug", "--quiet", "--root"])
        .arg(&staging);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    let from = match checkout() {
        Some(dir) => {
            cmd.arg("--path").arg(&dir);
            dir.display().to_string()
        }
        None => {
            cmd.args(["pymdeploy", "--version", &format!("={VERSION}")]);
            "crates.io".to_string()
        }
    };
    // The compiled dependencies are kept for the next version or feature set.
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        cmd.env("CARGO_TARGET_DIR", pymdeploy_home().join("build"));
    }
    eprintln!(
        "    Installing {wanted} for this machine, once (from {from}, into {}): a few minutes",
        root.display()
    );
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"));
    let result = match status {
        Ok(s) if s.success() => match std::fs::rename(&staging, root) {
            Ok(()) => Ok(()),
            // Another run installed it meanwhile: theirs is as good.
            Err(_) if root.join("bin").join(exe("pymdeploy")).is_file() => Ok(()),
            Err(e) => Err(format!(
                "cannot move {} to {}: {e}",
                staging.display(),
                root.display()
            )),
        },
        Ok(s) => Err(format!(
            "installing {wanted} failed ({s})\n  hint: see cargo's error above; or install it yourself and point PYMDEPLOY_BIN at it"
        )),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&staging);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use steps::*;

    #[test]
    fn the_pipeline_as_json() {
        let p = Pipeline::new()
            .step(Test)
            .step(Build)
            .step(Accept(PymEnv::Staging))
            .step_before(
                "build",
                command("lint", "Run \"clippy\"", "cargo clippy\t-- -D warnings")
                    .reaching(Reach::Registry, true),
            )
            .command(Status);
        assert_eq!(
            p.to_json(),
            r#"[{"name":"test","command":false},{"name":"lint","command":false,"about":"Run \"clippy\"","run":"cargo clippy\t-- -D warnings","reach":"registry","changes":true},{"name":"build","command":false},{"name":"accept-staging","command":false},{"name":"status","command":true}]"#
        );
    }

    #[test]
    #[should_panic(expected = "no step named `nope`")]
    fn a_step_before_a_missing_one_panics() {
        let _ = Pipeline::new().step(Test).step_before("nope", Build);
    }

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("pymdeploy 0.1.0 (features: gke, docker-tls)\n"),
            Some(("0.1.0".into(), vec!["gke".into(), "docker-tls".into()]))
        );
        assert_eq!(
            parse_version("pymdeploy 0.1.0\n"),
            Some(("0.1.0".into(), vec![]))
        );
        assert_eq!(parse_version("cargo 1.94.1"), None);
        let found = ("0.1.0".to_string(), vec!["gke".to_string()]);
        assert!(fits(&found, &[]) == (VERSION == "0.1.0"));
        assert!(!fits(&found, &["aws-beanstalk"]));
    }

    #[test]
    fn this_crate_is_pymdeploys_version() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(
            checkout().is_some(),
            "pymdeploy-xtask {VERSION} must be pymdeploy's version:\n{manifest}"
        );
    }
}

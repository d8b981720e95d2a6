//! `pym-config.yaml`, typed.
//!
//! The service's settings live in `pym-config.yaml`; `pym-config.<env>.yaml`, when present,
//! overlays it key by key for one environment (local, staging, live). Key names are
//! PyMacaron's where PyMacaron had one (`name`, `deploy_target`, `docker_repo`,
//! `docker_base`, `live_url`, `env_secrets`, `aws_*`, `gcp_*`); new keys follow the same
//! snake_case style.
//!
//! Each file is checked on its own first, so a misspelt key or a wrong type is reported
//! with the file, line and column it is on, with a suggestion when a known key is close.
//! Only then are the files merged and required keys checked.

use std::fmt;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::{Problems, hinted};

mod edge;
mod rollout;
pub use edge::{AcmeWord, LETS_ENCRYPT, Tls};
pub use rollout::{
    DEFAULT_ERRORS, DEFAULT_P95_MS, DEFAULT_REQUESTS, Rollout, Strategy, fmt_percent,
};

pub const CONFIG_FILE: &str = "pym-config.yaml";

/// A non-zero default (of a port, a timeout, a count), its type taken from the key's.
macro_rules! nonzero {
    ($n:literal) => {
        std::num::NonZero::new($n).expect("a default above 0")
    };
}

/// Where the service runs: PyMacaron's `PYM_ENV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PymEnv {
    Local,
    Staging,
    Live,
}

impl PymEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            PymEnv::Local => "local",
            PymEnv::Staging => "staging",
            PymEnv::Live => "live",
        }
    }
}

impl fmt::Display for PymEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares the targets, one line each: the `TargetKind` variant, its name in
/// `pym-config.yaml` and on the command line, and the file beside the target
/// (`targets/<name>/about.rs`) that declares the keys only it reads (a `target_keys!`)
/// and what `new` and `init` write and say for it (its `INTRODUCTION`). That file
/// belongs to this layer: it uses nothing but what this module defines.
macro_rules! target_kinds {
    ($( $(#[$m:meta])* $variant:ident = $name:literal in $file:literal as $about:ident { keys: $keys:ident }, )*) => {
        target_kinds! { @ [$] $( $(#[$m])* $variant = $name in $file as $about { keys: $keys }, )* }
    };
    (@ [$d:tt] $( $(#[$m:meta])* $variant:ident = $name:literal in $file:literal as $about:ident { keys: $keys:ident }, )*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
        pub enum TargetKind {
            $( $(#[$m])* #[serde(rename = $name)] #[value(name = $name)] $variant, )*
        }

        impl TargetKind {
            pub fn as_str(self) -> &'static str {
                match self {
                    $( TargetKind::$variant => $name, )*
                }
            }

            /// What `new` and `init` write and say for the target.
            pub fn introduction(self) -> &'static Introduction {
                match self {
                    $( TargetKind::$variant => &$about::INTRODUCTION, )*
                }
            }

            /// The keys the target cannot deploy without, each with an example value.
            pub fn requires(self) -> &'static [(&'static str, &'static str)] {
                match self {
                    $( TargetKind::$variant => $about::REQUIRES, )*
                }
            }
        }

        $(
            #[macro_use]
            #[path = $file]
            pub mod $about;
        )*

        /// `config!` with every target's own keys added to the optional ones.
        macro_rules! config_with_target_keys {
            ($d($d body:tt)*) => {
                config! { targets [$($keys),*] $d($d body)* }
            };
        }
    };
}

/// What a new service on a target starts with, and what it is told to do next.
pub struct Introduction {
    /// Lines of pym-config.yaml a new service on the target is most likely to set,
    /// commented out (`{{name}}` stands for the service's name).
    pub config: &'static str,
    /// The generated README's part about the target.
    pub readme: &'static str,
    /// What `new` says to do next, after `cd <dir>`.
    pub next: &'static str,
    /// What `init` asks to decide in pym-config.yaml.
    pub decide: &'static [&'static str],
}

/// Declares, in a target's `about.rs`, the keys only that target reads: a macro named
/// `<target>_keys` that adds them to the list `config!` is making and passes it on.
macro_rules! target_keys {
    ($name:ident { $($keys:tt)* }) => {
        target_keys! { @ [$] $name { $($keys)* } }
    };
    (@ [$d:tt] $name:ident { $($keys:tt)* }) => {
        macro_rules! $name {
            ([$d($d rest:ident),*] required { $d($d r:tt)* } optional { $d($d o:tt)* }) => {
                config! { targets [$d($d rest),*] required { $d($d r)* } optional { $d($d o)* $($keys)* } }
            };
        }
    };
}

target_kinds! {
    Docker = "docker" in "targets/docker/about.rs" as docker_about { keys: docker_keys },
    AwsBeanstalk = "aws-beanstalk" in "targets/beanstalk/about.rs" as beanstalk_about { keys: beanstalk_keys },
    GcpCloudRun = "gcp-cloud-run" in "targets/cloudrun/about.rs" as cloudrun_about { keys: cloudrun_keys },
    /// Any Kubernetes cluster a kubeconfig reaches (GKE's included).
    #[serde(alias = "kubernetes")]
    #[value(alias = "kubernetes")]
    Gke = "gke" in "targets/gke/about.rs" as gke_about { keys: gke_keys },
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a key applies to: one deploy target, or the kind of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Target(TargetKind),
    /// A Rust service: a Cargo.toml in the service root.
    Rust,
}

impl Scope {
    fn target(self) -> Option<TargetKind> {
        match self {
            Scope::Target(t) => Some(t),
            Scope::Rust => None,
        }
    }
}

/// A key's scope as declared (`=> Rust`, or a `TargetKind` variant).
macro_rules! scope {
    (Rust) => {
        Scope::Rust
    };
    ($target:ident) => {
        Scope::Target(TargetKind::$target)
    };
}

/// One key of `pym-config.yaml`: its name, description, scope and JSON Schema.
pub struct Key {
    pub name: &'static str,
    pub about: &'static str,
    /// Empty: every target and kind of service.
    pub scopes: &'static [Scope],
    pub schema: fn() -> serde_json::Value,
    /// The value an unset key takes (`None`: the key is required).
    pub default: Option<fn() -> serde_json::Value>,
}

impl Key {
    /// The targets this key is read by, if it is limited to some.
    pub fn targets(&self) -> Vec<TargetKind> {
        self.scopes.iter().filter_map(|s| s.target()).collect()
    }

    /// The default as the user would write it: `8080`, `"/ping"`, `["2xx"]`; "unset" for
    /// an optional key with no value, "required" for a key that must be set.
    pub fn default_text(&self) -> String {
        match self.default.map(|d| d()) {
            None => "required".into(),
            Some(serde_json::Value::Null) => "unset".into(),
            Some(v) => v.to_string(),
        }
    }

    /// What the key is read by: "every target", the targets it is limited to, or Rust
    /// services.
    pub fn read_by(&self) -> String {
        let targets: Vec<&str> = self.targets().iter().map(|t| t.as_str()).collect();
        match (targets.is_empty(), self.scopes.contains(&Scope::Rust)) {
            (_, true) => "Rust services".into(),
            (true, false) => "every target".into(),
            (false, false) => targets.join(", "),
        }
    }
}

/// Declares the config once: the typed `Config`, the all-optional `Raw` each file is
/// parsed into, and the key list used for suggestions, scope checks and the schema.
macro_rules! config {
    // Each target's own keys (`targets/<name>/about.rs`, through `target_keys!`) join
    // the optional ones, one target after the other; then the whole list is declared.
    (
        targets [$next:ident $(, $rest:ident)*]
        $($body:tt)*
    ) => {
        $next! { [$($rest),*] $($body)* }
    };
    (
        targets []
        required { $( $(#[doc = $rdoc:literal])* $r:ident : $rt:ty, )* }
        optional { $( $(#[doc = $odoc:literal])* $o:ident : $ot:ty = $od:expr $(=> $($scope:ident)|+)?, )* }
    ) => {
        /// The merged configuration of one service for one environment.
        #[derive(Clone, Debug, Serialize)]
        pub struct Config {
            $( $(#[doc = $rdoc])* pub $r: $rt, )*
            $( $(#[doc = $odoc])* pub $o: $ot, )*
            /// Which file set each key, for messages that point at it.
            #[serde(skip)]
            pub origins: Origins,
        }

        #[derive(Clone, Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            $( #[serde(default)] $r: Option<$rt>, )*
            $( #[serde(default)] $o: Option<$ot>, )*
        }

        /// Every key `pym-config.yaml` accepts.
        pub const KEYS: &[Key] = &[
            $( Key { name: stringify!($r), about: concat!($($rdoc),*), scopes: &[], schema: <$rt as Schema>::schema, default: None }, )*
            $( Key { name: stringify!($o), about: concat!($($odoc),*), scopes: &[$($(scope!($scope)),+)?], schema: <$ot as Schema>::schema,
                default: Some(|| serde_json::to_value::<$ot>($od).expect("a default serializes")) }, )*
        ];

        impl Raw {
            fn overlay(&mut self, other: Raw) {
                $( if other.$r.is_some() { self.$r = other.$r; } )*
                $( if other.$o.is_some() { self.$o = other.$o; } )*
            }

            /// The keys this file sets.
            fn set_keys(&self) -> Vec<&'static str> {
                let mut out = Vec::new();
                $( if self.$r.is_some() { out.push(stringify!($r)); } )*
                $( if self.$o.is_some() { out.push(stringify!($o)); } )*
                out
            }

            fn finish(self, file: &Path) -> Result<Config> {
                $( let Some($r) = self.$r else {
                    return Err(hinted(
                        format!("{}:1: missing required key `{}`", file.display(), stringify!($r)),
                        format!("add `{}: ...` to {} ({})", stringify!($r), file.display(), concat!($($rdoc),*).trim()),
                    ));
                }; )*
                $( let $o = self.$o.unwrap_or_else(|| $od); )*
                Ok(Config { $( $r, )* $( $o, )* origins: Origins::default() })
            }
        }
    };
}

config_with_target_keys! {
    required {
        /// the service's name: the image name and the container and environment prefix
        name: String,
        /// where `stage` and `promote` deploy: docker, aws-beanstalk, gcp-cloud-run or gke
        deploy_target: TargetKind,
    }
    optional {
        /// who this service is where targets are shared (written by `new` and `init`): what pymdeploy made there for a same-named service of another repository is refused, never touched; unset, the repository's first commit
        service_id: Option<String> = None,
        /// registry and namespace images are tagged under, e.g. `registry.example.com/team`
        docker_repo: Option<String> = None,
        /// the runtime base image, passed to the Dockerfile as the build argument PYM_BASE
        docker_base: Option<String> = None,
        /// the public URL of the live service
        live_url: Option<String> = None => AwsBeanstalk | GcpCloudRun | Gke,
        /// names of environment variables passed from the caller's environment to the service
        env_secrets: Vec<String> = Vec::new(),
        /// the port the service listens on inside its container (given to it as PORT)
        port: Port = nonzero!(8080),
        /// the path that answers when the service is ready (see `health_statuses`)
        health_path: String = "/ping".to_string(),
        /// the answers to `health_path` that mean healthy: codes like `200`, or classes like `2xx`
        health_statuses: Vec<String> = vec!["2xx".to_string()],
        /// the path that answers JSON `{\"version\": ..., \"pym_env\": ...}`, checked before push and after each switch
        version_path: String = "/version".to_string(),
        /// check that each environment serves the version just deployed (false: health alone decides)
        verify_version: bool = true,
        /// seconds to wait for the service to become healthy
        health_timeout: NonZeroU64 = nonzero!(60),
        /// how many previous live versions are kept for rollback
        keep_previous: u32 = 2,
        /// roll back automatically when the live acceptance tests fail
        rollback_on_failure: bool = true,
        /// how promote moves live to a new version: `{strategy: blue-green}` (all at once), or `{strategy: canary, steps: [5, 25, 50], step_seconds: 60, bake_seconds: 300, max_error_rate: 0.01, max_p95_ms: 500, min_requests: 100}` (a share of live at each step, judged on the new version's requests; then a bake, the previous version still running); see docs/rollout.md
        rollout: Rollout = Rollout::default(),
        /// the unit-test command (default: `cargo test` in a Rust service, else `python3 -m pytest -q test`; `""`: none)
        test_command: Option<String> = None,
        /// the acceptance-test command, run against a server given by PYM_SERVER_HOST and PYM_SERVER_PORT (default: the `testaccept` crate, else `python3 -m pytest -q testaccept`; `""`: none, health and the version check alone)
        accept_command: Option<String> = None,
        /// seconds the unit tests may run before they are stopped and the step fails
        test_timeout: NonZeroU64 = nonzero!(1800),
        /// seconds one run of the acceptance tests may take before it is stopped and the step fails
        accept_timeout: NonZeroU64 = nonzero!(600),
        /// the Dockerfile, relative to the service root
        dockerfile: String = "Dockerfile".to_string(),
        /// the binary `build` compiles with cargo and places in .pym/dist/ for the Dockerfile to copy
        rust_binary: Option<String> = None => Rust,
        /// the cargo target triple for `rust_binary` (a Linux target when building on macOS)
        rust_target: Option<String> = None => Rust,
    }
}

/// The configuration of every environment, loaded and checked together before the
/// first step, so a mistake in `pym-config.live.yaml` is found before anything is built,
/// not at promote.
#[derive(Clone, Debug)]
pub struct Configs {
    pub local: Config,
    pub staging: Config,
    pub live: Config,
}

impl Configs {
    /// Loads `pym-config.yaml` and each environment's overlay, and checks what can be
    /// checked from the files alone: every file's keys and types, overlays for unknown
    /// environments, keys of another target, keys a target requires, ports that collide.
    /// Every mistake found is said, in one report.
    pub fn load(root: &Path) -> Result<Configs> {
        let base = root.join(CONFIG_FILE);
        if !base.exists() {
            return Err(hinted(
                format!("no {CONFIG_FILE} in {}", root.display()),
                "run this in a service root, or create one with `pymdeploy new NAME` or `pymdeploy init`",
            ));
        }
        let mut problems = Problems::default();
        check_overlay_names(root, &mut problems);
        let (base_raw, base_failed) = parse_file(&base, &mut problems);
        let one = |env, problems: &mut Problems| -> Option<Config> {
            let mut files = vec![(base.clone(), base_raw.clone())];
            let mut failed = base_failed.clone();
            let overlay = overlay_path(root, env);
            if overlay.exists() {
                let (raw, f) = parse_file(&overlay, problems);
                files.push((overlay, raw));
                failed.extend(f);
            }
            let mut merged = Raw::default();
            let mut set = Vec::new();
            for (path, raw) in files {
                set.push((path, raw.set_keys()));
                merged.overlay(raw);
            }
            // A required key whose value was refused is not said missing as well.
            let mut config = match merged.finish(&base) {
                Ok(c) => c,
                Err(e) => {
                    let said = failed
                        .iter()
                        .any(|k| k == "*" || e.to_string().contains(&format!("`{k}`")));
                    if !said {
                        problems.push(e);
                    }
                    return None;
                }
            };
            config.origins = Origins::of(&base, &set);
            config.validate(problems);
            check_scopes(root, &config, &set, problems);
            Some(config)
        };
        let local = one(PymEnv::Local, &mut problems);
        let staging = one(PymEnv::Staging, &mut problems);
        let live = one(PymEnv::Live, &mut problems);
        if let (Some(local), Some(staging), Some(live)) = (local, staging, live) {
            let configs = Configs {
                local,
                staging,
                live,
            };
            configs.check_together(root, &mut problems);
            problems.finish(", so nothing was started")?;
            return Ok(configs);
        }
        problems.finish(", so nothing was started")?;
        unreachable!("a config that did not load has a problem said")
    }

    pub fn get(&self, env: PymEnv) -> &Config {
        match env {
            PymEnv::Local => &self.local,
            PymEnv::Staging => &self.staging,
            PymEnv::Live => &self.live,
        }
    }

    /// What only the environments together can tell.
    fn check_together(&self, root: &Path, problems: &mut Problems) {
        let (s, l) = (&self.staging, &self.live);
        if s.deploy_target != l.deploy_target || s.name != l.name {
            problems.push(hinted(
                format!(
                    "{}: staging and live differ in `name` or `deploy_target` ({} {} and {} {})",
                    root.display(),
                    s.name,
                    s.deploy_target,
                    l.name,
                    l.deploy_target
                ),
                "set `name` and `deploy_target` in pym-config.yaml only, not in an overlay",
            ));
        }
        if l.deploy_target == TargetKind::Docker
            && s.staging_port == l.live_port
            && (s.publish_ip == l.publish_ip
                || s.publish_ip == "0.0.0.0"
                || l.publish_ip == "0.0.0.0")
        {
            problems.push(hinted(
                format!(
                    "{}: `staging_port` and `live_port` are both {}: staging and live would claim the same address",
                    s.at("staging_port"),
                    l.live_port
                ),
                "give staging and live different ports (the defaults are 8081 and 8080)",
            ));
        }
        // What each target cannot deploy without, said where `deploy_target` names it.
        for c in [s, l] {
            for (key, example) in l.deploy_target.requires() {
                if c.is_unset(key) {
                    let about = KEYS.iter().find(|k| k.name == *key).map_or("", |k| k.about);
                    problems.push(hinted(
                        format!(
                            "{}: the {} target needs `{key}` ({})",
                            c.at("deploy_target"),
                            l.deploy_target,
                            about.trim()
                        ),
                        format!("set `{key}: {example}` in pym-config.yaml"),
                    ));
                }
            }
        }
    }
}

/// Which file set each key of one environment's config: the last of `pym-config.yaml`
/// and its overlay that sets it.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    base: PathBuf,
    keys: Vec<(&'static str, PathBuf)>,
}

impl Origins {
    fn of(base: &Path, set: &[(PathBuf, Vec<&'static str>)]) -> Origins {
        let mut keys: Vec<(&'static str, PathBuf)> = Vec::new();
        for (path, names) in set {
            for name in names {
                keys.retain(|(k, _)| k != name);
                keys.push((name, path.clone()));
            }
        }
        Origins {
            base: base.to_path_buf(),
            keys,
        }
    }
}

impl Config {
    /// Loads the configuration of one environment (all of them are loaded and checked).
    pub fn load(root: &Path, env: PymEnv) -> Result<Config> {
        Ok(Configs::load(root)?.get(env).clone())
    }

    /// Whether `key` has no value (unset, or set to an empty string).
    pub fn is_unset(&self, key: &str) -> bool {
        let value = serde_json::to_value(self).unwrap_or_default();
        value[key].is_null() || value[key] == ""
    }

    /// Where `key` is set, as `file:line` for messages: the file that set it last, or
    /// `pym-config.yaml` where the key would go when none does.
    pub fn at(&self, key: &str) -> String {
        let o = &self.origins;
        match o.keys.iter().find(|(k, _)| *k == key) {
            Some((_, path)) => format!("{}:{}", path.display(), key_line(path, key)),
            None if o.base.as_os_str().is_empty() => CONFIG_FILE.to_string(),
            None => format!("{}:{}", o.base.display(), key_line(&o.base, key)),
        }
    }

    fn validate(&self, problems: &mut Problems) {
        if let Err(why) = validate_name(&self.name) {
            problems.push(hinted(
                format!("{}: key `name`: {why}", self.at("name")),
                "a name is lowercase letters, digits and dashes, starting with a letter, like `hello-world`",
            ));
        }
        if !self.health_path.starts_with('/') {
            problems.push(hinted(
                format!(
                    "{}: key `health_path`: `{}` does not start with `/`",
                    self.at("health_path"),
                    self.health_path
                ),
                "write the path as the server sees it, like `/ping`",
            ));
        }
        if !self.version_path.starts_with('/') {
            problems.push(hinted(
                format!(
                    "{}: key `version_path`: `{}` does not start with `/`",
                    self.at("version_path"),
                    self.version_path
                ),
                "write the path as the server sees it, like `/version`",
            ));
        }
        if self.rollout.prometheus_url.is_some() && self.deploy_target != TargetKind::Gke {
            problems.push(hinted(
                format!(
                    "{}: key `rollout`: `prometheus_url` is for the gke target, and `deploy_target` is {}",
                    self.at("rollout"),
                    self.deploy_target
                ),
                "remove `prometheus_url`: this target judges a canary on its own figures",
            ));
        }
        for (why, hint) in self.rollout.problems() {
            problems.push(hinted(
                format!("{}: key `rollout`: {why}", self.at("rollout")),
                hint,
            ));
        }
        for s in &self.health_statuses {
            if health_status_matcher(s).is_none() {
                problems.push(hinted(
                    format!(
                        "{}: key `health_statuses`: `{s}` is not an HTTP status or class",
                        self.at("health_statuses")
                    ),
                    "write codes like `200` or `204`, or classes like `2xx`",
                ));
            }
        }
        for (key, cmd) in [
            ("test_command", &self.test_command),
            ("accept_command", &self.accept_command),
        ] {
            // Empty means none (the step says so); unset, the default.
            if let Some(cmd) = cmd {
                match shell_words::split(cmd) {
                    Ok(_) => {}
                    Err(e) => {
                        problems.push(hinted(
                            format!("{}: key `{key}`: cannot split `{cmd}` into words: {e}", self.at(key)),
                            "commands are split like a shell does, but are not run by a shell: close every quote",
                        ));
                    }
                }
            }
        }
    }

    /// Whether `status` answering `health_path` means healthy.
    pub fn is_healthy_status(&self, status: u16) -> bool {
        self.health_statuses
            .iter()
            .filter_map(|s| health_status_matcher(s))
            .any(|(lo, hi)| (lo..=hi).contains(&status))
    }

    /// Whether images go through a registry (`docker_repo` set).
    pub fn has_registry(&self) -> bool {
        self.docker_repo.as_deref().is_some_and(|r| !r.is_empty())
    }

    /// The image repository, without tag: `<docker_repo>/<name>`, or `<name>` alone.
    pub fn image_repo(&self) -> String {
        match &self.docker_repo {
            Some(repo) if !repo.is_empty() => {
                format!("{}/{}", repo.trim_end_matches('/'), self.name)
            }
            _ => self.name.clone(),
        }
    }

    /// The merged config as YAML, for `pymdeploy config`. Secret values are never
    /// included: `env_secrets` lists names, and each is shown only as set or not set.
    pub fn to_yaml(&self) -> Result<String> {
        let mut value = serde_yaml::to_value(self).context("cannot serialize the config")?;
        if let serde_yaml::Value::Mapping(map) = &mut value {
            let secrets: serde_yaml::Mapping = self
                .env_secrets
                .iter()
                .map(|name| {
                    let state = if std::env::var_os(name).is_some() {
                        "*** (set)"
                    } else {
                        "(not set)"
                    };
                    (name.clone().into(), state.into())
                })
                .collect();
            map.insert("env_secrets".into(), serde_yaml::Value::Mapping(secrets));
        }
        serde_yaml::to_string(&value).context("cannot serialize the config")
    }
}

/// `200` → 200..=200, `2xx` → 200..=299.
fn health_status_matcher(s: &str) -> Option<(u16, u16)> {
    let s = s.trim();
    if let Some(class) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
        let c: u16 = class.parse().ok().filter(|c| (1..=5).contains(c))?;
        return Some((c * 100, c * 100 + 99));
    }
    let code: u16 = s.parse().ok().filter(|c| (100..=599).contains(c))?;
    Some((code, code))
}

pub fn overlay_path(root: &Path, env: PymEnv) -> PathBuf {
    root.join(format!("pym-config.{env}.yaml"))
}

/// Checks a service name: it becomes an image name, a container name and a cargo package.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > 48 {
        return Err(format!("`{name}` is longer than 48 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("`{name}` does not start with a lowercase letter"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("`{name}` contains `{c}`"));
    }
    if name.ends_with('-') || name.contains("--") {
        return Err(format!("`{name}` ends with a dash or has two in a row"));
    }
    Ok(())
}

/// Refuses `pym-config.<x>.yaml` for an `x` that is not an environment: such a file
/// would be silently ignored.
fn check_overlay_names(root: &Path, problems: &mut Problems) {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) => {
            return problems
                .push(anyhow::Error::new(e).context(format!("cannot read {}", root.display())));
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let Some(env) = name
            .strip_prefix("pym-config.")
            .and_then(|r| r.strip_suffix(".yaml").or_else(|| r.strip_suffix(".yml")))
        else {
            continue;
        };
        if name.ends_with(".yml") || !["local", "staging", "live"].contains(&env) {
            let envs = ["local", "staging", "live"];
            let hint = match closest(env, &envs) {
                Some(e) => format!("did you mean pym-config.{e}.yaml?"),
                None => "overlays are pym-config.local.yaml, pym-config.staging.yaml and pym-config.live.yaml".to_string(),
            };
            problems.push(hinted(
                format!(
                    "{}: not an overlay pymdeploy reads: `{env}` is not an environment (local, staging, live)",
                    root.join(&name).display()
                ),
                hint,
            ));
        }
    }
}

/// Refuses keys set for a target the service does not deploy to (`aws_region` with
/// `deploy_target: docker`), and Rust-only keys in a service without a Cargo.toml.
fn check_scopes(
    root: &Path,
    config: &Config,
    set: &[(PathBuf, Vec<&'static str>)],
    problems: &mut Problems,
) {
    for (path, keys) in set {
        for key in keys {
            let Some(k) = KEYS.iter().find(|k| k.name == *key) else {
                continue;
            };
            let targets = k.targets();
            let line = key_line(path, key);
            if !targets.is_empty() && !targets.contains(&config.deploy_target) {
                let names: Vec<&str> = targets.iter().map(|t| t.as_str()).collect();
                let (last, rest) = names.split_last().expect("a scoped key has targets");
                let which = match rest {
                    [] => format!("the {last} target"),
                    _ => format!("the {} and {last} targets", rest.join(", ")),
                };
                problems.push(hinted(
                    format!(
                        "{}:{line}: key `{key}` is for {which}, and `deploy_target` is {}",
                        path.display(),
                        config.deploy_target
                    ),
                    format!("remove `{key}`, or set `deploy_target: {}`", names[0]),
                ));
            }
            if k.scopes.contains(&Scope::Rust) && !root.join("Cargo.toml").is_file() {
                problems.push(hinted(
                    format!(
                        "{}:{line}: key `{key}` is for Rust services, and {} has no Cargo.toml",
                        path.display(),
                        root.display()
                    ),
                    format!(
                        "remove `{key}`: a service that is not built with cargo builds entirely in its Dockerfile"
                    ),
                ));
            }
        }
    }
}

/// The line a top-level key is on, for messages (1 when not found).
fn key_line(path: &Path, key: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
        .map_or(1, |i| i + 1)
}

/// Reads one file key by key, so that every key's mistake is said, not only the first:
/// what parses is kept, each mistake goes to `problems` with its line.
fn parse_file(path: &Path, problems: &mut Problems) -> (Raw, Vec<String>) {
    let mut failed = Vec::new();
    let raw = parse_keys(path, problems, &mut failed);
    (raw, failed)
}

/// `parse_file`'s reading; `failed` gets each key whose value was refused, or `*` when
/// the whole file was.
fn parse_keys(path: &Path, problems: &mut Problems, failed: &mut Vec<String>) -> Raw {
    let mut raw = Raw::default();
    let before = problems.len();
    let whole = |problems: &Problems, failed: &mut Vec<String>| {
        if problems.len() > before {
            failed.push("*".into());
        }
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(anyhow::Error::new(e).context(format!("cannot read {}", path.display())));
            whole(problems, failed);
            return raw;
        }
    };
    // Said plainly, where serde_yaml would say "found character that cannot start any token".
    if let Some(i) = text.lines().position(|l| {
        l.chars()
            .take_while(|c| c.is_whitespace())
            .any(|c| c == '\t')
    }) {
        problems.push(hinted(
            format!(
                "{}:{}: YAML forbids tabs for indentation",
                path.display(),
                i + 1
            ),
            "indent with spaces",
        ));
        whole(problems, failed);
        return raw;
    }
    let mapping = match serde_yaml::from_str::<serde_yaml::Value>(&text) {
        Ok(serde_yaml::Value::Mapping(m)) => m,
        Ok(serde_yaml::Value::Null) => return raw,
        Ok(other) => {
            let what = match other {
                serde_yaml::Value::Sequence(_) => "a list",
                _ => "a single value",
            };
            problems.push(hinted(
                format!(
                    "{}:1: {} must be a mapping of keys to values, not {what}",
                    path.display(),
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or(CONFIG_FILE)
                ),
                "write one `key: value` per line, like `name: hello`, with no `- ` in front",
            ));
            whole(problems, failed);
            return raw;
        }
        Err(e) => {
            problems.push(describe_yaml_error(path, None, &e));
            whole(problems, failed);
            return raw;
        }
    };
    // A file without a mistake is read whole, its scalars as written (`service_id:
    // 150729563276` is the string a key of type string asks for).
    if let Ok(whole) = serde_yaml::from_str::<Raw>(&text) {
        return whole;
    }
    let lines: Vec<&str> = text.lines().collect();
    for (key, value) in mapping {
        let mut one = serde_yaml::Mapping::new();
        let name = key.as_str().map(str::to_string);
        one.insert(key, value);
        // The key's own lines, read as written; else its value as parsed, whose error
        // says what is wrong with it.
        let own = name.as_deref().map(|k| {
            let start = key_line(path, k) - 1;
            let end = (start + 1..lines.len())
                .find(|&i| {
                    !lines[i].starts_with([' ', '\t', '#', '-']) && !lines[i].trim().is_empty()
                })
                .unwrap_or(lines.len());
            lines[start.min(lines.len())..end].join("\n")
        });
        let as_written = own.and_then(|t| serde_yaml::from_str::<Raw>(&t).ok());
        match as_written
            .map(Ok)
            .unwrap_or_else(|| serde_yaml::from_value::<Raw>(serde_yaml::Value::Mapping(one)))
        {
            Ok(parsed) => raw.overlay(parsed),
            Err(e) => {
                problems.push(describe_yaml_error(path, name.as_deref(), &e));
                failed.extend(name);
            }
        }
    }
    raw
}

/// The JSON Schema of one key's type, for `config --schema`.
pub trait Schema {
    fn schema() -> serde_json::Value;
}

impl Schema for String {
    fn schema() -> serde_json::Value {
        serde_json::json!({"type": "string"})
    }
}
impl Schema for bool {
    fn schema() -> serde_json::Value {
        serde_json::json!({"type": "boolean"})
    }
}
macro_rules! int_schema {
    ($($t:ty),*) => { $( impl Schema for $t {
        fn schema() -> serde_json::Value {
            serde_json::json!({"type": "integer", "minimum": <$t>::MIN, "maximum": <$t>::MAX})
        }
    } )* };
}
int_schema!(u16, u32, u64);
macro_rules! nonzero_schema {
    ($($t:ty),*) => { $( impl Schema for $t {
        fn schema() -> serde_json::Value {
            serde_json::json!({"type": "integer", "minimum": 1, "maximum": <$t>::MAX.get()})
        }
    } )* };
}
nonzero_schema!(NonZeroU16, NonZeroU32, NonZeroU64);

/// A TCP port: 0 is refused where it is read, since it would mean "any".
pub type Port = NonZeroU16;

impl<T: Schema> Schema for Option<T> {
    fn schema() -> serde_json::Value {
        T::schema()
    }
}
impl<T: Schema> Schema for Vec<T> {
    fn schema() -> serde_json::Value {
        serde_json::json!({"type": "array", "items": T::schema()})
    }
}
impl Schema for TargetKind {
    fn schema() -> serde_json::Value {
        use clap::ValueEnum;
        let names: Vec<String> = TargetKind::value_variants()
            .iter()
            .map(|t| t.as_str().to_string())
            .collect();
        serde_json::json!({"type": "string", "enum": names})
    }
}

/// A JSON Schema (draft 2020-12) of pym-config.yaml and its overlays, made from the
/// same declarations as the config itself, so it cannot drift from what is accepted.
pub fn json_schema() -> serde_json::Value {
    let mut properties = serde_json::Map::new();
    for k in KEYS {
        let mut s = (k.schema)();
        let mut about = k.about.trim().to_string();
        let targets = k.targets();
        if !targets.is_empty() {
            let names: Vec<&str> = targets.iter().map(|t| t.as_str()).collect();
            about.push_str(&format!(" (deploy_target: {})", names.join(", ")));
        }
        if k.scopes.contains(&Scope::Rust) {
            about.push_str(" (Rust services)");
        }
        s["description"] = about.into();
        if let Some(default) = k.default.map(|d| d()).filter(|d| !d.is_null()) {
            s["default"] = default;
        }
        properties.insert(k.name.to_string(), s);
    }
    // Each target's rules, where a file names the target (pym-config.yaml does; an
    // overlay, which never sets `deploy_target`, is checked key by key only): the keys it
    // cannot deploy without, and no key another target reads.
    use clap::ValueEnum;
    let rules: Vec<serde_json::Value> = TargetKind::value_variants()
        .iter()
        .map(|t| {
            let foreign: Vec<&str> = KEYS
                .iter()
                .filter(|k| !k.targets().is_empty() && !k.targets().contains(t))
                .map(|k| k.name)
                .collect();
            let required: Vec<&str> = t.requires().iter().map(|(k, _)| *k).collect();
            let non_empty: serde_json::Map<String, serde_json::Value> = required
                .iter()
                .map(|k| (k.to_string(), serde_json::json!({"minLength": 1})))
                .collect();
            // `propertyNames` rather than `false` per key: validators then name the key.
            serde_json::json!({
                "if": {"required": ["deploy_target"], "properties": {"deploy_target": {"const": t.as_str()}}},
                "then": {
                    "required": required,
                    "properties": non_empty,
                    "propertyNames": {"not": {"enum": foreign}},
                },
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pym-config.yaml",
        "description": "pymdeploy's configuration of one service; pym-config.<env>.yaml overlays it key by key",
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
        "allOf": rules,
    })
}

/// `docs/config.md`: every key of `pym-config.yaml`, its type, default, what reads it and
/// what it does, made from the same declarations as the config itself (a unit test
/// keeps the file current).
pub fn reference() -> String {
    use clap::ValueEnum;
    let mut out = String::from(
        "# pym-config.yaml: every key\n\n\
         Generated from pymdeploy's config declaration (`src/config.rs` and each target's\n\
         `src/targets/<name>/about.rs`); `SNAPSHOTS=overwrite cargo test --lib config::` writes\n\
         it again. `pym-config.<env>.yaml` (local, staging, live) overlays any key for one\n\
         environment. A key limited to some targets is refused, with its file and line, on\n\
         any other.\n\n\
         | key | type | default | read by | what it does |\n\
         |---|---|---|---|---|\n",
    );
    for k in KEYS {
        let about = k.about.trim().replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            k.name,
            type_text(&(k.schema)()),
            {
                let default = match k.default {
                    Some(_) if k.default_text() != "unset" => format!("`{}`", k.default_text()),
                    _ => k.default_text(),
                };
                let requiring: Vec<&str> = TargetKind::value_variants()
                    .iter()
                    .filter(|t| t.requires().iter().any(|(r, _)| *r == k.name))
                    .map(|t| t.as_str())
                    .collect();
                match requiring.is_empty() {
                    true => default,
                    false => format!("{default}; required on {}", requiring.join(", ")),
                }
            },
            k.read_by(),
            about
        ));
    }
    out
}

/// A key's type in words, from its JSON Schema.
fn type_text(schema: &serde_json::Value) -> String {
    if let Some(names) = schema["enum"].as_array() {
        let names: Vec<String> = names
            .iter()
            .map(|n| format!("`{}`", n.as_str().unwrap_or_default()))
            .collect();
        return format!("one of {}", names.join(", "));
    }
    match schema["type"].as_str() {
        Some("array") => format!("list of {}", type_text(&schema["items"])),
        Some("integer") => match (schema["minimum"].as_u64(), schema["maximum"].as_u64()) {
            (min, Some(max)) if max > u32::MAX as u64 => {
                format!("integer from {}", min.unwrap_or(0))
            }
            (min, Some(max)) => format!("integer {} to {max}", min.unwrap_or(0)),
            (_, None) => "integer".into(),
        },
        Some(t) => t.into(),
        None => "any".into(),
    }
}

/// Turns serde_yaml's message into `file:line[:col]: what`, with a suggestion for a
/// misspelt key or value. `key` is the key whose value failed, when read one by one.
fn describe_yaml_error(path: &Path, key: Option<&str>, e: &serde_yaml::Error) -> anyhow::Error {
    let mut msg = e.to_string();
    // serde_yaml appends " at line L column C"; we put the location first instead.
    if let Some(i) = msg.find(" at line ") {
        msg.truncate(i);
    }
    let location = match (e.location(), key) {
        (Some(l), _) => format!("{}:{}:{}", path.display(), l.line(), l.column()),
        // Read key by key: the key's line, and the column of its value (of the key
        // itself when the key is unknown), as serde_yaml would say.
        (None, Some(key)) => {
            let line = key_line(path, key);
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let col = match msg.starts_with("unknown field") {
                true => 1,
                false => text
                    .lines()
                    .nth(line - 1)
                    .and_then(|l| {
                        let after = l.find(':')? + 1;
                        Some(after + l[after..].len() - l[after..].trim_start().len() + 1)
                    })
                    .unwrap_or(1),
            };
            format!("{}:{line}:{col}", path.display())
        }
        (None, None) => path.display().to_string(),
    };
    if let Some(field) = between_backticks(&msg, "unknown field `") {
        let keys: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        let hint = match closest(&field, &keys) {
            Some(k) => format!("did you mean `{k}`?"),
            None => {
                "see `pymdeploy config --keys` for the keys pym-config.yaml accepts".to_string()
            }
        };
        return hinted(format!("{location}: unknown key `{field}`"), hint);
    }
    // From a whole file serde says "port: invalid type: ..."; from one key's value, the
    // key is known and the message has no prefix.
    let (key, rest) = match key {
        Some(key) => (key, msg.strip_prefix(&format!("{key}: ")).unwrap_or(&msg)),
        None => msg.split_once(": ").unwrap_or(("", &msg)),
    };
    if let Some(variant) = between_backticks(rest, "unknown variant `") {
        // serde lists what it takes: "expected one of `a`, `b`" or "expected `a` or `b`".
        let expected = rest.split_once("expected").map_or("", |(_, e)| e);
        let values: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let hint = match closest(&variant, &values) {
            Some(k) => format!("did you mean `{k}`?"),
            None => format!("`{key}` is one of: {}", values.join(", ")),
        };
        return hinted(
            format!("{location}: key `{key}`: unknown value `{variant}`"),
            hint,
        );
    }
    if let Some(k) = KEYS.iter().find(|k| k.name == key) {
        let rest = rest
            .replace(
                "expected a nonzero u16",
                "expected a number from 1 to 65535",
            )
            .replace("expected a nonzero u32", "expected a number above 0")
            .replace("expected a nonzero u64", "expected a number above 0");
        let hint = format!("`{key}` is {}", k.about.trim());
        return hinted(format!("{location}: key `{key}`: {rest}"), hint);
    }
    hinted(
        format!("{location}: {msg}"),
        "pym-config.yaml is a YAML mapping of keys to values, like `name: hello`",
    )
}

fn between_backticks(msg: &str, prefix: &str) -> Option<String> {
    let start = msg.find(prefix)? + prefix.len();
    let end = msg[start..].find('`')?;
    Some(msg[start..start + end].to_string())
}

/// The known word closest to `word`, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (*k, strsim::jaro_winkler(word, k)))
        .filter(|(_, score)| *score > 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_config_md_is_what_the_declaration_says() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md");
        let made = reference();
        if std::env::var("SNAPSHOTS").as_deref() == Ok("overwrite") {
            std::fs::write(&path, &made).unwrap();
        }
        let file = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            file == made,
            "docs/config.md is not what the config declares: `SNAPSHOTS=overwrite cargo test --lib config::` writes it again"
        );
        // Every key, with its default where it has one.
        assert!(made.contains("| `live_port` | integer 1 to 65535 | `8080` | docker |"));
        assert!(made.contains("| `name` | string | required | every target |"));
        assert!(made.contains("| `aws_region` | string | unset | aws-beanstalk |"));
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pym-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn err(dir: &Path) -> (String, String) {
        let e = Config::load(dir, PymEnv::Local).unwrap_err();
        (
            format!("{e:#}"),
            crate::error::hint_of(&e).unwrap_or("").to_string(),
        )
    }

    #[test]
    fn overlay_replaces_keys_for_its_env_only() {
        let d = tmp("overlay");
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: docker\nport: 8080\n",
        );
        write(&d, "pym-config.staging.yaml", "port: 9000\n");
        assert_eq!(Config::load(&d, PymEnv::Local).unwrap().port.get(), 8080);
        assert_eq!(Config::load(&d, PymEnv::Staging).unwrap().port.get(), 9000);
    }

    #[test]
    fn a_string_key_takes_a_scalar_as_written() {
        let d = tmp("digits");
        // A service_id of decimal digits only (a 12-hex-digit id can be), alone and beside
        // a mistake elsewhere in the file.
        let text = "name: hello\ndeploy_target: docker\nservice_id: 150729563276\n";
        write(&d, CONFIG_FILE, text);
        let c = Config::load(&d, PymEnv::Local).unwrap();
        assert_eq!(c.service_id.as_deref(), Some("150729563276"));
        write(&d, CONFIG_FILE, &format!("{text}port: 0\n"));
        let (msg, _) = err(&d);
        assert!(
            msg.contains("key `port`: invalid value") && !msg.contains("service_id"),
            "{msg}"
        );
    }

    #[test]
    fn every_mistake_of_every_file_is_said_in_one_report() {
        let d = tmp("many");
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: docker\nlive_port: 0\nhealth_timeout: 0\nhelth_path: /ping\n",
        );
        write(&d, "pym-config.live.yaml", "staging_port: http\n");
        write(&d, "pym-config.prod.yaml", "port: 1\n");
        let e = Config::load(&d, PymEnv::Local).unwrap_err();
        let many = e
            .downcast_ref::<crate::error::Many>()
            .expect("several problems");
        let said: Vec<&str> = many.items.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            many.title, "5 problems, so nothing was started",
            "{said:#?}"
        );
        let at = |file: &str, line: &str, what: &str| {
            let place = format!("{}:{line}: {what}", d.join(file).display());
            assert!(
                said.iter().any(|m| m.starts_with(&place)),
                "no `{place}` in {said:#?}"
            );
        };
        let prod = format!(
            "{}: not an overlay",
            d.join("pym-config.prod.yaml").display()
        );
        assert!(said.iter().any(|m| m.starts_with(&prod)), "{said:#?}");
        at(
            CONFIG_FILE,
            "3:12",
            "key `live_port`: invalid value: integer `0`, expected a number from 1 to 65535",
        );
        at(
            CONFIG_FILE,
            "4:17",
            "key `health_timeout`: invalid value: integer `0`, expected a number above 0",
        );
        at(CONFIG_FILE, "5:1", "unknown key `helth_path`");
        at(
            "pym-config.live.yaml",
            "1:15",
            "key `staging_port`: invalid type: string \"http\"",
        );
        // Each with its own hint, in the text the printer shows.
        let text = e.to_string();
        assert!(
            text.contains("\n     hint: did you mean `health_path`?"),
            "{text}"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_suggestion() {
        let d = tmp("unknown");
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: docker\nhelth_path: /ping\n",
        );
        let (msg, hint) = err(&d);
        assert!(
            msg.contains("pym-config.yaml:3:1: unknown key `helth_path`"),
            "{msg}"
        );
        assert_eq!(hint, "did you mean `health_path`?");
    }

    #[test]
    fn wrong_type_in_overlay_names_the_overlay() {
        let d = tmp("type");
        write(&d, CONFIG_FILE, "name: hello\ndeploy_target: docker\n");
        write(&d, "pym-config.local.yaml", "\n\nport: lots\n");
        let (msg, _) = err(&d);
        assert!(
            msg.contains("pym-config.local.yaml:3:7: key `port`: invalid type"),
            "{msg}"
        );
    }

    #[test]
    fn missing_name_is_reported() {
        let d = tmp("missing");
        write(&d, CONFIG_FILE, "deploy_target: docker\n");
        let (msg, hint) = err(&d);
        assert!(
            msg.contains("pym-config.yaml:1: missing required key `name`"),
            "{msg}"
        );
        assert!(hint.contains("add `name: ...`"), "{hint}");
    }

    #[test]
    fn misspelt_target_is_suggested() {
        let d = tmp("target");
        write(&d, CONFIG_FILE, "name: hello\ndeploy_target: dokcer\n");
        let (msg, hint) = err(&d);
        assert!(
            msg.contains(":2:16: key `deploy_target`: unknown value `dokcer`"),
            "{msg}"
        );
        assert_eq!(hint, "did you mean `docker`?");
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["Hello", "1abc", "a_b", "a-", "", "a--b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        for good in ["hello", "hello-world2", "a"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_tab_in_the_indentation_is_said_plainly() {
        let d = tmp("tab");
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: docker\nenv_secrets:\n\t- A\n",
        );
        let (msg, hint) = err(&d);
        assert!(
            msg.contains("pym-config.yaml:4: YAML forbids tabs for indentation"),
            "{msg}"
        );
        assert_eq!(hint, "indent with spaces");
    }

    #[test]
    fn a_list_at_the_top_is_not_a_config() {
        let d = tmp("list");
        write(&d, CONFIG_FILE, "- name: hello\n- deploy_target: docker\n");
        let (msg, _) = err(&d);
        assert!(
            msg.contains(
                "pym-config.yaml:1: pym-config.yaml must be a mapping of keys to values, not a list"
            ),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_key_in_the_live_overlay_is_found_when_loading_local() {
        let d = tmp("liveoverlay");
        write(&d, CONFIG_FILE, "name: hello\ndeploy_target: docker\n");
        write(&d, "pym-config.live.yaml", "live_prot: 80\n");
        let (msg, hint) = err(&d);
        assert!(
            msg.contains("pym-config.live.yaml:1:1: unknown key `live_prot`"),
            "{msg}"
        );
        assert_eq!(hint, "did you mean `live_port`?");
    }

    #[test]
    fn an_overlay_for_an_unknown_environment_is_refused() {
        let d = tmp("prodoverlay");
        write(&d, CONFIG_FILE, "name: hello\ndeploy_target: docker\n");
        write(&d, "pym-config.prod.yaml", "port: 9000\n");
        let (msg, _) = err(&d);
        assert!(
            msg.contains(
                "pym-config.prod.yaml: not an overlay pymdeploy reads: `prod` is not an environment"
            ),
            "{msg}"
        );
        write(&d, "pym-config.prod.yaml", "");
        std::fs::rename(
            d.join("pym-config.prod.yaml"),
            d.join("pym-config.stagin.yaml"),
        )
        .unwrap();
        let (_, hint) = err(&d);
        assert_eq!(hint, "did you mean pym-config.staging.yaml?");
    }

    #[test]
    fn a_key_of_another_target_is_refused_with_its_line() {
        let d = tmp("scope");
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: docker\nport: 8080\naws_region: eu-west-1\n",
        );
        let (msg, hint) = err(&d);
        assert!(msg.contains("pym-config.yaml:4: key `aws_region` is for the aws-beanstalk target, and `deploy_target` is docker"), "{msg}");
        assert_eq!(
            hint,
            "remove `aws_region`, or set `deploy_target: aws-beanstalk`"
        );
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: aws-beanstalk\ndocker_repo: r.example.com/t\nlive_port: 80\n",
        );
        let (msg, _) = err(&d);
        assert!(
            msg.contains("key `live_port` is for the docker target"),
            "{msg}"
        );
    }

    #[test]
    fn rust_keys_need_a_cargo_manifest() {
        let d = tmp("rustkey");
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: docker\nrust_binary: hello\n",
        );
        let (msg, _) = err(&d);
        assert!(
            msg.contains("pym-config.yaml:3: key `rust_binary` is for Rust services"),
            "{msg}"
        );
        write(&d, "Cargo.toml", "[package]\nname = \"hello\"\n");
        Config::load(&d, PymEnv::Local).unwrap();
    }

    #[test]
    fn staging_and_live_on_one_port_is_refused() {
        let d = tmp("ports");
        write(&d, CONFIG_FILE, "name: hello\ndeploy_target: docker\n");
        write(&d, "pym-config.staging.yaml", "staging_port: 8080\n");
        let (msg, _) = err(&d);
        assert!(
            msg.contains("`staging_port` and `live_port` are both 8080"),
            "{msg}"
        );
    }

    #[test]
    fn a_cloud_target_needs_a_registry() {
        let d = tmp("registry");
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: aws-beanstalk\n",
        );
        let (msg, hint) = err(&d);
        assert!(
            msg.contains("the aws-beanstalk target needs `docker_repo`"),
            "{msg}"
        );
        assert!(
            hint.contains("docker_repo: <registry>/<namespace>"),
            "{hint}"
        );
    }

    #[test]
    fn health_statuses_take_codes_and_classes() {
        let d = tmp("statuses");
        write(&d, CONFIG_FILE, "name: hello\ndeploy_target: docker\n");
        let c = Config::load(&d, PymEnv::Local).unwrap();
        assert!(
            c.is_healthy_status(200)
                && c.is_healthy_status(204)
                && !c.is_healthy_status(301)
                && !c.is_healthy_status(503)
        );
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: docker\nhealth_statuses: [\"200\", \"3xx\"]\n",
        );
        let c = Config::load(&d, PymEnv::Local).unwrap();
        assert!(c.is_healthy_status(200) && c.is_healthy_status(302) && !c.is_healthy_status(204));
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: docker\nhealth_statuses: [\"ok\"]\n",
        );
        let (msg, _) = err(&d);
        assert!(
            msg.contains("key `health_statuses`: `ok` is not an HTTP status or class"),
            "{msg}"
        );
    }

    #[test]
    fn the_schema_has_every_key_with_its_type_and_scope() {
        let schema = json_schema();
        let props = schema["properties"].as_object().unwrap();
        assert_eq!(props.len(), KEYS.len());
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(props["port"]["type"], "integer");
        assert_eq!(props["port"]["maximum"], 65535);
        assert_eq!(props["env_secrets"]["items"]["type"], "string");
        assert_eq!(props["verify_version"]["type"], "boolean");
        assert_eq!(
            props["deploy_target"]["enum"],
            serde_json::json!(["docker", "aws-beanstalk", "gcp-cloud-run", "gke"])
        );
        assert!(
            props["aws_region"]["description"]
                .as_str()
                .unwrap()
                .ends_with("(deploy_target: aws-beanstalk)")
        );
        assert_eq!(
            props["k8s_service_type"]["enum"],
            serde_json::json!(["LoadBalancer", "NodePort", "ClusterIP"])
        );
        assert_eq!(props["k8s_service_type"]["default"], "LoadBalancer");
        // Per target: what it requires, and no key of another target.
        let rule = |target: &str| {
            schema["allOf"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["if"]["properties"]["deploy_target"]["const"] == target)
                .unwrap()["then"]
                .clone()
        };
        assert_eq!(
            rule("gcp-cloud-run")["required"],
            serde_json::json!(["docker_repo", "gcp_project", "gcp_region"])
        );
        let refused = |target: &str| rule(target)["propertyNames"]["not"]["enum"].clone();
        let refused_on =
            |target: &str, key: &str| refused(target).as_array().unwrap().contains(&key.into());
        assert!(refused_on("docker", "aws_region") && refused_on("docker", "live_url"));
        assert_eq!(rule("docker")["required"], serde_json::json!([]));
        assert!(!refused_on("gke", "gcp_region") && refused_on("gke", "gcp_service"));
        assert!(!refused_on("gcp-cloud-run", "docker_repo"));
    }

    #[test]
    fn a_target_rule_points_at_the_line() {
        let d = tmp("rules");
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: gcp-cloud-run\ndocker_repo: r.example.com/team\ngcp_project: p\n",
        );
        let (msg, hint) = err(&d);
        assert!(
            msg.contains("pym-config.yaml:2: the gcp-cloud-run target needs `gcp_region` (Google Cloud region)"),
            "{msg}"
        );
        assert_eq!(hint, "set `gcp_region: us-central1` in pym-config.yaml");
        // A key set in an overlay is placed in the overlay, at its line.
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: gke\ndocker_repo: r/t\n",
        );
        write(&d, "pym-config.live.yaml", "# live\nk8s_replicas: 3\n");
        let live = Config::load(&d, PymEnv::Live).unwrap();
        assert!(
            live.at("k8s_replicas").ends_with("pym-config.live.yaml:2"),
            "{}",
            live.at("k8s_replicas")
        );
        assert!(
            live.at("docker_repo").ends_with("pym-config.yaml:3"),
            "{}",
            live.at("docker_repo")
        );
        let staging = Config::load(&d, PymEnv::Staging).unwrap();
        assert!(
            staging.at("k8s_replicas").ends_with("pym-config.yaml:1"),
            "{}",
            staging.at("k8s_replicas")
        );
        // An enum value nobody makes: file:line:col, with the values there are.
        write(
            &d,
            "pym-config.live.yaml",
            "k8s_service_type: LoadBalancr\n",
        );
        let e = Config::load(&d, PymEnv::Live).unwrap_err();
        let (msg, hint) = (
            format!("{e:#}"),
            crate::error::hint_of(&e).unwrap_or("").to_string(),
        );
        assert!(
            msg.contains(
                "pym-config.live.yaml:1:19: key `k8s_service_type`: unknown value `LoadBalancr`"
            ),
            "{msg}"
        );
        assert_eq!(hint, "did you mean `LoadBalancer`?");
        // `live_url` is read by the cloud targets only: on docker it is refused at its line.
        std::fs::remove_file(d.join("pym-config.live.yaml")).unwrap();
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: docker\nlive_url: https://x.example.com\n",
        );
        let (msg, _) = err(&d);
        assert!(
            msg.contains("pym-config.yaml:3: key `live_url` is for the aws-beanstalk, gcp-cloud-run and gke targets, and `deploy_target` is docker"),
            "{msg}"
        );
    }

    #[test]
    fn secrets_are_shown_as_names_only() {
        let d = tmp("secrets");
        write(
            &d,
            CONFIG_FILE,
            "name: hello\ndeploy_target: docker\nenv_secrets: [PYM_TEST_SECRET_XYZ]\n",
        );
        // SAFETY: this test owns the variable; no other test reads it.
        unsafe { std::env::set_var("PYM_TEST_SECRET_XYZ", "hunter2-value") };
        let yaml = Config::load(&d, PymEnv::Local).unwrap().to_yaml().unwrap();
        assert!(yaml.contains("PYM_TEST_SECRET_XYZ: '*** (set)'"), "{yaml}");
        assert!(!yaml.contains("hunter2"), "{yaml}");
    }
}

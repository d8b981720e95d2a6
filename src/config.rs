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
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::hinted;

pub const CONFIG_FILE: &str = "pym-config.yaml";

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

/// The deploy targets. Only `docker` needs no cloud account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Docker,
    AwsBeanstalk,
    GcpCloudRun,
    Gke,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Docker => "docker",
            TargetKind::AwsBeanstalk => "aws-beanstalk",
            TargetKind::GcpCloudRun => "gcp-cloud-run",
            TargetKind::Gke => "gke",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares the config once: the typed `Config`, the all-optional `Raw` each file is
/// parsed into, and the list of known keys used for suggestions.
macro_rules! config {
    (
        required { $( $(#[doc = $rdoc:literal])* $r:ident : $rt:ty, )* }
        optional { $( $(#[doc = $odoc:literal])* $o:ident : $ot:ty = $od:expr, )* }
    ) => {
        /// The merged configuration of one service for one environment.
        #[derive(Clone, Debug, Serialize)]
        pub struct Config {
            $( $(#[doc = $rdoc])* pub $r: $rt, )*
            $( $(#[doc = $odoc])* pub $o: $ot, )*
        }

        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            $( #[serde(default)] $r: Option<$rt>, )*
            $( #[serde(default)] $o: Option<$ot>, )*
        }

        /// Every key `pym-config.yaml` accepts, with its one-line description.
        pub const KEYS: &[(&str, &str)] = &[
            $( (stringify!($r), concat!($($rdoc),*)), )*
            $( (stringify!($o), concat!($($odoc),*)), )*
        ];

        impl Raw {
            fn overlay(&mut self, other: Raw) {
                $( if other.$r.is_some() { self.$r = other.$r; } )*
                $( if other.$o.is_some() { self.$o = other.$o; } )*
            }

            fn finish(self, file: &Path) -> Result<Config> {
                $( let Some($r) = self.$r else {
                    return Err(hinted(
                        format!("{}:1: missing required key `{}`", file.display(), stringify!($r)),
                        format!("add `{}: ...` to {} ({})", stringify!($r), file.display(), concat!($($rdoc),*).trim()),
                    ));
                }; )*
                $( let $o = self.$o.unwrap_or_else(|| $od); )*
                Ok(Config { $( $r, )* $( $o, )* })
            }
        }
    };
}

config! {
    required {
        /// the service's name: the image name and the container and environment prefix
        name: String,
        /// where `stage` and `promote` deploy: docker, aws-beanstalk, gcp-cloud-run or gke
        deploy_target: TargetKind,
    }
    optional {
        /// registry and namespace images are tagged under, e.g. `registry.example.com/team`
        docker_repo: Option<String> = None,
        /// the runtime base image, passed to the Dockerfile as the build argument PYM_BASE
        docker_base: Option<String> = None,
        /// the public URL of the live service
        live_url: Option<String> = None,
        /// names of environment variables passed from the caller's environment to the service
        env_secrets: Vec<String> = Vec::new(),
        /// the port the service listens on inside its container (given to it as PORT)
        port: u16 = 8080,
        /// the path that answers 200 when the service is ready
        health_path: String = "/ping".to_string(),
        /// seconds to wait for the service to become healthy
        health_timeout: u64 = 60,
        /// docker target: the address the live and staging ports are published on
        publish_ip: String = "127.0.0.1".to_string(),
        /// docker target: the host port of the live address (the proxy the tool manages)
        live_port: u16 = 8080,
        /// docker target: the host port of the staging address
        staging_port: u16 = 8081,
        /// how many previous live versions are kept for rollback
        keep_previous: u32 = 2,
        /// seconds open connections get to finish on the old version after a switch
        drain_seconds: u64 = 2,
        /// roll back automatically when the live acceptance tests fail
        rollback_on_failure: bool = true,
        /// the unit-test command (default: `cargo test` in a Rust service, else `python -m pytest test`)
        test_command: Option<String> = None,
        /// the acceptance-test command, run against a server given by PYM_SERVER_HOST and PYM_SERVER_PORT
        accept_command: Option<String> = None,
        /// the Dockerfile, relative to the service root
        dockerfile: String = "Dockerfile".to_string(),
        /// the binary `build` compiles with cargo and places in .pym/dist/ for the Dockerfile to copy
        rust_binary: Option<String> = None,
        /// the cargo target triple for `rust_binary` (a Linux target when building on macOS)
        rust_target: Option<String> = None,
        /// AWS profile used by the aws-beanstalk target
        aws_user: Option<String> = None,
        /// AWS region
        aws_region: Option<String> = None,
        /// EC2 key pair for Beanstalk instances
        aws_keypair: Option<String> = None,
        /// EC2 instance type for Beanstalk instances
        aws_instance_type: Option<String> = None,
        /// ACM certificate ARN for HTTPS on Beanstalk
        aws_cert_arn: Option<String> = None,
        /// minimum number of Beanstalk instances
        aws_hosts_min: Option<u32> = None,
        /// maximum number of Beanstalk instances
        aws_hosts_max: Option<u32> = None,
        /// aws-beanstalk target: the S3 bucket holding the registry credentials Beanstalk pulls the image with
        docker_bucket: Option<String> = None,
        /// aws-beanstalk target: the key of the credentials (a Docker config.json) in docker_bucket
        docker_auth_key: String = "docker.cfg".to_string(),
        /// aws-beanstalk target: the Docker solution stack (default: the newest one AWS lists)
        aws_solution_stack: Option<String> = None,
        /// aws-beanstalk target: a platform ARN, instead of aws_solution_stack
        aws_platform_arn: Option<String> = None,
        /// aws-beanstalk target: the CNAME prefix of the live environment (default: <name>-live)
        aws_live_cname: Option<String> = None,
        /// aws-beanstalk target: seconds to wait for an environment to launch, update or swap
        aws_timeout: u64 = 1200,
        /// Google Cloud project for the gcp-cloud-run and gke targets
        gcp_project: Option<String> = None,
        /// Google Cloud region
        gcp_region: Option<String> = None,
    }
}

impl Config {
    /// Loads `pym-config.yaml` from `root` and overlays `pym-config.<env>.yaml` if present.
    pub fn load(root: &Path, env: PymEnv) -> Result<Config> {
        let base = root.join(CONFIG_FILE);
        if !base.exists() {
            return Err(hinted(
                format!("no {CONFIG_FILE} in {}", root.display()),
                "run this in a service root, or create one with `pymdeploy new NAME` or `pymdeploy init`",
            ));
        }
        let mut raw = parse_file(&base)?;
        let overlay = overlay_path(root, env);
        if overlay.exists() {
            raw.overlay(parse_file(&overlay)?);
        }
        let config = raw.finish(&base)?;
        config.validate(&base)?;
        Ok(config)
    }

    fn validate(&self, file: &Path) -> Result<()> {
        let f = file.display();
        if let Err(why) = validate_name(&self.name) {
            return Err(hinted(
                format!("{f}: key `name`: {why}"),
                "a name is lowercase letters, digits and dashes, starting with a letter, like `hello-world`",
            ));
        }
        if !self.health_path.starts_with('/') {
            return Err(hinted(
                format!("{f}: key `health_path`: `{}` does not start with `/`", self.health_path),
                "write the path as the server sees it, like `/ping`",
            ));
        }
        for (key, cmd) in [("test_command", &self.test_command), ("accept_command", &self.accept_command)] {
            if let Some(cmd) = cmd {
                match shell_words::split(cmd) {
                    Ok(words) if !words.is_empty() => {}
                    Ok(_) => return Err(hinted(format!("{f}: key `{key}` is empty"), format!("remove `{key}` to use the default"))),
                    Err(e) => {
                        return Err(hinted(
                            format!("{f}: key `{key}`: cannot split `{cmd}` into words: {e}"),
                            "commands are split like a shell does, but are not run by a shell: close every quote",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The image repository, without tag: `<docker_repo>/<name>`, or `<name>` alone.
    pub fn image_repo(&self) -> String {
        match &self.docker_repo {
            Some(repo) if !repo.is_empty() => format!("{}/{}", repo.trim_end_matches('/'), self.name),
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
                    let state = if std::env::var_os(name).is_some() { "*** (set)" } else { "(not set)" };
                    (name.clone().into(), state.into())
                })
                .collect();
            map.insert("env_secrets".into(), serde_yaml::Value::Mapping(secrets));
        }
        serde_yaml::to_string(&value).context("cannot serialize the config")
    }
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
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(format!("`{name}` contains `{c}`"));
    }
    if name.ends_with('-') || name.contains("--") {
        return Err(format!("`{name}` ends with a dash or has two in a row"));
    }
    Ok(())
}

fn parse_file(path: &Path) -> Result<Raw> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.trim().is_empty() || text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Ok(Raw::default());
    }
    serde_yaml::from_str::<Raw>(&text).map_err(|e| describe_yaml_error(path, &e))
}

/// Turns serde_yaml's message into `file:line:col: what`, with a suggestion for a
/// misspelt key or value.
fn describe_yaml_error(path: &Path, e: &serde_yaml::Error) -> anyhow::Error {
    let mut msg = e.to_string();
    // serde_yaml appends " at line L column C"; we put the location first instead.
    if let Some(i) = msg.find(" at line ") {
        msg.truncate(i);
    }
    let location = match e.location() {
        Some(l) => format!("{}:{}:{}", path.display(), l.line(), l.column()),
        None => path.display().to_string(),
    };
    if let Some(field) = between_backticks(&msg, "unknown field `") {
        let keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        let hint = match closest(&field, &keys) {
            Some(k) => format!("did you mean `{k}`?"),
            None => "see `pymdeploy config --keys` for the keys pym-config.yaml accepts".to_string(),
        };
        return hinted(format!("{location}: unknown key `{field}`"), hint);
    }
    if let Some(variant) = between_backticks(&msg, "unknown variant `") {
        let key = msg.split(':').next().unwrap_or("").trim();
        let targets = ["docker", "aws-beanstalk", "gcp-cloud-run", "gke"];
        let hint = match closest(&variant, &targets) {
            Some(k) => format!("did you mean `{k}`?"),
            None => format!("`{key}` is one of: {}", targets.join(", ")),
        };
        return hinted(format!("{location}: key `{key}`: unknown value `{variant}`"), hint);
    }
    // Type errors read "port: invalid type: ..."; name the key explicitly.
    if let Some((key, rest)) = msg.split_once(": ") {
        if KEYS.iter().any(|(k, _)| *k == key) {
            let hint = KEYS.iter().find(|(k, _)| *k == key).map(|(_, d)| format!("`{key}` is {}", d.trim())).unwrap_or_default();
            return hinted(format!("{location}: key `{key}`: {rest}"), hint);
        }
    }
    hinted(format!("{location}: {msg}"), "pym-config.yaml is a YAML mapping of keys to values, like `name: hello`")
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
        (format!("{e:#}"), crate::error::hint_of(&e).unwrap_or("").to_string())
    }

    #[test]
    fn overlay_replaces_keys_for_its_env_only() {
        let d = tmp("overlay");
        write(&d, CONFIG_FILE, "name: hello\ndeploy_target: docker\nport: 8080\n");
        write(&d, "pym-config.staging.yaml", "port: 9000\n");
        assert_eq!(Config::load(&d, PymEnv::Local).unwrap().port, 8080);
        assert_eq!(Config::load(&d, PymEnv::Staging).unwrap().port, 9000);
    }

    #[test]
    fn unknown_key_names_file_line_and_suggestion() {
        let d = tmp("unknown");
        write(&d, CONFIG_FILE, "name: hello\ndeploy_target: docker\nhelth_path: /ping\n");
        let (msg, hint) = err(&d);
        assert!(msg.contains("pym-config.yaml:3:1: unknown key `helth_path`"), "{msg}");
        assert_eq!(hint, "did you mean `health_path`?");
    }

    #[test]
    fn wrong_type_in_overlay_names_the_overlay() {
        let d = tmp("type");
        write(&d, CONFIG_FILE, "name: hello\ndeploy_target: docker\n");
        write(&d, "pym-config.local.yaml", "\n\nport: lots\n");
        let (msg, _) = err(&d);
        assert!(msg.contains("pym-config.local.yaml:3:7: key `port`: invalid type"), "{msg}");
    }

    #[test]
    fn missing_name_is_reported() {
        let d = tmp("missing");
        write(&d, CONFIG_FILE, "deploy_target: docker\n");
        let (msg, hint) = err(&d);
        assert!(msg.contains("pym-config.yaml:1: missing required key `name`"), "{msg}");
        assert!(hint.contains("add `name: ...`"), "{hint}");
    }

    #[test]
    fn misspelt_target_is_suggested() {
        let d = tmp("target");
        write(&d, CONFIG_FILE, "name: hello\ndeploy_target: dokcer\n");
        let (msg, hint) = err(&d);
        assert!(msg.contains(":2:16: key `deploy_target`: unknown value `dokcer`"), "{msg}");
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
    fn secrets_are_shown_as_names_only() {
        let d = tmp("secrets");
        write(&d, CONFIG_FILE, "name: hello\ndeploy_target: docker\nenv_secrets: [PYM_TEST_SECRET_XYZ]\n");
        // SAFETY: this test owns the variable; no other test reads it.
        unsafe { std::env::set_var("PYM_TEST_SECRET_XYZ", "hunter2-value") };
        let yaml = Config::load(&d, PymEnv::Local).unwrap().to_yaml().unwrap();
        assert!(yaml.contains("PYM_TEST_SECRET_XYZ: '*** (set)'"), "{yaml}");
        assert!(!yaml.contains("hunter2"), "{yaml}");
    }
}

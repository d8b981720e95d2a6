//! Registry credentials, found where Docker users keep them.
//!
//! In order: the environment override for CI (`PYM_REGISTRY_USER` and
//! `PYM_REGISTRY_PASSWORD`), then the Docker config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`): a `credHelpers` entry for the registry, an `auths` entry, and
//! the `credsStore` helper. Helpers are run as `docker-credential-<name> get` with the
//! registry on stdin, as the docker CLI does. For Google's registries (Artifact Registry,
//! Container Registry) that Docker has nothing for, Application Default Credentials: a
//! service-account key (GOOGLE_APPLICATION_CREDENTIALS) logs in as `_json_key`, as Google
//! documents; with the `gcp-cloud-run` feature, gcloud's ADC file or the metadata server
//! give an access token, which logs in as `oauth2accesstoken`. CI needs no gcloud.

use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::Value;

use crate::error::hinted;

pub const ENV_USER: &str = "PYM_REGISTRY_USER";
pub const ENV_PASSWORD: &str = "PYM_REGISTRY_PASSWORD";

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Where they came from, for error messages: never the values themselves.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: ***, source: {:?} }}",
            self.username, self.source
        )
    }
}

/// The registry host an image reference points at: `docker.io` for references without one.
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
}

/// The key the Docker config uses for a registry host.
fn config_keys(host: &str) -> Vec<String> {
    if host == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![
            host.to_string(),
            format!("https://{host}"),
            format!("http://{host}"),
            format!("https://{host}/v1/"),
        ]
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Credentials for `host`, or `None` when nothing is configured for it (an anonymous
/// push, which the registry may refuse).
pub fn credentials_for(host: &str) -> Result<Option<Credentials>> {
    match (std::env::var(ENV_USER), std::env::var(ENV_PASSWORD)) {
        (Ok(username), Ok(password)) => {
            return Ok(Some(Credentials {
                username,
                password,
                source: format!("{ENV_USER} and {ENV_PASSWORD}"),
            }));
        }
        (Ok(_), Err(_)) | (Err(_), Ok(_)) => {
            return Err(hinted(
                format!("only one of {ENV_USER} and {ENV_PASSWORD} is set"),
                "set both, or neither to use the Docker config",
            ));
        }
        _ => {}
    }
    if let Some(found) = from_docker_config(host)? {
        return Ok(Some(found));
    }
    if is_google(host) {
        return from_google_adc(
            std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from),
        );
    }
    Ok(None)
}

/// Google's registries: Artifact Registry (`REGION-docker.pkg.dev`) and Container
/// Registry (`gcr.io`, `REGION.gcr.io`).
pub fn is_google(host: &str) -> bool {
    host == "gcr.io" || host.ends_with(".gcr.io") || host.ends_with("-docker.pkg.dev")
}

/// Application Default Credentials for a Google registry: the service-account key at
/// `key_file` as `_json_key` (its JSON the password); else, with the gcp-cloud-run
/// feature, an access token from the other ADC sources as `oauth2accesstoken`.
fn from_google_adc(key_file: Option<PathBuf>) -> Result<Option<Credentials>> {
    if let Some(path) = key_file {
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read GOOGLE_APPLICATION_CREDENTIALS ({})",
                path.display()
            )
        })?;
        let v: Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "GOOGLE_APPLICATION_CREDENTIALS ({}) is not JSON",
                path.display()
            )
        })?;
        if v["type"] == "service_account" {
            let source = format!(
                "the service-account key in GOOGLE_APPLICATION_CREDENTIALS ({})",
                path.display()
            );
            return Ok(Some(Credentials {
                username: "_json_key".into(),
                password: text,
                source,
            }));
        }
    }
    if super::gcp::adc_source().is_err() {
        // Nothing to ask: an anonymous push, which the registry refuses with its own words.
        return Ok(None);
    }
    let source = "an access token from Application Default Credentials".to_string();
    Ok(super::gcp::access_token()?.map(|password| Credentials {
        username: "oauth2accesstoken".into(),
        password,
        source,
    }))
}

/// What the Docker config says for `host`.
fn from_docker_config(host: &str) -> Result<Option<Credentials>> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let config: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let keys = config_keys(host);
    if let Some(helper) = keys.iter().find_map(|k| config["credHelpers"][k].as_str()) {
        return from_helper(helper, host);
    }
    if let Some(entry) = keys
        .iter()
        .map(|k| &config["auths"][k])
        .find(|e| e.is_object())
    {
        let source = format!("`auths` in {}", path.display());
        if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .with_context(|| {
                    format!("the `auth` of {host} in {} is not base64", path.display())
                })?;
            let decoded = String::from_utf8(decoded).with_context(|| {
                format!("the `auth` of {host} in {} is not text", path.display())
            })?;
            let (username, password) = decoded.split_once(':').with_context(|| {
                format!(
                    "the `auth` of {host} in {} is not user:password",
                    path.display()
                )
            })?;
            return Ok(Some(Credentials {
                username: username.into(),
                password: password.into(),
                source,
            }));
        }
        if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
            return Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
                source,
            }));
        }
    }
    if let Some(store) = config["credsStore"].as_str() {
        return from_helper(store, host);
    }
    Ok(None)
}

/// `docker-credential-<helper> get`, with the registry on stdin.
fn from_helper(helper: &str, host: &str) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{helper}");
    let sh = xshell::Shell::new()?;
    let out = sh
        .cmd(&program)
        .arg("get")
        .stdin(host)
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| {
            hinted(
                format!("cannot run the credential helper `{program}`: {e}"),
                format!("install {program}, or remove it from your Docker config"),
            )
        })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string()
            + String::from_utf8_lossy(&out.stderr).trim();
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(hinted(
            format!("`{program} get` failed for {host}: {msg}"),
            format!("run `docker login {host}`"),
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`{program} get` did not print JSON"))?;
    let username = v["Username"].as_str().unwrap_or_default().to_string();
    let password = v["Secret"].as_str().unwrap_or_default().to_string();
    Ok(Some(Credentials {
        username,
        password,
        source: format!("the credential helper {program}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_host_is_the_first_component_only_when_it_looks_like_a_host() {
        assert_eq!(registry_of("127.0.0.1:5000/team/svc:v1"), "127.0.0.1:5000");
        assert_eq!(
            registry_of("registry.example.com/svc"),
            "registry.example.com"
        );
        assert_eq!(registry_of("localhost/svc"), "localhost");
        assert_eq!(registry_of("team/svc:v1"), "docker.io");
        assert_eq!(registry_of("svc"), "docker.io");
    }

    #[test]
    fn a_google_registry_logs_in_with_the_service_account_key_as_google_documents() {
        for host in ["us-central1-docker.pkg.dev", "gcr.io", "eu.gcr.io"] {
            assert!(is_google(host), "{host}");
        }
        assert!(!is_google("registry.example.com") && !is_google("pkg.dev.example.com"));
        let dir = std::env::temp_dir().join(format!("pym-adc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.json");
        let text = r#"{"type": "service_account", "project_id": "p", "private_key": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n", "client_email": "ci@p.iam.gserviceaccount.com"}"#;
        std::fs::write(&key, text).unwrap();
        let c = from_google_adc(Some(key.clone())).unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("_json_key", text)
        );
        assert!(
            c.source.contains("GOOGLE_APPLICATION_CREDENTIALS") && !c.source.contains("PRIVATE")
        );
        std::fs::write(&key, "not json").unwrap();
        assert!(
            from_google_adc(Some(key))
                .unwrap_err()
                .to_string()
                .contains("is not JSON")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
            source: "s".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

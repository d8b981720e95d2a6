//! What the Beanstalk target reads before it decides: the application's environments
//! (`Seen`: which holds the live CNAME, which staging runs, which were live), the deploy
//! record, and for a stage what may refuse it (`StageSeen`). Reads only.

use anyhow::Result;
use aws_sdk_elasticbeanstalk::error::SdkError;
use aws_sdk_elasticbeanstalk::types::EnvironmentDescription;

use super::aws::{Aws, aws_error, is_gone, state};
use super::{env_name, live_prefix, record};
use crate::config::Config;
use crate::targets::Staged;
use crate::targets::history::History;

/// One environment of the application, as a decision needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    pub name: String,
    /// Its application version's label: the version, or `<version>.<secs>` for a dirty
    /// tree staged again.
    pub label: String,
    /// The pymdeploy version it runs (`version_of` its label).
    pub version: String,
    pub status: String,
    pub health: String,
    pub cname: String,
    /// Its `PYM_ENV` (read by `observe` only).
    pub pym_env: Option<String>,
    /// Made by stage: named for its version (`env_name`), not the first promote's
    /// `-live` one.
    pub stage: bool,
    pub stack: Option<String>,
    pub platform: Option<String>,
    /// When it was created, in seconds since the epoch.
    pub created: i64,
}

impl Env {
    /// The first label of its CNAME, which says whether it is live.
    pub fn prefix(&self) -> &str {
        self.cname.split('.').next().unwrap_or_default()
    }

    pub fn ready(&self) -> bool {
        self.status == "Ready"
    }

    /// It was promoted once: it has `PYM_ENV=live`.
    pub fn was_live(&self) -> bool {
        self.pym_env.as_deref() == Some("live")
    }
}

/// The version an application version's label is of: `<version>[.<secs>]`.
pub fn version_of(label: &str) -> &str {
    label.split('.').next().unwrap_or(label)
}

fn env_of(c: &Config, e: &EnvironmentDescription) -> Env {
    let (status, health) = state(e);
    let label = e.version_label().unwrap_or_default().to_string();
    let version = version_of(&label).to_string();
    let name = e.environment_name().unwrap_or_default().to_string();
    Env {
        stage: !version.is_empty() && name == env_name(c, &version),
        name,
        label,
        version,
        status: status.to_string(),
        health: health.to_string(),
        cname: e.cname().unwrap_or_default().to_string(),
        pym_env: None,
        stack: e.solution_stack_name().map(String::from),
        platform: e.platform_arn().map(String::from),
        created: e.date_created().map_or(0, |d| d.secs()),
    }
}

/// Everything promote, rollback, cleanup and status decide from.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The environments not terminated, newest first.
    pub envs: Vec<Env>,
    /// The CNAME prefix that makes an environment live.
    pub live_prefix: String,
    /// The deploy record (`record::read`).
    pub history: History,
    /// What the staging environment runs, by digest.
    pub staged: Option<Staged>,
}

impl Seen {
    /// The environment holding the live CNAME.
    pub fn live(&self) -> Option<&Env> {
        self.envs.iter().find(|e| e.prefix() == self.live_prefix)
    }

    /// The staging environment: the newest one stage made.
    pub fn staging(&self) -> Option<&Env> {
        self.envs.iter().find(|e| e.stage)
    }

    pub fn env(&self, name: &str) -> Option<&Env> {
        self.envs.iter().find(|e| e.name == name)
    }

    /// The environment a rollback to `version` makes live: its newest one off the live
    /// CNAME that was live (PYM_ENV=live), Ready and not Red.
    pub fn previous_env(&self, version: &str) -> Option<&Env> {
        self.kept_env(version)
            .filter(|e| e.ready() && e.health != "Red")
    }

    /// The newest environment of `version` off the live CNAME that was live, whatever its
    /// health now: what cleanup keeps for rollback (a Red moment does not lose it).
    pub fn kept_env(&self, version: &str) -> Option<&Env> {
        let live = self.live().map(|l| l.name.as_str());
        self.envs
            .iter()
            .find(|e| e.version == version && Some(e.name.as_str()) != live && e.was_live())
    }

    /// The versions a rollback can go to now (`previous_env`), newest first; with `any`,
    /// those it may go to once healthy (`kept_env`).
    pub fn available(&self, any: bool) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.envs {
            let there = match any {
                true => self.kept_env(&e.version).is_some(),
                false => self.previous_env(&e.version).is_some(),
            };
            if there && !out.contains(&e.version) {
                out.push(e.version.clone());
            }
        }
        out
    }
}

/// What staging runs: the staging environment, Ready, and the image its application
/// version names, by digest.
async fn staged_of(aws: &Aws, envs: &[Env]) -> Result<Option<Staged>> {
    let Some(e) = envs.iter().find(|e| e.stage).filter(|e| e.ready()) else {
        return Ok(None);
    };
    let Some(image) = aws.image_of(&e.label).await? else {
        return Ok(None);
    };
    Ok(image.rsplit_once('@').map(|(_, digest)| Staged {
        version: e.version.clone(),
        image: image.clone(),
        digest: digest.to_string(),
    }))
}

/// The application's environments that are not terminated, newest first.
pub async fn environments(aws: &Aws, c: &Config) -> Result<Vec<Env>> {
    Ok(aws
        .environments()
        .await?
        .iter()
        .map(|e| env_of(c, e))
        .collect())
}

/// The staging environment and what it runs, without the record: what `Ledger::staged`
/// asks.
pub async fn staged(aws: &Aws, c: &Config) -> Result<Option<Staged>> {
    staged_of(aws, &environments(aws, c).await?).await
}

/// Reads the environments (with their `PYM_ENV`), what staging runs and the record.
pub async fn observe(aws: &Aws, c: &Config) -> Result<Seen> {
    let mut envs = environments(aws, c).await?;
    for e in &mut envs {
        e.pym_env = aws.pym_env(&e.name).await?;
    }
    let labels: Vec<String> = envs.iter().map(|e| e.label.clone()).collect();
    let history = record::read(aws, &labels).await?;
    let staged = staged_of(aws, &envs).await?;
    Ok(Seen {
        envs,
        live_prefix: live_prefix(c),
        history,
        staged,
    })
}

/// The deploy record alone.
pub async fn history(aws: &Aws, c: &Config) -> Result<History> {
    let labels: Vec<String> = environments(aws, c)
        .await?
        .into_iter()
        .map(|e| e.label)
        .collect();
    record::read(aws, &labels).await
}

/// What stage reads from Beanstalk and S3 before it decides.
#[derive(Clone, Debug)]
pub struct StageSeen {
    /// An environment of the version's name, even one being terminated: (status,
    /// health, being terminated).
    pub existing: Option<(String, String, bool)>,
    /// Whether the staged environment's CNAME prefix is free, and its full name.
    pub cname: (bool, String),
    /// With `docker_bucket`: whether the credentials object exists, and the bucket.
    pub auth: Option<(bool, bool)>,
    /// The solution stack or platform ARN to create on (None: AWS lists no Docker one).
    pub platform: Option<(Option<String>, Option<String>)>,
    pub app_exists: bool,
    pub version_exists: bool,
}

pub async fn observe_stage(aws: &Aws, c: &Config, version: &str) -> Result<StageSeen> {
    let name = env_name(c, version);
    let existing = aws
        .environments_with_terminating()
        .await?
        .iter()
        .find(|e| e.environment_name() == Some(name.as_str()))
        .map(|e| {
            let (status, health) = state(e);
            (status.to_string(), health.to_string(), is_gone(e))
        });
    // A staged environment has a CNAME of its own, always: live is only ever brought up
    // by promote, after staging acceptance (the first time too).
    let prefix = name.to_lowercase();
    let cname = aws.cname_free(&prefix).await?;
    let auth = match &c.docker_bucket {
        None => None,
        Some(bucket) => Some(
            match aws
                .s3
                .head_object()
                .bucket(bucket)
                .key(&c.docker_auth_key)
                .send()
                .await
            {
                Ok(_) => (true, true),
                Err(SdkError::ServiceError(se)) if se.err().is_not_found() => {
                    match aws.s3.head_bucket().bucket(bucket).send().await {
                        Ok(_) => (false, true),
                        Err(SdkError::ServiceError(se)) if se.err().is_not_found() => {
                            (false, false)
                        }
                        Err(e) => return Err(aws_error("s3:HeadBucket", e)),
                    }
                }
                Err(e) => return Err(aws_error("s3:HeadObject", e)),
            },
        ),
    };
    let platform = match (c.aws_solution_stack.clone(), c.aws_platform_arn.clone()) {
        (Some(s), _) => Some((Some(s), None)),
        (None, Some(p)) => Some((None, Some(p))),
        (None, None) => {
            let out = aws
                .eb
                .list_available_solution_stacks()
                .send()
                .await
                .map_err(|e| aws_error("ListAvailableSolutionStacks", e))?;
            out.solution_stacks()
                .iter()
                .find(|s| s.contains("running Docker") && !s.contains("ECS"))
                .cloned()
                .map(|s| (Some(s), None))
        }
    };
    Ok(StageSeen {
        existing,
        cname,
        auth,
        platform,
        app_exists: aws.application_arn().await?.is_some(),
        version_exists: !aws.versions(&[version.to_string()]).await?.is_empty(),
    })
}

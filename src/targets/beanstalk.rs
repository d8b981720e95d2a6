//! The aws-beanstalk target: one Elastic Beanstalk environment per version, blue/green by
//! CNAME swap, driven by the official AWS SDK (feature `aws-beanstalk`).
//!
//! - `stage` creates the environment `<name>-<version>` (CNAME prefix the same) from an
//!   application version whose source bundle is a `Dockerrun.aws.json` naming the pushed
//!   image and, with `docker_bucket`, the S3 object Beanstalk pulls it with. A staged
//!   environment never takes the live CNAME, the first one included.
//! - The first `promote` of a service (nothing holds the live CNAME) creates
//!   `<name>-<version>-live` on the live CNAME from the same application version with
//!   `PYM_ENV=live`, verifies it, and terminates the staged one.
//! - Every later `promote` sets `PYM_ENV=live` on the new environment (while it still has its own CNAME),
//!   swaps CNAMEs with the live one and checks that the live address serves the version.
//!   The old environment keeps running with `PYM_ENV=live`, ready for `rollback`.
//! - The live environment is the one holding the live CNAME prefix: the first label of
//!   `live_url` when that is a Beanstalk name, else `aws_live_cname`, else `<name>-live`.
//!
//! State is read from Beanstalk only (environments, their CNAMEs and `PYM_ENV`); there is no
//! state file. Credentials and region come from the AWS default chain; `aws_user` names a
//! profile, `aws_region` the region, and `AWS_ENDPOINT_URL` points the SDK elsewhere.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use aws_sdk_elasticbeanstalk as eb;
use aws_sdk_elasticbeanstalk::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_elasticbeanstalk::primitives::DateTime;
use aws_sdk_elasticbeanstalk::types::{
    ConfigurationOptionSetting, EnvironmentDescription, EnvironmentHealth, EnvironmentStatus,
    S3Location, Tag,
};

use super::{Address, url_host};
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::output::StepProgress;

const ENV_NS: &str = "aws:elasticbeanstalk:application:environment";

/// The SDK clients, made once per command from the default credential chain.
struct Aws {
    eb: eb::Client,
    s3: aws_sdk_s3::Client,
    app: String,
}

async fn connect(c: &Config) -> Result<Aws> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).retry_config(
        aws_config::retry::RetryConfig::standard()
            .with_max_attempts(6)
            .with_initial_backoff(Duration::from_millis(500)),
    );
    if let Some(profile) = &c.aws_user {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &c.aws_region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(hinted(
            "no AWS region is set",
            "set `aws_region` in pym-config.yaml, or AWS_REGION, or a region in your AWS profile",
        ));
    }
    // A local endpoint (tests, LocalStack-like servers) has no per-bucket host names.
    let custom_s3 =
        sdk.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(custom_s3)
            .build(),
    );
    Ok(Aws {
        eb: eb::Client::new(&sdk),
        s3,
        app: c.name.clone(),
    })
}

/// Whether `region` is spelled as AWS region names are (`us-east-1`, `eu-west-3`,
/// `us-gov-west-1`, `ap-southeast-2`): lowercase words joined by dashes, ending in a number.
fn region_is_well_formed(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// The aws-beanstalk target, behind `super::Target`.
pub struct BeanstalkTarget;

impl super::Target for BeanstalkTarget {
    fn units(&self) -> (&'static str, &'static str) {
        ("environment", "environments")
    }

    /// What can be known before the first step: the region, where one is given, is a region.
    fn check(&self, ctx: &Ctx) -> Result<()> {
        for env in [PymEnv::Staging, PymEnv::Live] {
            let c = ctx.config_for(env)?;
            let (region, from) = match (&c.aws_region, std::env::var("AWS_REGION")) {
                (Some(r), _) => (r.clone(), "`aws_region` in pym-config.yaml"),
                (None, Ok(r)) => (r, "AWS_REGION"),
                (None, Err(_)) => continue,
            };
            if !region_is_well_formed(&region) {
                return Err(hinted(
                    format!("{region:?} ({from}) is not an AWS region"),
                    "AWS regions look like us-east-1, eu-west-3, ap-southeast-2 (`aws ec2 describe-regions` lists them)",
                ));
            }
        }
        Ok(())
    }

    fn address(&self, ctx: &Ctx, env: PymEnv) -> Result<Address> {
        let c = ctx.config_for(env)?;
        if env == PymEnv::Local {
            bail!("the local environment is not on a deploy target");
        }
        // With a `live_url`, live's address needs no call to AWS.
        let envs = match (env, &c.live_url) {
            (PymEnv::Live, Some(_)) => Vec::new(),
            _ => ctx.block_on(async { connect(&c).await?.environments().await })?,
        };
        if env == PymEnv::Live {
            return live_address(&c, &envs).ok_or_else(|| {
                hinted(
                    format!(
                        "no environment of {} holds the live CNAME prefix {}",
                        c.name,
                        live_prefix(&c)
                    ),
                    "deploy first: `cargo xtask deploy`",
                )
            });
        }
        let want = env_name(&c, &ctx.version()?.to_string());
        match envs
            .iter()
            .find(|e| e.environment_name() == Some(want.as_str()))
            .and_then(|e| e.cname())
        {
            Some(cname) => Ok(Address {
                host: cname.to_string(),
                port: c.aws_cname_port,
                tls: false,
                token: None,
                hold: None,
            }),
            None => Err(hinted(
                format!("environment {want} does not exist"),
                "stage this version first: `cargo xtask stage`",
            )),
        }
    }

    fn plan(
        &self,
        ctx: &Ctx,
        change: super::Change,
        _staged: Option<&super::Staged>,
    ) -> Result<Vec<String>> {
        let c = ctx.config_for(if change == super::Change::Stage {
            PymEnv::Staging
        } else {
            PymEnv::Live
        })?;
        let version = ctx.version()?.to_string();
        let prefix = live_prefix(&c);
        Ok(match change {
            super::Change::Stage => {
                let seen =
                    ctx.block_on(async { observe_stage(&connect(&c).await?, &c, &version).await })?;
                decide_stage(&seen, &c, &version, ctx.version()?.dirty, unix_now())?
                    .iter()
                    .map(|a| a.describe(&c))
                    .collect()
            }
            // Read from Beanstalk now, as the run reads it: whether anything is live decides
            // between the first promote and a swap; rollback's target is named.
            super::Change::Promote => {
                let mut seen = ctx
                    .block_on(async { observe_promote(&connect(&c).await?, &c, &version).await })?;
                // In a deploy's dry run stage has not run yet: the plan assumes it will
                // have staged the version, Ready and Green.
                if seen.staged.is_none() {
                    seen.staged = Some(("Ready".into(), "Green".into(), false));
                }
                decide_promote(&seen, &c, &version)?
                    .iter()
                    .map(|a| a.describe(&c))
                    .collect()
            }
            super::Change::Rollback => {
                let d = ctx.block_on(async { decide_rollback(&connect(&c).await?, &c).await })?;
                let (from, to) = (
                    d.current.environment_name().unwrap_or_default(),
                    d.target.environment_name().unwrap_or_default(),
                );
                let (from_v, to_v) = (
                    d.current.version_label().unwrap_or_default(),
                    d.target.version_label().unwrap_or_default(),
                );
                vec![
                    format!(
                        "swap the live CNAME {prefix} from {from} ({from_v}) to {to} ({to_v}), the environment live before; wait for both to be Ready"
                    ),
                    format!(
                        "check {}:{} serves {to_v}; tag {from_v} rolled back from and {to_v} live",
                        d.live.host, d.live.port
                    ),
                ]
            }
        })
    }

    /// Read Beanstalk (`observe_stage`), decide (`decide_stage`: every refusal comes
    /// before anything is created), carry out (`act_stage`).
    fn stage(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let c = ctx.config_for(PymEnv::Staging)?;
        let version = ctx.version()?.to_string();
        let dirty = ctx.version()?.dirty;
        let image = super::image_reference(ctx)?;
        ctx.block_on(async {
            let aws = connect(&c).await?;
            let seen = observe_stage(&aws, &c, &version).await?;
            let plan = decide_stage(&seen, &c, &version, dirty, unix_now())?;
            act_stage(ctx, &aws, &c, &image, &plan, progress).await?;
            Ok(format!("{version} on {}", env_name(&c, &version)))
        })
    }

    /// Read Beanstalk, decide the actions (`decide_promote`), carry them out (`act`).
    fn promote(
        &self,
        ctx: &Ctx,
        _staged: Option<&super::Staged>,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let c = ctx.config_for(PymEnv::Live)?;
        let version = ctx.version()?.to_string();
        ctx.block_on(async {
            let aws = connect(&c).await?;
            let seen = observe_promote(&aws, &c, &version).await?;
            let plan = decide_promote(&seen, &c, &version)?;
            act(ctx, &aws, &c, &plan, progress).await
        })
    }

    fn rollback(
        &self,
        ctx: &Ctx,
        _to: Option<&str>,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let c = ctx.config_for(PymEnv::Live)?;
        ctx.block_on(async {
            let aws = connect(&c).await?;
            let RollbackTo {
                current,
                target,
                live,
            } = decide_rollback(&aws, &c).await?;
            let current_name = current.environment_name().unwrap_or_default().to_string();
            let (to_name, to_version) = (
                target.environment_name().unwrap_or_default().to_string(),
                target.version_label().unwrap_or_default().to_string(),
            );
            let from_version = current.version_label().unwrap_or_default().to_string();
            let since = now();
            aws.swap(&to_name, &current_name).await?;
            progress.line(&format!(
                "swapped CNAMEs: {to_name} is live, {current_name} is not"
            ));
            aws.wait(
                ctx,
                &[&to_name, &current_name],
                false,
                since,
                timeout(&c),
                progress,
            )
            .await?;
            verify(&c, &live.host, live.port, &to_version, dns_window(&c)).await?;
            aws.mark(&from_version, TAG_ROLLED_BACK_AT, progress).await;
            aws.mark(&to_version, TAG_LIVE_AT, progress).await;
            ctx.set_rolled_back_to(to_version.clone());
            Ok(format!("{to_version} live again (was {from_version})"))
        })
    }

    fn status(&self, ctx: &Ctx) -> Result<super::Table> {
        let c = ctx.config_for(PymEnv::Live)?;
        let prefix = live_prefix(&c);
        ctx.block_on(async {
            let aws = connect(&c).await?;
            let mut table = super::Table::new(&[
                "ROLE",
                "ENVIRONMENT",
                "VERSION",
                "STATUS",
                "HEALTH",
                "CREATED",
                "CNAME",
            ]);
            // live holds the live CNAME (where the CNAMEs are now, whatever the names say);
            // then the others in rollback's order.
            let envs = aws.environments().await?;
            let live = envs
                .iter()
                .filter(|e| cname_prefix(e) == prefix)
                .map(|e| (e.clone(), "live"));
            let others = aws.others(&envs, &prefix).await?;
            for (e, role) in live.chain(others.into_iter().map(|(e, r)| (e, r.as_str()))) {
                let name = e.environment_name().unwrap_or_default();
                let (status, health) = state(&e);
                table.rows.push(vec![
                    role.to_string(),
                    name.to_string(),
                    e.version_label().unwrap_or_default().to_string(),
                    status.to_string(),
                    health.to_string(),
                    e.date_created()
                        .map(|d| crate::version::fmt_utc(d.secs()))
                        .unwrap_or_default(),
                    e.cname().unwrap_or_default().to_string(),
                ]);
            }
            Ok(table)
        })
    }

    /// Terminates the non-live environments beyond the `keep_previous` newest; with
    /// `execute` false, only says which.
    fn cleanup(&self, ctx: &Ctx, execute: bool) -> Result<Vec<super::Cleanup>> {
        let c = ctx.config_for(PymEnv::Live)?;
        ctx.block_on(async {
            let aws = connect(&c).await?;
            let prefix = live_prefix(&c);
            let envs = aws.environments().await?;
            let mut lines = Vec::new();
            // Previous versions first (the most recently live kept), then staged ones, then
            // those rolled back from: what goes first is what nobody would go back to.
            let others = aws.others(&envs, &prefix).await?;
            for (i, (e, _)) in others.iter().enumerate() {
                let n = e.environment_name().unwrap_or_default();
                let v = e.version_label().unwrap_or_default();
                let fate = if i < c.keep_previous as usize {
                    super::Fate::Keep(None)
                } else if e.status() != Some(&EnvironmentStatus::Ready) {
                    // Launching or updating: another run is working on it.
                    super::Fate::Keep(Some(state(e).0.to_string()))
                } else {
                    if execute {
                        aws.eb
                            .terminate_environment()
                            .environment_name(n)
                            .send()
                            .await
                            .map_err(|e| aws_error("TerminateEnvironment", e))?;
                    }
                    // Beanstalk takes minutes to terminate: it has started, not finished.
                    super::Fate::Go {
                        done: execute,
                        did: "terminating",
                        would: "terminate",
                    }
                };
                lines.push(super::Cleanup {
                    name: n.to_string(),
                    version: Some(v.to_string()),
                    fate,
                });
            }
            Ok(lines)
        })
    }
}

/// One error for a failed AWS call: what was asked, what AWS said, and what to do.
fn aws_error<
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
>(
    op: &str,
    e: SdkError<E, R>,
) -> anyhow::Error {
    let service = if op.starts_with("s3:") {
        ""
    } else {
        "elasticbeanstalk:"
    };
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("Unknown");
            let message = err.message().unwrap_or("no message");
            match code {
                "AccessDenied"
                | "AccessDeniedException"
                | "UnauthorizedOperation"
                | "InsufficientPrivilegesException" => hinted(
                    format!("AWS denied {service}{op}: {message}"),
                    format!(
                        "grant {service}{op} to the credentials in use (the profile `aws_user` names, or AWS_PROFILE / AWS_ACCESS_KEY_ID)"
                    ),
                ),
                "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "UnrecognizedClientException" => hinted(
                    format!("AWS rejected the credentials for {service}{op} ({code}): {message}"),
                    "refresh them (`aws sso login`, or new access keys) and check AWS_PROFILE / `aws_user`",
                ),
                _ => anyhow!("{service}{op} failed: {code}: {message}"),
            }
        }
        _ => {
            // What went wrong is in the source chain: "other" alone says nothing.
            let detail = std::iter::successors(std::error::Error::source(&e), |s| s.source())
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            let detail = if detail.is_empty() {
                e.to_string()
            } else {
                detail.trim_start_matches("other: ").to_string()
            };
            if detail.to_lowercase().contains("credential") {
                // The SDK names only the last provider it tried ("IMDS is disabled"),
                // which points a workstation the wrong way: say where it looked.
                let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
                hinted(
                    format!(
                        "no AWS credentials for {service}{op}: the SDK looked in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), \
                         the profile `{profile}` (or the one `aws_user` names) in ~/.aws/credentials and ~/.aws/config (keys, SSO, credential_process), \
                         web identity (AWS_WEB_IDENTITY_TOKEN_FILE), and container and instance metadata, and found none (its last word: {detail})"
                    ),
                    "on a workstation: `aws configure` or `aws sso login`, then AWS_PROFILE or `aws_user` in pym-config.yaml; in CI: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                )
            } else if matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) {
                hinted(
                    format!("cannot reach AWS for {service}{op}: {detail}"),
                    "check the network, `aws_region`, and AWS_ENDPOINT_URL if one is set",
                )
            } else {
                anyhow!("{service}{op} failed: {detail}")
            }
        }
    }
}

/// The environment of a version: `<name>-<version>`, the name shortened to fit Beanstalk's
/// 40 characters.
pub fn env_name(c: &Config, version: &str) -> String {
    let room = 40usize.saturating_sub(version.len() + 1);
    let name: String = c.name.chars().take(room).collect();
    format!("{}-{version}", name.trim_end_matches('-'))
}

/// The environment the first promote of a service creates on the live CNAME, for the
/// version that passed staging: a staged environment never takes the live CNAME.
pub fn live_env_name(c: &Config, version: &str) -> String {
    env_name(c, &format!("{version}-live"))
}

/// The CNAME prefix that makes an environment live.
fn live_prefix(c: &Config) -> String {
    if let Some(url) = &c.live_url {
        let host = url_host(url).0;
        if host.contains(".elasticbeanstalk.") {
            return host.split('.').next().unwrap_or_default().to_string();
        }
    }
    c.aws_live_cname
        .clone()
        .unwrap_or_else(|| format!("{}-live", c.name))
}

fn cname_prefix(e: &EnvironmentDescription) -> &str {
    e.cname()
        .and_then(|c| c.split('.').next())
        .unwrap_or_default()
}

/// An environment's status and health, as Beanstalk spells them.
fn state(e: &EnvironmentDescription) -> (&str, &str) {
    (
        e.status().map(|s| s.as_str()).unwrap_or("?"),
        e.health().map(|h| h.as_str()).unwrap_or("?"),
    )
}

fn is_gone(e: &EnvironmentDescription) -> bool {
    matches!(
        e.status(),
        Some(EnvironmentStatus::Terminated | EnvironmentStatus::Terminating)
    )
}

impl Aws {
    /// The application's environments that are not terminated, newest first.
    async fn environments(&self) -> Result<Vec<EnvironmentDescription>> {
        Ok(self
            .environments_with_terminating()
            .await?
            .into_iter()
            .filter(|e| !is_gone(e))
            .collect())
    }

    /// The application's environments that are not Terminated, newest first: a Terminating
    /// one still holds its name.
    async fn environments_with_terminating(&self) -> Result<Vec<EnvironmentDescription>> {
        let out = self
            .eb
            .describe_environments()
            .application_name(&self.app)
            .include_deleted(false)
            .send()
            .await
            .map_err(|e| aws_error("DescribeEnvironments", e))?;
        let mut envs: Vec<_> = out
            .environments()
            .iter()
            .filter(|e| e.status() != Some(&EnvironmentStatus::Terminated))
            .cloned()
            .collect();
        envs.sort_by_key(|e| {
            std::cmp::Reverse(e.date_created().map(|d| d.as_nanos()).unwrap_or(0))
        });
        Ok(envs)
    }

    /// The environment of that name unless it is Terminated.
    async fn environment(&self, name: &str) -> Result<Option<EnvironmentDescription>> {
        let out = self
            .eb
            .describe_environments()
            .application_name(&self.app)
            .environment_names(name)
            .include_deleted(false)
            .send()
            .await
            .map_err(|e| aws_error("DescribeEnvironments", e))?;
        Ok(out
            .environments()
            .iter()
            .find(|e| {
                e.environment_name() == Some(name)
                    && e.status() != Some(&EnvironmentStatus::Terminated)
            })
            .cloned())
    }

    /// The environment's `PYM_ENV`, from its configuration.
    async fn pym_env(&self, name: &str) -> Result<Option<String>> {
        let out = self
            .eb
            .describe_configuration_settings()
            .application_name(&self.app)
            .environment_name(name)
            .send()
            .await
            .map_err(|e| aws_error("DescribeConfigurationSettings", e))?;
        Ok(out
            .configuration_settings()
            .iter()
            .flat_map(|s| s.option_settings())
            .find(|o| o.namespace() == Some(ENV_NS) && o.option_name() == Some("PYM_ENV"))
            .and_then(|o| o.value().map(String::from)))
    }

    /// Why an environment is Red, as far as Beanstalk can say: the causes enhanced health
    /// gives (none with basic health), and the last lines of its instance's log
    /// (RequestEnvironmentInfo, then RetrieveEnvironmentInfo, read from S3). Best effort:
    /// what cannot be had is left out, and it gives up after `LOG_WAIT`.
    async fn why_red(&self, ctx: &Ctx, name: &str) -> String {
        const LOG_WAIT: Duration = Duration::from_secs(30);
        const LOG_LINES: usize = 15;
        let mut out = String::new();
        let health = self
            .eb
            .describe_environment_health()
            .environment_name(name)
            .attribute_names(eb::types::EnvironmentHealthAttribute::Causes)
            .send()
            .await;
        if let Ok(h) = health {
            for cause in h.causes() {
                out.push_str(&format!("\n  cause: {cause}"));
            }
        }
        let asked = self
            .eb
            .request_environment_info()
            .environment_name(name)
            .info_type(eb::types::EnvironmentInfoType::Tail)
            .send()
            .await;
        if asked.is_err() {
            return out;
        }
        let deadline = tokio::time::Instant::now() + LOG_WAIT;
        let url = loop {
            let got = self
                .eb
                .retrieve_environment_info()
                .environment_name(name)
                .info_type(eb::types::EnvironmentInfoType::Tail)
                .send()
                .await;
            let newest = got.ok().and_then(|g| {
                g.environment_info()
                    .iter()
                    .max_by_key(|i| i.sample_timestamp().map(|t| t.as_nanos()))
                    .and_then(|i| i.message().map(String::from))
            });
            if let Some(url) = newest {
                break url;
            }
            if tokio::time::Instant::now() >= deadline || ctx.interrupted() {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let Some((bucket, key)) = s3_location(&url) else {
            return out;
        };
        let Ok(object) = self.s3.get_object().bucket(&bucket).key(&key).send().await else {
            return out;
        };
        let Ok(body) = object.body.collect().await else {
            return out;
        };
        let text = String::from_utf8_lossy(&body.into_bytes()).to_string();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if !lines.is_empty() {
            out.push_str(&format!(
                "\n  the last lines of its log (s3://{bucket}/{key}):"
            ));
            for l in &lines[lines.len().saturating_sub(LOG_LINES)..] {
                out.push_str(&format!("\n    {l}"));
            }
        }
        out
    }

    /// Waits until every named environment is Ready (and, with `green`, Green), streaming
    /// Beanstalk's events for them into the step's output. Red, a termination or the
    /// timeout stop the wait with the warnings and errors seen.
    async fn wait(
        &self,
        ctx: &Ctx,
        names: &[&str],
        green: bool,
        since: DateTime,
        timeout: Duration,
        progress: &StepProgress<'_>,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = HashSet::new();
        let mut problems: Vec<String> = Vec::new();
        let mut shown = String::new();
        let mut pause = Duration::from_millis(250);
        loop {
            for name in names {
                // Every page: AWS answers at most 1000 events a call, newest first.
                let pages = self
                    .eb
                    .describe_events()
                    .application_name(&self.app)
                    .environment_name(*name)
                    .start_time(since)
                    .into_paginator()
                    .send()
                    .collect::<Vec<_>>()
                    .await;
                let mut events = Vec::new();
                for page in pages {
                    events.extend(
                        page.map_err(|e| aws_error("DescribeEvents", e))?
                            .events()
                            .iter()
                            .cloned(),
                    );
                }
                for ev in events.iter().rev() {
                    let key = (
                        ev.event_date().map(|d| d.as_nanos()),
                        ev.message().map(String::from),
                    );
                    if seen.insert(key) {
                        let sev = ev.severity().map(|s| s.as_str()).unwrap_or("INFO");
                        let line = format!("{name}: {sev:<5} {}", ev.message().unwrap_or_default());
                        if matches!(sev, "WARN" | "ERROR" | "FATAL") {
                            problems.push(line.clone());
                        }
                        progress.line(&line);
                    }
                }
            }
            let mut done = true;
            let mut states = Vec::new();
            for name in names {
                let Some(e) = self.environment(name).await?.filter(|e| !is_gone(e)) else {
                    bail!(
                        "environment {name} was terminated{}",
                        events_note(&problems)
                    );
                };
                let (status, health) = state(&e);
                let ready = e.status() == Some(&EnvironmentStatus::Ready);
                if ready && e.health() == Some(&EnvironmentHealth::Red) && green {
                    progress.message(&format!(
                        "{name} is Red: asking Beanstalk why, and for its log"
                    ));
                    let why = self.why_red(ctx, name).await;
                    return Err(hinted(
                        format!(
                            "environment {name} is Ready but Red: it does not pass its health check{}{why}",
                            events_note(&problems)
                        ),
                        "the service must answer 200 on `health_path` with the environment's settings; the whole log: the Beanstalk console (Logs) or `eb logs`",
                    ));
                }
                if !ready || (green && e.health() != Some(&EnvironmentHealth::Green)) {
                    done = false;
                    states.push(format!("{name}: {status}, {health}"));
                }
            }
            // The state, each time it changes.
            let now_shown = states.join("; ");
            if !now_shown.is_empty() && now_shown != shown {
                progress.message(&now_shown);
                shown = now_shown;
            }
            if done {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(hinted(
                    format!(
                        "{} not Ready{} within {}s{}",
                        names.join(" and "),
                        if green { " and Green" } else { "" },
                        timeout.as_secs(),
                        events_note(&problems)
                    ),
                    "raise `aws_timeout` in pym-config.yaml if Beanstalk is only slow; the console shows what it is doing",
                ));
            }
            if ctx.interrupted() {
                bail!(crate::error::Interrupted);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(3));
        }
    }

    /// Records on an application version that it went live (`TAG_LIVE_AT`) or was rolled
    /// back from (`TAG_ROLLED_BACK_AT`), now. Tags of a version are metadata only: no
    /// environment is updated. A failure is a warning: the switch it records is done.
    async fn mark(&self, label: &str, key: &str, progress: &StepProgress<'_>) {
        let tagged = async {
            let versions = self
                .eb
                .describe_application_versions()
                .application_name(&self.app)
                .version_labels(label)
                .send()
                .await
                .map_err(|e| aws_error("DescribeApplicationVersions", e))?;
            let arn = versions
                .application_versions()
                .first()
                .and_then(|v| v.application_version_arn())
                .ok_or_else(|| anyhow!("no application version {label}"))?
                .to_string();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            self.eb
                .update_tags_for_resource()
                .resource_arn(arn)
                .tags_to_add(Tag::builder().key(key).value(now.to_string()).build())
                .send()
                .await
                .map_err(|e| aws_error("UpdateTagsForResource", e))?;
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = tagged.await {
            progress.line(&format!("warning: could not record {key} on version {label} ({e:#}); rollback and cleanup order the versions it lacks by creation"));
        }
    }

    /// When each of these application versions last went live and was last rolled back
    /// from, from their tags (0: never, or not recorded).
    async fn history(&self, labels: &[&str]) -> Result<HashMap<String, History>> {
        let mut out = HashMap::new();
        if labels.is_empty() {
            return Ok(out);
        }
        let wanted: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let versions = self
            .eb
            .describe_application_versions()
            .application_name(&self.app)
            .set_version_labels(Some(wanted))
            .send()
            .await
            .map_err(|e| aws_error("DescribeApplicationVersions", e))?;
        for v in versions.application_versions() {
            let (Some(label), Some(arn)) = (v.version_label(), v.application_version_arn()) else {
                continue;
            };
            let tags = self
                .eb
                .list_tags_for_resource()
                .resource_arn(arn)
                .send()
                .await
                .map_err(|e| aws_error("ListTagsForResource", e))?;
            let at = |key: &str| {
                tags.resource_tags()
                    .iter()
                    .find(|t| t.key() == Some(key))
                    .and_then(|t| t.value())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            out.insert(
                label.to_string(),
                History {
                    live_at: at(TAG_LIVE_AT),
                    rolled_back_at: at(TAG_ROLLED_BACK_AT),
                },
            );
        }
        Ok(out)
    }

    /// The environments not on the live CNAME, each with its role, in the order rollback
    /// and cleanup go by: previous ones (most recently live first), then staged ones and
    /// those rolled back from (newest first).
    async fn others(
        &self,
        envs: &[EnvironmentDescription],
        prefix: &str,
    ) -> Result<Vec<(EnvironmentDescription, Role)>> {
        let labels: Vec<&str> = envs.iter().filter_map(|e| e.version_label()).collect();
        let history = self.history(&labels).await?;
        let mut facts = Vec::new();
        for e in envs.iter().filter(|e| cname_prefix(e) != prefix) {
            let history = e
                .version_label()
                .and_then(|l| history.get(l))
                .copied()
                .unwrap_or_default();
            let was_live = self
                .pym_env(e.environment_name().unwrap_or_default())
                .await?
                .as_deref()
                == Some("live");
            facts.push(Facts {
                created: e.date_created().map(|d| d.as_nanos()).unwrap_or(0),
                was_live,
                history,
            });
        }
        let others: Vec<&EnvironmentDescription> =
            envs.iter().filter(|e| cname_prefix(e) != prefix).collect();
        Ok(order(&facts)
            .into_iter()
            .map(|(i, role)| (others[i].clone(), role))
            .collect())
    }

    async fn set_pym_env(&self, name: &str, env: PymEnv) -> Result<()> {
        let setting = ConfigurationOptionSetting::builder()
            .namespace(ENV_NS)
            .option_name("PYM_ENV")
            .value(env.as_str())
            .build();
        self.eb
            .update_environment()
            .application_name(&self.app)
            .environment_name(name)
            .option_settings(setting)
            .send()
            .await
            .map_err(|e| aws_error("UpdateEnvironment", e))?;
        Ok(())
    }

    /// Creates an environment of the application (tagged with the pymdeploy version).
    async fn create_environment(&self, env: NewEnvironment<'_>) -> Result<()> {
        let mut create = self
            .eb
            .create_environment()
            .application_name(&self.app)
            .environment_name(env.name)
            .cname_prefix(env.cname)
            .version_label(env.label)
            .description(env.description)
            .set_option_settings(Some(env.settings))
            .tags(
                Tag::builder()
                    .key("pymdeploy:version")
                    .value(env.version)
                    .build(),
            );
        create = match env.platform {
            (Some(s), _) => create.solution_stack_name(s),
            (None, p) => create.set_platform_arn(p),
        };
        create
            .send()
            .await
            .map_err(|e| aws_error("CreateEnvironment", e))?;
        Ok(())
    }

    /// Terminates an environment pymdeploy gives up on (it costs money and blocks its
    /// name), saying why; a failure to terminate is a warning beside the error at hand.
    async fn give_up(&self, ctx: &Ctx, name: &str, why: &str, progress: &StepProgress<'_>) {
        match self
            .eb
            .terminate_environment()
            .environment_name(name)
            .send()
            .await
        {
            Ok(_) => progress.line(&format!("terminating {name}: {why}")),
            Err(t) => ctx.out.warn(&format!(
                "{name} could not be terminated: {:#}",
                aws_error("TerminateEnvironment", t)
            )),
        }
    }

    async fn swap(&self, a: &str, b: &str) -> Result<()> {
        self.eb
            .swap_environment_cnames()
            .source_environment_name(a)
            .destination_environment_name(b)
            .send()
            .await
            .map_err(|e| aws_error("SwapEnvironmentCNAMEs", e))?;
        Ok(())
    }
}

/// Rollback's decision: the environment on the live CNAME, the one to swap it to, and
/// the live address.
struct RollbackTo {
    current: EnvironmentDescription,
    target: EnvironmentDescription,
    live: Address,
}

/// The environment live most recently before the current one (`order`), Ready and not
/// Red: a Red environment is no place to go back to, nor one rolled back from.
async fn decide_rollback(aws: &Aws, c: &Config) -> Result<RollbackTo> {
    let envs = aws.environments().await?;
    let prefix = live_prefix(c);
    let (Some(current), Some(live)) = (
        envs.iter().find(|e| cname_prefix(e) == prefix),
        live_address(c, &envs),
    ) else {
        return Err(hinted(
            format!("no environment holds the live CNAME prefix {prefix}"),
            "nothing is live: deploy first",
        ));
    };
    let usable = |e: &EnvironmentDescription| {
        e.status() == Some(&EnvironmentStatus::Ready) && e.health() != Some(&EnvironmentHealth::Red)
    };
    let others = aws.others(&envs, &prefix).await?;
    let Some(target) = others
        .into_iter()
        .find(|(e, role)| *role == Role::Previous && usable(e))
        .map(|(e, _)| e)
    else {
        return Err(hinted(
            format!(
                "no previous live environment of {} is Ready and healthy",
                c.name
            ),
            "`cargo xtask status` lists the environments; previous ones are kept by `keep_previous`",
        ));
    };
    Ok(RollbackTo {
        current: current.clone(),
        target,
        live,
    })
}

/// The bucket and key of an S3 object URL, in either style AWS hands out (and signs):
/// virtual-hosted (`https://<bucket>.s3[.<region>].amazonaws.com/<key>?...`) or path
/// (`https://s3.<region>.amazonaws.com/<bucket>/<key>`, or any endpoint's
/// `http://host:port/<bucket>/<key>`).
fn s3_location(url: &str) -> Option<(String, String)> {
    let rest = url.split_once("://")?.1;
    let (host, path) = rest.split_once('/')?;
    let path = path.split(['?', '#']).next()?;
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match (
                bytes[i],
                bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()),
            ) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).to_string()
    };
    let host = host.split(':').next()?;
    match host.split_once(".s3") {
        Some((bucket, _)) if host.ends_with(".amazonaws.com") && !bucket.is_empty() => {
            Some((bucket.to_string(), decode(path)))
        }
        _ => {
            let (bucket, key) = path.split_once('/')?;
            Some((bucket.to_string(), decode(key)))
        }
    }
}

fn events_note(problems: &[String]) -> String {
    if problems.is_empty() {
        String::new()
    } else {
        format!("\n  {}", problems.join("\n  "))
    }
}

/// The tags pymdeploy keeps on application versions: when a version last went live, and
/// when it was last rolled back from (milliseconds since the epoch). They order rollback
/// and cleanup by what was live when, not by when environments were created.
const TAG_LIVE_AT: &str = "pym:live-at";
const TAG_ROLLED_BACK_AT: &str = "pym:rolled-back-at";

#[derive(Clone, Copy, Default, Debug)]
struct History {
    live_at: u128,
    rolled_back_at: u128,
}

/// What is known of an environment off the live CNAME, for `order`.
#[derive(Clone, Copy, Debug, Default)]
struct Facts {
    /// When it was created (any monotonic unit).
    created: i128,
    /// Whether it has `PYM_ENV=live` (it was promoted once).
    was_live: bool,
    history: History,
}

/// The decision behind rollback, cleanup and status: each environment off the live CNAME
/// (by its index in `envs`) with its role, in the order they go by. Previous ones first,
/// the most recently live first (rollback goes to the first; cleanup keeps the first
/// `keep_previous`); then staged ones and those rolled back from, newest first.
fn order(envs: &[Facts]) -> Vec<(usize, Role)> {
    let mut out: Vec<(usize, Role, &Facts)> = envs
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let role = match (f.was_live, f.history.rolled_back_at > f.history.live_at) {
                (_, true) => Role::RolledBack,
                (true, false) => Role::Previous,
                (false, false) => Role::Staged,
            };
            (i, role, f)
        })
        .collect();
    out.sort_by_key(|(_, role, f)| {
        (
            *role,
            std::cmp::Reverse(if *role == Role::Previous {
                f.history.live_at
            } else {
                0
            }),
            std::cmp::Reverse(f.created),
        )
    });
    out.into_iter().map(|(i, role, _)| (i, role)).collect()
}

/// What an environment off the live CNAME is; the order is cleanup's (kept first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// Was live (PYM_ENV=live) and not rolled back from since: where rollback goes.
    Previous,
    /// Never live: staged, or kept after a failed acceptance for a look.
    Staged,
    /// Live once, then rolled back from: not gone back to.
    RolledBack,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Previous => "previous",
            Role::Staged => "staged",
            Role::RolledBack => "rolled-back",
        }
    }
}

fn now() -> DateTime {
    DateTime::from(std::time::SystemTime::now() - Duration::from_secs(1))
}

fn option(ns: &str, name: &str, value: impl Into<String>) -> ConfigurationOptionSetting {
    ConfigurationOptionSetting::builder()
        .namespace(ns)
        .option_name(name)
        .value(value)
        .build()
}

/// The option settings of a new environment, from the config.
fn settings(ctx: &Ctx, c: &Config, env: PymEnv) -> Result<Vec<ConfigurationOptionSetting>> {
    let mut out = Vec::new();
    for pair in crate::ops::service::container_env(&ctx.version()?.to_string(), c, env)? {
        let (k, v) = pair.split_once('=').unwrap_or((&pair, ""));
        out.push(option(ENV_NS, k, v));
    }
    out.push(option(
        "aws:elasticbeanstalk:application",
        "Application Healthcheck URL",
        c.health_path.clone(),
    ));
    out.push(option(
        "aws:elasticbeanstalk:environment",
        "EnvironmentType",
        "LoadBalanced",
    ));
    out.push(option(
        "aws:elasticbeanstalk:environment",
        "LoadBalancerType",
        "application",
    ));
    out.push(option(
        "aws:elasticbeanstalk:environment:process:default",
        "HealthCheckPath",
        c.health_path.clone(),
    ));
    out.push(option(
        "aws:elasticbeanstalk:healthreporting:system",
        "SystemType",
        "enhanced",
    ));
    if let Some(t) = &c.aws_instance_type {
        out.push(option(
            "aws:autoscaling:launchconfiguration",
            "InstanceType",
            t.clone(),
        ));
    }
    if let Some(k) = &c.aws_keypair {
        out.push(option(
            "aws:autoscaling:launchconfiguration",
            "EC2KeyName",
            k.clone(),
        ));
    }
    if let Some(n) = c.aws_hosts_min {
        out.push(option("aws:autoscaling:asg", "MinSize", n.to_string()));
    }
    if let Some(n) = c.aws_hosts_max {
        out.push(option("aws:autoscaling:asg", "MaxSize", n.to_string()));
    }
    if let Some(arn) = &c.aws_cert_arn {
        out.push(option("aws:elbv2:listener:443", "ListenerEnabled", "true"));
        out.push(option("aws:elbv2:listener:443", "Protocol", "HTTPS"));
        out.push(option(
            "aws:elbv2:listener:443",
            "SSLCertificateArns",
            arn.clone(),
        ));
    }
    Ok(out)
}

/// The source bundle: a bare `Dockerrun.aws.json` (version 1, one container).
fn dockerrun(c: &Config, image: &str) -> serde_json::Value {
    let mut run = serde_json::json!({
        "AWSEBDockerrunVersion": "1",
        "Image": { "Name": image, "Update": "true" },
        "Ports": [{ "ContainerPort": c.port }],
    });
    if let Some(bucket) = &c.docker_bucket {
        run["Authentication"] = serde_json::json!({ "Bucket": bucket, "Key": c.docker_auth_key });
    }
    run
}

/// How long the live address may take to serve a swapped-in version: a swap is a DNS
/// change, and Beanstalk's CNAMEs have a 60-second TTL, so never less than three minutes.
fn dns_window(c: &Config) -> Duration {
    Duration::from_secs(c.health_timeout.max(180))
}

fn timeout(c: &Config) -> Duration {
    Duration::from_secs(c.aws_timeout)
}

/// Where live answers: `live_url`, else the CNAME of the environment holding the live
/// prefix, port 80.
fn live_address(c: &Config, envs: &[EnvironmentDescription]) -> Option<Address> {
    if let Some(url) = &c.live_url {
        let (host, port) = url_host(url);
        return Some(Address {
            host,
            port,
            tls: false,
            token: None,
            hold: None,
        });
    }
    let prefix = live_prefix(c);
    let cname = envs.iter().find(|e| cname_prefix(e) == prefix)?.cname()?;
    Some(Address {
        host: cname.to_string(),
        port: c.aws_cname_port,
        tls: false,
        token: None,
        hold: None,
    })
}

/// What `Aws::create_environment` makes.
struct NewEnvironment<'a> {
    name: &'a str,
    cname: &'a str,
    label: &'a str,
    description: String,
    settings: Vec<ConfigurationOptionSetting>,
    version: &'a str,
    /// A solution stack name, else a platform ARN.
    platform: (Option<String>, Option<String>),
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What stage reads from Beanstalk and S3 before it decides.
#[derive(Clone, Debug)]
struct StageSeen {
    /// An environment of the version's name, even one being terminated: (status,
    /// health, being terminated).
    existing: Option<(String, String, bool)>,
    /// Whether the staged environment's CNAME prefix is free, and its full name.
    cname: (bool, String),
    /// With `docker_bucket`: whether the credentials object exists, and the bucket.
    auth: Option<(bool, bool)>,
    /// The solution stack or platform ARN to create on (None: AWS lists no Docker one).
    platform: Option<(Option<String>, Option<String>)>,
    app_exists: bool,
    version_exists: bool,
}

async fn observe_stage(aws: &Aws, c: &Config, version: &str) -> Result<StageSeen> {
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
    let dns = aws
        .eb
        .check_dns_availability()
        .cname_prefix(&prefix)
        .send()
        .await
        .map_err(|e| aws_error("CheckDNSAvailability", e))?;
    let cname = (
        dns.available() != Some(false),
        dns.fully_qualified_cname().unwrap_or(&prefix).to_string(),
    );
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
    let apps = aws
        .eb
        .describe_applications()
        .application_names(&c.name)
        .send()
        .await
        .map_err(|e| aws_error("DescribeApplications", e))?;
    let versions = aws
        .eb
        .describe_application_versions()
        .application_name(&c.name)
        .version_labels(version)
        .send()
        .await
        .map_err(|e| aws_error("DescribeApplicationVersions", e))?;
    Ok(StageSeen {
        existing,
        cname,
        auth,
        platform,
        app_exists: !apps.applications().is_empty(),
        version_exists: !versions.application_versions().is_empty(),
    })
}

/// One thing stage does on Beanstalk, decided before any is done.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StageAct {
    CreateApplication,
    /// The Dockerrun.aws.json naming the pushed image, to Beanstalk's storage bucket, as
    /// application version `label`.
    UploadVersion {
        label: String,
    },
    /// The staged environment on its own CNAME, PYM_ENV=staging.
    CreateEnvironment {
        env: String,
        label: String,
        stack: Option<String>,
        platform: Option<String>,
    },
    /// Until it is Ready and Green; it is terminated if it is not.
    Wait {
        env: String,
    },
}

impl StageAct {
    fn describe(&self, c: &Config) -> String {
        match self {
            StageAct::CreateApplication => format!("create application {}", c.name),
            StageAct::UploadVersion { label } => format!(
                "upload Dockerrun.aws.json (the pushed image, by digest{}) to Beanstalk's storage bucket as application version {label}",
                c.docker_bucket
                    .as_ref()
                    .map(|b| format!("; pulled with s3://{b}/{}", c.docker_auth_key))
                    .unwrap_or_default()
            ),
            StageAct::CreateEnvironment {
                env,
                label,
                stack,
                platform,
            } => {
                let on = stack.as_deref().or(platform.as_deref()).unwrap_or("?");
                format!(
                    "create environment {env} from {label} on its own CNAME ({}), PYM_ENV=staging, on {on}",
                    env.to_lowercase()
                )
            }
            StageAct::Wait { env } => format!(
                "wait up to {}s for {env} to be Ready and Green (else terminate it)",
                c.aws_timeout
            ),
        }
    }
}

/// Stage's decision: every refusal (the environment exists, its CNAME is taken, the
/// registry credentials are missing, no Docker platform) before any action; then the
/// application if new, the version's bundle unless it exists (a `-dirty` version gets a
/// label of its own each time: its image changes with the tree), the environment, the
/// wait.
fn decide_stage(
    seen: &StageSeen,
    c: &Config,
    version: &str,
    dirty: bool,
    now_secs: u64,
) -> Result<Vec<StageAct>> {
    let name = env_name(c, version);
    if let Some((status, health, gone)) = &seen.existing {
        return Err(hinted(
            format!("environment {name} already exists ({status}, {health})"),
            if *gone {
                "it is being terminated (a failed launch): stage again once it is gone"
            } else {
                "this version is staged already: `cargo xtask promote` makes it live; commit a change to stage a new version, or terminate it (`cargo xtask cleanup --execute` once it is not live)"
            },
        ));
    }
    if !seen.cname.0 {
        return Err(hinted(
            format!("the CNAME {} is taken", seen.cname.1),
            "CNAME prefixes are unique per region across all accounts: rename the service, or set `aws_live_cname`",
        ));
    }
    if let (Some((false, bucket_exists)), Some(bucket)) = (seen.auth, &c.docker_bucket) {
        let contents = "a Docker config.json whose `auths` names the registry: {\"auths\": {\"REGISTRY\": {\"auth\": \"<base64 of user:password>\"}}}";
        return Err(match bucket_exists {
            true => hinted(
                format!(
                    "no registry credentials at s3://{bucket}/{} (the bucket exists; the object does not)",
                    c.docker_auth_key
                ),
                format!(
                    "upload {contents} there (`aws s3 cp ~/.docker/config.json s3://{bucket}/{}`), or remove `docker_bucket` for a public image",
                    c.docker_auth_key
                ),
            ),
            false => hinted(
                format!(
                    "there is no S3 bucket {bucket} (`docker_bucket`), where Beanstalk would read the registry credentials"
                ),
                format!(
                    "create it in {} (`aws s3 mb s3://{bucket}`) and upload {contents} as {}, or fix `docker_bucket`",
                    c.aws_region.as_deref().unwrap_or("your region"),
                    c.docker_auth_key
                ),
            ),
        });
    }
    let Some((stack, platform)) = seen.platform.clone() else {
        return Err(hinted(
            "AWS lists no Docker solution stack",
            "set `aws_solution_stack` (see `aws elasticbeanstalk list-available-solution-stacks`)",
        ));
    };
    let mut plan = Vec::new();
    if !seen.app_exists {
        plan.push(StageAct::CreateApplication);
    }
    let label = if seen.version_exists && dirty {
        format!("{version}.{now_secs}")
    } else {
        version.to_string()
    };
    if !seen.version_exists || dirty {
        plan.push(StageAct::UploadVersion {
            label: label.clone(),
        });
    }
    plan.push(StageAct::CreateEnvironment {
        env: name.clone(),
        label,
        stack,
        platform,
    });
    plan.push(StageAct::Wait { env: name });
    Ok(plan)
}

/// Carries out stage's plan, each action shown as it starts; an environment that does
/// not become Green is terminated.
async fn act_stage(
    ctx: &Ctx,
    aws: &Aws,
    c: &Config,
    image: &str,
    plan: &[StageAct],
    progress: &StepProgress<'_>,
) -> Result<()> {
    let version = ctx.version()?.to_string();
    let mut since = now();
    for a in plan {
        progress.line(&format!("- {}", a.describe(c)));
        match a {
            StageAct::CreateApplication => {
                aws.eb
                    .create_application()
                    .application_name(&c.name)
                    .description("deployed by pymdeploy")
                    .send()
                    .await
                    .map_err(|e| aws_error("CreateApplication", e))?;
            }
            StageAct::UploadVersion { label } => {
                let storage = aws
                    .eb
                    .create_storage_location()
                    .send()
                    .await
                    .map_err(|e| aws_error("CreateStorageLocation", e))?;
                let bucket = storage
                    .s3_bucket()
                    .ok_or_else(|| anyhow!("CreateStorageLocation named no bucket"))?
                    .to_string();
                let key = format!("{}/{label}/Dockerrun.aws.json", c.name);
                let body = serde_json::to_vec_pretty(&dockerrun(c, image))?;
                aws.s3
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .content_type("application/json")
                    .body(body.into())
                    .send()
                    .await
                    .map_err(|e| aws_error("s3:PutObject", e))?;
                progress.line(&format!("uploaded s3://{bucket}/{key} ({image})"));
                let bundle = S3Location::builder()
                    .s3_bucket(&bucket)
                    .s3_key(&key)
                    .build();
                aws.eb
                    .create_application_version()
                    .application_name(&c.name)
                    .version_label(label)
                    .description(format!("{} {version}", c.name))
                    .source_bundle(bundle)
                    .send()
                    .await
                    .map_err(|e| aws_error("CreateApplicationVersion", e))?;
            }
            StageAct::CreateEnvironment {
                env,
                label,
                stack,
                platform,
            } => {
                since = now();
                aws.create_environment(NewEnvironment {
                    name: env,
                    cname: &env.to_lowercase(),
                    label,
                    description: format!("{} {version}, deployed by pymdeploy", c.name),
                    settings: settings(ctx, c, PymEnv::Staging)?,
                    version: &version,
                    platform: (stack.clone(), platform.clone()),
                })
                .await?;
            }
            StageAct::Wait { env } => {
                if let Err(e) = aws
                    .wait(ctx, &[env.as_str()], true, since, timeout(c), progress)
                    .await
                {
                    aws.give_up(ctx, env, "it did not become Green", progress)
                        .await;
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// What promote reads from Beanstalk before it decides: the staged environment of the
/// version (its status and health, and whether it has `PYM_ENV=live` already), and the
/// environment holding the live CNAME (its name and version).
#[derive(Clone, Debug, Default)]
struct PromoteSeen {
    staged: Option<(String, String, bool)>,
    holder: Option<(String, String)>,
}

async fn observe_promote(aws: &Aws, c: &Config, version: &str) -> Result<PromoteSeen> {
    let name = env_name(c, version);
    let envs = aws.environments().await?;
    let staged = match envs
        .iter()
        .find(|e| e.environment_name() == Some(name.as_str()))
    {
        Some(e) => {
            let (status, health) = state(e);
            Some((
                status.to_string(),
                health.to_string(),
                aws.pym_env(&name).await?.as_deref() == Some("live"),
            ))
        }
        None => None,
    };
    let prefix = live_prefix(c);
    let holder = envs.iter().find(|e| cname_prefix(e) == prefix).map(|e| {
        (
            e.environment_name().unwrap_or_default().to_string(),
            e.version_label().unwrap_or_default().to_string(),
        )
    });
    Ok(PromoteSeen { staged, holder })
}

/// One thing promote does on Beanstalk, decided before any is done, so that `--dry-run`
/// prints the list a run carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Act {
    /// The first promote (nothing live): a new environment on the live CNAME from the
    /// staged one's application version and platform, `PYM_ENV=live`.
    CreateLive { env: String, from: String },
    /// `PYM_ENV=live` on the staged environment, which had staging's.
    SetLive { env: String },
    /// Until these are Ready (and, with `green`, Green), showing their events.
    Wait { envs: Vec<String>, green: bool },
    /// `env` takes the live CNAME from `from` (which keeps `env`'s, for rollback).
    Swap { env: String, from: String },
    /// The live address serves the version with `PYM_ENV=live`.
    Verify { version: String },
    /// The version is tagged live now (`TAG_LIVE_AT`).
    MarkLive { version: String },
    /// An environment made redundant is terminated.
    Terminate { env: String, why: String },
}

impl Act {
    fn describe(&self, c: &Config) -> String {
        match self {
            Act::CreateLive { env, from } => format!(
                "create environment {env} on the live CNAME {} from {from}'s application version, PYM_ENV=live",
                live_prefix(c)
            ),
            Act::SetLive { env } => format!("set PYM_ENV=live on {env}"),
            Act::Wait { envs, green } => format!(
                "wait up to {}s for {} to be Ready{}",
                c.aws_timeout,
                envs.join(" and "),
                if *green { " and Green" } else { "" }
            ),
            Act::Swap { env, from } => format!(
                "swap CNAMEs: {env} takes the live CNAME {} from {from}",
                live_prefix(c)
            ),
            Act::Verify { version } => {
                format!("check the live address serves {version} with PYM_ENV=live")
            }
            Act::MarkLive { version } => format!("tag {version} live ({TAG_LIVE_AT})"),
            Act::Terminate { env, why } => format!("terminate {env}: {why}"),
        }
    }
}

/// Promote's decision. The staged environment must be Ready and Green. Nothing live: a
/// live environment is created for the version, and the staged one, redundant, ends. The
/// staged one holds the live CNAME already: only `PYM_ENV=live` if it lacks it, then the
/// check. Else: `PYM_ENV=live`, the swap, the check, the tag.
fn decide_promote(seen: &PromoteSeen, c: &Config, version: &str) -> Result<Vec<Act>> {
    let name = env_name(c, version);
    let Some((status, health, was_live)) = &seen.staged else {
        return Err(hinted(
            format!("environment {name} does not exist: {version} is not staged"),
            "stage it first: `cargo xtask stage`",
        ));
    };
    if status != "Ready" || health != "Green" {
        return Err(hinted(
            format!(
                "environment {name} is {status}, {health}: only a Ready and Green environment is promoted"
            ),
            "wait for it, or look at its events in the console",
        ));
    }
    let v = version.to_string();
    let Some((holder, _)) = &seen.holder else {
        let live = live_env_name(c, version);
        return Ok(vec![
            Act::CreateLive {
                env: live.clone(),
                from: name.clone(),
            },
            Act::Wait {
                envs: vec![live.clone()],
                green: true,
            },
            Act::Verify { version: v.clone() },
            Act::MarkLive { version: v },
            Act::Terminate {
                env: name,
                why: format!("{live} runs the same version"),
            },
        ]);
    };
    let mut plan = Vec::new();
    if !was_live {
        plan.extend([
            Act::SetLive { env: name.clone() },
            Act::Wait {
                envs: vec![name.clone()],
                green: true,
            },
        ]);
    }
    if *holder == name {
        plan.push(Act::Verify { version: v });
        return Ok(plan);
    }
    plan.extend([
        Act::Swap {
            env: name.clone(),
            from: holder.clone(),
        },
        Act::Wait {
            envs: vec![name, holder.clone()],
            green: false,
        },
        Act::Verify { version: v.clone() },
        Act::MarkLive { version: v },
    ]);
    Ok(plan)
}

/// Carries out promote's plan, each action shown as it starts. A failure before the live
/// CNAME moves leaves live as it was (a live environment being created for a first
/// promote is terminated); a check that fails after the swap swaps back.
async fn act(
    ctx: &Ctx,
    aws: &Aws,
    c: &Config,
    plan: &[Act],
    progress: &StepProgress<'_>,
) -> Result<String> {
    let version = ctx.version()?.to_string();
    let mut created: Option<String> = None;
    let mut swapped: Option<(String, String)> = None;
    let mut since = now();
    for a in plan {
        progress.line(&format!("- {}", a.describe(c)));
        let done: Result<()> = async {
            match a {
                Act::CreateLive { env, from } => {
                    let prefix = live_prefix(c);
                    let dns = aws.eb.check_dns_availability().cname_prefix(&prefix).send().await.map_err(|e| aws_error("CheckDNSAvailability", e))?;
                    if dns.available() == Some(false) {
                        return Err(hinted(
                            format!("the live CNAME {} is taken by another account or application", dns.fully_qualified_cname().unwrap_or(&prefix)),
                            "CNAME prefixes are unique per region across all accounts: set `aws_live_cname` to one that is free",
                        ));
                    }
                    let staged = aws.environment(from).await?.ok_or_else(|| anyhow!("{from} disappeared"))?;
                    let label = staged.version_label().ok_or_else(|| anyhow!("{from} names no application version"))?;
                    since = now();
                    aws.create_environment(NewEnvironment {
                        name: env,
                        cname: &prefix,
                        label,
                        description: format!("{} {version}, live, deployed by pymdeploy", c.name),
                        settings: settings(ctx, c, PymEnv::Live)?,
                        version: &version,
                        platform: (staged.solution_stack_name().map(str::to_string), staged.platform_arn().map(str::to_string)),
                    })
                    .await?;
                    created = Some(env.clone());
                    Ok(())
                }
                Act::SetLive { env } => {
                    since = now();
                    aws.set_pym_env(env, PymEnv::Live).await
                }
                Act::Wait { envs, green } => {
                    let names: Vec<&str> = envs.iter().map(String::as_str).collect();
                    aws.wait(ctx, &names, *green, since, timeout(c), progress).await
                }
                Act::Swap { env, from } => {
                    since = now();
                    aws.swap(env, from).await?;
                    swapped = Some((env.clone(), from.clone()));
                    Ok(())
                }
                Act::Verify { version } => {
                    let live = live_address(c, &aws.environments().await?).ok_or_else(|| anyhow!("no environment holds the live CNAME {}", live_prefix(c)))?;
                    // Ctrl-C here undoes the switch (swap back, or the new live
                    // environment terminated): nothing unverified stays live.
                    ctx.interruptible(verify(c, &live.host, live.port, version, dns_window(c))).await
                }
                Act::MarkLive { version } => {
                    aws.mark(version, TAG_LIVE_AT, progress).await;
                    Ok(())
                }
                Act::Terminate { env, why } => {
                    aws.give_up(ctx, env, why, progress).await;
                    Ok(())
                }
            }
        }
        .await;
        let Err(e) = done else { continue };
        if let Some(env) = &created {
            aws.give_up(ctx, env, "the first promote failed", progress)
                .await;
            return Err(e.context(format!(
                "promoting {version} failed; nothing was live, and nothing is"
            )));
        }
        if let Some((env, from)) = &swapped {
            progress.line(&format!(
                "live does not serve {version}: swapping back to {from}"
            ));
            let since = now();
            aws.swap(from, env).await?;
            if let Err(w) = aws
                .wait(
                    ctx,
                    &[env.as_str(), from.as_str()],
                    false,
                    since,
                    timeout(c),
                    progress,
                )
                .await
            {
                return Err(e.context(format!(
                    "the swap back to {from} was started and has not finished ({w:#})"
                )));
            }
            return Err(e.context(format!("swapped back: {from} is live again")));
        }
        return Err(e.context(format!("promoting {version} failed; live is unchanged")));
    }
    let live = live_address(c, &aws.environments().await?)
        .map(|a| format!("{}:{}", a.host, a.port))
        .unwrap_or_default();
    Ok(match plan.first() {
        Some(Act::CreateLive { env, .. }) => {
            format!("{version} live on {live} (the first live environment, {env})")
        }
        _ => match plan.iter().find_map(|a| {
            if let Act::Swap { from, .. } = a {
                Some(from)
            } else {
                None
            }
        }) {
            Some(from) => {
                let was = aws
                    .environment(from)
                    .await?
                    .and_then(|e| e.version_label().map(String::from))
                    .unwrap_or_else(|| "?".into());
                format!("{version} live on {live} (was {was}, kept on {from} for rollback)")
            }
            None if plan.iter().any(|a| matches!(a, Act::SetLive { .. })) => {
                format!("{version} live on {live} (the first environment: it holds the live CNAME)")
            }
            None => format!("{version} is already live on {}", env_name(c, &version)),
        },
    })
}

/// Asks `/version` on the live address until it names `version` and `PYM_ENV=live`.
async fn verify(
    config: &Config,
    host: &str,
    port: u16,
    version: &str,
    within: Duration,
) -> Result<()> {
    super::verify_version(
        config,
        host,
        port,
        version,
        Some(PymEnv::Live),
        within,
        super::Poll {
            every: Duration::from_millis(250),
            ask: Duration::from_secs(5),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_beanstalk() {
        let dir = std::env::temp_dir().join(format!("pym-eb-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(crate::config::CONFIG_FILE), "name: a-very-long-service-name-indeed\ndeploy_target: aws-beanstalk\ndocker_repo: registry.example.com/team\n").unwrap();
        let mut c = Config::load(&dir, PymEnv::Live).unwrap();
        let n = env_name(&c, "261127-1900-15-0ebaf1");
        assert!(
            n.len() <= 40 && n.ends_with("-261127-1900-15-0ebaf1") && !n.contains("--"),
            "{n}"
        );
        c.name = "hello".into();
        assert_eq!(
            env_name(&c, "261127-1900-15-0ebaf1"),
            "hello-261127-1900-15-0ebaf1"
        );
        assert_eq!(
            live_env_name(&c, "261127-1900-15-0ebaf1"),
            "hello-261127-1900-15-0ebaf1-live"
        );
        c.name = "a-very-long-service-name-indeed".into();
        let l = live_env_name(&c, "261127-1900-15-0ebaf1");
        assert!(
            l.len() <= 40 && l.ends_with("-261127-1900-15-0ebaf1-live") && !l.contains("--"),
            "{l}"
        );
        c.name = "hello".into();
        assert_eq!(live_prefix(&c), "hello-live");
        c.live_url = Some("http://blue.us-east-1.elasticbeanstalk.com/".into());
        assert_eq!(live_prefix(&c), "blue");
        c.live_url = Some("https://api.example.com".into());
        c.aws_live_cname = Some("api-prod".into());
        assert_eq!(live_prefix(&c), "api-prod");
        assert_eq!(
            url_host("https://api.example.com/x"),
            ("api.example.com".into(), 443)
        );
        assert_eq!(
            url_host("http://h.localhost:8080"),
            ("h.localhost".into(), 8080)
        );
        for good in [
            "us-east-1",
            "eu-west-3",
            "ap-southeast-2",
            "us-gov-west-1",
            "cn-north-1",
            "us-iso-east-1",
            "il-central-1",
        ] {
            assert!(region_is_well_formed(good), "{good}");
        }
        for bad in [
            "us-east1",
            "US-EAST-1",
            "useast1",
            "eu west 3",
            "us-east-",
            "-east-1",
            "us-east-1a",
            "",
        ] {
            assert!(!region_is_well_formed(bad), "{bad}");
        }
    }

    /// Environments off the live CNAME, as `order` sees them: (created, was live,
    /// live at, rolled back at).
    fn facts(list: &[(i128, bool, u128, u128)]) -> Vec<Facts> {
        list.iter()
            .map(|&(created, was_live, live_at, rolled_back_at)| Facts {
                created,
                was_live,
                history: History {
                    live_at,
                    rolled_back_at,
                },
            })
            .collect()
    }

    #[test]
    fn rollback_and_cleanup_go_by_what_was_live_when() {
        use Role::*;
        // The first deploy: nothing else.
        assert_eq!(order(&[]), []);
        // A second deploy: the first version, live before, is where rollback goes.
        assert_eq!(order(&facts(&[(1, true, 10, 0)])), [(0, Previous)]);
        // A staged version never promoted (its acceptance failed) is no rollback target.
        assert_eq!(
            order(&facts(&[(1, true, 10, 0), (3, false, 0, 0)])),
            [(0, Previous), (1, Staged)]
        );
        // V0 live, C1 promoted, rolled back (V0 live again at 30), C2 promoted: off live
        // are V0 and C1; rollback goes to V0, C1 (rolled back from) comes last.
        let v0_c1 = facts(&[(1, true, 30, 0), (2, true, 20, 30)]);
        assert_eq!(order(&v0_c1), [(0, Previous), (1, RolledBack)]);
        // C1 promoted again after its rollback: previous once more, by when it was live.
        assert_eq!(
            order(&facts(&[(1, true, 30, 0), (2, true, 40, 30)])),
            [(1, Previous), (0, Previous)]
        );
        // Versions from before the tags (no history): newest first, as before.
        assert_eq!(
            order(&facts(&[(1, true, 0, 0), (2, true, 0, 0)])),
            [(1, Previous), (0, Previous)]
        );
        // Cleanup beyond keep_previous = 1 keeps the first of this order: the most recently
        // live previous version, then removes staged ones and the rolled-back one.
        let many = facts(&[
            (1, true, 10, 0),
            (2, true, 50, 0),
            (3, false, 0, 0),
            (4, true, 40, 60),
        ]);
        assert_eq!(
            order(&many),
            [(1, Previous), (0, Previous), (2, Staged), (3, RolledBack)]
        );
    }

    /// The config of a Beanstalk service `hello`, with `extra` keys, for `env`.
    fn hello(tag: &str, extra: &str, env: PymEnv) -> Config {
        let dir = std::env::temp_dir().join(format!("pym-eb-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(crate::config::CONFIG_FILE), format!("name: hello\ndeploy_target: aws-beanstalk\ndocker_repo: registry.example.com/team\n{extra}")).unwrap();
        Config::load(&dir, env).unwrap()
    }

    fn seen(staged: Option<(&str, &str, bool)>, holder: Option<&str>) -> PromoteSeen {
        PromoteSeen {
            staged: staged.map(|(s, h, l)| (s.into(), h.into(), l)),
            holder: holder.map(|h| (h.into(), "v0".into())),
        }
    }

    #[test]
    fn promote_decides_from_what_beanstalk_holds() {
        use Act::*;
        let c = hello("decide", "", PymEnv::Live);
        let v = "261127-1900-15-0ebaf1";
        let (staged, live) = (env_name(&c, v), live_env_name(&c, v));
        // Not staged, or staged but not Ready and Green: refused.
        assert!(decide_promote(&seen(None, None), &c, v).is_err());
        assert!(
            format!(
                "{}",
                decide_promote(&seen(Some(("Ready", "Red", false)), None), &c, v).unwrap_err()
            )
            .contains("only a Ready and Green environment is promoted")
        );
        // The first deploy: a live environment for the version; the staged one ends.
        let first = decide_promote(&seen(Some(("Ready", "Green", false)), None), &c, v).unwrap();
        assert_eq!(
            first[0],
            CreateLive {
                env: live.clone(),
                from: staged.clone()
            }
        );
        assert_eq!(
            first.last(),
            Some(&Terminate {
                env: staged.clone(),
                why: format!("{live} runs the same version")
            })
        );
        assert!(
            !first.iter().any(|a| matches!(a, Swap { .. })),
            "nothing to swap with on a first deploy"
        );
        // A second deploy: PYM_ENV=live, the swap with the live one, the check, the tag.
        let second = decide_promote(
            &seen(Some(("Ready", "Green", false)), Some("hello-old")),
            &c,
            v,
        )
        .unwrap();
        assert_eq!(
            second,
            [
                SetLive {
                    env: staged.clone()
                },
                Wait {
                    envs: vec![staged.clone()],
                    green: true
                },
                Swap {
                    env: staged.clone(),
                    from: "hello-old".into()
                },
                Wait {
                    envs: vec![staged.clone(), "hello-old".into()],
                    green: false
                },
                Verify { version: v.into() },
                MarkLive { version: v.into() },
            ]
        );
        // Promoted before (rolled back from, promoted again): no PYM_ENV update.
        let again = decide_promote(
            &seen(Some(("Ready", "Green", true)), Some("hello-old")),
            &c,
            v,
        )
        .unwrap();
        assert_eq!(
            again[0],
            Swap {
                env: staged.clone(),
                from: "hello-old".into()
            }
        );
        // Already on the live CNAME: only the check.
        assert_eq!(
            decide_promote(&seen(Some(("Ready", "Green", true)), Some(&staged)), &c, v).unwrap(),
            [Verify { version: v.into() }]
        );
    }

    #[test]
    fn stage_refuses_before_it_creates_and_creates_only_what_is_missing() {
        use StageAct::*;
        let c = hello("stage", "docker_bucket: creds\n", PymEnv::Staging);
        let v = "261127-1900-15-0ebaf1";
        let env = env_name(&c, v);
        let stack = Some("64bit Amazon Linux 2023 v4.7.1 running Docker".to_string());
        let fresh = StageSeen {
            existing: None,
            cname: (true, format!("{env}.x")),
            auth: Some((true, true)),
            platform: Some((stack.clone(), None)),
            app_exists: false,
            version_exists: false,
        };
        // The first deploy: the application, the version, the environment, the wait.
        assert_eq!(
            decide_stage(&fresh, &c, v, false, 7).unwrap(),
            [
                CreateApplication,
                UploadVersion { label: v.into() },
                CreateEnvironment {
                    env: env.clone(),
                    label: v.into(),
                    stack: stack.clone(),
                    platform: None
                },
                Wait { env: env.clone() },
            ]
        );
        // A second version: the application exists; a version staged before (its
        // environment terminated since) is reused, unless dirty (a label of its own).
        let again = StageSeen {
            app_exists: true,
            version_exists: true,
            ..fresh.clone()
        };
        assert_eq!(
            decide_stage(&again, &c, v, false, 7).unwrap()[0],
            CreateEnvironment {
                env: env.clone(),
                label: v.into(),
                stack: stack.clone(),
                platform: None
            }
        );
        assert_eq!(
            decide_stage(&again, &c, v, true, 7).unwrap()[0],
            UploadVersion {
                label: format!("{v}.7")
            }
        );
        // Refusals, before anything is created.
        let refused =
            |seen: StageSeen| format!("{}", decide_stage(&seen, &c, v, false, 7).unwrap_err());
        assert!(
            refused(StageSeen {
                existing: Some(("Ready".into(), "Green".into(), false)),
                ..fresh.clone()
            })
            .contains("already exists (Ready, Green)")
        );
        assert!(
            refused(StageSeen {
                cname: (false, "taken.x".into()),
                ..fresh.clone()
            })
            .contains("the CNAME taken.x is taken")
        );
        assert!(
            refused(StageSeen {
                auth: Some((false, true)),
                ..fresh.clone()
            })
            .contains("the bucket exists; the object does not")
        );
        assert!(
            refused(StageSeen {
                auth: Some((false, false)),
                ..fresh.clone()
            })
            .contains("there is no S3 bucket creds")
        );
        assert!(
            refused(StageSeen {
                platform: None,
                ..fresh.clone()
            })
            .contains("no Docker solution stack")
        );
    }

    #[test]
    fn log_urls_name_their_s3_object() {
        let at = |u: &str| s3_location(u).map(|(b, k)| format!("{b} {k}"));
        let key = "resources/environments/logs/tail/e-abc/i-0123/TailDump.txt";
        assert_eq!(at(&format!("https://elasticbeanstalk-us-east-1-123456789012.s3.amazonaws.com/{key}?X-Amz-Signature=ab%2Fc")).as_deref(), Some(format!("elasticbeanstalk-us-east-1-123456789012 {key}").as_str()));
        assert_eq!(
            at(&format!(
                "https://logs-bucket.s3.eu-west-3.amazonaws.com/{key}"
            ))
            .as_deref(),
            Some(format!("logs-bucket {key}").as_str())
        );
        assert_eq!(
            at(&format!(
                "https://s3.eu-west-3.amazonaws.com/logs-bucket/{key}?x=1"
            ))
            .as_deref(),
            Some(format!("logs-bucket {key}").as_str())
        );
        assert_eq!(
            at("http://127.0.0.1:4566/b/dir/a%20b.txt").as_deref(),
            Some("b dir/a b.txt")
        );
        assert_eq!(at("not a url"), None);
    }
}

//! The AWS SDK as the Beanstalk target calls it: the clients, the one `aws_error`, and
//! the calls the observer and the actor share. A thin layer: the SDK's builders are used
//! as they are (a wrapper would repeat them).

use std::time::Duration;

use anyhow::{Result, anyhow};
use aws_sdk_elasticbeanstalk as eb;
use aws_sdk_elasticbeanstalk::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_elasticbeanstalk::primitives::DateTime;
use aws_sdk_elasticbeanstalk::types::{
    ConfigurationOptionSetting, EnvironmentDescription, EnvironmentStatus, Tag,
};

use crate::config::{Config, PymEnv};
use crate::error::hinted;

pub(super) const ENV_NS: &str = "aws:elasticbeanstalk:application:environment";

/// The SDK clients, made once per command from the default credential chain.
pub(super) struct Aws {
    pub eb: eb::Client,
    pub s3: aws_sdk_s3::Client,
    pub app: String,
}

pub(super) async fn connect(c: &Config) -> Result<Aws> {
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
    if let Some(role) = &c.aws_role_arn
        && crate::ops::oidc::available()
    {
        loader = loader.credentials_provider(web_identity(c, role).await?);
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

/// The credentials of `role`, assumed with the CI job's identity token
/// (AssumeRoleWithWebIdentity, through the SDK's own web identity provider): asked once
/// per process and kept until five minutes before they expire, so a run with many calls
/// makes one exchange.
async fn web_identity(c: &Config, role: &str) -> Result<eb::config::Credentials> {
    use aws_config::web_identity_token::{StaticConfiguration, WebIdentityTokenCredentialsProvider};
    use eb::config::ProvideCredentials;
    static KEPT: tokio::sync::Mutex<Option<(String, eb::config::Credentials)>> =
        tokio::sync::Mutex::const_new(None);
    let mut kept = KEPT.lock().await;
    let fresh = |creds: &eb::config::Credentials| {
        creds.expiry().is_none_or(|e| {
            e > std::time::SystemTime::now() + Duration::from_secs(300)
        })
    };
    if let Some((r, creds)) = kept.as_ref()
        && r == role
        && fresh(creds)
    {
        return Ok(creds.clone());
    }
    let token = crate::ops::oidc::github_token(crate::ops::oidc::AWS_AUDIENCE).await?;
    let file = crate::ops::oidc::token_file(&token)?;
    let mut provider_config = aws_config::provider_config::ProviderConfig::default();
    if let Some(region) = &c.aws_region {
        provider_config = provider_config.with_region(Some(aws_config::Region::new(region.clone())));
    }
    let provider = WebIdentityTokenCredentialsProvider::builder()
        .static_configuration(StaticConfiguration {
            web_identity_token_file: file.path.clone(),
            role_arn: role.to_string(),
            session_name: format!("pymdeploy-{}", c.name),
        })
        .configure(&provider_config)
        .build();
    let creds = provider.provide_credentials().await.map_err(|e| {
        hinted(
            format!("cannot assume {role} with this job's identity token: {}", eb::error::DisplayErrorContext(&e)),
            "the role's trust policy must allow token.actions.githubusercontent.com for this repository (and environment), with the audience sts.amazonaws.com",
        )
    })?;
    crate::output::Printer::from_env().add_secret(creds.secret_access_key());
    if let Some(t) = creds.session_token() {
        crate::output::Printer::from_env().add_secret(t);
    }
    *kept = Some((role.to_string(), creds.clone()));
    Ok(creds)
}

/// One error for a failed AWS call: what was asked, what AWS said, and what to do.
pub(super) fn aws_error<
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

/// An environment's status and health, as Beanstalk spells them.
pub(super) fn state(e: &EnvironmentDescription) -> (&str, &str) {
    (
        e.status().map(|s| s.as_str()).unwrap_or("?"),
        e.health().map(|h| h.as_str()).unwrap_or("?"),
    )
}

pub(super) fn is_gone(e: &EnvironmentDescription) -> bool {
    matches!(
        e.status(),
        Some(EnvironmentStatus::Terminated | EnvironmentStatus::Terminating)
    )
}

impl Aws {
    /// The application's environments that are not terminated, newest first.
    pub async fn environments(&self) -> Result<Vec<EnvironmentDescription>> {
        Ok(self
            .environments_with_terminating()
            .await?
            .into_iter()
            .filter(|e| !is_gone(e))
            .collect())
    }

    /// The application's environments that are not Terminated, newest first: a Terminating
    /// one still holds its name.
    pub async fn environments_with_terminating(&self) -> Result<Vec<EnvironmentDescription>> {
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
    pub async fn environment(&self, name: &str) -> Result<Option<EnvironmentDescription>> {
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
    pub async fn pym_env(&self, name: &str) -> Result<Option<String>> {
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

    /// Sets `PYM_ENV` on an environment: an update Beanstalk then carries out.
    pub async fn set_pym_env(&self, name: &str, env: PymEnv) -> Result<()> {
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
    pub async fn create_environment(&self, env: NewEnvironment<'_>) -> Result<()> {
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

    pub async fn swap(&self, a: &str, b: &str) -> Result<()> {
        self.eb
            .swap_environment_cnames()
            .source_environment_name(a)
            .destination_environment_name(b)
            .send()
            .await
            .map_err(|e| aws_error("SwapEnvironmentCNAMEs", e))?;
        Ok(())
    }

    pub async fn terminate(&self, name: &str) -> Result<()> {
        self.eb
            .terminate_environment()
            .environment_name(name)
            .send()
            .await
            .map_err(|e| aws_error("TerminateEnvironment", e))?;
        Ok(())
    }

    /// Ends an update in progress: the environment keeps its configuration from before.
    pub async fn abort_update(&self, name: &str) -> Result<()> {
        self.eb
            .abort_environment_update()
            .environment_name(name)
            .send()
            .await
            .map_err(|e| aws_error("AbortEnvironmentUpdate", e))?;
        Ok(())
    }

    /// Whether a CNAME prefix is free in the region, and its full name.
    pub async fn cname_free(&self, prefix: &str) -> Result<(bool, String)> {
        let dns = self
            .eb
            .check_dns_availability()
            .cname_prefix(prefix)
            .send()
            .await
            .map_err(|e| aws_error("CheckDNSAvailability", e))?;
        Ok((
            dns.available() != Some(false),
            dns.fully_qualified_cname().unwrap_or(prefix).to_string(),
        ))
    }

    /// The application's ARN, if it exists.
    pub async fn application_arn(&self) -> Result<Option<String>> {
        let apps = self
            .eb
            .describe_applications()
            .application_names(&self.app)
            .send()
            .await
            .map_err(|e| aws_error("DescribeApplications", e))?;
        Ok(apps
            .applications()
            .first()
            .and_then(|a| a.application_arn())
            .map(String::from))
    }

    /// The tags of a resource, as (key, value).
    pub async fn tags(&self, arn: &str) -> Result<Vec<(String, String)>> {
        let tags = self
            .eb
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| aws_error("ListTagsForResource", e))?;
        Ok(tags
            .resource_tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect())
    }

    /// Adds and removes tags of a resource in one call (metadata only: nothing restarts).
    pub async fn update_tags(
        &self,
        arn: &str,
        add: &[(String, String)],
        remove: &[String],
    ) -> Result<()> {
        let add: Vec<Tag> = add
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        self.eb
            .update_tags_for_resource()
            .resource_arn(arn)
            .set_tags_to_add((!add.is_empty()).then_some(add))
            .set_tags_to_remove((!remove.is_empty()).then(|| remove.to_vec()))
            .send()
            .await
            .map_err(|e| aws_error("UpdateTagsForResource", e))?;
        Ok(())
    }

    /// The application versions `labels` (all when empty): label, ARN, source bundle.
    pub async fn versions(
        &self,
        labels: &[String],
    ) -> Result<Vec<(String, String, String, String)>> {
        let out = self
            .eb
            .describe_application_versions()
            .application_name(&self.app)
            .set_version_labels((!labels.is_empty()).then(|| labels.to_vec()))
            .send()
            .await
            .map_err(|e| aws_error("DescribeApplicationVersions", e))?;
        Ok(out
            .application_versions()
            .iter()
            .filter_map(|v| {
                let bundle = v.source_bundle();
                Some((
                    v.version_label()?.to_string(),
                    v.application_version_arn().unwrap_or_default().to_string(),
                    bundle
                        .and_then(|b| b.s3_bucket())
                        .unwrap_or_default()
                        .to_string(),
                    bundle
                        .and_then(|b| b.s3_key())
                        .unwrap_or_default()
                        .to_string(),
                ))
            })
            .collect())
    }

    /// The image an application version runs: `Image.Name` of its `Dockerrun.aws.json`.
    pub async fn image_of(&self, label: &str) -> Result<Option<String>> {
        let Some((_, _, bucket, key)) = self.versions(&[label.to_string()]).await?.pop() else {
            return Ok(None);
        };
        let object = self
            .s3
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| aws_error("s3:GetObject", e))?;
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| anyhow!("reading s3://{bucket}/{key}: {e}"))?
            .into_bytes();
        let run: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(run["Image"]["Name"].as_str().map(String::from))
    }
}

/// What `Aws::create_environment` makes.
pub(super) struct NewEnvironment<'a> {
    pub name: &'a str,
    pub cname: &'a str,
    pub label: &'a str,
    pub description: String,
    pub settings: Vec<ConfigurationOptionSetting>,
    pub version: &'a str,
    /// A solution stack name, else a platform ARN.
    pub platform: (Option<String>, Option<String>),
}

/// A moment just before now, for the events an action causes.
pub(super) fn now() -> DateTime {
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
pub(super) fn settings(
    version: &str,
    c: &Config,
    env: PymEnv,
) -> Result<Vec<ConfigurationOptionSetting>> {
    let mut out = Vec::new();
    for pair in crate::ops::service::container_env(version, c, env)? {
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
pub(super) fn dockerrun(c: &Config, image: &str) -> serde_json::Value {
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

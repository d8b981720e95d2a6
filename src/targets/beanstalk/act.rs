//! The Beanstalk target's `Actor`: what each `Act` says (the line `--dry-run` prints),
//! what it does through the SDK, and what undoes it. `targets::plan::execute` runs them.

use std::time::Duration;

use anyhow::{Result, anyhow};
use aws_sdk_elasticbeanstalk::primitives::DateTime;
use aws_sdk_elasticbeanstalk::types::S3Location;

use super::aws::{Aws, NewEnvironment, aws_error, dockerrun, now, settings};
use super::decide::Act;
use super::{live_address, live_prefix, record};
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::output::StepProgress;
use crate::targets::history::History;
use crate::targets::plan::Actor;

/// Carries out the Beanstalk target's actions.
pub struct Runner {
    pub aws: Aws,
    pub c: Config,
    /// The version the environments it makes run (the staged one, for a promote).
    pub version: String,
    /// The deploy record as observed: the base of the first write to an application that
    /// has only the older tags.
    pub base: History,
    /// Since when Beanstalk's events concern the actions under way.
    since: DateTime,
}

impl Runner {
    pub fn new(aws: Aws, c: Config, version: &str, base: History) -> Runner {
        Runner {
            aws,
            c,
            version: version.to_string(),
            base,
            since: now(),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.c.aws_timeout.get())
    }

    /// The line that says what `act` does.
    fn line(&self, act: &Act) -> String {
        let c = &self.c;
        match act {
            Act::CreateApplication => format!("create application {}", c.name),
            Act::UploadVersion { label, .. } => format!(
                "upload Dockerrun.aws.json (the pushed image, by digest{}) to Beanstalk's storage bucket as application version {label}",
                c.docker_bucket
                    .as_ref()
                    .map(|b| format!("; pulled with s3://{b}/{}", c.docker_auth_key))
                    .unwrap_or_default()
            ),
            Act::CreateEnvironment {
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
            Act::CreateLive { env, from, .. } => format!(
                "create environment {env} on the live CNAME {} from {from}'s application version, PYM_ENV=live",
                live_prefix(c)
            ),
            Act::Wait { envs, green } => format!(
                "wait up to {}s for {} to be Ready{}",
                c.aws_timeout,
                envs.join(" and "),
                if *green { " and Green" } else { "" }
            ),
            Act::SetLive { env } => format!("set PYM_ENV=live on {env}"),
            Act::Restore { env } => format!("set PYM_ENV=staging on {env} again"),
            Act::Swap { env, from } => format!(
                "swap CNAMEs: {env} takes the live CNAME {} from {from}",
                live_prefix(c)
            ),
            Act::SwapBack { env, from } => format!(
                "swap CNAMEs back: {from} takes the live CNAME {} again from {env}",
                live_prefix(c)
            ),
            Act::Verify { version } => {
                format!("check the live address serves {version} with PYM_ENV=live")
            }
            Act::Record { notes } => format!(
                "record {} in the deploy record",
                notes
                    .iter()
                    .map(|(event, version, _)| event.say(version))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Act::Terminate { env, why } => format!("terminate {env} ({why})"),
        }
    }

    async fn act(&mut self, act: &Act, progress: &StepProgress<'_>) -> Result<Option<Act>> {
        let (aws, c) = (&self.aws, &self.c);
        let timeout = self.timeout();
        let terminate = |env: &str| Act::Terminate {
            env: env.to_string(),
            why: "the step did not finish".into(),
        };
        match act {
            Act::CreateApplication => {
                aws.eb
                    .create_application()
                    .application_name(&c.name)
                    .description("deployed by pymdeploy")
                    .send()
                    .await
                    .map_err(|e| aws_error("CreateApplication", e))?;
                Ok(None)
            }
            Act::UploadVersion { label, image } => {
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
                    .description(format!("{} {}", c.name, self.version))
                    .source_bundle(bundle)
                    .send()
                    .await
                    .map_err(|e| aws_error("CreateApplicationVersion", e))?;
                Ok(None)
            }
            Act::CreateEnvironment {
                env,
                label,
                stack,
                platform,
            } => {
                self.since = now();
                aws.create_environment(NewEnvironment {
                    name: env,
                    cname: &env.to_lowercase(),
                    label,
                    description: format!("{} {}, deployed by pymdeploy", c.name, self.version),
                    settings: settings(&self.version, c, PymEnv::Staging)?,
                    version: &self.version,
                    platform: (stack.clone(), platform.clone()),
                })
                .await?;
                Ok(Some(terminate(env)))
            }
            Act::CreateLive {
                env,
                label,
                stack,
                platform,
                ..
            } => {
                let prefix = live_prefix(c);
                let (free, cname) = aws.cname_free(&prefix).await?;
                if !free {
                    return Err(hinted(
                        format!(
                            "the live CNAME {cname} is taken by another account or application"
                        ),
                        "CNAME prefixes are unique per region across all accounts: set `aws_live_cname` to one that is free",
                    ));
                }
                self.since = now();
                aws.create_environment(NewEnvironment {
                    name: env,
                    cname: &prefix,
                    label,
                    description: format!(
                        "{} {}, live, deployed by pymdeploy",
                        c.name, self.version
                    ),
                    settings: settings(&self.version, c, PymEnv::Live)?,
                    version: &self.version,
                    platform: (stack.clone(), platform.clone()),
                })
                .await?;
                Ok(Some(terminate(env)))
            }
            Act::Wait { envs, green } => {
                let names: Vec<&str> = envs.iter().map(String::as_str).collect();
                aws.wait(&names, *green, self.since, timeout, progress)
                    .await?;
                Ok(None)
            }
            Act::SetLive { env } => {
                self.since = now();
                aws.set_pym_env(env, PymEnv::Live).await?;
                Ok(Some(Act::Restore { env: env.clone() }))
            }
            Act::Restore { env } => {
                let updating = aws
                    .environment(env)
                    .await?
                    .is_some_and(|e| e.status().is_some_and(|s| s.as_str() == "Updating"));
                // An update Beanstalk can still abort keeps the configuration before it.
                if updating && aws.abort_update(env).await.is_ok() {
                    return Ok(None);
                }
                if updating {
                    aws.wait(&[env], false, now(), timeout, progress).await?;
                }
                aws.set_pym_env(env, PymEnv::Staging).await?;
                Ok(None)
            }
            Act::Swap { env, from } => {
                self.since = now();
                aws.swap(env, from).await?;
                Ok(Some(Act::SwapBack {
                    env: env.clone(),
                    from: from.clone(),
                }))
            }
            Act::SwapBack { env, from } => {
                let both = [env.as_str(), from.as_str()];
                aws.wait(&both, false, self.since, timeout, progress)
                    .await?;
                let since = now();
                aws.swap(from, env).await?;
                aws.wait(&both, false, since, timeout, progress).await?;
                Ok(None)
            }
            Act::Verify { version } => {
                let envs = aws.environments().await?;
                let cname = envs
                    .iter()
                    .filter_map(|e| e.cname())
                    .find(|n| n.split('.').next() == Some(live_prefix(c).as_str()));
                let live = live_address(c, cname).ok_or_else(|| {
                    anyhow!("no environment holds the live CNAME {}", live_prefix(c))
                })?;
                // A swap is a DNS change: Beanstalk's CNAMEs have a 60-second TTL.
                let within = Duration::from_secs(c.health_timeout.get().max(180));
                crate::targets::verify_version(
                    c,
                    &live.host,
                    (live.port, None),
                    version,
                    Some(PymEnv::Live),
                    within,
                    crate::targets::Poll {
                        every: Duration::from_millis(250),
                        ask: Duration::from_secs(5),
                    },
                )
                .await?;
                progress.line(&format!(
                    "{}:{} serves {version} with PYM_ENV=live",
                    live.host, live.port
                ));
                Ok(None)
            }
            Act::Record { notes } => {
                record::append(aws, &self.base, notes, crate::ops::state::now()).await?;
                Ok(None)
            }
            Act::Terminate { env, why } => {
                aws.terminate(env).await?;
                progress.line(&format!("terminating {env}: {why}"));
                Ok(None)
            }
        }
    }
}

impl Actor for Runner {
    type Act = Act;

    fn describe(&self, act: &Act) -> String {
        self.line(act)
    }

    /// The check of the live address after a switch.
    fn commits(&self, act: &Act) -> bool {
        matches!(act, Act::Verify { .. })
    }

    fn waits(&self, act: &Act) -> bool {
        matches!(act, Act::Wait { .. } | Act::Verify { .. })
    }

    fn run(&mut self, ctx: &Ctx, act: &Act, progress: &StepProgress<'_>) -> Result<Option<Act>> {
        ctx.wait(self.act(act, progress))
    }
}

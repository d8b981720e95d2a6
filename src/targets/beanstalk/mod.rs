//! The aws-beanstalk target: one Elastic Beanstalk environment per version, blue/green by
//! CNAME swap, driven by the official AWS SDK (feature `aws-beanstalk`).
//!
//! - `stage` creates the environment `<name>-<version>` (CNAME prefix the same) from an
//!   application version whose source bundle is a `Dockerrun.aws.json` naming the pushed
//!   image by digest and, with `docker_bucket`, the S3 object Beanstalk pulls it with. A
//!   staged environment never takes the live CNAME, the first one included. The newest
//!   environment stage made is the staging one: what it runs (its application version's
//!   image) is `Ledger::staged`.
//! - The first `promote` of a service (nothing holds the live CNAME) creates
//!   `<name>-<version>-live` on the live CNAME from the staged application version with
//!   `PYM_ENV=live`, verifies it, and terminates the staged one.
//! - Every later `promote` sets `PYM_ENV=live` on the staged environment (while it still
//!   has its own CNAME), swaps CNAMEs with the live one and checks that the live address
//!   serves the version. The old environment keeps running with `PYM_ENV=live`, ready for
//!   `rollback`.
//! - The live environment is the one holding the live CNAME prefix: the first label of
//!   `live_url` when that is a Beanstalk name, else `aws_live_cname`, else `<name>-live`.
//! - The deploy record (`targets::history`) is kept in tags of the application
//!   (`record`).
//!
//! `observe` reads Beanstalk, `decide` decides (pure), `act` carries the actions out
//! through `targets::plan::execute`. State is read from Beanstalk only; there is no state
//! file. Credentials and region come from the AWS default chain; `aws_user` names a
//! profile, `aws_region` the region, and `AWS_ENDPOINT_URL` points the SDK elsewhere.

mod act;
mod aws;
mod decide;
mod observe;
mod record;
mod wait;

use anyhow::{Result, anyhow, bail};

use self::act::Runner;
use self::aws::{Aws, connect};
use self::decide::{Act, decide_cleanup, decide_promote, decide_rollback, decide_stage, roles};
use self::observe::{Env, Seen};
use super::history::{Event, History};
use super::{Address, Change, Cleanup, Fate, Ledger, Staged, Table, plan, url_host};
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::output::StepProgress;

/// The aws-beanstalk target, behind `super::Target`.
pub struct BeanstalkTarget;

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

/// Where live answers: `live_url`, else the CNAME of the environment holding the live
/// prefix (`cname`), on `aws_cname_port`.
fn live_address(c: &Config, cname: Option<&str>) -> Option<Address> {
    let (host, port) = match &c.live_url {
        Some(url) => url_host(url),
        None => (cname?.to_string(), c.aws_cname_port.get()),
    };
    Some(Address {
        host,
        port,
        tls: false,
        token: None,
        hold: None,
    })
}

/// What is live now, said after a switch that failed.
fn live_now(ctx: &Ctx, c: &Config) -> String {
    // Said after Ctrl-C too: the read runs whole.
    let _whole = ctx.uninterrupted();
    let live = ctx.wait(async {
        let aws = connect(c).await?;
        observe::environments(&aws, c).await
    });
    let prefix = live_prefix(c);
    match live.map(|envs| envs.into_iter().find(|e| e.prefix() == prefix)) {
        Ok(Some(e)) => format!("live is {} ({})", e.version, e.name),
        Ok(None) => "nothing is live".into(),
        Err(e) => format!("what is live could not be read: {e:#}"),
    }
}

impl BeanstalkTarget {
    /// Connects and reads the application as `env`'s config names it.
    fn read(ctx: &Ctx, env: PymEnv) -> Result<(Config, Aws, Seen)> {
        let c = ctx.config_for(env)?;
        let (aws, seen) = ctx.wait(async {
            let aws = connect(&c).await?;
            let seen = observe::observe(&aws, &c).await?;
            Ok((aws, seen))
        })?;
        Ok((c, aws, seen))
    }

    /// Stage's, promote's or rollback's actor and actions, decided from Beanstalk now:
    /// what a run carries out and what its dry run prints. With `simulate`, a promote of
    /// a version this very run stages (a dry run's) pretends it is staged.
    fn decide(
        ctx: &Ctx,
        change: Change,
        staged: Option<&Staged>,
        to: Option<&str>,
        simulate: bool,
    ) -> Result<(Runner, Seen, Vec<Act>)> {
        match change {
            Change::Destroy(scope) => {
                let (c, aws, seen) = Self::read(ctx, PymEnv::Live)?;
                let acts = decide::decide_destroy(&seen, scope);
                let runner = Runner::new(aws, c, "", seen.history.clone());
                Ok((runner, seen, acts))
            }
            Change::Stage => {
                let c = ctx.config_for(PymEnv::Staging)?;
                let version = ctx.version()?;
                let image = match simulate {
                    false => super::image_reference(ctx)?,
                    true => {
                        super::image_reference(ctx).unwrap_or_else(|_| "<the pushed image>".into())
                    }
                };
                let v = version.to_string();
                let (aws, seen) = ctx.wait(async {
                    let aws = connect(&c).await?;
                    let seen = observe::observe_stage(&aws, &c, &v).await?;
                    Ok((aws, seen))
                })?;
                let acts = decide_stage(&seen, &c, &v, &image, version.dirty, unix_now())?;
                Ok((
                    Runner::new(aws, c, &v, History::default()),
                    Seen::default(),
                    acts,
                ))
            }
            Change::Promote => {
                let staged = staged
                    .ok_or_else(|| anyhow!("promote on Beanstalk needs what staging runs"))?;
                let (c, aws, seen) = Self::read(ctx, PymEnv::Live)?;
                let mut assumed = seen.clone();
                if simulate && assumed.staged.as_ref() != Some(staged) {
                    // In a deploy's dry run stage has not run yet: assume it staged this,
                    // Ready and Green.
                    let name = env_name(&c, &staged.version);
                    assumed.envs.retain(|e| e.name != name);
                    assumed.envs.insert(
                        0,
                        Env {
                            name,
                            label: staged.version.clone(),
                            version: staged.version.clone(),
                            status: "Ready".into(),
                            health: "Green".into(),
                            pym_env: Some("staging".into()),
                            stage: true,
                            ..Env::default()
                        },
                    );
                    assumed.staged = Some(staged.clone());
                }
                let acts = decide_promote(&assumed, &c, staged)?;
                let runner = Runner::new(aws, c, &staged.version, seen.history.clone());
                Ok((runner, seen, acts))
            }
            Change::Rollback => {
                let (c, aws, seen) = Self::read(ctx, PymEnv::Live)?;
                let (_, target, acts) = decide_rollback(&seen, to, c.rollout.bakes())?;
                let runner = Runner::new(aws, c, &target.version, seen.history.clone());
                Ok((runner, seen, acts))
            }
        }
    }
}

fn unix_now() -> u64 {
    crate::ops::state::now().max(0) as u64
}

impl super::Target for BeanstalkTarget {
    fn units(&self) -> (&'static str, &'static str) {
        ("environment", "environments")
    }

    /// What can be known before the first step: the region, where one is given, is a region.
    fn check(&self, ctx: &Ctx) -> Result<()> {
        for env in [PymEnv::Staging, PymEnv::Live] {
            let c = ctx.config_for(env)?;
            let (region, from) = match (&c.aws_region, std::env::var("AWS_REGION")) {
                (Some(r), _) => (r.clone(), c.at("aws_region")),
                (None, Ok(r)) => (r, "AWS_REGION".to_string()),
                (None, Err(_)) => continue,
            };
            if !region_is_well_formed(&region) {
                return Err(hinted(
                    format!("{from}: {region:?} is not an AWS region"),
                    "AWS regions look like us-east-1, eu-west-3, ap-southeast-2 (`aws ec2 describe-regions` lists them)",
                ));
            }
        }
        Ok(())
    }

    /// Live: `live_url`, else the live CNAME; staging: the staging environment's CNAME.
    fn address(&self, ctx: &Ctx, env: PymEnv) -> Result<Address> {
        let c = ctx.config_for(env)?;
        if env == PymEnv::Local {
            bail!("the local environment is not on a deploy target");
        }
        // With a `live_url`, live's address needs no call to AWS.
        let envs = match (env, &c.live_url) {
            (PymEnv::Live, Some(_)) => Vec::new(),
            _ => ctx.wait(async { observe::environments(&connect(&c).await?, &c).await })?,
        };
        if env == PymEnv::Live {
            let prefix = live_prefix(&c);
            let cname = envs.iter().find(|e| e.prefix() == prefix);
            return live_address(&c, cname.map(|e| e.cname.as_str())).ok_or_else(|| {
                hinted(
                    format!(
                        "no environment of {} holds the live CNAME prefix {prefix}",
                        c.name
                    ),
                    "deploy first: `cargo xtask deploy`",
                )
            });
        }
        match envs.iter().find(|e| e.stage) {
            Some(e) => Ok(Address {
                host: e.cname.clone(),
                port: c.aws_cname_port.get(),
                tls: false,
                token: None,
                hold: None,
            }),
            None => Err(hinted(
                format!("no environment of {} is staged", c.name),
                "stage a version first: `cargo xtask stage`",
            )),
        }
    }

    fn plan(&self, ctx: &Ctx, change: Change, staged: Option<&Staged>) -> Result<Vec<String>> {
        let to = ctx.opts.rollback_to.as_deref();
        let (runner, _, acts) = Self::decide(ctx, change, staged, to, true)?;
        Ok(plan::describe(&runner, &acts))
    }

    fn ledger(&self) -> Option<&dyn Ledger> {
        Some(self)
    }

    /// Never: live is one environment per version behind a CNAME swap, all or nothing.
    fn judged_by(&self, _ctx: &Ctx) -> Result<String> {
        Err(hinted(
            "`rollout` asks for a canary or a bake, and the aws-beanstalk target cannot split live's traffic: each version is its own environment, and live moves to it by one CNAME swap, all at once",
            "use `rollout: {strategy: blue-green}` with no `bake_seconds` here (the swap is verified, and accept-live rolls back); for canary releases, deploy to the docker, gcp-cloud-run or gke target",
        ))
    }

    /// Read Beanstalk, decide (every refusal before anything is created), carry out: an
    /// environment that does not become Green, or a stage cut short, is terminated.
    fn stage(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let (mut runner, _, acts) = Self::decide(ctx, Change::Stage, None, None, false)?;
        plan::execute(ctx, &mut runner, &acts, progress)?;
        Ok(format!(
            "{} on {}",
            runner.version,
            env_name(&runner.c, &runner.version)
        ))
    }

    /// Makes live what staging runs (`staged`), whatever HEAD is.
    fn promote(
        &self,
        ctx: &Ctx,
        staged: Option<&Staged>,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let (mut runner, seen, acts) = Self::decide(ctx, Change::Promote, staged, None, false)?;
        let version = runner.version.clone();
        if let Err(e) = plan::execute(ctx, &mut runner, &acts, progress) {
            return Err(match plan::kept(&e) {
                true => e.context(format!(
                    "{version} is live and verified, but promoting it did not finish"
                )),
                false => e.context(format!(
                    "promoting {version} failed; {}",
                    live_now(ctx, &runner.c)
                )),
            });
        }
        let live = ctx.wait(observe::environments(&runner.aws, &runner.c))?;
        let prefix = live_prefix(&runner.c);
        let cname = live
            .iter()
            .find(|e| e.prefix() == prefix)
            .map(|e| e.cname.as_str());
        let at = live_address(&runner.c, cname)
            .map(|a| format!("{}:{}", a.host, a.port))
            .unwrap_or_default();
        Ok(match &acts[0] {
            Act::CreateLive { env, .. } => {
                format!("{version} live on {at} (the first live environment, {env})")
            }
            Act::Verify { .. } => format!(
                "{version} is already live on {}",
                seen.live().map(|l| l.name.as_str()).unwrap_or_default()
            ),
            _ => {
                let was = seen.live().map(|l| (l.version.as_str(), l.name.as_str()));
                let (was, from) = was.unwrap_or_default();
                format!("{version} live on {at} (was {was}, kept on {from} for rollback)")
            }
        })
    }

    fn rollback(&self, ctx: &Ctx, to: Option<&str>, progress: &StepProgress<'_>) -> Result<String> {
        let (mut runner, seen, acts) = Self::decide(ctx, Change::Rollback, None, to, false)?;
        let back = runner.version.clone();
        let from = seen.live().map(|l| l.version.clone()).unwrap_or_default();
        plan::execute(ctx, &mut runner, &acts, progress).map_err(|e| match plan::kept(&e) {
            true => e.context(format!(
                "{back} is live again and verified, but the rollback did not finish"
            )),
            false => e.context(format!(
                "rolling back to {back} failed; {}",
                live_now(ctx, &runner.c)
            )),
        })?;
        ctx.set_rolled_back_to(back.clone());
        Ok(format!("{back} live again (was {from})"))
    }

    /// Live first, then the others in the order cleanup keeps them, each beside its own
    /// CNAME (where the CNAMEs are now, whatever the names say).
    fn status(&self, ctx: &Ctx) -> Result<Table> {
        let (_, _, seen) = Self::read(ctx, PymEnv::Live)?;
        let mut table = Table::new(&[
            "ROLE",
            "ENVIRONMENT",
            "VERSION",
            "STATUS",
            "HEALTH",
            "CREATED",
            "CNAME",
        ]);
        for (e, role) in roles(&seen) {
            table.rows.push(vec![
                role.to_string(),
                e.name.clone(),
                e.version.clone(),
                e.status.clone(),
                e.health.clone(),
                crate::version::fmt_utc(e.created),
                e.cname.clone(),
            ]);
        }
        Ok(table)
    }

    /// Each environment of the scope terminated (Beanstalk finishes it in the background,
    /// as `cleanup`'s); the application and its record stay.
    fn destroy(
        &self,
        ctx: &Ctx,
        scope: super::Scope,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let (mut runner, _, acts) = Self::decide(ctx, Change::Destroy(scope), None, None, false)?;
        let name = ctx.config().name.clone();
        let envs: Vec<String> = acts
            .iter()
            .filter_map(|a| match a {
                Act::Terminate { env, .. } => Some(env.clone()),
                _ => None,
            })
            .collect();
        if envs.is_empty() {
            return Ok(format!("nothing of {name} to terminate for {scope}"));
        }
        plan::execute(ctx, &mut runner, &acts, progress).map_err(|e| {
            e.context(format!(
                "destroying {scope} of {name} stopped; `cargo xtask destroy` again takes the rest"
            ))
        })?;
        Ok(format!(
            "{scope} of {name}: terminating {}; the application and its deploy record stay",
            envs.join(", ")
        ))
    }

    /// Terminates the environments `decide_cleanup` lets go; with `execute` false, only
    /// says which.
    fn cleanup(&self, ctx: &Ctx, execute: bool) -> Result<Vec<Cleanup>> {
        let (c, aws, seen) = Self::read(ctx, PymEnv::Live)?;
        let mut lines = Vec::new();
        for (e, fate) in decide_cleanup(&seen, c.keep_previous as usize) {
            let fate = match fate {
                // Beanstalk takes minutes to terminate: it has started, not finished.
                Fate::Go { did, would, .. } if execute => {
                    ctx.wait(aws.terminate(&e.name))?;
                    Fate::Go {
                        done: true,
                        did,
                        would,
                    }
                }
                f => f,
            };
            lines.push(Cleanup {
                name: e.name.clone(),
                version: Some(e.version.clone()),
                fate,
            });
        }
        Ok(lines)
    }
}

/// What staging runs is the staging environment's application version (its image, by
/// digest); the deploy record is in tags of the application (`record`).
impl Ledger for BeanstalkTarget {
    fn staged(&self, ctx: &Ctx) -> Result<Option<Staged>> {
        let c = ctx.config_for(PymEnv::Staging)?;
        ctx.wait(async { observe::staged(&connect(&c).await?, &c).await })
    }

    fn history(&self, ctx: &Ctx) -> Result<History> {
        let c = ctx.config_for(PymEnv::Live)?;
        ctx.wait(async { observe::history(&connect(&c).await?, &c).await })
    }

    fn record(&self, ctx: &Ctx, event: Event, version: &str, digest: Option<&str>) -> Result<()> {
        let c = ctx.config_for(PymEnv::Live)?;
        let note = (event, version.to_string(), digest.map(String::from));
        ctx.wait(async {
            let aws = connect(&c).await?;
            let base = observe::history(&aws, &c).await?;
            record::append(&aws, &base, &[note], crate::ops::state::now()).await
        })
    }
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
}

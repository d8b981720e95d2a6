//! The gcp-cloud-run target: one Cloud Run service, a revision per version and environment,
//! traffic always pinned to named revisions; driven by Google's official client,
//! `google-cloud-run-v2` (feature `gcp-cloud-run`).
//!
//! - `stage` adds the revision `<service>-<version>-s<n>` (creating the service the first
//!   time) running the pushed image **by digest** with `PYM_ENV=staging`, tagged `staging`,
//!   with no traffic change: every traffic entry names a revision, never LATEST, so a staged
//!   revision can never take live traffic (on the first stage Cloud Run routes the new
//!   service to it: it has nothing else).
//! - `promote` makes live what staging runs (`super::Staged`, read through the `Ledger`):
//!   it adds `<service>-<version>-l<n>`, the staged revision's image (the same digest) with
//!   `PYM_ENV=live`, tagged `next`, checks it serves the version on its own tag URL, then
//!   moves 100% of the traffic to it in one update, and checks the service URL. The
//!   revision live before keeps running at 0%, ready for `rollback`.
//! - The deploy record (`targets::history`) is one service annotation,
//!   `pymdeploy.dev/record`, written in the very update that moves the traffic (and by
//!   `Ledger::record` alone, for staging acceptance); rollback, cleanup and status go by
//!   it. A service an older pymdeploy deployed has `pymdeploy.dev/live-history` and
//!   `pymdeploy.dev/rolled-back` (revision names) instead: they are read through the
//!   revisions' labels, and the first write replaces them.
//!
//! Each changing command observes the service, decides its `Act`s (pure, unit-tested) and
//! hands them to `targets::plan::execute` through `Runner`; `--dry-run` prints the same
//! decision through the same `describe`. Every update carries the etag of the service it
//! was decided from: a service changed by someone else meanwhile is refused by Cloud Run
//! (ABORTED), never overwritten. Calls that answer 429 or 503 are retried with backoff (a
//! retried update cannot apply twice: its etag is stale the second time). Credentials are
//! Application Default Credentials; the endpoint is gcloud's
//! `CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN` when set.
//!
//! The parts: `names` (what the target makes is called, within Cloud Run's limits),
//! `check` (the config as Cloud Run would take it, and where the service is), `observe`
//! (the service and its revisions as the decisions see them), `record` (the deploy record
//! on the service), `decide` (the decisions, pure), `gcp` (the client, errors,
//! conversions, the waits on operations) and `act` (the `Runner` that carries them out).

mod act;
mod check;
mod decide;
mod gcp;
mod metrics;
mod names;
mod observe;
mod record;

use anyhow::{Result, anyhow, bail};
use google_cloud_lro::Poller;
use google_cloud_run_v2::model::{Service, TrafficTarget};

use self::act::{Runner, token_for};
use self::check::{check_config, place};
use self::decide::with_tag;
pub use self::decide::{Act, decide_cleanup, decide_promote, decide_rollback, decide_stage, roles};
use self::gcp::{Gcp, connect, gcp_error};
use self::names::next_revision_name;
pub use self::names::service_id;
pub use self::observe::{Ready, Rev, Route, Seen, Svc};
pub use self::record::{Note, record_of};
use super::history::{Event, History};
use super::plan;
use super::{Address, Change, Cleanup, Fate, Ledger, Staged, Table, url_host};
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::ops::state;
use crate::output::StepProgress;

/// The tag of the staged revision, and of the live candidate while promote checks it.
pub const TAG_STAGING: &str = "staging";
pub const TAG_NEXT: &str = "next";
/// Revision labels: the version and environment a revision runs.
const LABEL_VERSION: &str = "pym-version";
const LABEL_ENV: &str = "pym-env";

/// The gcp-cloud-run target, behind `super::Target`.
pub struct CloudRunTarget;

fn pushed(ctx: &Ctx) -> Result<String> {
    let image = super::image_reference(ctx)?;
    if !image.contains("@sha256:") {
        bail!(
            "Cloud Run runs images by digest, and {image} has none: push it first (`cargo xtask push`)"
        );
    }
    Ok(image)
}

impl CloudRunTarget {
    /// Connects and reads the service as `env`'s config names it.
    fn read(ctx: &Ctx, env: PymEnv) -> Result<(Config, Gcp, Option<Service>, Seen)> {
        let c = ctx.config_for(env)?;
        let (gcp, service, seen) = ctx.wait(async {
            let gcp = connect(&c).await?;
            let (service, seen) = gcp.observe().await?;
            Ok((gcp, service, seen))
        })?;
        Ok((c, gcp, service, seen))
    }

    /// The actor for `env`, and what it read.
    fn runner(ctx: &Ctx, env: PymEnv, version: &str) -> Result<(Runner, Seen)> {
        let (c, gcp, current, seen) = Self::read(ctx, env)?;
        let runner = Runner {
            gcp,
            c,
            bakes: false,
            current,
            base: seen.history.clone(),
            version: version.to_string(),
        };
        Ok((runner, seen))
    }

    /// Stage's, promote's or rollback's actor and actions, decided from the service now:
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
                let (runner, seen) = Self::runner(ctx, PymEnv::Live, "")?;
                let acts = decide::decide_destroy(&seen, scope);
                Ok((runner, seen, acts))
            }
            Change::Stage => {
                let version = ctx.version()?;
                let image = match simulate {
                    false => pushed(ctx)?,
                    true => pushed(ctx).unwrap_or_else(|_| {
                        format!(
                            "{}@sha256:<pushed>",
                            ctx.image_tag()
                                .unwrap_or_default()
                                .rsplit_once(':')
                                .map(|(r, _)| r.to_string())
                                .unwrap_or_default()
                        )
                    }),
                };
                let (runner, seen) = Self::runner(ctx, PymEnv::Staging, &version.to_string())?;
                let acts = decide_stage(
                    &seen,
                    &runner.gcp.id,
                    &version.to_string(),
                    &image,
                    version.dirty,
                    runner.c.gcp_allow_unauthenticated,
                )?;
                Ok((runner, seen, acts))
            }
            Change::Promote => {
                let staged = staged.ok_or_else(|| {
                    anyhow!("promote on the Cloud Run target needs what staging runs")
                })?;
                let (mut runner, seen) = Self::runner(ctx, PymEnv::Live, &staged.version)?;
                let mut assumed = seen.clone();
                if simulate && assumed.staged().as_ref() != Some(staged) {
                    // In a deploy's dry run stage has not run yet: assume it staged this.
                    let name = next_revision_name(
                        &runner.gcp.id,
                        &staged.version,
                        PymEnv::Staging,
                        &assumed.revisions,
                    );
                    let svc = assumed.service.get_or_insert_with(Svc::default);
                    svc.traffic = with_tag(&svc.traffic, TAG_STAGING, &name);
                    if svc.traffic.iter().all(|r| r.percent == 0) {
                        svc.traffic[0].percent = 100;
                    }
                    assumed.revisions.insert(
                        0,
                        Rev {
                            name,
                            version: Some(staged.version.clone()),
                            env: Some("staging".into()),
                            image: staged.image.clone(),
                            ready: Ready::Yes,
                            created: 0,
                        },
                    );
                }
                let acts = decide_promote(&assumed, &runner.gcp.id, staged, &runner.c.rollout)?;
                runner.bakes = acts.iter().any(|a| matches!(a, decide::Act::Bake { .. }));
                Ok((runner, seen, acts))
            }
            Change::Rollback => {
                let (mut runner, seen) = Self::runner(ctx, PymEnv::Live, "")?;
                let (_, target, acts) = decide_rollback(&seen, &runner.gcp.id, to, runner.c.rollout.bakes())?;
                runner.version = target.key().to_string();
                Ok((runner, seen, acts))
            }
        }
    }
}

impl super::Target for CloudRunTarget {
    fn units(&self) -> (&'static str, &'static str) {
        ("revision", "revisions")
    }

    /// Before the first step: the service name Cloud Run would take, the sizes, the
    /// project and region, and that credentials exist somewhere.
    fn check(&self, ctx: &Ctx) -> Result<()> {
        for env in [PymEnv::Staging, PymEnv::Live] {
            let c = ctx.config_for(env)?;
            check_config(&c)?;
            place(&c)?;
        }
        crate::ops::gcp::adc_source()?;
        Ok(())
    }

    fn address(&self, ctx: &Ctx, env: PymEnv) -> Result<Address> {
        let c = ctx.config_for(env)?;
        if env == PymEnv::Local {
            bail!("the local environment is not on a deploy target");
        }
        let tag = (env == PymEnv::Staging).then_some(TAG_STAGING);
        // Live at `live_url` needs no call, unless it is private (the token's audience is
        // the service URL Cloud Run gives).
        let (url, token) = match (&c.live_url, tag) {
            (Some(u), None) if c.gcp_allow_unauthenticated => (u.clone(), None),
            _ => ctx.wait(async {
                let (url, service_url) = connect(&c).await?.urls(tag).await?;
                let url = c.live_url.clone().filter(|_| tag.is_none()).unwrap_or(url);
                Ok::<_, anyhow::Error>((url, token_for(&c, &service_url).await?))
            })?,
        };
        if let Some(t) = &token {
            ctx.out.add_secret(t);
        }
        let (host, port) = url_host(&url);
        Ok(Address {
            host,
            port,
            tls: url.starts_with("https://"),
            token,
            hold: None,
        })
    }

    fn plan(&self, ctx: &Ctx, change: Change, staged: Option<&Staged>) -> Result<Vec<String>> {
        let to = ctx.opts.rollback_to.as_deref();
        let (runner, _, acts) = Self::decide(ctx, change, staged, to, true)?;
        Ok(plan::describe(&runner, &acts))
    }

    /// Cloud Run splits traffic between pinned revisions; Cloud Monitoring counts each
    /// revision's requests.
    fn judged_by(&self, _ctx: &Ctx) -> Result<String> {
        Ok(decide::SOURCE.into())
    }

    fn ledger(&self) -> Option<&dyn Ledger> {
        Some(self)
    }

    fn stage(&self, ctx: &Ctx, progress: &StepProgress<'_>) -> Result<String> {
        let version = ctx.version()?.to_string();
        let (mut runner, _, acts) = Self::decide(ctx, Change::Stage, None, None, false)?;
        plan::execute(ctx, &mut runner, &acts, progress)?;
        Ok(format!(
            "{version} on {}'s `{TAG_STAGING}` tag",
            runner.gcp.id
        ))
    }

    /// Makes live what staging runs (`staged`), whatever HEAD is.
    fn promote(
        &self,
        ctx: &Ctx,
        staged: Option<&Staged>,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let (mut runner, _, acts) = Self::decide(ctx, Change::Promote, staged, None, false)?;
        let version = runner.version.clone();
        plan::execute(ctx, &mut runner, &acts, progress)
            .map_err(|e| e.context(format!("promoting {version} failed")))?;
        if matches!(acts[..], [Act::Check { .. }]) {
            return Ok(format!("{version} is already live on {}", runner.gcp.id));
        }
        Ok(format!(
            "{version} live on {} (100% of the traffic)",
            runner.gcp.id
        ))
    }

    fn rollback(&self, ctx: &Ctx, to: Option<&str>, progress: &StepProgress<'_>) -> Result<String> {
        let (mut runner, seen, acts) = Self::decide(ctx, Change::Rollback, None, to, false)?;
        let back = runner.version.clone();
        let (from, revision) = match &acts[0] {
            Act::Route { traffic, .. } => (
                seen.current()
                    .map(|r| r.key().to_string())
                    .unwrap_or_default(),
                traffic[0].revision.clone(),
            ),
            _ => Default::default(),
        };
        plan::execute(ctx, &mut runner, &acts, progress).map_err(|e| {
            e.context(format!(
                "rolling back to {back} failed; live is unchanged ({from})"
            ))
        })?;
        ctx.set_rolled_back_to(back.clone());
        Ok(format!("{back} live again on {revision} (was {from})"))
    }

    fn status(&self, ctx: &Ctx) -> Result<Table> {
        let (_, _, service, seen) = Self::read(ctx, PymEnv::Live)?;
        let mut table = Table::new(&[
            "ROLE", "REVISION", "VERSION", "READY", "TRAFFIC", "TAGS", "IMAGE", "URL",
        ]);
        let Some(service) = service else {
            return Ok(table);
        };
        for (r, role) in roles(&seen) {
            let routes: Vec<&TrafficTarget> = service
                .traffic
                .iter()
                .filter(|t| t.revision.rsplit('/').next() == Some(r.name.as_str()))
                .collect();
            let percent: i32 = routes.iter().map(|t| t.percent).sum();
            let tags: Vec<&str> = routes
                .iter()
                .map(|t| t.tag.as_str())
                .filter(|t| !t.is_empty())
                .collect();
            let url = match role {
                "live" => service.uri.clone(),
                _ => service
                    .traffic_statuses
                    .iter()
                    .find(|s| !s.tag.is_empty() && tags.contains(&s.tag.as_str()))
                    .map(|s| s.uri.clone())
                    .unwrap_or_default(),
            };
            let ready = match &r.ready {
                Ready::Yes => "ready".to_string(),
                Ready::Pending => "pending".to_string(),
                Ready::Failed(_) => "failed".to_string(),
            };
            table.rows.push(vec![
                role.to_string(),
                r.name.clone(),
                r.version.clone().unwrap_or_default(),
                ready,
                format!("{percent}%"),
                tags.join(","),
                r.image.clone(),
                url,
            ]);
        }
        Ok(table)
    }

    /// The staging tag alone while live serves; otherwise the whole service.
    fn destroy(
        &self,
        ctx: &Ctx,
        scope: super::Scope,
        progress: &StepProgress<'_>,
    ) -> Result<String> {
        let (mut runner, _, acts) = Self::decide(ctx, Change::Destroy(scope), None, None, false)?;
        let id = runner.gcp.id.clone();
        let whole = acts.contains(&Act::DeleteService);
        if acts.is_empty() {
            return Ok(format!("nothing of {id} to delete for {scope}"));
        }
        plan::execute(ctx, &mut runner, &acts, progress)
            .map_err(|e| e.context(format!("destroying {scope} of {id} stopped")))?;
        Ok(match whole {
            true => format!("the Cloud Run service {id} deleted, with its revisions; this machine's history stays"),
            false => format!("{id}'s staging tag removed; live serves as it did"),
        })
    }

    fn cleanup(&self, ctx: &Ctx, execute: bool) -> Result<Vec<Cleanup>> {
        let (c, gcp, _, seen) = Self::read(ctx, PymEnv::Live)?;
        let mut lines = Vec::new();
        for (r, fate) in decide_cleanup(&seen, c.keep_previous as usize) {
            let fate = match fate {
                Fate::Go { did, would, .. } if execute => {
                    let name = format!("{}/revisions/{}", gcp.name(), r.name);
                    ctx.wait(async {
                        gcp.revisions
                            .delete_revision()
                            .set_name(name.clone())
                            .poller()
                            .until_done()
                            .await
                            .map_err(|e| gcp_error("revisions.delete", &name, e))
                    })?;
                    Fate::Go {
                        done: true,
                        did,
                        would,
                    }
                }
                f => f,
            };
            lines.push(Cleanup {
                name: r.name.clone(),
                version: r.version.clone(),
                fate,
            });
        }
        Ok(lines)
    }
}

/// What staging runs is the revision its tag points to; the deploy record is the
/// service's annotation (`record_of`).
impl Ledger for CloudRunTarget {
    fn staged(&self, ctx: &Ctx) -> Result<Option<Staged>> {
        Ok(Self::read(ctx, PymEnv::Live)?.3.staged())
    }

    fn history(&self, ctx: &Ctx) -> Result<History> {
        Ok(Self::read(ctx, PymEnv::Live)?.3.history)
    }

    fn record(&self, ctx: &Ctx, event: Event, version: &str, digest: Option<&str>) -> Result<()> {
        let c = ctx.config_for(PymEnv::Live)?;
        let note = (event, version.to_string(), digest.map(String::from));
        ctx.wait(async { connect(&c).await?.append(&[note], state::now()).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            url_host("https://hello-abc-uc.a.run.app"),
            ("hello-abc-uc.a.run.app".into(), 443)
        );
        assert_eq!(
            url_host("http://staging---hello-abc-uc.a.run.localhost:8123/"),
            ("staging---hello-abc-uc.a.run.localhost".into(), 8123)
        );
    }
}

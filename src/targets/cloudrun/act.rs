//! The actor: carries out the decided `Act`s for `targets::plan::execute`.

use std::time::Duration;

use anyhow::{Result, anyhow};
use google_cloud_lro::Poller;
use google_cloud_run_v2::model::Service;

use super::check::place;
use super::decide::{Act, Back, SOURCE};
use super::gcp::{Gcp, gcp_error, targets_of, template};
use super::metrics::{Signals, monitoring};
use super::observe::svc_of;
use super::record::recorded;
use crate::config::{Config, PymEnv};
use crate::ctx::Ctx;
use crate::ops::state;
use crate::output::StepProgress;
use crate::targets::history::{Event, History};
use crate::targets::plan::Actor;
use crate::targets::rollout;

/// Carries out the Cloud Run target's actions (`targets::plan::execute` runs them): each
/// update carries the etag of the service as last read or written.
pub(super) struct Runner {
    pub(super) gcp: Gcp,
    pub(super) c: Config,
    /// Whether the plan bakes: its bake, not the check of live, commits the switch.
    pub(super) bakes: bool,
    /// The service as last read or written.
    pub(super) current: Option<Service>,
    /// The deploy record as observed: the base of the first write to a service that has
    /// only the older annotations.
    pub(super) base: History,
    /// The version the revisions made run (their `pym-version`).
    pub(super) version: String,
}

impl Runner {
    /// The figures of `revision`, read from Cloud Monitoring.
    fn signals(&self, ctx: &Ctx, revision: &str) -> Result<Signals> {
        let metrics = ctx.wait(monitoring(&self.c))?;
        Ok(Signals {
            metrics,
            project: place(&self.c)?.project,
            location: place(&self.c)?.region,
            service: self.gcp.id.clone(),
            revision: revision.to_string(),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.c.gcp_timeout.get())
    }

    fn base(&self) -> Result<Service> {
        self.current
            .clone()
            .ok_or_else(|| anyhow!("the service {} vanished", self.gcp.id))
    }

    async fn act(&mut self, act: &Act, progress: &StepProgress<'_>) -> Result<Option<Act>> {
        let (gcp, c, timeout) = (&self.gcp, &self.c, self.timeout());
        match act {
            Act::Create {
                revision,
                image,
                env,
                traffic,
            } => {
                let svc = Service::new()
                    .set_template(template(c, revision, image, &self.version, *env)?)
                    .set_traffic(targets_of(traffic))
                    .set_labels([("managed-by".to_string(), "pymdeploy".to_string())]);
                let poller = gcp
                    .services
                    .create_service()
                    .set_parent(gcp.parent.clone())
                    .set_service_id(gcp.id.clone())
                    .set_service(svc)
                    .poller();
                let done = gcp
                    .wait_through("services.create", poller, timeout, progress)
                    .await;
                self.current = Some(gcp.revision_outcome(done, revision).await?);
                Ok(None)
            }
            Act::Deploy {
                revision,
                image,
                env,
                traffic,
            } => {
                let base = self.base()?;
                let before = base.traffic.clone();
                let undo = Act::PutBack {
                    traffic: svc_of(&base).traffic,
                    record: Vec::new(),
                };
                let svc = base
                    .set_template(template(c, revision, image, &self.version, *env)?)
                    .set_traffic(targets_of(traffic));
                let done = gcp
                    .update(svc, &["template", "traffic"], timeout, progress)
                    .await;
                match gcp.revision_outcome(done, revision).await {
                    // The revision stays (Cloud Run keeps a service's latest revision; with
                    // no traffic it runs nothing); its traffic and tag are undone.
                    Ok(s) => {
                        self.current = Some(s);
                        Ok(Some(undo))
                    }
                    // Cloud Run keeps the traffic asked for (a tag on the failed revision)
                    // beside what it serves: put it back as it was.
                    Err(e) => Err(
                        match gcp
                            .put_back(before, &[], &self.base, timeout, progress)
                            .await
                        {
                            Ok(_) => e,
                            Err(r) => e.context(format!(
                                "putting the traffic back as it was failed too: {r:#}"
                            )),
                        },
                    ),
                }
            }
            Act::DeleteService => {
                let name = gcp.name();
                gcp.services
                    .delete_service()
                    .set_name(name.clone())
                    .poller()
                    .until_done()
                    .await
                    .map_err(|e| gcp_error("services.delete", &name, e))?;
                self.current = None;
                Ok(None)
            }
            Act::Route {
                traffic,
                record,
                undo,
            } => {
                let base = self.base()?;
                let before = svc_of(&base).traffic;
                let annotations = match record.is_empty() {
                    true => base.annotations.clone(),
                    false => recorded(&base.annotations, &self.base, record, state::now()),
                };
                let svc = base
                    .set_traffic(targets_of(traffic))
                    .set_annotations(annotations);
                self.current = Some(
                    gcp.update(svc, &["traffic", "annotations"], timeout, progress)
                        .await?,
                );
                Ok(match undo {
                    Back::To(notes) => Some(Act::PutBack {
                        traffic: before,
                        record: notes.clone(),
                    }),
                    Back::Earlier => None,
                })
            }
            Act::Judge { .. } | Act::Bake { .. } => {
                unreachable!("judgements run in `Runner::run`, which has the context")
            }
            Act::PutBack { traffic, record } => {
                let s = gcp
                    .put_back(targets_of(traffic), record, &self.base, timeout, progress)
                    .await?;
                self.current = Some(s);
                Ok(None)
            }
            Act::Access { public } => {
                gcp.set_access(*public, progress).await?;
                Ok(None)
            }
            Act::Check { tag, version, env } => {
                let (url, service_url) = gcp.urls(tag.as_deref()).await?;
                let token = token_for(c, &service_url).await?;
                check_serves(c, &url, token.as_deref(), version, *env).await?;
                progress.line(&format!("{url} serves {version} with PYM_ENV={env}"));
                Ok(None)
            }
        }
    }
}

impl Actor for Runner {
    type Act = Act;

    fn describe(&self, act: &Act) -> String {
        match act {
            Act::Judge {
                version, percent, ..
            } => rollout::step_line(&self.c.rollout, version, *percent, SOURCE),
            Act::Bake { version, .. } => rollout::bake_line(&self.c.rollout, version, SOURCE),
            _ => act.describe(&self.gcp.id),
        }
    }

    /// The check of the service URL after a switch (live serves what it was switched
    /// to), or where the plan bakes, the bake passed.
    fn commits(&self, act: &Act) -> bool {
        match act {
            Act::Check { tag: None, .. } => !self.bakes,
            Act::Bake { .. } => true,
            _ => false,
        }
    }

    fn waits(&self, act: &Act) -> bool {
        matches!(act, Act::Check { .. } | Act::Judge { .. } | Act::Bake { .. })
    }

    fn run(&mut self, ctx: &Ctx, act: &Act, progress: &StepProgress<'_>) -> Result<Option<Act>> {
        match act {
            Act::Judge {
                version,
                revision,
                percent,
            } => {
                let mut signals = self.signals(ctx, revision)?;
                rollout::step(ctx, &mut signals, &self.c.rollout, version, *percent, progress)?;
                Ok(None)
            }
            Act::Bake { version, revision } => {
                let mut signals = self.signals(ctx, revision)?;
                let note = (Event::KnownGood, version.clone(), None);
                let gcp = &self.gcp;
                rollout::bake(ctx, &mut signals, &self.c.rollout, version, progress, &mut || {
                    ctx.wait(gcp.append(std::slice::from_ref(&note), state::now()))
                })?;
                Ok(None)
            }
            _ => ctx.wait(self.act(act, progress)),
        }
    }
}

/// The identity token a private service wants, for its URL `service_url`; none for a
/// public one.
pub(super) async fn token_for(c: &Config, service_url: &str) -> Result<Option<String>> {
    match c.gcp_allow_unauthenticated {
        true => Ok(None),
        false => crate::ops::gcp::identity_token(service_url).await.map(Some),
    }
}

/// Asks `url` for the service contract until it holds (`targets::serves_contract`), over
/// HTTP or HTTPS, a new connection each time (traffic splits by connection).
async fn check_serves(
    c: &Config,
    url: &str,
    token: Option<&str>,
    version: &str,
    env: PymEnv,
) -> Result<()> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse()?,
        );
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .default_headers(headers)
        .build()?;
    let base = url.trim_end_matches('/');
    crate::targets::serves_contract(c, url, version, env, |path| {
        let request = client.get(format!("{base}{path}"));
        async move {
            Ok(match request.send().await {
                Ok(r) => Ok((r.status().as_u16(), r.text().await.unwrap_or_default())),
                Err(e) => Err(format!("{e}")),
            })
        }
    })
    .await
}

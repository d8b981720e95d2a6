//! The client: connecting, Google's errors in one form, the conversions to Cloud Run's
//! types, and the calls that wait on Cloud Run's operations.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::{RetryPolicy, RetryPolicyExt};
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;
use google_cloud_lro::{Poller, PollingResult};
use google_cloud_run_v2::client::{Revisions, Services};
use google_cloud_run_v2::model::condition::State;
use google_cloud_run_v2::model::{
    self, RevisionTemplate, Service, TrafficTarget, TrafficTargetAllocationType,
};

use super::check::place;
use super::names::service_id;
use super::observe::{Ready, Route, condition_text, ready_of};
use super::record::{Note, recorded};
use super::{LABEL_ENV, LABEL_VERSION};
use crate::config::{Config, PymEnv};
use crate::error::hinted;
use crate::ops::state;
use crate::output::StepProgress;
use crate::targets::history::History;

/// 429 and 503 are retried, whatever the method: a retried update carries an etag that
/// is stale if the first attempt applied, so it cannot apply twice.
#[derive(Debug)]
struct Transient;

impl RetryPolicy for Transient {
    fn on_error(&self, _state: &RetryState, error: google_cloud_gax::error::Error) -> RetryResult {
        match error.status().map(|s| s.code) {
            Some(Code::Unavailable | Code::ResourceExhausted) => RetryResult::Continue(error),
            _ if error.is_transient_and_before_rpc() => RetryResult::Continue(error),
            _ => RetryResult::Permanent(error),
        }
    }
}

pub(super) struct Gcp {
    pub(super) services: Services,
    pub(super) revisions: Revisions,
    /// `projects/P/locations/L`
    pub(super) parent: String,
    pub(super) id: String,
}

impl Gcp {
    pub(super) fn name(&self) -> String {
        format!("{}/services/{}", self.parent, self.id)
    }
}

/// Application Default Credentials, with ring as reqwest's TLS provider.
pub(super) fn credentials() -> Result<google_cloud_auth::credentials::Credentials> {
    crate::ops::gcp::adc_source()?;
    // reqwest is built without a TLS provider (the Google crates choose none): ring, as
    // the rest of pymdeploy.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match crate::ops::gcp::federated() {
        // Made once per process: its token is kept, and each client made after reuses it
        // rather than exchanging the job's token again.
        Some(json) => {
            static FEDERATED: std::sync::OnceLock<google_cloud_auth::credentials::Credentials> =
                std::sync::OnceLock::new();
            if let Some(c) = FEDERATED.get() {
                return Ok(c.clone());
            }
            let c = google_cloud_auth::credentials::external_account::Builder::new(json.clone())
                .build()
                .map_err(|e| hinted(format!("cannot set up workload identity federation: {e}"), "check gcp_workload_identity_provider and gcp_deploy_service_account in pym-config.yaml"))?;
            Ok(FEDERATED.get_or_init(|| c).clone())
        }
        None => google_cloud_auth::credentials::Builder::default()
            .build()
            .map_err(|e| hinted(format!("cannot load Google Cloud credentials: {e}"), "`gcloud auth application-default login`, or GOOGLE_APPLICATION_CREDENTIALS=<a service-account key file>")),
    }
}

/// The retries of every call: transient errors, up to six attempts.
pub(super) fn retry() -> impl RetryPolicy {
    Transient.with_attempt_limit(6)
}

pub(super) fn backoff() -> google_cloud_gax::exponential_backoff::ExponentialBackoff {
    google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder::new()
        .with_initial_delay(Duration::from_millis(300))
        .with_maximum_delay(Duration::from_secs(10))
        .clamp()
}

pub(super) async fn connect(c: &Config) -> Result<Gcp> {
    let p = place(c)?;
    let credentials = credentials()?;
    macro_rules! client {
        ($t:ty) => {{
            let mut b = <$t>::builder()
                .with_credentials(credentials.clone())
                .with_retry_policy(retry())
                .with_backoff_policy(backoff());
            if let Some(e) = &p.endpoint {
                b = b.with_endpoint(e.clone());
            }
            b.build()
                .await
                .map_err(|e| anyhow!("cannot make the Cloud Run client: {e}"))?
        }};
    }
    Ok(Gcp {
        services: client!(Services),
        revisions: client!(Revisions),
        parent: format!("projects/{}/locations/{}", p.project, p.region),
        id: service_id(c),
    })
}

/// One error for a failed call: what was asked, what Google said, what to do.
pub(super) fn gcp_error(
    method: &str,
    resource: &str,
    e: google_cloud_gax::error::Error,
) -> anyhow::Error {
    if let Some(s) = e.status() {
        let msg = &s.message;
        return match s.code {
            Code::PermissionDenied => hinted(
                format!("Google Cloud denied run.{method} on {resource}: {msg}"),
                match method {
                    "services.setIamPolicy" | "services.getIamPolicy" => "grant the credentials in use roles/run.admin on the project or the service (setting a service's IAM policy needs it), or set `gcp_allow_unauthenticated: false`".to_string(),
                    _ => "grant the credentials in use roles/run.developer (or roles/run.admin) on the project, and roles/iam.serviceAccountUser on the runtime service account".to_string(),
                },
            ),
            Code::Unauthenticated => hinted(format!("Google Cloud rejected the credentials for run.{method}: {msg}"), "refresh them: `gcloud auth application-default login`, or a valid service-account key in GOOGLE_APPLICATION_CREDENTIALS"),
            Code::Aborted => hinted(
                format!("run.{method} on {resource} was refused because the service changed since it was read: {msg}"),
                "another deploy changed it (or a retried request of ours had gone through): look with `cargo xtask status`, then run again",
            ),
            Code::ResourceExhausted | Code::Unavailable => hinted(format!("run.{method} kept failing ({}): {msg}", s.code.name()), "Google Cloud is busy or over quota: wait a minute and run again"),
            code => anyhow!("run.{method} on {resource} failed: {}: {msg}", code.name()),
        };
    }
    if e.is_authentication() {
        return hinted(
            format!("cannot get Google Cloud credentials for run.{method}: {e}"),
            "`gcloud auth application-default login`, or GOOGLE_APPLICATION_CREDENTIALS=<a service-account key file>",
        );
    }
    let detail = std::iter::successors(std::error::Error::source(&e), |s| s.source())
        .map(|s| s.to_string())
        .last()
        .unwrap_or_default();
    hinted(
        format!("cannot reach Cloud Run for run.{method}: {e} {detail}"),
        "check the network (and CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN if it is set)",
    )
}

pub(super) fn is_not_found(e: &google_cloud_gax::error::Error) -> bool {
    e.status().is_some_and(|s| s.code == Code::NotFound)
}

pub(super) fn targets_of(traffic: &[Route]) -> Vec<TrafficTarget> {
    traffic
        .iter()
        .map(|r| {
            TrafficTarget::new()
                .set_type(TrafficTargetAllocationType::Revision)
                .set_revision(r.revision.clone())
                .set_percent(r.percent)
                .set_tag(r.tag.clone().unwrap_or_default())
        })
        .collect()
}

/// The revision template for a version in an environment.
pub(super) fn template(
    c: &Config,
    revision: &str,
    image: &str,
    version: &str,
    env: PymEnv,
) -> Result<RevisionTemplate> {
    let mut vars = vec![
        model::EnvVar::new()
            .set_name("PYM_ENV")
            .set_value(env.as_str()),
        model::EnvVar::new()
            .set_name("PYM_VERSION")
            .set_value(version),
    ];
    // PORT is Cloud Run's to set (from the container port): it refuses it as a variable.
    vars.extend(
        crate::ops::service::secrets(c)?
            .into_iter()
            .map(|(k, v)| model::EnvVar::new().set_name(k).set_value(v)),
    );
    let mut limits = HashMap::new();
    if let Some(m) = &c.gcp_memory {
        limits.insert("memory".to_string(), m.clone());
    }
    if let Some(cpu) = &c.gcp_cpu {
        limits.insert("cpu".to_string(), cpu.clone());
    }
    let mut container = model::Container::new()
        .set_name(c.name.clone())
        .set_image(image)
        .set_env(vars)
        .set_ports([model::ContainerPort::new()
            .set_name("http1")
            .set_container_port(i32::from(c.port.get()))]);
    if !limits.is_empty() {
        container = container.set_resources(model::ResourceRequirements::new().set_limits(limits));
    }
    let mut t = RevisionTemplate::new()
        .set_revision(revision)
        .set_labels([
            (LABEL_VERSION.to_string(), version.to_lowercase()),
            (LABEL_ENV.to_string(), env.as_str().to_string()),
        ])
        .set_containers([container]);
    if c.gcp_min_instances.is_some() || c.gcp_max_instances.is_some() {
        let mut s = model::RevisionScaling::new();
        if let Some(n) = c.gcp_min_instances {
            s = s.set_min_instance_count(n as i32);
        }
        if let Some(n) = c.gcp_max_instances {
            s = s.set_max_instance_count(n.get() as i32);
        }
        t = t.set_scaling(s);
    }
    if let Some(n) = c.gcp_request_concurrency {
        t = t.set_max_instance_request_concurrency(n.get() as i32);
    }
    if let Some(secs) = c.gcp_request_timeout {
        t = t.set_timeout(google_cloud_wkt::Duration::clamp(secs.get() as i64, 0));
    }
    if let Some(sa) = &c.gcp_service_account {
        t = t.set_service_account(sa.clone());
    }
    Ok(t)
}

impl Gcp {
    /// Waits for an operation, a line for each change of the service's conditions. Polls
    /// with backoff (one second, up to five); an error while polling is retried until
    /// the deadline, as the operation goes on regardless. Ctrl-C is the caller's
    /// (`Ctx::wait`, which the executor holds off while a change is made or undone).
    /// Updates the fields `paths` of the service to `svc`'s, and waits for Cloud Run's
    /// operation (`services.update`) to end.
    pub(super) async fn update(
        &self,
        svc: Service,
        paths: &[&str],
        timeout: Duration,
        progress: &StepProgress<'_>,
    ) -> Result<Service> {
        let mask = google_cloud_wkt::FieldMask::default().set_paths(paths.iter().copied());
        let poller = self
            .services
            .update_service()
            .set_service(svc)
            .set_update_mask(mask)
            .poller();
        self.wait_through("services.update", poller, timeout, progress)
            .await
    }

    pub(super) async fn wait_through<P: Poller<Service, Service>>(
        &self,
        method: &str,
        mut poller: P,
        timeout: Duration,
        progress: &StepProgress<'_>,
    ) -> Result<Service> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut said: Vec<String> = Vec::new();
        let mut pause = Duration::from_millis(250);
        let mut last_error = None;
        loop {
            match poller.poll().await {
                None => bail!("run.{method}: the operation ended without a result"),
                Some(PollingResult::Completed(r)) => {
                    return r.map_err(|e| gcp_error(method, &self.name(), e));
                }
                Some(PollingResult::PollingError(e)) => last_error = Some(e),
                Some(PollingResult::InProgress(meta)) => {
                    for c in meta
                        .iter()
                        .flat_map(|s| s.terminal_condition.iter().chain(&s.conditions))
                    {
                        let state = c
                            .state
                            .name()
                            .unwrap_or("?")
                            .trim_start_matches("CONDITION_")
                            .to_lowercase();
                        let line = format!(
                            "{}: {state}{}",
                            c.r#type,
                            if c.message.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", c.message)
                            }
                        );
                        if !said.contains(&line) {
                            progress.line(&line);
                            said.push(line);
                        }
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let why = last_error
                    .map(|e| format!(" (polling it failed: {e})"))
                    .unwrap_or_default();
                return Err(hinted(
                    format!(
                        "run.{method} on {} did not finish within {}s{why}",
                        self.name(),
                        timeout.as_secs()
                    ),
                    "raise `gcp_timeout`, or look at the service: `gcloud run services describe`",
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).clamp(Duration::from_secs(1), Duration::from_secs(5));
        }
    }

    /// The URL of `tag` (None: the service URL), and the service URL: a private
    /// service's identity tokens are for the latter, whichever URL is asked.
    pub(super) async fn urls(&self, tag: Option<&str>) -> Result<(String, String)> {
        let s = self.service().await?.ok_or_else(|| {
            hinted(
                format!("the Cloud Run service {} does not exist", self.id),
                "deploy first: `cargo xtask deploy`",
            )
        })?;
        let service_url = Some(s.uri.clone())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| anyhow!("the Cloud Run service {} has no URL yet", self.id))?;
        let url = match tag {
            None => service_url.clone(),
            Some(t) => s
                .traffic_statuses
                .iter()
                .find(|st| st.tag == t)
                .map(|st| st.uri.clone())
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    hinted(
                        format!("no revision of {} carries the tag `{t}`", self.id),
                        "stage first: `cargo xtask stage`",
                    )
                })?,
        };
        Ok((url, service_url))
    }

    /// Makes the service public (`allUsers` as run.invoker) or private (no such binding),
    /// changing the IAM policy only when it differs.
    pub(super) async fn set_access(&self, public: bool, progress: &StepProgress<'_>) -> Result<()> {
        let name = self.name();
        let mut policy = self
            .services
            .get_iam_policy()
            .set_resource(name.clone())
            .send()
            .await
            .map_err(|e| gcp_error("services.getIamPolicy", &name, e))?;
        let everyone = |m: &String| m == "allUsers" || m == "allAuthenticatedUsers";
        let is_public = policy
            .bindings
            .iter()
            .any(|b| b.role == "roles/run.invoker" && b.members.iter().any(everyone));
        if is_public == public {
            return Ok(());
        }
        if public {
            match policy
                .bindings
                .iter_mut()
                .find(|b| b.role == "roles/run.invoker" && b.condition.is_none())
            {
                Some(b) => b.members.push("allUsers".into()),
                None => policy.bindings.push(
                    google_cloud_iam_v1::model::Binding::new()
                        .set_role("roles/run.invoker")
                        .set_members(["allUsers"]),
                ),
            }
        } else {
            for b in policy
                .bindings
                .iter_mut()
                .filter(|b| b.role == "roles/run.invoker")
            {
                b.members.retain(|m| !everyone(m));
            }
            policy.bindings.retain(|b| !b.members.is_empty());
        }
        self.services
            .set_iam_policy()
            .set_resource(name.clone())
            .set_policy(policy)
            .send()
            .await
            .map_err(|e| gcp_error("services.setIamPolicy", &name, e))?;
        progress.line(&match public {
            true => format!(
                "{} allows unauthenticated invocations (allUsers: roles/run.invoker)",
                self.id
            ),
            false => format!("{} no longer allows unauthenticated invocations", self.id),
        });
        Ok(())
    }

    /// Sets the service's traffic back to what was read before a change, adding `record`
    /// to the deploy record (read afresh, so that entries written meanwhile stay); the
    /// service read again first. Returns the service after it.
    pub(super) async fn put_back(
        &self,
        traffic: Vec<TrafficTarget>,
        record: &[Note],
        base: &History,
        timeout: Duration,
        progress: &StepProgress<'_>,
    ) -> Result<Service> {
        let now = self
            .service()
            .await?
            .ok_or_else(|| anyhow!("the service {} vanished", self.id))?;
        if now.traffic == traffic && record.is_empty() {
            return Ok(now);
        }
        let annotations = match record.is_empty() {
            true => now.annotations.clone(),
            false => recorded(&now.annotations, base, record, state::now()),
        };
        let svc = now.set_traffic(traffic).set_annotations(annotations);
        let s = self
            .update(svc, &["traffic", "annotations"], timeout, progress)
            .await?;
        progress.line("the service's traffic is back as it was");
        Ok(s)
    }

    /// The service after an operation that made `revision`, or why the revision failed
    /// in Cloud Run's words (its failed conditions and their reasons).
    pub(super) async fn revision_outcome(
        &self,
        done: Result<Service>,
        revision: &str,
    ) -> Result<Service> {
        let name = format!("{}/revisions/{revision}", self.name());
        let r = match self
            .revisions
            .get_revision()
            .set_name(name.clone())
            .send()
            .await
        {
            Ok(r) => r,
            // Refused before any revision was made: Cloud Run's own error says why.
            Err(e) if is_not_found(&e) => {
                return done.and_then(|_| bail!("Cloud Run made no revision {revision}"));
            }
            Err(e) => {
                return Err(done
                    .err()
                    .unwrap_or_else(|| gcp_error("revisions.get", &name, e)));
            }
        };
        match ready_of(&r.conditions) {
            Ready::Yes => done,
            not => {
                let mut why: Vec<String> = r
                    .conditions
                    .iter()
                    .filter(|c| c.state == State::ConditionFailed)
                    .map(|c| format!("{}: {}", c.r#type, condition_text(c)))
                    .collect();
                why.dedup();
                if why.is_empty() {
                    why.push(if not == Ready::Pending {
                        "it is not ready yet".into()
                    } else {
                        "no reason given".into()
                    });
                }
                let msg = format!(
                    "revision {revision} failed: {}; no traffic moved",
                    why.join("; ")
                );
                Err(match done {
                    Err(e) => e.context(msg),
                    Ok(_) => anyhow!(msg),
                })
            }
        }
    }
}

//! A revision's figures for a judged rollout, read from Cloud Monitoring with Google's
//! client: `run.googleapis.com/request_count` by response code class (requests, 5xx) and
//! `run.googleapis.com/request_latencies` merged into one distribution (its p95), over
//! the last seconds. The endpoint is gcloud's override variable for the API,
//! `CLOUDSDK_API_ENDPOINT_OVERRIDES_MONITORING`, when set.
//!
//! Cloud Monitoring aligns over whole periods of at least 60 s and shows a minute's
//! requests up to a few minutes late: on Cloud Run, give `rollout.step_seconds` a few
//! minutes.

use anyhow::{Result, anyhow};
use google_cloud_gax::paginator::ItemPaginator as _;
use google_cloud_monitoring_v3::client::MetricService;
use google_cloud_monitoring_v3::model::aggregation::{Aligner, Reducer};
use google_cloud_monitoring_v3::model::{Aggregation, TimeInterval};

use super::gcp::{backoff, credentials, retry};
use crate::config::Config;
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::targets::rollout::{self, Figures};

/// The Cloud Monitoring client.
pub(super) async fn monitoring(_c: &Config) -> Result<MetricService> {
    let mut b = MetricService::builder()
        .with_credentials(credentials()?)
        .with_retry_policy(retry())
        .with_backoff_policy(backoff());
    if let Some(e) = std::env::var("CLOUDSDK_API_ENDPOINT_OVERRIDES_MONITORING")
        .ok()
        .filter(|e| !e.is_empty())
    {
        b = b.with_endpoint(e.trim_end_matches('/').to_string());
    }
    b.build()
        .await
        .map_err(|e| anyhow!("cannot make the Cloud Monitoring client: {e}"))
}

/// One revision of one service, as Cloud Monitoring labels its requests.
pub(super) struct Signals {
    pub metrics: MetricService,
    pub project: String,
    pub location: String,
    pub service: String,
    pub revision: String,
}

impl Signals {
    fn filter(&self, metric: &str) -> String {
        format!(
            "metric.type = \"{metric}\" AND resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"{}\" AND resource.labels.location = \"{}\" AND resource.labels.revision_name = \"{}\"",
            self.service, self.location, self.revision
        )
    }

    /// Sums of `metric` over the last `seconds`, per value of `group` (a label).
    async fn series(
        &self,
        metric: &str,
        seconds: u64,
        group: &str,
    ) -> Result<Vec<(String, google_cloud_monitoring_v3::model::TypedValue)>> {
        let now_ms = crate::ops::state::now_ms();
        let at = |ms: i64| {
            google_cloud_wkt::Timestamp::clamp(ms.div_euclid(1000), (ms.rem_euclid(1000) * 1_000_000) as i32)
        };
        let interval = TimeInterval::new()
            .set_start_time(at(now_ms - seconds as i64 * 1000))
            .set_end_time(at(now_ms));
        let aggregation = Aggregation::new()
            .set_alignment_period(google_cloud_wkt::Duration::clamp(seconds.max(60) as i64, 0))
            .set_per_series_aligner(Aligner::AlignDelta)
            .set_cross_series_reducer(Reducer::ReduceSum)
            .set_group_by_fields([group]);
        let mut items = self
            .metrics
            .list_time_series()
            .set_name(format!("projects/{}", self.project))
            .set_filter(self.filter(metric))
            .set_interval(interval)
            .set_aggregation(aggregation)
            .by_item();
        let mut out = Vec::new();
        while let Some(ts) = items.next().await {
            let ts = ts.map_err(|e| monitoring_error(&self.project, e))?;
            let key = group
                .strip_prefix("metric.labels.")
                .and_then(|k| ts.metric.as_ref()?.labels.get(k).cloned())
                .or_else(|| {
                    group
                        .strip_prefix("resource.labels.")
                        .and_then(|k| ts.resource.as_ref()?.labels.get(k).cloned())
                })
                .unwrap_or_default();
            for p in ts.points {
                if let Some(v) = p.value {
                    out.push((key.clone(), v));
                }
            }
        }
        Ok(out)
    }
}

impl rollout::Signals for Signals {
    fn source(&self) -> String {
        super::decide::SOURCE.into()
    }

    fn figures(&mut self, ctx: &Ctx, seconds: u64) -> Result<Figures> {
        ctx.wait(async {
            let counts = self
                .series("run.googleapis.com/request_count", seconds, "metric.labels.response_code_class")
                .await?;
            let (mut requests, mut errors) = (0u64, 0u64);
            for (class, v) in &counts {
                let n = v.int64_value().copied().unwrap_or(0).max(0) as u64;
                requests += n;
                if class == "5xx" {
                    errors += n;
                }
            }
            let latencies = self
                .series("run.googleapis.com/request_latencies", seconds, "resource.labels.revision_name")
                .await?;
            let (mut bounds, mut buckets) = (Vec::new(), Vec::<u64>::new());
            for (_, v) in &latencies {
                let Some(d) = v.distribution_value() else {
                    continue;
                };
                let Some(b) = d.bucket_options.as_ref().map(bounds_of) else {
                    continue;
                };
                bounds = b;
                buckets.resize(bounds.len() + 1, 0);
                for (i, n) in d.bucket_counts.iter().enumerate().take(buckets.len()) {
                    buckets[i] += (*n).max(0) as u64;
                }
            }
            Ok(Figures {
                seconds: seconds as f64,
                requests,
                errors,
                failures: 0,
                p95_ms: rollout::quantile(&bounds, &buckets, 0.95),
                unhealthy: None,
                uncounted: false,
            })
        })
    }
}

/// A distribution's bucket bounds (each bucket's upper bound; one more bucket above the
/// last), whichever kind of buckets it has.
fn bounds_of(o: &google_cloud_api::model::distribution::BucketOptions) -> Vec<f64> {
    if let Some(e) = o.explicit_buckets() {
        return e.bounds.clone();
    }
    if let Some(e) = o.exponential_buckets() {
        return (0..=e.num_finite_buckets)
            .map(|i| e.scale * e.growth_factor.powi(i))
            .collect();
    }
    if let Some(l) = o.linear_buckets() {
        return (0..=l.num_finite_buckets)
            .map(|i| l.offset + l.width * i as f64)
            .collect();
    }
    Vec::new()
}

fn monitoring_error(project: &str, e: google_cloud_gax::error::Error) -> anyhow::Error {
    hinted(
        format!("Cloud Monitoring did not list the new revision's request metrics in {project}: {e}"),
        "the credentials in use need roles/monitoring.viewer on the project to judge a canary",
    )
}

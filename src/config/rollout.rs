//! The `rollout` key: how promote moves live to a new version. Blue/green (the default)
//! moves all of live at once; canary moves it in steps, each judged on the new version's
//! own requests (errors over requests, latency p95) before the next; either may then
//! bake: the previous version keeps running while the judgement goes on, and a version
//! that passes its bake is known-good, the version a bare rollback goes to.

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

use super::Schema;

/// How promote moves live to a new version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// All of live at once, after the new version is healthy and verified.
    #[default]
    BlueGreen,
    /// A share of live's requests at each of `steps`, judged before the next.
    Canary,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary => "canary",
        }
    }
}

/// `rollout:` in pym-config.yaml (an overlay's `rollout` replaces the base's whole).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    #[serde(default)]
    pub strategy: Strategy,
    /// The shares of live's requests (percent, rising, each below 100) the new version
    /// takes in turn before it takes all of them; canary only.
    #[serde(default = "default_steps")]
    pub steps: Vec<u8>,
    /// How long each step lasts before it is judged.
    #[serde(default = "default_step_seconds")]
    pub step_seconds: NonZeroU64,
    /// How long a step may wait for `min_requests` before it fails (default: three times
    /// `step_seconds`).
    #[serde(default)]
    pub max_step_seconds: Option<u64>,
    /// How long the previous version keeps running after the new one took all of live,
    /// judged the same way (default: 300 with canary, 0 with blue-green).
    #[serde(default)]
    pub bake_seconds: Option<u64>,
    /// The largest share of the new version's requests that may fail (a 5xx answer, or
    /// no answer at all).
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// The largest latency p95 the new version may show, in milliseconds (unset: latency
    /// is shown, not judged).
    #[serde(default)]
    pub max_p95_ms: Option<u64>,
    /// Fewer requests than this in a judged interval is inconclusive.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// gke: a Prometheus whose request metrics judge the canary pods beside their
    /// readiness and restarts (unset: readiness and restarts alone).
    #[serde(default)]
    pub prometheus_url: Option<String>,
    /// gke: PromQL for the canary's requests over the window (see `DEFAULT_REQUESTS`).
    #[serde(default)]
    pub prometheus_requests: Option<String>,
    /// gke: PromQL for its 5xx answers over the window.
    #[serde(default)]
    pub prometheus_errors: Option<String>,
    /// gke: PromQL for its latency p95 in milliseconds over the window.
    #[serde(default)]
    pub prometheus_p95_ms: Option<String>,
}

/// The default PromQL for a canary's requests: the conventional
/// `http_requests_total{namespace, pod, status}` counter (as Kubernetes scrape configs
/// label a pod's metrics), over `{window}` seconds, of the pods of `{deployment}` in
/// `{namespace}`.
pub const DEFAULT_REQUESTS: &str = r#"sum(increase(http_requests_total{namespace="{namespace}",pod=~"{deployment}-.*"}[{window}s]))"#;
/// The default PromQL for its 5xx answers.
pub const DEFAULT_ERRORS: &str = r#"sum(increase(http_requests_total{namespace="{namespace}",pod=~"{deployment}-.*",status=~"5.."}[{window}s]))"#;
/// The default PromQL for its latency p95 in milliseconds, from the conventional
/// `http_request_duration_seconds` histogram.
pub const DEFAULT_P95_MS: &str = r#"1000 * histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{namespace="{namespace}",pod=~"{deployment}-.*"}[{window}s])))"#;

fn default_steps() -> Vec<u8> {
    vec![5, 25, 50]
}

fn default_step_seconds() -> NonZeroU64 {
    NonZeroU64::new(60).expect("above 0")
}

fn default_max_error_rate() -> f64 {
    0.01
}

fn default_min_requests() -> u64 {
    100
}

impl Default for Rollout {
    fn default() -> Rollout {
        Rollout {
            strategy: Strategy::BlueGreen,
            steps: default_steps(),
            step_seconds: default_step_seconds(),
            max_step_seconds: None,
            bake_seconds: None,
            max_error_rate: default_max_error_rate(),
            max_p95_ms: None,
            min_requests: default_min_requests(),
            prometheus_url: None,
            prometheus_requests: None,
            prometheus_errors: None,
            prometheus_p95_ms: None,
        }
    }
}

impl Rollout {
    /// The shares the new version takes before all of live: `steps` with canary, none
    /// with blue-green.
    pub fn shares(&self) -> &[u8] {
        match self.strategy {
            Strategy::Canary => &self.steps,
            Strategy::BlueGreen => &[],
        }
    }

    pub fn bake_seconds(&self) -> u64 {
        self.bake_seconds.unwrap_or(match self.strategy {
            Strategy::Canary => 300,
            Strategy::BlueGreen => 0,
        })
    }

    /// Whether promote judges the new version at all (a step or a bake): the target must
    /// then count its requests.
    pub fn judges(&self) -> bool {
        !self.shares().is_empty() || self.bake_seconds() > 0
    }

    /// Whether versions prove themselves in a bake: a bare rollback then goes only to a
    /// known-good version.
    pub fn bakes(&self) -> bool {
        self.bake_seconds() > 0
    }

    pub fn max_step_seconds(&self) -> u64 {
        self.max_step_seconds
            .unwrap_or(self.step_seconds.get() * 3)
            .max(self.step_seconds.get())
    }

    /// What is wrong with the values, each said for the key `rollout` (the types were
    /// checked by reading them).
    pub fn problems(&self) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        if self.strategy == Strategy::Canary && self.steps.is_empty() {
            out.push((
                "`steps` is empty: a canary needs at least one share before all of live".into(),
                "write the shares in percent, like `steps: [5, 25, 50]`, or use `strategy: blue-green`",
            ));
        }
        if let Some(bad) = self.steps.iter().find(|s| **s == 0 || **s >= 100) {
            out.push((
                format!("`steps` has {bad}: each step is a share between 1 and 99 percent"),
                "the last step, 100%, is implied: write the shares before it, like `[5, 25, 50]`",
            ));
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1]) {
            out.push((
                format!("`steps` {:?} does not rise", self.steps),
                "each step gives the new version a larger share, like `[5, 25, 50]`",
            ));
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) || self.max_error_rate.is_nan() {
            out.push((
                format!(
                    "`max_error_rate` is {}: it is a fraction of requests, from 0 to 1",
                    self.max_error_rate
                ),
                "1% is `max_error_rate: 0.01`",
            ));
        }
        if self
            .max_step_seconds
            .is_some_and(|m| m < self.step_seconds.get())
        {
            out.push((
                "`max_step_seconds` is below `step_seconds`".into(),
                "a step waits at least `step_seconds`; `max_step_seconds` bounds its wait for `min_requests`",
            ));
        }
        out
    }

    /// The thresholds, as `--dry-run` and the events say them.
    pub fn thresholds(&self) -> String {
        let p95 = match self.max_p95_ms {
            Some(ms) => format!(", p95 at most {ms} ms"),
            None => String::new(),
        };
        format!(
            "errors at most {}%{p95}, over at least {} requests",
            fmt_percent(self.max_error_rate),
            self.min_requests
        )
    }
}

/// 0.01 → "1", 0.005 → "0.5".
pub fn fmt_percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    let s = format!("{p:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl Schema for Rollout {
    fn schema() -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "strategy": {"type": "string", "enum": ["blue-green", "canary"], "default": "blue-green",
                    "description": "blue-green: all of live at once; canary: a share of live at each of `steps`, judged before the next"},
                "steps": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 99}, "default": [5, 25, 50],
                    "description": "canary: the shares of live's requests (percent, rising) the new version takes before all of them"},
                "step_seconds": {"type": "integer", "minimum": 1, "default": 60,
                    "description": "how long each step lasts before it is judged"},
                "max_step_seconds": {"type": "integer", "minimum": 1,
                    "description": "how long a step may wait for min_requests before it fails (default: 3 x step_seconds)"},
                "bake_seconds": {"type": "integer", "minimum": 0,
                    "description": "how long the previous version keeps running, judged the same way, after the new one took all of live (default: 300 with canary, 0 with blue-green); a version that passes is known-good"},
                "max_error_rate": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.01,
                    "description": "the largest share of the new version's requests that may fail (5xx, or no answer)"},
                "max_p95_ms": {"type": "integer", "minimum": 1,
                    "description": "the largest latency p95 in milliseconds (unset: shown, not judged)"},
                "min_requests": {"type": "integer", "minimum": 0, "default": 100,
                    "description": "fewer requests than this in a judged interval is inconclusive"},
                "prometheus_url": {"type": "string",
                    "description": "gke: a Prometheus whose request metrics judge the canary pods beside their readiness and restarts"},
                "prometheus_requests": {"type": "string", "default": DEFAULT_REQUESTS,
                    "description": "gke: PromQL for the canary's requests over {window} seconds ({namespace}, {deployment}, {version}, {app} are filled in)"},
                "prometheus_errors": {"type": "string", "default": DEFAULT_ERRORS,
                    "description": "gke: PromQL for the canary's 5xx answers over {window} seconds"},
                "prometheus_p95_ms": {"type": "string", "default": DEFAULT_P95_MS,
                    "description": "gke: PromQL for the canary's latency p95 in milliseconds over {window} seconds"},
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Rollout {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_and_what_each_strategy_judges() {
        let r = Rollout::default();
        assert!(!r.judges() && !r.bakes() && r.shares().is_empty());
        let r = parse("strategy: canary");
        assert_eq!(r.shares(), [5, 25, 50]);
        assert_eq!((r.bake_seconds(), r.max_step_seconds()), (300, 180));
        assert!(r.judges() && r.bakes());
        let r = parse("{strategy: blue-green, bake_seconds: 60}");
        assert!(r.judges() && r.bakes() && r.shares().is_empty());
        let r = parse("{strategy: canary, steps: [10], bake_seconds: 0}");
        assert!(r.judges() && !r.bakes());
        assert!(r.problems().is_empty());
        assert_eq!(
            parse("{max_error_rate: 0.005, max_p95_ms: 500, min_requests: 20}").thresholds(),
            "errors at most 0.5%, p95 at most 500 ms, over at least 20 requests"
        );
    }

    #[test]
    fn wrong_values_are_each_said() {
        let said = |yaml: &str| -> Vec<String> {
            parse(yaml).problems().into_iter().map(|(p, _)| p).collect()
        };
        assert_eq!(said("{strategy: canary, steps: []}").len(), 1);
        assert!(said("{strategy: canary, steps: [5, 100]}")[0].contains("100"));
        assert!(said("{steps: [50, 25]}")[0].contains("does not rise"));
        assert!(said("{max_error_rate: 2}")[0].contains("fraction"));
        assert!(said("{step_seconds: 60, max_step_seconds: 30}")[0].contains("max_step_seconds"));
        assert!(serde_yaml::from_str::<Rollout>("{stratgy: canary}").is_err());
        assert!(serde_yaml::from_str::<Rollout>("{strategy: linear}").is_err());
    }
}

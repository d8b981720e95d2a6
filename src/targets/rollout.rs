//! The judgement of a new version on live, written once for every target: a canary
//! step (the new version takes a share of live's requests for `step_seconds`) and the
//! bake (it has all of them, the previous version still running, for `bake_seconds`).
//!
//! A target hands in its `Signals`, the new version's figures over the last seconds
//! (the docker target's live proxy counts them; Cloud Run's come from Cloud Monitoring;
//! Kubernetes' from its pods and Prometheus), and its plan's actions call `step` and
//! `bake` here. Each judgement is a pure function of the figures and the thresholds
//! (`judge`), said as a line for people, an NDJSON event (`--json`) and an entry of the
//! run's history record. A breach ends the wait at once with an error, and the target's
//! plan unwinds (`targets::plan::execute`): the new version's share back to 0, or live
//! switched back to the previous version, still running.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::config::{Rollout, fmt_percent};
use crate::ctx::Ctx;
use crate::error::hinted;
use crate::output::StepProgress;

/// What a target measured of the new version over an interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// The interval, in seconds.
    pub seconds: f64,
    pub requests: u64,
    /// Its own 5xx answers.
    pub errors: u64,
    /// Requests it gave no answer to (a connection refused or reset, a timeout).
    pub failures: u64,
    /// Latency p95 in milliseconds, when it answered any.
    pub p95_ms: Option<f64>,
    /// What the target saw wrong besides the requests (a pod restarting, not ready): a
    /// breach whatever the requests say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<String>,
    /// The source counts no requests (Kubernetes without Prometheus): health alone judges.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub uncounted: bool,
}

impl Figures {
    /// Errors and failures over requests (0 without requests).
    pub fn error_rate(&self) -> f64 {
        match self.requests {
            0 => 0.0,
            n => (self.errors + self.failures) as f64 / n as f64,
        }
    }

    /// `120 requests (2.0/s), errors 1.7% (2 5xx, 0 no answer), p95 12 ms`.
    pub fn say(&self) -> String {
        if self.uncounted {
            return match &self.unhealthy {
                Some(why) => why.clone(),
                None => "every pod ready, no restart (no request figures)".into(),
            };
        }
        let rate = match self.seconds {
            s if s > 0.0 => format!(" ({:.1}/s)", self.requests as f64 / s),
            _ => String::new(),
        };
        let p95 = match self.p95_ms {
            Some(ms) => format!(", p95 {ms:.0} ms"),
            None => String::new(),
        };
        format!(
            "{} requests{rate}, errors {}% ({} 5xx, {} no answer){p95}",
            self.requests,
            fmt_percent(self.error_rate()),
            self.errors,
            self.failures
        )
    }
}

/// A judgement's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// A threshold crossed: why.
    Breach(String),
    /// Too few requests to tell: why.
    Inconclusive(String),
}

impl Verdict {
    fn word(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Breach(_) => "breach",
            Verdict::Inconclusive(_) => "inconclusive",
        }
    }
}

/// Judges figures against the thresholds: a health problem or a crossed threshold is a
/// breach once there are `min_requests` (a health problem at once); fewer requests is
/// inconclusive.
pub fn judge(f: &Figures, r: &Rollout) -> Verdict {
    if let Some(why) = &f.unhealthy {
        return Verdict::Breach(why.clone());
    }
    if f.uncounted {
        return Verdict::Pass;
    }
    if f.requests < r.min_requests.max(1) {
        return Verdict::Inconclusive(format!(
            "{} requests, fewer than min_requests ({})",
            f.requests, r.min_requests
        ));
    }
    if f.error_rate() > r.max_error_rate {
        return Verdict::Breach(format!(
            "errors {}% over max_error_rate {}%",
            fmt_percent(f.error_rate()),
            fmt_percent(r.max_error_rate)
        ));
    }
    if let (Some(p95), Some(max)) = (f.p95_ms, r.max_p95_ms)
        && p95 > max as f64
    {
        return Verdict::Breach(format!("p95 {p95:.0} ms over max_p95_ms {max} ms"));
    }
    Verdict::Pass
}

/// The `q` quantile (0 to 1) of a histogram, in the unit of `bounds` (the buckets' upper
/// bounds; `counts` has one more, the bucket above the last bound), interpolated within
/// its bucket as Prometheus' `histogram_quantile` does; the last bound when it falls
/// above it. `None` without counts.
pub fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, n) in counts.iter().enumerate() {
        if *n > 0 && (seen + n) as f64 >= rank {
            let Some(upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            return Some(lower + (upper - lower) * ((rank - seen as f64) / *n as f64));
        }
        seen += n;
    }
    bounds.last().copied()
}

/// What a target measures a new version by.
pub trait Signals {
    /// Where the figures come from, for `--dry-run` and the events.
    fn source(&self) -> String;
    /// The new version's figures over the last `seconds`.
    fn figures(&mut self, ctx: &Ctx, seconds: u64) -> Result<Figures>;
}

/// Where a judgement was made: a step at a share, or the bake.
#[derive(Clone, Copy, Debug)]
pub enum Phase {
    Step(u8),
    Bake,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Step(share) => write!(f, "the {share}% step"),
            Phase::Bake => f.write_str("the bake"),
        }
    }
}

/// Says one judgement: a line, an event, an entry of the run's record.
fn said(
    ctx: &Ctx,
    progress: &StepProgress<'_>,
    version: &str,
    phase: Phase,
    f: &Figures,
    v: &Verdict,
    source: &str,
) {
    let why = match v {
        Verdict::Pass => String::new(),
        Verdict::Breach(w) | Verdict::Inconclusive(w) => format!(": {w}"),
    };
    progress.line(&format!(
        "  {} {version}, {phase}: {}{why}",
        v.word(),
        f.say()
    ));
    let (phase_word, share) = match phase {
        Phase::Step(s) => ("step", Some(s)),
        Phase::Bake => ("bake", None),
    };
    let event = serde_json::json!({
        "event": "judgement",
        "version": version,
        "phase": phase_word,
        "share": share,
        "verdict": v.word(),
        "why": why.trim_start_matches(": "),
        "figures": f,
        "error_rate": f.error_rate(),
        "source": source,
        "at": crate::ops::state::now(),
    });
    ctx.out.event(event.clone());
    ctx.add_judgement(event);
}

/// How often a step or a bake asks for figures: a breach is seen within this, and the
/// switch back follows at once.
const EVERY: Duration = Duration::from_millis(500);
/// How often the figures so far are shown while a step or the bake goes on (a line each
/// time where the output is not a terminal).
const SHOW_EVERY: Duration = Duration::from_secs(5);

/// One canary step: the new version has `share`% of live; its figures are asked every
/// `EVERY` over the step so far. A breach (once `min_requests` came) ends the step at
/// once with an error; at `step_seconds` a pass ends it; an inconclusive step waits on,
/// to `max_step_seconds`, then fails. Ctrl-C ends the wait at once (`Ctx::wait`).
pub fn step(
    ctx: &Ctx,
    signals: &mut dyn Signals,
    r: &Rollout,
    version: &str,
    share: u8,
    progress: &StepProgress<'_>,
) -> Result<()> {
    let started = Instant::now();
    let phase = Phase::Step(share);
    let source = signals.source();
    let mut shown = None;
    loop {
        ctx.wait(async {
            tokio::time::sleep(EVERY).await;
            Ok(())
        })?;
        let elapsed = started.elapsed().as_secs_f64();
        let f = signals.figures(ctx, elapsed.ceil() as u64)?;
        let v = judge(&f, r);
        if shown.is_none_or(|t: Instant| t.elapsed() >= SHOW_EVERY) {
            progress.message(&format!(
                "{version} at {share}% for {elapsed:.0}s of {}: {}",
                r.step_seconds,
                f.say()
            ));
            shown = Some(Instant::now());
        }
        let over = elapsed >= r.step_seconds.get() as f64;
        match &v {
            Verdict::Breach(why) => {
                said(ctx, progress, version, phase, &f, &v, &source);
                return Err(breach(version, phase, why, &f));
            }
            Verdict::Pass if over => {
                said(ctx, progress, version, phase, &f, &v, &source);
                return Ok(());
            }
            Verdict::Inconclusive(why) if elapsed >= r.max_step_seconds() as f64 => {
                said(ctx, progress, version, phase, &f, &v, &source);
                return Err(hinted(
                    format!(
                        "the canary {version} could not be judged at {share}% within max_step_seconds ({}s): {why}",
                        r.max_step_seconds()
                    ),
                    "a canary is judged on its own requests: send live enough traffic, or lower `rollout.min_requests`, or raise `rollout.max_step_seconds`",
                ));
            }
            _ => {}
        }
    }
}

/// The bake: the new version has all of live for `bake_seconds`, the previous one still
/// running; its figures over the last `step_seconds` are judged every `EVERY`. A breach
/// ends it at once with an error. A version that proved itself (at least one judgement
/// had `min_requests`, and none breached) is known-good: `mark` records it so in the
/// target's deploy record (a failure to is a warning: live serves it either way).
pub fn bake(
    ctx: &Ctx,
    signals: &mut dyn Signals,
    r: &Rollout,
    version: &str,
    progress: &StepProgress<'_>,
    mark: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    match judge_bake(ctx, signals, r, version, progress)? {
        true => {
            if let Err(e) = mark() {
                ctx.out.warn(&format!(
                    "{version} passed its bake, but the deploy record was not updated: {e:#}"
                ));
            }
        }
        false => ctx.out.warn(&format!(
            "{version} stays live, but is not known-good: its bake saw too few requests to judge it"
        )),
    }
    Ok(())
}

/// The bake's judgement (see `bake`): whether the version proved itself.
fn judge_bake(
    ctx: &Ctx,
    signals: &mut dyn Signals,
    r: &Rollout,
    version: &str,
    progress: &StepProgress<'_>,
) -> Result<bool> {
    let started = Instant::now();
    let source = signals.source();
    let mut proved: Option<Figures> = None;
    let mut shown = None;
    let last = loop {
        ctx.wait(async {
            tokio::time::sleep(EVERY).await;
            Ok(())
        })?;
        let elapsed = started.elapsed().as_secs_f64();
        let window = (elapsed.ceil() as u64).clamp(1, r.step_seconds.get());
        let f = signals.figures(ctx, window)?;
        let v = judge(&f, r);
        if shown.is_none_or(|t: Instant| t.elapsed() >= SHOW_EVERY) {
            progress.message(&format!(
                "baking {version}, {elapsed:.0}s of {}: {}",
                r.bake_seconds(),
                f.say()
            ));
            shown = Some(Instant::now());
        }
        match &v {
            Verdict::Breach(why) => {
                said(ctx, progress, version, Phase::Bake, &f, &v, &source);
                return Err(breach(version, Phase::Bake, why, &f));
            }
            Verdict::Pass => proved = Some(f.clone()),
            Verdict::Inconclusive(_) => {}
        }
        if elapsed >= r.bake_seconds() as f64 {
            break f;
        }
    };
    let (f, v) = match proved {
        Some(f) => (f, Verdict::Pass),
        None => (
            last,
            Verdict::Inconclusive(format!(
                "never {} requests within {}s: not marked known-good",
                r.min_requests, r.step_seconds
            )),
        ),
    };
    said(ctx, progress, version, Phase::Bake, &f, &v, &source);
    Ok(v == Verdict::Pass)
}

fn breach(version: &str, phase: Phase, why: &str, f: &Figures) -> anyhow::Error {
    hinted(
        format!(
            "the new version {version} breached a threshold in {phase}: {why} ({})",
            f.say()
        ),
        "its logs are above; `rollout` in pym-config.yaml sets the thresholds; a fixed commit deploys as a new version",
    )
}

/// The line of a plan's judgement of a step, as every target's plan says it.
pub fn step_line(r: &Rollout, version: &str, share: u8, source: &str) -> String {
    format!(
        "judge {version} at {share}% for {}s (up to {}s for {} requests): {}; from {source}",
        r.step_seconds,
        r.max_step_seconds(),
        r.min_requests,
        r.thresholds()
    )
}

/// The line of a plan's bake, as every target's plan says it.
pub fn bake_line(r: &Rollout, version: &str, source: &str) -> String {
    format!(
        "bake {version} at 100% for {}s, the previous version still running: {}; from {source}; then record it known-good",
        r.bake_seconds(),
        r.thresholds()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(yaml: &str) -> Rollout {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn figures(requests: u64, errors: u64, failures: u64, p95: Option<f64>) -> Figures {
        Figures {
            seconds: 10.0,
            requests,
            errors,
            failures,
            p95_ms: p95,
            unhealthy: None,
            uncounted: false,
        }
    }

    #[test]
    fn a_judgement_weighs_errors_latency_and_the_count() {
        let r = rollout("{max_error_rate: 0.01, max_p95_ms: 500, min_requests: 100}");
        assert_eq!(judge(&figures(200, 1, 1, Some(20.0)), &r), Verdict::Pass);
        assert!(matches!(
            judge(&figures(200, 2, 1, Some(20.0)), &r),
            Verdict::Breach(w) if w.contains("1.5%")
        ));
        assert!(matches!(
            judge(&figures(200, 0, 0, Some(900.0)), &r),
            Verdict::Breach(w) if w.contains("p95 900 ms")
        ));
        assert!(matches!(
            judge(&figures(99, 50, 0, None), &r),
            Verdict::Inconclusive(_)
        ));
        let mut sick = figures(0, 0, 0, None);
        sick.unhealthy = Some("pod x restarted 2 times".into());
        assert!(matches!(judge(&sick, &r), Verdict::Breach(w) if w.contains("restarted")));
        // No latency threshold: p95 is shown, not judged.
        let r = rollout("{min_requests: 1}");
        assert_eq!(judge(&figures(5, 0, 0, Some(9000.0)), &r), Verdict::Pass);
        assert_eq!(
            figures(120, 2, 0, Some(12.4)).say(),
            "120 requests (12.0/s), errors 1.667% (2 5xx, 0 no answer), p95 12 ms"
        );
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let bounds = [10.0, 100.0, 1000.0];
        // 100 requests: 90 under 10 ms, 10 between 10 and 100.
        let p95 = quantile(&bounds, &[90, 10, 0, 0], 0.95).unwrap();
        assert!((p95 - 55.0).abs() < 1e-9, "{p95}");
        assert_eq!(quantile(&bounds, &[0, 0, 0, 0], 0.95), None);
        assert_eq!(quantile(&bounds, &[0, 0, 0, 5], 0.95), Some(1000.0));
        assert_eq!(quantile(&bounds, &[4, 0, 0, 0], 0.5), Some(5.0));
    }

    /// Figures that never change, and how often they were asked.
    struct Fixed(Figures, usize);

    impl Signals for Fixed {
        fn source(&self) -> String {
            "fixed figures".into()
        }
        fn figures(&mut self, _ctx: &Ctx, _seconds: u64) -> Result<Figures> {
            self.1 += 1;
            Ok(self.0.clone())
        }
    }

    fn ctx() -> Ctx {
        crate::ctx::scratch("rollout")
    }

    #[test]
    fn a_step_passes_at_its_end_breaks_at_once_and_gives_up_waiting_for_requests() {
        let ctx = ctx();
        let progress = ctx.out.step("t");
        let r = rollout("{step_seconds: 1, max_step_seconds: 2, min_requests: 10}");
        let started = Instant::now();
        let mut ok = Fixed(figures(50, 0, 0, Some(3.0)), 0);
        step(&ctx, &mut ok, &r, "v2", 10, &progress).unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "judged at the step's end"
        );
        let started = Instant::now();
        let mut bad = Fixed(figures(50, 10, 0, Some(3.0)), 0);
        let e = step(&ctx, &mut bad, &r, "v2", 10, &progress).unwrap_err();
        assert!(
            format!("{e}").contains("breached a threshold in the 10% step"),
            "{e}"
        );
        assert_eq!(bad.1, 1, "a breach ends the step at its first judgement");
        assert!(started.elapsed() < Duration::from_secs(1));
        let started = Instant::now();
        let mut idle = Fixed(figures(3, 0, 0, None), 0);
        let e = step(&ctx, &mut idle, &r, "v2", 10, &progress).unwrap_err();
        assert!(
            format!("{e}").contains("could not be judged at 10% within max_step_seconds (2s)"),
            "{e}"
        );
        assert!(started.elapsed() >= Duration::from_secs(2));
        // The bake: known-good only once it saw enough requests.
        let r = rollout("{step_seconds: 1, bake_seconds: 1, min_requests: 10}");
        let mut marked = 0;
        for requests in [50, 3] {
            let mut fixed = Fixed(figures(requests, 0, 0, None), 0);
            bake(&ctx, &mut fixed, &r, "v2", &progress, &mut || {
                marked += 1;
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(marked, 1, "known-good only with enough requests");
        let judged = ctx.judgements();
        assert_eq!(
            judged
                .iter()
                .map(|j| j["verdict"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["pass", "breach", "inconclusive", "pass", "inconclusive"]
        );
        assert_eq!(judged[1]["figures"]["errors"], 10);
    }

    #[test]
    fn a_plan_says_each_judgement_its_thresholds_and_source() {
        let r = rollout("{strategy: canary, steps: [5, 50], step_seconds: 30, max_p95_ms: 400}");
        assert_eq!(
            step_line(&r, "v2", 5, "the proxy"),
            "judge v2 at 5% for 30s (up to 90s for 100 requests): errors at most 1%, p95 at most 400 ms, over at least 100 requests; from the proxy"
        );
        assert!(bake_line(&r, "v2", "the proxy").starts_with("bake v2 at 100% for 300s"));
    }
}

//! Waiting on Beanstalk: until environments are Ready (and Green), Beanstalk's events
//! shown as they come, and why one is Red (its health causes and the tail of its log).
//! Called inside `Ctx::wait`, so Ctrl-C ends a wait at once.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, bail};
use aws_sdk_elasticbeanstalk as eb;
use aws_sdk_elasticbeanstalk::primitives::DateTime;
use aws_sdk_elasticbeanstalk::types::{EnvironmentHealth, EnvironmentStatus};

use super::aws::{Aws, aws_error, is_gone, state};
use crate::error::hinted;
use crate::output::StepProgress;

impl Aws {
    /// Why an environment is Red, as far as Beanstalk can say: the causes enhanced health
    /// gives (none with basic health), and the last lines of its instance's log
    /// (RequestEnvironmentInfo, then RetrieveEnvironmentInfo, read from S3). Best effort:
    /// what cannot be had is left out, and it gives up after `LOG_WAIT`.
    async fn why_red(&self, name: &str) -> String {
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
            if tokio::time::Instant::now() >= deadline {
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

    /// Prints the events of `names` since `since` not shown yet; keeps the warnings and
    /// errors in `problems`.
    async fn show_events(
        &self,
        names: &[&str],
        since: DateTime,
        seen: &mut HashSet<(Option<i128>, Option<String>)>,
        problems: &mut Vec<String>,
        progress: &StepProgress<'_>,
    ) -> Result<()> {
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
        Ok(())
    }

    /// Waits until every named environment is Ready (and, with `green`, Green), streaming
    /// Beanstalk's events for them into the step's output. Red, a termination or the
    /// timeout stop the wait with the warnings and errors seen.
    pub async fn wait(
        &self,
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
            self.show_events(names, since, &mut seen, &mut problems, progress)
                .await?;
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
                    let why = self.why_red(name).await;
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
                // What Beanstalk said as it finished (its "Completed ..." event) comes
                // with the state that ends the wait: shown too.
                self.show_events(names, since, &mut seen, &mut problems, progress)
                    .await?;
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
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(3));
        }
    }
}

/// The bucket and key of an S3 object URL, in either style AWS hands out (and signs):
/// virtual-hosted (`https://<bucket>.s3[.<region>].amazonaws.com/<key>?...`) or path
/// (`https://s3.<region>.amazonaws.com/<bucket>/<key>`, or any endpoint's
/// `http://host:port/<bucket>/<key>`).
pub(super) fn s3_location(url: &str) -> Option<(String, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

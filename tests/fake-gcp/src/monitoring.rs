//! Cloud Monitoring's `projects.timeSeries.list` (API v3, REST/JSON) over what the front
//! door served: each request routed to a revision is a sample (its revision, status and
//! latency), and Cloud Run's two request metrics are answered from them as Google's
//! client reads them.
//!
//! - `run.googleapis.com/request_count`: DELTA, INT64, labels `response_code`,
//!   `response_code_class`, `route_type` (`default`);
//! - `run.googleapis.com/request_latencies`: DELTA, DISTRIBUTION in ms (explicit buckets),
//!   the same labels;
//!
//! on the monitored resource `cloud_run_revision` (`project_id`, `service_name`,
//! `revision_name`, `location`, `configuration_name`). Filters: clauses joined by `AND`,
//! each `metric.type`, `resource.type`, `resource.label(s).K` or `metric.label(s).K` `=` a
//! quoted string or `one_of(...)`. Aggregation: the aligners NONE (raw: one point a
//! minute), DELTA, and PERCENTILE_50/95/99 (latencies), and the reducers NONE and SUM, by
//! `groupByFields`. Points cover whole `alignmentPeriod`s back from `interval.endTime`,
//! newest first, each period's samples those with `start < t <= end`. Unlike Google, a
//! sample is visible at once (no minute of sampling delay). Not modelled: other metrics,
//! other aligners and reducers, `secondaryAggregation`, paging (one page holds all).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::ApiError;

/// The latency buckets' bounds (ms): explicit buckets, as the points say.
const BOUNDS_MS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
/// The samples kept (the oldest go first).
const KEPT: usize = 200_000;

/// One request the front door routed to a revision.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at_ms: i64,
    /// `projects/P/locations/L/services/S/revisions/R`.
    pub revision: String,
    pub code: u16,
    pub latency_ms: f64,
}

#[derive(Default)]
pub struct Samples {
    samples: std::collections::VecDeque<Sample>,
}

impl Samples {
    pub fn add(&mut self, s: Sample) {
        self.samples.push_back(s);
        if self.samples.len() > KEPT {
            self.samples.pop_front();
        }
    }
}

/// `GET /v3/projects/{p}/timeSeries` with its query.
pub fn list(samples: &Samples, project: &str, query: &str) -> Result<Value, ApiError> {
    let q: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let ints = get("$alt").is_some_and(|a| a.contains("enum-encoding=int"));
    let filter = get("filter").ok_or_else(|| {
        ApiError::invalid("Field filter had an invalid value: a filter is required.")
    })?;
    let clauses = parse_filter(filter)?;
    let metric = clauses
        .iter()
        .find(|(k, _)| k == "metric.type")
        .and_then(|(_, v)| (v.len() == 1).then(|| v[0].clone()))
        .ok_or_else(|| ApiError::invalid(format!("Field filter had an invalid value of \"{filter}\": the filter must name exactly one metric.type.")))?;
    let latencies = match metric.as_str() {
        "run.googleapis.com/request_count" => false,
        "run.googleapis.com/request_latencies" => true,
        // Another metric: no series here, as Google answers for one with no data.
        _ => return Ok(json!({})),
    };
    let time = |k: &str| -> Result<i64, ApiError> {
        let v = get(k).ok_or_else(|| ApiError::invalid(format!("Field {k} is required.")))?;
        parse_time(v)
            .ok_or_else(|| ApiError::invalid(format!("Field {k} had an invalid value of \"{v}\".")))
    };
    let end = time("interval.endTime")?;
    let start = match get("interval.startTime") {
        Some(_) => time("interval.startTime")?,
        None => end,
    };
    let aligner = enum_value(get("aggregation.perSeriesAligner"), ALIGNERS)?;
    let reducer = enum_value(get("aggregation.crossSeriesReducer"), REDUCERS)?;
    let period_ms = match get("aggregation.alignmentPeriod") {
        Some(p) => p
            .strip_suffix('s')
            .and_then(|s| s.parse::<f64>().ok())
            .map(|s| (s * 1000.0) as i64)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "Field aggregation.alignmentPeriod had an invalid value of \"{p}\"."
                ))
            })?,
        None if aligner != 0 => {
            return Err(ApiError::invalid(
                "Field aggregation.alignmentPeriod is required when a per-series aligner is set.",
            ));
        }
        None => 60_000,
    };
    if aligner != 0 && period_ms < 60_000 {
        return Err(ApiError::invalid(
            "The alignment period must be at least 60 seconds.",
        ));
    }
    let percentile = match aligner {
        0 | 1 => None,
        18 => Some(0.99),
        19 => Some(0.95),
        20 => Some(0.50),
        other => {
            return Err(ApiError::invalid(format!(
                "The local Cloud Monitoring does not model the aligner {}.",
                name_of(other, ALIGNERS)
            )));
        }
    };
    if percentile.is_some() && !latencies {
        return Err(ApiError::invalid(
            "The aligner ALIGN_PERCENTILE_* applies to distribution metrics only.",
        ));
    }
    if !matches!(reducer, 0 | 4) {
        return Err(ApiError::invalid(format!(
            "The local Cloud Monitoring does not model the reducer {}.",
            name_of(reducer, REDUCERS)
        )));
    }
    let group_by: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "aggregation.groupByFields")
        .map(|(_, v)| v.clone())
        .collect();

    // Each sample's labels, the series it is in, and whether the filter keeps it.
    let mut series: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
    for s in samples
        .samples
        .iter()
        .filter(|s| s.at_ms > start && s.at_ms <= end)
    {
        let Some(labels) = labels_of(s, project) else {
            continue;
        };
        if !clauses.iter().all(|(k, want)| match k.as_str() {
            "metric.type" => true,
            "resource.type" => want.iter().any(|w| w == "cloud_run_revision"),
            k => labels.get(k).is_some_and(|v| want.contains(v)),
        }) {
            continue;
        }
        let key: Vec<(String, String)> = match reducer {
            0 => labels.into_iter().collect(),
            _ => group_by
                .iter()
                .map(|g| {
                    (
                        g.replace(".label.", ".labels."),
                        labels
                            .get(&g.replace(".label.", ".labels."))
                            .cloned()
                            .unwrap_or_default(),
                    )
                })
                .collect(),
        };
        series.entry(key).or_default().push(s);
    }
    let kind = |gauge: bool| match (gauge, ints) {
        (true, true) => json!(1),
        (true, false) => json!("GAUGE"),
        (false, true) => json!(2),
        (false, false) => json!("DELTA"),
    };
    let value_type = |n: i64, name: &str| if ints { json!(n) } else { json!(name) };
    let mut out = Vec::new();
    for (key, members) in series {
        let mut metric_labels = serde_json::Map::new();
        let mut resource_labels = serde_json::Map::new();
        for (k, v) in &key {
            if let Some(m) = k.strip_prefix("metric.labels.") {
                metric_labels.insert(m.into(), v.clone().into());
            } else if let Some(r) = k.strip_prefix("resource.labels.") {
                resource_labels.insert(r.into(), v.clone().into());
            }
        }
        let mut points = Vec::new();
        let mut to = end;
        while to > start {
            let from = to - period_ms;
            let inside: Vec<&Sample> = members
                .iter()
                .copied()
                .filter(|s| s.at_ms > from && s.at_ms <= to)
                .collect();
            if !inside.is_empty() {
                let value = match (latencies, percentile) {
                    (false, _) => json!({"int64Value": inside.len().to_string()}),
                    (true, Some(q)) => json!({"doubleValue": percentile_of(&inside, q)}),
                    (true, None) => json!({"distributionValue": distribution(&inside)}),
                };
                let interval = match percentile {
                    Some(_) => json!({"startTime": ts(to), "endTime": ts(to)}),
                    None => json!({"startTime": ts(from), "endTime": ts(to)}),
                };
                points.push(json!({"interval": interval, "value": value}));
            }
            to = from;
        }
        if points.is_empty() {
            continue;
        }
        let (vt, unit) = match (latencies, percentile) {
            (false, _) => (value_type(2, "INT64"), "1"),
            (true, Some(_)) => (value_type(3, "DOUBLE"), "ms"),
            (true, None) => (value_type(5, "DISTRIBUTION"), "ms"),
        };
        out.push(json!({
            "metric": {"type": metric, "labels": metric_labels},
            "resource": {"type": "cloud_run_revision", "labels": resource_labels},
            "metricKind": kind(percentile.is_some()),
            "valueType": vt,
            "unit": unit,
            "points": points,
        }));
    }
    if out.is_empty() {
        return Ok(json!({}));
    }
    Ok(json!({"timeSeries": out, "unit": if latencies { "ms" } else { "1" }}))
}

/// A protobuf JSON `Timestamp`: whole seconds unless there are milliseconds.
fn ts(ms: i64) -> String {
    match ms % 1000 {
        0 => pym_fake_common::time::rfc3339(ms),
        _ => pym_fake_common::time::rfc3339_millis(ms),
    }
}

/// The labels of a sample, by their filter names (`resource.labels.K`, `metric.labels.K`),
/// when it is a revision of `project`.
fn labels_of(s: &Sample, project: &str) -> Option<BTreeMap<String, String>> {
    let parts: Vec<&str> = s.revision.split('/').collect();
    let [
        "projects",
        p,
        "locations",
        location,
        "services",
        service,
        "revisions",
        revision,
    ] = parts[..]
    else {
        return None;
    };
    if p != project {
        return None;
    }
    let class = format!("{}xx", s.code / 100);
    Some(BTreeMap::from([
        ("resource.labels.project_id".into(), p.to_string()),
        ("resource.labels.location".into(), location.to_string()),
        ("resource.labels.service_name".into(), service.to_string()),
        (
            "resource.labels.configuration_name".into(),
            service.to_string(),
        ),
        ("resource.labels.revision_name".into(), revision.to_string()),
        ("metric.labels.response_code".into(), s.code.to_string()),
        ("metric.labels.response_code_class".into(), class),
        ("metric.labels.route_type".into(), "default".into()),
    ]))
}

/// `K = "v"`, `K = one_of("a", "b")`, joined by `AND`; `resource.label.K` is
/// `resource.labels.K`.
fn parse_filter(filter: &str) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "Field filter had an invalid value of \"{filter}\": the local Cloud Monitoring reads `key = \"value\"` and `key = one_of(\"a\", ...)` clauses joined by AND."
        ))
    };
    filter
        .split(" AND ")
        .map(|clause| {
            let (k, v) = clause.split_once('=').ok_or_else(bad)?;
            let k = k
                .trim()
                .replace("resource.label.", "resource.labels.")
                .replace("metric.label.", "metric.labels.");
            let v = v.trim();
            let values = match v.strip_prefix("one_of(").and_then(|r| r.strip_suffix(')')) {
                Some(list) => list
                    .split(',')
                    .map(|s| unquote(s.trim()))
                    .collect::<Option<Vec<_>>>(),
                None => unquote(v).map(|v| vec![v]),
            }
            .ok_or_else(bad)?;
            Ok((k, values))
        })
        .collect()
}

fn unquote(s: &str) -> Option<String> {
    s.strip_prefix('"')?.strip_suffix('"').map(str::to_string)
}

const ALIGNERS: &[(&str, i64)] = &[
    ("ALIGN_NONE", 0),
    ("ALIGN_DELTA", 1),
    ("ALIGN_RATE", 2),
    ("ALIGN_INTERPOLATE", 3),
    ("ALIGN_NEXT_OLDER", 4),
    ("ALIGN_MIN", 10),
    ("ALIGN_MAX", 11),
    ("ALIGN_MEAN", 12),
    ("ALIGN_COUNT", 13),
    ("ALIGN_SUM", 14),
    ("ALIGN_STDDEV", 15),
    ("ALIGN_PERCENTILE_99", 18),
    ("ALIGN_PERCENTILE_95", 19),
    ("ALIGN_PERCENTILE_50", 20),
    ("ALIGN_PERCENTILE_05", 21),
];

const REDUCERS: &[(&str, i64)] = &[
    ("REDUCE_NONE", 0),
    ("REDUCE_MEAN", 1),
    ("REDUCE_MIN", 2),
    ("REDUCE_MAX", 3),
    ("REDUCE_SUM", 4),
    ("REDUCE_STDDEV", 5),
    ("REDUCE_COUNT", 6),
    ("REDUCE_PERCENTILE_99", 9),
    ("REDUCE_PERCENTILE_95", 10),
    ("REDUCE_PERCENTILE_50", 11),
];

/// An enum given as a number or a name (absent: 0).
fn enum_value(v: Option<&str>, names: &[(&str, i64)]) -> Result<i64, ApiError> {
    let Some(v) = v else {
        return Ok(0);
    };
    v.parse::<i64>()
        .ok()
        .or_else(|| names.iter().find(|(n, _)| *n == v).map(|(_, i)| *i))
        .ok_or_else(|| ApiError::invalid(format!("Invalid value \"{v}\" for an enum field.")))
}

fn name_of(n: i64, names: &[(&str, i64)]) -> String {
    names
        .iter()
        .find(|(_, i)| *i == n)
        .map_or(n.to_string(), |(name, _)| name.to_string())
}

/// `2026-12-04T18:10:00Z`, `…:00.123456Z`, in ms.
fn parse_time(v: &str) -> Option<i64> {
    let v = v.strip_suffix('Z')?;
    let (date, time) = v.split_once('T')?;
    pym_fake_common::time::from_date_time(date, time)
}

fn distribution(samples: &[&Sample]) -> Value {
    let n = samples.len() as f64;
    let mean = samples.iter().map(|s| s.latency_ms).sum::<f64>() / n;
    let ssd: f64 = samples.iter().map(|s| (s.latency_ms - mean).powi(2)).sum();
    let mut counts = vec![0u64; BOUNDS_MS.len() + 1];
    for s in samples {
        let i = BOUNDS_MS
            .iter()
            .position(|b| s.latency_ms < *b)
            .unwrap_or(BOUNDS_MS.len());
        counts[i] += 1;
    }
    json!({
        "count": samples.len().to_string(),
        "mean": mean,
        "sumOfSquaredDeviation": ssd,
        "bucketOptions": {"explicitBuckets": {"bounds": BOUNDS_MS}},
        "bucketCounts": counts.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
    })
}

/// The `q` quantile of the samples' latencies (nearest rank).
fn percentile_of(samples: &[&Sample], q: f64) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(|s| s.latency_ms).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, rev: &str, code: u16, ms: f64) -> Sample {
        Sample {
            at_ms,
            revision: format!("projects/p/locations/europe-west1/services/web/revisions/{rev}"),
            code,
            latency_ms: ms,
        }
    }

    #[test]
    fn counts_by_revision_and_class_over_the_interval() {
        let mut s = Samples::default();
        for i in 0..10 {
            s.add(sample(
                1_000_000 + i * 1000,
                "web-2",
                if i < 2 { 500 } else { 200 },
                3.0,
            ));
        }
        s.add(sample(1_000_000, "web-1", 200, 1.0));
        s.add(sample(2_000_000, "web-2", 500, 1.0));
        let q = "filter=metric.type%3D%22run.googleapis.com%2Frequest_count%22+AND+resource.labels.revision_name%3D%22web-2%22&interval.endTime=1970-01-01T00%3A16%3A50Z&interval.startTime=1970-01-01T00%3A16%3A30Z&aggregation.alignmentPeriod=60s&aggregation.crossSeriesReducer=4&aggregation.groupByFields=metric.labels.response_code_class&aggregation.perSeriesAligner=1&%24alt=json%3Benum-encoding%3Dint";
        let v = list(&s, "p", q).unwrap();
        let ts = v["timeSeries"].as_array().unwrap();
        let by: BTreeMap<&str, &str> = ts
            .iter()
            .map(|t| {
                (
                    t["metric"]["labels"]["response_code_class"]
                        .as_str()
                        .unwrap(),
                    t["points"][0]["value"]["int64Value"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(by, BTreeMap::from([("2xx", "8"), ("5xx", "2")]));
        assert_eq!(ts[0]["metricKind"], 2);
        let q = q.replace("request_count", "request_latencies").replace(
            "aggregation.groupByFields=metric.labels.response_code_class&",
            "",
        );
        let v = list(&s, "p", &q).unwrap();
        let d = &v["timeSeries"][0]["points"][0]["value"]["distributionValue"];
        assert_eq!(d["count"], "10");
        assert_eq!(d["bucketCounts"][2], "10", "3 ms is in [2, 5)");
        assert!(
            list(&s, "p", "filter=resource.type%3D%22x%22").is_err(),
            "no metric.type"
        );
    }
}

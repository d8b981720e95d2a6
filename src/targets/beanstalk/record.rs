//! The Beanstalk target's deploy record (`targets::history`): one tag of the application
//! per entry, `pymdeploy:record:<n>` = `event@version@unix[@digest]`, read back in the
//! order of `n` through `History::parse`. One entry a tag keeps each value far under
//! AWS's 256 characters; the newest `KEPT_TAGS` are kept, under AWS's 50 tags a resource.
//!
//! An application only an older pymdeploy deployed has no such tags but `pym:live-at` and
//! `pym:rolled-back-at` (milliseconds) on its application versions: they are read as the
//! record, and the first write replaces them.

use anyhow::Result;

use super::aws::Aws;
use super::observe::version_of;
use crate::targets::history::{Event, History};

/// The key of a record entry's tag, before its sequence number.
pub const RECORD: &str = "pymdeploy:record:";
/// The older tags on application versions, in milliseconds.
const LIVE_AT: &str = "pym:live-at";
const ROLLED_BACK_AT: &str = "pym:rolled-back-at";
/// Entries kept as tags (AWS allows 50 tags a resource).
const KEPT_TAGS: usize = 40;

/// An entry to add to the record: what happened, to which version, on which image's
/// digest.
pub type Note = (Event, String, Option<String>);

/// The record entries among a resource's tags, by sequence number.
fn entries(tags: &[(String, String)]) -> Vec<(u64, &str)> {
    let mut out: Vec<(u64, &str)> = tags
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(RECORD)?.parse().ok()?, v.as_str())))
        .collect();
    out.sort();
    out
}

/// The record in the application's tags, if it has one.
pub fn from_tags(tags: &[(String, String)]) -> Option<History> {
    let entries = entries(tags);
    (!entries.is_empty()).then(|| {
        History::parse(
            &entries
                .iter()
                .map(|(_, v)| *v)
                .collect::<Vec<_>>()
                .join(" "),
        )
    })
}

/// The record an older pymdeploy kept: (label, its tags) of application versions.
pub fn converted(versions: &[(String, Vec<(String, String)>)]) -> History {
    let mut events: Vec<(i64, Event, &str)> = Vec::new();
    for (label, tags) in versions {
        for (key, event) in [(LIVE_AT, Event::Live), (ROLLED_BACK_AT, Event::RolledBack)] {
            let at = tags
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.parse::<i64>().ok())
                .filter(|ms| *ms > 0);
            if let Some(ms) = at {
                events.push((ms, event, version_of(label)));
            }
        }
    }
    events.sort_by_key(|(ms, event, _)| (*ms, *event == Event::RolledBack));
    let mut h = History::default();
    for (ms, event, version) in events {
        h.push(event, version, None, ms / 1000);
    }
    h
}

/// The tags to add and remove to append `notes` at `now`: after the tags' own entries,
/// or, when there are none, after `base` (the converted record, written whole).
pub fn appended(
    tags: &[(String, String)],
    base: &History,
    notes: &[Note],
    now: i64,
) -> (Vec<(String, String)>, Vec<String>) {
    let have = entries(tags);
    let mut new = History::default();
    if have.is_empty() {
        for e in base.entries() {
            new.push(e.event, &e.version, e.digest.as_deref(), e.at);
        }
    }
    for (event, version, digest) in notes {
        new.push(*event, version, digest.as_deref(), now);
    }
    let next = have.last().map_or(1, |(n, _)| n + 1);
    let mut add: Vec<(String, String)> = new
        .entries()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut one = History::default();
            one.push(e.event, &e.version, e.digest.as_deref(), e.at);
            (format!("{RECORD}{}", next + i as u64), one.render())
        })
        .collect();
    // The newest KEPT_TAGS of old and new together.
    let total = have.len() + add.len();
    let drop = total.saturating_sub(KEPT_TAGS);
    let remove: Vec<String> = have
        .iter()
        .take(drop)
        .map(|(n, _)| format!("{RECORD}{n}"))
        .collect();
    add.drain(..drop.saturating_sub(have.len()));
    (add, remove)
}

/// Reads the record: the application's tags, else the older tags of the application
/// versions `labels` (those of the environments there are).
pub async fn read(aws: &Aws, labels: &[String]) -> Result<History> {
    let Some(arn) = aws.application_arn().await? else {
        return Ok(History::default());
    };
    if let Some(h) = from_tags(&aws.tags(&arn).await?) {
        return Ok(h);
    }
    let mut wanted: Vec<String> = labels.to_vec();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(History::default());
    }
    let mut versions = Vec::new();
    for (label, arn, _, _) in aws.versions(&wanted).await? {
        versions.push((label, aws.tags(&arn).await?));
    }
    Ok(converted(&versions))
}

/// Adds `notes` to the record (`base`: the record as observed, written whole where the
/// application has only the older tags).
pub async fn append(aws: &Aws, base: &History, notes: &[Note], now: i64) -> Result<()> {
    let arn = aws.application_arn().await?.ok_or_else(|| {
        anyhow::anyhow!(
            "there is no application {} to keep the deploy record on",
            aws.app
        )
    })?;
    let (add, remove) = appended(&aws.tags(&arn).await?, base, notes, now);
    aws.update_tags(&arn, &add, &remove).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_record_is_one_tag_an_entry_read_in_order_through_the_one_parser() {
        let t = tags(&[
            ("pymdeploy:record:10", "live@v2@20"),
            ("pymdeploy:record:9", "accepted@v2@10@sha256:aa"),
            ("pymdeploy:version", "0.9"),
        ]);
        let h = from_tags(&t).unwrap();
        assert!(h.accepted("v2", "sha256:aa"));
        assert_eq!(h.render(), "accepted@v2@10@sha256:aa live@v2@20");
        assert_eq!(from_tags(&tags(&[("other", "x")])), None);
        // Appending numbers on; each value one entry.
        let (add, remove) = appended(
            &t,
            &History::default(),
            &[(Event::RolledBack, "v2".into(), None)],
            30,
        );
        assert_eq!(add, tags(&[("pymdeploy:record:11", "rolled-back@v2@30")]));
        assert!(remove.is_empty());
    }

    #[test]
    fn the_older_tags_are_converted_and_written_whole_on_the_first_write() {
        let old = converted(&[
            (
                "v1".into(),
                tags(&[("pym:live-at", "30000"), ("pym:rolled-back-at", "0")]),
            ),
            (
                "v2-dirty.77".into(),
                tags(&[("pym:live-at", "20000"), ("pym:rolled-back-at", "40000")]),
            ),
        ]);
        assert_eq!(
            old.render(),
            "live@v2-dirty@20 live@v1@30 rolled-back@v2-dirty@40"
        );
        let (add, _) = appended(
            &[],
            &old,
            &[(Event::Live, "v3".into(), Some("sha256:bb".into()))],
            50,
        );
        assert_eq!(add.len(), 4);
        assert_eq!(
            add[0],
            (
                "pymdeploy:record:1".to_string(),
                "live@v2-dirty@20".to_string()
            )
        );
        assert_eq!(add[3].1, "live@v3@50@sha256:bb");
    }

    #[test]
    fn only_the_newest_entries_are_kept_as_tags() {
        let t: Vec<(String, String)> = (1..=KEPT_TAGS as u64)
            .map(|n| (format!("{RECORD}{n}"), format!("live@v{n}@{n}")))
            .collect();
        let (add, remove) = appended(
            &t,
            &History::default(),
            &[
                (Event::Live, "w".into(), None),
                (Event::Live, "x".into(), None),
            ],
            99,
        );
        assert_eq!(remove, ["pymdeploy:record:1", "pymdeploy:record:2"]);
        assert_eq!(add.len(), 2);
        assert_eq!(add[1].0, format!("{RECORD}{}", KEPT_TAGS + 2));
    }
}

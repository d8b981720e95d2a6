//! The deploy record (`targets::history`) on the engine, so every machine deploying to
//! it reads the same one: never-started containers of the empty lock image,
//! `pym-<name>-record-<seq>`, whose label holds the record. A write creates the next
//! sequence number (the engine refuses a second container of one name, so of two
//! writers one wins and the other reads again) and then removes the older ones; a reader
//! takes the highest. Killed between the two, both remain and the highest still wins.

use anyhow::{Result, bail};
use bollard::Docker;

use super::names::record_name;
use crate::config::Config;
use crate::ops::{
    self,
    service::{LABEL_ENV, LABEL_NAME},
};
use crate::targets::history::History;

const LABEL_RECORD: &str = "org.pymacaron.record";
const LABEL_SEQ: &str = "org.pymacaron.record-seq";
/// The `org.pymacaron.env` of record containers: `status` and the lists of live
/// versions pass them over.
pub(super) const RECORD_ENV: &str = "record";
/// The image they are created from: the engine lock's, with no files.
pub(super) const EMPTY_IMAGE: (&str, &str) = ("pym-lock", "1");

/// The record's containers (id, sequence number, text), highest first.
async fn all(docker: &Docker, service: &str) -> Result<Vec<(String, u64, String)>> {
    let list = ops::docker::list(
        docker,
        &[
            format!("{LABEL_NAME}={service}"),
            format!("{LABEL_ENV}={RECORD_ENV}"),
        ],
    )
    .await?;
    let mut out: Vec<(String, u64, String)> = list
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            Some((
                c.id?,
                labels.get(LABEL_SEQ)?.parse().ok()?,
                labels.get(LABEL_RECORD).cloned().unwrap_or_default(),
            ))
        })
        .collect();
    out.sort_by_key(|(_, seq, _)| std::cmp::Reverse(*seq));
    Ok(out)
}

/// The service's deploy record (empty when none was written).
pub(super) async fn read(docker: &Docker, service: &str) -> Result<History> {
    Ok(all(docker, service)
        .await?
        .first()
        .map(|(_, _, text)| History::parse(text))
        .unwrap_or_default())
}

/// Changes the record with `change`, read afresh at each try.
pub(super) async fn update(
    docker: &Docker,
    config: &Config,
    change: impl Fn(&mut History),
) -> Result<()> {
    ops::docker::empty_image(docker, EMPTY_IMAGE.0, EMPTY_IMAGE.1).await?;
    let image = format!("{}:{}", EMPTY_IMAGE.0, EMPTY_IMAGE.1);
    for _ in 0..5 {
        let before = all(docker, &config.name).await?;
        let seq = before.first().map_or(1, |(_, s, _)| s + 1);
        let mut history = before
            .first()
            .map(|(_, _, text)| History::parse(text))
            .unwrap_or_default();
        change(&mut history);
        let mut labels = crate::ops::service::owned_labels(config, RECORD_ENV);
        labels.insert(LABEL_SEQ.to_string(), seq.to_string());
        labels.insert(LABEL_RECORD.to_string(), history.render());
        if ops::docker::create_named(docker, &record_name(config, seq), &image, labels).await? {
            for (id, _, _) in before {
                ops::docker::remove(docker, &id).await?;
            }
            return Ok(());
        }
    }
    bail!(
        "cannot write the deploy record of {} on the engine: another run kept writing it",
        config.name
    )
}

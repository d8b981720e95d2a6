//! The deploy record (`targets::history`) on the service: one annotation, read here
//! (with what an older pymdeploy wrote instead) and written in the updates that move
//! traffic, or alone (`Gcp::append`).

use std::collections::HashMap;

use anyhow::{Result, bail};
use google_cloud_gax::error::rpc::Code;
use google_cloud_lro::Poller;

use super::gcp::{Gcp, gcp_error};
use super::observe::Rev;
use crate::error::hinted;
use crate::targets::history::{Event, History};

/// The service annotation that holds the deploy record (`History::render`).
pub(super) const RECORD: &str = "pymdeploy.dev/record";
/// What an older pymdeploy recorded instead, read once and replaced by `RECORD`: the
/// revisions live, oldest first; those rolled back from.
pub(super) const LIVE_HISTORY: &str = "pymdeploy.dev/live-history";
pub(super) const ROLLED_BACK: &str = "pymdeploy.dev/rolled-back";

/// An entry to add to the deploy record: what happened, to which version, on which
/// image's digest.
pub type Note = (Event, String, Option<String>);

fn split_list(v: Option<&String>) -> Vec<String> {
    v.map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// A service's deploy record: its `pymdeploy.dev/record`; or, for a service only an
/// older pymdeploy deployed, its revision-name annotations read through the revisions'
/// labels (revisions since deleted are passed over).
pub fn record_of(annotations: &HashMap<String, String>, revisions: &[Rev]) -> History {
    if let Some(text) = annotations.get(RECORD) {
        return History::parse(text);
    }
    let mut h = History::default();
    let rev = |n: &str| revisions.iter().find(|r| r.name == n);
    for name in split_list(annotations.get(LIVE_HISTORY)) {
        if let Some(r) = rev(&name) {
            h.push(Event::Live, r.key(), None, r.created);
        }
    }
    // The old list held the revisions rolled back from and not made live since.
    for name in split_list(annotations.get(ROLLED_BACK)) {
        if let Some(r) = rev(&name) {
            h.push(Event::RolledBack, r.key(), None, r.created);
        }
    }
    h
}

/// The annotations with `notes` added to the deploy record (read from them, else
/// `base`), the older annotations replaced by it.
pub(super) fn recorded(
    annotations: &HashMap<String, String>,
    base: &History,
    notes: &[Note],
    now: i64,
) -> HashMap<String, String> {
    let mut h = annotations
        .get(RECORD)
        .map(|t| History::parse(t))
        .unwrap_or_else(|| base.clone());
    for (event, version, digest) in notes {
        h.push(*event, version, digest.as_deref(), now);
    }
    let mut out = annotations.clone();
    out.remove(LIVE_HISTORY);
    out.remove(ROLLED_BACK);
    out.insert(RECORD.into(), h.render());
    out
}

impl Gcp {
    /// Adds `notes` to the deploy record by an update of the annotations alone (no
    /// revision is made), carrying the etag read; a service changed meanwhile is read
    /// again and the update retried.
    pub(super) async fn append(&self, notes: &[Note], now: i64) -> Result<()> {
        for _ in 0..5 {
            let (service, seen) = self.observe().await?;
            let service = service.ok_or_else(|| {
                hinted(
                    format!("the Cloud Run service {} does not exist", self.id),
                    "deploy first: `cargo xtask deploy`",
                )
            })?;
            let annotations = recorded(&service.annotations, &seen.history, notes, now);
            let mask = google_cloud_wkt::FieldMask::default().set_paths(["annotations"]);
            let done = self
                .services
                .update_service()
                .set_service(service.set_annotations(annotations))
                .set_update_mask(mask)
                .poller()
                .until_done()
                .await;
            match done {
                Ok(_) => return Ok(()),
                Err(e) if e.status().is_some_and(|s| s.code == Code::Aborted) => continue,
                Err(e) => return Err(gcp_error("services.update", &self.name(), e)),
            }
        }
        bail!(
            "cannot write the deploy record of {}: the service kept changing while it was written",
            self.id
        )
    }
}

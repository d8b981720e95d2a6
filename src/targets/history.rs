//! What was live when: the one deploy record every target keeps on its own side (a
//! container label on the engine, an annotation, a tag), in one format read by one
//! parser, and the decisions taken from it: which version passed staging acceptance,
//! where a rollback goes, and what cleanup may remove.
//!
//! A record is a list of entries, oldest first, each one word:
//! `<event>@<version>@<unix seconds>[@<digest>]`, words separated by spaces. Only
//! letters, digits and `@ : - . _` appear, so the same text fits a Docker label, a
//! Kubernetes or Cloud Run annotation and an AWS tag value. The module does no I/O.

use anyhow::Result;

use crate::error::hinted;

/// What happened to a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Its staging acceptance tests passed, on the image of the entry's digest.
    Accepted,
    /// It became live (a promote, or a rollback to it).
    Live,
    /// A rollback went away from it (a canary aborted, a bake breached, or `rollback`).
    RolledBack,
    /// It passed its bake: all of live for `bake_seconds`, judged, with the previous
    /// version still running. A bare rollback goes only to such a version when the
    /// service bakes (`rollout.bake_seconds`).
    KnownGood,
}

impl Event {
    fn word(self) -> &'static str {
        match self {
            Event::Accepted => "accepted",
            Event::Live => "live",
            Event::RolledBack => "rolled-back",
            Event::KnownGood => "known-good",
        }
    }

    /// How a line for people says it happened to `version`.
    pub fn say(self, version: &str) -> String {
        match self {
            Event::Accepted => format!("{version} accepted"),
            Event::Live => format!("{version} live"),
            Event::RolledBack => format!("{version} rolled back from"),
            Event::KnownGood => format!("{version} known-good"),
        }
    }

    fn parse(word: &str) -> Option<Event> {
        [
            Event::Accepted,
            Event::Live,
            Event::RolledBack,
            Event::KnownGood,
        ]
        .into_iter()
        .find(|e| e.word() == word)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub event: Event,
    pub version: String,
    pub at: i64,
    /// The image's digest (`sha256:...`), where the event is about one image.
    pub digest: Option<String>,
}

/// The entries kept: older ones are dropped, so a record stays small enough for a label
/// or a tag. 64 entries hold some twenty deploys.
const KEPT: usize = 64;

/// A target's deploy record, oldest entry first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    entries: Vec<Entry>,
}

impl History {
    /// Reads a record; words it does not know (a newer pymdeploy's) are passed over.
    pub fn parse(text: &str) -> History {
        let entries = text
            .split_whitespace()
            .filter_map(|word| {
                let mut parts = word.split('@');
                let event = Event::parse(parts.next()?)?;
                let version = parts.next().filter(|v| !v.is_empty())?.to_string();
                let at = parts.next()?.parse().ok()?;
                let digest = parts.next().map(str::to_string);
                Some(Entry {
                    event,
                    version,
                    at,
                    digest,
                })
            })
            .collect();
        History { entries }
    }

    /// The record as text, its newest `KEPT` entries.
    pub fn render(&self) -> String {
        let skip = self.entries.len().saturating_sub(KEPT);
        self.entries[skip..]
            .iter()
            .map(|e| {
                let digest = e
                    .digest
                    .as_deref()
                    .map(|d| format!("@{d}"))
                    .unwrap_or_default();
                format!("{}@{}@{}{digest}", e.event.word(), e.version, e.at)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn push(&mut self, event: Event, version: &str, digest: Option<&str>, at: i64) {
        self.entries.push(Entry {
            event,
            version: version.to_string(),
            at,
            digest: digest.map(str::to_string),
        });
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `version` passed staging acceptance on the image `digest`.
    pub fn accepted(&self, version: &str, digest: &str) -> bool {
        self.entries.iter().any(|e| {
            e.event == Event::Accepted
                && e.version == version
                && e.digest.as_deref() == Some(digest)
        })
    }

    /// When `version` last became live.
    pub fn live_since(&self, version: &str) -> Option<i64> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.event == Event::Live && e.version == version)
            .map(|e| e.at)
    }

    /// Versions in the order they were last live, the most recent first.
    pub fn live_order(&self) -> Vec<&str> {
        let mut order: Vec<&str> = Vec::new();
        for e in self.entries.iter().rev().filter(|e| e.event == Event::Live) {
            if !order.contains(&e.version.as_str()) {
                order.push(&e.version);
            }
        }
        order
    }

    /// When `version` last passed its bake, unless a rollback went away from it since.
    pub fn known_good_since(&self, version: &str) -> Option<i64> {
        let last_good = self
            .entries
            .iter()
            .rposition(|e| e.event == Event::KnownGood && e.version == version)?;
        let rolled_back = self
            .entries
            .iter()
            .rposition(|e| e.event == Event::RolledBack && e.version == version);
        match rolled_back {
            Some(rb) if rb > last_good => None,
            _ => Some(self.entries[last_good].at),
        }
    }

    /// Whether a rollback went away from `version` after it was last made live.
    pub fn rolled_back_from(&self, version: &str) -> bool {
        let last = |event: Event| {
            self.entries
                .iter()
                .rposition(|e| e.event == event && e.version == version)
        };
        match (last(Event::RolledBack), last(Event::Live)) {
            (Some(rb), Some(live)) => rb > live,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// The previous versions a target still has (`available`, newest first, as the target
/// lists them), in the order rollback walks them: the order they were last live, those
/// the record does not know after them in the target's order. `current` is left out.
pub fn previous<'a>(
    history: &History,
    current: Option<&str>,
    available: &'a [String],
) -> Vec<&'a str> {
    let order = history.live_order();
    let rank = |v: &str| order.iter().position(|o| *o == v).unwrap_or(usize::MAX);
    let mut previous: Vec<(usize, usize, &str)> = available
        .iter()
        .enumerate()
        .filter(|(_, v)| Some(v.as_str()) != current)
        .map(|(i, v)| (rank(v), i, v.as_str()))
        .collect();
    previous.sort();
    previous.into_iter().map(|(_, _, v)| v).collect()
}

/// Where a rollback goes: `to` when named (it must be a previous version the target
/// still has), else the most recent previous version that was not rolled back from; where
/// the service bakes (`known_good`), the most recent that passed its bake.
pub fn rollback_to(
    history: &History,
    current: Option<&str>,
    available: &[String],
    to: Option<&str>,
    known_good: bool,
) -> Result<String> {
    let previous = previous(history, current, available);
    if let Some(to) = to {
        if Some(to) == current {
            return Err(hinted(
                format!("{to} is already live"),
                "`cargo xtask status` shows what runs where",
            ));
        }
        return match previous.contains(&to) {
            true => Ok(to.to_string()),
            false => Err(hinted(
                format!("there is no previous version {to} to roll back to"),
                format!(
                    "the previous versions kept are: {}",
                    if previous.is_empty() {
                        "none".to_string()
                    } else {
                        previous.join(", ")
                    }
                ),
            )),
        };
    }
    if known_good {
        if let Some(v) = previous
            .iter()
            .find(|v| !history.rolled_back_from(v) && history.known_good_since(v).is_some())
        {
            return Ok(v.to_string());
        }
        if !previous.is_empty() {
            return Err(hinted(
                format!(
                    "no previous version kept passed its bake: {}",
                    previous.join(", ")
                ),
                "a bare rollback goes only to a known-good version (`rollout.bake_seconds`); name one with `rollback --to VERSION` if you are sure",
            ));
        }
    }
    if let Some(v) = previous.iter().find(|v| !history.rolled_back_from(v)) {
        return Ok(v.to_string());
    }
    match previous.is_empty() {
        true => Err(hinted(
            "there is no previous live version to roll back to",
            "rollback needs a version that was live before; `keep_previous` sets how many are kept",
        )),
        false => Err(hinted(
            format!(
                "every previous version kept was rolled back from: {}",
                previous.join(", ")
            ),
            "a rollback never goes back to a version it left; name one with `rollback --to VERSION` if you are sure",
        )),
    }
}

/// Why a bare rollback goes to `version`, for the line that says where it goes.
pub fn why_rollback_to(history: &History, version: &str) -> String {
    match history.known_good_since(version) {
        Some(at) => format!(
            "the last known-good version (passed its bake at {})",
            crate::version::fmt_utc(at)
        ),
        None => "the version live before, never rolled back from".into(),
    }
}

/// Which previous versions cleanup removes: those beyond the `keep_previous` a rollback
/// can use, counting first the ones it would go to (never rolled back from, known-good
/// before the others), most recently live first; so what is kept is what rollback
/// needs, and the last `keep_previous` known-good versions are never removed.
pub fn beyond_kept<'a>(
    history: &History,
    current: Option<&str>,
    available: &'a [String],
    keep_previous: usize,
) -> Vec<&'a str> {
    let mut previous = previous(history, current, available);
    // A stable sort: the live order stays within each group.
    previous.sort_by_key(|v| {
        (
            history.rolled_back_from(v),
            history.known_good_since(v).is_none(),
        )
    });
    previous.into_iter().skip(keep_previous).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(events: &[(Event, &str)]) -> History {
        let mut h = History::default();
        for (i, (e, v)) in events.iter().enumerate() {
            h.push(*e, v, None, i as i64);
        }
        h
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_record_reads_back_as_it_was_written_and_skips_words_it_does_not_know() {
        let mut h = History::default();
        h.push(
            Event::Accepted,
            "261202-1620-12-abcdef",
            Some("sha256:0123"),
            1_764_690_000,
        );
        h.push(Event::Live, "261202-1620-12-abcdef", None, 1_764_690_060);
        h.push(
            Event::RolledBack,
            "261202-1620-12-abcdef",
            None,
            1_764_690_120,
        );
        let text = h.render();
        assert_eq!(
            text,
            "accepted@261202-1620-12-abcdef@1764690000@sha256:0123 live@261202-1620-12-abcdef@1764690060 rolled-back@261202-1620-12-abcdef@1764690120"
        );
        assert_eq!(History::parse(&text), h);
        assert_eq!(
            History::parse(&format!("canary@v9@1 {text} live@@3 live@v2@x")),
            h,
            "unknown events and malformed words are passed over"
        );
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || " @:-._".contains(c)),
            "fits a tag value: {text}"
        );
    }

    #[test]
    fn a_record_keeps_its_newest_entries() {
        let mut h = History::default();
        for i in 0..(KEPT as i64 + 10) {
            h.push(Event::Live, &format!("v{i}"), None, i);
        }
        let back = History::parse(&h.render());
        assert_eq!(back.entries().len(), KEPT);
        assert_eq!(back.entries()[0].version, "v10");
    }

    #[test]
    fn acceptance_is_of_one_image() {
        let mut h = History::default();
        h.push(Event::Accepted, "v1", Some("sha256:aa"), 1);
        assert!(h.accepted("v1", "sha256:aa"));
        assert!(
            !h.accepted("v1", "sha256:bb"),
            "the same version built again is another image"
        );
        assert!(!h.accepted("v2", "sha256:aa"));
    }

    #[test]
    fn rollback_walks_back_and_never_returns_to_a_version_it_left() {
        use Event::*;
        // Nothing before: refused.
        let h = history(&[(Live, "v0")]);
        assert!(rollback_to(&h, Some("v0"), &strings(&["v0"]), None, false).is_err());
        // V0 → C1: back to V0.
        let h = history(&[(Live, "v0"), (Live, "c1")]);
        assert_eq!(
            rollback_to(&h, Some("c1"), &strings(&["c1", "v0"]), None, false).unwrap(),
            "v0"
        );
        // V0 → C1 → rollback (V0) → C2: back to V0 (live before C2), not C1 (newer, but
        // rolled back from).
        let h = history(&[
            (Live, "v0"),
            (Live, "c1"),
            (RolledBack, "c1"),
            (Live, "v0"),
            (Live, "c2"),
        ]);
        assert_eq!(
            rollback_to(&h, Some("c2"), &strings(&["c2", "c1", "v0"]), None, false).unwrap(),
            "v0"
        );
        // C2 → rollback (V0) → rollback: never C2 again, nor C1: refused, naming --to.
        let h = history(&[
            (Live, "v0"),
            (Live, "c1"),
            (Live, "c2"),
            (RolledBack, "c2"),
            (Live, "v0"),
        ]);
        assert_eq!(
            rollback_to(&h, Some("v0"), &strings(&["c2", "c1", "v0"]), None, false).unwrap(),
            "c1",
            "further back: C1 was never rolled back from"
        );
        let h = history(&[(Live, "c1"), (Live, "c2"), (RolledBack, "c2"), (Live, "c1")]);
        let e = rollback_to(&h, Some("c1"), &strings(&["c2", "c1"]), None, false).unwrap_err();
        assert!(
            format!("{e}").contains("rolled back from: c2")
                && crate::error::hint_of(&e).unwrap().contains("--to"),
            "{e}"
        );
        // Named with --to, it may.
        assert_eq!(
            rollback_to(&h, Some("c1"), &strings(&["c2", "c1"]), Some("c2"), false).unwrap(),
            "c2"
        );
        assert!(
            rollback_to(&h, Some("c1"), &strings(&["c2", "c1"]), Some("c1"), false).is_err(),
            "already live"
        );
        assert!(
            rollback_to(&h, Some("c1"), &strings(&["c2", "c1"]), Some("c9"), false).is_err(),
            "not kept"
        );
        // A version promoted again after a rollback is eligible again.
        let h = history(&[
            (Live, "c1"),
            (Live, "c2"),
            (RolledBack, "c2"),
            (Live, "c1"),
            (Live, "c2"),
            (Live, "c3"),
        ]);
        assert_eq!(
            rollback_to(&h, Some("c3"), &strings(&["c3", "c2", "c1"]), None, false).unwrap(),
            "c2"
        );
    }

    #[test]
    fn versions_the_record_does_not_know_come_last_in_the_targets_order() {
        let h = history(&[(Event::Live, "v0"), (Event::Live, "c3")]);
        // A target's own order is newest first: c2, c1 are unknown to the record.
        assert_eq!(
            previous(&h, Some("c3"), &strings(&["c3", "c2", "c1", "v0"])),
            ["v0", "c2", "c1"]
        );
        assert_eq!(
            rollback_to(
                &History::default(),
                Some("c3"),
                &strings(&["c3", "c2", "c1"]),
                None,
                false
            )
            .unwrap(),
            "c2",
            "no record: the newest previous"
        );
    }

    #[test]
    fn cleanup_keeps_what_rollback_needs() {
        use Event::*;
        let h = history(&[
            (Live, "v0"),
            (Live, "c1"),
            (Live, "c2"),
            (RolledBack, "c2"),
            (Live, "v0"),
            (Live, "c3"),
        ]);
        let all = strings(&["c3", "c2", "c1", "v0"]);
        // Rollback from c3 goes to v0 (c2 was rolled back from): keep_previous 1 keeps v0,
        // though c2 was live more recently.
        assert_eq!(beyond_kept(&h, Some("c3"), &all, 0), ["v0", "c1", "c2"]);
        assert_eq!(beyond_kept(&h, Some("c3"), &all, 1), ["c1", "c2"]);
        assert_eq!(beyond_kept(&h, Some("c3"), &all, 2), ["c2"]);
        assert!(beyond_kept(&h, Some("c3"), &all, 3).is_empty());
    }

    #[test]
    fn where_the_service_bakes_rollback_goes_to_the_last_known_good_version() {
        use Event::*;
        // v1 passed its bake, v2 was live but never passed one, v3 is live now.
        let h = history(&[(Live, "v1"), (KnownGood, "v1"), (Live, "v2"), (Live, "v3")]);
        let all = strings(&["v3", "v2", "v1"]);
        assert_eq!(
            rollback_to(&h, Some("v3"), &all, None, false).unwrap(),
            "v2"
        );
        assert_eq!(rollback_to(&h, Some("v3"), &all, None, true).unwrap(), "v1");
        assert!(why_rollback_to(&h, "v1").starts_with("the last known-good version"));
        // Named, a version that never passed a bake may be gone back to.
        assert_eq!(
            rollback_to(&h, Some("v3"), &all, Some("v2"), true).unwrap(),
            "v2"
        );
        // None passed one: refused, naming --to.
        let h = history(&[(Live, "v2"), (Live, "v3")]);
        let e = rollback_to(&h, Some("v3"), &strings(&["v3", "v2"]), None, true).unwrap_err();
        assert!(
            format!("{e}").contains("passed its bake")
                && crate::error::hint_of(&e).unwrap().contains("--to"),
            "{e}"
        );
        // A known-good version a rollback later left is known-good no more.
        let h = history(&[
            (Live, "v1"),
            (KnownGood, "v1"),
            (Live, "v2"),
            (KnownGood, "v2"),
            (RolledBack, "v2"),
            (Live, "v1"),
            (Live, "v3"),
        ]);
        assert_eq!(h.known_good_since("v2"), None);
        assert_eq!(
            rollback_to(&h, Some("v3"), &strings(&["v3", "v2", "v1"]), None, true).unwrap(),
            "v1"
        );
        // Cleanup keeps the known-good ones first.
        let h = history(&[
            (Live, "v1"),
            (KnownGood, "v1"),
            (Live, "v2"),
            (Live, "v3"),
            (Live, "v4"),
        ]);
        assert_eq!(
            beyond_kept(&h, Some("v4"), &strings(&["v4", "v3", "v2", "v1"]), 1),
            ["v3", "v2"]
        );
    }
}

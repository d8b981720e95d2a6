//! The names of what the target makes, and the limits Cloud Run puts on them: checked
//! before any call.

use super::observe::Rev;
use super::{TAG_NEXT, TAG_STAGING};
use crate::config::{Config, PymEnv};

/// Cloud Run: a tag and its service name make one DNS label of the tag URL.
const TAG_AND_SERVICE_MAX: usize = 46;
const REVISION_MAX: usize = 63;

/// The Cloud Run service: `gcp_service`, else `name`.
pub fn service_id(c: &Config) -> String {
    c.gcp_service.clone().unwrap_or_else(|| c.name.clone())
}

/// Why Cloud Run would refuse this service name, if it would.
pub(super) fn bad_service_id(id: &str) -> Option<String> {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if id.is_empty() || id.len() > 49 {
        return Some(format!(
            "it has {} characters (Cloud Run takes 1 to 49)",
            id.len()
        ));
    }
    if !ok_chars || !id.starts_with(|c: char| c.is_ascii_lowercase()) || id.ends_with('-') {
        return Some("Cloud Run takes lowercase letters, digits and dashes, starting with a letter and not ending with a dash".into());
    }
    let longest_tag = TAG_STAGING.len().max(TAG_NEXT.len());
    if id.len() + longest_tag > TAG_AND_SERVICE_MAX {
        return Some(format!(
            "with the tag `{TAG_STAGING}` it has {} characters, and Cloud Run takes at most {TAG_AND_SERVICE_MAX} for a tag and its service together",
            id.len() + longest_tag
        ));
    }
    None
}

/// The stem of a version's revisions: `<service>-<version>`, the version shortened to
/// `<count>-<sha6>` where the whole would not fit Cloud Run's 63 characters.
fn revision_stem(id: &str, version: &str) -> String {
    let full = format!("{id}-{version}");
    if full.len() + 4 <= REVISION_MAX {
        return full;
    }
    let short: Vec<&str> = version.split('-').skip(2).collect();
    format!("{id}-{}", short.join("-"))
}

/// The first free revision name of a version in an environment: `<stem>-s1`, `-s2` for
/// staging, `-l1`... for live.
pub(super) fn next_revision_name(id: &str, version: &str, env: PymEnv, taken: &[Rev]) -> String {
    let prefix = format!(
        "{}-{}",
        revision_stem(id, version),
        if env == PymEnv::Live { "l" } else { "s" }
    );
    (1..)
        .map(|n| format!("{prefix}{n}"))
        .find(|n| !taken.iter().any(|r| &r.name == n))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "261128-1200-10-aaaaaa";

    #[test]
    fn names_are_refused_before_any_call_as_cloud_run_would_refuse_them() {
        assert_eq!(bad_service_id("hello"), None);
        assert!(bad_service_id("Hello").is_some());
        assert!(bad_service_id("hello-").is_some());
        assert!(bad_service_id("1hello").is_some());
        let long = "a".repeat(40);
        assert!(
            bad_service_id(&long).unwrap().contains("at most 46"),
            "{:?}",
            bad_service_id(&long)
        );
        assert_eq!(bad_service_id(&"a".repeat(39)), None);
        // Revision names stay within 63 characters.
        let stem = revision_stem(&"a".repeat(39), V1);
        assert_eq!(stem, format!("{}-10-aaaaaa", "a".repeat(39)));
        assert_eq!(revision_stem("hello", V1), format!("hello-{V1}"));
    }
}

//! Versions: `YYMMDD-HHMM-<commit count>-<sha6>`, as PyMacaron made them.
//!
//! The date and time are the commit's (UTC), not the clock's, so the same commit always
//! has the same version and an image built for it can be found again and reused. A dirty
//! tree is refused unless the caller allows it; the version then ends in `-dirty` and
//! such an image is never reused.

use std::fmt;

/// What a service says at `version_path` (the service contract): which version runs,
/// under which `PYM_ENV`.
#[derive(Debug, PartialEq, Eq)]
pub struct Served {
    pub version: String,
    pub pym_env: String,
}

impl Served {
    /// Reads a `version_path` answer; `None` unless it is a JSON object with the strings
    /// `version` and `pym_env` (other fields are the service's own business).
    pub fn parse(body: &str) -> Option<Served> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        Some(Served {
            version: v["version"].as_str()?.to_string(),
            pym_env: v["pym_env"].as_str()?.to_string(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub stamp: String,
    pub commit_count: u64,
    pub sha: String,
    pub dirty: bool,
}

impl Version {
    /// The version of a commit: its time (UTC seconds), how many commits lead to it, its
    /// sha, and whether the tree has uncommitted changes.
    pub fn of_commit(time: i64, commit_count: u64, sha: &str, dirty: bool) -> Version {
        Version {
            stamp: stamp(time),
            commit_count,
            sha: sha.to_string(),
            dirty,
        }
    }

    pub fn sha6(&self) -> &str {
        &self.sha[..self.sha.len().min(6)]
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.stamp, self.commit_count, self.sha6())?;
        if self.dirty {
            f.write_str("-dirty")?;
        }
        Ok(())
    }
}

/// `YYMMDD-HHMM` in UTC for a Unix time.
fn stamp(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:02}{:02}{:02}-{:02}{:02}",
        y.rem_euclid(100),
        m,
        d,
        secs / 3600,
        (secs % 3600) / 60
    )
}

/// `YYYY-MM-DD HH:MM:SSZ` for a Unix time, for status and history tables.
pub fn fmt_utc(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    format!(
        "{y}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_reads_the_contract_and_ignores_other_fields() {
        assert_eq!(
            Served::parse(r#"{"name":"a","version":"v1","pym_env":"live","extra":[1]}"#),
            Some(Served {
                version: "v1".into(),
                pym_env: "live".into()
            })
        );
        assert_eq!(
            Served::parse(r#"{"version":"v1"}"#),
            None,
            "pym_env is part of the contract"
        );
        assert_eq!(Served::parse(r#"{"version":1,"pym_env":"live"}"#), None);
        assert_eq!(Served::parse("v1"), None);
    }

    #[test]
    fn format_matches_pymacaron() {
        // 2026-11-27 16:13:31 UTC
        assert_eq!(
            Version::of_commit(1_795_796_011, 42, "0123456789abcdef", false).to_string(),
            "261127-1613-42-012345"
        );
        assert_eq!(
            Version::of_commit(1_795_796_011, 42, "0123456789abcdef", true).to_string(),
            "261127-1613-42-012345-dirty"
        );
    }

    #[test]
    fn utc_times_read_as_dates() {
        assert_eq!(fmt_utc(1_795_796_011), "2026-11-27 16:13:31Z");
    }

    #[test]
    fn calendar_edges() {
        assert_eq!(stamp(0), "700101-0000");
        assert_eq!(stamp(951_782_400), "000229-0000"); // 2000-02-29, a leap day
        assert_eq!(stamp(1_735_689_599), "241231-2359");
    }
}

//! Times as the cloud APIs write them: RFC 3339 in UTC (with milliseconds, or whole
//! seconds), from and to milliseconds since the Unix epoch.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-27T19:00:00.123Z` (AWS's times, protobuf JSON `Timestamp`s).
pub fn rfc3339_millis(ms: i64) -> String {
    format!("{}.{:03}Z", to_seconds(ms), ms.rem_euclid(1000))
}

/// `2026-11-28T18:25:00Z` (Kubernetes' `metav1.Time`: whole seconds).
pub fn rfc3339(ms: i64) -> String {
    format!("{}Z", to_seconds(ms))
}

/// `2026-11-27T19:00:00`: the date and the time of day, in UTC, to the second.
fn to_seconds(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let s = rem / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Reads a date `YYYY-MM-DD` and a time of day `HH:MM:SS[.fff…]`, in UTC, into
/// milliseconds (what comes after the `T` and before the zone of an RFC 3339 time).
pub fn from_date_time(date: &str, time: &str) -> Option<i64> {
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    Some(days_from_civil(y, m, dd) * 86_400_000 + (hh * 3600 + mm * 60 + ss) * 1000 + ms)
}

// Howard Hinnant's civil calendar algorithms.

/// `(year, month, day)` of a day counted from 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_round_trip() {
        assert_eq!(
            super::rfc3339_millis(1_795_806_000_123),
            "2026-11-27T19:00:00.123Z"
        );
        assert_eq!(super::rfc3339(1_795_806_000_123), "2026-11-27T19:00:00Z");
        assert_eq!(super::rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
        for ms in [0, 1_795_806_000_123, 951_782_400_000] {
            let t = super::rfc3339_millis(ms);
            let (date, time) = t.strip_suffix('Z').unwrap().split_once('T').unwrap();
            assert_eq!(super::from_date_time(date, time), Some(ms), "{t}");
        }
        assert_eq!(
            super::from_date_time("2026-11-27", "19:00:00"),
            Some(1_795_806_000_000)
        );
        assert_eq!(super::from_date_time("2026-11-27", "19:00"), None);
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
    }
}

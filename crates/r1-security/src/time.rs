//! UTC timestamps in RFC 3339 form (the `time` crate).

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

/// `2026-11-27T19:42:20.123Z`: milliseconds, always UTC with `Z` (audit records keep one
/// fixed width).
const RFC3339_MILLIS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2026-11-27T19:42:20.123Z` for a time in milliseconds since the epoch.
pub fn rfc3339_millis(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(RFC3339_MILLIS).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 12:34:56.789 UTC (a leap day).
        assert_eq!(rfc3339_millis(951_827_696_789), "2000-02-29T12:34:56.789Z");
        assert_eq!(
            rfc3339_millis(1_798_761_600_000),
            "2027-01-01T00:00:00.000Z"
        );
        // Whole seconds keep their three digits.
        assert_eq!(rfc3339_millis(1_000), "1970-01-01T00:00:01.000Z");
    }
}

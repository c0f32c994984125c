//! Reading the hub's timestamps.

use std::time::SystemTime;

use chrono::{DateTime, NaiveDateTime, Utc};

/// Parses an ISO 8601 time as the hub writes it: RFC 3339 (`2015-07-28T16:24:48.789Z`, up to
/// 7 fractional digits from .NET), or without an offset, which the hub means as UTC.
pub(crate) fn parse(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc).into());
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn hub_time_formats_parse() {
        let at = |ms| Some(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(parse("2015-07-28T16:24:48.789Z"), at(1_438_100_688_789));
        assert_eq!(parse("2015-07-28T16:24:48.7890000Z"), at(1_438_100_688_789));
        assert_eq!(
            parse("2015-07-28T18:24:48.789+02:00"),
            at(1_438_100_688_789)
        );
        assert_eq!(parse("2015-07-28T16:24:48.789"), at(1_438_100_688_789));
        assert_eq!(parse("2015-07-28T16:24:48"), at(1_438_100_688_000));
        assert_eq!(parse(""), None);
        assert_eq!(parse("yesterday"), None);
    }
}

//! `Retry-After`, as the service (and any proxy in front of it) may send it.

use std::time::{Duration, SystemTime};

/// Parses a `Retry-After` header value: delay-seconds (`"120"`) or an HTTP-date
/// (`"Fri, 31 Dec 1999 23:59:59 GMT"`), relative to `now`.
///
/// A date in the past and a negative number of seconds give [`Duration::ZERO`]; anything else
/// (empty, fractional seconds, an unparsable date) gives `None`, as if the header were absent.
/// A number of seconds too large for a `u64` saturates: the policy then gives up.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if all_digits(value) {
        // Only digits, so the only possible parse error is overflow.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    if value.strip_prefix('-').is_some_and(all_digits) {
        return Some(Duration::ZERO);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1", now), Some(secs(1)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(secs(120)));
        assert_eq!(parse_retry_after("007", now), Some(secs(7)));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_negative_seconds_is_zero() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(parse_retry_after("-1", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("-99999999999999999999", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_http_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777 s after the epoch.
        let date = SystemTime::UNIX_EPOCH + secs(784_111_777);
        let value = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_retry_after(value, date - secs(30)), Some(secs(30)));
        assert_eq!(parse_retry_after(value, date), Some(Duration::ZERO));
        // Past dates wait for nothing.
        assert_eq!(
            parse_retry_after(value, date + secs(30)),
            Some(Duration::ZERO)
        );
        // The obsolete formats HTTP still allows.
        let rfc850 = "Sunday, 06-Nov-94 08:49:37 GMT";
        assert_eq!(parse_retry_after(rfc850, date - secs(5)), Some(secs(5)));
        let asctime = "Sun Nov  6 08:49:37 1994";
        assert_eq!(parse_retry_after(asctime, date - secs(5)), Some(secs(5)));
    }

    #[test]
    fn retry_after_garbage_is_none() {
        let now = SystemTime::UNIX_EPOCH;
        for value in [
            "",
            "  ",
            "abc",
            "1.5",
            "1s",
            "+5",
            "-",
            "--1",
            "- 1",
            "5 5",
            "Sun, 06 Nov",
        ] {
            assert_eq!(parse_retry_after(value, now), None, "{value:?}");
        }
    }
}

//! `IotDateTime`: the service's date-times, read leniently and written strictly.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// A date-time as IoT Hub sends it.
///
/// The service writes some date-times without a zone (`"0001-01-01T00:00:00"`) and with
/// 7-digit fractions (`"2021-05-04T10:11:12.1234567"`); both parse, read as UTC. Values are
/// always written in RFC 3339 with `Z`, because the service reads zone-less input as local time.
///
/// The year-1 value is the service's "never" (a device that never connected); see
/// [`IotDateTime::is_never`] and [`IotDateTime::get`].
///
/// ```
/// use iothub_rest_gen::IotDateTime;
///
/// let never: IotDateTime = "0001-01-01T00:00:00".parse()?;
/// assert!(never.is_never());
/// assert_eq!(never.get(), None);
///
/// let t: IotDateTime = "2021-05-04T10:11:12.1234567".parse()?;
/// assert_eq!(t.to_string(), "2021-05-04T10:11:12.123456700Z");
/// # Ok::<(), iothub_rest_gen::ParseDateTimeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IotDateTime(DateTime<Utc>);

impl IotDateTime {
    /// The service's "never": `0001-01-01T00:00:00Z`.
    pub fn never() -> Self {
        let year_one = NaiveDate::from_ymd_opt(1, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("0001-01-01T00:00:00 is representable");
        Self(year_one.and_utc())
    }

    /// Whether this is the service's year-1 "never" sentinel.
    pub fn is_never(&self) -> bool {
        self.0.year() <= 1
    }

    /// The instant, or `None` for the "never" sentinel.
    pub fn get(&self) -> Option<DateTime<Utc>> {
        (!self.is_never()).then_some(self.0)
    }

    /// The instant as it was sent, the sentinel included.
    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }
}

impl From<DateTime<Utc>> for IotDateTime {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value)
    }
}

impl From<IotDateTime> for DateTime<Utc> {
    fn from(value: IotDateTime) -> Self {
        value.0
    }
}

/// A date-time string that is neither RFC 3339 nor a zone-less ISO 8601 date-time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid date-time {value:?}: expected RFC 3339 or YYYY-MM-DDTHH:MM:SS[.fraction]")]
pub struct ParseDateTimeError {
    value: String,
}

impl FromStr for IotDateTime {
    type Err = ParseDateTimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(Self(t.with_timezone(&Utc)));
        }
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|t| Self(t.and_utc()))
            .map_err(|_| ParseDateTimeError {
                value: s.to_owned(),
            })
    }
}

impl fmt::Display for IotDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl serde::Serialize for IotDateTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IotDateTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> IotDateTime {
        s.parse().unwrap()
    }

    #[test]
    fn zone_less_and_zoned_forms_agree() {
        assert_eq!(parse("0001-01-01T00:00:00"), parse("0001-01-01T00:00:00Z"));
        assert_eq!(parse("0001-01-01T00:00:00"), IotDateTime::never());
        assert_eq!(
            parse("2021-05-04T10:11:12.1234567"),
            parse("2021-05-04T10:11:12.1234567Z")
        );
        assert_eq!(
            parse("2021-05-04T12:11:12+02:00"),
            parse("2021-05-04T10:11:12Z")
        );
    }

    #[test]
    fn seven_digit_fractions_keep_their_precision() {
        let t = parse("2021-05-04T10:11:12.1234567");
        assert_eq!(t.as_datetime().timestamp_subsec_nanos(), 123_456_700);
    }

    #[test]
    fn always_written_with_z() {
        assert_eq!(
            parse("0001-01-01T00:00:00").to_string(),
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(
            parse("2021-05-04T10:11:12").to_string(),
            "2021-05-04T10:11:12Z"
        );
        assert_eq!(
            serde_json::to_string(&parse("2021-05-04T10:11:12.5+01:00")).unwrap(),
            "\"2021-05-04T09:11:12.500Z\""
        );
    }

    #[test]
    fn year_one_means_never() {
        assert!(parse("0001-01-01T00:00:00").is_never());
        assert_eq!(parse("0001-01-01T00:00:00").get(), None);
        let t = parse("2024-01-01T00:00:00Z");
        assert!(!t.is_never());
        assert_eq!(t.get(), Some(t.as_datetime()));
    }

    #[test]
    fn garbage_is_an_error_that_names_the_value() {
        let err = "yesterday".parse::<IotDateTime>().unwrap_err();
        assert!(err.to_string().contains("\"yesterday\""));
        assert!(serde_json::from_str::<IotDateTime>("\"2021-13-01T00:00:00\"").is_err());
        assert!(serde_json::from_str::<IotDateTime>("42").is_err());
    }
}

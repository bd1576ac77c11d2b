//! Times: UTC `NaiveDateTime` in the database, RFC 3339 with `Z` in JSON.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Now, in UTC, at the microsecond precision both databases store.
pub fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    now.with_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

/// The earliest time medbook takes, in UTC: the first of the four-digit years RFC 3339 writes.
pub const EARLIEST: NaiveDateTime = utc(NaiveDate::from_ymd_opt(1, 1, 1), 0, 0, 0, 0);

/// The latest time medbook takes, in UTC: the last microsecond of the year 9999.
pub const LATEST: NaiveDateTime = utc(NaiveDate::from_ymd_opt(9999, 12, 31), 23, 59, 59, 999_999);

/// A constant time (`Option::unwrap` is `const` only from Rust 1.83, past the MSRV).
const fn utc(day: Option<NaiveDate>, h: u32, m: u32, s: u32, micros: u32) -> NaiveDateTime {
    match day {
        Some(day) => match day.and_hms_micro_opt(h, m, s, micros) {
            Some(t) => t,
            None => panic!("not a time of day"),
        },
        None => panic!("not a day"),
    }
}

/// Whether `t` lies in [`EARLIEST`]..=[`LATEST`]. Outside, the two databases part ways:
/// PostgreSQL refuses a time before 4714 BC ("timestamp out of range", which was a 500), and
/// SQLite compares the text, in which `+10000-01-01` sorts before `2030-01-01` (a filter
/// `to=+10000-01-01` answered an empty list).
pub fn in_range(t: &NaiveDateTime) -> bool {
    (EARLIEST..=LATEST).contains(t)
}

/// Parses an input time: RFC 3339 with any offset (converted to UTC), or
/// `YYYY-MM-DD HH:MM:SS` (also with `T`), taken as UTC; in either form, a time in UTC between
/// [`EARLIEST`] and [`LATEST`] (chrono's plain form also reads signed and five-digit years).
///
/// A leap second (`:60`, which both forms let through) is refused: chrono keeps it as a second
/// past `:59`, PostgreSQL folds it into the next minute and SQLite keeps its text, so the same
/// booking would be stored differently on each, and on PostgreSQL its end would no longer be
/// its start plus its length.
pub fn parse(input: &str) -> Result<NaiveDateTime, String> {
    let input = input.trim();
    parse_any_second(input).and_then(|t| {
        if t.nanosecond() >= 1_000_000_000 {
            Err(format!(
                "{input:?} is a leap second (:60), which is not accepted: use :59 or the next minute"
            ))
        } else if !in_range(&t) {
            Err(format!(
                "{input:?} is outside the years 0001 to 9999 (in UTC), the times medbook takes"
            ))
        } else {
            Ok(t)
        }
    })
}

fn parse_any_second(input: &str) -> Result<NaiveDateTime, String> {
    // Microseconds are what both databases keep; finer digits are dropped here, not there.
    let micros = |t: NaiveDateTime| {
        t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
            .unwrap_or(t)
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(input) {
        return Ok(micros(t.with_timezone(&Utc).naive_utc()));
    }
    // The plain UTC forms take a fraction as RFC 3339 does (`%.f`: none, or a dot and digits).
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(input, format) {
            return Ok(micros(t));
        }
    }
    Err(format!(
        "{input:?} is not a time: use RFC 3339 (2030-01-20T10:00:00Z) or YYYY-MM-DD HH:MM:SS (UTC)"
    ))
}

/// Formats a stored UTC time as RFC 3339 with `Z`.
pub fn format(t: &NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `#[serde(serialize_with = "crate::time::serialize")]` for `NaiveDateTime` fields.
pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(t))
}

/// The same for `Option<NaiveDateTime>`.
pub fn serialize_opt<S: Serializer>(t: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize(t, s),
        None => s.serialize_none(),
    }
}

/// An input time that deserializes from either accepted form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputTime(pub NaiveDateTime);

impl<'de> Deserialize<'de> for InputTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        parse(&raw).map(InputTime).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rfc3339_with_any_offset_and_the_plain_utc_form() {
        let expected = parse("2030-01-20T10:00:00Z").unwrap();
        assert_eq!(parse("2030-01-20T12:00:00+02:00").unwrap(), expected);
        assert_eq!(parse("2030-01-20 10:00:00").unwrap(), expected);
        assert_eq!(parse(" 2030-01-20T10:00:00 ").unwrap(), expected);
        assert_eq!(format(&expected), "2030-01-20T10:00:00Z");
    }

    #[test]
    fn keeps_microseconds_and_drops_finer_digits() {
        let t = parse("2030-01-20T10:00:00.123456789Z").unwrap();
        assert_eq!(format(&t), "2030-01-20T10:00:00.123456Z");
        // The plain UTC forms take a fraction too.
        assert_eq!(parse("2030-01-20 10:00:00.123456789").unwrap(), t);
        assert_eq!(parse("2030-01-20T10:00:00.123456").unwrap(), t);
        assert_eq!(
            format(&parse("2030-01-20 10:00:00.25").unwrap()),
            "2030-01-20T10:00:00.250Z"
        );
    }

    #[test]
    fn rejects_non_times() {
        for bad in [
            "",
            "tomorrow",
            "2030-02-30 10:00:00",
            "2030-01-20",
            "10:00",
            "2030-01-20 10:00:00.",
            "2030-01-20 10:00:00.5x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    /// Each of `inputs` is refused, with a message that contains `said`.
    fn refused(inputs: &[&str], said: &str) {
        for input in inputs {
            let err = parse(input).unwrap_err();
            assert!(err.contains(said), "{input}: {err}");
        }
    }

    #[test]
    fn rejects_leap_seconds_in_either_form() {
        refused(
            &[
                "2031-06-30T23:59:60Z",
                "2031-06-30T23:59:60.5Z",
                "2031-07-01T01:59:60+02:00",
                "2031-06-30 23:59:60",
                "2031-06-30T23:59:60",
                "2031-06-30 23:59:60.5",
            ],
            "leap second",
        );
        assert!(parse("2031-06-30T23:59:59.999999Z").is_ok());
    }

    #[test]
    fn takes_the_years_0001_to_9999_in_utc_only() {
        assert_eq!(parse("0001-01-01T00:00:00Z").unwrap(), EARLIEST);
        assert_eq!(parse("9999-12-31T23:59:59.999999Z").unwrap(), LATEST);
        assert_eq!(parse("0001-01-01T01:00:00+01:00").unwrap(), EARLIEST);
        refused(
            &[
                "0000-12-31T23:59:59.999999Z",
                // The offset moves these out of range in UTC.
                "0001-01-01T00:30:00+01:00",
                "9999-12-31T23:30:00-01:00",
                // chrono's plain form reads signed and five-digit years.
                "-5000-01-01 00:00:00",
                "+10000-01-01 00:00:00",
                "+262142-12-31T23:59:59",
                "-262143-01-01T00:00:00",
            ],
            "0001 to 9999",
        );
    }

    #[test]
    fn now_has_microsecond_precision() {
        assert_eq!(now().nanosecond() % 1_000, 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use chrono::{Duration, FixedOffset, TimeZone};
    use proptest::prelude::*;

    fn any_time() -> impl Strategy<Value = NaiveDateTime> {
        // 1970 … 9999, microsecond precision (what the databases store).
        (0i64..253_402_300_799, 0u32..1_000_000).prop_map(|(secs, micros)| {
            DateTime::from_timestamp(secs, micros * 1_000)
                .unwrap()
                .naive_utc()
        })
    }

    proptest! {
        #[test]
        fn formatted_times_parse_back_unchanged(t in any_time()) {
            prop_assert_eq!(parse(&format(&t)).unwrap(), t);
        }

        #[test]
        fn any_offset_means_the_same_instant(t in any_time(), offset_minutes in -14 * 60i32..=14 * 60) {
            let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
            let local = offset.from_utc_datetime(&t).to_rfc3339();
            prop_assert_eq!(parse(&local).unwrap(), t);
        }

        #[test]
        fn the_plain_form_is_utc(t in any_time()) {
            let whole = t - Duration::nanoseconds(i64::from(t.nanosecond()));
            prop_assert_eq!(parse(&whole.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap(), whole);
        }

        #[test]
        fn arbitrary_text_never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }
    }
}

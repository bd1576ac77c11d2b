//! Keyset pagination: `?limit=` (1–100, default 50) and an opaque `?cursor=`.

use base64::Engine;
use chrono::{DateTime, NaiveDateTime};
use serde::Serialize;

use crate::error::AppError;

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 100;

/// Position after the last item of a page: its sort time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: NaiveDateTime,
    pub id: i32,
}

impl Cursor {
    /// The opaque form sent to clients.
    pub fn encode(&self) -> String {
        let raw = format!("{}:{}", self.at.and_utc().timestamp_micros(), self.id);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads a cursor a client sent back; anything else is 400.
    pub fn decode(raw: &str) -> Result<Cursor, AppError> {
        let bad = || AppError::BadRequest("cursor is not a cursor this server issued".to_owned());
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (micros, id) = text.split_once(':').ok_or_else(bad)?;
        // No appointment medbook keeps lies outside `time::in_range`: such a cursor was made
        // by hand (that function says what its time would do to each database).
        let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?)
            .map(|at| at.naive_utc())
            .filter(crate::time::in_range)
            .ok_or_else(bad)?;
        Ok(Cursor {
            at,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// Parses `?limit=`.
pub fn parse_limit(raw: Option<&str>) -> Result<i64, AppError> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                AppError::invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
            }),
    }
}

/// One page of a list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only tells there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> Cursor) -> Page<T> {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit.max(0) as usize);
        let next_cursor = if more {
            rows.last().map(|last| cursor_of(last).encode())
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }

    /// The same page with its items converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let cursor = Cursor {
            at: crate::time::parse("2030-01-20T10:00:00.123456Z").unwrap(),
            id: 42,
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(Cursor::decode("!!!").is_err());
        assert!(Cursor::decode("bm9wZQ").is_err());
        // A cursor made by hand, whose time is outside the years medbook takes.
        for at in [crate::time::EARLIEST, crate::time::LATEST] {
            let edge = Cursor { at, id: 1 };
            assert_eq!(Cursor::decode(&edge.encode()).unwrap(), edge);
        }
        for micros in ["-200000000000000000", "300000000000000000"] {
            let raw =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{micros}:1"));
            assert!(Cursor::decode(&raw).is_err(), "{micros}");
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(parse_limit(None).unwrap(), 50);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "-1", "ten"] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_page_tells_whether_there_is_more() {
        let cursor = |n: &i32| Cursor {
            at: NaiveDateTime::default(),
            id: *n,
        };
        let page = Page::from_rows(vec![1, 2, 3], 2, cursor);
        assert_eq!(page.items, vec![1, 2]);
        assert!(page.next_cursor.is_some());
        let last = Page::from_rows(vec![1, 2], 2, cursor);
        assert!(last.next_cursor.is_none());
    }
}

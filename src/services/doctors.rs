//! The doctor directory and doctors' busy intervals (never with patient data).

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use serde::Serialize;

use super::pagination::{Cursor, Page};
use crate::db::DbConn;
use crate::domain::{Role, MAX_DURATION_MINUTES};
use crate::error::AppError;
use crate::models::rating::{self, Summary};
use crate::models::user::User;
use crate::schema::{appointments, users};

/// A doctor as the directory shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Doctor)]
pub struct DoctorView {
    pub id: i32,
    pub name: String,
    pub specialty: Option<String>,
    pub rating_avg: Option<f64>,
    pub rating_count: i64,
}

/// A busy interval of a doctor.
#[derive(Debug, Serialize, Queryable, utoipa::ToSchema)]
pub struct BusyInterval {
    #[serde(serialize_with = "crate::time::serialize")]
    pub start: NaiveDateTime,
    #[serde(serialize_with = "crate::time::serialize")]
    pub end: NaiveDateTime,
}

/// Longest range `busy` answers for in one call.
pub const MAX_BUSY_RANGE_DAYS: i64 = 62;

fn views(conn: &mut DbConn, doctors: Vec<User>) -> Result<Vec<DoctorView>, AppError> {
    let ids: Vec<i32> = doctors.iter().map(|d| d.id).collect();
    let summaries = rating::summaries(conn, &ids)?;
    Ok(doctors
        .into_iter()
        .map(|d| {
            let summary = summaries.get(&d.id).copied().unwrap_or(Summary::default());
            DoctorView {
                id: d.id,
                name: d.name,
                specialty: d.specialty,
                rating_avg: summary.avg,
                rating_count: summary.count,
            }
        })
        .collect())
}

fn active_doctors() -> users::BoxedQuery<'static, crate::db::DbBackend> {
    users::table
        .filter(users::role.eq(Role::Doctor.as_str()))
        .filter(users::is_active.eq(true))
        .into_boxed()
}

/// Active doctors, by id, with keyset pagination.
pub fn list(
    conn: &mut DbConn,
    limit: i64,
    cursor: Option<Cursor>,
) -> Result<Page<DoctorView>, AppError> {
    let mut query = active_doctors();
    if let Some(cursor) = cursor {
        query = query.filter(users::id.gt(cursor.id));
    }
    let rows: Vec<User> = query.order(users::id.asc()).limit(limit + 1).load(conn)?;
    let page = Page::from_rows(rows, limit, |d| Cursor {
        at: NaiveDateTime::default(),
        id: d.id,
    });
    let items = views(conn, page.items)?;
    Ok(Page {
        items,
        next_cursor: page.next_cursor,
    })
}

/// One active doctor (404 for anyone else).
pub fn get(conn: &mut DbConn, id: i32) -> Result<DoctorView, AppError> {
    let doctor: User = active_doctors()
        .filter(users::id.eq(id))
        .first(conn)
        .optional()?
        .ok_or(AppError::NotFound)?;
    views(conn, vec![doctor])?.pop().ok_or(AppError::NotFound)
}

/// The active appointments' intervals of an active doctor that overlap `[from, to)`.
pub fn busy(
    conn: &mut DbConn,
    id: i32,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<BusyInterval>, AppError> {
    if to <= from {
        return Err(AppError::invalid("to", "must be after from"));
    }
    if to - from > Duration::days(MAX_BUSY_RANGE_DAYS) {
        return Err(AppError::invalid(
            "to",
            format!("the range may span at most {MAX_BUSY_RANGE_DAYS} days"),
        ));
    }
    get(conn, id)?;
    let earliest = from - Duration::minutes(MAX_DURATION_MINUTES.into());
    Ok(appointments::table
        .filter(appointments::doctor_id.eq(id))
        .filter(crate::active_status!())
        .filter(appointments::scheduled_at.gt(earliest))
        .filter(appointments::scheduled_at.lt(to))
        .filter(appointments::ends_at.gt(from))
        .order(appointments::scheduled_at.asc())
        .select((appointments::scheduled_at, appointments::ends_at))
        .load(conn)?)
}

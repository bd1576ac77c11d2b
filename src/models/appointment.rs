//! `appointments`: bookings, their slot and status.

use chrono::{Duration, NaiveDateTime};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Integer, Nullable, Text, Timestamp};
use serde::Serialize;

use super::history::{self, NewHistoryEntry};
use super::Versioned;
use crate::db::{DbConn, FixedShapeDsl};
use crate::domain::{Status, MAX_DURATION_MINUTES};
use crate::on_backend;
use crate::schema::appointments;

/// An `appointments` row. Field order follows the table.
#[derive(Debug, Clone, Queryable, Identifiable)]
#[diesel(table_name = appointments)]
pub struct Appointment {
    pub id: i32,
    pub patient_id: i32,
    pub doctor_id: i32,
    pub scheduled_at: NaiveDateTime,
    pub duration_minutes: i32,
    pub ends_at: NaiveDateTime,
    pub type_: String,
    pub reason: Option<String>,
    pub status: String,
    pub version: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A new `appointments` row.
#[derive(Debug, Insertable)]
#[diesel(table_name = appointments, treat_none_as_default_value = false)]
pub struct NewAppointment<'a> {
    pub patient_id: i32,
    pub doctor_id: i32,
    pub scheduled_at: NaiveDateTime,
    pub duration_minutes: i32,
    pub ends_at: NaiveDateTime,
    pub type_: &'a str,
    pub reason: Option<&'a str>,
    pub status: &'a str,
    pub version: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl Appointment {
    /// The status; the CHECK constraint allows no other value.
    pub fn status(&self) -> Status {
        Status::parse(&self.status).unwrap_or(Status::Cancelled)
    }

    /// The API's view.
    pub fn view(&self) -> AppointmentView {
        AppointmentView {
            id: self.id,
            patient_id: self.patient_id,
            doctor_id: self.doctor_id,
            scheduled_at: self.scheduled_at,
            duration_minutes: self.duration_minutes,
            ends_at: self.ends_at,
            type_: self.type_.clone(),
            reason: self.reason.clone(),
            status: self.status.clone(),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl Versioned for Appointment {
    fn version(&self) -> i32 {
        self.version
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }
}

/// Appointment as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Appointment)]
pub struct AppointmentView {
    pub id: i32,
    pub patient_id: i32,
    pub doctor_id: i32,
    #[serde(serialize_with = "crate::time::serialize")]
    pub scheduled_at: NaiveDateTime,
    pub duration_minutes: i32,
    #[serde(serialize_with = "crate::time::serialize")]
    pub ends_at: NaiveDateTime,
    #[serde(rename = "type")]
    #[schema(value_type = crate::domain::doc::AppointmentType)]
    pub type_: String,
    pub reason: Option<String>,
    #[schema(value_type = crate::domain::doc::AppointmentStatus)]
    pub status: String,
    pub version: i32,
    #[serde(serialize_with = "crate::time::serialize")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "crate::time::serialize")]
    pub updated_at: NaiveDateTime,
}

/// Finds an appointment by id.
pub fn find(conn: &mut DbConn, id: i32) -> QueryResult<Option<Appointment>> {
    on_backend!(conn, |c| appointments::table.find(id).first(c).optional())
}

/// Whose calendar an overlap check looks at.
#[derive(Debug, Clone, Copy)]
pub enum Calendar {
    Doctor(i32),
    Patient(i32),
}

/// `status IN ('pending', 'confirmed', 'in_progress')`, spelled with binds and `OR` so that
/// the statement has a static shape and diesel caches it prepared (an `IN` list does not).
#[macro_export]
macro_rules! active_status {
    () => {
        $crate::schema::appointments::status
            .eq($crate::domain::status::ACTIVE[0])
            .or($crate::schema::appointments::status.eq($crate::domain::status::ACTIVE[1]))
            .or($crate::schema::appointments::status.eq($crate::domain::status::ACTIVE[2]))
    };
}

/// The overlap query for one calendar column; a macro so both calendars get a static,
/// cacheable statement.
macro_rules! first_overlap {
    ($conn:expr, $owner:expr, $id:expr, $start:expr, $end:expr, $earliest:expr, $except:expr) => {
        appointments::table
            .select(appointments::id)
            .filter($owner.eq($id))
            .filter(active_status!())
            .filter(appointments::scheduled_at.gt($earliest))
            .filter(appointments::scheduled_at.lt($end))
            .filter(appointments::ends_at.gt($start))
            .filter(appointments::id.ne($except))
            .first::<i32>($conn)
            .optional()
    };
}

/// Whether an active appointment (other than `except`) of that calendar overlaps
/// `[start, end)`.
///
/// Bounded below by `start − MAX_DURATION_MINUTES`: no appointment that starts earlier can
/// reach `start`, so the (doctor_id|patient_id, scheduled_at) index range stays small however
/// long the calendar's history is — this runs while the booking holds its row locks.
pub fn overlaps(
    conn: &mut DbConn,
    calendar: Calendar,
    start: NaiveDateTime,
    end: NaiveDateTime,
    except: Option<i32>,
) -> QueryResult<bool> {
    let earliest = start - Duration::minutes(MAX_DURATION_MINUTES.into());
    // Ids start at 1: 0 excludes nothing.
    let except = except.unwrap_or(0);
    let hit = match calendar {
        Calendar::Doctor(id) => on_backend!(conn, |c| first_overlap!(
            c,
            appointments::doctor_id,
            id,
            start,
            end,
            earliest,
            except
        ))?,
        Calendar::Patient(id) => on_backend!(conn, |c| first_overlap!(
            c,
            appointments::patient_id,
            id,
            start,
            end,
            earliest,
            except
        ))?,
    };
    Ok(hit.is_some())
}

/// Inserts an appointment and returns the stored row.
pub fn insert(conn: &mut DbConn, new: &NewAppointment<'_>) -> QueryResult<Appointment> {
    on_backend!(conn, |c| diesel::insert_into(appointments::table)
        .values(new)
        .returning(appointments::all_columns)
        .get_result(c))
}

/// A new status or reason for an appointment, and who made it: what [`update_logged`] writes.
#[derive(Debug, Clone, Copy)]
pub struct StatusChange<'a> {
    pub id: i32,
    /// The version the change was judged on; the row must still have it.
    pub version: i32,
    pub status: &'a str,
    pub reason: Option<&'a str>,
    pub at: NaiveDateTime,
    pub actor_id: i32,
    /// The history row's action (the new status, or `updated`).
    pub action: &'a str,
    pub from_status: &'a str,
}

/// Applies `change` with its history row if the appointment still has `change.version`
/// (`UPDATE … WHERE id = ? AND version = ?`); `None` if it has not: someone changed it first.
///
/// PostgreSQL: one statement, which is atomic by itself (see [`StatusChange`]'s SQL): one
/// round trip where a transaction takes four (`BEGIN`, the update, the history row,
/// `COMMIT`). SQLite has no data-modifying `WITH`: there the two statements run in a write
/// transaction.
pub fn update_logged(
    conn: &mut DbConn,
    change: &StatusChange<'_>,
) -> QueryResult<Option<Appointment>> {
    match conn {
        DbConn::Pg(pg) => change.get_result(pg).optional(),
        DbConn::Sqlite(_) => crate::db::write_transaction(conn, |conn| {
            let updated = on_backend!(conn, |c| diesel::update(
                appointments::table
                    .filter(appointments::id.eq(change.id))
                    .filter(appointments::version.eq(change.version)),
            )
            .set((
                appointments::status.eq(change.status),
                appointments::reason.eq(change.reason),
                appointments::version.eq(appointments::version + 1),
                appointments::updated_at.eq(change.at),
            ))
            .returning(appointments::all_columns)
            .fixed_shape()
            .get_result::<Appointment>(c)
            .optional())?;
            if let Some(updated) = &updated {
                history::append(conn, &change.history_row(updated.version))?;
            }
            Ok(updated)
        }),
    }
}

impl StatusChange<'_> {
    fn history_row(&self, version: i32) -> NewHistoryEntry<'_> {
        NewHistoryEntry {
            appointment_id: self.id,
            actor_id: self.actor_id,
            action: self.action,
            from_status: Some(self.from_status),
            to_status: self.status,
            version,
            at: self.at,
        }
    }
}

/// PostgreSQL's form of [`update_logged`]: the conditional `UPDATE` and, only if it changed
/// the row, the history row, as one statement. Its SQL never changes, so it is kept prepared
/// (a static query id).
impl QueryFragment<Pg> for StatusChange<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH changed AS (UPDATE appointments SET status = ");
        out.push_bind_param::<Text, _>(&self.status)?;
        out.push_sql(", reason = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.reason)?;
        out.push_sql(", version = version + 1, updated_at = ");
        out.push_bind_param::<Timestamp, _>(&self.at)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<Integer, _>(&self.id)?;
        out.push_sql(" AND version = ");
        out.push_bind_param::<Integer, _>(&self.version)?;
        out.push_sql(
            " RETURNING id, patient_id, doctor_id, scheduled_at, duration_minutes, ends_at, \
             type, reason, status, version, created_at, updated_at), \
             logged AS (INSERT INTO appointment_history \
             (appointment_id, actor_id, action, from_status, to_status, version, at) \
             SELECT id, ",
        );
        out.push_bind_param::<Integer, _>(&self.actor_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.action)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.from_status)?;
        out.push_sql(", status, version, ");
        out.push_bind_param::<Timestamp, _>(&self.at)?;
        out.push_sql(" FROM changed) SELECT * FROM changed");
        Ok(())
    }
}

impl QueryId for StatusChange<'_> {
    type QueryId = StatusChange<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for StatusChange<'_> {
    type SqlType = <<appointments::table as Table>::AllColumns as Expression>::SqlType;
}

impl RunQueryDsl<PgConnection> for StatusChange<'_> {}

//! `appointment_history`: the append-only record of every change, one row per version.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use crate::db::DbConn;
use crate::on_backend;
use crate::schema::appointment_history;

/// A history row as the API shows it.
#[derive(Debug, Clone, Queryable, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    #[serde(serialize_with = "crate::time::serialize")]
    pub at: NaiveDateTime,
    pub actor_id: i32,
    pub action: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub version: i32,
}

/// A new history row.
#[derive(Debug, Insertable)]
#[diesel(table_name = appointment_history, treat_none_as_default_value = false)]
pub struct NewHistoryEntry<'a> {
    pub appointment_id: i32,
    pub actor_id: i32,
    pub action: &'a str,
    pub from_status: Option<&'a str>,
    pub to_status: &'a str,
    pub version: i32,
    pub at: NaiveDateTime,
}

/// Appends a history row; call it in the transaction of the change it records.
pub fn append(conn: &mut DbConn, entry: &NewHistoryEntry<'_>) -> QueryResult<()> {
    on_backend!(conn, |c| diesel::insert_into(appointment_history::table)
        .values(entry)
        .execute(c)
        .map(drop))
}

/// The history of an appointment, oldest first.
pub fn for_appointment(conn: &mut DbConn, appointment_id: i32) -> QueryResult<Vec<HistoryEntry>> {
    appointment_history::table
        .filter(appointment_history::appointment_id.eq(appointment_id))
        .order(appointment_history::version.asc())
        .select((
            appointment_history::at,
            appointment_history::actor_id,
            appointment_history::action,
            appointment_history::from_status,
            appointment_history::to_status,
            appointment_history::version,
        ))
        .load(conn)
}

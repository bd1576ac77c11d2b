//! `ratings`: at most one per appointment (unique `appointment_id`).

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::dsl::{count, sum};
use diesel::prelude::*;
use serde::Serialize;

use super::Versioned;
use crate::db::DbConn;
use crate::schema::ratings;

/// A `ratings` row. Field order follows the table.
#[derive(Debug, Clone, Queryable, Identifiable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = ratings)]
pub struct Rating {
    pub id: i32,
    pub appointment_id: i32,
    pub doctor_id: i32,
    pub patient_id: i32,
    pub score: i32,
    pub comment: Option<String>,
    pub version: i32,
    #[serde(serialize_with = "crate::time::serialize")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "crate::time::serialize")]
    pub updated_at: NaiveDateTime,
}

/// A new `ratings` row.
#[derive(Debug, Insertable)]
#[diesel(table_name = ratings, treat_none_as_default_value = false)]
pub struct NewRating<'a> {
    pub appointment_id: i32,
    pub doctor_id: i32,
    pub patient_id: i32,
    pub score: i32,
    pub comment: Option<&'a str>,
    pub version: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl Versioned for Rating {
    fn version(&self) -> i32 {
        self.version
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Finds a rating by id.
pub fn find(conn: &mut DbConn, id: i32) -> QueryResult<Option<Rating>> {
    ratings::table.find(id).first(conn).optional()
}

/// Inserts a rating; a second one for the appointment fails with `UniqueViolation`.
pub fn insert(conn: &mut DbConn, new: &NewRating<'_>) -> QueryResult<Rating> {
    diesel::insert_into(ratings::table)
        .values(new)
        .returning(ratings::all_columns)
        .get_result(conn)
}

/// A doctor's rating summary, computed from the ratings themselves (no counter column that
/// concurrent writers could lose updates on).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub avg: Option<f64>,
    pub count: i64,
}

/// Rating summaries of the given doctors (doctors without ratings are absent).
pub fn summaries(conn: &mut DbConn, doctor_ids: &[i32]) -> QueryResult<HashMap<i32, Summary>> {
    let rows: Vec<(i32, i64, Option<i64>)> = ratings::table
        .filter(ratings::doctor_id.eq_any(doctor_ids))
        .group_by(ratings::doctor_id)
        .select((ratings::doctor_id, count(ratings::id), sum(ratings::score)))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(doctor_id, count, total)| {
            let avg = (count > 0).then(|| {
                let avg = total.unwrap_or(0) as f64 / count as f64;
                (avg * 100.0).round() / 100.0
            });
            (doctor_id, Summary { avg, count })
        })
        .collect())
}

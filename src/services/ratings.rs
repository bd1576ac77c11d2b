//! Ratings: one per completed appointment, by its patient (unique `appointment_id`).

use crate::db::FixedShapeDsl;
use diesel::prelude::*;
use serde::Deserialize;

use super::optimistic::update_versioned;
use super::patch::Patch;
use super::validate::Problems;
use super::{party_of, visible_appointment};
use crate::auth::Caller;
use crate::db::{classify, retried_write, write_transaction, Contention, DbConn, DbErrorClass};
use crate::domain::{Party, Status};
use crate::error::{AppError, ConflictCode};
use crate::extract::Expected;
use crate::models::rating::{self, NewRating, Rating};
use crate::schema::ratings;

/// `POST /ratings` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RatingCreate)]
pub struct CreateInput {
    pub appointment_id: i32,
    #[schema(minimum = 1, maximum = 5)]
    pub score: i32,
    #[serde(default)]
    pub comment: Option<String>,
}

/// `PUT /ratings/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RatingUpdate)]
pub struct UpdateInput {
    #[serde(default)]
    #[schema(minimum = 1, maximum = 5)]
    pub score: Option<i32>,
    /// Left out, it stays; `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub comment: Patch,
    #[serde(default)]
    pub version: Option<i32>,
}

/// Rates a completed appointment (its patient only).
pub fn create(
    conn: &mut DbConn,
    caller: &Caller,
    input: &CreateInput,
    contention: &Contention,
) -> Result<Rating, AppError> {
    let mut problems = Problems::default();
    problems.range("score", input.score.into(), 1, 5);
    problems.optional_text("comment", input.comment.as_deref(), 2000);
    problems.finish()?;
    let (appointment, party) = visible_appointment(conn, caller, input.appointment_id)?;
    if party != Party::Patient {
        return Err(AppError::forbidden(
            "Only the appointment's patient may rate it",
        ));
    }
    // `completed` is final, so this check cannot be invalidated before the insert commits.
    if appointment.status() != Status::Completed {
        return Err(AppError::Unprocessable {
            code: "APPOINTMENT_NOT_COMPLETED",
            message: "A rating needs a completed appointment".to_owned(),
        });
    }
    let now = crate::time::now();
    let ids = format_args!("appointment={}", appointment.id);
    retried_write(conn, contention, "rate", ids, |conn, _| {
        let created = rating::insert(
            conn,
            &NewRating {
                appointment_id: appointment.id,
                doctor_id: appointment.doctor_id,
                patient_id: appointment.patient_id,
                score: input.score,
                comment: input.comment.as_deref(),
                version: 1,
                created_at: now,
                updated_at: now,
            },
        )
        .map_err(|e| match classify(&e) {
            DbErrorClass::UniqueViolation { .. } => AppError::conflict(
                ConflictCode::RatingExists,
                "This appointment was already rated",
            ),
            _ => AppError::Database(e),
        })?;
        log::info!(
            "ATOMIC rating={} appointment={}",
            created.id,
            appointment.id
        );
        Ok(created)
    })
}

/// A rating its patient, its doctor or an admin may see.
pub fn get(conn: &mut DbConn, caller: &Caller, id: i32) -> Result<Rating, AppError> {
    let found = rating::find(conn, id)?.ok_or(AppError::NotFound)?;
    party_of(caller, found.patient_id, found.doctor_id).ok_or(AppError::NotFound)?;
    Ok(found)
}

/// Changes a rating (its patient only), optimistically.
pub fn update(
    conn: &mut DbConn,
    caller: &Caller,
    id: i32,
    input: &UpdateInput,
    expected: Expected,
    contention: &Contention,
) -> Result<Rating, AppError> {
    let mut problems = Problems::default();
    if let Some(score) = input.score {
        problems.range("score", score.into(), 1, 5);
    }
    problems.optional_text("comment", input.comment.given(), 2000);
    if input.score.is_none() && input.comment.is_keep() {
        problems.add("body", "nothing to change: give score or comment");
    }
    problems.finish()?;
    update_versioned(
        conn,
        contention,
        format_args!("rating={id}"),
        expected,
        |conn| get(conn, caller, id),
        |_| Ok(()),
        |conn, current| {
            if party_of(caller, current.patient_id, current.doctor_id) != Some(Party::Patient) {
                return Err(AppError::forbidden(
                    "Only the patient who wrote the rating may change it",
                ));
            }
            let score = input.score.unwrap_or(current.score);
            let comment = input.comment.apply(current.comment.as_deref());
            if score == current.score && comment == current.comment.as_deref() {
                // Nothing changes: no write and no new version (see `appointments::update`).
                return Ok(Some(current.clone()));
            }
            write_transaction(conn, |conn| {
                Ok(diesel::update(
                    ratings::table
                        .filter(ratings::id.eq(current.id))
                        .filter(ratings::version.eq(current.version)),
                )
                .set((
                    ratings::score.eq(score),
                    ratings::comment.eq(comment),
                    ratings::version.eq(ratings::version + 1),
                    ratings::updated_at.eq(crate::time::now()),
                ))
                .returning(ratings::all_columns)
                .fixed_shape()
                .get_result::<Rating>(conn)
                .optional()?)
            })
        },
    )
}

//! Prescriptions: one per completed appointment, written by its doctor, acknowledged once by
//! its patient. Uniqueness is decided by the unique index on `appointment_id`.

use diesel::prelude::*;
use serde::Deserialize;

use super::optimistic::update_versioned;
use super::patch::Patch;
use super::validate::Problems;
use super::{party_of, visible_appointment};
use crate::auth::Caller;
use crate::db::{
    classify, retried_write, write_transaction, Contention, DbConn, DbErrorClass, FixedShapeDsl,
};
use crate::domain::{Party, Status};
use crate::error::{AppError, ConflictCode};
use crate::extract::Expected;
use crate::models::prescription::{self, Medication, NewPrescription, Prescription};
use crate::schema::prescriptions;

/// `POST /prescriptions` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PrescriptionCreate)]
pub struct CreateInput {
    pub appointment_id: i32,
    #[schema(min_items = 1, max_items = 50)]
    #[serde(deserialize_with = "crate::extract::objects")]
    pub medications: Vec<Medication>,
    #[serde(default)]
    pub notes: Option<String>,
}

/// `PUT /prescriptions/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PrescriptionUpdate)]
pub struct UpdateInput {
    #[serde(default, deserialize_with = "crate::extract::optional_objects")]
    pub medications: Option<Vec<Medication>>,
    /// Left out, they stay; `null` clears them.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub notes: Patch,
    #[serde(default)]
    pub version: Option<i32>,
}

/// `POST /prescriptions/{id}/acknowledge` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Acknowledge)]
pub struct AcknowledgeInput {
    #[serde(default)]
    pub version: Option<i32>,
}

fn check_medications(problems: &mut Problems, medications: &[Medication]) {
    if medications.is_empty() || medications.len() > 50 {
        problems.add("medications", "must hold 1 to 50 items");
    }
    for (i, m) in medications.iter().enumerate() {
        problems.text(&format!("medications[{i}].name"), &m.name, 200);
        problems.text(&format!("medications[{i}].dosage"), &m.dosage, 200);
        problems.text(&format!("medications[{i}].frequency"), &m.frequency, 200);
        if let Some(days) = m.duration_days {
            problems.range(
                &format!("medications[{i}].duration_days"),
                days.into(),
                1,
                365,
            );
        }
    }
}

fn medications_json(medications: &[Medication]) -> Result<String, AppError> {
    serde_json::to_string(medications).map_err(|e| AppError::internal(format!("medications: {e}")))
}

fn already_acknowledged() -> AppError {
    AppError::conflict(
        ConflictCode::AlreadyAcknowledged,
        "The prescription was already acknowledged",
    )
}

/// Writes the prescription of a completed appointment (its doctor only).
pub fn create(
    conn: &mut DbConn,
    caller: &Caller,
    input: &CreateInput,
    contention: &Contention,
) -> Result<Prescription, AppError> {
    let mut problems = Problems::default();
    check_medications(&mut problems, &input.medications);
    problems.optional_text("notes", input.notes.as_deref(), 5000);
    problems.finish()?;
    let medications = medications_json(&input.medications)?;
    let (appointment, party) = visible_appointment(conn, caller, input.appointment_id)?;
    if party != Party::Doctor {
        return Err(AppError::forbidden(
            "Only the appointment's doctor may prescribe",
        ));
    }
    // `completed` is final, so this check cannot be invalidated before the insert commits.
    if appointment.status() != Status::Completed {
        return Err(AppError::Unprocessable {
            code: "APPOINTMENT_NOT_COMPLETED",
            message: "A prescription needs a completed appointment".to_owned(),
        });
    }
    let now = crate::time::now();
    let ids = format_args!("appointment={}", appointment.id);
    retried_write(conn, contention, "prescribe", ids, |conn, _| {
        let created = prescription::insert(
            conn,
            &NewPrescription {
                appointment_id: appointment.id,
                doctor_id: appointment.doctor_id,
                patient_id: appointment.patient_id,
                medications: &medications,
                notes: input.notes.as_deref(),
                version: 1,
                created_at: now,
                updated_at: now,
            },
        )
        .map_err(|e| match classify(&e) {
            DbErrorClass::UniqueViolation { .. } => AppError::conflict(
                ConflictCode::PrescriptionExists,
                "This appointment already has a prescription",
            ),
            _ => AppError::Database(e),
        })?;
        log::info!(
            "ATOMIC prescription={} appointment={}",
            created.id,
            appointment.id
        );
        Ok(created)
    })
}

/// A prescription its doctor, its patient or an admin may see.
pub fn get(conn: &mut DbConn, caller: &Caller, id: i32) -> Result<Prescription, AppError> {
    let found = prescription::find(conn, id)?.ok_or(AppError::NotFound)?;
    party_of(caller, found.patient_id, found.doctor_id).ok_or(AppError::NotFound)?;
    Ok(found)
}

/// The prescription of an appointment the caller may see.
pub fn for_appointment(
    conn: &mut DbConn,
    caller: &Caller,
    appointment_id: i32,
) -> Result<Prescription, AppError> {
    visible_appointment(conn, caller, appointment_id)?;
    prescription::find_by_appointment(conn, appointment_id)?.ok_or(AppError::NotFound)
}

/// Changes a prescription (its doctor, until the patient acknowledged it).
pub fn update(
    conn: &mut DbConn,
    caller: &Caller,
    id: i32,
    input: &UpdateInput,
    expected: Expected,
    contention: &Contention,
) -> Result<Prescription, AppError> {
    let mut problems = Problems::default();
    if let Some(medications) = &input.medications {
        check_medications(&mut problems, medications);
    }
    problems.optional_text("notes", input.notes.given(), 5000);
    if input.medications.is_none() && input.notes.is_keep() {
        problems.add("body", "nothing to change: give medications or notes");
    }
    problems.finish()?;
    let medications = input
        .medications
        .as_deref()
        .map(medications_json)
        .transpose()?;
    update_versioned(
        conn,
        contention,
        format_args!("prescription={id}"),
        expected,
        |conn| get(conn, caller, id),
        |current| match current.acknowledged_at {
            Some(_) => Err(already_acknowledged()),
            None => Ok(()),
        },
        |conn, current| {
            if party_of(caller, current.patient_id, current.doctor_id) != Some(Party::Doctor) {
                return Err(AppError::forbidden(
                    "Only the prescribing doctor may change it",
                ));
            }
            let new_medications = medications.as_deref().unwrap_or(&current.medications);
            let notes = input.notes.apply(current.notes.as_deref());
            if new_medications == current.medications && notes == current.notes.as_deref() {
                // Nothing changes: no write and no new version (see `appointments::update`).
                return Ok(Some(current.clone()));
            }
            write_transaction(conn, |conn| {
                Ok(diesel::update(
                    prescriptions::table
                        .filter(prescriptions::id.eq(current.id))
                        .filter(prescriptions::version.eq(current.version))
                        .filter(prescriptions::acknowledged_at.is_null()),
                )
                .set((
                    prescriptions::medications.eq(new_medications),
                    prescriptions::notes.eq(notes),
                    prescriptions::version.eq(prescriptions::version + 1),
                    prescriptions::updated_at.eq(crate::time::now()),
                ))
                .returning(prescriptions::all_columns)
                .fixed_shape()
                .get_result::<Prescription>(conn)
                .optional()?)
            })
        },
    )
}

/// The patient acknowledges the prescription, once.
pub fn acknowledge(
    conn: &mut DbConn,
    caller: &Caller,
    id: i32,
    expected: Expected,
    contention: &Contention,
) -> Result<Prescription, AppError> {
    update_versioned(
        conn,
        contention,
        format_args!("prescription={id}"),
        expected,
        |conn| get(conn, caller, id),
        |current| match current.acknowledged_at {
            Some(_) => Err(already_acknowledged()),
            None => Ok(()),
        },
        |conn, current| {
            if party_of(caller, current.patient_id, current.doctor_id) != Some(Party::Patient) {
                return Err(AppError::forbidden(
                    "Only the patient may acknowledge a prescription",
                ));
            }
            write_transaction(conn, |conn| {
                let now = crate::time::now();
                let acknowledged = diesel::update(
                    prescriptions::table
                        .filter(prescriptions::id.eq(current.id))
                        .filter(prescriptions::version.eq(current.version))
                        .filter(prescriptions::acknowledged_at.is_null()),
                )
                .set((
                    prescriptions::acknowledged_at.eq(Some(now)),
                    prescriptions::version.eq(prescriptions::version + 1),
                    prescriptions::updated_at.eq(now),
                ))
                .returning(prescriptions::all_columns)
                .fixed_shape()
                .get_result::<Prescription>(conn)
                .optional()?;
                if acknowledged.is_some() {
                    log::info!(
                        "ATOMIC prescription={id} acknowledged by patient={}",
                        caller.id
                    );
                }
                Ok(acknowledged)
            })
        },
    )
}

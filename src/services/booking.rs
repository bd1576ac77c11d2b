//! The booking path, the one place with pessimistic locking: booking a slot and moving an
//! appointment to another slot. Both lock the doctor's and the patient's user rows in
//! ascending id order, check, and write, in one short transaction.

use std::time::Instant;

use crate::telemetry::LockHold;

use chrono::{Duration, NaiveDateTime};
use serde::Deserialize;

use super::optimistic::update_versioned;
use super::patch::Patch;
use super::validate::Problems;
use super::{party_of, visible_appointment};
use crate::auth::Caller;
use crate::db::{
    classify, lock_users_in_order, retried_write, Contention, DbConn, DbErrorClass, FixedShapeDsl,
};
use crate::domain::{
    Party, Role, Status, APPOINTMENT_TYPES, DEFAULT_DURATION_MINUTES, MAX_DURATION_MINUTES,
    MIN_DURATION_MINUTES,
};
use crate::error::{AppError, ConflictCode};
use crate::extract::Expected;
use crate::models::appointment::{self, Appointment, Calendar, NewAppointment};
use crate::models::history::{self, NewHistoryEntry};
use crate::schema::appointments;
use crate::time::InputTime;

/// Name of the PostgreSQL exclusion constraint that keeps a patient's appointments apart.
const PATIENT_OVERLAP_CONSTRAINT: &str = "appointments_patient_no_overlap";

/// `POST /appointments` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Booking)]
pub struct BookingInput {
    pub doctor_id: i32,
    /// RFC 3339 with any offset, or `YYYY-MM-DD HH:MM:SS` (UTC); must be in the future.
    #[schema(value_type = String, format = DateTime)]
    pub scheduled_at: InputTime,
    #[serde(rename = "type")]
    #[schema(value_type = crate::domain::doc::AppointmentType)]
    pub type_: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// Length in minutes (default 30).
    #[serde(default)]
    #[schema(minimum = 5, maximum = 240)]
    pub duration_minutes: Option<i32>,
    /// Only an admin may book for a patient.
    #[serde(default)]
    pub patient_id: Option<i32>,
}

/// How far ahead an appointment may be booked (10 years). Beyond any real calendar, and it
/// keeps every stored time a four-digit year, whose text sorts as the time does (SQLite).
pub const BOOKING_HORIZON_DAYS: i64 = 3653;

/// Checks a slot's time and length; shared by booking and rescheduling.
fn check_slot(problems: &mut Problems, start: NaiveDateTime, duration: i32, now: NaiveDateTime) {
    if start <= now {
        problems.add("scheduled_at", "must be in the future");
    } else if start > now + Duration::days(BOOKING_HORIZON_DAYS) {
        problems.add("scheduled_at", "must be at most 10 years ahead");
    }
    problems.range(
        "duration_minutes",
        duration.into(),
        MIN_DURATION_MINUTES.into(),
        MAX_DURATION_MINUTES.into(),
    );
}

/// The end of a slot.
pub fn slot_end(start: NaiveDateTime, duration: i32) -> NaiveDateTime {
    start + Duration::minutes(duration.into())
}

/// Books an appointment: 201 material, or 404/409/422 as API.md says.
pub fn book(
    conn: &mut DbConn,
    caller: &Caller,
    input: &BookingInput,
    contention: &Contention,
) -> Result<Appointment, AppError> {
    let patient_id = match (caller.role, input.patient_id) {
        (Role::Patient, None) => caller.id,
        (Role::Patient, Some(id)) if id == caller.id => caller.id,
        (Role::Patient, Some(_)) => {
            return Err(AppError::forbidden(
                "A patient may only book for themselves",
            ))
        }
        (Role::Admin, Some(id)) => id,
        (Role::Admin, None) => {
            return Err(AppError::invalid("patient_id", "required for an admin"))
        }
        (Role::Doctor, _) => {
            return Err(AppError::forbidden(
                "Only patients (or an admin) book appointments",
            ))
        }
    };
    let now = crate::time::now();
    let start = input.scheduled_at.0;
    let duration = input.duration_minutes.unwrap_or(DEFAULT_DURATION_MINUTES);
    let mut problems = Problems::default();
    check_slot(&mut problems, start, duration, now);
    if !APPOINTMENT_TYPES.contains(&input.type_.as_str()) {
        problems.add(
            "type",
            format!("must be one of {}", APPOINTMENT_TYPES.join(", ")),
        );
    }
    problems.optional_text("reason", input.reason.as_deref(), 2000);
    problems.finish()?;
    let end = slot_end(start, duration);
    let ids = format!("doctor={} patient={patient_id}", input.doctor_id);

    let slot = SlotRequest {
        doctor_id: input.doctor_id,
        patient_id,
        start,
        end,
        except: None,
        patient_named_by_admin: caller.role == Role::Admin,
    };
    let (booked, hold) = retried_write(conn, contention, "book", &ids, |conn, attempt| {
        let hold = hold_slot(conn, contention, &slot, attempt)?;
        let now = crate::time::now();
        let booked = appointment::insert(
            conn,
            &NewAppointment {
                patient_id,
                doctor_id: input.doctor_id,
                scheduled_at: start,
                duration_minutes: duration,
                ends_at: end,
                type_: &input.type_,
                reason: input.reason.as_deref(),
                status: Status::Pending.as_str(),
                version: 1,
                created_at: now,
                updated_at: now,
            },
        )
        .map_err(map_slot_conflict)?;
        history::append(
            conn,
            &NewHistoryEntry {
                appointment_id: booked.id,
                actor_id: caller.id,
                action: "created",
                from_status: None,
                to_status: Status::Pending.as_str(),
                version: 1,
                at: now,
            },
        )?;
        Ok((booked, hold))
    })?;
    log::info!(
        "ATOMIC booked appointment={} {ids} lock_held_ms={} (committed)",
        booked.id,
        hold.held().as_millis()
    );
    Ok(booked)
}

/// What [`hold_slot`] locks and checks.
#[derive(Debug, Clone, Copy)]
struct SlotRequest {
    doctor_id: i32,
    patient_id: i32,
    start: NaiveDateTime,
    end: NaiveDateTime,
    /// The appointment being moved, which may overlap its own old slot.
    except: Option<i32>,
    /// An admin named the patient: a wrong id is a validation error, not a 403.
    patient_named_by_admin: bool,
}

/// Locks both calendars' owners and checks that `[start, end)` is free in both.
///
/// Runs inside [`retried_write`]'s transaction; the row locks (PostgreSQL) or the write lock
/// (SQLite) keep every other booking of this doctor or this patient out until commit, which
/// is what makes the overlap checks below safe. The returned guard records the hold time in
/// the lock statistics when dropped (after commit or rollback).
fn hold_slot(
    conn: &mut DbConn,
    contention: &Contention,
    slot: &SlotRequest,
    attempt: u32,
) -> Result<LockHold, AppError> {
    let SlotRequest {
        doctor_id,
        patient_id,
        start,
        end,
        except,
        patient_named_by_admin,
    } = *slot;
    let waiting = Instant::now();
    let users = lock_users_in_order(conn, &[doctor_id, patient_id])?;
    let wait = waiting.elapsed();
    let hold = contention.stats.acquired(doctor_id, wait);
    log::info!(
        "LOCK acquired users doctor={doctor_id} patient={patient_id} wait_ms={} attempt={attempt}",
        wait.as_millis()
    );
    let doctor = users
        .iter()
        .find(|u| u.id == doctor_id && u.role() == Role::Doctor)
        .ok_or(AppError::NotFound)?;
    let patient = users
        .iter()
        .find(|u| u.id == patient_id && u.role() == Role::Patient);
    let patient = match patient {
        Some(patient) => patient,
        None if patient_named_by_admin => {
            return Err(AppError::invalid("patient_id", "does not name a patient"))
        }
        None => return Err(AppError::forbidden("Only patients can hold appointments")),
    };
    if !doctor.is_active {
        return Err(AppError::conflict(
            ConflictCode::DoctorInactive,
            "Doctor is not active",
        ));
    }
    if !patient.is_active {
        return Err(AppError::conflict(
            ConflictCode::PatientInactive,
            "Patient is not active",
        ));
    }
    if appointment::overlaps(conn, Calendar::Doctor(doctor_id), start, end, except)? {
        contention.stats.slot_conflict(doctor_id);
        return Err(slot_taken());
    }
    if appointment::overlaps(conn, Calendar::Patient(patient_id), start, end, except)? {
        return Err(patient_busy());
    }
    Ok(hold)
}

fn slot_taken() -> AppError {
    AppError::conflict(
        ConflictCode::SlotTaken,
        "Doctor already has appointment at this time",
    )
}

fn patient_busy() -> AppError {
    AppError::conflict(
        ConflictCode::PatientBusy,
        "Patient already has an appointment at this time",
    )
}

/// A constraint that still refused the slot (the locks should have made that impossible)
/// answers as the conflict it is, decided by error kind and constraint name.
fn map_slot_conflict(err: diesel::result::Error) -> AppError {
    match classify(&err) {
        DbErrorClass::ExclusionViolation { constraint }
            if constraint.as_deref() == Some(PATIENT_OVERLAP_CONSTRAINT) =>
        {
            patient_busy()
        }
        DbErrorClass::UniqueViolation { .. } | DbErrorClass::ExclusionViolation { .. } => {
            slot_taken()
        }
        _ => AppError::Database(err),
    }
}

/// A move to another slot (`scheduled_at` and/or `duration_minutes`).
#[derive(Debug, Clone)]
pub struct Reschedule {
    pub scheduled_at: Option<NaiveDateTime>,
    pub duration_minutes: Option<i32>,
    pub reason: Patch,
}

/// Moves an appointment to another slot: same locks and checks as booking, the id is kept,
/// the status goes back to `pending`, the version goes up by one — in one UPDATE, so there is
/// no moment where the old slot is released and the new one not yet held.
pub fn reschedule(
    conn: &mut DbConn,
    caller: &Caller,
    id: i32,
    change: &Reschedule,
    expected: Expected,
    contention: &Contention,
) -> Result<Appointment, AppError> {
    update_versioned(
        conn,
        contention,
        format_args!("appointment={id}"),
        expected,
        |conn| visible_appointment(conn, caller, id).map(|(a, _)| a),
        |_| Ok(()),
        |conn, current| {
            let party = party_of(caller, current.patient_id, current.doctor_id)
                .ok_or(AppError::NotFound)?;
            if party == Party::Admin {
                return Err(AppError::forbidden(
                    "Only the patient or the doctor may reschedule",
                ));
            }
            if !current.status().is_reschedulable() {
                return Err(AppError::Unprocessable {
                    code: "INVALID_TRANSITION",
                    message: format!(
                        "Invalid status transition: a {} appointment cannot be rescheduled",
                        current.status
                    ),
                });
            }
            let start = change.scheduled_at.unwrap_or(current.scheduled_at);
            let duration = change.duration_minutes.unwrap_or(current.duration_minutes);
            let mut problems = Problems::default();
            check_slot(&mut problems, start, duration, crate::time::now());
            problems.optional_text("reason", change.reason.given(), 2000);
            problems.finish()?;
            let end = slot_end(start, duration);
            let ids = format!(
                "appointment={id} doctor={} patient={}",
                current.doctor_id, current.patient_id
            );
            let slot = SlotRequest {
                doctor_id: current.doctor_id,
                patient_id: current.patient_id,
                start,
                end,
                except: Some(id),
                patient_named_by_admin: false,
            };
            let moved = retried_write(conn, contention, "reschedule", &ids, |conn, attempt| {
                let hold = hold_slot(conn, contention, &slot, attempt)?;
                let now = crate::time::now();
                let reason = change.reason.apply(current.reason.as_deref());
                let moved = move_slot(conn, current, start, duration, end, reason, now)
                    .map_err(map_slot_conflict)?;
                let Some(moved) = moved else {
                    return Ok(None);
                };
                history::append(
                    conn,
                    &NewHistoryEntry {
                        appointment_id: id,
                        actor_id: caller.id,
                        action: "rescheduled",
                        from_status: Some(&current.status),
                        to_status: Status::Pending.as_str(),
                        version: moved.version,
                        at: now,
                    },
                )?;
                Ok(Some((moved, hold)))
            })?;
            Ok(moved.map(|(moved, hold)| {
                log::info!(
                    "ATOMIC rescheduled {ids} version={} lock_held_ms={} (committed)",
                    moved.version,
                    hold.held().as_millis()
                );
                moved
            }))
        },
    )
}

/// The conditional UPDATE of a reschedule; `None` when the version moved on.
fn move_slot(
    conn: &mut DbConn,
    current: &Appointment,
    start: NaiveDateTime,
    duration: i32,
    end: NaiveDateTime,
    reason: Option<&str>,
    now: NaiveDateTime,
) -> diesel::QueryResult<Option<Appointment>> {
    use diesel::prelude::*;
    diesel::update(
        appointments::table
            .filter(appointments::id.eq(current.id))
            .filter(appointments::version.eq(current.version)),
    )
    .set((
        appointments::scheduled_at.eq(start),
        appointments::duration_minutes.eq(duration),
        appointments::ends_at.eq(end),
        appointments::reason.eq(reason),
        appointments::status.eq(Status::Pending.as_str()),
        appointments::version.eq(appointments::version + 1),
        appointments::updated_at.eq(now),
    ))
    .returning(appointments::all_columns)
    .fixed_shape()
    .get_result(conn)
    .optional()
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error};

    use super::*;

    /// A database error as PostgreSQL reports a constraint: kind and constraint name.
    struct Refusal(&'static str);

    impl DatabaseErrorInformation for Refusal {
        fn message(&self) -> &str {
            "refused"
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            Some("appointments")
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            Some(self.0)
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn code(err: Error) -> Option<ConflictCode> {
        match map_slot_conflict(err) {
            AppError::Conflict { code, .. } => Some(code),
            _ => None,
        }
    }

    #[test]
    fn a_refused_slot_is_the_conflict_its_constraint_names() {
        use DatabaseErrorKind::{ExclusionViolation, UniqueViolation, Unknown};
        let postgres = |kind, name| Error::DatabaseError(kind, Box::new(Refusal(name)));
        // SQLite's triggers: kind Unknown, the message is the constraint's name.
        let sqlite = |name: &str| Error::DatabaseError(Unknown, Box::new(name.to_owned()));
        let patient = "appointments_patient_no_overlap";
        let doctor = "appointments_doctor_no_overlap";
        assert_eq!(
            code(postgres(ExclusionViolation, patient)),
            Some(ConflictCode::PatientBusy)
        );
        assert_eq!(
            code(postgres(ExclusionViolation, doctor)),
            Some(ConflictCode::SlotTaken)
        );
        assert_eq!(
            code(postgres(
                UniqueViolation,
                "appointments_doctor_active_slot_key"
            )),
            Some(ConflictCode::SlotTaken)
        );
        assert_eq!(code(sqlite(patient)), Some(ConflictCode::PatientBusy));
        assert_eq!(code(sqlite(doctor)), Some(ConflictCode::SlotTaken));
        assert_eq!(code(sqlite("appointments_ends_at_check")), None);
    }
}

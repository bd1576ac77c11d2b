//! Use cases. Each public fn takes `&mut DbConn`, runs at most one transaction, and holds all
//! the rules; none of them knows about HTTP.

pub mod appointments;
pub mod auth;
pub mod booking;
pub mod doctors;
pub mod idempotency;
pub mod optimistic;
pub mod pagination;
pub mod patch;
pub mod prescriptions;
pub mod ratings;
pub mod users;
pub mod validate;

use crate::auth::Caller;
use crate::db::DbConn;
use crate::domain::{Party, Role};
use crate::error::AppError;
use crate::models::appointment::{self, Appointment};

/// Loads an appointment the caller may see and says how the caller relates to it.
/// Invisible and missing look the same: 404.
pub fn visible_appointment(
    conn: &mut DbConn,
    caller: &Caller,
    id: i32,
) -> Result<(Appointment, Party), AppError> {
    visible(caller, appointment::find(conn, id)?)
}

/// [`visible_appointment`] for an appointment already read (`None`: there is none).
pub fn visible(
    caller: &Caller,
    found: Option<Appointment>,
) -> Result<(Appointment, Party), AppError> {
    let appointment = found.ok_or(AppError::NotFound)?;
    let party = party_of(caller, appointment.patient_id, appointment.doctor_id)
        .ok_or(AppError::NotFound)?;
    Ok((appointment, party))
}

/// How the caller relates to a record of a patient and a doctor, if at all.
pub fn party_of(caller: &Caller, patient_id: i32, doctor_id: i32) -> Option<Party> {
    if caller.role == Role::Admin {
        Some(Party::Admin)
    } else if caller.id == doctor_id && caller.role == Role::Doctor {
        Some(Party::Doctor)
    } else if caller.id == patient_id && caller.role == Role::Patient {
        Some(Party::Patient)
    } else {
        None
    }
}

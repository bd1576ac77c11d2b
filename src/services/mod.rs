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

use diesel::QueryResult;

use crate::auth::Caller;
use crate::db::{retried_write, Contention, DbConn};
use crate::domain::{Party, Role};
use crate::error::AppError;
use crate::models::appointment::{self, Appointment};
use crate::models::PurgeBatch;

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

/// Rows a purge deletes per transaction ([`purge_in_batches`]).
pub const PURGE_BATCH: i64 = 1000;

/// Runs `batch` (which deletes up to the number of rows it is given) in one write
/// transaction after another until one finds nothing to delete; returns how many rows were
/// deleted in all. Each batch is retried like every write (a deadlock with a request, a
/// serialization failure, SQLite BUSY); `label` names the purge in the retry's log lines.
///
/// Ten minutes of a busy server's idempotency keys are hundreds of thousands of rows, and one
/// `DELETE` of them all would hold SQLite's only write lock for seconds (600 000 rows: 1.4 s
/// on this machine), with every booking waiting behind it. In batches, the writes that queue
/// meanwhile take their turns between them.
///
/// The end is a batch that *found* nothing, not one that deleted nothing: on PostgreSQL two
/// processes purging at once may read the same batch, and the one whose `DELETE` comes second
/// removes none of it while the rest is still there. Every row a batch found is gone from the
/// next batch's read (deleted, by whichever process, or, for a key, taken over and no longer
/// expired), so the loop ends.
pub fn purge_in_batches(
    conn: &mut DbConn,
    contention: &Contention,
    label: &str,
    mut batch: impl FnMut(&mut DbConn, i64) -> QueryResult<PurgeBatch> + Send,
) -> Result<usize, AppError> {
    let mut purged = 0;
    loop {
        let done = retried_write(conn, contention, label, "", |conn, _| {
            Ok(batch(conn, PURGE_BATCH)?)
        })?;
        purged += done.deleted;
        if done.found == 0 {
            return Ok(purged);
        }
    }
}

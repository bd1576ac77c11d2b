//! Reading appointments, the status lifecycle (optimistic, no row locks) and history.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Deserialize;

use super::booking::{self, Reschedule};
use super::optimistic::update_versioned;
use super::patch::Patch;
use super::validate::Problems;
use super::{party_of, visible, visible_appointment};
use crate::auth::Caller;
use crate::db::{Contention, DbConn};
use crate::domain::{transition, Party, Role, Status, TransitionError};
use crate::error::AppError;
use crate::extract::Expected;
use crate::models::appointment::{self, Appointment, StatusChange};
use crate::models::history::{self, HistoryEntry};
use crate::models::Versioned;
use crate::schema::appointments;
use crate::services::pagination::{Cursor, Page};
use crate::time::InputTime;

/// `PUT`/`PATCH /appointments/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AppointmentUpdate)]
pub struct UpdateInput {
    #[serde(default)]
    #[schema(value_type = Option<crate::domain::doc::AppointmentStatus>)]
    pub status: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scheduled_at: Option<InputTime>,
    #[serde(default)]
    pub duration_minutes: Option<i32>,
    /// Left out, it stays; `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub reason: Patch,
    #[serde(default)]
    pub version: Option<i32>,
}

/// One appointment the caller may see, from the row read with the caller's token
/// ([`AppState::as_caller_with_appointment`](crate::server::AppState::as_caller_with_appointment)).
pub fn get(caller: &Caller, found: Option<Appointment>) -> Result<Appointment, AppError> {
    visible(caller, found).map(|(a, _)| a)
}

/// Filters of `GET /appointments`, already parsed.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub from: Option<NaiveDateTime>,
    pub to: Option<NaiveDateTime>,
    pub limit: i64,
    pub cursor: Option<Cursor>,
}

/// The caller's appointments (patient: theirs; doctor: theirs; admin: all), ordered by
/// `scheduled_at`, then id, with keyset pagination.
pub fn list(
    conn: &mut DbConn,
    caller: &Caller,
    filter: &ListFilter,
) -> Result<Page<Appointment>, AppError> {
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if to <= from {
            // As for a doctor's busy times: a range that holds no time is a mistake.
            return Err(AppError::invalid("to", "must be after from"));
        }
    }
    let rows: Vec<Appointment> = list_query(caller, filter).load(conn)?;
    Ok(Page::from_rows(rows, filter.limit, |a| Cursor {
        at: a.scheduled_at,
        id: a.id,
    }))
}

/// The statement of [`list`]: up to `limit + 1` rows, so that the page knows whether there is
/// more. Public for the tests that read its plan.
pub fn list_query(
    caller: &Caller,
    filter: &ListFilter,
) -> appointments::BoxedQuery<'static, crate::db::DbBackend> {
    let mut query = appointments::table.into_boxed();
    query = match caller.role {
        Role::Patient => query.filter(appointments::patient_id.eq(caller.id)),
        Role::Doctor => query.filter(appointments::doctor_id.eq(caller.id)),
        Role::Admin => query,
    };
    if let Some(status) = filter.status {
        query = query.filter(appointments::status.eq(status.as_str()));
    }
    if let Some(from) = filter.from {
        query = query.filter(appointments::scheduled_at.ge(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(appointments::scheduled_at.lt(to));
    }
    if let Some(Cursor { at, id }) = filter.cursor {
        // "After (at, id)" is the OR; neither database turns an OR into an index range, so
        // without the `>=` every page would scan the index from the first appointment and
        // filter out all the pages before it (a full listing would cost the square of its
        // length). The `>=` starts the scan at the cursor, on the (scheduled_at, id) index
        // and on the (patient_id | doctor_id, scheduled_at) ones.
        query = query.filter(appointments::scheduled_at.ge(at)).filter(
            appointments::scheduled_at
                .gt(at)
                .or(appointments::scheduled_at
                    .eq(at)
                    .and(appointments::id.gt(id))),
        );
    }
    query
        .order((appointments::scheduled_at.asc(), appointments::id.asc()))
        .limit(filter.limit + 1)
}

/// Whether the `scheduled_at` and `duration_minutes` that `input` gives (if any) are the
/// appointment's own.
fn keeps_slot(input: &UpdateInput, appointment: &Appointment) -> bool {
    input
        .scheduled_at
        .map_or(true, |t| t.0 == appointment.scheduled_at)
        && input
            .duration_minutes
            .map_or(true, |d| d == appointment.duration_minutes)
}

/// Applies a `PUT`/`PATCH`: a status move, a reschedule, or a new reason. `found` is appointment
/// `id` as read with the caller's token (`None`: there is none); the first attempt starts from
/// it, a retry after a lost race reads the row again.
pub fn update(
    conn: &mut DbConn,
    caller: &Caller,
    id: i32,
    found: Option<Appointment>,
    input: &UpdateInput,
    expected: Expected,
    contention: &Contention,
) -> Result<Appointment, AppError> {
    // A time and duration the appointment already has move nothing: a form that sends them
    // back unchanged beside a status or a reason does not reschedule (which would send a
    // confirmed appointment back to `pending`). Judged on the row read with the token, and only
    // if the caller may see it (else the answer would tell its time); an attempt that finds
    // the row moved since answers 409 with it.
    let asks_slot = input.scheduled_at.is_some() || input.duration_minutes.is_some();
    let moves_slot = asks_slot
        && !found
            .as_ref()
            .filter(|a| party_of(caller, a.patient_id, a.doctor_id).is_some())
            .is_some_and(|a| keeps_slot(input, a));
    if moves_slot && input.status.is_some() {
        return Err(AppError::invalid(
            "status",
            "cannot be changed together with scheduled_at/duration_minutes (a reschedule sets it to pending)",
        ));
    }
    if moves_slot {
        let change = Reschedule {
            scheduled_at: input.scheduled_at.map(|t| t.0),
            duration_minutes: input.duration_minutes,
            reason: input.reason.clone(),
        };
        return booking::reschedule(conn, caller, id, &change, expected, contention);
    }
    let target = match input.status.as_deref() {
        Some(raw) => Some(
            Status::parse(raw)
                .ok_or_else(|| AppError::invalid("status", format!("unknown status {raw:?}")))?,
        ),
        None => None,
    };
    if target.is_none() && input.reason.is_keep() && !asks_slot {
        return Err(AppError::invalid(
            "body",
            "nothing to change: give status, scheduled_at, duration_minutes or reason",
        ));
    }
    let mut problems = Problems::default();
    problems.optional_text("reason", input.reason.given(), 2000);
    problems.finish()?;

    let mut found = Some(found);
    update_versioned(
        conn,
        contention,
        format_args!("appointment={id}"),
        expected,
        |conn| {
            match found.take() {
                Some(found) => visible(caller, found),
                None => visible_appointment(conn, caller, id),
            }
            .map(|(a, _)| a)
        },
        |_| Ok(()),
        |conn, current| {
            let party = party_of(caller, current.patient_id, current.doctor_id)
                .ok_or(AppError::NotFound)?;
            if !keeps_slot(input, current) {
                // Moved since the row this request was judged on (a retry's re-read).
                return Err(AppError::version_conflict(current.to_json()));
            }
            let from = current.status();
            let to = target.unwrap_or(from);
            if let Some(to) = target {
                check_transition(from, to, party)?;
            } else if !from.is_active() {
                return Err(AppError::Unprocessable {
                    code: "INVALID_TRANSITION",
                    message: format!(
                        "Invalid status transition: a {} appointment cannot be changed",
                        from.as_str()
                    ),
                });
            }
            let reason = input.reason.apply(current.reason.as_deref());
            if target.is_none() && reason == current.reason.as_deref() {
                // Nothing changes (the reason or the time it already has, sent again): no write,
                // no new version, no history row, so a retried PUT answers as the first did.
                // The row is one read, and the answer is the appointment as of that read.
                return Ok(Some(current.clone()));
            }
            let action = if target.is_some() {
                to.as_str()
            } else {
                "updated"
            };
            let updated = appointment::update_logged(
                conn,
                &StatusChange {
                    id: current.id,
                    version: current.version,
                    status: to.as_str(),
                    reason,
                    at: crate::time::now(),
                    actor_id: caller.id,
                    action,
                    from_status: from.as_str(),
                },
            )?;
            if let Some(updated) = &updated {
                log::info!(
                    "ATOMIC appointment={id} {} -> {} version={} actor={}",
                    from.as_str(),
                    to.as_str(),
                    updated.version,
                    caller.id
                );
            }
            Ok(updated)
        },
    )
}

/// The status machine's verdict as an API error.
fn check_transition(from: Status, to: Status, party: Party) -> Result<(), AppError> {
    transition(from, to, party).map_err(|err| match err {
        TransitionError::Invalid => AppError::Unprocessable {
            code: "INVALID_TRANSITION",
            message: format!(
                "Invalid status transition from {} to {}",
                from.as_str(),
                to.as_str()
            ),
        },
        TransitionError::NotAllowedFor => AppError::forbidden(format!(
            "You may not move this appointment from {} to {}",
            from.as_str(),
            to.as_str()
        )),
    })
}

/// The history of an appointment the caller may see, oldest first.
pub fn history(conn: &mut DbConn, caller: &Caller, id: i32) -> Result<Vec<HistoryEntry>, AppError> {
    visible_appointment(conn, caller, id)?;
    Ok(history::for_appointment(conn, id)?)
}

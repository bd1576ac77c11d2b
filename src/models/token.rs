//! `api_tokens`: bearer tokens, stored only as SHA-256 hashes.
//!
//! A token carries the `session_epoch` its user had when it was issued, and authenticates
//! only while the user's is still the same: deactivating a user moves the user's epoch on
//! (`services::users::update`), which ends every session issued before for good, even one a
//! login was issuing concurrently, with no lock taken by the login or the check.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::appointment::Appointment;
use super::user::UserStanding;
use super::PurgeBatch;
use crate::db::DbConn;
use crate::on_backend;
use crate::schema::{api_tokens, appointments, users};

/// Stores the hash of a new token for `user_id`, of the user's `session_epoch` as the
/// caller read it with the user.
pub fn insert(
    conn: &mut DbConn,
    user_id: i32,
    session_epoch: i32,
    token_hash: &str,
    now: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(api_tokens::table)
        .values((
            api_tokens::user_id.eq(user_id),
            api_tokens::token_hash.eq(token_hash),
            api_tokens::created_at.eq(now),
            api_tokens::session_epoch.eq(session_epoch),
        ))
        .execute(conn)
        .map(drop)
}

/// Deletes the tokens `user_id` was issued before `session_epoch`. (They no longer
/// authenticate anyway; this keeps them out of the table.)
pub fn delete_before_epoch(
    conn: &mut DbConn,
    user_id: i32,
    session_epoch: i32,
) -> QueryResult<usize> {
    diesel::delete(
        api_tokens::table
            .filter(api_tokens::user_id.eq(user_id))
            .filter(api_tokens::session_epoch.lt(session_epoch)),
    )
    .execute(conn)
}

/// The ids of up to `limit` of the tokens issued at or before `cutoff` (expired ones), the
/// oldest first: an index range on `created_at`.
pub fn issued_before_query(
    cutoff: NaiveDateTime,
    limit: i64,
) -> api_tokens::BoxedQuery<'static, crate::db::DbBackend, diesel::sql_types::Integer> {
    api_tokens::table
        .filter(api_tokens::created_at.le(cutoff))
        .order(api_tokens::created_at)
        .select(api_tokens::id)
        .limit(limit)
        .into_boxed()
}

/// Deletes up to `limit` of the tokens issued at or before `cutoff`, the oldest first.
pub fn delete_issued_before(
    conn: &mut DbConn,
    cutoff: NaiveDateTime,
    limit: i64,
) -> QueryResult<PurgeBatch> {
    let expired: Vec<i32> = issued_before_query(cutoff, limit).load(conn)?;
    // An issue time never changes, so the ids alone are the condition.
    PurgeBatch::of(expired, |ids| {
        diesel::delete(api_tokens::table.filter(api_tokens::id.eq_any(ids))).execute(conn)
    })
}

/// The first row of a token `lookup`, with the expiry condition added when there is one: two
/// fixed statements, each prepared once.
macro_rules! first_unexpired {
    ($lookup:expr, $issued_after:expr, $conn:expr) => {
        match $issued_after {
            None => $lookup.first($conn).optional(),
            Some(t) => $lookup
                .filter(api_tokens::created_at.gt(t))
                .first($conn)
                .optional(),
        }
    };
}

/// The user a token hash belongs to, if the token exists, was issued after `issued_after`
/// when that is given (tokens expire: `MEDBOOK_TOKEN_TTL_HOURS`), and is of the user's
/// current session epoch.
///
/// With and without `issued_after` the lookup is one of two fixed statements, each prepared
/// once: without a token lifetime (the default) it binds no time, which SQLite would get as
/// text formatted anew on every request.
pub fn user_for(
    conn: &mut DbConn,
    token_hash: &str,
    issued_after: Option<NaiveDateTime>,
) -> QueryResult<Option<UserStanding>> {
    on_backend!(conn, |c| {
        let lookup = api_tokens::table
            .inner_join(users::table)
            .filter(api_tokens::token_hash.eq(token_hash))
            .filter(api_tokens::session_epoch.eq(users::session_epoch))
            .select(UserStanding::as_select());
        first_unexpired!(lookup, issued_after, c)
    })
}

/// [`user_for`] and, in the same query, the appointment `appointment_id`
/// (`None` if there is none): one database round trip for a request about one appointment.
pub fn user_and_appointment(
    conn: &mut DbConn,
    token_hash: &str,
    issued_after: Option<NaiveDateTime>,
    appointment_id: i32,
) -> QueryResult<Option<(UserStanding, Option<Appointment>)>> {
    on_backend!(conn, |c| {
        let lookup = api_tokens::table
            .inner_join(users::table)
            .left_join(appointments::table.on(appointments::id.eq(appointment_id)))
            .filter(api_tokens::token_hash.eq(token_hash))
            .filter(api_tokens::session_epoch.eq(users::session_epoch))
            .select((
                UserStanding::as_select(),
                appointments::all_columns.nullable(),
            ));
        first_unexpired!(lookup, issued_after, c)
    })
}

/// Deletes a token; it stops working at once.
pub fn delete(conn: &mut DbConn, token_hash: &str) -> QueryResult<usize> {
    diesel::delete(api_tokens::table.filter(api_tokens::token_hash.eq(token_hash))).execute(conn)
}

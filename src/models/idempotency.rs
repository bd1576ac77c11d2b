//! `idempotency_keys`: claims of `Idempotency-Key`s and the responses stored for them.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::PurgeBatch;
use crate::db::{DbConn, FixedShapeDsl};
use crate::schema::idempotency_keys as keys;

/// An `idempotency_keys` row. Field order follows the table.
#[derive(Debug, Clone, Queryable)]
pub struct IdempotencyRecord {
    pub id: i32,
    pub user_id: i32,
    pub idempotency_key: String,
    pub fingerprint: String,
    pub state: String,
    pub response_status: Option<i32>,
    pub response_headers: Option<String>,
    pub response_body: Option<String>,
    pub claimed_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

/// Inserts an `in_flight` claim; fails with `UniqueViolation` if the key is taken.
pub fn insert_claim(
    conn: &mut DbConn,
    user_id: i32,
    key: &str,
    fingerprint: &str,
    now: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(keys::table)
        .values((
            keys::user_id.eq(user_id),
            keys::idempotency_key.eq(key),
            keys::fingerprint.eq(fingerprint),
            keys::state.eq("in_flight"),
            keys::claimed_at.eq(now),
            keys::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(drop)
}

/// The record of a user's key.
pub fn find(conn: &mut DbConn, user_id: i32, key: &str) -> QueryResult<Option<IdempotencyRecord>> {
    keys::table
        .filter(keys::user_id.eq(user_id))
        .filter(keys::idempotency_key.eq(key))
        .first(conn)
        .optional()
}

/// Re-claims a record for a new request, if it is still as read (`claimed_at` unchanged).
pub fn reclaim(
    conn: &mut DbConn,
    record: &IdempotencyRecord,
    fingerprint: &str,
    now: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> QueryResult<bool> {
    diesel::update(
        keys::table
            .filter(keys::id.eq(record.id))
            .filter(keys::claimed_at.eq(record.claimed_at)),
    )
    .set((
        keys::fingerprint.eq(fingerprint),
        keys::state.eq("in_flight"),
        keys::response_status.eq(None::<i32>),
        keys::response_headers.eq(None::<String>),
        keys::response_body.eq(None::<String>),
        keys::claimed_at.eq(now),
        keys::expires_at.eq(expires_at),
    ))
    .returning(keys::id)
    .fixed_shape()
    .get_result::<i32>(conn)
    .optional()
    .map(|row| row.is_some())
}

/// Stores the response of an `in_flight` claim; `false` if there was no such claim.
pub fn complete(
    conn: &mut DbConn,
    user_id: i32,
    key: &str,
    status: i32,
    headers: &str,
    body: &str,
) -> QueryResult<bool> {
    diesel::update(
        keys::table
            .filter(keys::user_id.eq(user_id))
            .filter(keys::idempotency_key.eq(key))
            .filter(keys::state.eq("in_flight")),
    )
    .set((
        keys::state.eq("completed"),
        keys::response_status.eq(Some(status)),
        keys::response_headers.eq(Some(headers)),
        keys::response_body.eq(Some(body)),
    ))
    .returning(keys::id)
    .fixed_shape()
    .get_result::<i32>(conn)
    .optional()
    .map(|row| row.is_some())
}

/// Drops an `in_flight` claim, so the same key can be tried again.
pub fn release(conn: &mut DbConn, user_id: i32, key: &str) -> QueryResult<usize> {
    diesel::delete(
        keys::table
            .filter(keys::user_id.eq(user_id))
            .filter(keys::idempotency_key.eq(key))
            .filter(keys::state.eq("in_flight")),
    )
    .execute(conn)
}

/// Deletes up to `limit` of the records that expired before `now`, the oldest first.
pub fn purge_expired(conn: &mut DbConn, now: NaiveDateTime, limit: i64) -> QueryResult<PurgeBatch> {
    let expired: Vec<i32> = keys::table
        .filter(keys::expires_at.lt(now))
        .order(keys::expires_at)
        .select(keys::id)
        .limit(limit)
        .load(conn)?;
    // The condition again: a key taken over meanwhile (its expiry moved on) is not purged.
    PurgeBatch::of(expired, |ids| {
        diesel::delete(
            keys::table
                .filter(keys::id.eq_any(ids))
                .filter(keys::expires_at.lt(now)),
        )
        .execute(conn)
    })
}

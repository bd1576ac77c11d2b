//! `Idempotency-Key` handling (after the IETF httpapi idempotency-key draft): a key is scoped
//! to its user, bound to the request's fingerprint (method, path, body digest), and its first
//! response is stored for 24 h and replayed byte for byte.
//!
//! A key is first *claimed* (`in_flight`, committed on its own, so a concurrent repeat sees it
//! and gets 409 `IDEMPOTENCY_KEY_IN_USE`). The work then runs in one transaction that also
//! marks the claim `completed` with the response ([`run_and_record`]), so the work and its
//! record commit together or not at all. A claim whose request died (crash, SIGKILL) is taken
//! over once its lease ran out.

use chrono::{Duration, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::db::{
    classify, write_transaction, write_transaction_without_waiting_for_disk, Contention, DbConn,
    DbErrorClass,
};
use crate::error::AppError;
use crate::models::idempotency::{self as record, IdempotencyRecord};

/// How long a response is kept for replay.
pub const RETENTION_HOURS: i64 = 24;
/// After this long an `in_flight` claim counts as abandoned (its request cannot still be
/// running: statement and lock timeouts are far shorter).
pub const LEASE_SECONDS: i64 = 120;

/// A response as stored for replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    /// The headers worth replaying (`Location`, `ETag`, `Content-Type`).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// The key is ours: do the work.
    Fresh,
    /// The same request was answered before: send this again.
    Replay(StoredResponse),
}

/// Checks the form of a key: 1–255 visible ASCII characters.
pub fn check_key(key: &str) -> Result<(), AppError> {
    if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(AppError::BadRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".to_owned(),
        ))
    }
}

fn decode(record: &IdempotencyRecord) -> Result<StoredResponse, AppError> {
    let headers = record.response_headers.as_deref().unwrap_or("[]");
    Ok(StoredResponse {
        status: record
            .response_status
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| AppError::internal("completed idempotency record without status"))?,
        headers: serde_json::from_str(headers)
            .map_err(|e| AppError::internal(format!("stored headers: {e}")))?,
        body: record.response_body.clone().unwrap_or_default(),
    })
}

/// Claims `key` for this request, or says why not.
pub fn claim(
    conn: &mut DbConn,
    user_id: i32,
    key: &str,
    fingerprint: &str,
) -> Result<Claim, AppError> {
    let now = crate::time::now();
    let expires = now + Duration::hours(RETENTION_HOURS);
    // The claim only has to be seen: the transaction that completes it is durable and carries
    // it to the disk; a claim a crash loses was never answered (see the function).
    let inserted = write_transaction_without_waiting_for_disk(conn, |conn| {
        record::insert_claim(conn, user_id, key, fingerprint, now, expires)
    });
    match inserted {
        Ok(()) => return Ok(Claim::Fresh),
        Err(e) if matches!(classify(&e), DbErrorClass::UniqueViolation { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // Taken: decide from the committed record (the reclaim is guarded by `claimed_at`).
    write_transaction(conn, |conn| {
        let Some(existing) = record::find(conn, user_id, key)? else {
            return Err(in_use());
        };
        let expired = existing.expires_at < now;
        if !expired && existing.fingerprint != fingerprint {
            return Err(AppError::Unprocessable {
                code: "IDEMPOTENCY_KEY_MISMATCH",
                message: "This Idempotency-Key was used for a different request".to_owned(),
            });
        }
        if !expired && existing.state == "completed" {
            return decode(&existing).map(Claim::Replay);
        }
        let abandoned = existing.claimed_at < now - Duration::seconds(LEASE_SECONDS);
        if (expired || abandoned) && record::reclaim(conn, &existing, fingerprint, now, expires)? {
            log::warn!(
                "ATOMIC idempotency key of user={user_id} re-claimed (expired or abandoned)"
            );
            return Ok(Claim::Fresh);
        }
        Err(in_use())
    })
}

fn in_use() -> AppError {
    AppError::conflict(
        crate::error::ConflictCode::IdempotencyKeyInUse,
        "A request with this Idempotency-Key is still being processed",
    )
}

/// Runs `work` and records its response under the claimed key in the same transaction.
/// `work` may run again if the caller retries the transaction.
pub fn run_and_record(
    conn: &mut DbConn,
    user_id: i32,
    key: &str,
    mut work: impl FnMut(&mut DbConn) -> Result<StoredResponse, AppError> + Send,
) -> Result<StoredResponse, AppError> {
    write_transaction(conn, |conn| {
        let response = work(conn)?;
        store(conn, user_id, key, &response)?;
        Ok(response)
    })
}

fn store(
    conn: &mut DbConn,
    user_id: i32,
    key: &str,
    response: &StoredResponse,
) -> Result<(), AppError> {
    let headers = serde_json::to_string(&response.headers)
        .map_err(|e| AppError::internal(format!("headers: {e}")))?;
    if record::complete(
        conn,
        user_id,
        key,
        i32::from(response.status),
        &headers,
        &response.body,
    )? {
        Ok(())
    } else {
        // The claim was taken over (our request outlived its lease): do not commit the work.
        Err(in_use())
    }
}

/// Records a final error response (no work was committed, so there is nothing to be
/// inconsistent with) for replay.
pub fn record_error(
    conn: &mut DbConn,
    user_id: i32,
    key: &str,
    response: &StoredResponse,
) -> Result<(), AppError> {
    write_transaction(conn, |conn| store(conn, user_id, key, response))
}

/// Releases a claim after a transient failure, so that a retry runs the request again.
pub fn release(conn: &mut DbConn, user_id: i32, key: &str) -> Result<(), AppError> {
    write_transaction(conn, |conn| record::release(conn, user_id, key).map(drop))
        .map_err(AppError::from)
}

/// Deletes expired records, [`super::PURGE_BATCH`] per transaction; returns how many.
pub fn purge_expired(
    conn: &mut DbConn,
    contention: &Contention,
    now: NaiveDateTime,
) -> Result<usize, AppError> {
    super::purge_in_batches(conn, contention, "purge idempotency keys", |conn, limit| {
        record::purge_expired(conn, now, limit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_1_to_255_visible_characters() {
        assert!(check_key("a").is_ok());
        assert!(check_key(&"k".repeat(255)).is_ok());
        assert!(check_key("order-42:retry").is_ok());
        for bad in ["", " ", "with space", "tab\t", "ünïcode"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_key(&"k".repeat(256)).is_err());
    }
}

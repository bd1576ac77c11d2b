//! POST handlers' shared path: run the work, honouring `Idempotency-Key`.

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use crate::auth::{Bearer, Caller};
use crate::db::{run_blocking, with_retry, Contention, DbConn, DbErrorClass};
use crate::error::{AppError, ConflictCode};
use crate::extract::BodyDigest;
use crate::server::AppState;
use crate::services::idempotency::{self, Claim, StoredResponse};
use crate::telemetry::Telemetry;

/// The request header that makes a POST idempotent.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response of a successful POST, built inside the work so that it can be stored.
pub fn json<T: Serialize>(
    status: StatusCode,
    location: Option<String>,
    version: i32,
    body: &T,
) -> Result<StoredResponse, AppError> {
    let mut headers = vec![
        (
            header::CONTENT_TYPE.to_string(),
            "application/json".to_owned(),
        ),
        (header::ETAG.to_string(), format!("\"{version}\"")),
    ];
    if let Some(location) = location {
        headers.push((header::LOCATION.to_string(), location));
    }
    Ok(StoredResponse {
        status: status.as_u16(),
        headers,
        body: serde_json::to_string(body)
            .map_err(|e| AppError::internal(format!("response: {e}")))?,
    })
}

fn respond(stored: StoredResponse, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            response.insert_header((name, value));
        }
    }
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.body(stored.body)
}

/// Method, path with query, and body digest: what makes two requests "the same".
fn fingerprint(req: &HttpRequest) -> String {
    let mut hasher = Sha256::new();
    hasher.update(req.method().as_str());
    hasher.update(b"\n");
    hasher.update(req.uri().path_and_query().map_or("", |p| p.as_str()));
    hasher.update(b"\n");
    if let Some(BodyDigest(digest)) = req.extensions().get::<BodyDigest>() {
        hasher.update(digest);
    }
    hex::encode(hasher.finalize())
}

/// An error response that a repeat should get again: a final client error. Transient ones
/// (deadlock retries exhausted, lock timeout, 5xx) release the key instead.
fn is_final(err: &AppError) -> bool {
    use actix_web::ResponseError;
    err.status_code().is_client_error()
        && !matches!(
            err.conflict_code(),
            Some(ConflictCode::DeadlockDetected | ConflictCode::LockTimeout)
        )
}

fn stored_error(err: &AppError) -> StoredResponse {
    use actix_web::body::MessageBody;
    use actix_web::ResponseError;
    let response = err.error_response();
    let body = response
        .into_body()
        .try_into_bytes()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    StoredResponse {
        status: err.status_code().as_u16(),
        headers: vec![(
            header::CONTENT_TYPE.to_string(),
            "application/json".to_owned(),
        )],
        body,
    }
}

/// Releases `user`'s claim of `key` after a failure, retried like every write.
fn release(
    conn: &mut DbConn,
    contention: &Contention,
    user: i32,
    key: &str,
) -> Result<(), AppError> {
    with_retry(
        contention,
        "release key",
        format_args!("user={user}"),
        |_| idempotency::release(conn, user, key),
    )
}

/// Logs and counts a key that stays claimed after a failure (until its lease runs out).
fn release_failed(telemetry: &Telemetry, err: &AppError) {
    telemetry
        .idempotency_failures
        .fetch_add(1, Ordering::Relaxed);
    log::error!(
        "could not release an idempotency key after a failure: {}",
        err.detail()
    );
}

/// Runs `work` (one service call that builds its response) as the caller; with an
/// `Idempotency-Key` header, claims the key first and records the response in the work's
/// transaction.
///
/// All of it is one hand-off to a database thread: the token check, the claim (a transaction
/// of its own, so that a repeat sees it at once), the work with its record (another), and
/// after a failure the record of a final error or the claim's release (also when the final
/// error could not be recorded). Only when the connection is gone is the claim released
/// through another one.
pub async fn post<F>(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    bearer: Bearer,
    work: F,
) -> Result<HttpResponse, AppError>
where
    F: FnMut(&mut DbConn, &Caller) -> Result<StoredResponse, AppError> + Send + 'static,
{
    let key = match crate::extract::sole_header(req, &IDEMPOTENCY_KEY)? {
        None => {
            return state
                .as_caller(bearer, work)
                .await
                .map(|r| respond(r, false))
        }
        Some(value) => value.to_str().unwrap_or("").to_owned(),
    };
    idempotency::check_key(&key)?;
    let fingerprint = fingerprint(req);
    // The user whose claim is still held after the work failed on a broken connection (0:
    // none; ids start at 1).
    let stranded = Arc::new(AtomicI32::new(0));
    let result = state
        .as_caller(bearer, {
            let (key, stranded) = (key.clone(), Arc::clone(&stranded));
            let telemetry = Arc::clone(&state.telemetry);
            let contention = state.contention.clone();
            let mut work = work;
            move |conn, caller| {
                let user = caller.id;
                // The claim, and the work with its record, are each a transaction that a
                // deadlock or SQLite BUSY rolls back whole: retried like every write.
                let ids = format_args!("user={user}");
                let claim = with_retry(&contention, "claim key", ids, |_| {
                    idempotency::claim(conn, user, &key, &fingerprint)
                })?;
                if let Claim::Replay(stored) = claim {
                    return Ok((stored, true));
                }
                let err = match with_retry(&contention, "keyed work", ids, |_| {
                    idempotency::run_and_record(conn, user, &key, |conn| work(conn, caller))
                }) {
                    Ok(stored) => return Ok((stored, false)),
                    Err(err) => err,
                };
                // A final error is stored, so that a repeat gets it again. A transient one, or
                // a final one that could not be stored, frees the key instead: nothing was
                // committed, and a retry runs the request again (rather than meeting
                // IDEMPOTENCY_KEY_IN_USE until the claim's lease runs out). Both are one
                // transaction each, retried like every write.
                let broken = if is_final(&err) {
                    let stored = stored_error(&err);
                    match with_retry(&contention, "store keyed error", ids, |_| {
                        idempotency::record_error(conn, user, &key, &stored)
                    }) {
                        Ok(()) => return Err(err),
                        Err(record) => {
                            telemetry.idempotency_failures.fetch_add(1, Ordering::Relaxed);
                            log::error!(
                                "could not store a final error under an idempotency key, releasing it: {}",
                                record.detail()
                            );
                            record.db_class() == Some(DbErrorClass::Unavailable)
                        }
                    }
                } else {
                    err.db_class() == Some(DbErrorClass::Unavailable)
                };
                if broken {
                    // This connection is gone (the pool drops it): release through another.
                    stranded.store(user, Ordering::Relaxed);
                } else if let Err(release) = release(conn, &contention, user, &key) {
                    release_failed(&telemetry, &release);
                }
                Err(err)
            }
        })
        .await;
    let user = stranded.load(Ordering::Relaxed);
    if result.is_err() && user != 0 {
        let contention = state.contention.clone();
        if let Err(release) = run_blocking(&state.pool, move |conn| {
            release(conn, &contention, user, &key)
        })
        .await
        {
            release_failed(&state.telemetry, &release);
        }
    }
    result.map(|(stored, replayed)| respond(stored, replayed))
}

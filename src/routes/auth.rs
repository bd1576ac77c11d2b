//! Register, login, logout, `/me`.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::openapi::{AuthResponse, ErrorDoc, IfNoneMatch};
use super::{def, RouteDef};
use crate::auth::{hash_password, new_token, verify_password, Bearer};
use crate::db::run_blocking;
use crate::error::AppError;
use crate::extract::{etag, Json, NoQuery};
use crate::models::user::{self, UserView};
use crate::server::AppState;
use crate::services::auth::{self as service, LoginInput, RegisterInput};
use crate::services::validate::Problems;

pub(crate) fn routes() -> Vec<RouteDef> {
    vec![
        def(
            Method::POST,
            "/api/v1/auth/register",
            web::route().to(register),
        ),
        def(Method::POST, "/api/v1/auth/login", web::route().to(login)),
        def(Method::POST, "/api/v1/auth/logout", web::route().to(logout)),
        def(Method::GET, "/api/v1/me", web::route().to(me)),
    ]
}

/// At most one argon2 computation per two cores at a time (at least one): each takes 19 MiB
/// and a core's worth of CPU for ~20 ms, and a login burst must take neither the memory nor
/// the CPU the bookings need. On 2 cores that is one at a time: 19 MiB of the process's peak
/// instead of 38, and about 40 logins a second in a burst (BENCHMARKS.md, "What changed",
/// round after run Z).
fn password_work() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(password_hashes_at_once(crate::config::cores()))
    })
}

/// How many passwords are hashed at once on `cores` cores.
fn password_hashes_at_once(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// Runs `work` (argon2) on a blocking thread, no connection or transaction held, within the
/// limit above.
async fn with_password_permit<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    let _permit = password_work()
        .acquire()
        .await
        .map_err(|e| AppError::internal(format!("hashing limiter: {e}")))?;
    web::block(work)
        .await
        .map_err(|e| AppError::internal(format!("hashing task failed: {e}")))
}

/// Hashes a password off the async workers and outside any transaction.
pub async fn hash_in_background(password: String) -> Result<String, AppError> {
    with_password_permit(move || hash_password(&password)).await?
}

/// Registers a patient and logs them in.
#[utoipa::path(post, operation_id = "auth_register", path = "/api/v1/auth/register", tag = "auth", request_body = RegisterInput,
    params(super::openapi::IdempotencyKey),
    responses(
        (status = 201, description = "Patient created", body = AuthResponse,
            headers(("ETag" = String, description = "The user's version"))),
        (status = 400, description = "Not JSON", body = ErrorDoc),
        (status = 409, description = "EMAIL_TAKEN", body = ErrorDoc),
        (status = 413, description = "Body over 64 KiB", body = ErrorDoc),
        (status = 422, description = "VALIDATION_FAILED", body = ErrorDoc),
        (status = 503, description = "Database unavailable", body = ErrorDoc),
    ))]
pub(crate) async fn register(
    state: web::Data<AppState>,
    _: NoQuery,
    Json(input): Json<RegisterInput>,
) -> Result<HttpResponse, AppError> {
    let mut problems = Problems::default();
    service::check_account(&mut problems, &input.name, &input.email, &input.password);
    problems.finish()?;
    let email = input.email.trim().to_owned();
    run_blocking(&state.pool, move |conn| {
        service::ensure_email_free(conn, &email)
    })
    .await?;
    let password_hash = hash_in_background(input.password.clone()).await?;
    let (token, token_hash) = new_token();
    let contention = state.contention.clone();
    let user = run_blocking(&state.pool, move |conn| {
        service::register_patient(conn, &input, &password_hash, &token_hash, &contention)
    })
    .await?;
    Ok(HttpResponse::Created()
        .insert_header(etag(user.version))
        .json(json!({ "user": user.view(), "token": token })))
}

/// Logs in with email and password.
#[utoipa::path(post, operation_id = "auth_login", path = "/api/v1/auth/login", tag = "auth", request_body = LoginInput,
    params(super::openapi::IdempotencyKey),
    responses(
        (status = 200, description = "Logged in", body = AuthResponse),
        (status = 400, description = "Not JSON", body = ErrorDoc),
        (status = 401, description = "Wrong email or password (same message for both), or deactivated", body = ErrorDoc),
        (status = 422, description = "VALIDATION_FAILED", body = ErrorDoc),
    ))]
pub(crate) async fn login(
    state: web::Data<AppState>,
    _: NoQuery,
    Json(input): Json<LoginInput>,
) -> Result<HttpResponse, AppError> {
    let email = input.email.trim().to_owned();
    let found = run_blocking(&state.pool, move |conn| {
        Ok(user::find_by_email(conn, &email)?)
    })
    .await?;
    let stored_hash = found.as_ref().map(|u| u.password_hash.clone());
    let password = input.password;
    // An unknown email costs a verification too, so timing does not tell which part was wrong.
    let verified = with_password_permit(move || match stored_hash {
        Some(hash) => verify_password(&password, &hash),
        None => {
            let _ = hash_password(&password);
            false
        }
    })
    .await?;
    let user_id = match found {
        Some(user) if verified => user.id,
        _ => return Err(service::invalid_credentials()),
    };
    // A deactivated account is refused there, on a read taken after the password check.
    let (token, token_hash) = new_token();
    let contention = state.contention.clone();
    let user = run_blocking(&state.pool, move |conn| {
        service::issue_token(conn, user_id, &token_hash, &contention)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "user": user.view(), "token": token })))
}

/// Revokes the token used.
#[utoipa::path(post, operation_id = "auth_logout", path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    params(super::openapi::IdempotencyKey),
    responses(
        (status = 204, description = "The token stopped working"),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
    ))]
pub(crate) async fn logout(
    state: web::Data<AppState>,
    bearer: Bearer,
    _: NoQuery,
) -> Result<HttpResponse, AppError> {
    let contention = state.contention.clone();
    state
        .as_caller(bearer, move |conn, caller| {
            service::logout(conn, &caller.token_hash, &contention)
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The authenticated user.
#[utoipa::path(get, operation_id = "auth_me", path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    params(IfNoneMatch),
    responses(
        (status = 200, description = "The caller", body = UserView,
            headers(("ETag" = String, description = "The user's version"))),
        (status = 304, description = "Not modified: If-None-Match names the current version", headers(("ETag" = String))),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorDoc),
    ))]
pub(crate) async fn me(
    state: web::Data<AppState>,
    bearer: Bearer,
    _: NoQuery,
) -> Result<HttpResponse, AppError> {
    let user = state
        .as_caller(bearer, move |conn, caller| {
            user::find(conn, caller.id)?.ok_or(AppError::Unauthenticated)
        })
        .await?;
    Ok(super::versioned(
        actix_web::http::StatusCode::OK,
        user.version,
        &user.view(),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_password_is_hashed_at_a_time_per_two_cores() {
        for (cores, at_once) in [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)] {
            assert_eq!(password_hashes_at_once(cores), at_once, "{cores} cores");
        }
    }

    #[actix_web::test]
    async fn no_more_passwords_than_that_are_hashed_at_once() {
        let limit = password_hashes_at_once(crate::config::cores());
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let hashes = (0..2 * limit + 1).map(|_| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            with_password_permit(move || {
                most.fetch_max(running.fetch_add(1, SeqCst) + 1, SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                running.fetch_sub(1, SeqCst);
            })
        });
        for done in futures_util::future::join_all(hashes).await {
            done.unwrap();
        }
        assert_eq!(most.load(SeqCst), limit);
    }
}

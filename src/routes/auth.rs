//! Register, login, logout, `/me`.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::openapi::{AuthResponse, ErrorDoc, IfNoneMatch};
use super::{def, RouteDef};
use crate::auth::{
    check_password, hash_password, new_token, verify_nothing, Bearer, PasswordCheck,
};
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

/// Runs `work` (argon2) on a blocking thread, no connection or transaction held, once one of
/// `permits` is free (`MEDBOOK_PASSWORD_HASHES`, by default one per two cores: each hash holds
/// 19 MiB and a core; `config::default_password_hashes`).
async fn with_password_permit<T: Send + 'static>(
    permits: &tokio::sync::Semaphore,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    let _permit = permits
        .acquire()
        .await
        .map_err(|e| AppError::internal(format!("hashing limiter: {e}")))?;
    web::block(work)
        .await
        .map_err(|e| AppError::internal(format!("hashing task failed: {e}")))
}

/// Hashes a password off the async workers and outside any transaction.
pub async fn hash_in_background(state: &AppState, password: String) -> Result<String, AppError> {
    with_password_permit(&state.password_hashing, move || hash_password(&password)).await?
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
    let password_hash = hash_in_background(&state, input.password.clone()).await?;
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
    // A hash stored before passwords were normalized is replaced by one of the normal form,
    // hashed here, with no transaction open.
    let checked = with_password_permit(&state.password_hashing, move || match stored_hash {
        Some(stored) => match check_password(&password, &stored) {
            PasswordCheck::Wrong => Ok(Checked::Refused),
            PasswordCheck::Right => Ok(Checked::Verified(None)),
            PasswordCheck::RightAsSent => hash_password(&password)
                .map(|normal| Checked::Verified(Some(service::NewHash { stored, normal }))),
        },
        None => {
            verify_nothing(&password);
            Ok(Checked::Refused)
        }
    })
    .await??;
    let (user_id, new_hash) = match (found, checked) {
        (Some(user), Checked::Verified(new_hash)) => (user.id, new_hash),
        _ => return Err(service::invalid_credentials()),
    };
    // A deactivated account is refused there, on a read taken after the password check.
    let (token, token_hash) = new_token();
    let contention = state.contention.clone();
    let user = run_blocking(&state.pool, move |conn| {
        service::issue_token(conn, user_id, &token_hash, new_hash.as_ref(), &contention)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "user": user.view(), "token": token })))
}

/// What a login's password check found: refused, or verified, with a hash to store in place
/// of one from before passwords were normalized.
enum Checked {
    Refused,
    Verified(Option<service::NewHash>),
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

    #[actix_web::test]
    async fn no_more_passwords_than_the_permits_are_hashed_at_once() {
        for limit in [1, 2] {
            let permits = tokio::sync::Semaphore::new(limit);
            let total = 2 * limit + 1;
            let counters = Arc::new([(); 3].map(|_| AtomicUsize::new(0)));
            let hashes = (0..total).map(|_| {
                let counters = Arc::clone(&counters);
                with_password_permit(&permits, move || {
                    let [running, most, started] = &*counters;
                    started.fetch_add(1, SeqCst);
                    most.fetch_max(running.fetch_add(1, SeqCst) + 1, SeqCst);
                    // Each waits until as many run as may (or none are left to start), so
                    // that the limit is reached however slowly threads start.
                    let until = std::time::Instant::now() + Duration::from_secs(2);
                    while running.load(SeqCst) < limit
                        && started.load(SeqCst) < total
                        && std::time::Instant::now() < until
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, SeqCst);
                })
            });
            for done in futures_util::future::join_all(hashes).await {
                done.unwrap();
            }
            assert_eq!(counters[1].load(SeqCst), limit, "{limit} permits");
        }
    }
}

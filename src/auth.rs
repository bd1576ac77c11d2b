//! Passwords (argon2id), bearer tokens (random, stored as SHA-256), the [`Bearer`] extractor,
//! [`authenticate`], which turns a token into the [`Caller`], and the middleware that answers
//! 401 for a bad token before any other refusal ([`check_token_of_refused_request`]).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine;
use chrono::NaiveDateTime;
use rand::RngCore;
use sha2::{Digest, Sha256};
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

use crate::db::{run_blocking, DbConn};
use crate::domain::Role;
use crate::error::AppError;
use crate::models::appointment::Appointment;
use crate::models::token;
use crate::models::user::UserStanding;
use crate::server::AppState;

/// Hashes a password with argon2id and a random salt, in the form [`normal_password`] gives
/// it. Slow on purpose: never call it while holding a transaction.
pub fn hash_password(password: &str) -> Result<String, AppError> {
    hash(&normal_password(password))
}

fn hash(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AppError::internal(format!("password hashing failed: {e}")))
}

/// A password as it is hashed and checked: in Unicode's compatibility composed form (NFKC),
/// as NIST SP 800-63B asks, so that one password typed on two devices is one password
/// whatever each sends (an `é` as one character or as `e` and a combining accent, a digit
/// in full width from an East Asian input method). ASCII is its own form.
pub fn normal_password(password: &str) -> Cow<'_, str> {
    if is_nfkc_quick(password.chars()) == IsNormalized::Yes {
        Cow::Borrowed(password)
    } else {
        Cow::Owned(password.nfkc().collect())
    }
}

/// How a password compares with a stored hash ([`check_password`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    Wrong,
    Right,
    /// Right as sent but not in [`normal_password`]'s form: the hash was stored before
    /// passwords were normalized. The login stores a hash of the normal form in its place
    /// (`services::auth::issue_token`), after which every spelling of the password matches.
    RightAsSent,
}

/// Checks a password against a stored hash. A hash stored before passwords were normalized
/// holds the password as it was sent, so a password that normalizing changes is also
/// checked as sent. (That second check can match only such a hash: a hash of a normal form
/// never matches a password that is not in it.)
pub fn check_password(password: &str, stored: &str) -> PasswordCheck {
    let Ok(hash) = PasswordHash::new(stored) else {
        return PasswordCheck::Wrong;
    };
    let matches = |password: &str| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    };
    let normal = normal_password(password);
    if matches(&normal) {
        PasswordCheck::Right
    } else if normal != password && matches(password) {
        PasswordCheck::RightAsSent
    } else {
        PasswordCheck::Wrong
    }
}

/// Costs what [`check_password`] costs for a password that matches nothing, with no hash to
/// check it against: a login with an unknown email costs as much as one with a wrong
/// password, so timing does not tell which part was wrong.
pub fn verify_nothing(password: &str) {
    let normal = normal_password(password);
    let _ = hash(&normal);
    if normal != password {
        let _ = hash(password);
    }
}

/// A new random token (256 bits, URL-safe base64) and the hash that is stored for it.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&token);
    (token, hash)
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated, active user making the request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: i32,
    pub role: Role,
    /// The hash of the token used, so logout can revoke exactly this one.
    pub token_hash: String,
}

impl Caller {
    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(AppError::forbidden("Only an admin may do this"))
        }
    }
}

/// The token of the request's `Authorization: Bearer …` header; none if the header is sent
/// twice (two tokens are no credentials, whichever comes first).
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = crate::extract::sole_header(req, &header::AUTHORIZATION)
        .ok()??
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A [`bearer_token`] of a length medbook issues (longer ones are not looked up).
fn bearer(req: &HttpRequest) -> Option<String> {
    bearer_token(req)
        .filter(|token| token.len() <= 512)
        .map(str::to_owned)
}

/// The bearer token of a request, not yet checked: checking it needs the database, and is
/// done in the same blocking task as the request's work ([`AppState::as_caller`]).
#[derive(Debug, Clone)]
pub struct Bearer {
    token_hash: String,
    /// Tokens issued at or before this have expired (`None`: tokens do not expire).
    issued_after: Option<NaiveDateTime>,
    /// Set when the token is checked. A copy stays in the request's extensions for
    /// [`check_token_of_refused_request`].
    checked: Arc<AtomicBool>,
}

impl FromRequest for Bearer {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ttl = req
            .app_data::<web::Data<AppState>>()
            .and_then(|state| state.token_ttl);
        let found = bearer(req).map(|token| Bearer {
            token_hash: hash_token(&token),
            issued_after: issued_after(ttl),
            checked: Arc::default(),
        });
        if let Some(bearer) = &found {
            req.extensions_mut().insert(bearer.clone());
        }
        std::future::ready(found.ok_or(AppError::Unauthenticated))
    }
}

/// The moment at or before which a token was issued too long ago to authenticate, under a
/// token lifetime of `ttl` (`None`: tokens do not expire).
pub fn issued_after(ttl: Option<chrono::Duration>) -> Option<NaiveDateTime> {
    ttl.map(|ttl| {
        crate::time::now()
            .checked_sub_signed(ttl)
            .unwrap_or(NaiveDateTime::MIN)
    })
}

/// The active user a bearer token belongs to; 401 for an unknown, revoked or expired token or
/// a deactivated user.
pub fn authenticate(conn: &mut DbConn, bearer: &Bearer) -> Result<Caller, AppError> {
    caller_of(
        token::user_for(conn, &bearer.token_hash, bearer.issued_after)?,
        bearer,
    )
}

/// Middleware: a request refused before its token was checked (a body, query, path or
/// `If-Match` that does not parse, a body over the limit) answers 401 if the token does not
/// authenticate, as a request without one does: a revoked or unknown token is the first thing
/// for the client to fix, and API.md answers it with 401. The token is checked only then, on
/// that error path; a request whose token was checked keeps its answer.
pub async fn check_token_of_refused_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let response = next.call(req).await?;
    let refused_early =
        response.status().is_client_error() && response.status() != StatusCode::UNAUTHORIZED;
    let unchecked = refused_early
        .then(|| response.request().extensions().get::<Bearer>().cloned())
        .flatten()
        .filter(|bearer| !bearer.checked.load(Relaxed));
    let state = || {
        response
            .request()
            .app_data::<web::Data<AppState>>()
            .cloned()
    };
    if let Some((bearer, state)) = unchecked.and_then(|bearer| Some((bearer, state()?))) {
        let checked = run_blocking(&state.pool, move |conn| authenticate(conn, &bearer)).await;
        if let Err(err @ AppError::Unauthenticated) = checked {
            let request = response.request().clone();
            return Ok(ServiceResponse::new(request, err.error_response()).map_into_right_body());
        }
    }
    Ok(response.map_into_left_body())
}

/// [`authenticate`], and the appointment `id` (if it exists) read in the same query. The
/// appointment is not yet checked against the caller (see `services::visible`).
pub fn authenticate_with_appointment(
    conn: &mut DbConn,
    bearer: &Bearer,
    id: i32,
) -> Result<(Caller, Option<Appointment>), AppError> {
    let (user, appointment) =
        token::user_and_appointment(conn, &bearer.token_hash, bearer.issued_after, id)?.unzip();
    Ok((caller_of(user, bearer)?, appointment.flatten()))
}

/// The caller a token lookup found, or 401; either way the token counts as checked.
fn caller_of(user: Option<UserStanding>, bearer: &Bearer) -> Result<Caller, AppError> {
    bearer.checked.store(true, Relaxed);
    match user {
        Some(user) if user.is_active => Ok(Caller {
            id: user.id,
            role: user.role(),
            token_hash: bearer.token_hash.clone(),
        }),
        _ => Err(AppError::Unauthenticated),
    }
}

impl AppState {
    /// Runs `f` as the authenticated caller. The token check and the work share one blocking
    /// task and one pooled connection: one thread hand-off per request, not two.
    pub async fn as_caller<T, F>(&self, bearer: Bearer, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut DbConn, &Caller) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        run_blocking(&self.pool, move |conn| {
            let caller = authenticate(conn, &bearer)?;
            f(conn, &caller)
        })
        .await
    }

    /// [`as_caller`](Self::as_caller) for a request about appointment `id`: `f` also gets the
    /// appointment as it was when the token was checked (`None`: there is none), read in the
    /// same query, so that the request needs one database round trip fewer. Like any read
    /// outside a transaction it may be stale by the time `f` writes: updates built on it are
    /// conditional on its `version`.
    pub async fn as_caller_with_appointment<T, F>(
        &self,
        bearer: Bearer,
        id: i32,
        f: F,
    ) -> Result<T, AppError>
    where
        F: FnOnce(&mut DbConn, &Caller, Option<Appointment>) -> Result<T, AppError>
            + Send
            + 'static,
        T: Send + 'static,
    {
        run_blocking(&self.pool, move |conn| {
            let (caller, appointment) = authenticate_with_appointment(conn, &bearer, id)?;
            f(conn, &caller, appointment)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(check_password("correct horse", &hash), PasswordCheck::Right);
        assert_eq!(check_password("wrong horse", &hash), PasswordCheck::Wrong);
        assert_eq!(
            check_password("correct horse", "not a hash"),
            PasswordCheck::Wrong
        );
    }

    #[test]
    fn a_password_is_one_password_however_unicode_spells_it() {
        // "é" as one character, and as "e" and a combining acute accent; full-width digits.
        let composed = "caf\u{e9} 2024!";
        let hash = hash_password(composed).unwrap();
        let right =
            |password: &str, hash: &str| check_password(password, hash) == PasswordCheck::Right;
        assert!(right("cafe\u{301} 2024!", &hash));
        assert!(right("caf\u{e9} \u{ff12}\u{ff10}\u{ff12}\u{ff14}!", &hash));
        assert_eq!(
            check_password("cafe 2024!", &hash),
            PasswordCheck::Wrong,
            "the accent counts"
        );
        let hash = hash_password("cafe\u{301} 2024!").unwrap();
        assert!(right(composed, &hash));
        // A hash stored before normalizing holds the password as it was sent.
        let before = super::hash("cafe\u{301} 2024!").unwrap();
        assert_eq!(
            check_password("cafe\u{301} 2024!", &before),
            PasswordCheck::RightAsSent
        );
        assert_eq!(check_password("cafe 2024!", &before), PasswordCheck::Wrong);
        assert_eq!(normal_password("plain ascii"), Cow::Borrowed("plain ascii"));
    }

    #[actix_web::test]
    async fn a_token_counts_as_checked_once_looked_up_whatever_the_answer() {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer some-token"))
            .to_http_request();
        let bearer = Bearer::extract(&req).await.unwrap();
        let checked = || {
            req.extensions()
                .get::<Bearer>()
                .unwrap()
                .checked
                .load(Relaxed)
        };
        assert!(!checked(), "not checked before a lookup");
        // Both lookups (with and without the appointment) end in `caller_of`.
        assert!(caller_of(None, &bearer).is_err());
        assert!(checked(), "the copy the middleware reads sees the check");
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, hash_a) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert!(a.len() >= 43);
        assert_eq!(hash_token(&a), hash_a);
        assert_ne!(hash_a, a);
    }
}

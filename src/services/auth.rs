//! Registration, login and logout. Password hashing happens before these functions are
//! called (see `routes::auth`), never inside a transaction.

use chrono::NaiveDateTime;
use serde::Deserialize;

use super::validate::Problems;
use crate::db::{classify, retried_write, Contention, DbConn, DbErrorClass};
use crate::domain::Role;
use crate::error::{AppError, ConflictCode};
use crate::models::token;
use crate::models::user::{self, NewUser, User};

/// `POST /auth/register` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Register)]
pub struct RegisterInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(format = Email)]
    pub email: String,
    /// 8 to 1024 characters, counted in Unicode's NFKC form, in which it is hashed and
    /// checked (README).
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Login)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
}

/// Checks the fields of a new account (shared by registration and admin creation).
pub fn check_account(problems: &mut Problems, name: &str, email: &str, password: &str) {
    problems.text("name", name, 200);
    problems.email("email", email);
    problems.password("password", password);
}

/// 409 `EMAIL_TAKEN` early, so that a taken email costs no password hash. The unique
/// `email_key` index still decides between concurrent registrations.
pub fn ensure_email_free(conn: &mut DbConn, email: &str) -> Result<(), AppError> {
    match user::find_by_email(conn, email.trim())? {
        Some(_) => Err(email_taken()),
        None => Ok(()),
    }
}

fn email_taken() -> AppError {
    AppError::conflict(ConflictCode::EmailTaken, "Email is already registered")
}

/// Maps the unique-email violation of an insert to 409 `EMAIL_TAKEN`.
pub fn map_email_conflict(err: diesel::result::Error) -> AppError {
    match classify(&err) {
        DbErrorClass::UniqueViolation { .. } => email_taken(),
        _ => AppError::Database(err),
    }
}

/// Registers a patient (password already hashed) and stores their first token, in one
/// transaction.
pub fn register_patient(
    conn: &mut DbConn,
    input: &RegisterInput,
    password_hash: &str,
    token_hash: &str,
    contention: &Contention,
) -> Result<User, AppError> {
    let now = crate::time::now();
    let new = NewUser {
        name: input.name.trim(),
        email: input.email.trim(),
        password_hash,
        role: Role::Patient.as_str(),
        specialty: None,
        is_active: true,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    retried_write(conn, contention, "register", "", |conn, _| {
        let user = user::insert(conn, &new).map_err(map_email_conflict)?;
        token::insert(conn, user.id, user.session_epoch, token_hash, now)?;
        Ok(user)
    })
}

/// The generic answer to a failed login: the same for an unknown email and a wrong password.
pub fn invalid_credentials() -> AppError {
    AppError::InvalidCredentials("Invalid email or password".to_owned())
}

/// Stores a new token for a user whose password was verified, and returns the user as it is
/// now. The user is read again here, not taken from the read before the password check: a
/// deactivation during that check (tens of milliseconds of argon2) refuses the login. One that
/// commits after this read moves the user's session epoch past the token's, so the token never
/// authenticates; no lock is needed for that. A password that matched its hash only as sent
/// (`new_hash`) has that hash replaced in the same transaction.
pub fn issue_token(
    conn: &mut DbConn,
    user_id: i32,
    token_hash: &str,
    new_hash: Option<&NewHash>,
    contention: &Contention,
) -> Result<User, AppError> {
    let ids = format_args!("user={user_id}");
    retried_write(conn, contention, "login", ids, |conn, _| {
        let user = user::find(conn, user_id)?.ok_or_else(invalid_credentials)?;
        if !user.is_active {
            return Err(account_deactivated());
        }
        if let Some(new_hash) = new_hash {
            user::replace_password_hash(conn, user.id, &new_hash.stored, &new_hash.normal)?;
        }
        token::insert(
            conn,
            user.id,
            user.session_epoch,
            token_hash,
            crate::time::now(),
        )?;
        Ok(user)
    })
}

/// A login's password matched its stored hash only as sent, not in its normal form
/// ([`crate::auth::PasswordCheck::RightAsSent`]): the hash it matched, and one of the normal
/// form to store in its place.
pub struct NewHash {
    pub stored: String,
    pub normal: String,
}

/// The answer to a login with the right password for a deactivated account.
fn account_deactivated() -> AppError {
    AppError::InvalidCredentials("Account is deactivated".to_owned())
}

/// Revokes one token.
pub fn logout(
    conn: &mut DbConn,
    token_hash: &str,
    contention: &Contention,
) -> Result<(), AppError> {
    retried_write(conn, contention, "logout", "", |conn, _| {
        token::delete(conn, token_hash)?;
        Ok(())
    })
}

/// Deletes the tokens issued at or before `cutoff` (expired under the configured lifetime),
/// [`super::PURGE_BATCH`] per transaction; returns how many. Expired tokens are refused
/// whether or not they were deleted yet: this only keeps the table small.
pub fn purge_expired_tokens(
    conn: &mut DbConn,
    contention: &Contention,
    cutoff: NaiveDateTime,
) -> Result<usize, AppError> {
    super::purge_in_batches(conn, contention, "purge tokens", |conn, limit| {
        token::delete_issued_before(conn, cutoff, limit)
    })
}

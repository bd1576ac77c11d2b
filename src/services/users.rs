//! Users seen by admins: creation with any role, activation and renaming, and the bootstrap
//! admin from the environment.

use crate::db::FixedShapeDsl;
use diesel::prelude::*;
use serde::Deserialize;

use super::auth::{check_account, map_email_conflict};
use super::optimistic::update_versioned;
use super::patch::Patch;
use super::validate::Problems;
use crate::auth::Caller;
use crate::db::{classify, retried_write, write_transaction, Contention, DbConn, DbErrorClass};
use crate::domain::Role;
use crate::error::AppError;
use crate::extract::Expected;
use crate::models::token;
use crate::models::user::{self, NewUser, User};
use crate::schema::users;

/// `POST /admin/users` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UserCreate)]
pub struct CreateUserInput {
    pub name: String,
    pub email: String,
    pub password: String,
    #[schema(value_type = crate::domain::doc::Role)]
    pub role: String,
    #[serde(default)]
    pub specialty: Option<String>,
}

impl CreateUserInput {
    /// Checks every field; returns the role.
    pub fn check(&self) -> Result<Role, AppError> {
        let mut problems = Problems::default();
        check_account(&mut problems, &self.name, &self.email, &self.password);
        let role = Role::parse(&self.role);
        if role.is_none() {
            problems.add("role", "must be patient, doctor or admin");
        }
        if self.specialty.is_some() && role != Some(Role::Doctor) {
            problems.add("specialty", "only doctors have a specialty");
        }
        check_specialty(&mut problems, self.specialty.as_deref());
        problems.finish()?;
        role.ok_or_else(|| AppError::internal("role checked above"))
    }
}

/// A specialty, when one is given, is a real one: a blank one would list the doctor under an
/// empty heading (leaving it out, or `null` in an update, means none).
fn check_specialty(problems: &mut Problems, specialty: Option<&str>) {
    if let Some(specialty) = specialty {
        problems.text("specialty", specialty, 200);
    }
}

/// `PATCH /admin/users/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UserUpdate)]
pub struct UpdateUserInput {
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
    /// Left out, it stays; `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub specialty: Patch,
    #[serde(default)]
    pub version: Option<i32>,
}

/// Creates a user of any role with an already hashed password.
pub fn create(
    conn: &mut DbConn,
    input: &CreateUserInput,
    role: Role,
    password_hash: &str,
    contention: &Contention,
) -> Result<User, AppError> {
    let now = crate::time::now();
    retried_write(conn, contention, "create user", "", |conn, _| {
        user::insert(
            conn,
            &NewUser {
                name: input.name.trim(),
                email: input.email.trim(),
                password_hash,
                role: role.as_str(),
                specialty: input.specialty.as_deref(),
                is_active: true,
                version: 1,
                created_at: now,
                updated_at: now,
            },
        )
        .map_err(map_email_conflict)
    })
}

/// Changes a user (admin only), optimistically. Deactivating a doctor waits for any booking
/// that holds the doctor's row lock, so a booking either commits before it or sees the
/// doctor inactive. Deactivating anyone ends their sessions: their tokens stop working and
/// stay dead after a reactivation (a new login is needed).
pub fn update(
    conn: &mut DbConn,
    caller: &Caller,
    id: i32,
    input: &UpdateUserInput,
    expected: Expected,
    contention: &Contention,
) -> Result<User, AppError> {
    caller.require_admin()?;
    let mut problems = Problems::default();
    if let Some(name) = &input.name {
        problems.text("name", name, 200);
    }
    check_specialty(&mut problems, input.specialty.given());
    if input.is_active.is_none() && input.name.is_none() && input.specialty.is_keep() {
        problems.add(
            "body",
            "nothing to change: give is_active, name or specialty",
        );
    }
    problems.finish()?;
    update_versioned(
        conn,
        contention,
        format_args!("user={id}"),
        expected,
        |conn| user::find(conn, id)?.ok_or(AppError::NotFound),
        |_| Ok(()),
        |conn, current| {
            if !input.specialty.is_keep() && current.role() != Role::Doctor {
                return Err(AppError::invalid(
                    "specialty",
                    "only doctors have a specialty",
                ));
            }
            if input.is_active == Some(false) && current.id == caller.id {
                return Err(AppError::invalid(
                    "is_active",
                    "an admin cannot deactivate themselves",
                ));
            }
            let is_active = input.is_active.unwrap_or(current.is_active);
            let name = input
                .name
                .as_deref()
                .map_or(current.name.as_str(), str::trim);
            let specialty = input.specialty.apply(current.specialty.as_deref());
            if is_active == current.is_active
                && name == current.name
                && specialty == current.specialty.as_deref()
            {
                // Nothing changes: no write and no new version (see `appointments::update`).
                return Ok(Some(current.clone()));
            }
            // Deactivation ends the user's sessions: the epoch moves on, and a token
            // authenticates only while it has its user's epoch (`models::token`).
            let deactivates = current.is_active && !is_active;
            let session_epoch = current.session_epoch + i32::from(deactivates);
            write_transaction(conn, |conn| {
                let updated = diesel::update(
                    users::table
                        .filter(users::id.eq(current.id))
                        .filter(users::version.eq(current.version)),
                )
                .set((
                    users::is_active.eq(is_active),
                    users::session_epoch.eq(session_epoch),
                    users::name.eq(name),
                    users::specialty.eq(specialty),
                    users::version.eq(users::version + 1),
                    users::updated_at.eq(crate::time::now()),
                ))
                .returning(users::all_columns)
                .fixed_shape()
                .get_result::<User>(conn)
                .optional()?;
                if let Some(user) = &updated {
                    if deactivates {
                        token::delete_before_epoch(conn, user.id, user.session_epoch)?;
                    }
                    log::info!(
                        "ATOMIC user={} is_active={} version={} by admin={}",
                        user.id,
                        user.is_active,
                        user.version,
                        caller.id
                    );
                }
                Ok(updated)
            })
        },
    )
}

/// Creates the bootstrap admin unless a user with that email exists. Several processes may
/// start at once: the unique email index decides, and losing that race is fine.
pub fn ensure_admin(conn: &mut DbConn, email: &str, password_hash: &str) -> Result<bool, AppError> {
    if user::find_by_email(conn, email)?.is_some() {
        return Ok(false);
    }
    let now = crate::time::now();
    let created = write_transaction(conn, |conn| {
        user::insert(
            conn,
            &NewUser {
                name: "Administrator",
                email: email.trim(),
                password_hash,
                role: Role::Admin.as_str(),
                specialty: None,
                is_active: true,
                version: 1,
                created_at: now,
                updated_at: now,
            },
        )
    });
    match created {
        Ok(_) => Ok(true),
        Err(e) if matches!(classify(&e), DbErrorClass::UniqueViolation { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

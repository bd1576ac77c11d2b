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

/// What [`rekey_pending_emails`] did: the users whose key it changed, and each user it left
/// listed because another user holds that user's new key (its id, the other's id).
#[derive(Debug, Default)]
pub struct Rekeyed {
    pub rekeyed: Vec<i32>,
    pub clashes: Vec<(i32, i32)>,
}

/// Brings the keys of the users listed in `email_keys_pending` (by the migration
/// `2026-12-08-000007_email_key_nfc`, which SQL alone could not do on SQLite) to
/// [`user::email_key`]'s form. Runs at start-up, after the migrations; with nothing listed,
/// which is every start but the first after that migration, it is one read.
///
/// Each user is re-keyed in a transaction of its own, and only if its email is still the one
/// read (the key is computed from it). Processes that start together may re-key the same
/// user: the second one writes the same key, finds the listing gone, and is done. A user
/// whose new key another user holds (two accounts for what is one address) keeps its key and
/// stays listed, with a warning at each start, until an operator changes one of the two
/// emails by hand; the next start then re-keys it.
pub fn rekey_pending_emails(conn: &mut DbConn) -> QueryResult<Rekeyed> {
    use crate::schema::email_keys_pending as pending;
    let listed: Vec<(i32, String, String)> = pending::table
        .inner_join(users::table)
        .select((users::id, users::email, users::email_key))
        .order(users::id)
        .load(conn)?;
    let mut done = Rekeyed::default();
    for (id, email, old) in listed {
        let new = user::email_key(&email);
        let rekeyed = write_transaction(conn, |conn| {
            let updated = diesel::update(users::table.find(id).filter(users::email.eq(&email)))
                .set(users::email_key.eq(&new))
                .execute(conn)?;
            // An email changed since it was read stays listed, for the next start.
            if updated == 1 {
                diesel::delete(pending::table.find(id)).execute(conn)?;
            }
            Ok::<_, diesel::result::Error>(updated == 1)
        });
        match rekeyed {
            Ok(true) if new != old => done.rekeyed.push(id),
            Ok(_) => {}
            Err(e) if matches!(classify(&e), DbErrorClass::UniqueViolation { .. }) => {
                let holder: Option<i32> = users::table
                    .filter(users::email_key.eq(&new))
                    .select(users::id)
                    .first(conn)
                    .optional()?;
                // Users are never deleted, but should the holder's key have changed since,
                // this one stays listed and the next start tries again.
                let Some(holder) = holder else { continue };
                log::warn!(
                    "user {id}'s email {email:?} is, in lower case and Unicode's normal form, \
                     the address of user {holder}: two accounts for one address. User {id} \
                     keeps its old email key {old:?}, and a login with either spelling finds \
                     user {holder}. Change one of the two emails by hand (UPDATE users SET \
                     email = …); the next start re-keys user {id} (README, \"Behaviour the \
                     contract leaves open\")"
                );
                done.clashes.push((id, holder));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

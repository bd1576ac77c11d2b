//! `users`: patients, doctors and admins.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

use super::Versioned;
use crate::db::DbConn;
use crate::domain::Role;
use crate::schema::users;

/// A `users` row. Field order follows the table.
#[derive(Debug, Clone, Queryable, Identifiable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i32,
    pub name: String,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub specialty: Option<String>,
    pub is_active: bool,
    pub version: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// [`email_key`] of `email`: what the unique index compares.
    pub email_key: String,
    /// Moves on when the user is deactivated; a token is valid only while its own
    /// `session_epoch` equals this (see [`crate::models::token`]).
    pub session_epoch: i32,
}

/// What a check needs of a user, and no more: the token check on every request and the
/// booking's row locks read only this, where the whole row (its password hash included)
/// would be read, sent and decoded each time for nothing.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserStanding {
    pub id: i32,
    role: String,
    pub is_active: bool,
}

impl UserStanding {
    /// The role (see [`Role::of_stored`]).
    pub fn role(&self) -> Role {
        Role::of_stored(&self.role)
    }
}

/// A new `users` row.
#[derive(Debug, Insertable)]
#[diesel(table_name = users, treat_none_as_default_value = false)]
pub struct NewUser<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
    pub specialty: Option<&'a str>,
    pub is_active: bool,
    pub version: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl User {
    /// The role (see [`Role::of_stored`]).
    pub fn role(&self) -> Role {
        Role::of_stored(&self.role)
    }

    /// Whether this user is an active doctor.
    pub fn is_active_doctor(&self) -> bool {
        self.role() == Role::Doctor && self.is_active
    }

    /// The API's view of this user.
    pub fn view(&self) -> UserView {
        UserView {
            id: self.id,
            name: self.name.clone(),
            email: self.email.clone(),
            role: self.role().as_str(),
            specialty: (self.role() == Role::Doctor).then(|| self.specialty.clone()),
            is_active: self.is_active,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl Versioned for User {
    fn version(&self) -> i32 {
        self.version
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }
}

/// User as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = User)]
pub struct UserView {
    pub id: i32,
    pub name: String,
    pub email: String,
    #[schema(value_type = crate::domain::doc::Role)]
    pub role: &'static str,
    /// Doctors only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub specialty: Option<Option<String>>,
    pub is_active: bool,
    pub version: i32,
    #[serde(serialize_with = "crate::time::serialize")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "crate::time::serialize")]
    pub updated_at: NaiveDateTime,
}

/// Finds a user by id.
pub fn find(conn: &mut DbConn, id: i32) -> QueryResult<Option<User>> {
    users::table.find(id).first(conn).optional()
}

/// What makes two emails the same address for medbook: the trimmed email in Unicode lower
/// case and in Unicode's composed normal form (NFC), so that an `é` sent as one character
/// and one sent as `e` and a combining accent (as some systems' text input does) are one
/// address, as RFC 6532 has it. Computed here rather than by SQL's `lower()`, which folds
/// ASCII only on SQLite and follows the locale on PostgreSQL (and SQLite has no
/// `normalize()`); the unique index on `email_key` decides on it. Keys stored by an earlier
/// version are brought to this one at start-up
/// ([`crate::services::users::rekey_pending_emails`]).
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase().nfc().collect()
}

/// Finds a user by email, case-insensitively (backed by the unique `email_key` index).
pub fn find_by_email(conn: &mut DbConn, email: &str) -> QueryResult<Option<User>> {
    if email.contains('\0') {
        // No stored email has one (validation refuses it), and PostgreSQL would refuse the
        // parameter itself: a login with one is simply an unknown email.
        return Ok(None);
    }
    users::table
        .filter(users::email_key.eq(email_key(email)))
        .first(conn)
        .optional()
}

/// Replaces a user's password hash with `new`, only if it is still `stored`, the one the
/// password was checked against: should another login have replaced it meanwhile, that one
/// stands (the predicate does what a version would).
pub fn replace_password_hash(
    conn: &mut DbConn,
    id: i32,
    stored: &str,
    new: &str,
) -> QueryResult<usize> {
    diesel::update(
        users::table
            .find(id)
            .filter(users::password_hash.eq(stored)),
    )
    .set(users::password_hash.eq(new))
    .execute(conn)
}

/// Inserts a user, with the [`email_key`] of its email, and returns the stored row.
pub fn insert(conn: &mut DbConn, new: &NewUser<'_>) -> QueryResult<User> {
    diesel::insert_into(users::table)
        .values((new, users::email_key.eq(email_key(new.email))))
        .returning(users::all_columns)
        .get_result(conn)
}

#[cfg(test)]
mod tests {
    use super::email_key;

    #[test]
    fn one_address_has_one_key_however_unicode_spells_it() {
        // "ë" as one character, and as "e" with a combining diaeresis; upper case of each.
        let key = email_key("zo\u{eb}@example.com");
        assert_eq!(key, "zo\u{eb}@example.com", "composed");
        for spelling in [
            "zoe\u{308}@example.com",
            "ZOE\u{308}@EXAMPLE.COM",
            "ZO\u{cb}@example.com",
            "  Zo\u{eb}@example.com ",
        ] {
            assert_eq!(email_key(spelling), key, "{spelling:?}");
        }
        // The Ångström sign is canonically the letter Å.
        assert_eq!(
            email_key("\u{212b}ngstr\u{f6}m@example.com"),
            email_key("\u{e5}ngstro\u{308}m@example.com")
        );
        // Case beyond ASCII, and what stays apart: compatibility forms are other addresses.
        assert_eq!(email_key("\u{c4}rztin@x.io"), "\u{e4}rztin@x.io");
        assert_ne!(email_key("\u{fb01}le@x.io"), email_key("file@x.io"));
    }
}

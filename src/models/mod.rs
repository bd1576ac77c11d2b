//! Table structs (Queryable / Insertable) and the small queries each table needs, plus the
//! JSON views the API returns.

pub mod appointment;
pub mod history;
pub mod idempotency;
pub mod prescription;
pub mod rating;
pub mod token;
pub mod user;

/// A versioned row: its version and the JSON the API shows for it (sent as `current` on a
/// version conflict).
pub trait Versioned {
    fn version(&self) -> i32;
    fn to_json(&self) -> serde_json::Value;
}

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

/// What one batch of a purge did: the rows its read found, and how many of them its `DELETE`
/// removed (fewer when another process removed them first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeBatch {
    pub found: usize,
    pub deleted: usize,
}

impl PurgeBatch {
    /// Runs `delete` on the ids a batch's read `found`, unless it found none.
    pub fn of(
        found: Vec<i32>,
        delete: impl FnOnce(Vec<i32>) -> diesel::QueryResult<usize>,
    ) -> diesel::QueryResult<PurgeBatch> {
        let count = found.len();
        let deleted = if found.is_empty() { 0 } else { delete(found)? };
        Ok(PurgeBatch {
            found: count,
            deleted,
        })
    }
}

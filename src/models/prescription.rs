//! `prescriptions`: at most one per appointment (unique `appointment_id`).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::Versioned;
use crate::db::DbConn;
use crate::schema::prescriptions;

/// One prescribed medication; stored as JSON text in `prescriptions.medications`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Medication {
    pub name: String,
    pub dosage: String,
    pub frequency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_days: Option<i32>,
}

/// A `prescriptions` row. Field order follows the table.
#[derive(Debug, Clone, Queryable, Identifiable)]
#[diesel(table_name = prescriptions)]
pub struct Prescription {
    pub id: i32,
    pub appointment_id: i32,
    pub doctor_id: i32,
    pub patient_id: i32,
    pub medications: String,
    pub notes: Option<String>,
    pub acknowledged_at: Option<NaiveDateTime>,
    pub version: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A new `prescriptions` row.
#[derive(Debug, Insertable)]
#[diesel(table_name = prescriptions, treat_none_as_default_value = false)]
pub struct NewPrescription<'a> {
    pub appointment_id: i32,
    pub doctor_id: i32,
    pub patient_id: i32,
    pub medications: &'a str,
    pub notes: Option<&'a str>,
    pub version: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Prescription as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Prescription)]
pub struct PrescriptionView {
    pub id: i32,
    pub appointment_id: i32,
    pub doctor_id: i32,
    pub patient_id: i32,
    pub medications: Vec<Medication>,
    pub notes: Option<String>,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    pub acknowledged_at: Option<NaiveDateTime>,
    pub version: i32,
    #[serde(serialize_with = "crate::time::serialize")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "crate::time::serialize")]
    pub updated_at: NaiveDateTime,
}

impl Prescription {
    /// The API's view. The medications were validated before they were stored.
    pub fn view(&self) -> PrescriptionView {
        PrescriptionView {
            id: self.id,
            appointment_id: self.appointment_id,
            doctor_id: self.doctor_id,
            patient_id: self.patient_id,
            medications: serde_json::from_str(&self.medications).unwrap_or_default(),
            notes: self.notes.clone(),
            acknowledged_at: self.acknowledged_at,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl Versioned for Prescription {
    fn version(&self) -> i32 {
        self.version
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }
}

/// Finds a prescription by id.
pub fn find(conn: &mut DbConn, id: i32) -> QueryResult<Option<Prescription>> {
    prescriptions::table.find(id).first(conn).optional()
}

/// Finds the prescription of an appointment.
pub fn find_by_appointment(
    conn: &mut DbConn,
    appointment_id: i32,
) -> QueryResult<Option<Prescription>> {
    prescriptions::table
        .filter(prescriptions::appointment_id.eq(appointment_id))
        .first(conn)
        .optional()
}

/// Inserts a prescription; a second one for the appointment fails with `UniqueViolation`.
pub fn insert(conn: &mut DbConn, new: &NewPrescription<'_>) -> QueryResult<Prescription> {
    diesel::insert_into(prescriptions::table)
        .values(new)
        .returning(prescriptions::all_columns)
        .get_result(conn)
}

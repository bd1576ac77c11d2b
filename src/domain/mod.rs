//! Pure domain rules, free of I/O: roles, appointment types and the status machine.

pub mod status;

pub use status::{transition, Party, Status, TransitionError};

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Patient,
    Doctor,
    Admin,
}

impl Role {
    /// The stored and serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Doctor => "doctor",
            Role::Admin => "admin",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "patient" => Some(Role::Patient),
            "doctor" => Some(Role::Doctor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// A role read from the database. The table's CHECK constraint allows no other value; an
    /// impossible one gets the least privilege.
    pub fn of_stored(s: &str) -> Role {
        Role::parse(s).unwrap_or(Role::Patient)
    }
}

/// The consultation types an appointment can have.
pub const APPOINTMENT_TYPES: [&str; 4] = [
    "text_consultation",
    "video_consultation",
    "voice_consultation",
    "in_person",
];

/// Allowed appointment lengths in minutes; the upper bound also bounds the overlap queries.
pub const MIN_DURATION_MINUTES: i32 = 5;
pub const MAX_DURATION_MINUTES: i32 = 240;
pub const DEFAULT_DURATION_MINUTES: i32 = 30;

/// The documented value sets, for the OpenAPI document only (the stored and parsed forms are
/// the strings above; these enums keep the document's `enum`s in one place).
pub mod doc {
    /// An appointment's type.
    #[derive(utoipa::ToSchema)]
    #[schema(as = AppointmentType)]
    #[allow(non_camel_case_types, dead_code)]
    pub enum AppointmentType {
        text_consultation,
        video_consultation,
        voice_consultation,
        in_person,
    }

    /// An appointment's status.
    #[derive(utoipa::ToSchema)]
    #[schema(as = AppointmentStatus)]
    #[allow(non_camel_case_types, dead_code)]
    pub enum AppointmentStatus {
        pending,
        confirmed,
        in_progress,
        completed,
        cancelled,
        rejected,
    }

    /// A user's role.
    #[derive(utoipa::ToSchema)]
    #[schema(as = Role)]
    #[allow(non_camel_case_types, dead_code)]
    pub enum Role {
        patient,
        doctor,
        admin,
    }
}

//! The appointment status machine: which move is allowed, and for whom.

/// An appointment's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Confirmed,
    InProgress,
    Completed,
    Cancelled,
    Rejected,
}

/// Statuses that hold a slot in the doctor's and the patient's calendar.
pub const ACTIVE: [&str; 3] = ["pending", "confirmed", "in_progress"];

impl Status {
    /// Every status.
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Confirmed,
        Status::InProgress,
        Status::Completed,
        Status::Cancelled,
        Status::Rejected,
    ];

    /// The stored and serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::Rejected => "rejected",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Whether the appointment holds its slot.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Status::Pending | Status::Confirmed | Status::InProgress
        )
    }

    /// Whether the appointment can still be rescheduled.
    pub fn is_reschedulable(self) -> bool {
        matches!(self, Status::Pending | Status::Confirmed)
    }
}

/// How the caller relates to an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Patient,
    Doctor,
    Admin,
}

/// Why a transition was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionError {
    /// Nobody may make this move from this status (422 `INVALID_TRANSITION`).
    Invalid,
    /// Someone may, but not this party (403).
    NotAllowedFor,
}

/// Who may move an appointment from `from` to `to` (empty: nobody).
pub fn allowed_parties(from: Status, to: Status) -> &'static [Party] {
    use Party::*;
    use Status::*;
    match (from, to) {
        (Pending, Confirmed) | (Pending, Rejected) => &[Doctor],
        (Confirmed, InProgress) | (InProgress, Completed) => &[Doctor],
        (Pending, Cancelled) | (Confirmed, Cancelled) => &[Patient, Doctor, Admin],
        (InProgress, Cancelled) => &[Doctor, Admin],
        _ => &[],
    }
}

/// Decides whether `party` may move an appointment from `from` to `to`.
pub fn transition(from: Status, to: Status, party: Party) -> Result<(), TransitionError> {
    let allowed = allowed_parties(from, to);
    if allowed.is_empty() {
        Err(TransitionError::Invalid)
    } else if allowed.contains(&party) {
        Ok(())
    } else {
        Err(TransitionError::NotAllowedFor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Party::*;
    use Status::*;

    /// The table of API.md, written out once more as (from, to, who).
    const TABLE: &[(Status, Status, &[Party])] = &[
        (Pending, Confirmed, &[Doctor]),
        (Pending, Rejected, &[Doctor]),
        (Confirmed, InProgress, &[Doctor]),
        (InProgress, Completed, &[Doctor]),
        (Pending, Cancelled, &[Patient, Doctor, Admin]),
        (Confirmed, Cancelled, &[Patient, Doctor, Admin]),
        (InProgress, Cancelled, &[Doctor, Admin]),
    ];

    #[test]
    fn every_from_to_party_triple_matches_the_contract() {
        let mut checked = 0;
        for from in Status::ALL {
            for to in Status::ALL {
                let row = TABLE.iter().find(|(f, t, _)| *f == from && *t == to);
                for party in [Patient, Doctor, Admin] {
                    let expected = match row {
                        None => Err(TransitionError::Invalid),
                        Some((_, _, who)) if who.contains(&party) => Ok(()),
                        Some(_) => Err(TransitionError::NotAllowedFor),
                    };
                    assert_eq!(
                        transition(from, to, party),
                        expected,
                        "{from:?}->{to:?} by {party:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 6 * 6 * 3);
    }

    #[test]
    fn final_statuses_have_no_way_out() {
        for from in [Completed, Cancelled, Rejected] {
            for to in Status::ALL {
                assert!(allowed_parties(from, to).is_empty());
            }
        }
    }

    #[test]
    fn stored_forms_round_trip_and_active_matches() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(status.is_active(), ACTIVE.contains(&status.as_str()));
        }
        assert_eq!(Status::parse("done"), None);
    }
}

//! Field validation shared by the use cases; errors collect into one 422 `details` map.

use crate::error::{AppError, Details};

/// Collects per-field problems and turns them into one 422.
#[derive(Debug, Default)]
pub struct Problems(Details);

impl Problems {
    /// Records a problem with `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| message.into());
    }

    /// Checks a required text: trimmed, non-empty, at most `max` characters, no NUL.
    pub fn text(&mut self, field: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.add(field, "must not be empty");
        } else {
            self.optional_text(field, Some(value), max);
        }
    }

    /// Checks an optional text: at most `max` characters, no NUL.
    ///
    /// JSON can carry NUL (`"\u0000"`), PostgreSQL's text cannot: without this check such a
    /// field was a 500 there and stored as-is on SQLite.
    pub fn optional_text(&mut self, field: &str, value: Option<&str>, max: usize) {
        match value {
            Some(v) if v.contains('\0') => {
                self.add(field, "must not contain the NUL character (\\u0000)")
            }
            Some(v) if v.chars().count() > max => {
                self.add(field, format!("must be at most {max} characters"))
            }
            _ => {}
        }
    }

    /// Checks an email address's plausible form.
    pub fn email(&mut self, field: &str, value: &str) {
        let value = value.trim();
        let plausible = value.len() <= 254
            && !value.chars().any(|c| c.is_whitespace() || c.is_control())
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if !plausible {
            self.add(field, "must be an email address");
        }
    }

    /// Checks a password: 8 to 1024 characters (the upper bound keeps hashing cheap enough),
    /// counted in the form it is hashed in ([`crate::auth::normal_password`]: an `é` sent as
    /// `e` and a combining accent is one character).
    pub fn password(&mut self, field: &str, value: &str) {
        let len = crate::auth::normal_password(value).chars().count();
        if len < 8 {
            self.add(field, "must be at least 8 characters");
        } else if len > 1024 {
            self.add(field, "must be at most 1024 characters");
        }
    }

    /// Checks an integer range.
    pub fn range(&mut self, field: &str, value: i64, min: i64, max: i64) {
        if value < min || value > max {
            self.add(field, format!("must be between {min} and {max}"));
        }
    }

    /// `Ok` if nothing was recorded, else every problem as `field must …; field must …` (for
    /// settings checked at start-up, whose fields are environment variables).
    pub fn into_text(self) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        let problems: Vec<String> = self
            .0
            .into_iter()
            .map(|(field, message)| format!("{field} {message}"))
            .collect();
        Err(problems.join("; "))
    }

    /// `Ok` if nothing was recorded, else 422 `VALIDATION_FAILED` with every problem.
    pub fn finish(self) -> Result<(), AppError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::validation(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_problem() {
        let mut p = Problems::default();
        p.text("name", "  ", 10);
        p.email("email", "no-at-sign");
        p.password("password", "short");
        p.range("score", 6, 1, 5);
        match p.finish().unwrap_err() {
            AppError::Validation { details, .. } => assert_eq!(details.len(), 4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn problems_read_as_one_line_for_start_up() {
        assert_eq!(Problems::default().into_text(), Ok(()));
        let mut p = Problems::default();
        p.password("MEDBOOK_ADMIN_PASSWORD", "short");
        p.email("MEDBOOK_ADMIN_EMAIL", "root");
        assert_eq!(
            p.into_text(),
            Err("MEDBOOK_ADMIN_EMAIL must be an email address; \
                 MEDBOOK_ADMIN_PASSWORD must be at least 8 characters"
                .to_owned())
        );
    }

    #[test]
    fn refuses_nul_in_every_text() {
        let mut p = Problems::default();
        p.text("name", "Ada\0", 10);
        p.optional_text("comment", Some("\0"), 10);
        p.email("email", "ada\0@example.com");
        match p.finish().unwrap_err() {
            AppError::Validation { details, .. } => {
                assert_eq!(details.len(), 3);
                assert!(details["name"].contains("NUL"));
                assert!(details["comment"].contains("NUL"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_password_is_counted_in_the_form_it_is_hashed_in() {
        let count = |password: &str| {
            let mut p = Problems::default();
            p.password("password", password);
            p.finish().is_ok()
        };
        // Seven letters, one sent as "e" and a combining accent: eight code points.
        assert!(!count("cafe\u{301}xyz"));
        assert!(count("caf\u{e9}wxyz"));
        assert!(count("cafe\u{301}wxyz"));
    }

    #[test]
    fn accepts_good_values() {
        let mut p = Problems::default();
        p.text("name", "Ada", 10);
        p.email("email", "ada@example.com");
        p.password("password", "long enough");
        p.range("score", 5, 1, 5);
        p.optional_text("comment", None, 5);
        assert!(p.finish().is_ok());
    }
}

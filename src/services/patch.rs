//! The optional text fields of a partial update (`reason`, `notes`, `comment`, `specialty`):
//! left out keeps the value, `null` clears it, a string sets it, as in JSON Merge Patch
//! (RFC 7396). Read as a plain `Option`, a `null` was taken for "left out", so a client that
//! cleared a field got `200` with the old value still there.

use serde::{Deserialize, Deserializer};

/// One optional text field of an update body. Declare it with `#[serde(default)]`, so that a
/// field left out is [`Patch::Keep`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Patch {
    /// Left out: the stored value stays.
    #[default]
    Keep,
    /// `null`: the stored value is removed.
    Clear,
    /// A string: it replaces the stored value.
    Set(String),
}

impl Patch {
    /// Whether the body leaves the field out.
    pub fn is_keep(&self) -> bool {
        *self == Patch::Keep
    }

    /// The new text, if the body gives one (what validation looks at).
    pub fn given(&self) -> Option<&str> {
        match self {
            Patch::Set(text) => Some(text),
            Patch::Keep | Patch::Clear => None,
        }
    }

    /// The value after the update, given the stored one.
    pub fn apply<'a>(&'a self, stored: Option<&'a str>) -> Option<&'a str> {
        match self {
            Patch::Keep => stored,
            Patch::Clear => None,
            Patch::Set(text) => Some(text),
        }
    }
}

impl<'de> Deserialize<'de> for Patch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Called only for a field that is present: `null` is a value here, not an absence.
        Ok(match Option::<String>::deserialize(deserializer)? {
            None => Patch::Clear,
            Some(text) => Patch::Set(text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Patch;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        note: Patch,
    }

    fn read(json: &str) -> Patch {
        serde_json::from_str::<Body>(json).map(|b| b.note).unwrap()
    }

    #[test]
    fn left_out_keeps_null_clears_a_string_sets() {
        assert_eq!(read("{}"), Patch::Keep);
        assert_eq!(read(r#"{"note":null}"#), Patch::Clear);
        assert_eq!(read(r#"{"note":""}"#), Patch::Set(String::new()));
        assert_eq!(read(r#"{"note":"x"}"#), Patch::Set("x".to_owned()));
        assert!(serde_json::from_str::<Body>(r#"{"note":1}"#).is_err());
    }

    #[test]
    fn apply_gives_the_value_after_the_update() {
        assert_eq!(Patch::Keep.apply(Some("old")), Some("old"));
        assert_eq!(Patch::Clear.apply(Some("old")), None);
        assert_eq!(Patch::Set("new".into()).apply(Some("old")), Some("new"));
        assert_eq!(Patch::Set("new".into()).given(), Some("new"));
        assert_eq!(Patch::Clear.given(), None);
    }
}

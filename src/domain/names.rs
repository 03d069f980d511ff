//! Names: free-form display names (jobs, datasets, tokens, field names) and the names that end up in
//! object keys and URLs, whose alphabet is restricted.

use super::FieldError;

/// A name people read: 1–200 characters after trimming, any alphabet. Jobs, datasets, API tokens and a
/// dataset's text and label fields are named this way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                field,
                format!("must be 1 to {} characters", Self::MAX_CHARS),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                "must not contain control characters (such as NUL or line breaks)",
            ));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Whether `raw` can be one of kiln's ids (UUIDs, in practice): 1–100 characters, no control
/// characters. Anything else names nothing, and is not looked up.
pub fn is_plausible_id(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= 100 && !raw.chars().any(char::is_control)
}

/// `raw` shortened to at most `max` characters for a message (what a user sent is never echoed back
/// at any length).
pub fn abbreviate(raw: &str, max: usize) -> String {
    if raw.chars().count() <= max {
        raw.to_string()
    } else {
        let head: String = raw.chars().take(max).collect();
        format!("{head}…")
    }
}

/// The name among `known` closest to `name` (by edits, ignoring case), when it is close enough to be
/// what was meant: for "did you mean …?".
pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_lowercase();
    let allowed = (name.chars().count() / 3).max(2);
    known
        .into_iter()
        .map(|k| (edits(&name, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance: insertions, deletions and substitutions of characters.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// The name of a registry model: 1–64 characters of letters, digits, `.`, `_` and `-`, starting with a
/// letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelName(String);

impl ModelName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(FieldError::new(
                field,
                format!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        if !raw.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(FieldError::new(
                field,
                "must start with a letter or a digit",
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(FieldError::new(
                field,
                format!("may hold only letters, digits, '.', '_' and '-' (found {bad:?})"),
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key in the object store: relative, `/`-separated, no empty, `.` or `..` segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        if raw.is_empty() || raw.len() > 1024 {
            return Err(FieldError::new("key", "must be 1 to 1024 characters"));
        }
        if raw.starts_with('/') {
            return Err(FieldError::new("key", "must be relative (no leading '/')"));
        }
        for segment in raw.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(FieldError::new(
                    "key",
                    format!("has an invalid segment {segment:?}"),
                ));
            }
            if segment.chars().any(|c| c.is_control() || c == '\\') {
                return Err(FieldError::new(
                    "key",
                    "must not hold control characters or '\\'",
                ));
            }
        }
        Ok(Self(raw.to_string()))
    }

    /// Joins a prefix and a file name that are known to be valid (ids, model names, fixed file names).
    pub fn join(&self, name: &str) -> Result<Self, FieldError> {
        Self::parse(&format!("{}/{}", self.0, name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_known_name_is_suggested_only_when_close() {
        let known = ["epochs", "batchSize", "learningRate", "seed"];
        assert_eq!(closest("epochz", known), Some("epochs"));
        assert_eq!(closest("batchsize", known), Some("batchSize"));
        assert_eq!(closest("learning_rate", known), Some("learningRate"));
        assert_eq!(closest("colour", known), None);
        assert_eq!(edits("kitten", "sitting"), 3);
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("name", "  ci  ").unwrap().as_str(), "ci");
        assert_eq!(DisplayName::parse("name", "   ").unwrap_err().field, "name");
        assert!(DisplayName::parse("name", &"é".repeat(200)).is_ok());
        assert!(DisplayName::parse("name", &"é".repeat(201)).is_err());
    }

    #[test]
    fn control_characters_are_refused_in_names_and_ids() {
        assert!(DisplayName::parse("name", "a\u{0}b").is_err());
        assert!(DisplayName::parse("name", "two\nlines").is_err());
        assert!(!is_plausible_id("a\u{0}b"));
        assert!(!is_plausible_id(&"x".repeat(101)));
        assert!(is_plausible_id("6f1c2a3e-0000-4000-8000-000000000000"));
        assert_eq!(abbreviate("abcdef", 3), "abc…");
    }

    #[test]
    fn model_names_are_restricted_to_a_safe_alphabet() {
        assert!(ModelName::parse("modelName", "pi-detector_v2.1").is_ok());
        assert_eq!(
            ModelName::parse("modelName", "").unwrap_err().field,
            "modelName"
        );
        assert!(ModelName::parse("modelName", "../etc").is_err());
        assert!(ModelName::parse("modelName", "a b").is_err());
        assert!(ModelName::parse("modelName", &"x".repeat(65)).is_err());
    }

    #[test]
    fn object_keys_cannot_escape_their_root() {
        assert!(ObjectKey::parse("datasets/abc/data.jsonl").is_ok());
        assert!(ObjectKey::parse("/etc/passwd").is_err());
        assert!(ObjectKey::parse("a/../b").is_err());
        assert!(ObjectKey::parse("a//b").is_err());
    }
}
